"""The figures of a finished build (``deconvsr report``): frame rates of networks at ``H x W``
-> ``rH x rW`` on a built board.

They are ``deconvsr bench frame``'s (:mod:`deconvsr.sw.bench.frame`), not a second estimate:
frames end to end on the simulated board (its engine spec, clock and link at the line rate),
measured on the RTL (large frames: the model validated against it), at the PLL clock the
bitstream runs at; plus the engine's compute time at the reported Fmax (what a faster PLL
setting could reach; the link would not change).
"""

from __future__ import annotations

from ..bench import frame as bench_frame
from ..host.program import ProgramError

__all__ = ["rate_build"]


def rate_build(board, result, networks, h: int, w: int, *, link="uart") -> dict:
    """Frame figures of ``networks`` at ``h`` x ``w`` on ``board`` as built (``result``, a
    :class:`~deconvsr.sw.flow.build.BuildResult`): ``{"build", "baud", "engine", "frames"}``,
    one row per network (without figures, and ``fits`` false with the reason, when it does
    not fit the engine)."""
    rows = []
    for net in networks:
        row = {"network": net.name, "scale": net.scale, "in": [h, w],
               "out": [h * net.scale, w * net.scale]}
        try:
            fig = bench_frame.bench(bench_frame.FrameBench(board.name, net.name, (h, w),
                                                           frames=1, link=link))
        except ProgramError as e:
            rows.append({**row, "fits": False, "reason": str(e)})
            continue
        fmax = (result.fmax_mhz or 0) * 1e6
        rows.append({**row, "fits": True, **fig,
                     "compute_fps_at_fmax": fmax / fig["engine_cycles"] if fmax else None})
    return {"build": result.to_json(), "baud": board.baud, "engine": {
        "mac_units": board.spec.lanes, "clock_mhz": result.target_mhz}, "frames": rows}
