"""``deconvsr bench link``: host link efficiency at the UART's bit level, on the paper network.

The workload is the shipped model ``espcn-paper-x3`` (:mod:`deconvsr.sw.model.zoo`, quantised) compiled
by :mod:`deconvsr.sw.host.program` for one 64 x 64 frame: its setup (descriptors, weights, bias
entries: the kernel load), the frame in (ACT writes) and the frame out (OUT read).

What is **measured**: the host driver (:class:`~deconvsr.sw.host.driver.Driver`, stop and wait,
``MAX_PAYLOAD`` frames) sends all of it to the simulated ``UartSoC`` (:mod:`deconvsr.sim.
device`, top ``uart``: a bit-level 8N1 host UART in the testbench, 3 Mbaud at 48 MHz by
default) with the **bus twin** as the engine, so the Verilator model stays small. Per phase:
the bytes on the wire in each direction (counted by the testbench bridge) and the simulated
time (which stops while the SoC is idle, so it is line time plus the device's turnaround).

Efficiency = payload bytes / bytes on the wire (both directions), i.e. payload line time over
the line time of everything sent (10 bits per byte: start, 8 data, stop; plus FEND, headers,
CRCs, escapes and the replies). ``measured`` efficiency divides by the simulated time instead.

What is **computed**: the twin holds 1 KiB per space and computes nothing, so the OUT read
returns zeros; the escapes the real output frame would carry (its FEND/FESC/FIDLE bytes, counted from
the golden model's output) are added to the read phase's wire bytes and time (``escape_fix``).
The twin is not the engine, so CRC verification of the kernel load is not checked (the VERIFY
requests are still sent, so their cost is included). Compute cycles (``--compute``) come from
the real engine's ``cycles_busy`` counter, running the same frame on the stream top.
"""

from __future__ import annotations

import time

import numpy as np

from ...bus import Space
from ...protocol import SPECIAL_BYTES
from ...sim.device import SimDevice
from ...spec import SPECS
from ..golden.intmodel import run_network
from ..host.device import open_device
from ..host.driver import Driver
from ..host.program import compile_network, set_input
from ..host.transport import SerialTransport
from ..model.zoo import load_quantized
from .engine import camera_tile


__all__ = ["measure", "workload", "render", "EFFICIENCY_GOAL"]

EFFICIENCY_GOAL = 0.90
MODEL = "espcn-paper-x3"


def workload(model=MODEL, size=64, spec="sim"):
    """(program, golden output bytes, quantised layers) for one ``size`` x ``size`` frame."""
    _, layers = load_quantized(model)
    x = camera_tile(size)
    prog = compile_network(layers, x.shape, SPECS[spec])
    set_input(prog, x)
    out = run_network(x, layers)[0].astype(np.uint8).tobytes()
    return prog, out, layers, x


def _special(data: bytes) -> int:
    arr = np.frombuffer(data, dtype=np.uint8)
    return int(sum(np.count_nonzero(arr == b) for b in SPECIAL_BYTES))


