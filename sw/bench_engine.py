"""``deconvsr bench engine``: run the paper's network (and the edge network) on the simulated RTL
and report, per layer and for the whole frame, the measured cycles, useful MACs, utilisation
``useful / (P x cycles)``, memory traffic and the simulation speed.

Also the quantised test networks used by the engine tests: random-but-valid int8 weights with
a requantisation calibrated on the input so that outputs spread over 0..255.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..spec import SPECS, EngineSpec
from .intmodel import QLayer, layer_accumulators, run_layer

__all__ = ["random_qlayer", "calibrated_network", "PAPER_ARCH", "EDGE_ARCH", "camera_tile",
           "bench", "register"]

#: (C_in, C_out, K_d, S, P_d) of each layer, as deconvolutions. Feature layers: a 'same'
#: convolution K, pad p is a stride-1 deconvolution K_d = K, P_d = K - 1 - p.
PAPER_ARCH = [(1, 64, 5, 1, 2), (64, 64, 3, 1, 1), (64, 32, 3, 1, 1), (32, 1, 9, 3, 3)]
EDGE_ARCH = [(1, 16, 5, 1, 2), (16, 16, 3, 1, 1), (16, 4, 3, 1, 1)][:2] + [(16, 1, 6, 2, 2)]


def random_qlayer(rng, c_in, c_out, k, s, pd, *, periodic=True, x=None, name="layer",
                  target=96.0, wmax=127):
    """A layer with random int8 weights and bias; if ``x`` (a sample input) is given, mult and
    shift are chosen so that the accumulators' spread maps to about ``target``."""
    weight = rng.integers(-wmax - 1, wmax + 1, size=(c_in, c_out, k, k))
    bshape = (c_out, s, s) if periodic else (c_out, 1, 1)
    bias = np.broadcast_to(rng.integers(-2000, 2000, size=bshape), (c_out, s, s)).copy()
    mult = rng.integers(1 << 10, 1 << 15, size=c_out)
    shift = np.full(c_out, 20)
    layer = QLayer(weight, bias, mult, shift, s, pd, name=name)
    if x is not None:
        acc = layer_accumulators(x, layer).astype(np.float64)
        spread = acc.reshape(c_out, -1).std(axis=1) + 1.0
        # (spread * mult) >> shift ~ target
        shift = np.clip(np.round(np.log2(spread * mult / target)), 0, 47).astype(np.int64)
        bias = bias + np.round((spread * 0.5)[:, None, None]).astype(np.int64)
        layer = QLayer(weight, bias, mult, shift, s, pd, name=name)
    return layer


def calibrated_network(rng, arch, x, *, prefix="L"):
    """Layers for ``arch`` calibrated layer by layer on input ``x`` (C, H, W)."""
    layers = []
    for i, (ci, co, k, s, pd) in enumerate(arch):
        layer = random_qlayer(rng, ci, co, k, s, pd, x=x, name=f"{prefix}{i + 1}",
                              wmax=127 if ci * k * k < 4096 else 31)
        layers.append(layer)
        x = run_layer(x, layer)
    return layers


def camera_tile(size: int, offset=(120, 200)) -> np.ndarray:
    """A ``size`` x ``size`` crop of skimage's camera (uint8, (1, H, W)); a deterministic
    synthetic pattern if scikit-image is missing."""
    try:
        from skimage import data
        img = data.camera()
        y, x = offset
        return img[y:y + size, x:x + size][None].astype(np.uint8)
    except ImportError:  # pragma: no cover
        yy, xx = np.mgrid[:size, :size]
        return ((yy * 7 + xx * 13 + (yy * xx) % 31) % 256).astype(np.uint8)[None]
