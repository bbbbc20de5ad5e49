"""``deconvsr bench sim``: the simulated devices' speed, native against cocotb, on one frame.

Both devices run the same SoC (stream top, the real engine, spec ``sim``) and the same frame (a
crop of scikit-image's ``camera``, through the shipped ``espcn-paper-x3``) through the path
``--device sim`` / ``--device sim-cocotb`` take (:func:`~deconvsr.sw.host.device.open_device`,
the host driver over TCP), one after the other in the same run.

Measured per device: simulated cycles per second of wall time while the engine runs (the
``stream`` phase: the STEP requests that carry the frame's rows while the engine computes; on
an engine that cannot stream, the ``run`` phase: RUN, then WAIT; the simulated time of that
phase comes from the device's control port), the engine's own busy cycles (its counter), the wall
time of each phase, and whether the output equals the integer golden model's. The machine's
load (``os.getloadavg``) is recorded before and after each device: both share the machine with
whatever else runs.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..golden.intmodel import run_network
from ..host.device import DeviceError, open_device
from ..model.zoo import load_quantized
from .engine import camera_tile

__all__ = ["measure", "render", "SPEEDUP_GOAL", "RUNTIMES"]

#: The native device's goal: this many times the cocotb device's cycles per second.
SPEEDUP_GOAL = 4.0
#: runtime name -> device name
RUNTIMES = {"native": "sim", "cocotb": "sim-cocotb"}


def _load():
    return [round(v, 2) for v in os.getloadavg()]


def run_device(device_name: str, layers, x: np.ndarray, golden: np.ndarray, *,
               spec="sim") -> dict:
    """One frame on one simulated device; its figures."""
    load_before = _load()
    t0 = time.perf_counter()
    device = open_device(device_name, spec=spec)
    open_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        out = device.upscale(layers, x)
        frame_s = time.perf_counter() - t1
        counters = device.counters()
        stats = device.stats
        period_ps = 1e12 / device.info.describe()["link_clk_hz"]
    finally:
        device.close()
    # (a streaming engine computes during the STEP requests: the ``stream`` phase)
    phase = "stream" if stats["sim_ps"].get("stream") else "run"
    run_cycles = stats["sim_ps"][phase] / period_ps
    run_s = stats["wall"][phase]
    return {
        "device": device_name,
        "bit_exact": bool(np.array_equal(out, golden)),
        "open_s": round(open_s, 2),
        "frame_s": round(frame_s, 2),
        "wall_s": {k: round(v, 3) for k, v in stats["wall"].items()},
        "run_cycles": round(run_cycles),
        "cycles_busy": counters.get("cycles_busy"),
        "cycles_per_s": round(run_cycles / run_s) if run_s > 0 else None,
        "load_before": load_before,
        "load_after": _load(),
    }


def measure(*, size=16, model="espcn-paper-x3", runtimes=("native", "cocotb")) -> dict:
    """Run the frame on each runtime's device (in that order); the figures and the speed-up
    of the native device over the cocotb one."""
    for r in runtimes:
        if r not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {r!r}")
    _, layers = load_quantized(model)
    x = camera_tile(size)[0]
    golden = run_network(x, layers)[0]
    result = {"bench": "sim", "model": model, "frame": [size, size], "top": "stream",
              "spec": "sim", "cpu_count": os.cpu_count(), "devices": {}}
    for r in runtimes:
        try:
            result["devices"][r] = run_device(RUNTIMES[r], layers, x, golden)
        except DeviceError as e:
            result["devices"][r] = {"device": RUNTIMES[r], "error": str(e), "bit_exact": False}
    devs = result["devices"]
    if all(devs.get(r, {}).get("cycles_per_s") for r in ("native", "cocotb")):
        result["speedup"] = round(devs["native"]["cycles_per_s"] / devs["cocotb"]["cycles_per_s"],
                                  2)
        result["speedup_goal"] = SPEEDUP_GOAL
        result["meets_goal"] = result["speedup"] >= SPEEDUP_GOAL
    result["ok"] = all(d["bit_exact"] for d in devs.values())
    return result


def render(r: dict) -> str:
    lines = [f"bench sim: {r['model']} on a {r['frame'][0]} x {r['frame'][1]} frame, "
             f"{r['top']} top, spec {r['spec']} ({r['cpu_count']} CPUs)"]
    head = (f"{'device':<8} {'cycles/s (run)':>15} {'run cycles':>11} {'run s':>7} "
            f"{'frame s':>8} {'open s':>7}  bit-exact  load before -> after")
    lines.append(head)
    for name, d in r["devices"].items():
        if "error" in d:
            lines.append(f"{name:<8} error: {d['error']}")
            continue
        lines.append(f"{name:<8} {d['cycles_per_s']:>15,} {d['run_cycles']:>11,} "
                     f"{d['wall_s']['run']:>7.2f} {d['frame_s']:>8.2f} {d['open_s']:>7.1f}  "
                     f"{'yes' if d['bit_exact'] else 'NO':<9}  "
                     f"{d['load_before'][0]:.2f} -> {d['load_after'][0]:.2f}")
    if "speedup" in r:
        lines.append(f"native / cocotb: {r['speedup']:.1f}x (goal {r['speedup_goal']:g}x: "
                     f"{'met' if r['meets_goal'] else 'NOT met'})")
    return "\n".join(lines)
