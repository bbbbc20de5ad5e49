"""Deconvolution inference algorithms (loop orders) of Colbert et al. 2021, §5, written twice.

Every algorithm computes the same operator, ``ConvTranspose2d`` without the batch axis::

    y[o, S*h + a - P_d, S*w + b - P_d] += x[i, h, w] * W[i, o, a, b]
    y[o, Y, X] += bias[o, Y mod S, X mod S]                       # periodic bias

with ``x`` ``(C_in, H, W)``, ``W`` ``(C_in, C_out, K_d, K_d)``, output
``((H - 1) S - 2 P_d + K_d)`` square-wise. Only the order of the loops differs:

========  =============================================================================
STDD      scatter: each input pixel times each tap, added into the output
STRD      insert S-1 zeros between input pixels, then a stride-1 convolution
REVD      kernel tap outermost; step over the outputs by S, input index computed exactly
REVD2     output-stationary gather: each output pixel's phase ``f = (Y + P_d) mod S``
          (wrap-around counter) selects taps ``a = f, f+S, ...``; input row
          ``(Y + P_d - a) / S`` is exact; every output written once, in raster order
TDC       S^2 zero-padded sub-kernels, S^2 stride-1 convolutions, interleave
========  =============================================================================

``*_loop`` functions are plain Python loop nests that read like the paper (small inputs only;
they compute in Python numbers, so integer inputs give exact integer results). The functions
without the suffix are fast vectorised NumPy paths (``dtype`` float64 by default; float32 for
benchmarks). :data:`LOOP` and :data:`FAST` map the algorithm names to them.

Also here: loop-nest ``conv2d_loop``, ``pixel_shuffle_loop`` (CRD and DCR) and
``nearest_upsample_loop``, which check the vectorised operators of
:mod:`deconvsr.sw.golden.reference`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .reference import deconv_out_size, periodic_bias

__all__ = [
    "ALGORITHMS", "LOOP", "FAST",
    "stdd_loop", "strd_loop", "revd_loop", "revd2_loop", "tdc_loop",
    "stdd", "strd", "revd", "revd2", "tdc",
    "conv2d_loop", "pixel_shuffle_loop", "nearest_upsample_loop",
]

ALGORITHMS = ("STDD", "STRD", "REVD", "REVD2", "TDC")


# Argument checking --------------------------------------------------------------------------

def _check_int(field, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{field} must be an integer >= {lo}, not {value!r}")
    return int(value)


def _prepare(x, weight, stride, padding, bias):
    """Validate a deconvolution call; return ``x, weight, S, P_d, periodic bias, H_out, W_out``.

    Raises
    ------
    ValueError
        naming the parameter and quoting its value.
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (C_in, H, W), not {x.shape}")
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must have shape (C_in, C_out, K_d, K_d), not {weight.shape}")
    if weight.shape[0] != x.shape[0]:
        raise ValueError(f"weight {weight.shape} has {weight.shape[0]} input channels but x "
                         f"{x.shape} has {x.shape[0]}")
    stride = _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    _, h, w = x.shape
    k = weight.shape[2]
    h_out = deconv_out_size(h, k, stride, padding)
    w_out = deconv_out_size(w, k, stride, padding)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"padding {padding} leaves an empty output ({h_out} x {w_out}) for "
                         f"input {h} x {w}, K_d={k}, stride {stride}")
    pb = periodic_bias(bias, weight.shape[1], stride)
    return x, weight, stride, padding, pb, h_out, w_out


def _exact_type(*arrays):
    """int64 if every operand is integer (then the loop nests are exact), else float64."""
    if all(np.issubdtype(np.asarray(a).dtype, np.integer) for a in arrays if a is not None):
        return np.int64
    return np.float64


def _zeros(*shape):
    """Nested Python lists of zeros (the loop nests' output buffers)."""
    if len(shape) == 1:
        return [0] * shape[0]
    return [_zeros(*shape[1:]) for _ in range(shape[0])]


# Loop nests ---------------------------------------------------------------------------------

