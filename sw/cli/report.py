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
        description="Read the build result of `deconvsr build` and give, for each shipped "
                    "network, the frames at HxW input end to end on the board: frames per "
                    "second, wire bytes, engine cycles and utilisation, as `deconvsr bench "
                    "frame` measures them on the simulated board (cached).")
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
    print(f"frames at {h}x{w} in, end to end (deconvsr bench frame --board {board.name}): "
          f"engine {report['engine']['mac_units']} MAC units at {result.target_mhz:.1f} MHz, "
          f"link {board.baud / 1e6:g} Mbaud 8N1:")
    if not result.macs:
        print(f"  (this bitstream holds no engine ({result.core}): the figures are those of "
              f"the board's engine spec)")
    if not rows:
        print("  no shipped networks")
    for row in rows:
        if not row["fits"]:
            print(f"  {row['network']} x{row['scale']}: does not fit the engine: "
                  f"{row['reason']}")
            continue
        line = (f"  {row['network']} x{row['scale']} -> {row['out'][0]}x{row['out'][1]}: "
                f"{row['fps']:.2f} fps ({row['source']}), wire {row['wire_to_device']:,.0f} + "
                f"{row['wire_from_device']:,.0f} B for {row['frame_bytes']:,} frame bytes, "
                f"{row['engine_cycles']:,.0f} engine cycles, utilisation "
                f"{row['utilisation']:.3f}")
        if row["compute_fps_at_fmax"]:
            line += f"; compute alone {row['compute_fps_at_fmax']:.1f} fps at Fmax"
        print(line)
    return 0


def _networks(names):
    try:
        return [load_model(n) for n in (names or shipped_names())]
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else 2) from None
