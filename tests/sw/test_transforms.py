"""Kernel transforms (sw/model/transforms.py): each transformed deconvolution equals the original
operator in float64, and each refusal raises TransformError with a specific message."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deconvsr.sw.golden import algorithms as al
from deconvsr.sw.golden import reference as ref
from deconvsr.sw.model.transforms import (TransformError, deconv_to_subpixel, resize_to_deconv,
                                    subpixel_to_deconv)

SETTINGS = settings(max_examples=40, deadline=None)
TOL = dict(rtol=0, atol=1e-9)


@st.composite
def conv_cases(draw):
    """(C_in, C_out, K, r, P, H, W, seed) with a valid padding P <= K - 1."""
    c_in, c_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k, r = draw(st.integers(1, 7)), draw(st.integers(1, 4))
    p = draw(st.integers(0, k - 1))
    h_min = max(1, k - 2 * p)                  # conv output at least 1 x 1
    h, w = draw(st.integers(h_min, h_min + 4)), draw(st.integers(h_min, h_min + 4))
    return c_in, c_out, k, r, p, h, w, draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(conv_cases(), st.sampled_from(["CRD", "DCR"]), st.booleans())
def test_subpixel_to_deconv_is_exact(case, mode, with_bias):
    c_in, c_out, k, r, p, h, w, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c_in, h, w))
    wc = rng.standard_normal((r * r * c_out, c_in, k, k))
    bc = rng.standard_normal(r * r * c_out) if with_bias else None
    expected = ref.pixel_shuffle(ref.conv2d(x, wc, p, bc), r, mode)
    d = subpixel_to_deconv(wc, bc, r=r, padding=p, mode=mode)
    assert (d.k, d.stride, d.padding) == (r * k, r, r * (k - 1 - p))
    assert d.weight.size == wc.size                    # a permutation: same number of weights
    np.testing.assert_allclose(ref.deconv2d(x, d.weight, d.stride, d.padding, d.bias), expected, **TOL)
    # The engine's own loop order gives the same result.
    np.testing.assert_allclose(al.revd2(x, d.weight, d.stride, d.padding, d.bias), expected, **TOL)


@SETTINGS
@given(conv_cases(), st.booleans())
def test_resize_to_deconv_is_exact(case, with_bias):
    c_in, c_out, k, r, p, h, w, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c_in, h, w))
    wc = rng.standard_normal((c_out, c_in, k, k))
    b = rng.standard_normal(c_out) if with_bias else None
    expected = ref.conv2d(ref.nearest_upsample(x, r), wc, p, b)
    d = resize_to_deconv(wc, b, r=r, padding=p)
    assert (d.k, d.stride, d.padding) == (k + r - 1, r, k - 1 - p)
    assert not d.bias_is_periodic
    np.testing.assert_allclose(ref.deconv2d(x, d.weight, d.stride, d.padding, d.bias), expected, **TOL)
    np.testing.assert_allclose(al.revd2(x, d.weight, d.stride, d.padding, d.bias), expected, **TOL)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 7),
       st.integers(0, 3), st.integers(1, 5), st.integers(1, 5), st.sampled_from(["CRD", "DCR"]),
       st.sampled_from(["none", "channel", "periodic"]), st.integers(0, 2**32 - 1))
def test_deconv_to_subpixel_is_exact(c_in, c_out, s, k_taps, pq, h, w, mode, bias_kind, seed):
    """Reverse: a deconvolution with P_d = S q (any K_d) equals conv + shuffle + crop."""
    kd = k_taps if k_taps >= s else s                  # keep K_d >= S for a usable padding range
    k = -(-kd // s)
    pd = s * min(pq, k - 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c_in, h, w))
    wd = rng.standard_normal((c_in, c_out, kd, kd))
    bias = {"none": None, "channel": rng.standard_normal(c_out),
            "periodic": rng.standard_normal((c_out, s, s))}[bias_kind]
    h_out = ref.deconv_out_size(h, kd, s, pd)
    w_out = ref.deconv_out_size(w, kd, s, pd)
    if h_out < 1 or w_out < 1:
        return
    expected = ref.deconv2d(x, wd, s, pd, bias)
    sp = deconv_to_subpixel(wd, bias, stride=s, padding=pd, mode=mode)
    got = ref.pixel_shuffle(ref.conv2d(x, sp.weight, sp.padding, sp.bias), sp.r, sp.mode)
    assert sp.crop == k * s - kd
    assert got.shape == (c_out, h_out + sp.crop, w_out + sp.crop)
    np.testing.assert_allclose(got[:, :h_out, :w_out], expected, **TOL)


def test_subpixel_roundtrip_is_identity(rng):
    """deconv_to_subpixel(subpixel_to_deconv(layer)) gives back the original weights exactly."""
    for mode in ("CRD", "DCR"):
        wc = rng.standard_normal((9 * 2, 3, 3, 3))
        bc = rng.standard_normal(9 * 2)
        d = subpixel_to_deconv(wc, bc, r=3, padding=1, mode=mode)
        sp = deconv_to_subpixel(d.weight, d.bias, stride=3, padding=d.padding, mode=mode)
        np.testing.assert_array_equal(sp.weight, wc)
        np.testing.assert_array_equal(sp.bias, bc)
        assert (sp.r, sp.padding, sp.crop) == (3, 1, 0)


def test_subpixel_bias_is_periodic_by_output_phase():
    """Conv bias channel r^2 c + r i + j (CRD) lands at output phase (i, j) of channel c."""
    r, c_out = 2, 2
    wc = np.zeros((r * r * c_out, 1, 3, 3))
    bc = np.arange(r * r * c_out, dtype=float)
    d = subpixel_to_deconv(wc, bc, r=r, padding=1)
    assert d.bias[1, 1, 0] == bc[4 * 1 + 2 * 1 + 0]
    assert d.bias_is_periodic
    dd = subpixel_to_deconv(wc, bc, r=r, padding=1, mode="DCR")
    assert dd.bias[1, 1, 0] == bc[(2 * 1 + 0) * c_out + 1]


def test_resize_weights_grow_as_sums_in_integers():
    """Integer kernels stay integers; a tap sums up to min(r, K)^2 weights."""
    wc = np.full((1, 1, 3, 3), 100, dtype=np.int64)
    d = resize_to_deconv(wc, None, r=3, padding=1)
    assert d.weight.dtype == np.int64
    assert d.weight.max() == 9 * 100 and d.weight.min() == 100


# Refusals --------------------------------------------------------------------------------

def _msg(fn, *args, **kwargs):
    with pytest.raises(TransformError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_resize_bilinear_refused():
    msg = _msg(resize_to_deconv, np.zeros((1, 1, 3, 3)), r=2, padding=1, mode="bilinear",
               name="up1")
    assert msg == "up1: resize mode 'bilinear' is not exactly a deconvolution (only 'nearest' is)"


def test_non_square_kernel_refused():
    for fn, kw in ((subpixel_to_deconv, dict(r=2, padding=0)),
                   (resize_to_deconv, dict(r=2, padding=0)),
                   (deconv_to_subpixel, dict(stride=2, padding=0))):
        msg = _msg(fn, np.zeros((4, 1, 3, 2)), name="L", **kw)
        assert msg == "L: non-square kernel 3x2 is not supported"


def test_channels_not_multiple_of_r2_refused():
    msg = _msg(subpixel_to_deconv, np.zeros((8, 1, 3, 3)), r=3, padding=1, name="sp")
    assert msg == "sp: 8 output channels are not a multiple of r^2 = 9"


@pytest.mark.parametrize("fn", [subpixel_to_deconv, resize_to_deconv])
def test_padding_too_large_refused(fn):
    msg = _msg(fn, np.zeros((4, 1, 3, 3)), r=2, padding=3, name="c")
    assert msg == "c: padding 3 > K - 1 = 2 has no deconvolution equivalent without cropping"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn, kw", [(subpixel_to_deconv, dict(r=2, padding=1)),
                                    (resize_to_deconv, dict(r=2, padding=1)),
                                    (deconv_to_subpixel, dict(stride=2, padding=2))])
def test_non_finite_weights_and_bias_refused(fn, kw, bad):
    w = np.zeros((4, 4, 4, 4))
    w[1, 2, 3, 0] = bad
    assert _msg(fn, w, name="n", **kw) == "n: weight contains NaN or infinity"
    b = np.zeros(4)
    b[3] = bad
    assert _msg(fn, np.zeros((4, 4, 4, 4)), b, name="n", **kw) == "n: bias contains NaN or infinity"


def test_reverse_padding_not_multiple_of_stride_refused():
    msg = _msg(deconv_to_subpixel, np.zeros((1, 1, 9, 9)), stride=3, padding=4, name="d")
    assert msg == ("d: padding 4 is not a multiple of the stride 3: no sub-pixel convolution "
                   "is exactly equivalent")


def test_reverse_padding_too_large_refused():
    msg = _msg(deconv_to_subpixel, np.zeros((1, 1, 6, 6)), stride=3, padding=6, name="d")
    assert msg == "d: padding 6 is larger than the kernel allows (at most 3)"


@pytest.mark.parametrize("fn, kw, field", [
    (subpixel_to_deconv, dict(r=0, padding=0), "upscale factor r must be an integer >= 1, not 0"),
    (resize_to_deconv, dict(r=2, padding=-1), "padding must be an integer >= 0, not -1"),
    (deconv_to_subpixel, dict(stride=2.0, padding=0), "stride must be an integer >= 1, not 2.0"),
    (subpixel_to_deconv, dict(r=2, padding=0, mode="XYZ"),
     "pixel shuffle mode must be 'CRD' or 'DCR', not 'XYZ'"),
])
def test_parameter_messages(fn, kw, field):
    assert _msg(fn, np.zeros((4, 1, 2, 2)), name="q", **kw) == f"q: {field}"


def test_bias_shape_refused():
    assert _msg(subpixel_to_deconv, np.zeros((4, 1, 2, 2)), np.zeros(3), r=2, padding=0,
                name="b") == "b: bias must have shape (4,), not (3,)"
    assert _msg(deconv_to_subpixel, np.zeros((1, 2, 4, 4)), np.zeros((2, 3, 3)), stride=2,
                padding=0, name="b") == "b: bias must have shape (2,) or (2, 2, 2), not (2, 3, 3)"


def test_transform_error_is_value_error_with_fields():
    with pytest.raises(ValueError) as err:
        resize_to_deconv(np.zeros((1, 1, 3, 3)), r=2, padding=1, mode="bicubic", name="z")
    assert isinstance(err.value, TransformError)
    assert err.value.layer == "z" and "bicubic" in err.value.reason
