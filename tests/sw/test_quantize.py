"""The quantiser: scales, mult/shift, bias correction, integer model vs float."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deconvsr.arith import DEFAULT_ARITH, ArithSpec
from deconvsr.sw.golden.intmodel import QLayer
from deconvsr.sw.model.network import Network
from deconvsr.sw.model.quantize import QuantizeError, calibrate, mult_shift, quantize, run_quantized

try:
    from .test_network import random_network, real_plane
except ImportError:  # tests/ is not a package: rootdir on sys.path
    from test_network import random_network, real_plane


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-9, max_value=60000.0))
def test_mult_shift_is_the_most_precise_fit(m):
    mult, shift = mult_shift(np.array([m]))
    q, s = int(mult[0]), int(shift[0])
    assert 0 < q <= DEFAULT_ARITH.mult_max and 0 <= s <= DEFAULT_ARITH.shift_max
    assert abs(q / 2.0 ** s - m) <= 2.0 ** -(s + 1) * (1 + 1e-9)   # nearest at that shift
    # Maximal precision: one more shift bit would not fit.
    assert s == DEFAULT_ARITH.shift_max or round(m * 2.0 ** (s + 1)) > DEFAULT_ARITH.mult_max


def test_mult_shift_limits():
    with pytest.raises(QuantizeError, match="L: requantisation multiplier 7e\\+04 needs a "
                                            "shift of -1, below this datapath's shift_min 0"):
        mult_shift(np.array([70000.0]), name="L")
    mult, shift = mult_shift(np.array([0.0, 1.0]))
    assert mult[0] == 0 and mult[1] == 32768 and shift[1] == 15
    small = ArithSpec(mult_bits=8, shift_max=4)
    mult, shift = mult_shift(np.array([0.001]), small)
    assert shift[0] == 4 and mult[0] == 0
    # A requantiser in logic takes shifts from 15: multipliers below 1 only; an unused
    # channel gets the smallest shift.
    lut = ArithSpec(acc_bits=24, mult_bits=15, shift_max=31, shift_min=15)
    mult, shift = mult_shift(np.array([0.0, 0.9, 1e-6]), lut)
    assert list(shift) == [15, 15, 31] and mult[1] == round(0.9 * 2 ** 15)
    with pytest.raises(QuantizeError, match="needs a shift of 14, below this datapath's "
                                            "shift_min 15"):
        mult_shift(np.array([1.0]), lut)


def _calibrated(net, planes):
    return Network(net.layers, net.name, {"calibration": calibrate(net, planes)})


@pytest.mark.parametrize("kind,r", [("subpixel", 3), ("resize", 3), ("subpixel", 2)])
def test_integer_model_tracks_float(rng, kind, r):
    net = random_network(rng, kind, r)
    x = real_plane(36, 40)
    net = _calibrated(net, [x])
    q = quantize(net)
    assert all(isinstance(layer, QLayer) for layer in q)
    assert [layer.stride for layer in q] == [1, 1, r]
    dn = net.to_deconv()
    assert [(a.k, a.padding) for a in q] == [(d.deconv.k, d.deconv.padding) for d in dn.layers]
    x8 = np.rint(x * 255).astype(np.uint8)
    ref = net.forward(x8 / 255.0) * 255
    out = run_quantized(q, x8)
    assert out.dtype == np.uint8 and out.shape == ref.shape
    err = np.abs(out - ref)
    assert err.mean() < 0.8 and err.max() <= 6       # a few LSB at most
    # Weights use the int8 range per output channel.
    for layer in q:
        assert np.abs(layer.weight).max(axis=(0, 2, 3)).min() >= 126


def test_bias_correction_removes_the_mean_error(rng):
    net = random_network(rng, "subpixel", 2, widths=(8, 8))
    x = real_plane(48, 48)
    net = _calibrated(net, [x])
    x8 = np.rint(x * 255).astype(np.uint8)
    ref = net.forward(x8 / 255.0) * 255
    bias_err = []
    for bc in (False, True):
        out = run_quantized(quantize(net, bias_correction=bc), x8).astype(float)
        bias_err.append(abs((out - ref).mean()))
    assert bias_err[1] < bias_err[0] or bias_err[1] < 0.05


def test_resize_scales_chosen_after_the_transform(rng):
    """The weight convolution sums r^2 taps: scaling the trained kernel would overflow int8."""
    net = random_network(rng, "resize", 3)
    net = _calibrated(net, [real_plane()])
    last = quantize(net)[-1]
    w_d = net.to_deconv().layers[-1].deconv.weight
    # Folded input scales (per channel of the previous layer's output), then one weight scale.
    s_x = np.asarray(net.meta["calibration"]["act_ranges"][-1]) / 255
    w_f = w_d * s_x[:, None, None, None]
    s_w = np.abs(w_f).max() / 127
    assert np.allclose(last.weight, np.rint(w_f / s_w), atol=1)
    assert np.abs(last.weight).max() == 127
    # The summed kernel is larger than the trained one: scaling the trained one would saturate.
    assert np.abs(net.layers[-1].weight).max() * 1.5 < np.abs(w_d).max()


def test_quantize_errors(rng):
    net = random_network(rng)
    with pytest.raises(QuantizeError, match="rand: no calibrated activation ranges"):
        quantize(net)
    with pytest.raises(QuantizeError, match="rand: 1 activation ranges for 2 hidden layers"):
        quantize(net, [1.0])
    with pytest.raises(QuantizeError, match=r"layer 1 \(c1\): activation ranges must be > 0 "
                                            r"and one per output channel \(6\)"):
        quantize(net, [1.0, 0.0])
    with pytest.raises(QuantizeError, match=r"layer 0 \(c0\): activation ranges must be > 0 "
                                            r"and one per output channel \(8\)"):
        quantize(net, [[1.0] * 7, 1.0])


def test_quantize_is_deterministic(rng):
    net = _calibrated(random_network(rng), [real_plane()])
    a, b = quantize(net), quantize(net)
    for la, lb in zip(a, b):
        for f in ("weight", "bias", "mult", "shift"):
            assert np.array_equal(getattr(la, f), getattr(lb, f))


def test_calibrate_records_ranges_and_means(rng):
    net = random_network(rng)
    x = real_plane()
    cal = calibrate(net, [x], percentile=100, max_samples=10 ** 6)
    acts = net.activations(x)
    for got, a in zip(cal["act_ranges"], acts[:-1]):
        peak = a.max(axis=(1, 2))
        np.testing.assert_allclose(got, np.where(peak > 0, peak, peak.max()), atol=1e-6)
    assert cal["input_means"][0] == pytest.approx([x.mean()], rel=1e-5)
    np.testing.assert_allclose(cal["input_means"][1], acts[0].mean(axis=(1, 2)), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("stride,padding", [(1, 1), (3, 3), (2, 1)])
def test_rounding_keeps_every_phase_dc_gain(rng, stride, padding):
    from deconvsr.sw.model.quantize import round_keep_sums
    v = rng.normal(0, 20, (3, 2, 6, 6))
    q = round_keep_sums(v, stride, padding)
    assert np.all(np.abs(q - v) < 1) and np.array_equal(q, np.rint(q))
    ph = (np.arange(6) - padding) % stride
    for fy in range(stride):
        for fx in range(stride):
            sel = np.ix_(range(3), range(2), np.nonzero(ph == fy)[0], np.nonzero(ph == fx)[0])
            assert np.array_equal(q[sel].sum(axis=(2, 3)), np.rint(v[sel].sum(axis=(2, 3))))
    assert not np.array_equal(q, np.rint(v))          # plain rounding would not do it


def test_dc_preserving_rounding_and_bias_correction_help(rng):
    """The two data-free fixes for the low-frequency error of int8 weights."""
    net = random_network(rng, "subpixel", 3, widths=(8, 8))
    x = real_plane(48, 48)
    net = _calibrated(net, [x])
    x8 = np.rint(x * 255).astype(np.uint8)
    ref = net.forward(x8 / 255.0) * 255
    mse = {}
    for ks in (False, True):
        out = run_quantized(quantize(net, keep_sums=ks, bias_correction=False), x8)
        mse[ks] = np.mean((out - ref) ** 2)
    assert mse[True] < mse[False]
