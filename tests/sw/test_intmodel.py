"""The bit-exact integer model (sw/golden/intmodel.py) against a straightforward int64 reference
written here (integer loops, no floating point anywhere)."""

import numpy as np
import pytest

from deconvsr.arith import ArithSpec
from deconvsr.sw.golden.intmodel import QLayer, layer_accumulators, run_layer, run_network


def acc_int64(x, weight, stride, padding, bias):
    """y[o, S h + a - P, S w + b - P] += x[i, h, w] W[i, o, a, b]; + bias[o, y % S, x % S]."""
    x = np.asarray(x, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.int64)
    c_in, h, w = x.shape
    _, c_out, k, _ = weight.shape
    s, p = stride, padding
    full = np.zeros((c_out, (h - 1) * s + k, (w - 1) * s + k), dtype=np.int64)
    for i in range(c_in):
        for hh in range(h):
            for ww in range(w):
                full[:, s * hh:s * hh + k, s * ww:s * ww + k] += int(x[i, hh, ww]) * weight[i]
    h_out, w_out = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
    out = full[:, p:p + h_out, p:p + w_out].copy()
    for o in range(c_out):
        for y in range(h_out):
            for xx in range(w_out):
                out[o, y, xx] += int(bias[o, y % s, xx % s])
    return out


def requant_int(acc, mult, shift, act_max=255):
    out = np.empty(acc.shape, dtype=np.int64)
    for (o, y, xx), a in np.ndenumerate(acc):
        m, s = int(mult[o]), int(shift[o])
        t = int(a) * m + ((1 << (s - 1)) if s else 0)
        out[o, y, xx] = min(max(t >> s, 0), act_max)
    return out


def random_layer(rng, c_in, c_out, k, s, p, bias_kind, shift):
    weight = rng.integers(-128, 128, (c_in, c_out, k, k))
    if bias_kind == "channel":
        bias = np.broadcast_to(rng.integers(-20000, 20000, (c_out, 1, 1)), (c_out, s, s)).copy()
    else:
        bias = rng.integers(-20000, 20000, (c_out, s, s))
    # Scale so that typical accumulators map around the 0..255 range (and beyond it).
    mult = rng.integers(1, 1 << min(16, 8 + shift), c_out) if shift else rng.integers(0, 3, c_out)
    return QLayer(weight, bias, mult, np.full(c_out, shift), s, p, name="rand")


