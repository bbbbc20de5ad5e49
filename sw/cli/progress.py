"""A progress bar of a simulated device's cycles (tqdm), read from its control port while the
host drives it: how far the simulation is and how many cycles per second it runs.

    with sim_progress(device, expected_cycles):
        device.upscale(layers, y)
"""

from __future__ import annotations

import contextlib
import sys
import threading

from tqdm import tqdm

__all__ = ["sim_progress"]

POLL_S = 0.25


def _cycles(sim) -> int:
    st = sim.status()
    if "cycles" in st:
        return int(st["cycles"])
    return round(st["sim_ps"] * sim.clk_hz / 1e12)      # (the cocotb device reports time only)


@contextlib.contextmanager
def sim_progress(device, expected_cycles: int | None = None, *, desc="simulating",
                 enable: bool | None = None, file=None):
    """Show the simulated cycles of ``device`` (a link device with a simulated device behind
    it; anything else: no bar) while the block runs. ``expected_cycles``: the bar's total (an
    estimate; the bar ends at the count reached). ``enable``: default, when ``file`` (stderr)
    is a terminal."""
    file = file or sys.stderr
    sim = getattr(device, "sim", None)
    if enable is None:
        enable = file.isatty()
    if not enable or sim is None:
        yield None
        return
    start = _cycles(sim)
    bar = tqdm(total=expected_cycles, unit=" cycles", unit_scale=True, desc=desc, file=file,
               dynamic_ncols=True, smoothing=0.1,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                          "[{elapsed}<{remaining}, {rate_fmt}]" if expected_cycles else None)
    stop = threading.Event()

    def update():
        try:
            now = _cycles(sim) - start
        except (OSError, ValueError):
            return
        if expected_cycles and now > bar.total:
            bar.total = now
        bar.update(now - bar.n)

    def poll():
        while not stop.wait(POLL_S):
            update()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()
        update()
        if expected_cycles:
            bar.total = bar.n
            bar.refresh()
        bar.close()
