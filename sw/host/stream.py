"""Streaming compiler: a frame through every layer band by band, each feature pixel computed once.

An engine with an ``IN`` memory (gateware version 2, ``EngineSpec.in_bytes``) runs a network on
a frame as a pipeline of **bands**: layer ``i`` computes ``B = 2**band_lg`` block rows per step,
one band behind the layer before it, into a **ring** of rows in an ACT buffer (or, for the last
layer, in ``OUT``) that holds just the rows its consumer still needs; the first layer reads the
packed frame (one byte a pixel) from the ``IN`` ring. The descriptors are loaded once a frame:
a banded descriptor is a cursor that the engine moves to the next band after each one it runs
(:class:`deconvsr.descriptor.LayerDescriptor`), so per step only the frame's own bytes cross the
link: the ``STEP`` request (:mod:`deconvsr.protocol`) carries the input rows the next band needs,
and its reply the output rows of the band finished the step before, read while the engine
computes the next one.

Frames wider than the rings allow are cut into column **stripes**: each layer computes the
columns the later layers need (its extent shrinks by their halo layer by layer), the last layer
exactly the stripe's core, so only the halo columns of the *input* are sent twice and nothing
but kept pixels comes back.

    plan = plan_stream(layers, (h, w), spec)          # raises ProgramError if it cannot
    for stripe in plan.stripes:
        ... load stripe.setup (what differs from the device's), then stripe.rewind (always) ...
        for req in stripe.requests:
            ... STEP: stripe.in_bytes(frame, req) to IN at req.in_addr, start req.count
                layers from req.first, reply: req.out_len bytes of OUT at req.out_addr ...
            ... plan.place(out, stripe, req, reply) ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...bus import CtrlReg, Space, start_byte
from ...descriptor import (DESC_BYTES, ENTRY_BYTES, BiasEntry, LayerDescriptor, entry_fits,
                           next_band, pack)
from ...sim.engine_sim import EngineModel
from ...spec import EngineSpec
from .program import ProgramError, _wide, frame_programs, pack_weights, plan_layer

__all__ = ["StreamPlan", "Stripe", "StepRequest", "plan_stream", "run_stream_model"]

#: Largest band tried (block rows); larger bands need larger rings for little gain.
MAX_BAND_LG = 5


@dataclass(frozen=True)
class StepRequest:
    """Step ``step`` of a stripe: write ``in_rows`` (LR rows ``[y0, y1)`` of the stripe's input
    columns) to ``IN`` from ``in_addr``, start ``count`` descriptors from ``first`` (each runs
    its next band), and read ``out_len`` bytes of ``OUT`` from ``out_addr``: the HR rows
    ``out_rows`` of the stripe's core columns."""
    step: int
    first: int
    count: int
    in_addr: int
    in_rows: tuple[int, int]
    out_addr: int
    out_len: int
    out_rows: tuple[int, int]


@dataclass
class Stripe:
    """A column stripe: LR core columns ``[c0, c1)``, input columns ``[x0, x1)``."""
    c0: int
    c1: int
    x0: int
    x1: int
    setup: list = field(default_factory=list)       # (Space, addr, bytes): weights, entries
    rewind: list = field(default_factory=list)      # (Space, addr, bytes): the descriptors,
    #                                                 written before every frame (the engine
    #                                                 moves their bands on)
    descriptors: list = field(default_factory=list)  # per layer, the descriptor's fields
    requests: list = field(default_factory=list)
    out_planes: int = 0     # OUT bytes between output channels' rings (C_out > 1)
    y_in0: int = 0          # the LR frame row where the stripe's rows start (a row chunk)

    def in_bytes(self, frame: np.ndarray, req: StepRequest) -> bytes:
        y0, y1 = req.in_rows
        y0, y1 = y0 + self.y_in0, y1 + self.y_in0
        return np.ascontiguousarray(frame[y0:y1, self.x0:self.x1], dtype=np.uint8).tobytes()


