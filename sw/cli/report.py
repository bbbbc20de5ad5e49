"""``deconvsr report``: utilisation, Fmax and frame rate of a built board.

The figures are :mod:`deconvsr.sw.flow.report`'s (how frame rates are computed is told there).
"""

from __future__ import annotations

import json
from pathlib import Path

from ...spec import EngineSpec
from ..flow.report import rate_build
from ..model.zoo import ModelError, load_model, shipped_names
from .build import _boards, format_result, load_board_build
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "run"]


def register(subparsers) -> None:
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


def run(args) -> int:
    h, w = args.size
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise CLIError(f"--size {h} {w}: a frame size is 1..4096 pixels a side", EXIT_INPUT)
    board, indir, result = load_board_build(args)
    if result.spec:         # (rate_build makes the build's engine spec from it)
        try:
            EngineSpec(**{**result.spec, "arith": board.spec.arith})
        except (TypeError, ValueError) as e:
            raise CLIError(f"{indir}/build.json: its engine spec is not valid ({e}): rebuild "
                           "it with `deconvsr build`", EXIT_INPUT) from None
    report = rate_build(board, result, _networks(args.model), h, w)
    rows = report["frames"]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(format_result(result))
    print(f"frame rates at {h}x{w} in, engine {report['engine']['mac_units']} MAC units at "
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
    try:
        return [load_model(n) for n in (names or shipped_names())]
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else 2) from None
