"""Kernel transforms between upsampling layers and deconvolution (Colbert et al. 2021, §3-4).

All three are exact: the weight shuffle and its inverse only permute (and flip) weights; the
weight convolution sums weights, exactly in float64 for float kernels and in integers for
integer ones. Each returns a :class:`Deconv` (or :class:`SubPixel`) holding everything needed to
reproduce the original operator, including the periodic bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TransformError", "Deconv", "SubPixel", "subpixel_to_deconv", "resize_to_deconv",
           "deconv_to_subpixel", "check_finite"]


class TransformError(ValueError):
    """A layer that cannot be transformed exactly. The message names the layer and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.layer = name
        self.reason = reason


@dataclass(frozen=True)
class Deconv:
    """A deconvolution: ``weight`` ``(C_in, C_out, K_d, K_d)``, periodic ``bias``
    ``(C_out, S, S)``, ``stride`` S, ``padding`` P_d (``ConvTranspose2d`` semantics)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int

    @property
    def c_in(self) -> int:
        return self.weight.shape[0]

    @property
    def c_out(self) -> int:
        return self.weight.shape[1]

    @property
    def k(self) -> int:
        return self.weight.shape[2]

    @property
    def bias_is_periodic(self) -> bool:
        """True if the bias differs between phases (a per-channel bias is not periodic)."""
        return bool(np.any(self.bias != self.bias[:, :1, :1]))


@dataclass(frozen=True)
class SubPixel:
    """A sub-pixel convolution: conv ``weight`` ``(r^2 C_out, C_in, K, K)``, ``bias``
    ``(r^2 C_out,)``, ``padding`` P, pixel shuffle ``r`` in ``mode``; then ``crop`` rows and
    columns are dropped at the bottom and right of the output."""

    weight: np.ndarray
    bias: np.ndarray
    r: int
    padding: int
    mode: str = "CRD"
    crop: int = 0


def check_finite(name: str, **arrays) -> None:
    """Raise :class:`TransformError` if any array holds NaN or infinity."""
    for field, arr in arrays.items():
        if arr is not None and not np.all(np.isfinite(np.asarray(arr, dtype=np.float64))):
            raise TransformError(name, f"{field} contains NaN or infinity")


def _check_kernel(name, weight, what):
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise TransformError(name, f"{what} weight must be 4-D, not shape {weight.shape}")
    if weight.shape[2] != weight.shape[3]:
        raise TransformError(name, f"non-square kernel {weight.shape[2]}x{weight.shape[3]} is not "
                                   "supported")
    return weight


def _check_int(name, field, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise TransformError(name, f"{field} must be an integer >= {lo}, not {value!r}")
    return int(value)


def _shuffle_channel(mode: str, c, i, j, r, c_out):
    if mode == "CRD":
        return r * r * c + r * i + j
    if mode == "DCR":
        return (r * i + j) * c_out + c
    raise TransformError("pixel shuffle", f"mode must be 'CRD' or 'DCR', not {mode!r}")


def subpixel_to_deconv(weight, bias=None, *, r: int, padding: int, mode: str = "CRD",
                       name: str = "sub-pixel conv") -> Deconv:
    """Weight shuffle: conv ``(r^2 C_out, C_in, K, K)`` + pixel shuffle ``r`` -> deconvolution
    with ``K_d = r K``, ``S = r``, ``P_d = r (K - 1 - P)`` and a periodic bias.

    ``W_d[i, c, a, b] = W_c[ch(c, a mod r, b mod r), i, K-1-a//r, K-1-b//r]``.

    Raises
    ------
    TransformError
        for a non-square kernel, channels not a multiple of r^2, padding beyond K - 1,
        NaN/inf, or an unknown shuffle mode.
    """
    weight = _check_kernel(name, weight, "conv")
    r = _check_int(name, "upscale factor r", r, 1)
    padding = _check_int(name, "padding", padding, 0)
    check_finite(name, weight=weight, bias=bias)
    crr, c_in, k, _ = weight.shape
    if crr % (r * r):
        raise TransformError(name, f"{crr} output channels are not a multiple of r^2 = {r * r}")
    if padding > k - 1:
        raise TransformError(name, f"padding {padding} > K - 1 = {k - 1} has no deconvolution "
                                   "equivalent without cropping")
    if mode not in ("CRD", "DCR"):
        raise TransformError(name, f"pixel shuffle mode must be 'CRD' or 'DCR', not {mode!r}")
    c_out = crr // (r * r)
    kd = r * k
    a = np.arange(kd)
    phase, tap = a % r, k - 1 - a // r
    # ch[c, a, b] = conv channel feeding deconv output channel c at taps (a, b).
    cc = np.arange(c_out)[:, None, None]
    ch = _shuffle_channel(mode, cc, phase[None, :, None], phase[None, None, :], r, c_out)
    wd = weight[ch, :, tap[None, :, None], tap[None, None, :]]      # (C_out, K_d, K_d, C_in)
    wd = np.ascontiguousarray(wd.transpose(3, 0, 1, 2))
    if bias is None:
        pb = np.zeros((c_out, r, r), dtype=weight.dtype)
    else:
        bias = np.asarray(bias)
        if bias.shape != (crr,):
            raise TransformError(name, f"bias must have shape ({crr},), not {bias.shape}")
        ii = np.arange(r)
        pb = bias[_shuffle_channel(mode, cc, ii[None, :, None], ii[None, None, :], r, c_out)]
    return Deconv(wd, pb, r, r * (k - 1 - padding))


def resize_to_deconv(weight, bias=None, *, r: int, padding: int, mode: str = "nearest",
                     name: str = "resize conv") -> Deconv:
    """Weight convolution: nearest upsample ``r`` + conv ``(C_out, C_in, K, K)`` ->
    deconvolution with ``K_d = K + r - 1``, ``S = r``, ``P_d = K - 1 - P``;
    ``W_d[i, o] = rot180(W[o, i]) * ones(r, r)`` (full 2-D convolution).

    Raises
    ------
    TransformError
        for a resize mode other than nearest (bilinear/bicubic are not exactly a
        deconvolution), a non-square kernel, padding beyond K - 1, NaN/inf.
    """
    name = name or "resize conv"
    if mode != "nearest":
        raise TransformError(name, f"resize mode {mode!r} is not exactly a deconvolution "
                                   "(only 'nearest' is)")
    weight = _check_kernel(name, weight, "conv")
    r = _check_int(name, "scale factor r", r, 1)
    padding = _check_int(name, "padding", padding, 0)
    check_finite(name, weight=weight, bias=bias)
    c_out, c_in, k, _ = weight.shape
    if padding > k - 1:
        raise TransformError(name, f"padding {padding} > K - 1 = {k - 1} has no deconvolution "
                                   "equivalent without cropping")
    kd = k + r - 1
    rot = weight[:, :, ::-1, ::-1]
    acc_dtype = np.int64 if np.issubdtype(weight.dtype, np.integer) else np.float64
    wd = np.zeros((c_out, c_in, kd, kd), dtype=acc_dtype)
    for dy in range(r):
        for dx in range(r):
            wd[:, :, dy:dy + k, dx:dx + k] += rot
    wd = np.ascontiguousarray(wd.transpose(1, 0, 2, 3))
    if bias is None:
        pb = np.zeros((c_out, r, r), dtype=acc_dtype)
    else:
        bias = np.asarray(bias)
        if bias.shape != (c_out,):
            raise TransformError(name, f"bias must have shape ({c_out},), not {bias.shape}")
        pb = np.broadcast_to(bias[:, None, None], (c_out, r, r)).copy()
    return Deconv(wd, pb, r, k - 1 - padding)


def deconv_to_subpixel(weight, bias=None, *, stride: int, padding: int, mode: str = "CRD",
                       name: str = "deconvolution") -> SubPixel:
    """The reverse of the weight shuffle (TDC): deconvolution -> sub-pixel convolution.

    Exists when ``P_d`` is a multiple of ``S``; a kernel whose size is not a multiple of ``S``
    is zero-padded at the end, and the sub-pixel output then has ``crop`` extra rows/columns at
    the bottom/right that must be dropped.

    Raises
    ------
    TransformError
        if ``P_d`` is not a multiple of ``S`` or is too large, non-square kernel, NaN/inf.
    """
    weight = _check_kernel(name, weight, "deconvolution")
    s = _check_int(name, "stride", stride, 1)
    pd = _check_int(name, "padding", padding, 0)
    check_finite(name, weight=weight, bias=bias)
    c_in, c_out, kd, _ = weight.shape
    if pd % s:
        raise TransformError(name, f"padding {pd} is not a multiple of the stride {s}: no "
                                   "sub-pixel convolution is exactly equivalent")
    k = -(-kd // s)
    p = k - 1 - pd // s
    if p < 0:
        raise TransformError(name, f"padding {pd} is larger than the kernel allows "
                                   f"(at most {s * (k - 1)})")
    wpad = np.zeros((c_in, c_out, k * s, k * s), dtype=weight.dtype)
    wpad[:, :, :kd, :kd] = weight
    a = np.arange(k * s)
    phase, tap = a % s, k - 1 - a // s
    wc = np.zeros((s * s * c_out, c_in, k, k), dtype=weight.dtype)
    cc = np.arange(c_out)[:, None, None]
    ch = _shuffle_channel(mode, cc, phase[None, :, None], phase[None, None, :], s, c_out)
    wc[ch, :, tap[None, :, None], tap[None, None, :]] = wpad.transpose(1, 2, 3, 0)
    pb = np.zeros((c_out, s, s)) if bias is None else np.asarray(bias)
    if pb.shape == (c_out,):
        pb = np.broadcast_to(pb[:, None, None], (c_out, s, s))
    if pb.shape != (c_out, s, s):
        raise TransformError(name, f"bias must have shape ({c_out},) or ({c_out}, {s}, {s}), "
                                   f"not {pb.shape}")
    ii = np.arange(s)
    bc = np.zeros(s * s * c_out, dtype=pb.dtype)
    bc[_shuffle_channel(mode, cc, ii[None, :, None], ii[None, None, :], s, c_out)] = pb
    return SubPixel(wc, bc, s, p, mode, k * s - kd)