def stdd_loop(x, weight, stride=1, padding=0, bias=None):
    """STDD: scatter every input pixel through every tap into the output (partial sums)."""
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    X, Wt, B = xa.tolist(), wa.tolist(), pb.tolist()
    y = _zeros(c_out, h_out, w_out)
    for i in range(c_in):
        for hh in range(h):
            for ww in range(w):
                for o in range(c_out):
                    for a in range(k):
                        oy = s * hh + a - p
                        if not 0 <= oy < h_out:
                            continue
                        for b in range(k):
                            ox = s * ww + b - p
                            if 0 <= ox < w_out:
                                y[o][oy][ox] += X[i][hh][ww] * Wt[i][o][a][b]
    for o in range(c_out):
        for oy in range(h_out):
            for ox in range(w_out):
                y[o][oy][ox] += B[o][oy % s][ox % s]
    return np.array(y, dtype=_exact_type(xa, wa, bias))


def strd_loop(x, weight, stride=1, padding=0, bias=None):
    """STRD: build the zero-inserted (fractionally strided) input, padded by K_d - 1, then a
    stride-1 convolution with the rotated kernel, cropped by P_d."""
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    X, Wt, B = xa.tolist(), wa.tolist(), pb.tolist()
    zh, zw = (h - 1) * s + 1 + 2 * (k - 1), (w - 1) * s + 1 + 2 * (k - 1)
    z = _zeros(c_in, zh, zw)
    for i in range(c_in):
        for hh in range(h):
            for ww in range(w):
                z[i][k - 1 + s * hh][k - 1 + s * ww] = X[i][hh][ww]
    y = _zeros(c_out, h_out, w_out)
    for o in range(c_out):
        for oy in range(h_out):
            for ox in range(w_out):
                acc = B[o][oy % s][ox % s]
                for i in range(c_in):
                    for a in range(k):
                        for b in range(k):
                            acc += z[i][oy + p + a][ox + p + b] * Wt[i][o][k - 1 - a][k - 1 - b]
                y[o][oy][ox] = acc
    return np.array(y, dtype=_exact_type(xa, wa, bias))


def revd_loop(x, weight, stride=1, padding=0, bias=None):
    """REVD: tap (a, b) outermost; the outputs it reaches are ``Y = (a - P_d) mod S`` and every
    S-th one after it, each reading the exact input ``h = (Y + P_d - a) / S``."""
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    X, Wt, B = xa.tolist(), wa.tolist(), pb.tolist()
    y = _zeros(c_out, h_out, w_out)
    for o in range(c_out):
        for oy in range(h_out):
            for ox in range(w_out):
                y[o][oy][ox] = B[o][oy % s][ox % s]
    for a in range(k):
        for b in range(k):
            for o in range(c_out):
                for i in range(c_in):
                    for oy in range((a - p) % s, h_out, s):
                        hh = (oy + p - a) // s
                        if not 0 <= hh < h:
                            continue
                        for ox in range((b - p) % s, w_out, s):
                            ww = (ox + p - b) // s
                            if 0 <= ww < w:
                                y[o][oy][ox] += X[i][hh][ww] * Wt[i][o][a][b]
    return np.array(y, dtype=_exact_type(xa, wa, bias))


def revd2_loop(x, weight, stride=1, padding=0, bias=None):
    """REVD2: output-stationary gather. Counters ``fy``/``fx`` hold ``(Y + P_d) mod S`` and
    ``by``/``bx`` hold ``Y mod S`` (bias phase), wrapping at S: no modulo in the loop. Each
    output pixel is accumulated completely and written once, in raster order."""
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    X, Wt, B = xa.tolist(), wa.tolist(), pb.tolist()
    y = _zeros(c_out, h_out, w_out)
    for o in range(c_out):
        fy, by = p % s, 0
        for oy in range(h_out):
            fx, bx = p % s, 0
            for ox in range(w_out):
                acc = B[o][by][bx]
                for i in range(c_in):
                    for a in range(fy, k, s):
                        hh, rem = divmod(oy + p - a, s)
                        if rem:
                            raise AssertionError("REVD2 row index not exact")  # cannot happen
                        if not 0 <= hh < h:
                            continue
                        for b in range(fx, k, s):
                            ww = (ox + p - b) // s
                            if 0 <= ww < w:
                                acc += X[i][hh][ww] * Wt[i][o][a][b]
                y[o][oy][ox] = acc
                fx, bx = (0 if fx == s - 1 else fx + 1), (0 if bx == s - 1 else bx + 1)
            fy, by = (0 if fy == s - 1 else fy + 1), (0 if by == s - 1 else by + 1)
    return np.array(y, dtype=_exact_type(xa, wa, bias))


