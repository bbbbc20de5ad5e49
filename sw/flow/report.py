"""The figures of a finished build (``deconvsr report``): frame rates of networks at ``H x W``
-> ``rH x rW`` on a built board.

* compute: engine cycles per frame / clock. Cycles come from the RTL simulation of the engine
  (:func:`deconvsr.sw.bench.engine.frame_cycles`) when a simulator is installed, else they are
  the *ideal* bound ``ceil(MACs / MAC units)`` and labelled so. Shown at the PLL clock the
  bitstream runs at and at the reported Fmax (what a faster PLL setting could reach).
* link: bytes on the wire per frame (input written, output read, RUN/WAIT, with the protocol's
  framing of :mod:`deconvsr.protocol`, 8N1 = 10 bits per byte) / baud. Weights are loaded once
  per network and shown separately.
* combined: compute + link, sequential (the host writes a frame, runs, reads the result).
"""

from __future__ import annotations

import math

from ... import protocol as proto
from ...spec import EngineSpec
from ..bench.engine import frame_cycles
from ..host.program import ProgramError
from ..model.zoo import deconv_weight_bytes

__all__ = ["link_bytes", "frame_rates", "compute_cycles", "rate_build", "BITS_PER_BYTE"]

BITS_PER_BYTE = 10       # UART 8N1
STUFF_RATE = 3 / 256     # expected share of escaped bytes in uniformly random data


def link_bytes(h: int, w: int, r: int, *, max_payload: int | None = None) -> dict:
    """Bytes on the wire for one frame: input write, RUN + WAIT, output read.

    Returns ``{"to_device": n, "from_device": n}`` (expected stuffing of random data
    included). Uses :mod:`deconvsr.protocol` framing.
    """
    max_payload = max_payload or proto.MAX_PAYLOAD

    def stuffed(n):
        return n + math.ceil(n * STUFF_RATE)

    def writes(n):  # WRITE requests with payload, replies without
        chunks = math.ceil(n / max_payload)
        return (stuffed(n) + chunks * proto.request_overhead(True),
                chunks * proto.reply_overhead(False))

    def reads(n):   # READ requests without payload, replies with
        chunks = math.ceil(n / max_payload)
        return (chunks * proto.request_overhead(False),
                stuffed(n) + chunks * proto.reply_overhead(True))

    w_to, w_from = writes(h * w)
    r_to, r_from = reads(h * r * w * r)
    run_to, run_from = proto.request_overhead(False), proto.reply_overhead(False)
    wait_to, wait_from = proto.request_overhead(False), proto.reply_overhead(True) + 1
    return {"to_device": w_to + r_to + run_to + wait_to,
            "from_device": w_from + r_from + run_from + wait_from}


def compute_cycles(network, spec, h: int, w: int) -> tuple[int, str]:
    """(engine cycles for one frame, source): RTL simulation if available, else ideal."""
    try:
        return int(frame_cycles(network, spec, h, w)), "rtl-sim"
    except ProgramError as e:
        return None, f"does not fit the engine: {e}"
    except ImportError:     # no simulator (cocotb, the ``sim`` extra): the ideal bound
        pass
    macs = network.macs_per_lr_pixel * h * w
    return math.ceil(macs / spec.lanes), "ideal"


def frame_rates(*, cycles: int, clk_hz: float, fmax_hz: float | None, link: dict | None,
                baud: int, weight_bytes: int = 0) -> dict:
    """Seconds and frames/s: compute (at the clock and at Fmax), link, and combined."""
    t_compute = cycles / clk_hz
    out = {"cycles": cycles, "compute_s": t_compute, "compute_fps": 1 / t_compute,
           "compute_fps_at_fmax": (fmax_hz / cycles) if fmax_hz else None}
    if link is not None:
        # Both directions share no wire, but the protocol is request/reply: they do not overlap
        # within a frame, so the frame's link time is the sum.
        t_link = (link["to_device"] + link["from_device"]) * BITS_PER_BYTE / baud
        out.update(link_bytes=link, link_s=t_link, link_fps=1 / t_link,
                   combined_s=t_compute + t_link, combined_fps=1 / (t_compute + t_link),
                   weight_load_s=weight_bytes * (1 + STUFF_RATE) * BITS_PER_BYTE / baud)
    return out


def rate_build(board, result, networks, h: int, w: int) -> dict:
    """Frame rates of ``networks`` at ``h`` x ``w`` on ``board`` as built (``result``, a
    :class:`~deconvsr.sw.flow.build.BuildResult`): ``{"build", "baud", "engine", "frames"}``,
    one row per network (without rates, and ``cycles_source`` saying why, when it does not
    fit the engine)."""
    spec = board.spec
    if result.spec:     # the build's own sizes (``build --set`` may have changed them)
        spec = EngineSpec(**{**result.spec, "arith": board.spec.arith})
    rows = []
    for net in networks:
        cycles, source = compute_cycles(net, spec, h, w)
        if cycles is None:
            rows.append({"network": net.name, "scale": net.scale, "in": [h, w],
                         "out": [h * net.scale, w * net.scale], "cycles_source": source})
            continue
        rates = frame_rates(cycles=cycles, clk_hz=result.target_mhz * 1e6,
                            fmax_hz=(result.fmax_mhz or 0) * 1e6 or None,
                            link=link_bytes(h, w, net.scale), baud=board.baud,
                            weight_bytes=deconv_weight_bytes(net))
        rows.append({"network": net.name, "scale": net.scale, "in": [h, w],
                     "out": [h * net.scale, w * net.scale], "cycles_source": source, **rates})
    return {"build": result.to_json(), "baud": board.baud, "engine": {
        "mac_units": spec.lanes, "clock_mhz": result.target_mhz}, "frames": rows}
