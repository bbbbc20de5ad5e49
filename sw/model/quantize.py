"""Post-training quantisation of a float network into the bit-exact integer model.

Scales (real value = integer x scale):

* activations: the input is the 8-bit Y plane (scale ``1/255``); each hidden output channel
  ``c`` has scale ``s_y[c] = range[c] / act_max`` where ``range[c]`` is a calibrated activation
  range (by default the maximum, percentile 100, of that channel's float output on sample
  images, see :func:`calibrate`; clipping at the 99.999th percentile measured worse: super-
  resolution needs its peaks at edges). Per-channel scales cost nothing in the datapath (requantisation is per
  output channel already) and matter: a channel that carries the image itself through the
  network (as the "interp" initialisation of :mod:`deconvsr.sw.model.train` creates) keeps 8-bit
  precision instead of sharing a scale with channels that reach 2 or 3. The last layer's
  output scale is ``1/255``, so it emits the 8-bit image directly (saturation = clamp).
* weights: the input scales are folded into the *transformed* deconvolution kernel,
  ``W'[i, o] = W_d[i, o] s_x[i]`` (the weight convolution of a resize layer sums weights, so
  scales are chosen after the transform), then per output channel
  ``s_w[o] = max|W'[:, o]| / weight_max``, ``W_q = round(W' / s_w)``.
* bias: ``round(b / s_w[o])`` in the accumulator's units (periodic, per phase), corrected
  for the mean error of the weight rounding (bias correction, see :func:`quantize`).
* requantisation: ``M[o] = s_w[o] / s_y[o]`` approximated by ``mult / 2**shift`` with the
  largest ``shift`` that keeps ``mult`` within ``mult_bits`` (maximum precision).

Calibrated ranges are stored in the model file (``calibration.act_ranges``), so quantising a
shipped model is deterministic and needs no images.
"""

from __future__ import annotations

import math

import numpy as np

from ...arith import DEFAULT_ARITH, ArithSpec
from ..golden.intmodel import QLayer, run_network
from .network import Network, NetworkError

__all__ = ["QuantizeError", "calibrate", "quantize", "mult_shift", "run_quantized",
           "round_keep_sums",
           "DEFAULT_PERCENTILE"]

DEFAULT_PERCENTILE = 100.0


class QuantizeError(ValueError):
    """A network that cannot be quantised (missing calibration, scale out of range, ...)."""