def measure(*, size=64, clk_hz=48_000_000, baud=3_000_000, compute=True) -> dict:
    prog, golden_out, layers, x = workload(size=size)
    phases = {}
    t_wall = time.perf_counter()
    with SimDevice(top="uart", engine="twin", clk_hz=clk_hz, baud=baud) as sim:
        with SerialTransport(sim.url) as tr:
            drv = Driver(tr, timeout=600.0)
            drv.identify()
            last = sim.status()

            def phase(name, fn, payload):
                nonlocal last
                fn()
                now = sim.status()
                phases[name] = {"payload": payload,
                                "bytes_out": now["bytes_in"] - last["bytes_in"],
                                "bytes_in": now["bytes_out"] - last["bytes_out"],
                                "sim_ps": now["sim_ps"] - last["sim_ps"]}
                last = now

            def load():
                for space, addr, data in prog.setup:
                    drv.write(space, addr, data)
                    if space in (Space.WEIGHT, Space.BIAS):
                        drv.device_crc(space, addr, len(data))  # cost only (twin: 1 KiB)
            phase("kernels", load, sum(len(d) for _, _, d in prog.setup))

            def frame_in():
                for space, addr, data in prog.inputs:
                    drv.write(space, addr, data)
            phase("frame_in", frame_in, sum(len(d) for _, _, d in prog.inputs))
            phase("frame_out", lambda: drv.read(Space.OUT, prog.out_addr, prog.out_len),
                  prog.out_len)
            retries = drv.stats["retries"]
    wall = time.perf_counter() - t_wall
    bit_s = 10 / baud
    # The twin's OUT is never written by a computation (it reads as zeros): add the escapes
    # the real output would carry.
    fix = _special(golden_out[:prog.out_len])
    phases["frame_out"]["escape_fix"] = fix
    phases["frame_out"]["bytes_in"] += fix
    phases["frame_out"]["sim_ps"] += round(fix * bit_s * 1e12)
    for p in phases.values():
        wire = p["bytes_out"] + p["bytes_in"]
        p["wire_bytes"] = wire
        p["line_s"] = wire * bit_s
        p["sim_s"] = p["sim_ps"] / 1e12
        p["sim_cycles"] = round(p["sim_s"] * clk_hz)
        p["efficiency"] = p["payload"] / wire
        p["measured_efficiency"] = p["payload"] * bit_s / p["sim_s"]
    total = {k: sum(p[k] for p in phases.values())
             for k in ("payload", "wire_bytes", "line_s", "sim_s", "sim_cycles")}
    total["efficiency"] = total["payload"] / total["wire_bytes"]
    total["measured_efficiency"] = total["payload"] * bit_s / total["sim_s"]
    result = {"bench": "link", "model": MODEL, "frame": [size, size], "clk_hz": clk_hz,
              "baud": baud, "link": "uart 8N1, bit-level host UART, bus twin",
              "phases": phases, "total": total, "retries": retries, "wall_s": wall,
              "goal": {"min_efficiency": EFFICIENCY_GOAL}}
    ok = all(p["efficiency"] >= EFFICIENCY_GOAL for p in phases.values()) and retries == 0
    result["goal"]["met"] = bool(ok)
    if compute:
        result["compute"] = _compute_cycles(layers, x, golden_out, clk_hz)
        frame = phases["frame_in"]["sim_s"] + phases["frame_out"]["sim_s"]
        c = result["compute"]["cycles_busy"] / clk_hz
        result["split"] = {"transfer_s": frame, "compute_s": c,
                           "transfer_fraction": frame / (frame + c)}
        ok = ok and result["compute"]["bit_exact"]
    result["ok"] = bool(ok)
    return result


def _compute_cycles(layers, x, golden_out, clk_hz):
    """Run the frame on the real engine (stream top) and read its busy counter."""
    t0 = time.perf_counter()
    with open_device("sim", engine="engine", spec="sim") as dev:
        out = dev.upscale(layers, x[0])
        counters = dev.counters()
    return {"cycles_busy": counters["cycles_busy"], "seconds": counters["cycles_busy"] / clk_hz,
            "bit_exact": bool(out.tobytes() == golden_out), "wall_s": time.perf_counter() - t0}


def render(r: dict) -> str:
    lines = [f"link: {r['link']}, {r['baud']} baud, {r['clk_hz'] / 1e6:g} MHz; {r['model']} "
             f"{r['frame'][0]}x{r['frame'][1]}",
             f"{'phase':<11}{'payload':>9}{'wire out':>10}{'wire in':>9}{'line ms':>9}"
             f"{'sim ms':>9}{'cycles':>11}{'eff':>7}{'meas':>7}"]
    for name, p in [*r["phases"].items(), ("total", r["total"])]:
        lines.append(f"{name:<11}{p['payload']:>9}{p.get('bytes_out', ''):>10}"
                     f"{p.get('bytes_in', ''):>9}{p['line_s'] * 1e3:>9.2f}{p['sim_s'] * 1e3:>9.2f}"
                     f"{p['sim_cycles']:>11}{p['efficiency']:>7.1%}"
                     f"{p['measured_efficiency']:>7.1%}")
    fix = r["phases"]["frame_out"].get("escape_fix", 0)
    lines.append(f"(frame_out: +{fix} escape bytes of the real output computed, not simulated; "
                 f"retries: {r['retries']})")
    if "compute" in r:
        c, s = r["compute"], r["split"]
        lines.append(f"compute: {c['cycles_busy']} busy cycles = {c['seconds'] * 1e3:.2f} ms "
                     f"(engine, bit-exact: {'yes' if c['bit_exact'] else 'NO'})")
        lines.append(f"end to end per frame (setup loaded): transfer {s['transfer_s'] * 1e3:.2f} "
                     f"ms + compute {s['compute_s'] * 1e3:.2f} ms "
                     f"({s['transfer_fraction']:.0%} transfer)")
    g = r["goal"]
    lines.append(f"goal: efficiency >= {g['min_efficiency']:.0%} per phase: "
                 f"{'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines)