@pytest.mark.parametrize("bias_kind", ["channel", "periodic"])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_run_layer_equals_int64_reference(rng, stride, bias_kind):
    seen = set()
    for shift in (0, 8, 16, 24, 47):
        for _ in range(3):
            c_in, c_out = rng.integers(1, 5, 2)
            k = int(rng.integers(1, 8))
            h, w = rng.integers(1, 6, 2)
            p = int(rng.integers(0, ((min(h, w) - 1) * stride + k - 1) // 2 + 1))
            layer = random_layer(rng, c_in, c_out, k, stride, p, bias_kind, shift)
            x = rng.integers(0, 256, (c_in, h, w))
            acc = acc_int64(x, layer.weight, stride, p, layer.bias)
            got_acc = layer_accumulators(x, layer)
            assert got_acc.dtype == np.int64
            np.testing.assert_array_equal(got_acc, acc)
            got = run_layer(x, layer)
            assert got.dtype == np.uint8 and got.shape == acc.shape
            expected = requant_int(acc, layer.mult, layer.shift)
            np.testing.assert_array_equal(got, expected)
            seen |= {"zero" if v == 0 else "full" if v == 255 else "mid" for v in expected.flat}
    assert seen == {"zero", "full", "mid"}      # both saturation ends and the interior


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_every_output_phase_gets_its_bias_and_taps(stride):
    """Zero input: the output is requant(bias[o, y % S, x % S]). One pixel through one tap of
    each kernel phase: it lands at (S h + a - P, S w + b - P) with bias added there only.
    Every padding 0..K-1, so P mod S takes every value."""
    k = 2 * stride + 1
    for padding in range(k):
        _check_phases(stride, padding, k)


def _check_phases(stride, padding, k):
    c_out = 2
    bias = (np.arange(c_out * stride * stride).reshape(c_out, stride, stride) * 7) % 256
    mult, shift = np.ones(c_out, dtype=np.int64), np.zeros(c_out, dtype=np.int64)
    h = w = 4
    zero_layer = QLayer(np.zeros((1, c_out, k, k), dtype=np.int64), bias, mult, shift, stride,
                        padding)
    out = run_layer(np.zeros((1, h, w), dtype=np.uint8), zero_layer)
    yy, xx = np.indices(out.shape[1:])
    np.testing.assert_array_equal(out, bias[:, yy % stride, xx % stride])
    for a in range(stride):
        for b in range(stride):
            weight = np.zeros((1, c_out, k, k), dtype=np.int64)
            weight[0, 1, a + stride, b] = 3               # a tap of kernel phase (a, b)
            layer = QLayer(weight, bias, mult, shift, stride, padding)
            x = np.zeros((1, h, w), dtype=np.uint8)
            x[0, 2, 1] = 20
            got = run_layer(x, layer).astype(np.int64)
            expected = bias[:, yy % stride, xx % stride].copy()
            oy, ox = stride * 2 + a + stride - padding, stride * 1 + b - padding
            if 0 <= oy < out.shape[1] and 0 <= ox < out.shape[2]:
                expected[1, oy, ox] = min(expected[1, oy, ox] + 60, 255)
            np.testing.assert_array_equal(got, expected)


def test_full_scale_accumulator_at_the_limit_is_exact():
    """The largest accumulator the 32-bit contract allows is computed exactly (float64 BLAS
    inside the model must not round)."""
    c_in, k = 64, 9
    weight = np.full((c_in, 1, k, k), 127, dtype=np.int64)
    pos = c_in * 9 * 127 * 255                           # taps of one phase at stride 3
    bias = np.full((1, 3, 3), (1 << 31) - 1 - pos, dtype=np.int64)
    layer = QLayer(weight, bias, np.array([65535]), np.array([47]), 3, 3)
    x = np.full((c_in, 5, 5), 255, dtype=np.uint8)
    acc = layer_accumulators(x, layer)
    assert acc.max() == (1 << 31) - 1
    np.testing.assert_array_equal(acc, acc_int64(x, weight, 3, 3, bias))
    np.testing.assert_array_equal(run_layer(x, layer), requant_int(acc, [65535], [47]))
    neg = QLayer(-weight, -bias - 1, np.array([1]), np.array([0]), 3, 3)
    acc = layer_accumulators(x, neg)
    assert acc.min() == -(1 << 31)
    np.testing.assert_array_equal(acc, acc_int64(x, -weight, 3, 3, -bias - 1))


def test_run_network_is_layer_composition(rng):
    l1 = random_layer(rng, 1, 4, 3, 1, 1, "channel", 8)
    l2 = random_layer(rng, 4, 1, 6, 2, 2, "periodic", 8)
    x = rng.integers(0, 256, (7, 6)).astype(np.uint8)
    mid = requant_int(acc_int64(x[None], l1.weight, 1, 1, l1.bias), l1.mult, l1.shift)
    expected = requant_int(acc_int64(mid, l2.weight, 2, 2, l2.bias), l2.mult, l2.shift)
    got = run_network(x, [l1, l2])
    assert got.shape == (1, 14, 12)
    np.testing.assert_array_equal(got, expected)


def test_narrow_spec_saturates_at_its_act_max(rng):
    spec = ArithSpec(weight_bits=4, act_bits=4, acc_bits=16, mult_bits=4, shift_max=8)
    weight = rng.integers(-8, 8, (2, 2, 4, 4))
    bias = rng.integers(-50, 50, (2, 2, 2))
    layer = QLayer(weight, bias, np.array([3, 1]), np.array([2, 0]), 2, 1, spec=spec)
    x = rng.integers(0, 16, (2, 5, 5))
    got = run_layer(x, layer)
    expected = requant_int(acc_int64(x, weight, 2, 1, bias), [3, 1], [2, 0], act_max=15)
    np.testing.assert_array_equal(got, expected)
    assert got.max() == 15
    with pytest.raises(ValueError, match=r"layer: input must be integers in 0..15"):
        run_layer(np.full((2, 3, 3), 16), layer)


# Validation messages ----------------------------------------------------------------------

def _args(**over):
    args = dict(weight=np.zeros((2, 3, 4, 4), dtype=np.int64),
                bias=np.zeros((3, 2, 2), dtype=np.int64), mult=np.ones(3, dtype=np.int64),
                shift=np.zeros(3, dtype=np.int64), stride=2, padding=1, name="conv4")
    args.update(over)
    return args


def test_qlayer_accumulator_overflow_message():
    weight = np.full((64, 1, 3, 3), 127, dtype=np.int64)
    pos = 64 * 9 * 127 * 255                                # every tap at stride 1
    bias = np.full((1, 1, 1), (1 << 31) - pos, dtype=np.int64)
    with pytest.raises(ValueError) as err:
        QLayer(weight, bias, np.ones(1, np.int64), np.zeros(1, np.int64), 1, 1, name="big")
    assert str(err.value) == ("big: accumulator can reach 2147483648, beyond the 32-bit limit "
                              "2147483647 (K=3, C_in=64)")
    QLayer(weight, bias - 1, np.ones(1, np.int64), np.zeros(1, np.int64), 1, 1, name="big")


@pytest.mark.parametrize("over, message", [
    (dict(weight=np.full((2, 3, 4, 4), 200)), "conv4: weight value 200 is outside -128..127"),
    (dict(weight=np.full((2, 3, 4, 4), -129)), "conv4: weight value -129 is outside -128..127"),
    (dict(weight=np.zeros((2, 3, 4, 4))), "conv4: weight must be an integer array, not float64"),
    (dict(stride=3), "conv4: bias shape (3, 2, 2) does not match stride 3"),
    (dict(padding=-1), "conv4: padding must be >= 0, not -1"),
    (dict(mult=np.full(3, 1 << 16)), "conv4: mult value 65536 is outside 0..65535"),
    (dict(shift=np.full(3, 48)), "conv4: shift value 48 is outside 0..47"),
])
def test_qlayer_validation_messages(over, message):
    with pytest.raises(ValueError) as err:
        QLayer(**_args(**over))
    assert str(err.value) == message


def test_run_layer_input_messages():
    layer = QLayer(**_args())
    with pytest.raises(ValueError, match=r"conv4: input must have shape \(2, H, W\), not \(3, 4, 4\)"):
        run_layer(np.zeros((3, 4, 4), dtype=np.uint8), layer)
    with pytest.raises(ValueError, match=r"conv4: input must be integers in 0..255"):
        run_layer(np.full((2, 4, 4), 256), layer)
    with pytest.raises(ValueError, match=r"conv4: input must be integers in 0..255"):
        run_layer(np.zeros((2, 4, 4)), layer)
