"""Every export form of a sub-pixel or resize upsampler is found by `deconvsr convert`, and
onnxruntime agrees with the converted graph to float rounding.

* ``onnx_forms/*.onnx``: PyTorch 2.13's own exports (``onnx_forms/generate.py``): the
  TorchScript exporter at opsets 9, 10, 11, 13, 17, static and dynamic H/W (the opset 9/10
  dynamic pixel shuffle is ``Unsqueeze-Reshape-Transpose-Reshape-Reshape-Squeeze``), constant
  folding off (shape arithmetic left in the graph), initializers as inputs, a hand-written
  ``view``/``permute`` shuffle, ``F.interpolate`` to a computed size; the dynamo exporter at
  opsets 17 and 18, static and dynamic.
* graphs built here as tf2onnx writes them (NHWC graph input and output, ``Transpose`` around
  ``DepthToSpace`` in DCR, a 6-D NHWC shuffle, an NHWC ``Resize``, ``sizes`` from ``Shape``),
  QDQ weights (``DequantizeLinear``) and QONNX ``Quant`` weights.
* graphs that look like a shuffle but are not one, which must be left alone.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import deconvsr.sw.cli.main as cli
from deconvsr.sw.golden.reference import conv2d, nearest_upsample, pixel_shuffle
from deconvsr.sw.model.onnx_convert import convert_model

FORMS = Path(__file__).parent / "onnx_forms"
MANIFEST = json.loads((FORMS / "MANIFEST.json").read_text())["forms"]
SHAPE_OPS = {"Reshape", "Transpose", "DepthToSpace", "Resize", "Upsample", "Unsqueeze",
             "Squeeze", "Shape", "Gather", "Concat", "Slice", "Cast", "Mul", "Div", "Constant"}


def run(model, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("form", MANIFEST, ids=[f["file"][:-5] for f in MANIFEST])
def test_pytorch_export_form(form, rng):
    model = onnx.load(str(FORMS / form["file"]))
    res = convert_model(model)
    assert [rw.kind for rw in res.rewrites] == [form["kind"]], [s.line() for s in res.skipped]
    assert res.rewrites[0].stride == form["scale"] and res.skipped == []
    onnx.checker.check_model(res.model)
    # The upsampler and the shape arithmetic that only served it are gone.
    left = [op for op in ops(res.model) if op in SHAPE_OPS]
    extra = {"Shape", "Slice", "Div", "Concat"} if res.rewrites[0].bias == "periodic" else set()
    assert set(left) <= extra, left
    assert ops(res.model).count("Conv") == 1 and ops(res.model).count("ConvTranspose") == 1
    sizes = [(1, 12, 10)] + ([(2, 9, 13), (3, 16, 8)] if form["dynamic"] else [])
    for n, h, w in sizes:
        x = rng.random((n, 1, h, w))
        y0, y1 = run(model, x), run(res.model, x)
        assert y0.shape == y1.shape == (n, 1, h * form["scale"], w * form["scale"])
        np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)


def test_cli_converts_the_opset9_dynamic_pixel_shuffle(tmp_path, capsys):
    # The form `convert` used to answer "nothing to convert" for, exiting 0.
    src = FORMS / "sub-ts9-dynamic.onnx"
    assert ops(onnx.load(str(src)))[3:] == ["Unsqueeze", "Constant", "Reshape", "Transpose",
                                           "Constant", "Reshape", "Constant", "Reshape",
                                           "Squeeze"]
    code = cli.main(["convert", str(src), "-o", str(tmp_path / "o.onnx")])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out.startswith("rewrote Conv+Unsqueeze+Reshape+Transpose+Reshape+Reshape+Squeeze(CRD)")


# Graphs as tf2onnx and quantisers write them ----------------------------------------------

def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def model_of(nodes, inits, shape, *, opset=13, domains=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["y0", "y1", "y2", "y3"])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, name=f"{op.lower()}_{outs[0]}", **attrs)


def body(rng, c_mid=4, k_out=8):
    """NHWC input -> Transpose -> conv 1->c_mid 3x3 -> Relu -> conv c_mid->k_out 3x3 ("t")."""
    w1 = rng.standard_normal((c_mid, 1, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(c_mid).astype(np.float32)
    w2 = rng.standard_normal((k_out, c_mid, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(k_out).astype(np.float32)
    nodes = [node("Transpose", ["x"], ["xn"], perm=[0, 3, 1, 2]),
             node("Conv", ["xn", "w1", "b1"], ["c1"], pads=[1] * 4),
             node("Relu", ["c1"], ["a1"]),
             node("Conv", ["a1", "w2", "b2"], ["t"], pads=[1] * 4)]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)]

    def ref(x_nhwc):
        a = np.maximum(conv2d(x_nhwc.transpose(2, 0, 1), w1, 1, b1), 0)
        return conv2d(a, w2, 1, b2)
    return nodes, inits, ref


def check(model, ref, rng, hw=((6, 8),), n=2, nhwc_out=True):
    res = convert_model(model)
    assert len(res.rewrites) == 1, [s.line() for s in res.skipped]
    onnx.checker.check_model(res.model)
    for h, w in hw:
        x = rng.random((n, h, w, 1))
        y1 = run(res.model, x)
        want = np.stack([ref(x[i].astype(np.float64)) for i in range(n)])
        if nhwc_out:
            want = want.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y1, want, rtol=1e-5, atol=1e-5)
        if all(n.domain in ("", "ai.onnx") for n in model.graph.node):
            np.testing.assert_allclose(run(model, x), y1, rtol=1e-5, atol=1e-5)
        # (onnxruntime cannot run QONNX's Quant: that model is checked against NumPy only)
    return res


def test_tf2onnx_depth_to_space_dcr_nhwc(rng):
    # tf2onnx with its optimiser: the conv's transposes cancelled, DepthToSpace(DCR) in NCHW,
    # one Transpose back to the NHWC graph output.
    nodes, inits, ref = body(rng, k_out=8)
    nodes += [node("DepthToSpace", ["t"], ["d"], blocksize=2, mode="DCR"),
              node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    res = check(model_of(nodes, inits, ["N", "H", "W", 1]),
                lambda x: pixel_shuffle(ref(x), 2, "DCR"), rng, hw=((6, 8), (5, 9)))
    assert res.rewrites[0].pattern == "Conv+DepthToSpace(DCR)"
    assert ops(res.model)[-1] == "Transpose"


def test_tf2onnx_unoptimised_transpose_pair(rng):
    # Without the optimiser: Conv -> to NHWC -> back to NCHW -> DepthToSpace -> NHWC.
    nodes, inits, ref = body(rng, k_out=8)
    nodes += [node("Transpose", ["t"], ["t1"], perm=[0, 2, 3, 1]),
              node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2]),
              node("DepthToSpace", ["t2"], ["d"], blocksize=2, mode="DCR"),
              node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    res = check(model_of(nodes, inits, ["N", "H", "W", 1]),
                lambda x: pixel_shuffle(ref(x), 2, "DCR"), rng, hw=((6, 8), (7, 5)))
    assert res.rewrites[0].pattern == "Conv+Transpose+Transpose+DepthToSpace(DCR)"


def test_keras_nhwc_reshape_shuffle(rng):
    # A Keras sub-pixel layer (tf.reshape / tf.transpose in NHWC) through tf2onnx: static H, W.
    h, w, r, c = 6, 8, 2, 2
    nodes, inits, ref = body(rng, k_out=r * r * c)
    inits += [init("s6", np.array([-1, h, w, r, r, c], np.int64)),
              init("s4", np.array([-1, h * r, w * r, c], np.int64))]
    nodes += [node("Transpose", ["t"], ["t1"], perm=[0, 2, 3, 1]),
              node("Reshape", ["t1", "s6"], ["t6"]),
              node("Transpose", ["t6"], ["tt"], perm=[0, 1, 3, 2, 4, 5]),
              node("Reshape", ["tt", "s4"], ["y"])]
    res = check(model_of(nodes, inits, ["unk__0", h, w, 1]),
                lambda x: pixel_shuffle(ref(x), r, "DCR"), rng, hw=((h, w),), n=3)
    assert res.rewrites[0].pattern == "Conv+Transpose+Reshape+Transpose+Reshape(DCR, NHWC)"
    assert ops(res.model)[-1] == "Transpose"   # the replacement's own NCHW -> NHWC


def test_tf2onnx_nhwc_resize_then_transpose(rng):
    nodes, inits, ref = body(rng, k_out=4)
    w3 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    b3 = rng.standard_normal(1).astype(np.float32)
    inits += [init("w3", w3), init("b3", b3), init("sc", np.array([1, 2, 2, 1], np.float32))]
    nodes += [node("Relu", ["t"], ["a2"]),
              node("Transpose", ["a2"], ["a2h"], perm=[0, 2, 3, 1]),
              node("Resize", ["a2h", "", "sc"], ["u"], mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
              node("Transpose", ["u"], ["un"], perm=[0, 3, 1, 2]),
              node("Conv", ["un", "w3", "b3"], ["o"], pads=[1] * 4),
              node("Transpose", ["o"], ["y"], perm=[0, 2, 3, 1])]
    res = check(model_of(nodes, inits, ["N", "H", "W", 1]),
                lambda x: conv2d(nearest_upsample(np.maximum(ref(x), 0), 2), w3, 1, b3), rng,
                hw=((6, 8), (5, 7)))
    assert res.rewrites[0].pattern == "Resize(nearest)+Transpose+Conv"


def test_resize_sizes_from_shape(rng):
    # sizes = concat(shape[0:2], 2 * shape[2:4]) computed at run time (dynamic export).
    nodes, inits, ref = body(rng, k_out=4)
    w3 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    inits += [init("w3", w3), init("two", np.array([2, 2], np.int64)),
              init("i0", np.array([0], np.int64)), init("i2", np.array([2], np.int64)),
              init("i4", np.array([4], np.int64))]
    nodes += [node("Relu", ["t"], ["a2"]), node("Shape", ["a2"], ["sh"]),
              node("Slice", ["sh", "i0", "i2"], ["nc"]), node("Slice", ["sh", "i2", "i4"], ["hw"]),
              node("Mul", ["hw", "two"], ["hw2"]), node("Concat", ["nc", "hw2"], ["sz"], axis=0),
              node("Resize", ["a2", "", "", "sz"], ["u"], mode="nearest",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
              node("Conv", ["u", "w3"], ["o"], pads=[1] * 4),
              node("Transpose", ["o"], ["y"], perm=[0, 2, 3, 1])]
    res = check(model_of(nodes, inits, ["N", "H", "W", 1]),
                lambda x: conv2d(nearest_upsample(np.maximum(ref(x), 0), 2), w3, 1), rng,
                hw=((6, 8), (9, 5)))
    assert not {"Shape", "Slice", "Mul", "Resize"} & set(ops(res.model))


def test_qdq_weights_are_folded(rng):
    # QDQ (onnxruntime quantize_static, PyTorch/Brevitas QCDQ): int8 weights per output
    # channel behind DequantizeLinear, int32 bias behind its own DequantizeLinear.
    nodes, inits, ref = body(rng, k_out=8)
    wq = rng.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8)
    sw = (rng.random(8) * 0.01 + 0.005).astype(np.float32)
    bq = rng.integers(-500, 500, 8).astype(np.int32)
    sb = (sw * 0.5).astype(np.float32)
    inits += [init("wq", wq), init("sw", sw), init("zw", np.zeros(8, np.int8)),
              init("bq", bq), init("sb", sb), init("zb", np.zeros(8, np.int32))]
    nodes[3] = node("Conv", ["a1", "wdq", "bdq"], ["t"], pads=[1] * 4)
    nodes[3:3] = [node("DequantizeLinear", ["wq", "sw", "zw"], ["wdq"], axis=0),
                  node("DequantizeLinear", ["bq", "sb", "zb"], ["bdq"], axis=0)]
    nodes += [node("DepthToSpace", ["t"], ["d"], blocksize=2, mode="CRD"),
              node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    inits = [t for t in inits if t.name not in ("w2", "b2")]
    w2 = wq.astype(np.float64) * sw[:, None, None, None]
    b2 = bq.astype(np.float64) * sb
    w1, b1 = (numpy_helper.to_array(t) for t in inits[:2])

    def reference(x):
        a = np.maximum(conv2d(x.transpose(2, 0, 1), w1, 1, b1), 0)
        return pixel_shuffle(conv2d(a, w2, 1, b2), 2, "CRD")
    res = check(model_of(nodes, inits, ["N", "H", "W", 1]), reference, rng, hw=((6, 8), (5, 5)))
    assert "DequantizeLinear" not in ops(res.model)


def test_qonnx_quant_weights_are_folded(rng):
    # QONNX / FINN: a float weight behind a Quant node (4-bit, signed, per-tensor scale).
    nodes, inits, ref = body(rng, k_out=9)
    w2 = numpy_helper.to_array(inits[2]).astype(np.float64)
    scale, bits = 0.25, 4
    inits += [init("qs", np.array(scale, np.float32)), init("qz", np.array(0, np.float32)),
              init("qb", np.array(bits, np.float32))]
    nodes[3] = node("Conv", ["a1", "wquant", "b2"], ["t"], pads=[1] * 4)
    nodes.insert(3, helper.make_node("Quant", ["w2", "qs", "qz", "qb"], ["wquant"],
                                     name="wq", domain="qonnx.custom_op.general", signed=1,
                                     narrow=0, rounding_mode="ROUND"))
    nodes += [node("DepthToSpace", ["t"], ["d"], blocksize=3, mode="CRD"),
              node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    wq = np.clip(np.round(w2 / scale), -8, 7) * scale
    w1, b1, _, b2 = (numpy_helper.to_array(t) for t in inits[:4])

    def reference(x):
        a = np.maximum(conv2d(x.transpose(2, 0, 1), w1, 1, b1), 0)
        return pixel_shuffle(conv2d(a, wq, 1, b2), 3, "CRD")
    model = model_of(nodes, inits, ["N", "H", "W", 1], domains=["qonnx.custom_op.general"])
    res = check(model, reference, rng, hw=((6, 8), (4, 7)))
    assert not any(n.op_type == "Quant" for n in res.model.graph.node)


# Look-alikes that are not pixel shuffles --------------------------------------------------

def shuffle_graph(rng, s6, perm, s4, shape=(1, 2, 4, 6)):
    c_in = shape[1]
    w = rng.standard_normal((8, c_in, 3, 3)).astype(np.float32)
    nodes = [node("Conv", ["x", "w"], ["t"], pads=[1] * 4), node("Reshape", ["t", "s6"], ["t6"]),
             node("Transpose", ["t6"], ["tt"], perm=perm), node("Reshape", ["tt", "s4"], ["y"])]
    inits = [init("w", w), init("s6", np.array(s6, np.int64)), init("s4", np.array(s4, np.int64))]
    return model_of(nodes, inits, list(shape))


@pytest.mark.parametrize("s6,perm,s4,why", [
    # The last reshape swaps the spatial sizes: (N, 2, 12, 8), not (N, 2, 8, 12).
    ([1, 2, 2, 2, 4, 6], [0, 1, 4, 2, 5, 3], [1, 2, 12, 8], "not a pixel shuffle"),
    # Spatial axes read in the wrong order (W before H).
    ([1, 2, 2, 2, 6, 4], [0, 1, 4, 2, 5, 3], [1, 2, 12, 8], "does not match the conv output"),
    # H and the phase interleaved the wrong way round: rows r*H blocks, not a shuffle.
    ([1, 2, 2, 2, 4, 6], [0, 1, 2, 4, 3, 5], [1, 2, 8, 12], "not a pixel shuffle"),
])
def test_lookalike_is_left_alone(rng, tmp_path, capsys, s6, perm, s4, why):
    model = shuffle_graph(rng, s6, perm, s4)
    x = rng.random((1, 2, 4, 6)).astype(np.float32)
    y = run(model, x)
    assert y.shape == tuple(s4)
    res = convert_model(model)
    assert res.rewrites == [] and len(res.skipped) == 1
    assert ops(res.model) == ops(model)
    np.testing.assert_array_equal(run(res.model, x), y)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    code = cli.main(["convert", str(src)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_INPUT
    assert out.startswith("skipped Conv+Reshape+Transpose+Reshape: ")
    assert err.strip().splitlines() == [
        f"deconvsr convert: error: {src}: nothing to convert (no sub-pixel or nearest-resize "
        "convolution); --allow-unchanged to accept that"]
    assert why in out or why in res.skipped[0].reason


def test_nothing_to_convert_allowed_with_flag(rng, tmp_path, capsys):
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    model = model_of([node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], [init("w", w)],
                     ["N", 1, "H", "W"])
    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    assert cli.main(["convert", str(src), "-o", str(dst)]) == cli.EXIT_INPUT
    assert not dst.exists()
    capsys.readouterr()
    assert cli.main(["convert", str(src), "-o", str(dst), "--allow-unchanged"]) == 0
    out, err = capsys.readouterr()
    assert "nothing to convert" in out and err == ""
    assert onnx.load(str(dst)).graph == model.graph
