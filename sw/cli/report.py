"""``deconvsr report``: utilisation, Fmax and frame rate of a built board.

Frame rate of a network at ``H x W`` -> ``rH x rW``:

* compute: engine cycles per frame / clock. Cycles come from the RTL simulation of the engine
  (``deconvsr.sw.bench.engine.frame_cycles(network, spec, h, w)``) when it is available, else they are the *ideal*
  bound ``ceil(MACs / MAC units)`` and labelled so. Shown at the PLL clock the bitstream runs at
  and at the reported Fmax (what a faster PLL setting could reach).
* link: bytes on the wire per frame (input written, output read, RUN/WAIT, with the protocol's
  framing of :mod:`deconvsr.protocol`, 8N1 = 10 bits per byte) / baud. Weights are loaded once
  per network and shown separately.
* combined: compute + link, sequential (the host writes a frame, runs, reads the result).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .main import EXIT_NOT_FOUND, CLIError

__all__ = ["register", "link_bytes", "frame_rates", "compute_cycles"]

BITS_PER_BYTE = 10       # UART 8N1
STUFF_RATE = 3 / 256     # expected share of escaped bytes in uniformly random data


def register(subparsers) -> None:
    from .build import _boards
    p = subparsers.add_parser(
        "report", help="utilisation, Fmax and frame rates of a built board",
        description="Read the build result of `deconvsr build` and compute, for each shipped "
                    "network, the frame rate at HxW input: engine cycles (RTL simulation, or "
                    "the ideal MACs/MAC units bound when the simulation is unavailable) at the "
                    "PLL clock and at Fmax, link time at the board's baud rate, and both "
                    "combined.")
    p.add_argument("--board", required=True, choices=_boards())
    p.add_argument("-i", "--input", type=Path, metavar="DIR",
                   help="build directory (default build/BOARD)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="low-resolution frame size (default 64 64)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="network(s) to rate (default: every shipped network)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def link_bytes(h: int, w: int, r: int, *, max_payload: int | None = None) -> dict:
    """Bytes on the wire for one frame: input write, RUN + WAIT, output read.

    Returns ``{"to_device": n, "from_device": n}`` (expected stuffing of random data
    included). Uses :mod:`deconvsr.protocol` framing.
    """
    from deconvsr import protocol as proto

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
    try:  # the engine owner's RTL-measured cycles (``deconvsr bench engine``), when provided
        from deconvsr.sw.bench.engine import frame_cycles
    except ImportError:
        frame_cycles = None
    if frame_cycles is not None:
        from ..host.program import ProgramError
        try:
            return int(frame_cycles(network, spec, h, w)), "rtl-sim"
        except ProgramError as e:
            return None, f"does not fit the engine: {e}"
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


def run(args) -> int:
    from .build import load_board_build

    board, _, result = load_board_build(args)
    spec = board.spec
    if result.spec:     # the build's own sizes (``build --set`` may have changed them)
        from deconvsr.spec import EngineSpec
        spec = EngineSpec(**{**result.spec, "arith": board.spec.arith})
    h, w = args.size
    networks = _networks(args.model)
    rows = []
    for net in networks:
        from ..model.zoo import deconv_weight_bytes
        cycles, source = compute_cycles(net, spec, h, w)
        if cycles is None:
            rows.append({"network": net.name, "scale": net.scale, "in": [h, w],
                         "out": [h * net.scale, w * net.scale], "cycles_source": source})
            continue
        try:
            link = link_bytes(h, w, net.scale)
        except ImportError:
            link = None
        rates = frame_rates(cycles=cycles, clk_hz=result.target_mhz * 1e6,
                            fmax_hz=(result.fmax_mhz or 0) * 1e6 or None, link=link,
                            baud=board.baud, weight_bytes=deconv_weight_bytes(net))
        rows.append({"network": net.name, "scale": net.scale, "in": [h, w],
                     "out": [h * net.scale, w * net.scale], "cycles_source": source, **rates})
    report = {"build": result.to_json(), "baud": board.baud, "engine": {
        "mac_units": spec.lanes, "clock_mhz": result.target_mhz}, "frames": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    from .build import format_result
    print(format_result(result))
    print(f"frame rates at {h}x{w} in, engine {spec.lanes} MAC units at "
          f"{result.target_mhz:.1f} MHz, link {board.baud / 1e6:g} Mbaud 8N1:")
    if not result.macs:
        print(f"  (this bitstream holds no engine ({result.core}): the rates are those of the "
              f"board's engine spec)")
    if not rows:
        print("  no shipped networks")
    for row in rows:
        if "cycles" not in row:
            print(f"  {row['network']} x{row['scale']}: {row['cycles_source']}")
            continue
        line = (f"  {row['network']} x{row['scale']} -> {row['out'][0]}x{row['out'][1]}: "
                f"{row['cycles']:,} cycles ({row['cycles_source']}), compute "
                f"{row['compute_s'] * 1e3:.2f} ms = {row['compute_fps']:.1f} fps")
        if row["compute_fps_at_fmax"]:
            line += f" ({row['compute_fps_at_fmax']:.1f} fps at Fmax)"
        print(line)
        if "link_s" in row:
            lb = row["link_bytes"]
            print(f"      link {lb['to_device'] + lb['from_device']:,} bytes = "
                  f"{row['link_s'] * 1e3:.2f} ms = {row['link_fps']:.1f} fps; combined "
                  f"{row['combined_s'] * 1e3:.2f} ms = {row['combined_fps']:.1f} fps; weights "
                  f"once {row['weight_load_s'] * 1e3:.1f} ms")
        else:
            print("      link: protocol module unavailable")
    return 0


def _networks(names):
    from ..model.zoo import ModelError, load_model, shipped_names
    try:
        return [load_model(n) for n in (names or shipped_names())]
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else 2) from None