@dataclass
class StreamPlan:
    spec: EngineSpec
    frame: tuple[int, int]          # LR (H, W)
    out_frame: tuple[int, int, int]  # HR (C, H, W)
    band_lg: int
    stripes: list
    n_layers: int
    useful: int = 0                 # useful MACs of the frame (every stripe, every band)

    def place(self, out: np.ndarray, stripe: Stripe, req: StepRequest, raw: bytes) -> None:
        """Put a STEP reply ``raw`` into the HR output ``out`` ``(C, H, W)``."""
        y0, y1 = req.out_rows
        if y1 <= y0:
            return
        s = out.shape[2] // self.frame[1]
        w = s * (stripe.c1 - stripe.c0)
        rows = y1 - y0
        data = np.frombuffer(raw, dtype=np.uint8).reshape(self.out_frame[0], rows, w)
        out[:, y0:y1, s * stripe.c0:s * stripe.c1] = data

    @property
    def requests(self) -> int:
        return sum(len(s.requests) for s in self.stripes)


def _layer_halo(layer) -> tuple[int, int]:
    """LR input columns (rows) the outputs of ``layer`` over input columns ``[c0, c1)`` read
    beyond them, ``(lo, hi)``: block ``q`` reads ``[q - (T - 1), q]``, output ``X`` belongs to
    block ``(X + P_d) // S``. (For a stride-1 'same' layer: ``(P_d, P_d)``.)"""
    s, pd = layer.stride, layer.padding
    t = -(-layer.k // s)
    return t - 1 - pd // s, (s - 1 + pd) // s


def _check_streamable(layers):
    if not layers:
        raise ProgramError("the network has no layers")
    for layer in layers[:-1]:
        if layer.stride != 1 or layer.k != 2 * layer.padding + 1:
            raise ProgramError(f"{layer.name}: streaming supports 'same' stride-1 feature layers "
                               f"(K_d = 2*P_d + 1), not K_d={layer.k}, P_d={layer.padding}, "
                               f"S={layer.stride}")
    last = layers[-1]
    if last.k - 2 * last.padding != last.stride:
        raise ProgramError(f"{last.name}: streaming needs an output of exactly S times the input "
                           f"(K_d - 2*P_d = S), not K_d={last.k}, P_d={last.padding}, "
                           f"S={last.stride}")
    if layers[0].c_in != 1:
        raise ProgramError(f"{layers[0].name}: the streamed input has one channel, the layer "
                           f"takes {layers[0].c_in}")


def _check_kernels(layers, spec):
    """The weights and entries fit whatever the band and stripes (else no plan can)."""
    words = entries = 0
    for i, layer in enumerate(layers):
        r = 1 if i == len(layers) - 1 else spec.drain_lanes
        pl = plan_layer(layer, spec.lanes, r, spec.act_lanes, spec.fixed_pi)
        words += pl.weight_words
        entries = -(-entries // spec.drain_lanes) * spec.drain_lanes + pl.v
    if words > spec.weight_depth:
        raise ProgramError(f"weights need {words} words, weight_depth is {spec.weight_depth}")
    if entries > spec.bias_depth:
        raise ProgramError(f"requantisation entries need {entries}, bias_depth is "
                           f"{spec.bias_depth}")


def _geometry(layers):
    """Per layer: first block row/column ``q0`` (= ``P_d // S``), ``(lo, hi)`` input halo,
    and the downstream halo ``(lo, hi)`` each layer's output extent needs."""
    q0 = [layer.padding // layer.stride for layer in layers]
    halo = [_layer_halo(layer) for layer in layers]
    down = [(0, 0)] * len(layers)
    acc = (0, 0)
    for i in range(len(layers) - 1, -1, -1):
        down[i] = acc           # what layers after i need around i's output
        acc = (acc[0] + halo[i][0], acc[1] + halo[i][1])
    return q0, halo, down, acc  # acc: the input's halo


def _stripes(w: int, n: int) -> list[tuple[int, int]]:
    """``n`` stripes of (nearly) equal width covering ``[0, w)``."""
    edges = [round(i * w / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def compile_frame(layers, frame_hw, spec: EngineSpec):
    """Compile an ``h`` x ``w`` frame for ``spec`` the way a link device runs it: streamed
    (:func:`plan_stream`) on a streaming engine, else tiled (:func:`.program.frame_programs`).
    Raises :class:`ProgramError` when the network or frame does not fit the engine."""
    if spec.in_bytes:
        return plan_stream(layers, frame_hw, spec)
    return frame_programs(layers, np.zeros((1, *frame_hw), np.uint8), spec)


def plan_stream(layers, frame_hw, spec: EngineSpec, *, band_lg: int | None = None,
                stripes: int | None = None) -> StreamPlan:
    """Plan a frame of ``frame_hw`` (LR ``(H, W)``) through ``layers`` on ``spec``: the fewest
    stripes, then the largest band whose rings fit. ``band_lg``/``stripes`` force a choice.

    Raises
    ------
    ProgramError
        if the engine cannot stream (no IN memory), the network cannot be streamed, or no
        band and stripe count fit (naming the memory that is short).
    """
    if not spec.in_bytes:
        raise ProgramError(f"engine {spec.name!r} has no IN memory (gateware version 1): it "
                           f"cannot stream frames")
    _check_streamable(layers)
    _check_kernels(layers, spec)
    h, w = frame_hw
    if h < 1 or w < 1:
        raise ProgramError(f"frame must be at least 1 x 1, not {h} x {w}")
    try:
        return _plan_columns(layers, (h, w), spec, band_lg, stripes)
    except ProgramError as e:
        if "exceeds dim_bits" not in str(e) or h == 1:
            raise
        err = e
    # Taller than the engine's coordinates reach: row chunks, each streamed as a frame of its
    # own with the rows its core's outputs read around it (recomputed at the seams), and only
    # the core's output rows read back.
    r_lo, r_hi = _geometry(layers)[3]
    for n in range(2, h + 1):
        edges = [round(i * h / n) for i in range(n + 1)]
        try:
            return _plan_chunks(layers, (h, w), spec, band_lg, stripes,
                                list(zip(edges, edges[1:])), (r_lo, r_hi))
        except ProgramError as e:
            if "exceeds dim_bits" not in str(e):
                raise
            err = e
    raise ProgramError(f"the frame cannot be streamed on {spec.name!r}: {err}")


def _plan_columns(layers, frame_hw, spec, band_lg, stripes) -> StreamPlan:
    h, w = frame_hw
    last_err = None
    counts = [stripes] if stripes else range(1, w + 1)
    for n in counts:
        lgs = [band_lg] if band_lg is not None else \
            range(min(MAX_BAND_LG, max(h, 1).bit_length()), -1, -1)
        for lg in lgs:
            try:
                return _plan(layers, (h, w), spec, lg, _stripes(w, n))
            except ProgramError as e:
                last_err = e
        if stripes is None and n > 1 and last_err is not None and "weights" in str(last_err):
            break
    raise ProgramError(f"the frame cannot be streamed on {spec.name!r}: {last_err}")


def _plan_chunks(layers, frame_hw, spec, band_lg, stripes, cores, reach) -> StreamPlan:
    """Row chunks ``cores`` (LR rows ``[y0, y1)``), each planned as a frame of the rows
    ``[y0 - reach[0], y1 + reach[1])`` (within the frame); their stripes read back only the
    core's HR rows, placed in the whole frame."""
    h, w = frame_hw
    plan = None
    for y0, y1 in cores:
        a, b = max(0, y0 - reach[0]), min(h, y1 + reach[1])
        sub = _plan_columns(layers, (b - a, w), spec, band_lg, stripes)
        if plan is None:
            plan = StreamPlan(spec=spec, frame=(h, w), band_lg=sub.band_lg, stripes=[],
                              n_layers=sub.n_layers, out_frame=(sub.out_frame[0],
                                                                sub.out_frame[1] // (b - a) * h,
                                                                sub.out_frame[2]))
        s = sub.out_frame[1] // (b - a)
        keep0, keep1 = s * (y0 - a), s * (y1 - a)      # the core's HR rows in the chunk
        for stripe in sub.stripes:
            stripe.y_in0 = a
            wo = s * (stripe.c1 - stripe.c0)
            ring = stripe.out_planes
            for i, req in enumerate(stripe.requests):
                r0, r1 = req.out_rows
                k0, k1 = max(r0, keep0), min(r1, keep1)
                if k1 <= k0:
                    stripe.requests[i] = replace(req, out_len=0, out_addr=0, out_rows=(0, 0))
                    continue
                stripe.requests[i] = replace(
                    req, out_addr=(req.out_addr + (k0 - r0) * wo) % ring if ring else 0,
                    out_len=(k1 - k0) * wo * plan.out_frame[0],
                    out_rows=(k0 - keep0 + s * y0, k1 - keep0 + s * y0))
            plan.stripes.append(stripe)
    plan.useful = frame_macs(layers, h, w)
    return plan


def _taps_1d(n_in: int, n_out: int, k: int, s: int, p: int) -> int:
    """Output positions x taps of a layer along one axis whose input is inside the frame."""
    x = np.arange(n_out)[:, None] + p - np.arange(k)[None, :]
    return int(((x % s == 0) & (x >= 0) & (x // s < n_in)).sum())


def frame_macs(layers, h: int, w: int) -> int:
    """Useful MACs of an ``h`` x ``w`` frame: every layer's in-frame taps (the frame's, not
    a chunk's or stripe's: no seam recomputed)."""
    total = 0
    for layer in layers:
        s = layer.stride
        total += layer.c_in * layer.c_out * _taps_1d(h, s * h, layer.k, s, layer.padding) \
            * _taps_1d(w, s * w, layer.k, s, layer.padding)
        h, w = s * h, s * w
    return total


def _plan(layers, frame_hw, spec, lg, cores) -> StreamPlan:
    h, w = frame_hw
    b = 1 << lg
    n = len(layers)
    if n > spec.max_layers:
        raise ProgramError(f"{n} layers exceed the {spec.max_layers} descriptors")
    q0, halo, down, in_halo = _geometry(layers)
    # Every consumer finds its rows one band behind its producer: its band j (block rows
    # q0 + jB ..) reads rows up to q0 + (j+1)B - 1, the producer has written (j+2)B rows.
    for i in range(1, n):
        if q0[i] > b:
            raise ProgramError(f"{layers[i].name}: band of {b} rows is shorter than the "
                               f"{q0[i]} rows it reads ahead")
    last = layers[-1]
    s = last.stride
    c_out = last.c_out
    plan = StreamPlan(spec=spec, frame=(h, w), out_frame=(c_out, s * h, s * w), band_lg=lg,
                      stripes=[], n_layers=n)
    for c0, c1 in cores:
        plan.stripes.append(_plan_stripe(layers, (h, w), spec, lg, c0, c1, q0, halo, down,
                                         in_halo, plan))
    return plan


def _plan_stripe(layers, frame_hw, spec, lg, c0, c1, q0, halo, down, in_halo, plan) -> Stripe:
    h, w = frame_hw
    b = 1 << lg
    a = spec.act_lanes
    n = len(layers)
    # Column extents (frame LR columns) of each layer's input; layer i's input is layer i-1's
    # output: the core widened by the halo of the layers from i on, clamped to the frame.
    ext = []
    for i in range(n):
        lo, hi = down[i - 1] if i else in_halo
        ext.append((max(0, c0 - lo), min(w, c1 + hi)))
    stripe = Stripe(c0=c0, c1=c1, x0=ext[0][0], x1=ext[0][1])
    # Ring sizes. Layer i's output ring (ACT buffer i % 2) holds the rows its consumer (i+1)
    # reads in a step plus the band i writes: 2B + lo_{i+1} rows; the IN ring 2B + lo + hi
    # of layer 0 (the host writes the next band's rows while the engine reads this one's).
    in_w = ext[0][1] - ext[0][0]
    t = [-(-layer.k // layer.stride) for layer in layers]
    in_rows = 2 * b + t[0] - 1
    if in_rows * in_w > spec.in_bytes:
        raise ProgramError(f"IN ring needs {in_rows} rows of {in_w} bytes, in_bytes is "
                           f"{spec.in_bytes}")
    # Feature-map rings: a plane of 2**ring_bits words per channel word (the engine's), the
    # planes of layer i's ring (its output) in ACT buffer i % 2.
    plane = 1 << spec.ring_bits
    used = [0, 0]
    regions = {}
    for i in range(n - 1):
        width = ext[i + 1][1] - ext[i + 1][0]
        rows = 2 * b + t[i + 1] - 1 - q0[i + 1]
        if rows * width > plane:
            raise ProgramError(f"band of {b} rows: {layers[i].name}'s ring needs {rows} rows of "
                               f"{width} words, a ring plane holds {plane}")
        cw = -(-layers[i].c_out // a)
        buf = i % 2
        regions[i] = (buf, used[buf])
        used[buf] += cw * plane
        if used[buf] > spec.act_depth:
            raise ProgramError(f"the rings of ACT buffer {buf} need {used[buf] // plane} planes "
                               f"of {plane} words, act_depth is {spec.act_depth}")
    # The last layer's OUT ring (OUT wraps at its size): two bands of HR rows of the core.
    s = layers[-1].stride
    wo = s * (c1 - c0)
    out_rows = 2 * b * s
    if layers[-1].c_out != 1:
        raise ProgramError(f"{layers[-1].name}: streaming supports one output channel (Y), "
                           f"not {layers[-1].c_out}")
    if out_rows * wo > spec.out_bytes:
        raise ProgramError(f"band of {b} rows: OUT ring needs {out_rows * wo} bytes, "
                           f"out_bytes is {spec.out_bytes}")
    stripe.out_planes = spec.out_bytes
    # Descriptors, weights and entries.
    widths = spec.entry_widths()
    descs = b""
    weights, entries = [], []
    w_base = 0
    c_in = 1
    for i, layer in enumerate(layers):
        is_last = i == n - 1
        r = 1 if is_last else spec.drain_lanes
        pl = plan_layer(layer, spec.lanes, r, a, spec.fixed_pi)
        wide = _wide(layer, pl.pv, r)
        ls = layer.stride
        pd = layer.padding
        xin0, xin1 = ext[i]
        w_in = xin1 - xin0
        if is_last:
            xo0, xo1 = ls * c0, ls * c1      # HR core columns
            h_out, w_out = ls * h, xo1 - xo0
        else:
            xo0, xo1 = ext[i + 1]
            h_out, w_out = h, xo1 - xo0
        # Blocks: HR/LR output column X (frame) = S*(qx + xin0) + fx - P_d.
        qx0 = (xo0 + pd) // ls - xin0
        qx1 = (xo1 - 1 + pd) // ls - xin0
        bx0 = ls * (qx0 + xin0) - pd - xo0
        qy0 = pd // ls
        qy_last = (h_out - 1 + pd) // ls
        by0 = ls * qy0 - pd
        while len(entries) % spec.drain_lanes:
            entries.append({"bias": 0, "mult": 0, "shift": 0, "lane": 0, "fy": 0, "fx": 0,
                            "off": 0})
        b_base = len(entries)
        out_base = 0 if is_last else regions[i][1]
        if i == 0:
            in_src, in_buf, in_base, hw_in = 1, 1, 0, spec.in_bytes
        else:
            in_buf, in_base = regions[i - 1]
            in_src, hw_in = 0, plane
        for fy in range(ls):
            for fx in range(ls):
                for o in range(layer.c_out):
                    o_plane = 0 if is_last else (o // a) * plane
                    entries.append({
                        "bias": int(layer.bias[o, (fy - pd) % ls, (fx - pd) % ls]),
                        "mult": int(layer.mult[o]), "shift": int(layer.shift[o]),
                        "lane": 0 if is_last else o % a, "fy": fy, "fx": fx,
                        "off": out_base + o_plane + fy * w_out + fx})
                    bad = entry_fits(entries[-1], widths)
                    if bad:
                        raise ProgramError(f"{layer.name}: requantisation entry field {bad} "
                                           f"does not fit this engine's packed entries")
        if max(h, w_in, h_out, w_out) >= 1 << spec.dim_bits:
            raise ProgramError(f"{layer.name}: size {max(h, w_in, h_out, w_out)} exceeds "
                               f"dim_bits={spec.dim_bits}")
        if pl.t > 15:
            raise ProgramError(f"{layer.name}: ceil(K_d/S) = {pl.t} exceeds 15")
        chans = (pl.pi, c_in - (pl.cw - 1) * pl.pi)
        v_last = pl.v - (pl.n_vg - 1) * pl.pv
        useful = [[chans[x] * (pl.pv, v_last)[y] for y in range(2)] for x in range(2)]
        d = {
            "to_out": int(is_last), "in_buf": in_buf, "wide": int(wide),
            "lvl": pl.pi.bit_length() - 1, "t": pl.t, "stride": ls, "cw": pl.cw,
            "n_vg": pl.n_vg, "pv_last": v_last, "h_in": h, "w_in": w_in, "hw_in": hw_in,
            "in_base": in_base, "w_base": w_base, "b_base": b_base,
            "qy0": qy0, "qx0": qx0, "qx1": qx1,
            "qy1": min(qy0 + b - 1, qy_last),
            "row0": qy0 * w_in, "by0": by0, "bx0": bx0, "h_out": h_out, "w_out": w_out,
            "obase0": by0 * w_out + bx0, "orow": ls * w_out,
            "vy0": 0, "vy1": h_out, "vx0": 0, "vx1": w_out, "useful": useful,
            "in_src": in_src, "banded": 1, "band_lg": lg, "qy_last": qy_last,
        }
        try:
            descs += pack(LayerDescriptor, d, DESC_BYTES)
        except ValueError as e:
            raise ProgramError(f"{layer.name}: {e}") from None
        stripe.descriptors.append(d)
        wwords = pack_weights(layer, pl, spec.lanes)
        weights.append(wwords)
        w_base += len(wwords)
        c_in = layer.c_out
    if w_base > spec.weight_depth:
        raise ProgramError(f"weights need {w_base} words, weight_depth is {spec.weight_depth}")
    if len(entries) > spec.bias_depth:
        raise ProgramError(f"requantisation entries need {len(entries)}, bias_depth is "
                           f"{spec.bias_depth}")
    stripe.rewind = [(Space.DESC, 0, descs)]
    stripe.setup = [(Space.WEIGHT, 0, np.concatenate(weights).tobytes()),
                    (Space.BIAS, 0, b"".join(pack(BiasEntry, e, ENTRY_BYTES) for e in entries))]
    stripe.requests = _requests(layers, stripe, (h, w), b, q0, halo, in_w, in_rows, spec)
    plan.useful += _useful(stripe.descriptors)
    return stripe


def _useful(descs) -> int:
    """Useful MACs of a stripe: every band of every layer (the blocks' in-frame taps)."""
    total = 0
    for d in descs:
        taps = np.arange(d["t"])

        def inside(q0, q1, n):
            q = np.arange(q0, q1 + 1)[:, None] - taps[None, :]
            return int(((q >= 0) & (q < n)).sum())
        pairs = inside(d["qy0"], d["qy_last"], d["h_in"]) * inside(d["qx0"], d["qx1"], d["w_in"])
        cw, n_vg, useful = d["cw"], d["n_vg"], d["useful"]
        per = sum(useful[x][y] * (1 if x else cw - 1) * (1 if y else n_vg - 1)
                  for x in (0, 1) for y in (0, 1))
        total += per * pairs
    return total


def _requests(layers, stripe, frame_hw, b, q0, halo, in_w, in_rows, spec) -> list:
    """The STEP requests of one stripe: step k starts the layers that have a band ``k - i``
    (layer i lags layer i - 1 by a band: its rows are then complete) and carries the input
    rows layer 0's band ``k`` needs beyond those sent; its reply carries the HR rows of the
    last layer's band finished at step ``k - 1``; one request more reads the last band."""
    h, _ = frame_hw
    n = len(layers)
    descs = stripe.descriptors
    nb = [-(-(d["qy_last"] - d["qy0"] + 1) // b) for d in descs]
    k_end = max(i + nb[i] for i in range(n))        # steps 0 .. k_end - 1
    last = descs[-1]
    s = last["stride"]
    wo = last["w_out"]
    out_ring = stripe.out_planes
    sent = 0
    reqs = []
    for k in range(k_end + 1):
        active = [i for i in range(n) if 0 <= k - i < nb[i]] if k < k_end else []
        first = active[0] if active else 0
        count = active[-1] - first + 1 if active else 0
        # Rows layer 0's band k reads: [q0 + kB - (T - 1), q0 + (k+1)B - 1] (block rows = rows).
        need = min(h, q0[0] + (k + 1) * b) if 0 in active else sent
        y0, y1 = sent, max(sent, need)
        sent = y1
        # Reply: the last layer's band j = k - 1 - (n - 1), rows by0 + jBS .. + BS.
        j = k - n
        if 0 <= j < nb[-1]:
            r0 = max(0, last["by0"] + j * b * s)
            r1 = min(last["h_out"], last["by0"] + (j + 1) * b * s)
        else:
            r0 = r1 = 0
        out_len = (r1 - r0) * wo * layers[-1].c_out
        reqs.append(StepRequest(step=k, first=first, count=count,
                                in_addr=(y0 * in_w) % spec.in_bytes, in_rows=(y0, y1),
                                out_addr=(r0 * wo) % out_ring if out_ring else 0,
                                out_len=out_len, out_rows=(r0, r1)))
    return reqs


def run_stream_model(layers, frame: np.ndarray, spec: EngineSpec, plan: StreamPlan | None = None,
                     model=None) -> np.ndarray:
    """Run a frame through :class:`deconvsr.sim.engine_sim.EngineModel` (or ``model``, anything
    with ``write(space, addr, data)``/``read(space, addr, n)``) the way the driver streams it:
    per step, the IN rows, the start, then the OUT rows of the band before. For tests."""
    frame = np.asarray(frame, dtype=np.uint8)
    if plan is None:
        plan = plan_stream(layers, frame.shape, spec)
    if model is None:
        model = EngineModel(spec)
    out = np.zeros(plan.out_frame, dtype=np.uint8)
    for stripe in plan.stripes:
        for space, addr, data in stripe.setup + stripe.rewind:
            model.write(space, addr, data)
        for req in stripe.requests:
            data = stripe.in_bytes(frame, req)
            if data:
                model.write(Space.IN, req.in_addr, data)
            if req.count:
                model.write(Space.CTRL, CtrlReg.START_STATUS,
                            bytes([start_byte(req.count, req.first, keep=True)]))
            # (read after the step: a ring too small for the band being written shows here)
            raw = model.read(Space.OUT, req.out_addr, req.out_len) if req.out_len else b""
            plan.place(out, stripe, req, raw)
    return out


# ---- cycle and byte model ------------------------------------------------------------------

def group_drain(d: dict, count: int, spec: EngineSpec) -> int:
    """Cycles the drain takes for a group of ``count`` outputs of descriptor ``d``."""
    period = {"parallel": 1, "serial": 2, "lut": 8}[spec.requant]
    r = spec.drain_lanes if d["wide"] else 1
    return -(-count // r) * period


def band_cycles(d: dict, rows: int, spec: EngineSpec, overhead: int) -> int:
    """Engine cycles of ``rows`` block rows of descriptor ``d``: its MAC cycles, a group
    held back while the group before it drains (the sequencer's spacing), and ``overhead``
    cycles per start of the layer (descriptor load, pipeline fill and drain, write-back) plus
    its adder tree's depth ``lvl``."""
    g = d["cw"] * d["t"] * d["t"]
    pv = spec.lanes >> (d["lvl"] if not spec.fixed_pi else (spec.act_lanes.bit_length() - 1))
    n_vg = d["n_vg"]
    drains = [group_drain(d, d["pv_last"] if vg == n_vg - 1 else pv, spec) for vg in range(n_vg)]
    # group vg waits for the drain of the group before it (the block's last group before vg 0)
    per_block = sum(max(g, drains[vg - 1]) for vg in range(n_vg))
    blocks = rows * (d["qx1"] - d["qx0"] + 1)
    lvl = d["lvl"] if not spec.fixed_pi else spec.act_lanes.bit_length() - 1
    return blocks * per_block - (max(g, drains[-1]) - g) + drains[-1] + overhead + lvl


def step_polls(stripe: Stripe, spec: EngineSpec) -> list[int]:
    """Per STEP request of a stripe, how long the device may wait for the engine to finish
    the step before (in WAIT_UNIT polls): that step's cycles by the model, four times over,
    and 64 polls more."""
    from ...protocol import WAIT_UNIT
    return [min(0xFFFF, 64 + 4 * c // WAIT_UNIT)
            for c in [0, *step_cycles(stripe, spec, 256)][:len(stripe.requests)]]


def step_cycles(stripe: Stripe, spec: EngineSpec, overhead: int) -> list[int]:
    """Engine cycles of each step of a stripe (the bands its request starts)."""
    descs = stripe.descriptors
    cur = [dict(d) for d in descs]
    out = []
    for req in stripe.requests:
        total = 0
        for i in range(req.first, req.first + req.count):
            d = cur[i]
            total += band_cycles(d, d["qy1"] - d["qy0"] + 1, spec, overhead)
            cur[i] = next_band(d)
        out.append(total)
    return out
