"""`deconvsr convert`: ONNX sub-pixel / resize convolutions rewritten into ConvTranspose.

Every rewritten model is run in onnxruntime and compared with the original model and with the
NumPy reference operators, at two input sizes (the periodic bias must be shape-generic).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import deconvsr.sw.cli.main as cli
from deconvsr.sw.model.onnx_convert import convert_model
from deconvsr.sw.golden.reference import conv2d, deconv2d, nearest_upsample, pixel_shuffle
from deconvsr.sw.model.transforms import TransformError

OPSET = 17
SIZES = [(5, 7), (8, 6)]


# Graph building -------------------------------------------------------------------------------

def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def make_model(nodes, inits, c_in, *, opset=OPSET, ir_version=8, out="y", shape=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape or ["N", c_in, "H", "W"])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "C_out", "H_out", "W_out"])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def run(model, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.astype(np.float32)})[0]


def conv(name, x, y, w_name, b_name=None, pad=1, **attrs):
    inputs = [x, w_name] + ([b_name] if b_name else [])
    return helper.make_node("Conv", inputs, [y], name=name, pads=[pad] * 4, **attrs)


def ops(model):
    return [n.op_type for n in model.graph.node]


def check_equivalent(model, conv_model, c_in, rng, ref=None):
    """Original vs converted in onnxruntime (and vs a NumPy reference) at two sizes."""
    onnx.checker.check_model(conv_model)
    for h, w in SIZES:
        x = rng.standard_normal((2, c_in, h, w)).astype(np.float32)
        y0, y1 = run(model, x), run(conv_model, x)
        assert y0.shape == y1.shape
        np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
        if ref is not None:
            for n in range(x.shape[0]):
                np.testing.assert_allclose(y1[n], ref(x[n].astype(np.float64)),
                                           rtol=1e-5, atol=1e-5)


def subpixel_model(rng, c_in=3, c_out=2, k=3, r=2, pad=1, mode="CRD", bias="random"):
    w = rng.standard_normal((r * r * c_out, c_in, k, k)).astype(np.float32)
    if bias == "random":
        b = rng.standard_normal(r * r * c_out).astype(np.float32)
    elif bias == "per-channel":
        per = rng.standard_normal(c_out).astype(np.float32)
        b = (np.repeat(per, r * r) if mode == "CRD" else np.tile(per, r * r)).astype(np.float32)
    else:
        b = None
    inits = [init("w", w)] + ([init("b", b)] if b is not None else [])
    nodes = [conv("sp_conv", "x", "t", "w", "b" if b is not None else None, pad=pad),
             helper.make_node("DepthToSpace", ["t"], ["y"], name="shuffle", blocksize=r,
                              mode=mode)]
    model = make_model(nodes, inits, c_in)

    def ref(x):
        return pixel_shuffle(conv2d(x, w, pad, b), r, mode)
    return model, ref


# Sub-pixel convolution ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["CRD", "DCR"])
@pytest.mark.parametrize("r,k,pad", [(2, 3, 1), (3, 3, 1), (2, 5, 2), (3, 3, 0)])
def test_subpixel_depth_to_space_periodic_bias(rng, mode, r, k, pad):
    model, ref = subpixel_model(rng, r=r, k=k, pad=pad, mode=mode)
    res = convert_model(model)
    assert [rw.pattern for rw in res.rewrites] == [f"Conv+DepthToSpace({mode})"]
    rw = res.rewrites[0]
    assert (rw.k, rw.k_d, rw.stride, rw.padding, rw.bias) == (k, r * k, r, r * (k - 1 - pad),
                                                             "periodic")
    assert "DepthToSpace" not in ops(res.model) and "Conv" not in ops(res.model)
    assert ops(res.model).count("ConvTranspose") == 1
    assert {t.name for t in res.model.graph.initializer}.isdisjoint({"w", "b"})
    check_equivalent(model, res.model, 3, rng, ref)


@pytest.mark.parametrize("bias", ["per-channel", None])
def test_subpixel_nonperiodic_bias_goes_into_convtranspose(rng, bias):
    model, ref = subpixel_model(rng, r=3, mode="DCR", bias=bias)
    res = convert_model(model)
    ct = [n for n in res.model.graph.node if n.op_type == "ConvTranspose"]
    assert ops(res.model) == ["ConvTranspose"]
    assert len(ct[0].input) == (3 if bias else 2)
    assert res.rewrites[0].bias == ("per-channel" if bias else "none")
    check_equivalent(model, res.model, 3, rng, ref)


def test_model_is_not_modified_in_place(rng):
    model, _ = subpixel_model(rng)
    before = model.SerializeToString()
    convert_model(model)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
def test_reshape_transpose_reshape_pixel_shuffle(rng, mode):
    r, c_in, c_out = 3, 2, 2
    w = rng.standard_normal((r * r * c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(r * r * c_out).astype(np.float32)
    perm = [0, 1, 4, 2, 5, 3] if mode == "CRD" else [0, 3, 4, 1, 5, 2]
    # The export form with constant shapes needs fixed H, W: build one model per size.
    for h, wd in SIZES:
        s6 = ([0, c_out, r, r, h, wd] if mode == "CRD" else [0, r, r, c_out, h, wd])
        nodes = [conv("conv", "x", "t", "w", "b"),
                 helper.make_node("Reshape", ["t", "s6"], ["t6"], name="reshape1"),
                 helper.make_node("Transpose", ["t6"], ["tt"], name="transpose", perm=perm),
                 helper.make_node("Reshape", ["tt", "s4"], ["y"], name="reshape2")]
        inits = [init("w", w), init("b", b), init("s6", np.array(s6, np.int64)),
                 init("s4", np.array([0, c_out, h * r, wd * r], np.int64))]
        # Constant reshape targets hold for one input size: the static export declares it
        # (with a symbolic H, W the matcher cannot prove the shuffle, and leaves it).
        assert convert_model(make_model(nodes, inits, c_in)).rewrites == []
        model = make_model(nodes, inits, c_in, shape=[2, c_in, h, wd])
        res = convert_model(model)
        assert [rw.pattern for rw in res.rewrites] == [f"Conv+Reshape+Transpose+Reshape({mode})"]
        assert not {"Reshape", "Transpose", "Conv"} & set(ops(res.model))
        assert {t.name for t in res.model.graph.initializer}.isdisjoint({"s6", "s4", "w", "b"})
        x = rng.standard_normal((2, c_in, h, wd)).astype(np.float32)
        y0, y1 = run(model, x), run(res.model, x)
        np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
        ref = pixel_shuffle(conv2d(x[1].astype(np.float64), w, 1, b), r, mode)
        np.testing.assert_allclose(y1[1], ref, rtol=1e-5, atol=1e-5)


def test_transpose_that_is_not_a_shuffle_is_left_alone(rng):
    nodes = [conv("conv", "x", "t", "w"),
             helper.make_node("Reshape", ["t", "s6"], ["t6"], name="reshape1"),
             helper.make_node("Transpose", ["t6"], ["tt"], name="transpose",
                              perm=[0, 1, 2, 3, 5, 4]),
             helper.make_node("Reshape", ["tt", "s4"], ["y"], name="reshape2")]
    inits = [init("w", rng.standard_normal((8, 2, 3, 3)).astype(np.float32)),
             init("s6", np.array([0, 2, 2, 2, 4, 4], np.int64)),
             init("s4", np.array([0, 2, 8, 8], np.int64))]
    res = convert_model(make_model(nodes, inits, 2))
    assert res.rewrites == [] and ops(res.model) == ["Conv", "Reshape", "Transpose", "Reshape"]


# Resize convolution ---------------------------------------------------------------------------

def resize_model(rng, r=2, k=3, pad=1, mode="nearest", scale=None, opset=OPSET, op="Resize",
                 c_in=2, c_out=3, **resize_attrs):
    w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    s = float(r) if scale is None else scale
    scales = np.array([1, 1, s, s], np.float32)
    inits = [init("w", w), init("b", b)]
    if op == "Upsample":
        up = helper.make_node("Upsample", ["x", "scales"], ["u"], name="up", mode=mode)
        inits.append(init("scales", scales))
    else:
        up = helper.make_node("Resize", ["x", "", "scales"], ["u"], name="up", mode=mode,
                              **resize_attrs)
        inits.append(init("scales", scales))
    nodes = [up, conv("rs_conv", "u", "y", "w", "b", pad=pad)]
    model = make_model(nodes, inits, c_in, opset=opset)

    def ref(x):
        return conv2d(nearest_upsample(x, r), w, pad, b)
    return model, ref


@pytest.mark.parametrize("r,k,pad", [(2, 3, 1), (3, 3, 1), (3, 5, 2), (2, 3, 0)])
@pytest.mark.parametrize("attrs", [{}, {"coordinate_transformation_mode": "asymmetric",
                                        "nearest_mode": "floor"}])
def test_resize_nearest_conv(rng, r, k, pad, attrs):
    model, ref = resize_model(rng, r=r, k=k, pad=pad, **attrs)
    res = convert_model(model)
    rw = res.rewrites[0]
    assert (rw.pattern, rw.k_d, rw.stride, rw.padding, rw.bias) == (
        "Resize(nearest)+Conv", k + r - 1, r, k - 1 - pad, "per-channel")
    assert ops(res.model) == ["ConvTranspose"]
    check_equivalent(model, res.model, 2, rng, ref)


def test_upsample_nearest_conv_opset9(rng):
    model, ref = resize_model(rng, r=3, op="Upsample", opset=9)
    res = convert_model(model)
    assert [rw.pattern for rw in res.rewrites] == ["Upsample(nearest)+Conv"]
    assert ops(res.model) == ["ConvTranspose"]
    check_equivalent(model, res.model, 2, rng, ref)


def test_subpixel_periodic_bias_opset9_static_slice(rng):
    # Before opset 10 Slice takes attributes; DepthToSpace is DCR only.
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    nodes = [conv("c", "x", "t", "w", "b"),
             helper.make_node("DepthToSpace", ["t"], ["y"], name="d2s", blocksize=2)]
    model = make_model(nodes, [init("w", w), init("b", b)], 2, opset=9)
    res = convert_model(model)
    assert res.rewrites[0].bias == "periodic"
    check_equivalent(model, res.model, 2, rng,
                     lambda x: pixel_shuffle(conv2d(x, w, 1, b), 2, "DCR"))


@pytest.mark.parametrize("ctm,nmode", [("asymmetric", "round_prefer_floor"),
                                       ("half_pixel", "floor")])
def test_resize_that_is_not_replication_is_rejected(rng, ctm, nmode):
    model, _ = resize_model(rng, r=3, coordinate_transformation_mode=ctm, nearest_mode=nmode)
    with pytest.raises(TransformError, match="up \\+ rs_conv: .*is not pixel replication"):
        convert_model(model)
    # ...and onnxruntime agrees that it is not.
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w, b = (numpy_helper.to_array(t) for t in model.graph.initializer[:2])
    assert not np.allclose(run(model, x)[0], conv2d(nearest_upsample(x[0], 3), w, 1, b),
                           atol=1e-3)


def test_align_corners_nearest_is_replication_for_r2(rng):
    # x (L-1) / (2L-1) rounds to x // 2 for every L: accepted, and onnxruntime agrees.
    # (At r = 3 it is not replication for every L, and is rejected.)
    model, _ = resize_model(rng, r=3, coordinate_transformation_mode="align_corners")
    with pytest.raises(TransformError, match="is not pixel replication"):
        convert_model(model)
    model, ref = resize_model(rng, r=2, coordinate_transformation_mode="align_corners")
    res = convert_model(model)
    check_equivalent(model, res.model, 2, rng, ref)


# A network --------------------------------------------------------------------------------

def test_multilayer_net_with_subpixel_tail(rng):
    r = 3
    ws = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in
          [(8, 1, 5, 5), (8, 8, 3, 3), (4, 8, 3, 3), (r * r, 4, 3, 3)]]
    bs = [rng.standard_normal(s[0]).astype(np.float32) * 0.1 for s in map(np.shape, ws)]
    nodes, inits, t = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        inits += [init(f"w{i}", w), init(f"b{i}", b)]
        nodes.append(conv(f"conv{i}", t, f"c{i}", f"w{i}", f"b{i}", pad=w.shape[2] // 2))
        t = f"c{i}"
        if i < 3:
            nodes.append(helper.make_node("Relu", [t], [f"a{i}"], name=f"relu{i}"))
            t = f"a{i}"
    nodes.append(helper.make_node("DepthToSpace", [t], ["y"], name="shuffle", blocksize=r,
                                  mode="CRD"))
    model = make_model(nodes, inits, 1)
    res = convert_model(model)
    assert len(res.rewrites) == 1 and res.rewrites[0].nodes == ("conv3", "shuffle")
    assert (res.rewrites[0].c_in, res.rewrites[0].c_out, res.rewrites[0].k_d) == (4, 1, 9)
    new = res.model
    assert [n.name for n in new.graph.node][:6] == [n.name for n in model.graph.node][:6]
    assert {t.name for t in new.graph.initializer} >= {f"{p}{i}" for p in "wb" for i in range(3)}
    assert [i.name for i in new.graph.input] == ["x"] and [o.name for o in new.graph.output] == ["y"]
    assert new.opset_import == model.opset_import

    def ref(x):
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = conv2d(x, w, w.shape[2] // 2, b)
            if i < 3:
                x = np.maximum(x, 0)
        return pixel_shuffle(x, r, "CRD")
    check_equivalent(model, new, 1, rng, ref)


def test_conv_output_with_other_consumer_is_skipped(rng):
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    nodes = [conv("c", "x", "t", "w"),
             helper.make_node("DepthToSpace", ["t"], ["d"], name="d2s", blocksize=2),
             helper.make_node("ReduceMean", ["t"], ["m"], name="side", keepdims=1),
             helper.make_node("Add", ["d", "m"], ["y"], name="add")]
    model = make_model(nodes, [init("w", w)], 2)
    res = convert_model(model)
    assert res.rewrites == [] and len(res.skipped) == 1
    assert "another consumer" in res.skipped[0].reason
    assert ops(res.model) == ops(model)


def test_convtranspose_graph_matches_reference_deconv(rng):
    # The semantics the rewrite relies on: ONNX ConvTranspose == reference.deconv2d.
    for s, kd, pd in [(2, 4, 1), (3, 9, 3), (3, 5, 2), (1, 3, 1)]:
        w = rng.standard_normal((3, 2, kd, kd)).astype(np.float32)
        b = rng.standard_normal(2).astype(np.float32)
        node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="ct",
                                kernel_shape=[kd, kd], strides=[s, s], pads=[pd] * 4)
        model = make_model([node], [init("w", w), init("b", b)], 3)
        x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
        np.testing.assert_allclose(run(model, x)[0], deconv2d(x[0], w, s, pd, b),
                                   rtol=1e-5, atol=1e-5)


# Unsupported candidates -------------------------------------------------------------------

def test_bilinear_resize_is_rejected(rng):
    model, _ = resize_model(rng, mode="linear")
    with pytest.raises(TransformError, match="up \\+ rs_conv: Resize mode 'linear'"):
        convert_model(model)


def test_non_integer_scale_is_rejected(rng):
    model, _ = resize_model(rng, scale=1.5)
    with pytest.raises(TransformError, match="non-integer scale 1.5"):
        convert_model(model)


@pytest.mark.parametrize("attrs,match", [({"group": 2}, "grouped convolution \\(group=2\\)"),
                                         ({"dilations": [2, 2]}, "dilated convolution"),
                                         ({"strides": [2, 2]}, "strided convolution")])
def test_conv_attributes_rejected(rng, attrs, match):
    c_in = 2
    w = rng.standard_normal((8, c_in // attrs.get("group", 1), 3, 3)).astype(np.float32)
    nodes = [conv("bad_conv", "x", "t", "w", **attrs),
             helper.make_node("DepthToSpace", ["t"], ["y"], name="d2s", blocksize=2)]
    with pytest.raises(TransformError, match=f"bad_conv \\+ d2s: {match}"):
        convert_model(make_model(nodes, [init("w", w)], c_in))


def test_non_square_kernel_rejected(rng):
    w = rng.standard_normal((8, 2, 3, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"], name="c31", pads=[1, 0, 1, 0]),
             helper.make_node("DepthToSpace", ["t"], ["y"], name="d2s", blocksize=2)]
    with pytest.raises(TransformError, match="c31 \\+ d2s: non-square kernel 3x1"):
        convert_model(make_model(nodes, [init("w", w)], 2))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_weights_rejected(rng, bad):
    model, _ = resize_model(rng)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0, 1, 1] = bad
    model.graph.initializer[0].CopyFrom(init("w", w))
    with pytest.raises(TransformError, match="weight contains NaN or infinity"):
        convert_model(model)


# CLI ------------------------------------------------------------------------------------

def cli_run(capsys, *argv):
    code = cli.main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deconvsr convert: error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_converts_and_reports(rng, tmp_path, capsys):
    model, ref = subpixel_model(rng, r=3, mode="CRD")
    src, dst = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    code, out, err = cli_run(capsys, src, "-o", dst)
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0] == ("rewrote Conv+DepthToSpace(CRD): sp_conv + shuffle -> ConvTranspose "
                        "3->2, K 3 -> K_d 9, stride 3, padding 1 -> 3, bias periodic")
    assert lines[-1] == f"wrote {dst} (1 pattern(s) rewritten)"
    check_equivalent(model, onnx.load(dst), 3, rng, ref)


def test_cli_json(rng, tmp_path, capsys):
    model, _ = resize_model(rng, r=2)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    code, out, _ = cli_run(capsys, src, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["written"] is False and summary["skipped"] == []
    (rw,) = summary["rewritten"]
    assert (rw["nodes"], rw["k"], rw["k_d"], rw["stride"], rw["padding"]) == (
        ["up", "rs_conv"], 3, 4, 2, 1)


def test_cli_nothing_to_convert(rng, tmp_path, capsys):
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    model = make_model([conv("c", "x", "y", "w")], [init("w", w)], 2)
    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    code, out, err = cli_run(capsys, src, "-o", dst)
    assert code == cli.EXIT_INPUT and out == "" and not dst.exists()
    one_error_line(err, "nothing to convert", "--allow-unchanged")
    code, out, err = cli_run(capsys, src, "-o", dst, "--allow-unchanged")
    assert code == 0 and err == "" and "nothing to convert" in out
    assert onnx.load(dst).graph == model.graph


def test_cli_missing_file(tmp_path, capsys):
    code, out, err = cli_run(capsys, tmp_path / "nope.onnx")
    assert code == cli.EXIT_NOT_FOUND and out == ""
    one_error_line(err, "nope.onnx: no such file")


def test_cli_directory(tmp_path, capsys):
    code, _, err = cli_run(capsys, tmp_path)
    assert code == cli.EXIT_INPUT
    one_error_line(err, "is a directory")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can read a mode-000 file")
def test_cli_unreadable(tmp_path, capsys):
    p = tmp_path / "locked.onnx"
    p.write_bytes(b"x")
    p.chmod(0)
    try:
        code, _, err = cli_run(capsys, p)
    finally:
        p.chmod(0o600)
    assert code == cli.EXIT_INPUT
    one_error_line(err, "cannot read")


@pytest.mark.parametrize("data", [b"", b"this is not a model\n", bytes(range(256)) * 4])
def test_cli_not_onnx(tmp_path, capsys, data):
    p = tmp_path / "junk.onnx"
    p.write_bytes(data)
    code, _, err = cli_run(capsys, p)
    assert code == cli.EXIT_INPUT
    one_error_line(err, "junk.onnx", "not an ONNX model")


@pytest.mark.parametrize("case,fragment", [
    ("linear", "up + rs_conv: Resize mode 'linear' is not exactly a deconvolution"),
    ("scale", "up + rs_conv: non-integer scale 2.5 is not supported"),
    ("nan", "up + rs_conv: weight contains NaN or infinity"),
])
def test_cli_unsupported_pattern(rng, tmp_path, capsys, case, fragment):
    if case == "linear":
        model, _ = resize_model(rng, mode="linear")
    elif case == "scale":
        model, _ = resize_model(rng, scale=2.5)
    else:
        model, _ = resize_model(rng)
        w = numpy_helper.to_array(model.graph.initializer[0]).copy()
        w[0, 0, 0, 0] = np.nan
        model.graph.initializer[0].CopyFrom(init("w", w))
    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    code, out, err = cli_run(capsys, src, "-o", dst)
    assert code == cli.EXIT_INPUT and out == "" and not dst.exists()
    one_error_line(err, fragment)


def test_cli_invalid_model(tmp_path, capsys):
    # Parses, but a node refers to a tensor nothing produces.
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8)
    p = tmp_path / "bad.onnx"
    p.write_bytes(model.SerializeToString())
    code, _, err = cli_run(capsys, p)
    assert code == cli.EXIT_INPUT
    one_error_line(err, "bad.onnx: invalid ONNX model")


def test_cli_unwritable_output(rng, tmp_path, capsys):
    model, _ = resize_model(rng)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    code, _, err = cli_run(capsys, src, "-o", tmp_path / "no" / "dir" / "o.onnx")
    assert code == cli.EXIT_INPUT
    one_error_line(err, "cannot write")
