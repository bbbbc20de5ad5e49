"""Host-side program compiler for the deconvolution engine.

A *program* is what the host sends over the bus to run a network on one frame: the layer
descriptors, the packed weights and requantisation entries, the input frame, the start
command, and where to read the result. It is plain data (lists of ``(space, addr, bytes)``
writes) so that any transport (simulated RTL, a serial link, a recording) can execute it.

Frames larger than the on-chip buffers are split into tiles (:func:`compile_tiled`): each
tile is the core plus a halo of the network's receptive field, padded to one fixed size, so
the weights are loaded once and only the descriptors' valid windows and the input change
between tiles. Intermediate feature-map pixels outside the frame are written as 0 by the
engine (the descriptor's valid window), exactly as zero padding of the untiled frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...bus import CtrlReg, Space
from ...descriptor import (DESC_BYTES, ENTRY_BYTES, STREAM_FIELDS, BiasEntry, LayerDescriptor,
                           decode_counters, entry_fits, pack)
from ...spec import EngineSpec
from ..golden.intmodel import QLayer

__all__ = ["ProgramError", "OUT_CYCLES_MAX", "LayerPlan", "Program", "plan_layer", "compile_network",
           "compile_tiled", "frame_programs", "decode_counters", "Tile"]


#: Cycles per output of the slowest requantiser (``requant="lut"``): what a run is bounded
#: with when the engine's requantiser is not known (it is not in the ID ROM).
OUT_CYCLES_MAX = 8


class ProgramError(ValueError):
    """The network or frame does not fit the engine (names the resource and the limit)."""


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class LayerPlan:
    """How one layer maps onto the lanes (see :mod:`deconvsr.descriptor`)."""
    c_in: int
    c_out: int
    k: int
    stride: int
    padding: int
    pi: int
    pv: int
    cw: int
    t: int
    v: int
    n_vg: int

    @property
    def weight_words(self) -> int:
        return self.n_vg * self.cw * self.t * self.t

    def group_cycles(self) -> int:
        return self.cw * self.t * self.t


def _wide(layer: QLayer, pv: int, drain: int) -> bool:
    return drain > 1 and layer.c_out % drain == 0 and pv >= drain


def plan_layer(layer: QLayer, lanes: int, drain: int = 1, act_lanes: int | None = None,
               fixed_pi: bool = False) -> LayerPlan:
    """Choose Pi (input lanes per group) for ``layer``: the power of two (``>= C_in`` when
    below ``act_lanes``, or ``act_lanes``, the activations per ACT word; default ``lanes``)
    with the fewest MAC cycles per block, counting a group as ``max(cw*T*T, Pv/R)`` cycles
    (the drain takes ``Pv/R``, R = ``drain`` if the layer can drain wide, else 1).
    ``fixed_pi`` (an engine built with ``EngineSpec.fixed_pi``): always ``act_lanes``."""
    a = lanes if act_lanes is None else act_lanes
    s, k = layer.stride, layer.k
    t = -(-k // s)
    v = layer.c_out * s * s
    best = None
    for pi in [a] + [p for p in (1 << i for i in range(a.bit_length()))
                     if p < a and p >= layer.c_in and not fixed_pi]:
        pv = lanes // pi
        cw = -(-layer.c_in // pi) if pi == a else 1
        n_vg = -(-v // pv)
        cost = n_vg * max(cw * t * t, -(-pv // (drain if _wide(layer, pv, drain) else 1)))
        key = (cost, -pi)
        if best is None or key < best[0]:
            best = (key, LayerPlan(layer.c_in, layer.c_out, k, s, layer.padding, pi, pv, cw,
                                   t, v, n_vg))
    return best[1]


def pack_weights(layer: QLayer, plan: LayerPlan, lanes: int) -> np.ndarray:
    """Weight words ``(n_vg*cw*T*T, lanes)`` int8 in the order the sequencer reads them."""
    p = plan
    s = p.stride
    wz = np.zeros((p.c_in, p.c_out, p.t * s, p.t * s), dtype=np.int64)
    wz[:, :, :p.k, :p.k] = layer.weight
    # virtual v = (fy*S + fx)*C_out + o ; tap a = fy + ky*S
    # W5[c, v, ky, kx] = wz[c, o, fy + ky*S, fx + kx*S]
    w6 = wz.reshape(p.c_in, p.c_out, p.t, s, p.t, s)          # c, o, ky, fy, kx, fx
    wv = w6.transpose(0, 3, 5, 1, 2, 4).reshape(p.c_in, p.v, p.t, p.t)  # c, (fy,fx,o), ky, kx
    words = np.zeros((p.n_vg, p.cw, p.t, p.t, p.pv, p.pi), dtype=np.int64)
    cpad = np.zeros((p.cw * p.pi, p.n_vg * p.pv, p.t, p.t), dtype=np.int64)
    cpad[:p.c_in, :p.v] = wv
    # words[vg, cg, ky, kx, g, j] = cpad[cg*Pi + j, vg*Pv + g, ky, kx]
    c6 = cpad.reshape(p.cw, p.pi, p.n_vg, p.pv, p.t, p.t)
    words[:] = c6.transpose(2, 0, 4, 5, 3, 1)
    return words.reshape(-1, lanes).astype(np.int8)


@dataclass
class Program:
    """Bus traffic of one run. ``setup`` (descriptors, weights, entries) then per run
    ``inputs``, ``start`` layers, then read ``out_len`` bytes of OUT at ``out_addr`` and
    reshape to ``out_shape``."""
    spec: EngineSpec
    setup: list = field(default_factory=list)       # (Space, addr, bytes)
    inputs: list = field(default_factory=list)      # (Space, addr, bytes)
    n_layers: int = 0
    out_addr: int = 0
    out_shape: tuple = ()
    plans: list = field(default_factory=list)
    wide: list = field(default_factory=list)        # per layer: drains R outputs per cycle
    descriptors: list = field(default_factory=list)  # per layer: the descriptor's fields

    def useful_macs(self) -> list[int]:
        """Per layer, the lane-cycles that multiply a real input channel inside the frame
        with a real virtual output: what the engine's ``mac_used`` counter counts, computed
        from the descriptors (an engine with ``counters="basic"`` does not keep it)."""
        out = []
        for d in self.descriptors:
            taps = np.arange(d["t"])

            def inside(q0, q1, n):
                # (block, tap) pairs of one dimension whose input row/column is in the frame
                q = np.arange(q0, q1 + 1)[:, None] - taps[None, :]
                return int(((q >= 0) & (q < n)).sum())
            pairs = inside(d["qy0"], d["qy1"], d["h_in"]) * inside(d["qx0"], d["qx1"], d["w_in"])
            cw, n_vg, useful = d["cw"], d["n_vg"], d["useful"]
            # useful[cg is last][vg is last], times how many (cg, vg) of each kind
            per = sum(useful[a][b] * (1 if a else cw - 1) * (1 if b else n_vg - 1)
                      for a in (0, 1) for b in (0, 1))
            out.append(per * pairs)
        return out

    def expected_cycles(self, out_cycles: int | None = None) -> int:
        """Engine cycles this run should take, from the descriptors: per layer, every block
        runs its ``n_vg`` groups of ``max(cw*T*T, drain)`` cycles (the drain takes a group's
        outputs ``R`` at a time, each in ``out_cycles`` cycles: 1 for the parallel requantiser,
        2 serial, 8 in logic), plus a small per-layer start. ``out_cycles`` None: the spec's
        own (this program's spec may be a device's, from its ID ROM, which does not say: the
        caller bounding a run takes :data:`OUT_CYCLES_MAX`). Checked against the RTL's cycle
        counter in the tests; what :meth:`Driver.wait <deconvsr.sw.host.driver.Driver.wait>`
        bounds a run with, times a margin."""
        if out_cycles is None:
            out_cycles = {"parallel": 1, "serial": 2, "lut": 8}[self.spec.requant]
        total = 0
        for d, plan, wide in zip(self.descriptors, self.plans, self.wide):
            r = self.spec.drain_lanes if wide else 1
            blocks = (d["qy1"] - d["qy0"] + 1) * (d["qx1"] - d["qx0"] + 1)
            taps = d["cw"] * d["t"] * d["t"]
            groups = (d["n_vg"] - 1) * max(taps, -(-plan.pv // r) * out_cycles, 2) + \
                max(taps, -(-d["pv_last"] // r) * out_cycles, 2)
            total += blocks * groups + 64
        return total

    @property
    def out_len(self) -> int:
        return int(np.prod(self.out_shape))

    def writes(self):
        """All writes, then the start command: ``(Space, addr, bytes)``."""
        return [*self.setup, *self.inputs,
                (Space.CTRL, CtrlReg.START_STATUS, bytes([self.n_layers]))]

    def decode(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(bytes(raw), dtype=np.uint8).reshape(self.out_shape).copy()


def _act_writes(spec: EngineSpec, x: np.ndarray, buf: int, base: int):
    """Writes of a (C, H, W) feature map into ACT buffer ``buf`` at word ``base``."""
    if not spec.act_host:
        raise ProgramError(f"engine {spec.name!r} takes no frames into its feature-map buffers: "
                           f"it takes streamed frames only")
    p = spec.act_lanes
    c, h, w = x.shape
    cw = -(-c // p)
    img = np.zeros((cw, h * w, p), dtype=np.uint8)
    for ch in range(c):
        img[ch // p, :, ch % p] = x[ch].reshape(-1)
    addr = buf * spec.act_depth * p + base * p
    return [(Space.ACT, addr, img.tobytes())]


def compile_network(layers, frame_shape, spec: EngineSpec, *, windows=None) -> Program:
    """Compile ``layers`` (list of :class:`QLayer`) for an input of ``frame_shape``
    ``(C, H, W)`` (or ``(H, W)``) on ``spec``. ``windows`` optionally gives per layer an output
    valid window ``(y0, y1, x0, x1)`` (outputs outside are written as 0).

    Raises
    ------
    ProgramError
        if a memory, the descriptor table or a size field is too small.
    """
    p = spec.lanes
    a = spec.act_lanes
    if len(frame_shape) == 2:
        frame_shape = (1, *frame_shape)
    c, h, w = frame_shape
    if not layers:
        raise ProgramError("the network has no layers")
    if len(layers) > spec.max_layers:
        raise ProgramError(f"{len(layers)} layers exceed the {spec.max_layers} descriptors")
    prog = Program(spec=spec, n_layers=len(layers))
    w_base = 0
    descs = b""
    weights = []
    entries = []
    widths = spec.entry_widths()
    if widths and max(layer.stride for layer in layers) > spec.PACKED_STRIDE_MAX:
        raise ProgramError(f"stride {max(layer.stride for layer in layers)} exceeds "
                           f"{spec.PACKED_STRIDE_MAX}, the largest this engine's packed "
                           f"entries hold")
    for i, layer in enumerate(layers):
        if layer.c_in != c:
            raise ProgramError(f"{layer.name}: expects {layer.c_in} input channels, gets {c}")
        last = i == len(layers) - 1
        r = 1 if last else spec.drain_lanes
        plan = plan_layer(layer, p, r, a, spec.fixed_pi)
        wide = _wide(layer, plan.pv, r)
        prog.plans.append(plan)
        prog.wide.append(wide)
        s, pd = layer.stride, layer.padding
        h_out, w_out = layer.out_size(h, w)
        # Entries of a layer start at a multiple of drain_lanes (one memory word).
        while len(entries) % spec.drain_lanes:
            entries.append({"bias": 0, "mult": 0, "shift": 0, "lane": 0, "fy": 0, "fx": 0,
                            "off": 0})
        b_base = len(entries)
        if h_out < 1 or w_out < 1:
            raise ProgramError(f"{layer.name}: output would be {h_out} x {w_out}")
        if max(h, w, h_out, w_out) >= 1 << spec.dim_bits:
            raise ProgramError(f"{layer.name}: size {max(h, w, h_out, w_out)} exceeds "
                               f"dim_bits={spec.dim_bits}")
        if plan.t > 15:
            raise ProgramError(f"{layer.name}: ceil(K_d/S) = {plan.t} exceeds 15")
        in_words = -(-c // a) * h * w
        if in_words > spec.act_depth:
            raise ProgramError(f"{layer.name}: input needs {in_words} words of ACT buffer, "
                               f"act_depth is {spec.act_depth}")
        if last:
            out_need = layer.c_out * h_out * w_out
            if out_need > spec.out_bytes:
                raise ProgramError(f"{layer.name}: output needs {out_need} bytes, out_bytes is "
                                   f"{spec.out_bytes}")
        else:
            out_need = -(-layer.c_out // a) * h_out * w_out
            if out_need > spec.act_depth:
                raise ProgramError(f"{layer.name}: output needs {out_need} words of ACT buffer, "
                                   f"act_depth is {spec.act_depth}")
        wwords = pack_weights(layer, plan, p)
        weights.append(wwords)
        # Entries, one per virtual output v = (fy*S + fx)*C_out + o.
        for fy in range(s):
            for fx in range(s):
                for o in range(layer.c_out):
                    plane = o * h_out * w_out if last else (o // a) * h_out * w_out
                    entries.append({
                        "bias": int(layer.bias[o, (fy - pd) % s, (fx - pd) % s]),
                        "mult": int(layer.mult[o]), "shift": int(layer.shift[o]),
                        "lane": 0 if last else o % a, "fy": fy, "fx": fx,
                        "off": plane + fy * w_out + fx})
                    bad = entry_fits(entries[-1], widths)
                    if bad:
                        raise ProgramError(f"{layer.name}: requantisation entry field {bad} "
                                           f"does not fit this engine's packed entries "
                                           f"({widths})")
        qy0, qx0 = pd // s, pd // s
        qy1, qx1 = (h_out - 1 + pd) // s, (w_out - 1 + pd) // s
        by0, bx0 = s * qy0 - pd, s * qx0 - pd
        win = windows[i] if windows and windows[i] is not None else (0, h_out, 0, w_out)
        if win != (0, h_out, 0, w_out) and not spec.windows:
            raise ProgramError(f"{layer.name}: engine {spec.name!r} has no valid windows "
                               f"(tiles): it takes streamed frames only")
        # Lanes doing useful work per cycle, [cg is last][vg is last] (the hardware's flags are
        # always 1 when there is a single word/group).
        chans = (plan.pi, c - (plan.cw - 1) * plan.pi)
        v_last = plan.v - (plan.n_vg - 1) * plan.pv
        virts = (plan.pv, v_last)
        useful = [[chans[a] * virts[b] for b in range(2)] for a in range(2)]
        d = {
            "to_out": int(last), "in_buf": i % 2, "wide": int(wide), "lvl": plan.pi.bit_length() - 1,
            "t": plan.t, "stride": s, "cw": plan.cw, "n_vg": plan.n_vg,
            "pv_last": v_last, "h_in": h, "w_in": w, "hw_in": h * w, "in_base": 0,
            "w_base": w_base, "b_base": b_base, "qy0": qy0, "qy1": qy1, "qx0": qx0, "qx1": qx1,
            "row0": qy0 * w, "by0": by0, "bx0": bx0, "h_out": h_out, "w_out": w_out,
            "obase0": by0 * w_out + bx0, "orow": s * w_out,
            "vy0": win[0], "vy1": win[1], "vx0": win[2], "vx1": win[3], "useful": useful,
            **STREAM_FIELDS,
        }
        prog.descriptors.append(d)
        try:
            descs += pack(LayerDescriptor, d, DESC_BYTES)
        except ValueError as e:
            raise ProgramError(f"{layer.name}: {e}") from None
        w_base += len(wwords)
        c, h, w = layer.c_out, h_out, w_out
    if w_base > spec.weight_depth:
        raise ProgramError(f"weights need {w_base} words, weight_depth is {spec.weight_depth}")
    if len(entries) > spec.bias_depth:
        raise ProgramError(f"requantisation entries need {len(entries)}, bias_depth is "
                           f"{spec.bias_depth}")
    prog.setup.append((Space.DESC, 0, descs))
    prog.setup.append((Space.WEIGHT, 0, np.concatenate(weights).tobytes()))
    prog.setup.append((Space.BIAS, 0, b"".join(pack(BiasEntry, e, ENTRY_BYTES)
                                                for e in entries)))
    prog.out_addr = 0
    prog.out_shape = (c, h, w)
    return prog


def set_input(prog: Program, x: np.ndarray) -> Program:
    """Put the input frame ``x`` ``(C, H, W)``/``(H, W)`` uint8 into ``prog`` (buffer 0)."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    prog.inputs = _act_writes(prog.spec, x.astype(np.uint8), 0, 0)
    return prog


