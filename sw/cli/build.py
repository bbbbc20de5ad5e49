"""``deconvsr build``: the bitstream of a board (yosys + nextpnr + pack), with its utilisation
and Fmax, failing when the design does not fit or misses timing."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from ...hw.boards import BOARDS, BoardError
from ..flow.build import BuildError, build, check, load_result
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "EXIT_TIMING", "default_dir"]

EXIT_TIMING = 5  #: the bitstream was built but does not fit or misses timing


def default_dir(board: str) -> Path:
    return Path("build") / board


def load_board_build(args):
    """``(board, build directory, BuildResult)`` for ``--board``/``--input`` of the commands
    that read a finished build (``program``, ``report``).

    Raises
    ------
    CLIError
        (exit 4) if there is no build there, or it is another board's.
    """
    board = BOARDS[args.board]
    indir = args.input or default_dir(args.board)
    try:
        result = load_result(indir)
    except BuildError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND) from None
    if result.board != board.name:
        raise CLIError(f"{indir} holds a {result.board} build, not {board.name}", EXIT_NOT_FOUND)
    return board, indir, result


def _boards() -> list[str]:
    return list(BOARDS)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build", help="build the bitstream of a board",
        description="Synthesise (yosys), place and route (nextpnr) and pack the board top "
                    "(PLL, UART on the USB serial, SPI on a header, LEDs, the core). Tools: "
                    "YoWASP when installed (DECONVSR_TOOLCHAIN=system for the system's), or "
                    "YOSYS/NEXTPNR_ICE40/ICEPACK/NEXTPNR_ECP5/ECPPACK if set. Exit code 5 when "
                    "the design does not fit or misses timing (the reports are still written).")
    p.add_argument("--board", required=True, choices=_boards())
    p.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="build directory (default build/BOARD)")
    p.add_argument("--seed", type=parse_seeds, default=None, metavar="SEEDS",
                   help="nextpnr placement seed (default: the board's, from "
                        "deconvsr/constraints/boards.toml), or seeds to sweep, e.g. 1-4 or "
                        "1,3,7: synthesis once, place and route per seed until one meets "
                        "timing; the fastest is packed")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="seeds placed at once in a sweep (default 1; each nextpnr run takes "
                        "one core)")
    p.add_argument("--seed-timeout", type=float, metavar="MIN",
                   help="in a sweep, stop a seed still placing or routing after MIN minutes "
                        "(it counts as failed; nextpnr's router can circle for an hour)")
    p.add_argument("--sync-mhz", type=float, metavar="MHZ",
                   help="engine clock target instead of the board's "
                        "(deconvsr/constraints/boards.toml)")
    p.add_argument("--link", choices=("uart", "spi"), default="uart",
                   help="host link the core listens on (default uart)")
    p.add_argument("--core", choices=("engine", "twin", "loopback"), default="engine",
                   help="what the board top wraps: the SoC with the engine (default), the SoC "
                        "with the engine's behavioural twin, or a UART/SPI loopback")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the board's engine spec, e.g. --set lanes=32 "
                        "--set act_depth=1024 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the build result as JSON")
    p.set_defaults(func=run)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [3]; ``"1-4"`` -> [1, 2, 3, 4]; ``"1,3,7"`` -> [1, 3, 7] (argparse type)."""
    seeds = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi if sep else lo)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a seed, a range such as 1-4, or a list such as 1,3,7"
            ) from None
        if a < 1 or b < a:
            raise argparse.ArgumentTypeError(f"{text!r}: seeds are positive, ranges low-high")
        seeds += [x for x in range(a, b + 1) if x not in seeds]
    return seeds


def format_result(result) -> str:
    lines = [f"{result.board}: {result.bitstream} ({result.core}, {result.macs} MAC units)"]
    for name, res in result.utilisation.items():
        lines.append(f"  {name:6s} {res.used:6d} / {res.available:6d}  {res.percent:5.1f} %")
    if result.lut is not None:
        lines.append(f"  (yosys: {result.lut} LUT4, {result.ff} FF)")
    for clk, mhz in result.fmax.items():
        lines.append(f"  Fmax {clk}: {mhz:.1f} MHz (constraint {result.constraint[clk]:.1f} "
                     f"MHz)")
    verdict = ("meets timing" if result.meets_timing else
               "MISSES TIMING (the slow endpoints, grouped: slow_endpoints.txt)")
    lines.append(f"  engine clock {result.target_mhz:.2f} MHz: {verdict}")
    if len(result.seed_fmax) > 1:
        tried = ", ".join(f"{k}: {v:.1f}" if v else f"{k}: failed"
                          for k, v in result.seed_fmax.items())
        lines.append(f"  placement seed {result.seed}, the fastest of {tried} (MHz)")
    lines.append(f"  build {result.seconds:.1f} s (synthesis {result.synth_seconds:.1f} s, "
                 f"place and route {result.pnr_seconds:.1f} s)")
    return "\n".join(lines)


def spec_with(spec, settings):
    """``spec`` with ``FIELD=VALUE`` overrides (integers; text for the text fields such as
    ``counters`` and ``act_ram``; true/false/1/0 for the flags such as ``fixed_pi``).
    Raises :class:`CLIError`."""
    names = {f.name for f in fields(spec)} - {"arith", "name"}
    text = {f.name for f in fields(spec) if f.type in (str, "str")}
    flags = {f.name for f in fields(spec) if f.type in (bool, "bool")}
    changes = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise CLIError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                           f"{', '.join(sorted(names))}", EXIT_INPUT)
        if key in text:
            changes[key] = value
            continue
        if key in flags:
            if value.lower() not in ("true", "false", "1", "0"):
                raise CLIError(f"--set {item!r}: {value!r} is not true or false", EXIT_INPUT)
            changes[key] = value.lower() in ("true", "1")
            continue
        try:
            changes[key] = int(value, 0)
        except ValueError:
            raise CLIError(f"--set {item!r}: {value!r} is not an integer", EXIT_INPUT) from None
    if "lanes" in changes and "act_lanes" not in changes and spec.act_lanes == spec.lanes:
        changes["act_lanes"] = changes["lanes"]     # words as wide as the lanes, as before
    try:
        return replace(spec, **changes) if changes else spec
    except ValueError as e:
        raise CLIError(f"--set: {e}", EXIT_INPUT) from None


def run(args) -> int:
    outdir = args.output or default_dir(args.board)
    spec = spec_with(BOARDS[args.board].spec, args.set)
    try:
        if args.jobs < 1:
            raise CLIError(f"--jobs must be at least 1, not {args.jobs}", EXIT_INPUT)
        if args.seed_timeout is not None and not args.seed_timeout > 0:
            raise CLIError(f"--seed-timeout must be positive, not {args.seed_timeout:g}",
                           EXIT_INPUT)
        result = build(args.board, outdir, seed=args.seed, jobs=args.jobs,
                       sync_mhz=args.sync_mhz, link=args.link, core=args.core, spec=spec,
                       check_result=False,
                       seed_timeout=None if args.seed_timeout is None else args.seed_timeout * 60,
                       progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    except BoardError as e:
        raise CLIError(str(e), EXIT_INPUT) from None
    except BuildError as e:
        raise CLIError(str(e), EXIT_TIMING if e.kind == "fit" else EXIT_INPUT) from None
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(format_result(result))
        print(f"  in {outdir}")
    try:
        check(result)
    except BuildError as e:
        raise CLIError(str(e), EXIT_TIMING) from None
    return 0