def calibrate(network: Network, lr_planes, *, percentile: float = DEFAULT_PERCENTILE,
              max_samples: int = 200_000) -> dict:
    """Activation ranges of every hidden layer's output channels on ``lr_planes`` (float
    ``(H, W)`` in ``[0, 1]``): the ``percentile`` of each channel's values (and the maximum,
    for reference). A channel that never fires gets its layer's largest range.

    Also records the mean of every layer's input channels (``input_means``), used by
    :func:`quantize` for bias correction.

    Returns ``{"method", "percentile", "act_ranges", "act_max", "input_means"}`` (JSON-ready;
    ranges and means are lists per layer of lists per channel).
    """
    lr_planes = list(lr_planes)
    per_layer = [[] for _ in network.layers[:-1]]
    sums = [np.zeros(layer.c_in) for layer in network.layers]
    count = 0
    for plane in lr_planes:
        acts = network.activations(plane)
        ins = [np.asarray(plane, np.float64)[None]] + acts[:-1]
        for i, x in enumerate(ins):
            sums[i] += x.sum(axis=(1, 2))
        count += np.asarray(plane).size
        for i, a in enumerate(acts[:-1]):
            flat = a.reshape(a.shape[0], -1)
            step = max(1, flat.shape[1] * len(lr_planes) // max_samples)
            per_layer[i].append(flat[:, ::step])
    ranges, maxima = [], []
    for vals in per_layer:
        v = np.concatenate(vals, axis=1)
        rng = np.percentile(v, percentile, axis=1)
        rng = np.where(rng > 0, rng, rng.max() if rng.max() > 0 else 1.0)
        ranges.append([round(float(x), 6) for x in rng])
        maxima.append([round(float(x), 6) for x in v.max(axis=1)])
    means = [[round(float(v), 6) for v in s / count] for s in sums]
    return {"method": "percentile per channel", "percentile": percentile,
            "act_ranges": ranges, "act_max": maxima, "input_means": means}


def mult_shift(m_real, spec: ArithSpec = DEFAULT_ARITH, *, name: str = "layer"):
    """Per-channel ``(mult, shift)`` int arrays with ``mult / 2**shift ~= m_real``, the largest
    shift (most precision) such that ``mult <= mult_max`` and ``shift <= shift_max``.

    Raises
    ------
    QuantizeError
        if a multiplier needs more than ``mult_bits`` even at shift ``shift_min``.
    """
    m_real = np.asarray(m_real, dtype=np.float64)
    mult = np.zeros(m_real.shape, np.int64)
    shift = np.zeros(m_real.shape, np.int64)
    shift[...] = spec.shift_min         # (a channel that is always 0: any shift)
    for idx, m in np.ndenumerate(m_real):
        if not m > 0:
            continue
        # Largest s with round(m * 2**s) <= mult_max, i.e. m * 2**s < mult_max + 0.5.
        s = min(spec.shift_max, int(math.floor(math.log2((spec.mult_max + 0.5) / m))))
        q = int(round(m * 2.0 ** s))
        while q > spec.mult_max:            # rounding up across the limit
            s -= 1
            q = int(round(m * 2.0 ** s))
        if s < spec.shift_min:
            raise QuantizeError(f"{name}: requantisation multiplier {m:.4g} needs a shift of "
                                f"{s}, below this datapath's shift_min {spec.shift_min} "
                                f"(at most {spec.mult_max / 2.0 ** spec.shift_min:.4g} with "
                                f"{spec.mult_bits}-bit multipliers; activation range too "
                                f"small?)")
        mult[idx], shift[idx] = q, s
    return mult, shift


def _phase_error(err, stride, padding, means):
    """Expected accumulator error per output phase: ``sum(err * mean_x)`` over the taps that
    feed phase ``(fy, fx)`` (taps ``a`` with ``(a - P_d) mod S == fy``)."""
    k = err.shape[2]
    e = np.einsum("ioab,i->oab", err, means)            # (C_out, K, K)
    out = np.zeros((err.shape[1], stride, stride))
    ph = (np.arange(k) - padding) % stride
    for fy in range(stride):
        for fx in range(stride):
            out[:, fy, fx] = e[:, ph == fy][:, :, ph == fx].sum(axis=(1, 2))
    return out


def round_keep_sums(v: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Round ``v`` ``(C_in, C_out, K, K)`` to integers such that, for every input channel,
    output channel and output phase, the sum of the taps feeding that phase (its DC gain) is
    the float sum rounded: flip the rounding of the taps closest to the rounding boundary.
    Every weight stays within one of its float value."""
    q = np.rint(v)
    k = v.shape[2]
    ph = (np.arange(k) - padding) % stride
    for fy in range(stride):
        for fx in range(stride):
            ia, ib = np.nonzero(ph == fy)[0], np.nonzero(ph == fx)[0]
            sub_v = v[:, :, ia][:, :, :, ib].reshape(v.shape[0], v.shape[1], -1)
            sub_q = q[:, :, ia][:, :, :, ib].reshape(sub_v.shape)
            excess = np.rint(sub_q.sum(-1) - np.rint(sub_v.sum(-1))).astype(int)  # (C_in, C_out)
            frac = sub_v - sub_q                       # in [-0.5, 0.5]
            for i, o in zip(*np.nonzero(excess)):
                n = abs(excess[i, o])
                if excess[i, o] > 0:                   # rounded up too often: lower the taps
                    idx = np.argsort(frac[i, o])[:n]   # with the most negative residual
                    sub_q[i, o, idx] -= 1
                else:
                    idx = np.argsort(-frac[i, o])[:n]
                    sub_q[i, o, idx] += 1
            sub_q = sub_q.reshape(v.shape[0], v.shape[1], len(ia), len(ib))
            q[np.ix_(np.arange(v.shape[0]), np.arange(v.shape[1]), ia, ib)] = sub_q
    return q


def quantize(network: Network, act_ranges=None, spec: ArithSpec = DEFAULT_ARITH, *,
             input_means=None, bias_correction: bool = True,
             keep_sums: bool = True) -> list[QLayer]:
    """The integer model (list of :class:`QLayer`) of ``network``.

    ``act_ranges`` (one per hidden layer) default to the calibration stored in
    ``network.meta``. With ``bias_correction``, the expected error that weight rounding
    causes on each output phase (rounding error times the mean input, ``input_means`` per layer
    and channel, default from the calibration) is subtracted from the periodic bias: the first
    layer sees the image's large mean, which would otherwise shift every feature.

    Raises
    ------
    QuantizeError
        without calibration, with the wrong number of ranges, or if a layer does not fit
        ``spec``.
    """
    try:
        network.engine_check()
    except NetworkError as e:
        raise QuantizeError(str(e)) from None
    dn = network.to_deconv()
    n = len(dn.layers)
    if act_ranges is None:
        act_ranges = network.meta.get("calibration", {}).get("act_ranges")
        if act_ranges is None:
            raise QuantizeError(f"{network.name}: no calibrated activation ranges (calibrate "
                                "on sample images: quantize.calibrate)")
    if input_means is None and bias_correction:
        input_means = network.meta.get("calibration", {}).get("input_means")
    if len(act_ranges) != n - 1:
        raise QuantizeError(f"{network.name}: {len(act_ranges)} activation ranges for "
                            f"{n - 1} hidden layers")
    s_x = np.full(1, 1.0 / 255)             # per input channel: the 8-bit Y plane
    out = []
    for i, dl in enumerate(dn.layers):
        d = dl.deconv
        where = f"{network.name}: {dl.name}"
        if i < n - 1:
            rng = np.asarray(act_ranges[i], np.float64)
            if rng.ndim == 0:                 # one range for the whole layer
                rng = np.full(d.c_out, float(rng))
            if rng.shape != (d.c_out,) or not np.all(rng > 0):
                raise QuantizeError(f"{where}: activation ranges must be > 0 and one per "
                                    f"output channel ({d.c_out})")
            s_y = rng / spec.act_max
        else:
            s_y = np.full(d.c_out, 1.0 / 255)
        # Fold the input scales into the kernel: w' acts on the integer input directly.
        w = np.asarray(d.weight, np.float64) * s_x[:, None, None, None]
        b = np.asarray(d.bias, np.float64)
        maxabs = np.abs(w).max(axis=(0, 2, 3))
        # Also keep the bias within the accumulator (matters only for near-zero kernels).
        bias_need = np.abs(b).max(axis=(1, 2)) / 2.0 ** (spec.acc_bits - 3)
        s_w = np.maximum(maxabs / spec.weight_max, bias_need)
        s_w = np.where(s_w > 0, s_w, 1.0)
        v = w / s_w[None, :, None, None]
        wq = round_keep_sums(v, d.stride, d.padding) if keep_sums else np.rint(v)
        wq = np.clip(wq, spec.weight_min, spec.weight_max)
        if bias_correction and input_means is not None:
            means = np.asarray(input_means[i], np.float64)
            if means.shape != (d.c_in,):
                raise QuantizeError(f"{where}: {means.size} input means for {d.c_in} input "
                                    "channels")
            err = wq * s_w[None, :, None, None] - w
            b = b - _phase_error(err, d.stride, d.padding, means / s_x)
        bq = np.rint(b / s_w[:, None, None])
        mult, shift = mult_shift(s_w / s_y, spec, name=where)
        try:
            out.append(QLayer(wq.astype(np.int64), bq.astype(np.int64), mult, shift, d.stride,
                              d.padding, name=dl.name, spec=spec))
        except ValueError as e:
            raise QuantizeError(f"{network.name}: {e}") from None
        s_x = s_y
    return out


def run_quantized(qlayers, y_lr_u8) -> np.ndarray:
    """The integer model on an 8-bit LR Y plane: uint8 HR Y plane."""
    return run_network(np.asarray(y_lr_u8, dtype=np.uint8), qlayers)[0]
