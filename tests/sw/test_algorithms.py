"""The five deconvolution loop orders (loop nests and vectorised paths) against each other,
against reference.deconv2d, against a single-tap oracle and against onnxruntime; plus the
loop-nest conv / pixel shuffle / nearest upsample against reference.py."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deconvsr.sw.golden import algorithms as al
from deconvsr.sw.golden import reference as ref

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def deconv_cases(draw, max_size=4, max_c=4):
    c_in = draw(st.integers(1, max_c))
    c_out = draw(st.integers(1, max_c))
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 4))
    h = draw(st.integers(1, max_size))
    w = draw(st.integers(1, max_size))
    # Largest padding that still leaves a non-empty output in both directions.
    p_max = ((min(h, w) - 1) * s + k - 1) // 2
    p = draw(st.integers(0, p_max))
    bias_kind = draw(st.sampled_from(["none", "channel", "periodic"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c_in, h, w))
    wt = rng.standard_normal((c_in, c_out, k, k))
    bias = {"none": None, "channel": rng.standard_normal(c_out),
            "periodic": rng.standard_normal((c_out, s, s))}[bias_kind]
    return x, wt, s, p, bias


@SETTINGS
@given(deconv_cases(max_size=3))
def test_loop_nests_equal_reference(case):
    x, wt, s, p, bias = case
    expected = ref.deconv2d(x, wt, s, p, bias)
    for name, fn in al.LOOP.items():
        got = fn(x, wt, s, p, bias)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=name)


@SETTINGS
@given(deconv_cases(max_size=8))
def test_vectorised_equal_reference(case):
    x, wt, s, p, bias = case
    expected = ref.deconv2d(x, wt, s, p, bias)
    for name, fn in al.FAST.items():
        got = fn(x, wt, s, p, bias)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, err_msg=name)


@SETTINGS
@given(deconv_cases(max_size=3, max_c=2), st.integers(1, 5))
def test_vectorised_equal_loop_nests_and_bands(case, band):
    """Each vectorised path equals its own loop nest; REVD2 is independent of its band size."""
    x, wt, s, p, bias = case
    for name in al.ALGORITHMS:
        np.testing.assert_allclose(al.FAST[name](x, wt, s, p, bias), al.LOOP[name](x, wt, s, p, bias),
                                   rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(al.revd2(x, wt, s, p, bias, band=band), al.revd2(x, wt, s, p, bias),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_single_tap_lands_where_the_formula_says(s):
    """Oracle independent of reference.py: one non-zero input pixel times one non-zero tap
    appears at (S h + a - P, S w + b - P) and nowhere else."""
    k, p, h, w = 5, 2, 4, 3
    h_out, w_out = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
    for hh, ww, a, b in [(0, 0, 4, 4), (3, 2, 2, 3), (1, 2, 0, 1), (2, 1, 3, 0)]:
        x = np.zeros((2, h, w), dtype=np.int64)
        x[1, hh, ww] = 3
        wt = np.zeros((2, 3, k, k), dtype=np.int64)
        wt[1, 2, a, b] = -5
        expected = np.zeros((3, h_out, w_out), dtype=np.int64)
        oy, ox = s * hh + a - p, s * ww + b - p
        if 0 <= oy < h_out and 0 <= ox < w_out:
            expected[2, oy, ox] = -15
        for name in al.ALGORITHMS:
            got = al.LOOP[name](x, wt, s, p)
            assert got.dtype == np.int64, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
            np.testing.assert_array_equal(al.FAST[name](x, wt, s, p), expected, err_msg=name)


def test_periodic_bias_follows_output_phase(rng):
    """With zero weights the output is the periodic bias tiled by (y mod S, x mod S), also when
    P_d is not a multiple of S (kernel phase and bias phase then differ)."""
    s, p = 3, 4
    bias = rng.integers(-100, 100, (2, s, s))
    x = rng.integers(0, 10, (1, 4, 5))
    wt = np.zeros((1, 2, 7, 7), dtype=np.int64)
    for name in al.ALGORITHMS:
        for fn in (al.LOOP[name], al.FAST[name]):
            out = fn(x, wt, s, p, bias)
            yy, xx = np.indices(out.shape[1:])
            np.testing.assert_array_equal(out, bias[:, yy % s, xx % s], err_msg=name)


def test_loop_nests_exact_on_integers(rng):
    """Integer operands: the loop nests compute in Python integers and agree exactly, also
    beyond 2**53 where float64 would round."""
    x = rng.integers(0, 256, (2, 3, 3)).astype(np.int64) << 30
    wt = rng.integers(-128, 128, (2, 2, 6, 6)).astype(np.int64) << 10
    results = {name: fn(x, wt, 3, 2, None) for name, fn in al.LOOP.items()}
    first = results["STDD"]
    assert first.dtype == np.int64 and np.abs(first).max() > 2**53
    for name, got in results.items():
        np.testing.assert_array_equal(got, first, err_msg=name)


def test_float32_paths_close_to_float64(rng):
    x = rng.standard_normal((5, 9, 7))
    wt = rng.standard_normal((5, 2, 9, 9))
    expected = ref.deconv2d(x, wt, 3, 3)
    for name, fn in al.FAST.items():
        got = fn(x.astype(np.float32), wt.astype(np.float32), 3, 3, dtype=np.float32)
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)


def test_against_onnxruntime(rng):
    """An independent executor: onnxruntime ConvTranspose (float32) on a few shapes."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    for c_in, c_out, k, s, p, h, w in [(3, 2, 5, 2, 1, 6, 4), (2, 1, 9, 3, 3, 5, 7),
                                       (1, 3, 4, 4, 0, 3, 3), (2, 2, 3, 1, 1, 5, 5)]:
        x = rng.standard_normal((c_in, h, w)).astype(np.float32)
        wt = rng.standard_normal((c_in, c_out, k, k)).astype(np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[s, s],
                                pads=[p] * 4, kernel_shape=[k, k])
        graph = helper.make_graph(
            [node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = sess.run(None, {"x": x[None]})[0][0]
        for name in al.ALGORITHMS:
            for fn in (al.LOOP[name], al.FAST[name]):
                np.testing.assert_allclose(fn(x, wt, s, p, b), expected, rtol=0, atol=1e-4,
                                           err_msg=f"{name} {fn.__name__}")
    assert onnx is not None


# Loop-nest versions of the other operators vs reference.py ---------------------------------

@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 7), st.integers(1, 6),
       st.integers(1, 6), st.integers(0, 3), st.booleans(), st.integers(0, 2**32 - 1))
