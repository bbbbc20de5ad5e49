"""``deconvsr bench <name> [--json] [--repeat N]``: benchmarks that print measured figures.

Each benchmark is a :class:`Bench` registered in :data:`BENCHES` (name -> ``"module:attribute"``,
imported only when the CLI is built, so a broken or slow import in one benchmark does not
affect the others). To add one, write a module with a ``Bench`` object and add one line to
:data:`BENCHES`; every benchmark gets ``--json`` and ``--repeat`` and its own options.

``bench golden`` times the vectorised golden models (:mod:`deconvsr.sw.golden.algorithms`) on the
paper's last layer against onnxruntime's ``ConvTranspose`` on the same float32 data, checks
that the results agree, and times the kernel transforms.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .main import EXIT_INPUT, EXIT_INTERNAL, CLIError

__all__ = ["Bench", "BENCHES", "register", "golden", "blas_threads", "GOLDEN"]


@dataclass(frozen=True)
class Bench:
    """One benchmark: ``run(args) -> dict`` of measured figures (JSON-serialisable, with an
    ``"ok"`` bool: false makes the command exit 1), ``render(result) -> str`` for humans,
    ``add_arguments(parser)`` for its own options."""

    help: str
    run: Callable
    render: Callable
    add_arguments: Callable = lambda parser: None


#: Benchmark name -> "module:attribute" of its :class:`Bench`.
BENCHES = {
    "golden": "deconvsr.sw.cli.bench:GOLDEN",
    "engine": "deconvsr.sw.bench.engine:ENGINE",
    "link": "deconvsr.sw.bench.link:LINK",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (measured figures)",
                              description="Benchmarks that print measured figures.")
    sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name, target in BENCHES.items():
        module, attr = target.split(":")
        bench = getattr(importlib.import_module(module), attr)
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


# Thread control ----------------------------------------------------------------------------

def _openblas():
    """The OpenBLAS library NumPy loaded (``numpy.libs``), or None."""
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


_BLAS_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
               ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
               ("openblas_get_num_threads", "openblas_set_num_threads"))


def blas_threads(n: int | None = None) -> int | None:
    """Get (and with ``n``, first set) the number of threads NumPy's OpenBLAS uses. Returns
    None when NumPy's BLAS is not a bundled OpenBLAS (then the thread count is unknown)."""
    lib = _openblas()
    if lib is None:
        return None
    for get_name, set_name in _BLAS_NAMES:
        if hasattr(lib, get_name) and hasattr(lib, set_name):
            if n is not None:
                getattr(lib, set_name)(ctypes.c_int(n))
            return int(getattr(lib, get_name)())
    return None


# bench golden ------------------------------------------------------------------------------

#: The paper's last layer (§7): conv 32 -> 9 3x3 + pixel shuffle 3 as a deconvolution.
PAPER_LAST = dict(c_in=32, c_out=1, k=9, stride=3, padding=3)
TRANSFORM_GOAL_S = 0.010
REVD2_GOAL_RATIO = 2.0


