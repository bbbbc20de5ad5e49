"""The bit-exact integer model: the specification the gateware must match bit for bit.

A network is a list of :class:`QLayer`; each is a deconvolution with integer weights, a
periodic integer bias and per-output-channel requantisation, computed exactly as
:mod:`deconvsr.arith` defines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...arith import DEFAULT_ARITH, ArithSpec, requantize
from .reference import deconv2d, deconv_out_size

__all__ = ["QLayer", "layer_accumulators", "run_layer", "run_network"]


@dataclass(frozen=True, eq=False)
class QLayer:
    """One quantised layer.

    Members
    -------
    weight : int array ``(C_in, C_out, K_d, K_d)`` (deconvolution layout)
    bias : int array ``(C_out, S, S)`` periodic bias (phase ``(y mod S, x mod S)``)
    mult, shift : int arrays ``(C_out,)``, requantisation per output channel
    stride, padding : S and P_d
    name : for messages

    Raises
    ------
    ValueError
        if the layer does not fit ``spec`` (see :meth:`ArithSpec.check_layer`).
    """

    weight: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    stride: int
    padding: int
    name: str = "layer"
    spec: ArithSpec = field(default=DEFAULT_ARITH, repr=False)

    def __post_init__(self):
        for f in ("weight", "bias", "mult", "shift"):
            arr = np.asarray(getattr(self, f))
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{self.name}: {f} must be an integer array, not {arr.dtype}")
            object.__setattr__(self, f, arr.astype(np.int64))
        if self.stride < 1 or self.bias.ndim != 3 or self.bias.shape[1] != self.stride:
            raise ValueError(f"{self.name}: bias shape {self.bias.shape} does not match stride "
                             f"{self.stride}")
        if not 0 <= self.padding:
            raise ValueError(f"{self.name}: padding must be >= 0, not {self.padding}")
        self.spec.check_layer(self.weight, self.bias, self.mult, self.shift, name=self.name)

    @property
    def c_in(self) -> int:
        return self.weight.shape[0]

    @property
    def c_out(self) -> int:
        return self.weight.shape[1]

    @property
    def k(self) -> int:
        return self.weight.shape[2]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return (deconv_out_size(h, self.k, self.stride, self.padding),
                deconv_out_size(w, self.k, self.stride, self.padding))


def _check_input(x, layer: QLayer):
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] != layer.c_in:
        raise ValueError(f"{layer.name}: input must have shape ({layer.c_in}, H, W), not {x.shape}")
    if not np.issubdtype(x.dtype, np.integer) or x.size and (x.min() < 0 or x.max() > layer.spec.act_max):
        raise ValueError(f"{layer.name}: input must be integers in 0..{layer.spec.act_max}")
    return x


def layer_accumulators(x, layer: QLayer) -> np.ndarray:
    """Exact accumulators (bias included) as int64 ``(C_out, H_out, W_out)``.

    Uses float64 BLAS: exact because :meth:`ArithSpec.check_layer` bounds every partial sum
    below 2**(acc_bits - 1) <= 2**47 < 2**53.
    """
    x = _check_input(x, layer)
    acc = deconv2d(x, layer.weight, layer.stride, layer.padding, layer.bias)
    return np.rint(acc).astype(np.int64)


def run_layer(x, layer: QLayer) -> np.ndarray:
    """One layer: accumulate, requantise, saturate. Returns ``uint8`` ``(C_out, H_out, W_out)``."""
    acc = layer_accumulators(x, layer)
    return requantize(acc, layer.mult[:, None, None], layer.shift[:, None, None],
                      layer.spec).astype(np.uint8)


def run_network(x, layers) -> np.ndarray:
    """All layers back to back. ``x`` is ``(C_in, H, W)`` or ``(H, W)`` uint8."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    for layer in layers:
        x = run_layer(x, layer)
    return x
