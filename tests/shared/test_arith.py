"""The arithmetic contract (deconvsr/arith.py) against a Python-integer reference."""

import numpy as np
import pytest

from deconvsr.arith import DEFAULT_ARITH, ArithSpec, requantize


def rq_ref(acc: int, m: int, s: int, act_max: int) -> int:
    """Round half up, arithmetic shift, saturate: in unbounded Python integers."""
    t = acc * m + ((1 << (s - 1)) if s > 0 else 0)
    return min(max(t >> s, 0), act_max)


def test_requantize_equals_python_ints_default_spec(rng):
    n = 4000
    acc = rng.integers(DEFAULT_ARITH.acc_min, DEFAULT_ARITH.acc_max, n, endpoint=True)
    # Mix of small accumulators (to land inside 0..255) and full-range ones.
    acc[: n // 2] //= 1 << 20
    mult = rng.integers(0, DEFAULT_ARITH.mult_max, n, endpoint=True)
    shift = rng.integers(0, DEFAULT_ARITH.shift_max, n, endpoint=True)
    got = requantize(acc, mult, shift)
    expected = [rq_ref(int(a), int(m), int(s), 255) for a, m, s in zip(acc, mult, shift)]
    np.testing.assert_array_equal(got, expected)
    # The sample really covers both saturation ends and the interior.
    assert (got == 0).any() and (got == 255).any() and ((got > 0) & (got < 255)).any()


@pytest.mark.parametrize("acc, m, s, expected", [
    (5, 1, 1, 3),       # 2.5 -> 3 (half up)
    (3, 1, 1, 2),       # 1.5 -> 2
    (6, 1, 2, 2),       # 1.5 -> 2
    (5, 1, 2, 1),       # 1.25 -> 1
    (7, 1, 2, 2),       # 1.75 -> 2
    (9, 3, 2, 7),       # 27/4 = 6.75 -> 7
    (-1, 1, 1, 0),      # -0.5 -> 0 (half up, towards +inf)
    (-3, 1, 1, 0),      # -1.5 -> -1 -> saturates to 0
    (200, 1, 0, 200),   # shift 0: no rounding constant
    (255, 1, 0, 255),
    (256, 1, 0, 255),   # upper saturation
    (-1, 1, 0, 0),      # lower saturation (ReLU)
    (1 << 40, 65535, 47, 255),   # large shift: 2**40 * 65535 / 2**47 = 511.99 -> saturates
    (1 << 30, 65535, 47, 0),     # 2**30 * 65535 / 2**47 = 0.49999 -> 0
    (1 << 30, 65536 // 2, 46, 1),  # exactly 0.5 -> 1
])
def test_requantize_cases(acc, m, s, expected):
    assert requantize(acc, m, s) == expected == rq_ref(acc, m, s, 255)


def test_requantize_scalar_is_int_and_broadcasts():
    assert type(requantize(100, 3, 1)) is int
    out = requantize(np.array([[10], [20]]), np.array([1, 2, 3]), 0)
    np.testing.assert_array_equal(out, [[10, 20, 30], [20, 40, 60]])


def test_requantize_narrow_activation_saturates_at_its_max(rng):
    spec = ArithSpec(act_bits=4, acc_bits=16, mult_bits=4, shift_max=8)
    acc = rng.integers(spec.acc_min, spec.acc_max, 500, endpoint=True) // 64
    mult = rng.integers(0, spec.mult_max, 500, endpoint=True)
    shift = rng.integers(0, spec.shift_max, 500, endpoint=True)
    got = requantize(acc, mult, shift, spec)
    assert got.max() == 15
    np.testing.assert_array_equal(got, [rq_ref(int(a), int(m), int(s), 15)
                                        for a, m, s in zip(acc, mult, shift)])


def test_requantize_wide_spec_beyond_int64(rng):
    """48-bit accumulators times 24-bit multipliers need more than 63 bits."""
    spec = ArithSpec(acc_bits=48, mult_bits=24, act_bits=16, shift_max=63)
    assert spec.product_bits > 63
    acc = [spec.acc_max, spec.acc_min, 1 << 46, -(1 << 46) + 5, 123456789, 3]
    mult = [spec.mult_max, spec.mult_max, spec.mult_max, 7, 1 << 23, 1]
    for s in (0, 1, 20, 47, 63):
        got = requantize(np.array(acc), np.array(mult), s, spec)
        np.testing.assert_array_equal(got, [rq_ref(a, m, s, spec.act_max) for a, m in zip(acc, mult)])
    rnd = rng.integers(spec.acc_min, spec.acc_max, 300, endpoint=True)
    mm = rng.integers(0, spec.mult_max, 300, endpoint=True)
    ss = rng.integers(40, 64, 300)
    np.testing.assert_array_equal(requantize(rnd, mm, ss, spec),
                                  [rq_ref(int(a), int(m), int(s), spec.act_max)
                                   for a, m, s in zip(rnd, mm, ss)])


# ArithSpec validation ---------------------------------------------------------------------

@pytest.mark.parametrize("field, value, limits", [
    ("weight_bits", 1, "2..16"), ("weight_bits", 17, "2..16"),
    ("act_bits", 0, "2..16"), ("acc_bits", 15, "16..48"), ("acc_bits", 49, "16..48"),
    ("mult_bits", 0, "1..24"), ("mult_bits", 25, "1..24"),
    ("shift_max", -1, "0..63"), ("shift_max", 64, "0..63"), ("weight_bits", 8.0, "2..16"),
])
def test_spec_validation_messages(field, value, limits):
    with pytest.raises(ValueError) as err:
        ArithSpec(**{field: value})
    assert str(err.value) == f"{field} must be an integer in {limits}, not {value!r}"


def test_spec_ranges():
    s = ArithSpec(weight_bits=4, act_bits=6, acc_bits=20, mult_bits=5)
    assert (s.weight_min, s.weight_max, s.act_max) == (-8, 7, 63)
    assert (s.acc_min, s.acc_max, s.mult_max, s.product_bits) == (-(1 << 19), (1 << 19) - 1, 31, 26)


def _layer(c_in=2, c_out=3, k=3, s=2, weight=None, bias=None):
    w = np.zeros((c_in, c_out, k, k), dtype=np.int64) if weight is None else weight
    b = np.zeros((c_out, s, s), dtype=np.int64) if bias is None else bias
    return w, b, np.ones(c_out, dtype=np.int64), np.zeros(c_out, dtype=np.int64)


def test_check_layer_accepts_full_scale_within_limits():
    # 2 inputs x 4 taps of phase (0,0) at 127 x 255 = 259080 < 2**31.
    w, b, m, s = _layer(weight=np.full((2, 3, 3, 3), 127, dtype=np.int64))
    DEFAULT_ARITH.check_layer(w, b, m, s)


def test_check_layer_accumulator_overflow_message():
    spec = ArithSpec(acc_bits=16)
    w, b, m, s = _layer(c_in=1, c_out=1, k=2, weight=np.full((1, 1, 2, 2), 127, dtype=np.int64))
    spec.check_layer(w, b, m, s)                 # 127 * 255 = 32385 <= 32767
    b = b + 383                                  # 32768
    with pytest.raises(ValueError) as err:
        spec.check_layer(w, b, m, s, name="L3")
    assert str(err.value) == ("L3: accumulator can reach 32768, beyond the 16-bit limit 32767 "
                              "(K=2, C_in=1)")
    # Negative side: -128 * 255 = -32640, bias -129 -> -32769 < -32768.
    w = np.full((1, 1, 2, 2), -128, dtype=np.int64)
    spec.check_layer(w, np.full((1, 2, 2), -128), m, s)
    with pytest.raises(ValueError, match="accumulator can reach 32768, beyond the 16-bit limit"):
        spec.check_layer(w, np.full((1, 2, 2), -129), m, s)


def test_check_layer_pairs_any_bias_phase_with_any_kernel_phase():
    """With P_d mod S != 0 an output's bias phase (y mod S) differs from its kernel phase
    ((y + P_d) mod S), so the worst case must not assume they are the same phase."""
    spec = ArithSpec(acc_bits=16)
    w = np.zeros((1, 1, 2, 2), dtype=np.int64)
    w[0, 0, 0, 0] = 127                          # only kernel phase (0, 0): 32385
    b = np.zeros((1, 2, 2), dtype=np.int64)
    b[0, 1, 1] = 1000                            # bias phase (1, 1); reached with P_d = 1
    m, s = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError, match="accumulator can reach 33385"):
        spec.check_layer(w, b, m, s)


@pytest.mark.parametrize("field, value, message", [
    ("weight", 128, "L: weight value 128 is outside -128..127"),
    ("weight", -129, "L: weight value -129 is outside -128..127"),
    ("bias", 1 << 31, "L: bias value 2147483648 is outside -2147483648..2147483647"),
    ("mult", 65536, "L: mult value 65536 is outside 0..65535"),
    ("mult", -1, "L: mult value -1 is outside 0..65535"),
    ("shift", 48, "L: shift value 48 is outside 0..47"),
])
def test_check_layer_range_messages(field, value, message):
    w, b, m, s = _layer()
    arrays = dict(weight=w, bias=b, mult=m, shift=s)
    arrays[field] = arrays[field].copy()
    arrays[field].flat[1] = value
    with pytest.raises(ValueError) as err:
        DEFAULT_ARITH.check_layer(arrays["weight"], arrays["bias"], arrays["mult"],
                                  arrays["shift"], name="L")
    assert str(err.value) == message


def test_check_layer_shape_messages():
    w, b, m, s = _layer()
    with pytest.raises(ValueError, match=r"L: weight must have shape \(C_in, C_out, K, K\), not \(3, 3, 3\)"):
        DEFAULT_ARITH.check_layer(w[0], b, m, s, name="L")
    with pytest.raises(ValueError, match=r"L: bias must have shape \(3, S, S\), not \(3, 2, 1\)"):
        DEFAULT_ARITH.check_layer(w, b[:, :, :1], m, s, name="L")
    with pytest.raises(ValueError, match=r"L: shift must have shape \(3,\), not \(2,\)"):
        DEFAULT_ARITH.check_layer(w, b, m, s[:2], name="L")