def _median_time(fn, repeat: int, warmup: int = 1):
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _ort_session(weight, bias, stride, padding, h, w, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c_in, c_out, k, _ = weight.shape
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[stride, stride],
                            pads=[padding] * 4, kernel_shape=[k, k])
    graph = helper.make_graph(
        [node], "golden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]), ort.__version__


def golden(h: int = 321, w: int = 481, repeat: int = 5, threads: int = 1,
           algorithms=None, seed: int = 0) -> dict:
    """Measure the golden models against onnxruntime on the paper's last layer at ``h x w``.

    STRD (S^2 times the MACs) is timed once (``runs`` says so). Raises ``ValueError`` for bad
    parameters, naming them.
    """
    from ..golden import algorithms as al
    from ..model.transforms import deconv_to_subpixel, resize_to_deconv, subpixel_to_deconv

    for field, value in (("h", h), ("w", w), ("repeat", repeat), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, not {value!r}")
    names = list(al.ALGORITHMS) if algorithms is None else list(algorithms)
    for name in names:
        if name not in al.FAST:
            raise ValueError(f"algorithm must be one of {', '.join(al.ALGORITHMS)}, not {name!r}")
    c_in, c_out, k, s, p = (PAPER_LAST[f] for f in ("c_in", "c_out", "k", "stride", "padding"))
    rng = np.random.default_rng(seed)
    x = rng.random((c_in, h, w), dtype=np.float32)
    weight = (rng.standard_normal((c_in, c_out, k, k)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)

    old_threads = blas_threads()
    numpy_threads = blas_threads(threads)
    try:
        sess, ort_version = _ort_session(weight, bias, s, p, h, w, threads)
        t_ort, y_ort = _median_time(lambda: sess.run(None, {"x": x[None]})[0][0], repeat)
        scale = float(np.abs(y_ort).max()) + 1.0
        rows = {}
        for name in names:
            fn = al.FAST[name]
            runs = 1 if name == "STRD" else repeat
            t, y = _median_time(lambda: fn(x, weight, s, p, bias, dtype=np.float32), runs,
                                warmup=0 if name == "STRD" else 1)
            err = float(np.abs(y - y_ort).max()) if y.shape == y_ort.shape else float("inf")
            rows[name] = {"median_s": t, "runs": runs, "ratio_vs_onnxruntime": t / t_ort,
                          "max_abs_err": err, "agree": bool(err <= 1e-5 * scale)}

        # Transforms: float64 kernels of the paper's last layer.
        wc_sp = rng.standard_normal((c_out * s * s, c_in, 3, 3))
        bc_sp = rng.standard_normal(c_out * s * s)
        wc_nn = rng.standard_normal((c_out, c_in, 3, 3))
        bc_nn = rng.standard_normal(c_out)
        d = subpixel_to_deconv(wc_sp, bc_sp, r=s, padding=1)
        transforms = {}
        for tname, fn in (
                ("subpixel_to_deconv", lambda: subpixel_to_deconv(wc_sp, bc_sp, r=s, padding=1)),
                ("resize_to_deconv", lambda: resize_to_deconv(wc_nn, bc_nn, r=s, padding=1)),
                ("deconv_to_subpixel", lambda: deconv_to_subpixel(d.weight, d.bias, stride=s,
                                                                  padding=d.padding))):
            t, _ = _median_time(fn, repeat)
            transforms[tname] = {"median_s": t, "goal_s": TRANSFORM_GOAL_S,
                                 "met": bool(t < TRANSFORM_GOAL_S)}
    finally:
        if old_threads is not None:
            blas_threads(old_threads)

    agree = all(r["agree"] for r in rows.values())
    result = {
        "bench": "golden",
        "layer": dict(PAPER_LAST, h=h, w=w, h_out=int(y_ort.shape[1]), w_out=int(y_ort.shape[2])),
        "dtype": "float32",
        "threads": {"numpy_blas": numpy_threads, "onnxruntime_intra_op": threads},
        "repeat": repeat,
        "onnxruntime": {"median_s": t_ort, "version": ort_version},
        "algorithms": rows,
        "transforms": transforms,
        "agree": agree,
        "ok": agree,
    }
    if "REVD2" in rows:
        ratio = rows["REVD2"]["ratio_vs_onnxruntime"]
        result["revd2_goal"] = {"max_ratio": REVD2_GOAL_RATIO, "ratio": ratio,
                                "met": bool(ratio <= REVD2_GOAL_RATIO)}
    return result


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
        return golden(args.size[0], args.size[1], args.repeat, args.threads, algos)
    except ValueError as e:
        raise CLIError(str(e), EXIT_INPUT) from e


def _golden_render(r: dict) -> str:
    lay = r["layer"]
    th = r["threads"]
    blas = "unknown" if th["numpy_blas"] is None else th["numpy_blas"]
    lines = [
        f"golden models vs onnxruntime {r['onnxruntime']['version']} ConvTranspose, {r['dtype']}",
        f"layer: C_in {lay['c_in']} -> C_out {lay['c_out']}, K_d {lay['k']}, stride "
        f"{lay['stride']}, padding {lay['padding']}, {lay['h']} x {lay['w']} -> "
        f"{lay['h_out']} x {lay['w_out']}",
        f"threads: numpy BLAS {blas}, onnxruntime intra-op {th['onnxruntime_intra_op']}; "
        f"median of {r['repeat']} runs",
        "",
        f"{'algorithm':<14}{'median ms':>11}{'x onnxrt':>10}{'max |err|':>12}  agree",
        f"{'onnxruntime':<14}{r['onnxruntime']['median_s'] * 1e3:>11.2f}{1.0:>10.2f}"
        f"{'-':>12}  -",
    ]
    for name, row in r["algorithms"].items():
        note = f"  ({row['runs']} run)" if row["runs"] == 1 and r["repeat"] > 1 else ""
        lines.append(f"{name:<14}{row['median_s'] * 1e3:>11.2f}{row['ratio_vs_onnxruntime']:>10.2f}"
                     f"{row['max_abs_err']:>12.2e}  {'yes' if row['agree'] else 'NO'}{note}")
    if "revd2_goal" in r:
        g = r["revd2_goal"]
        lines.append(f"REVD2 / onnxruntime = {g['ratio']:.2f} (goal <= {g['max_ratio']:.0f}: "
                     f"{'met' if g['met'] else 'NOT met'})")
    lines += ["", f"{'transform':<22}{'median ms':>11}  goal < {TRANSFORM_GOAL_S * 1e3:.0f} ms"]
    for name, row in r["transforms"].items():
        lines.append(f"{name:<22}{row['median_s'] * 1e3:>11.3f}  {'met' if row['met'] else 'NOT met'}")
    if not r["agree"]:
        lines.append("ERROR: some golden models disagree with onnxruntime")
    return "\n".join(lines)


GOLDEN = Bench(
    help="time the vectorised golden models (REVD2 etc.) against onnxruntime ConvTranspose on "
         "the paper's last layer, check agreement, and time the kernel transforms",
    run=_golden_run, render=_golden_render, add_arguments=_golden_args)
