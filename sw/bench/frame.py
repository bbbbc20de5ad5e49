"""``deconvsr bench frame``: frames end to end, as a board user gets them.

The board's engine spec (the one its bitstream is built from) runs behind its link at the
board's line rate, simulated at the bit level (:mod:`deconvsr.sim.device`, the UART or SPI top
with the real engine at the board's engine clock), and the host driver streams frames to it
back to back with the kernels loaded once (:meth:`deconvsr.sw.host.device.LinkDevice.upscale`).
What is **measured**, per frame: the simulated time (frames per second), the bytes on the wire
each way (counted by the simulator's bridge), the engine's cycles (its ``cycles_busy`` counter)
and the useful MACs (its ``mac_used`` counter where the spec keeps it; always the descriptors'
count, :attr:`StreamPlan.useful`). Derived: utilisation = useful MACs / (P x engine cycles),
link efficiency = frame bytes (LR Y in + HR Y out) / wire bytes, the link-busy share (the
wire bytes' line time / frame time) and the engine-busy share (engine cycles / frame cycles).

Frames too large to simulate in reasonable time get the **model**: the same plan, the exact
bytes of every STEP request and reply (encoded from the frame and the integer model's output),
the engine's cycles per step from :func:`deconvsr.sw.host.stream.step_cycles`, and the link's
timing (requests and replies one after the other, the device waiting for the engine in
256-cycle polls). The model's per-layer-start constant is calibrated on a small RTL run; its
error is then shown against an RTL run of the same network on the same board at a size the
simulator can run (``validation``), for both the engine cycles and the frame time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ... import protocol
from ...bus import Space, start_byte
from ...descriptor import COUNTERS, decode_counters
from ...hw.boards import BOARDS
from ...hw.uart import uart_divisor
from ...sim.device import NativeDevice, cache_dir
from ..golden.intmodel import run_network
from ..host.device import LinkDevice
from ..host.driver import Driver
from ..host.program import ProgramError
from ..host.stream import plan_stream, step_cycles, step_polls
from ..host.transport import SerialTransport, SocketSpiPort, SpiTransport
from ..model.zoo import load_quantized
from .engine import camera_tile

__all__ = ["FrameBench", "ProgramError", "photo", "measure", "model", "bench", "render", "LINKS",
           "RTL_MAX_PIXELS"]

LINKS = ("uart", "spi")
#: Frames up to this many LR pixels are measured on the RTL; larger ones modelled.
RTL_MAX_PIXELS = 64 * 64
#: The SPI master's clock in the simulation: system cycles per SCK period (an external master;
#: 8 at 90 MHz is 11.25 MHz SCK).
SCK_CYCLES = 8
BITS_PER_BYTE = 10      # UART 8N1


@dataclass(frozen=True)
class FrameBench:
    board: str
    model: str
    size: tuple
    frames: int = 2
    link: str = "uart"
    baud: int | None = None     #: the UART's rate (None: the board's, ``boards.toml``)


def photo(h: int, w: int) -> np.ndarray:
    """An ``h`` x ``w`` grey photograph (skimage's camera, mirrored beyond its 512 x 512)."""
    base = camera_tile(512, offset=(0, 0))[0]
    reps = (-(-h // 512), -(-w // 512))
    tiles = np.block([[base if (i + j) % 2 == 0 else base[:, ::-1] for j in range(reps[1])]
                      for i in range(reps[0])])
    y0 = (tiles.shape[0] - h) // 2
    x0 = (tiles.shape[1] - w) // 2
    return np.ascontiguousarray(tiles[y0:y0 + h, x0:x0 + w], dtype=np.uint8)


def _board(name):
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


def _line(board, link, baud=None) -> dict:
    """The link's timing: seconds per byte each way, and the simulated device's clock (the
    engine's: the simulated SoC runs its link on the engine clock too)."""
    clk = int(board.clk_hz)
    if link == "uart":
        baud = baud or board.baud
        div = uart_divisor(clk, baud)
        return {"kind": "uart", "baud": baud, "clk_hz": clk,
                "to_device_s": BITS_PER_BYTE / baud,
                "from_device_s": BITS_PER_BYTE * div / clk}
    sck = clk / SCK_CYCLES
    return {"kind": "spi", "sck_hz": sck, "clk_hz": clk,
            "to_device_s": 8 / sck, "from_device_s": 8 / sck}


def _frame_figures(board, layers, plan, x, *, sim_s, wire_out, wire_in, cycles, useful,
                   line) -> dict:
    spec = board.spec
    s = layers[-1].stride
    h, w = x.shape
    frame_bytes = h * w + s * s * h * w
    wire = wire_out + wire_in
    if line["kind"] == "spi":
        # (full duplex: every SCK byte carries a byte each way; the clocked bytes count once)
        wire = max(wire_out, wire_in)
        line_s = wire * line["to_device_s"]
    else:
        line_s = wire_out * line["to_device_s"] + wire_in * line["from_device_s"]
    return {"fps": 1.0 / sim_s, "frame_s": sim_s, "wire_to_device": wire_out,
            "wire_from_device": wire_in, "frame_bytes": frame_bytes,
            "frame_in": h * w, "frame_out": s * s * h * w,
            "link_efficiency": frame_bytes / wire, "wire_per_frame_byte": wire / frame_bytes,
            "engine_cycles": cycles, "useful_macs": useful,
            "utilisation": useful / (spec.lanes * cycles) if cycles else None,
            "link_busy": line_s / sim_s, "engine_busy": cycles / (sim_s * board.clk_hz),
            "engine_s": cycles / board.clk_hz, "line_s": line_s,
            "bands": 1 << plan.band_lg, "stripes": len(plan.stripes), "steps": plan.requests,
            "line_baud": line.get("baud"), "line_sck_hz": line.get("sck_hz"),
            "engine_hz": board.clk_hz}


def measure(fb: FrameBench, *, progress=None) -> dict:
    """Run ``fb.frames`` frames (after one that loads the kernels) through the simulated board
    and return the figures per frame, measured."""
    board = _board(fb.board)
    spec = board.spec
    _, layers = load_quantized(fb.model, spec=spec.arith)
    h, w = fb.size
    x = photo(h, w)
    want = run_network(x[None], layers)[0]
    plan = plan_stream(layers, (h, w), spec)
    line = _line(board, fb.link, fb.baud)
    top = "uart" if fb.link == "uart" else "spi"
    sim = NativeDevice(top=top, engine="engine", spec=spec.name, clk_hz=line["clk_hz"],
                    baud=line.get("baud", board.baud), sck_cycles=SCK_CYCLES)
    t_wall = time.perf_counter()
    with sim:
        transport = SerialTransport(sim.url) if top == "uart" else \
            SpiTransport(SocketSpiPort("127.0.0.1", sim.port), name="sim-spi")
        dev = LinkDevice(Driver(transport, timeout=3600.0), name=f"sim-{top}", verify=True)
        try:
            t0 = sim.status()
            first = dev.upscale(layers, x)           # loads the kernels
            t1 = sim.status()
            c1 = decode_counters(dev.driver.read(Space.COUNT, 0, 4 * len(COUNTERS)))
            t2 = sim.status()
            per = []
            ok = bool(np.array_equal(first, want))
            for _ in range(fb.frames):
                a = sim.status()
                out = dev.upscale(layers, x)
                b = sim.status()
                ok = ok and bool(np.array_equal(out, want))
                per.append((a, b))
                if progress:
                    progress()
            c2 = decode_counters(dev.driver.read(Space.COUNT, 0, 4 * len(COUNTERS)))
        finally:
            dev.driver.transport.close()
    wall = time.perf_counter() - t_wall
    n = fb.frames
    sim_s = sum(b["sim_ps"] - a["sim_ps"] for a, b in per) / 1e12 / n
    wire_out = sum(b["bytes_in"] - a["bytes_in"] for a, b in per) / n
    wire_in = sum(b["bytes_out"] - a["bytes_out"] for a, b in per) / n
    cycles = (c2["cycles_busy"] - c1["cycles_busy"]) / n
    used = (c2["mac_used"] - c1["mac_used"]) / n if spec.counters == "all" else None
    fig = _frame_figures(board, layers, plan, x, sim_s=sim_s, wire_out=wire_out,
                         wire_in=wire_in, cycles=cycles, useful=plan.useful, line=line)
    fig.update(source="rtl", bit_exact=ok, mac_used_counter=used,
               kernel_load={"s": (t1["sim_ps"] - t0["sim_ps"]) / 1e12 - sim_s,
                            "wire_bytes": (t1["bytes_in"] - t0["bytes_in"] +
                                           t1["bytes_out"] - t0["bytes_out"])
                            - wire_out - wire_in},
               counter_read_bytes=(t2["bytes_in"] - t1["bytes_in"] + t2["bytes_out"] -
                                   t1["bytes_out"]),
               sim_wall_s=wall, step_cycles_total=None)
    return fig


def _request_bytes(first, count, in_addr, data, out_addr, out_len, polls) -> int:
    payload = Driver.step_payload(data, out_addr, out_len, polls)
    start = start_byte(count, first, keep=True) if count else 0
    return len(Driver.encode(protocol.Opcode.STEP, 1, start, in_addr, len(payload), payload))


def _reply_bytes(payload: bytes) -> int:
    hdr = bytes(protocol.REPLY_HEADER_BYTES)
    body = hdr + bytes(2)
    if payload:
        body += payload + bytes(2)
    return len(protocol.stuff(body))


def model(fb: FrameBench, overhead: int, *, x=None) -> dict:
    """The modelled figures of one frame (see the module docstring)."""
    board = _board(fb.board)
    spec = board.spec
    _, layers = load_quantized(fb.model, spec=spec.arith)
    h, w = fb.size
    x = photo(h, w) if x is None else x
    want = run_network(x[None], layers)
    plan = plan_stream(layers, (h, w), spec)
    line = _line(board, fb.link, fb.baud)
    clk = board.clk_hz
    poll = protocol.WAIT_UNIT / line["clk_hz"]
    t = 0.0
    engine_free = 0.0
    cycles_total = 0
    wire_out = wire_in = 0
    s = layers[-1].stride
    for stripe in plan.stripes:
        for sp, addr, data in stripe.rewind:     # the descriptors, one WRITE a frame
            req = len(Driver.encode(protocol.Opcode.WRITE, 1, sp, addr, len(data), data))
            rep = _reply_bytes(b"")
            wire_out += req
            wire_in += rep
            t = max(t, engine_free) + req * line["to_device_s"] + rep * line["from_device_s"]
        cyc = step_cycles(stripe, spec, overhead)
        for req, c, polls in zip(stripe.requests, cyc, step_polls(stripe, spec)):
            data = stripe.in_bytes(x, req)
            y0, y1 = req.out_rows
            out = want[:, y0:y1, s * stripe.c0:s * stripe.c1].tobytes() if y1 > y0 else b""
            rq = _request_bytes(req.first, req.count, req.in_addr, data, req.out_addr,
                                req.out_len, polls)
            rp = _reply_bytes(out)
            wire_out += rq
            wire_in += rp
            t += rq * line["to_device_s"]                  # the request arrives
            if engine_free > t:                           # the device polls the engine
                t += np.ceil((engine_free - t) / poll) * poll
            if req.count:
                engine_free = t + c / clk
                cycles_total += c
            t += rp * line["from_device_s"]               # the reply goes out
    fig = _frame_figures(board, layers, plan, x, sim_s=t, wire_out=wire_out, wire_in=wire_in,
                         cycles=cycles_total, useful=plan.useful, line=line)
    fig.update(source="model", overhead_per_layer_start=overhead)
    return fig


@contextlib.contextmanager
def _stdout_to_stderr():
    """The simulator build's tools (Verilator, make) write to file descriptor 1: send it to
    stderr meanwhile, so that ``--json`` output stays JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def calibrate(fb: FrameBench) -> int:
    """The cycle model's per-layer-start constant for this board's engine, from a small frame
    streamed on the RTL (its steps' cycles minus the model's MAC and drain cycles)."""
    from ...sim.engine_sim import cached_build_dir, run_stream_rtl
    board = _board(fb.board)
    spec = board.spec
    _, layers = load_quantized(fb.model, spec=spec.arith)
    x = photo(6, 6)
    plan = plan_stream(layers, x.shape, spec)
    with _stdout_to_stderr(), cached_build_dir(spec) as bd:
        r = run_stream_rtl(plan, x, build_dir=bd)
    base = step_cycles(plan.stripes[0], spec, 0)
    starts = sum(q.count for q in plan.stripes[0].requests)
    return round((sum(r["step_cycles"]) - sum(base)) / starts)


def _sources_hash() -> str:
    """Hash of everything a frame's figures depend on: the gateware (``deconvsr.hw``), what
    both sides share (``deconvsr``'s own modules) and the host's frame path (``sw.host``)."""
    import hashlib
    import importlib.util
    from pathlib import Path
    h = hashlib.sha256()
    for name, deep in (("deconvsr", False), ("deconvsr.hw", True), ("deconvsr.sw.host", True)):
        for d in importlib.util.find_spec(name).submodule_search_locations:
            for f in sorted(Path(d).rglob("*.py") if deep else Path(d).glob("*.py")):
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _cache_key(fb: FrameBench, validate: bool) -> str:
    board = _board(fb.board)
    return json.dumps([repr(board.spec), board.clk_hz, fb.baud or board.baud, fb.model,
                       list(fb.size), fb.frames, fb.link, validate, _sources_hash()])


def bench(fb: FrameBench, *, validate=True, cached=True) -> dict:
    """Measured on the RTL when the frame is small enough, else modelled and validated.
    Results are kept in ``$DECONVSR_CACHE/frame_bench.json`` by board spec, model, size,
    link and gateware source (``cached=False`` measures again)."""
    path = cache_dir() / "frame_bench.json"
    key = _cache_key(fb, validate)
    try:
        store = json.loads(path.read_text())
    except (OSError, ValueError):
        store = {}
    if cached and key in store:
        return {**store[key], "cached": True}
    result = _bench(fb, validate=validate)
    try:
        store = json.loads(path.read_text())
    except (OSError, ValueError):
        store = {}
    store[key] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1))
    tmp.replace(path)
    return result


def _bench(fb: FrameBench, *, validate=True) -> dict:
    h, w = fb.size
    if h * w <= RTL_MAX_PIXELS:
        return {"bench": "frame", **fb.__dict__, "size": list(fb.size), **measure(fb), "ok": True}
    overhead = calibrate(fb)
    out = {"bench": "frame", **fb.__dict__, "size": list(fb.size), **model(fb, overhead)}
    if validate:
        vs = FrameBench(fb.board, fb.model, (64, 64), fb.frames, fb.link, fb.baud)
        rtl = bench(vs)                         # (measured on the RTL; cached)
        mod = model(vs, overhead)
        out["validation"] = {
            "size": [64, 64], "rtl_fps": rtl["fps"], "model_fps": mod["fps"],
            "frame_time_error": mod["frame_s"] / rtl["frame_s"] - 1,
            "rtl_cycles": rtl["engine_cycles"], "model_cycles": mod["engine_cycles"],
            "cycle_error": mod["engine_cycles"] / rtl["engine_cycles"] - 1,
            "rtl_wire": rtl["wire_to_device"] + rtl["wire_from_device"],
            "model_wire": mod["wire_to_device"] + mod["wire_from_device"],
            "bit_exact": rtl["bit_exact"]}
    out["ok"] = True
    return out


def render(r: dict) -> str:
    rate = f"{r['line_baud'] / 1e6:g} Mbaud" if r.get("line_baud") else \
        f"SCK {r['line_sck_hz'] / 1e6:g} MHz" if r.get("line_sck_hz") else ""
    lines = [f"{r['model']} on {r['board']} ({r['link']} {rate}, engine "
             f"{r.get('engine_hz', 0) / 1e6:g} MHz), {r['size'][0]} x {r['size'][1]} in, "
             f"{r['source']}: {r['fps']:.2f} fps ({r['frame_s'] * 1e3:.1f} ms a frame)",
             f"  wire: {r['wire_to_device']:,.0f} B to the device, {r['wire_from_device']:,.0f} B "
             f"back, for {r['frame_bytes']:,} frame bytes (efficiency "
             f"{r['link_efficiency']:.3f})",
             f"  engine: {r['engine_cycles']:,.0f} cycles, {r['useful_macs']:,} useful MACs, "
             f"utilisation {r['utilisation']:.3f}; busy: link {r['link_busy']:.2f}, engine "
             f"{r['engine_busy']:.2f}; B = {r['bands']}, {r['stripes']} stripe(s), "
             f"{r['steps']} steps"]
    if r.get("bit_exact") is not None:
        lines.append(f"  bit-exact with the integer model: {r['bit_exact']}")
    v = r.get("validation")
    if v:
        lines.append(f"  model vs RTL at {v['size'][0]} x {v['size'][1]}: frame time "
                     f"{v['frame_time_error'] * 100:+.2f}%, engine cycles "
                     f"{v['cycle_error'] * 100:+.2f}%, wire {v['model_wire']:,} vs "
                     f"{v['rtl_wire']:,.0f} B")
    return "\n".join(lines)
