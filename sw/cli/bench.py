"""``deconvsr bench <name> [--json] [--repeat N]``: benchmarks that print measured figures.

The measuring lives in :mod:`deconvsr.sw.bench` (one module per benchmark: a function that
returns the figures as a dict with an ``"ok"`` bool, and ``render(result) -> str``); this module
only adds each one's options and turns bad arguments and library errors into one-line
:class:`CLIError` messages. To add a benchmark, write its module and add one :class:`Bench` to
:data:`BENCHES`; every benchmark gets ``--json`` and ``--repeat`` and its own options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from ...spec import SPECS
from ...hw.boards import BOARDS
from ..bench import (engine as bench_engine, frame as bench_frame, golden as bench_golden,
                     link as bench_link, sim as bench_sim)
from ..host.program import ProgramError
from ..model.quantize import QuantizeError
from ..model.zoo import ModelError
from .main import EXIT_INPUT, EXIT_INTERNAL, EXIT_NOT_FOUND, CLIError

__all__ = ["Bench", "BENCHES", "register"]


@dataclass(frozen=True)
class Bench:
    """One benchmark on the command line: ``run(args) -> dict`` of measured figures
    (JSON-serialisable, with an ``"ok"`` bool: false makes the command exit 1),
    ``render(result) -> str`` for humans, ``add_arguments(parser)`` for its own options."""

    help: str
    run: Callable
    render: Callable
    add_arguments: Callable = lambda parser: None


# bench golden --------------------------------------------------------------------------------

def _golden_args(p):
    p.add_argument("--size", type=int, nargs=2, default=(321, 481), metavar=("H", "W"),
                   help="input size (default 321 481, BSD300)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for NumPy's BLAS and onnxruntime intra-op (default 1)")
    p.add_argument("--algorithms", default="all",
                   help="comma-separated subset of STDD,STRD,REVD,REVD2,TDC (default all)")


def _golden_run(args):
    algos = None if args.algorithms == "all" else [a.strip().upper()
                                                   for a in args.algorithms.split(",")]
    try:
        return bench_golden.golden(args.size[0], args.size[1], args.repeat, args.threads, algos)
    except ValueError as e:
        raise CLIError(str(e), EXIT_INPUT) from e


# bench engine --------------------------------------------------------------------------------

def _engine_args(parser):
    parser.add_argument("--spec", choices=sorted(SPECS), default="sim",
                        help="engine spec to simulate (default sim)")
    parser.add_argument("--size", type=int, default=64, help="input frame size (default 64)")
    parser.add_argument("--net", choices=["paper", "edge", "both"], default="both")
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="a model name or file (e.g. an imported NAME.npz) instead of "
                             "--net; repeatable")
    parser.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    parser.add_argument("--weights", choices=["zoo", "random"], default="zoo",
                        help="the zoo's trained models (quantised) or random int8 weights")


def _engine_run(args) -> dict:
    if not 4 <= args.size <= 512:
        raise CLIError(f"--size must be in 4..512, not {args.size}", EXIT_INPUT)
    nets = ("paper", "edge") if args.net == "both" else (args.net,)
    if args.model:
        if args.weights != "zoo":
            raise CLIError("--model runs the model's own weights: drop --weights random",
                           EXIT_INPUT)
        nets = tuple(args.model)
        for m in nets:          # refuse a model that cannot run before building anything
            try:
                bench_engine.zoo_network(m)
            except ModelError as e:
                raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
            except QuantizeError as e:
                raise CLIError(f"model {m}: cannot be quantised: {e}", EXIT_INPUT) from None
    try:
        return bench_engine.bench(SPECS[args.spec], size=args.size, nets=nets,
                                  simulator=args.simulator, weights=args.weights)
    except ProgramError as e:
        raise CLIError(f"{e} (spec {args.spec}: try a smaller --size)", EXIT_INPUT) from None


# bench link ----------------------------------------------------------------------------------

def _link_args(p):
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--baud", type=int, default=3_000_000, help="UART baud (default 3000000)")
    p.add_argument("--clk", type=int, default=48_000_000, help="SoC clock in Hz (default 48 MHz)")


def _link_run(args):
    if args.size < 1:
        raise CLIError(f"--size must be >= 1, not {args.size}", EXIT_INPUT)
    try:
        return bench_link.measure(size=args.size, clk_hz=args.clk, baud=args.baud)
    except ValueError as e:
        raise CLIError(str(e), EXIT_INPUT) from e


# bench sim -----------------------------------------------------------------------------------

def _sim_args(p):
    p.add_argument("--size", type=int, default=16, help="frame side in pixels (default 16)")
    p.add_argument("--model", default="espcn-paper-x3", help="shipped model (default "
                   "espcn-paper-x3)")
    p.add_argument("--only", choices=sorted(bench_sim.RUNTIMES),
                   help="run one device only (no speed-up then)")


def _sim_run(args):
    if not 4 <= args.size <= 128:
        raise CLIError(f"--size must be in 4..128, not {args.size}", EXIT_INPUT)
    runtimes = (args.only,) if args.only else tuple(bench_sim.RUNTIMES)
    try:
        return bench_sim.measure(size=args.size, model=args.model, runtimes=runtimes)
    except (ModelError, QuantizeError) as e:
        raise CLIError(str(e), EXIT_INPUT) from None


# bench frame ---------------------------------------------------------------------------------

#: The network each board runs by default (the paper network's weights do not fit the UP5K).
DEFAULT_MODEL = {"icebreaker": "edge-x2", "ulx3s-85f": "espcn-paper-x3"}


def _frame_args(p):
    p.add_argument("--board", choices=sorted(BOARDS), required=True,
                   help="the board whose engine spec, clock and link are simulated")
    p.add_argument("--model", metavar="NAME",
                   help="network (default: edge-x2 on the iCEBreaker, espcn-paper-x3 on the "
                        "ULX3S)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help=f"low-resolution frame (default 64 64; above "
                        f"{bench_frame.RTL_MAX_PIXELS} pixels the validated model)")
    p.add_argument("--frames", type=int, default=2, help="frames measured back to back, "
                   "after one that loads the kernels (default 2)")
    p.add_argument("--link", choices=bench_frame.LINKS, default="uart",
                   help="the board's UART at its baud (default), or SPI from an external "
                        "master at 1/8 of the clock")
    p.add_argument("--baud", type=int, metavar="BAUD",
                   help="the UART's rate (default the board's: 6 Mbaud on the iCEBreaker, "
                        "3 Mbaud on the ULX3S)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="modelled frames: skip the RTL run that checks the model")


def _frame_run(args):
    h, w = args.size
    if h < 1 or w < 1 or h * w > 4096 * 4096:
        raise CLIError(f"--size must be at least 1 x 1 and at most 4096 x 4096, not {h} x {w}",
                       EXIT_INPUT)
    if args.frames < 1:
        raise CLIError(f"--frames must be >= 1, not {args.frames}", EXIT_INPUT)
    if args.baud is not None and (args.link != "uart" or args.baud < 1):
        raise CLIError("--baud is the UART's rate: a positive number, with --link uart",
                       EXIT_INPUT)
    fb = bench_frame.FrameBench(args.board, args.model or DEFAULT_MODEL[args.board], (h, w),
                                args.frames, args.link, args.baud)
    try:
        return bench_frame.bench(fb, validate=args.validate)
    except ProgramError as e:
        raise CLIError(f"{fb.model} on {fb.board}: {e}", EXIT_INPUT) from None
    except ValueError as e:
        raise CLIError(str(e), EXIT_INPUT) from None


#: Benchmark name -> its :class:`Bench`, in the order ``deconvsr bench`` lists them.
BENCHES = {
    "golden": Bench(
        help="time the vectorised golden models (REVD2 etc.) against onnxruntime ConvTranspose "
             "on the paper's last layer, check agreement, and time the kernel transforms",
        run=_golden_run, render=bench_golden.render, add_arguments=_golden_args),
    "engine": Bench(
        help="engine utilisation, cycles and traffic measured on the simulated RTL "
             "(the RTL runs once; --repeat is ignored)",
        run=_engine_run, render=bench_engine.render, add_arguments=_engine_args),
    "link": Bench(
        help="UART link efficiency (bit level, simulated) loading the paper network's "
             "kernels and descriptors (frames: bench frame)",
        run=_link_run, render=bench_link.render, add_arguments=_link_args),
    "sim": Bench(
        help="the simulated devices' speed: engine cycles per second of the native (Verilator "
             "C++) device and of the cocotb device on the same frame, with the machine's load "
             "(each device runs once; --repeat is ignored)",
        run=_sim_run, render=bench_sim.render, add_arguments=_sim_args),
    "frame": Bench(
        help="frames end to end on a simulated board (its engine spec, clock and link at the "
             "line rate, bit level): fps, wire bytes, engine cycles, utilisation, busy shares "
             "(measured on the RTL; large frames by a model validated against it)",
        run=_frame_run, render=bench_frame.render, add_arguments=_frame_args),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (measured figures)",
                              description="Benchmarks that print measured figures.")
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name, bench in BENCHES.items():
        sp = sub.add_parser(name, help=bench.help, description=bench.help)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="timed runs per figure; the median is reported (default 5)")
        bench.add_arguments(sp)
        sp.set_defaults(func=_runner(bench))
    p.set_defaults(func=_no_bench)


def _no_bench(args):
    raise CLIError(f"choose a benchmark: {', '.join(BENCHES)}", EXIT_INPUT)


def _runner(bench: Bench):
    def run(args):
        if args.repeat < 1:
            raise CLIError(f"--repeat must be >= 1, not {args.repeat}", EXIT_INPUT)
        result = bench.run(args)
        print(json.dumps(result, indent=2) if args.json else bench.render(result))
        return 0 if result.get("ok", True) else EXIT_INTERNAL
    return run
