"""``deconvsr bench link``: the kernel load's link efficiency at the UART's bit level, on the
paper network. (Frames: ``deconvsr bench frame``, which measures them end to end on the
board with the real engine.)

The workload is the shipped model ``espcn-paper-x3`` (:mod:`deconvsr.sw.model.zoo`, quantised)
planned for a streamed 64 x 64 frame (:mod:`deconvsr.sw.host.stream`): its kernels (weights,
requantisation entries, verified with the device's CRC) and its descriptors, what a host sends
once before the frames.

What is **measured**: the host driver (:class:`~deconvsr.sw.host.driver.Driver`, stop and wait,
``MAX_PAYLOAD`` frames) sends all of it to the simulated ``UartSoC`` (:mod:`deconvsr.sim.
device`, top ``uart``: a bit-level 8N1 host UART in the testbench, 3 Mbaud at 48 MHz by
default) with the **bus twin** as the engine, so the Verilator model stays small: the bytes on
the wire in each direction (counted by the testbench bridge) and the simulated time (which
stops while the SoC is idle, so it is line time plus the device's turnaround).

Efficiency = payload bytes / bytes on the wire (both directions), i.e. payload line time over
the line time of everything sent (10 bits per byte: start, 8 data, stop; plus FEND, headers,
CRCs, escapes, the VERIFY requests and the replies). ``measured`` efficiency divides by the
simulated time instead. The twin is not the engine, so the CRCs it returns are not checked
(the VERIFY requests are still sent, so their cost is included).
"""

from __future__ import annotations

import time

from ...bus import Space
from ...sim.device import SimDevice
from ...spec import SPECS
from ..host.driver import Driver
from ..host.stream import plan_stream
from ..host.transport import SerialTransport
from ..model.zoo import load_quantized


__all__ = ["measure", "workload", "render", "EFFICIENCY_GOAL"]

EFFICIENCY_GOAL = 0.90
MODEL = "espcn-paper-x3"


def workload(model=MODEL, size=64, spec="sim"):
    """(setup writes, descriptor writes) a host sends before streaming ``size`` x ``size``
    frames of ``model`` to an engine of ``spec``."""
    _, layers = load_quantized(model, spec=SPECS[spec].arith)
    stripe = plan_stream(layers, (size, size), SPECS[spec]).stripes[0]
    return stripe.setup, stripe.rewind


def measure(*, size=64, clk_hz=48_000_000, baud=3_000_000) -> dict:
    setup, rewind = workload(size=size)
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
                for space, addr, data in setup:
                    drv.write(space, addr, data)
                    if space in (Space.WEIGHT, Space.BIAS):
                        drv.device_crc(space, addr, len(data))  # cost only (twin: 1 KiB)
            phase("kernels", load, sum(len(d) for _, _, d in setup))

            def descriptors():
                for space, addr, data in rewind:
                    drv.write(space, addr, data)
            phase("descriptors", descriptors, sum(len(d) for _, _, d in rewind))
            retries = drv.stats["retries"]
    wall = time.perf_counter() - t_wall
    bit_s = 10 / baud
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
    ok = phases["kernels"]["efficiency"] >= EFFICIENCY_GOAL and retries == 0
    result["goal"]["met"] = bool(ok)
    result["ok"] = bool(ok)
    return result


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
    lines.append(f"(retries: {r['retries']}; frames: deconvsr bench frame)")
    g = r["goal"]
    lines.append(f"goal: kernel load efficiency >= {g['min_efficiency']:.0%}: "
                 f"{'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines)
