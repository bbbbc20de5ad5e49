"""``deconvsr bench golden``: the vectorised golden models (:mod:`deconvsr.sw.golden.algorithms`)
timed on the paper's last layer against onnxruntime's ``ConvTranspose`` on the same float32 data,
their agreement checked, and the kernel transforms timed.
"""

from __future__ import annotations

import ctypes
import glob
import os
import statistics
import time

import numpy as np

from ..golden import algorithms as al
from ..model.transforms import deconv_to_subpixel, resize_to_deconv, subpixel_to_deconv

__all__ = ["golden", "render", "blas_threads", "PAPER_LAST"]


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
    # onnx and onnxruntime are heavy imports (about 1 s): only when the benchmark runs
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



def render(r: dict) -> str:
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
