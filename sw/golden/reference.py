"""Reference operators in NumPy (float64, or exact integers carried in float64).

Shapes follow PyTorch without the batch axis: feature maps ``(C, H, W)``; convolution weights
``(C_out, C_in, K, K)`` (``Conv2d``); deconvolution weights ``(C_in, C_out, K_d, K_d)``
(``ConvTranspose2d``). A deconvolution with stride ``S`` and padding ``P_d`` computes
``y[o, S*h + a - P_d, S*w + b - P_d] += x[i, h, w] * W_d[i, o, a, b]``; output size
``(H - 1) * S - 2 * P_d + K_d``.

This module holds the fast vectorised paths used everywhere; the loop-nest versions that read
like the paper (STDD, STRD, REVD, REVD2, TDC) live in :mod:`deconvsr.sw.golden.algorithms` and are
tested against these.
"""

from __future__ import annotations

import numpy as np

__all__ = ["deconv2d", "conv2d", "pixel_shuffle", "nearest_upsample", "periodic_bias",
           "deconv_out_size"]


def deconv_out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size - 1) * stride - 2 * padding + k


def periodic_bias(bias, c_out: int, stride: int) -> np.ndarray:
    """Normalise a bias to the periodic form ``(C_out, S, S)``.

    Accepts ``None`` (zeros), a per-channel bias ``(C_out,)`` or a periodic one.
    """
    if bias is None:
        return np.zeros((c_out, stride, stride))
    bias = np.asarray(bias)
    if bias.shape == (c_out,):
        return np.broadcast_to(bias[:, None, None], (c_out, stride, stride)).copy()
    if bias.shape == (c_out, stride, stride):
        return bias
    raise ValueError(f"bias must have shape ({c_out},) or ({c_out}, {stride}, {stride}), "
                     f"not {bias.shape}")


def deconv2d(x, weight, stride: int = 1, padding: int = 0, bias=None) -> np.ndarray:
    """Deconvolution (transposed convolution), vectorised as a scatter over the K_d^2 taps.

    ``bias`` may be per-channel ``(C_out,)`` or periodic ``(C_out, S, S)``, indexed by the
    output pixel's phase ``(y mod S, x mod S)``. Integer inputs give exact integer results as
    long as every partial sum stays below 2**53 (float64 BLAS is used for speed).
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    c_in, h, w = x.shape
    wc_in, c_out, k, k2 = weight.shape
    if wc_in != c_in or k != k2:
        raise ValueError(f"weight {weight.shape} does not fit input {x.shape}")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, not {stride}, {padding}")
    h_out = deconv_out_size(h, k, stride, padding)
    w_out = deconv_out_size(w, k, stride, padding)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"output would be {h_out} x {w_out}")
    hf = (h - 1) * stride + k
    wf = (w - 1) * stride + k
    full = np.zeros((c_out, hf, wf))
    xm = x.reshape(c_in, h * w).astype(np.float64)
    wt = weight.astype(np.float64)
    for a in range(k):
        for b in range(k):
            contrib = (wt[:, :, a, b].T @ xm).reshape(c_out, h, w)
            full[:, a:a + (h - 1) * stride + 1:stride, b:b + (w - 1) * stride + 1:stride] += contrib
    out = full[:, padding:padding + h_out, padding:padding + w_out]
    if bias is not None:
        pb = periodic_bias(bias, c_out, stride)
        reps = (1, -(-h_out // stride), -(-w_out // stride))
        out = out + np.tile(pb, reps)[:, :h_out, :w_out]
    return out


def conv2d(x, weight, padding: int = 0, bias=None) -> np.ndarray:
    """Stride-1 convolution (cross-correlation, as ``Conv2d``), via the equivalent deconvolution
    with the rotated, channel-transposed kernel: ``P_d = K - 1 - P``."""
    weight = np.asarray(weight)
    k = weight.shape[2]
    pd = k - 1 - padding
    if pd < 0:
        # Extra zero padding beyond K - 1: pad the input explicitly.
        x = np.pad(np.asarray(x), ((0, 0), (-pd, -pd), (-pd, -pd)))
        pd = 0
    wd = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    return deconv2d(x, wd, 1, pd, bias)


def pixel_shuffle(x, r: int, mode: str = "CRD") -> np.ndarray:
    """DepthToSpace. ``CRD`` (PyTorch ``PixelShuffle``, ONNX CRD): channel ``r*r*c + r*i + j``
    goes to ``(c, r*h + i, r*w + j)``; ``DCR`` (TensorFlow, ONNX default): channel
    ``(r*i + j) * C + c``."""
    x = np.asarray(x)
    crr, h, w = x.shape
    if crr % (r * r):
        raise ValueError(f"{crr} channels are not a multiple of r^2 = {r * r}")
    c = crr // (r * r)
    if mode == "CRD":
        y = x.reshape(c, r, r, h, w).transpose(0, 3, 1, 4, 2)
    elif mode == "DCR":
        y = x.reshape(r, r, c, h, w).transpose(2, 3, 0, 4, 1)
    else:
        raise ValueError(f"pixel shuffle mode must be 'CRD' or 'DCR', not {mode!r}")
    return y.reshape(c, h * r, w * r)


def nearest_upsample(x, r: int) -> np.ndarray:
    x = np.asarray(x)
    return x.repeat(r, axis=1).repeat(r, axis=2)
