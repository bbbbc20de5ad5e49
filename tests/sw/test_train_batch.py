"""Training patches with context (``deconvsr train --context``): the loss window of each patch
sees exactly what whole-image inference computes there. numpy only (no torch needed)."""

import numpy as np
import pytest

from deconvsr.sw.model.network import arch_layers
from deconvsr.sw.model.train import _batch, receptive_margin
from deconvsr.sw.model.zoo import load_model


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


def test_fake_quant_forward_is_the_int8_model():
    """Quantisation-aware training rounds as the quantiser does: its forward pass is the
    int8 model's output to within rounding (the float network is much farther away)."""
    torch = pytest.importorskip("torch")
    from skimage import data

    from deconvsr.sw.host.imaging import crop_to_multiple, degrade, rgb_to_ycbcr, to_u8
    from deconvsr.sw.model.quantize import quantize, run_quantized
    from deconvsr.sw.model.train import _load_weights, build_torch_model, fake_quant_forward

    torch.set_num_threads(1)
    net = load_model("edge-x2")
    layers = net.layer_dicts()
    model = build_torch_model(layers)
    _load_weights(torch, model, layers, net)
    y = crop_to_multiple(to_u8(rgb_to_ycbcr(data.astronaut()[:160, :160])[..., 0]), 2)
    lr = degrade(y, 2)
    x = torch.from_numpy(lr.astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        fl = np.clip(np.rint(model(x).numpy()[0, 0] * 255), 0, 255)
        fq = fake_quant_forward(torch, model, layers, net.meta["calibration"], x)
        fq = np.clip(np.rint(fq.numpy()[0, 0] * 255), 0, 255)
    q = run_quantized(quantize(net), lr).astype(float)
    rms = lambda a: float(np.sqrt(((a - q) ** 2).mean()))   # noqa: E731
    assert rms(fq) < 0.25 < 0.5 < rms(fl)
