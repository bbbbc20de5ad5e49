"""The arithmetic contract: the one definition of integer arithmetic that the gateware, the
bit-exact integer model and the quantiser share.

Every layer of a network is a deconvolution (``ConvTranspose2d`` semantics; a stride-1
deconvolution with a rotated kernel is an ordinary convolution) computed as:

1. **Operands.** Activations are unsigned ``act_bits`` integers (0..255 for 8 bits, zero point
   0). Weights are signed ``weight_bits`` integers (-128..127). Products are exact.
2. **Accumulation.** ``acc = bias[o, y mod S, x mod S] + sum(x * w)`` in signed integers of
   ``acc_bits``. The accumulator never wraps: :meth:`ArithSpec.check_layer` rejects any layer
   whose worst case could overflow, so the sum is exact.
3. **Requantisation**, per output channel ``o`` with multiplier ``m`` (unsigned, ``mult_bits``)
   and shift ``s`` (``shift_min``..``shift_max``, ``shift_min`` 0 by default)::

       t = acc * m + (1 << (s - 1) if s > 0 else 0)     # exact, signed
       q = t >> s                                       # arithmetic shift = floor division
       y = min(max(q, 0), 2**act_bits - 1)              # saturate; the 0 bound is the ReLU

   Rounding is therefore "round half up" (towards +infinity) and saturation happens at both
   ends. Hidden layers of the supported networks are followed by ReLU, which is exactly the
   lower saturation bound; the last layer's output is an image, saturated to 0..255.

The periodic bias (shape ``(C_out, S, S)``) is indexed by the output pixel's phase
``(y mod S, x mod S)``; a per-channel bias is the special case of all phases equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ArithSpec", "DEFAULT_ARITH", "requantize"]


@dataclass(frozen=True)
class ArithSpec:
    """Widths of the integer datapath.

    Raises
    ------
    ValueError
        if a width is outside what the datapath supports.
    """

    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: int = 32
    mult_bits: int = 16
    shift_max: int = 47
    #: the smallest shift the datapath takes (a requantiser in logic needs 15: it drops the
    #: product's low 14 bits as it multiplies); the quantiser refuses a scale that needs less
    shift_min: int = 0

    def __post_init__(self):
        for name, lo, hi in (("weight_bits", 2, 16), ("act_bits", 2, 16),
                             ("acc_bits", 16, 48), ("mult_bits", 1, 24),
                             ("shift_max", 0, 63), ("shift_min", 0, self.shift_max)):
            value = getattr(self, name)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")

    @property
    def fits_serial_requant(self) -> bool:
        """Whether both partial products of the requantiser multiply fit one signed 16 x 16
        multiplier (the serial requantiser of small FPGAs): ``acc_bits <= 30``,
        ``mult_bits <= 15``."""
        return self.acc_bits <= 30 and self.mult_bits <= 15

    # Ranges ---------------------------------------------------------------------------------
    @property
    def act_max(self) -> int:
        return (1 << self.act_bits) - 1

    @property
    def weight_min(self) -> int:
        return -(1 << (self.weight_bits - 1))

    @property
    def weight_max(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def acc_min(self) -> int:
        return -(1 << (self.acc_bits - 1))

    @property
    def acc_max(self) -> int:
        return (1 << (self.acc_bits - 1)) - 1

    @property
    def mult_max(self) -> int:
        return (1 << self.mult_bits) - 1

    @property
    def product_bits(self) -> int:
        """Width of ``acc * m`` plus the rounding constant (signed)."""
        return self.acc_bits + self.mult_bits + 1

    # Validation -----------------------------------------------------------------------------
    def check_layer(self, weight, bias, mult, shift, *, name: str = "layer") -> None:
        """Check that a quantised layer fits the datapath.

        ``weight`` is the deconvolution kernel ``(C_in, C_out, K, K)``, ``bias`` the periodic
        bias ``(C_out, S, S)``, ``mult`` and ``shift`` have shape ``(C_out,)``.

        Raises
        ------
        ValueError
            naming ``name``, the offending field, its value and the limit.
        """
        weight = np.asarray(weight)
        bias = np.asarray(bias)
        mult = np.asarray(mult)
        shift = np.asarray(shift)
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"{name}: weight must have shape (C_in, C_out, K, K), not {weight.shape}")
        c_out = weight.shape[1]
        if bias.ndim != 3 or bias.shape[0] != c_out or bias.shape[1] != bias.shape[2]:
            raise ValueError(f"{name}: bias must have shape ({c_out}, S, S), not {bias.shape}")
        for field, arr in (("mult", mult), ("shift", shift)):
            if arr.shape != (c_out,):
                raise ValueError(f"{name}: {field} must have shape ({c_out},), not {arr.shape}")
        for field, arr, lo, hi in (("weight", weight, self.weight_min, self.weight_max),
                                   ("bias", bias, self.acc_min, self.acc_max),
                                   ("mult", mult, 0, self.mult_max),
                                   ("shift", shift, self.shift_min, self.shift_max)):
            if arr.size and (arr.min() < lo or arr.max() > hi):
                bad = arr.min() if arr.min() < lo else arr.max()
                raise ValueError(f"{name}: {field} value {int(bad)} is outside {lo}..{hi}")
        # Worst case of the accumulator: every tap of a phase at full-scale activation. The
        # bias phase is y mod S but the kernel phase is (y + P_d) mod S, so (without P_d) any
        # bias phase may meet any kernel phase: take each channel's extreme bias.
        stride = bias.shape[1]
        k = weight.shape[2]
        worst = 0
        b_hi = np.maximum(bias.astype(np.int64).max(axis=(1, 2), initial=0), 0)
        b_lo = np.minimum(bias.astype(np.int64).min(axis=(1, 2), initial=0), 0)
        for fy in range(stride):
            for fx in range(stride):
                taps = weight[:, :, fy::stride, fx::stride].astype(np.int64)
                pos = np.clip(taps, 0, None).sum(axis=(0, 2, 3)) * self.act_max
                neg = np.clip(taps, None, 0).sum(axis=(0, 2, 3)) * self.act_max
                worst = max(worst, int((pos + b_hi).max(initial=0)),
                            int(-(neg + b_lo).min(initial=0)) - 1)
        if worst > self.acc_max:
            raise ValueError(f"{name}: accumulator can reach {worst}, beyond the "
                             f"{self.acc_bits}-bit limit {self.acc_max} (K={k}, C_in={weight.shape[0]})")


DEFAULT_ARITH = ArithSpec()


def requantize(acc, mult, shift, spec: ArithSpec = DEFAULT_ARITH):
    """Requantise accumulators (any integer array or int) to activations, as the gateware does.

    ``mult`` and ``shift`` broadcast against ``acc``. Returns ``uint8``-valued ``int64`` arrays
    (or an ``int`` for scalar input). Computed in Python integers where int64 could overflow.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    rnd = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    # |acc| < 2**47 and m < 2**24 would overflow int64 in general; within the default spec
    # (32-bit acc, 16-bit m) the product fits in 49 bits, so int64 is exact. Guard anyway.
    if spec.product_bits > 63:
        t = np.vectorize(lambda a, m, r: a * m + r, otypes=[object])(acc, mult, rnd)
        q = np.vectorize(lambda t_, s: min(max(t_ >> s, -1), spec.act_max + 1),  # fit int64
                         otypes=[object])(t, shift).astype(np.int64)
    else:
        q = np.right_shift(acc * mult + rnd, shift)
    out = np.clip(q, 0, spec.act_max)
    return int(out) if out.ndim == 0 else out