# ---- tiling -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Tile:
    """One tile: input crop origin ``(y0, x0)`` (may be negative: zero-filled) of the fixed
    extended size, and the core ``[cy0, cy1) x [cx0, cx1)`` in LR frame coordinates."""
    y0: int
    x0: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def _check_tileable(layers):
    for layer in layers[:-1]:
        if layer.stride != 1 or layer.k != 2 * layer.padding + 1:
            raise ProgramError(f"{layer.name}: tiling supports 'same' stride-1 feature layers "
                               f"(K_d = 2*P_d + 1), not K_d={layer.k}, P_d={layer.padding}, "
                               f"S={layer.stride}")
    last = layers[-1]
    if last.k - 2 * last.padding != last.stride:
        raise ProgramError(f"{last.name}: tiling needs an output of exactly S times the input "
                           f"(K_d - 2*P_d = S), not K_d={last.k}, P_d={last.padding}, "
                           f"S={last.stride}")


def halo(layers) -> int:
    """LR pixels of context needed on each side of a tile core (feature layers + last layer)."""
    total = sum(layer.padding for layer in layers[:-1])
    last = layers[-1]
    s = last.stride
    # Output y reads input rows (y + P_d)//S - (T-1) .. (y + P_d)//S.
    t = -(-last.k // s)
    lo = t - 1 - last.padding // s
    hi = (s - 1 + last.padding) // s
    return total + max(lo, hi, 0)


def plan_tiles(layers, frame_hw, core: int):
    """Tiles of core size ``core`` x ``core`` covering ``frame_hw``."""
    _check_tileable(layers)
    h, w = frame_hw
    hl = halo(layers)
    tiles = []
    for cy in range(0, h, core):
        for cx in range(0, w, core):
            tiles.append(Tile(cy - hl, cx - hl, cy, min(cy + core, h), cx, min(cx + core, w)))
    return tiles, core + 2 * hl


def compile_tiled(layers, frame: np.ndarray, spec: EngineSpec, core: int):
    """Yield ``(tile, program)`` for a frame too large for the buffers; every program has the
    same setup (load it once) plus its own descriptors (valid windows) and input.
    The last layer's output of a tile, cropped with :func:`crop_tile`, is the frame's output
    over the tile core.

    Raises
    ------
    ProgramError
        if the layers cannot be tiled or a tile does not fit.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[None]
    c, h, w = frame.shape
    tiles, ext = plan_tiles(layers, (h, w), core)
    for tile in tiles:
        windows = []
        for layer in layers[:-1]:
            # 'same' layers: tile coordinate u is frame coordinate y0 + u.
            windows.append((max(0, -tile.y0), min(ext, h - tile.y0),
                            max(0, -tile.x0), min(ext, w - tile.x0)))
        windows.append(None)
        prog = compile_network(layers, (c, ext, ext), spec, windows=windows)
        crop = np.zeros((c, ext, ext), dtype=np.uint8)
        ys, xs = max(0, tile.y0), max(0, tile.x0)
        ye, xe = min(h, tile.y0 + ext), min(w, tile.x0 + ext)
        crop[:, ys - tile.y0:ye - tile.y0, xs - tile.x0:xe - tile.x0] = frame[:, ys:ye, xs:xe]
        set_input(prog, crop)
        yield tile, prog


def crop_tile(layers, tile: Tile, out: np.ndarray, ext: int) -> tuple[tuple, np.ndarray]:
    """The part of a tile's output ``out`` that belongs to the core: returns
    ``((Y0, Y1, X0, X1), pixels)`` in high-resolution frame coordinates."""
    s = layers[-1].stride
    # HR output y of the tile corresponds to frame HR y + S*tile.y0.
    Y0, Y1 = s * tile.cy0, s * tile.cy1
    X0, X1 = s * tile.cx0, s * tile.cx1
    oy, ox = Y0 - s * tile.y0, X0 - s * tile.x0
    return (Y0, Y1, X0, X1), out[:, oy:oy + (Y1 - Y0), ox:ox + (X1 - X0)]


def frame_programs(layers, frame: np.ndarray, spec: EngineSpec):
    """``([(tile, program), ...], ext)`` for one frame (C, H, W): one untiled program
    (``tile`` None, ``ext`` None) when the frame fits the buffers, else the largest square tile
    core whose extended tile (``ext`` = core + 2 * halo) fits, in tiles.

    Raises
    ------
    ProgramError
        if the network does not fit even a 1-pixel tile (with the reason).
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[None]
    try:
        prog = compile_network(layers, frame.shape, spec)
        set_input(prog, frame)
        return [(None, prog)], None
    except ProgramError as whole:
        lo, hi, best, smallest = 1, max(frame.shape[1:]), None, whole
        while lo <= hi:
            core = (lo + hi) // 2
            ext = core + 2 * halo(layers)
            try:
                compile_network(layers, (frame.shape[0], ext, ext), spec)
                best, lo = core, core + 1
            except ProgramError as e:
                hi, smallest = core - 1, e
        if best is None:
            # (the reason the smallest tile tried failed: a resource no tiling helps, such as
            # the weights, rather than the whole frame's)
            raise ProgramError(f"the network does not fit the engine even for a 1-pixel tile "
                               f"({smallest})") from None
        return list(compile_tiled(layers, frame, spec, best)), best + 2 * halo(layers)