def tdc_loop(x, weight, stride=1, padding=0, bias=None):
    """TDC: split the kernel into S^2 sub-kernels ``W[:, :, fy::S, fx::S]`` zero-padded to
    ``ceil(K_d / S)`` taps, run each as a stride-1 convolution over the input, and interleave
    the S^2 results: phase ``(fy, fx)`` map entry ``(q, r)`` is output ``(S q + fy - P_d,
    S r + fx - P_d)``."""
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    X, Wt, B = xa.tolist(), wa.tolist(), pb.tolist()
    kt = -(-k // s)
    y = _zeros(c_out, h_out, w_out)
    for fy in range(s):
        for fx in range(s):
            sub = _zeros(c_in, c_out, kt, kt)      # zero-padded sub-kernel
            for i in range(c_in):
                for o in range(c_out):
                    for m in range(kt):
                        for n in range(kt):
                            if fy + s * m < k and fx + s * n < k:
                                sub[i][o][m][n] = Wt[i][o][fy + s * m][fx + s * n]
            # Rows q of this phase's map that land inside the output.
            q_lo, q_hi = -(-(p - fy) // s), (h_out - 1 + p - fy) // s
            r_lo, r_hi = -(-(p - fx) // s), (w_out - 1 + p - fx) // s
            for o in range(c_out):
                for q in range(q_lo, q_hi + 1):
                    for r in range(r_lo, r_hi + 1):
                        acc = 0
                        for i in range(c_in):
                            for m in range(kt):
                                for n in range(kt):
                                    hh, ww = q - m, r - n
                                    if 0 <= hh < h and 0 <= ww < w:
                                        acc += X[i][hh][ww] * sub[i][o][m][n]
                        oy, ox = s * q + fy - p, s * r + fx - p
                        y[o][oy][ox] = acc + B[o][oy % s][ox % s]
    return np.array(y, dtype=_exact_type(xa, wa, bias))


# Other operators as loop nests (to check reference.py) -------------------------------------

def conv2d_loop(x, weight, padding=0, bias=None):
    """Stride-1 convolution (cross-correlation, ``Conv2d``): weight ``(C_out, C_in, K, K)``,
    zero padding ``padding``, optional per-channel ``bias`` ``(C_out,)``."""
    xa, wa = np.asarray(x), np.asarray(weight)
    if xa.ndim != 3:
        raise ValueError(f"x must have shape (C_in, H, W), not {xa.shape}")
    if wa.ndim != 4 or wa.shape[2] != wa.shape[3] or wa.shape[1] != xa.shape[0]:
        raise ValueError(f"weight must have shape (C_out, {xa.shape[0]}, K, K), not {wa.shape}")
    p = _check_int("padding", padding, 0)
    c_out, c_in, k, _ = wa.shape
    _, h, w = xa.shape
    h_out, w_out = h + 2 * p - k + 1, w + 2 * p - k + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"kernel {k} is larger than the padded input {h + 2 * p} x {w + 2 * p}")
    if bias is not None and np.shape(bias) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), not {np.shape(bias)}")
    X, Wt = xa.tolist(), wa.tolist()
    Bs = [0] * c_out if bias is None else np.asarray(bias).tolist()
    y = _zeros(c_out, h_out, w_out)
    for o in range(c_out):
        for oy in range(h_out):
            for ox in range(w_out):
                acc = Bs[o]
                for i in range(c_in):
                    for a in range(k):
                        for b in range(k):
                            hh, ww = oy + a - p, ox + b - p
                            if 0 <= hh < h and 0 <= ww < w:
                                acc += X[i][hh][ww] * Wt[o][i][a][b]
                y[o][oy][ox] = acc
    return np.array(y, dtype=_exact_type(xa, wa, bias))


def pixel_shuffle_loop(x, r, mode="CRD"):
    """DepthToSpace by loops. CRD: channel ``r*r*c + r*i + j`` -> ``(c, r*h + i, r*w + j)``;
    DCR: channel ``(r*i + j)*C + c``."""
    xa = np.asarray(x)
    r = _check_int("r", r, 1)
    if mode not in ("CRD", "DCR"):
        raise ValueError(f"mode must be 'CRD' or 'DCR', not {mode!r}")
    if xa.ndim != 3 or xa.shape[0] % (r * r):
        raise ValueError(f"x must have shape (r^2 C, H, W) with r = {r}, not {xa.shape}")
    crr, h, w = xa.shape
    c = crr // (r * r)
    y = np.empty((c, h * r, w * r), dtype=xa.dtype)
    for cc in range(c):
        for i in range(r):
            for j in range(r):
                ch = r * r * cc + r * i + j if mode == "CRD" else (r * i + j) * c + cc
                for hh in range(h):
                    for ww in range(w):
                        y[cc, r * hh + i, r * ww + j] = xa[ch, hh, ww]
    return y


def nearest_upsample_loop(x, r):
    """Nearest-neighbour upsampling by r: ``y[c, Y, X] = x[c, Y // r, X // r]``."""
    xa = np.asarray(x)
    r = _check_int("r", r, 1)
    if xa.ndim != 3:
        raise ValueError(f"x must have shape (C, H, W), not {xa.shape}")
    c, h, w = xa.shape
    y = np.empty((c, h * r, w * r), dtype=xa.dtype)
    for cc in range(c):
        for oy in range(h * r):
            for ox in range(w * r):
                y[cc, oy, ox] = xa[cc, oy // r, ox // r]
    return y


# Vectorised paths ---------------------------------------------------------------------------

def _fast_prepare(x, weight, stride, padding, bias, dtype):
    xa, wa, s, p, pb, h_out, w_out = _prepare(x, weight, stride, padding, bias)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, not {dtype!r}")
    return (xa.astype(dtype, copy=False), wa.astype(dtype, copy=False), s, p,
            pb.astype(dtype, copy=False), h_out, w_out)


def _add_bias(out, pb, s):
    for by in range(s):
        for bx in range(s):
            out[:, by::s, bx::s] += pb[:, by, bx][:, None, None]
    return out


def stdd(x, weight, stride=1, padding=0, bias=None, *, dtype=np.float64):
    """STDD vectorised: one GEMM makes every (tap, input pixel) product for all channels
    (``(C_out K_d^2, C_in) @ (C_in, H W)``), then K_d^2 strided adds scatter them into the
    full-size output (col2im), which is cropped by P_d."""
    xa, wa, s, p, pb, h_out, w_out = _fast_prepare(x, weight, stride, padding, bias, dtype)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    cols = (wa.reshape(c_in, c_out * k * k).T @ xa.reshape(c_in, h * w)).reshape(c_out, k, k, h, w)
    full = np.zeros((c_out, (h - 1) * s + k, (w - 1) * s + k), dtype=xa.dtype)
    for a in range(k):
        for b in range(k):
            full[:, a:a + (h - 1) * s + 1:s, b:b + (w - 1) * s + 1:s] += cols[:, a, b]
    out = np.ascontiguousarray(full[:, p:p + h_out, p:p + w_out])
    return _add_bias(out, pb, s)


def strd(x, weight, stride=1, padding=0, bias=None, *, dtype=np.float64):
    """STRD vectorised: materialise the zero-inserted input (padded by K_d - 1, then cropped by
    P_d), then a stride-1 convolution with the rotated kernel, one ``(C_out, C_in)`` product per
    tap over the shifted map (memory stays at one map, no K_d^2-fold im2col). S^2 times the
    useful MACs, (1 - 1/S^2) of them on inserted zeros: slow by design."""
    xa, wa, s, p, pb, h_out, w_out = _fast_prepare(x, weight, stride, padding, bias, dtype)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    e = k - 1
    z = np.zeros((c_in, (h - 1) * s + 1 + 2 * e, (w - 1) * s + 1 + 2 * e), dtype=xa.dtype)
    z[:, e:e + (h - 1) * s + 1:s, e:e + (w - 1) * s + 1:s] = xa
    z = z[:, p:p + h_out + k - 1, p:p + w_out + k - 1]
    out = np.zeros((c_out, h_out, w_out), dtype=xa.dtype)
    for a in range(k):
        for b in range(k):
            tap = wa[:, :, k - 1 - a, k - 1 - b].T                    # (C_out, C_in)
            out += np.tensordot(tap, z[:, a:a + h_out, b:b + w_out], axes=(1, 0))
    return _add_bias(out, pb, s)


def revd(x, weight, stride=1, padding=0, bias=None, *, dtype=np.float64):
    """REVD vectorised: tap (a, b) outermost; the exact range of outputs it reaches
    (``Y = (a - P_d) mod S`` step S, input ``(Y + P_d - a) / S`` inside the image) gets one
    ``(C_out, C_in) @ (C_in, pixels)`` product added in place (partial sums revisited)."""
    xa, wa, s, p, pb, h_out, w_out = _fast_prepare(x, weight, stride, padding, bias, dtype)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    out = np.zeros((c_out, h_out, w_out), dtype=xa.dtype)

    def reach(a, size_in, size_out):
        y0 = (a - p) % s
        h0 = (y0 + p - a) // s
        lo = max(0, -h0)                              # first step with input >= 0
        hi = min(len(range(y0, size_out, s)), size_in - h0)
        return y0 + s * lo, h0 + lo, hi - lo          # first output, first input, count

    for a in range(k):
        y0, h0, ny = reach(a, h, h_out)
        if ny <= 0:
            continue
        for b in range(k):
            x0, w0, nx = reach(b, w, w_out)
            if nx <= 0:
                continue
            patch = xa[:, h0:h0 + ny, w0:w0 + nx].reshape(c_in, ny * nx)
            out[:, y0:y0 + s * (ny - 1) + 1:s, x0:x0 + s * (nx - 1) + 1:s] += \
                (wa[:, :, a, b].T @ patch).reshape(c_out, ny, nx)
    return _add_bias(out, pb, s)


def _phases(s, p, k, size_out):
    """Per output phase ``py`` (output ``Y = py + S t``): tap phase ``f = (py + P_d) mod S``,
    input offset ``c`` (input row ``t + c - m`` for tap ``a = f + S m``), tap count ``M`` and
    the number ``T`` of output rows of that phase."""
    table = []
    for py in range(s):
        f = (py + p) % s
        table.append((py, f, (py + p - f) // s, len(range(f, k, s)), len(range(py, size_out, s))))
    return table


def revd2(x, weight, stride=1, padding=0, bias=None, *, dtype=np.float64, band=32):
    """REVD2 vectorised: output-stationary gather, in bands of ``band`` output rows per phase.

    For each band, one GEMM ``(C_out K_d^2, C_in) @ (C_in, rows W)`` reduces over the input
    channels for every tap (the band's products stay in cache). Then for each output phase
    ``(py, px)`` the taps ``a = f + S m``, ``b = g + S n`` (``f = (py + P_d) mod S``) are
    gathered with exact input offsets ``t + c - m`` into a small accumulator that starts at the
    phase's periodic bias, and the finished outputs are written once into
    ``out[:, py::S, px::S]``. Taps that do not exist for a phase (K_d not a multiple of S) cost
    nothing: there are no zero-padded sub-kernels.
    """
    xa, wa, s, p, pb, h_out, w_out = _fast_prepare(x, weight, stride, padding, bias, dtype)
    band = _check_int("band", band, 1)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    wmat = np.ascontiguousarray(wa.reshape(c_in, c_out * k * k).T)
    x2 = xa.reshape(c_in, h * w)
    out = np.empty((c_out, h_out, w_out), dtype=xa.dtype)
    rows = _phases(s, p, k, h_out)
    cols = _phases(s, p, k, w_out)
    lo_off = min(c - m + 1 for _, _, c, m, _ in rows)
    hi_off = max(c for _, _, c, _, _ in rows)
    for t0 in range(0, rows[0][4], band):
        t1 = t0 + band
        h_lo, h_hi = max(0, t0 + lo_off), min(h, t1 + hi_off)
        prods = None
        if h_hi > h_lo:
            prods = (wmat @ x2[:, h_lo * w:h_hi * w]).reshape(c_out, k, k, h_hi - h_lo, w)
        for py, f, cy, n_m, n_t in rows:
            ta, tb = t0, min(t1, n_t)
            if tb <= ta:
                continue
            for px, g, cx, n_n, n_u in cols:
                acc = np.empty((c_out, tb - ta, n_u), dtype=xa.dtype)
                acc[...] = pb[:, py, px][:, None, None]
                for m in range(n_m if prods is not None else 0):
                    s0, s1 = max(ta, h_lo - cy + m), min(tb, h_hi - cy + m)
                    if s1 <= s0:
                        continue
                    r0 = s0 + cy - m - h_lo
                    for n in range(n_n):
                        u0, u1 = max(0, n - cx), min(n_u, w - cx + n)
                        if u1 > u0:
                            acc[:, s0 - ta:s1 - ta, u0:u1] += \
                                prods[:, f + s * m, g + s * n, r0:r0 + s1 - s0,
                                      u0 + cx - n:u1 + cx - n]
                out[:, py + s * ta:py + s * tb:s, px::s] = acc
    return out


def tdc(x, weight, stride=1, padding=0, bias=None, *, dtype=np.float64):
    """TDC vectorised: S^2 sub-kernels zero-padded to ``ceil(K_d/S)`` taps; each is a stride-1
    convolution over the zero-padded input (im2col by sliding windows + one tensordot); the
    S^2 maps are interleaved into the output and cropped by P_d."""
    xa, wa, s, p, pb, h_out, w_out = _fast_prepare(x, weight, stride, padding, bias, dtype)
    c_in, h, w = xa.shape
    _, c_out, k, _ = wa.shape
    kt = -(-k // s)
    wpad = np.zeros((c_in, c_out, kt * s, kt * s), dtype=xa.dtype)
    wpad[:, :, :k, :k] = wa
    # Map entry q (0 <= q < H + kt - 1) of every phase is full-output row S q + f.
    xp = np.pad(xa, ((0, 0), (kt - 1, kt - 1), (kt - 1, kt - 1)))
    win = sliding_window_view(xp, (kt, kt), axis=(1, 2))      # (C_in, H+kt-1, W+kt-1, kt, kt)
    full = np.empty((c_out, (h + kt - 1) * s, (w + kt - 1) * s), dtype=xa.dtype)
    for fy in range(s):
        for fx in range(s):
            sub = wpad[:, :, fy::s, fx::s][:, :, ::-1, ::-1]     # rotated for correlation
            full[:, fy::s, fx::s] = np.tensordot(sub, win, axes=([0, 2, 3], [0, 3, 4]))
    out = np.ascontiguousarray(full[:, p:p + h_out, p:p + w_out])
    return _add_bias(out, pb, s)


LOOP = {"STDD": stdd_loop, "STRD": strd_loop, "REVD": revd_loop, "REVD2": revd2_loop,
        "TDC": tdc_loop}
FAST = {"STDD": stdd, "STRD": strd, "REVD": revd, "REVD2": revd2, "TDC": tdc}