def test_conv2d_loop_equals_reference(c_in, c_out, k, h, w, p, with_bias, seed):
    if h + 2 * p < k or w + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c_in, h, w))
    wt = rng.standard_normal((c_out, c_in, k, k))
    b = rng.standard_normal(c_out) if with_bias else None
    np.testing.assert_allclose(al.conv2d_loop(x, wt, p, b), ref.conv2d(x, wt, p, b),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_pixel_shuffle_loop_equals_reference(rng, mode, r):
    x = rng.integers(0, 1000, (2 * r * r, 3, 4))
    np.testing.assert_array_equal(al.pixel_shuffle_loop(x, r, mode), ref.pixel_shuffle(x, r, mode))


def test_pixel_shuffle_modes_differ_and_match_definition():
    """CRD and DCR place channels differently (a test that would catch a swapped mode)."""
    x = np.arange(8).reshape(8, 1, 1)            # r = 2, C = 2
    crd = al.pixel_shuffle_loop(x, 2, "CRD")
    dcr = al.pixel_shuffle_loop(x, 2, "DCR")
    assert crd[1, 1, 0] == x[4 + 2, 0, 0]        # CRD: channel r*r*c + r*i + j = 4 + 2
    assert dcr[1, 1, 0] == x[2 * 2 + 1, 0, 0]    # DCR: channel (r*i + j)*C + c = 2*2 + 1
    assert not np.array_equal(crd, dcr)


@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_nearest_upsample_loop_equals_reference(rng, r):
    x = rng.integers(0, 256, (3, 4, 5))
    got = al.nearest_upsample_loop(x, r)
    np.testing.assert_array_equal(got, ref.nearest_upsample(x, r))
    assert got[2, r * 3 + r - 1, r * 4] == x[2, 3, 4]


# Validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [*al.LOOP.values(), *al.FAST.values()], ids=lambda f: f.__name__)
@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=0), "stride must be an integer >= 1, not 0"),
    (dict(stride=1.5), "stride must be an integer >= 1, not 1.5"),
    (dict(padding=-1), "padding must be an integer >= 0, not -1"),
    (dict(padding=9), "padding 9 leaves an empty output"),
    (dict(bias=np.zeros(5)), "bias must have shape (2,) or (2, 2, 2), not (5,)"),
])
def test_validation_messages(fn, kwargs, message):
    args = dict(x=np.zeros((1, 3, 3)), weight=np.zeros((1, 2, 3, 3)), stride=2, padding=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        fn(**args)
    assert message in str(err.value)


def test_shape_messages():
    with pytest.raises(ValueError, match=r"x must have shape \(C_in, H, W\), not \(3, 3\)"):
        al.revd2(np.zeros((3, 3)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"weight must have shape \(C_in, C_out, K_d, K_d\), "
                                         r"not \(1, 1, 3, 2\)"):
        al.revd2_loop(np.zeros((1, 3, 3)), np.zeros((1, 1, 3, 2)))
    with pytest.raises(ValueError, match="has 2 input channels but x"):
        al.stdd(np.zeros((1, 3, 3)), np.zeros((2, 1, 3, 3)))
    with pytest.raises(ValueError, match="dtype must be a floating-point type"):
        al.tdc(np.zeros((1, 3, 3)), np.zeros((1, 1, 3, 3)), dtype=np.int32)
    with pytest.raises(ValueError, match="band must be an integer >= 1, not 0"):
        al.revd2(np.zeros((1, 3, 3)), np.zeros((1, 1, 3, 3)), band=0)
    with pytest.raises(ValueError, match="mode must be 'CRD' or 'DCR', not 'XYZ'"):
        al.pixel_shuffle_loop(np.zeros((4, 1, 1)), 2, "XYZ")


# deconvsr bench golden (structure and agreement check; timings are not asserted) ---------

@pytest.fixture
def bench_cli(monkeypatch):
    """``deconvsr.sw.cli.main.main`` with only the bench subcommand registered (other subcommands
    are other modules' business and must not break these tests)."""
    import deconvsr.sw.cli.main as cli
    monkeypatch.setattr(cli, "COMMANDS", ["bench"])
    return cli.main


def test_bench_golden_json_structure(bench_cli, capsys):
    import json

    rc = bench_cli(["bench", "golden", "--size", "5", "4", "--repeat", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ok"] and out["agree"]
    assert out["layer"] == dict(c_in=32, c_out=1, k=9, stride=3, padding=3, h=5, w=4,
                                h_out=15, w_out=12)
    assert set(out["algorithms"]) == set(al.ALGORITHMS)
    for row in out["algorithms"].values():
        assert row["agree"] and row["max_abs_err"] < 1e-4 and row["median_s"] > 0
        assert row["ratio_vs_onnxruntime"] == pytest.approx(row["median_s"]
                                                            / out["onnxruntime"]["median_s"])
    assert set(out["transforms"]) == {"subpixel_to_deconv", "resize_to_deconv",
                                      "deconv_to_subpixel"}
    assert out["threads"]["onnxruntime_intra_op"] == 1
    assert out["revd2_goal"]["ratio"] == out["algorithms"]["REVD2"]["ratio_vs_onnxruntime"]


def test_bench_golden_detects_disagreement(bench_cli, monkeypatch, capsys):
    def off_by_one_row(x, weight, stride, padding, bias=None, *, dtype=np.float64):
        y = al.revd2(x, weight, stride, padding, bias, dtype=dtype)
        return np.roll(y, 1, axis=1)

    monkeypatch.setitem(al.FAST, "REVD2", off_by_one_row)
    rc = bench_cli(["bench", "golden", "--size", "5", "4", "--repeat", "1", "--algorithms",
               "revd2,stdd"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "some golden models disagree with onnxruntime" in text
    rows = [ln.split() for ln in text.splitlines() if ln.startswith(("REVD2  ", "STDD  "))]
    assert [(r[0], r[-1]) for r in rows] == [("REVD2", "NO"), ("STDD", "yes")]


@pytest.mark.parametrize("argv, message", [
    (["bench"], "choose a benchmark: golden"),  # (+ the other registered benches, see below)
    (["bench", "golden", "--repeat", "0"], "--repeat must be >= 1, not 0"),
    (["bench", "golden", "--size", "0", "4"], "h must be an integer >= 1, not 0"),
    (["bench", "golden", "--threads", "0"], "threads must be an integer >= 1, not 0"),
    (["bench", "golden", "--algorithms", "FOO", "--size", "3", "3"],
     "algorithm must be one of STDD, STRD, REVD, REVD2, TDC, not 'FOO'"),
])
def test_bench_user_errors(bench_cli, argv, message, capsys):
    rc = bench_cli(argv)
    err = capsys.readouterr().err
    assert rc == 2
    if argv == ["bench"]:   # every registered benchmark is listed, golden first
        from deconvsr.sw.cli.bench import BENCHES
        message = "choose a benchmark: " + ", ".join(BENCHES)
    assert err == f"deconvsr bench: error: {message}\n"
