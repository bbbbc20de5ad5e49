"""Training patches with context (``deconvsr train --context``): the loss window of each patch
sees exactly what whole-image inference computes there. numpy only (no torch needed)."""

import numpy as np
import pytest

from deconvsr.sw.network import arch_layers
from deconvsr.sw.train import _batch, receptive_margin
from deconvsr.sw.zoo import load_model


def _transform(a, t):
    if t & 1:
        a = a[::-1]
    if t & 2:
        a = a[:, ::-1]
    if t & 4:
        a = a.T
    return np.ascontiguousarray(a)


@pytest.mark.parametrize("arch,r,margin", [("espcn-paper", 3, 5), ("resize-paper", 3, 5),
                                           ("edge", 2, 4), ("edge", 3, 4)])
def test_receptive_margin(arch, r, margin):
    assert receptive_margin(arch_layers(arch, r)) == margin


def _worst_window_error(net, margin, batches=6, patch=9):
    r = net.scale
    rng = np.random.default_rng(3)
    lr = rng.random((21, 25))
    hr_index = np.arange(21 * r * 25 * r, dtype=np.float32).reshape(21 * r, 25 * r)
    # the whole image's output under each of the 8 flips/rotations, by HR pixel index
    whole = []
    for t in range(8):
        out = net.forward(_transform(lr, t), clamp=False)
        lut = np.empty(out.size)
        lut[_transform(hr_index, t).astype(int).ravel()] = out.ravel()
        whole.append(lut)
    worst = 0.0
    for _ in range(batches):
        xs, ys, masks = _batch([(lr.astype(np.float32), hr_index)], rng, r, 4, patch, margin)
        for b in range(len(xs)):
            sel = masks[b, 0] > 0 if masks is not None else np.ones(ys[b, 0].shape, bool)
            assert sel.sum() == (patch * r) ** 2
            got = net.forward(xs[b, 0].astype(np.float64), clamp=False)[sel]
            pos = ys[b, 0][sel].astype(int)
            worst = max(worst, min(np.abs(lut[pos] - got).max() for lut in whole))
    return worst


def test_context_window_equals_whole_image_inference():
    net = load_model("edge-x3")
    margin = receptive_margin(net.layer_dicts())
    assert _worst_window_error(net, margin) < 1e-6
    # one pixel less context, or none, and the window's edge sees zero padding
    assert _worst_window_error(net, margin - 1) > 1e-3
    assert _worst_window_error(net, 0) > 1e-3
