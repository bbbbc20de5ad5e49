"""Importing ONNX and PyTorch files: results identical to onnxruntime / torch."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deconvsr.sw.model.importers import ImportError_, import_onnx, import_onnx_model, import_state_dict
from deconvsr.sw.model.zoo import ModelError, load_model

try:
    from .test_network import random_network, real_plane
except ImportError:  # tests/ is not a package: rootdir on sys.path
    from test_network import random_network, real_plane

H, W = 14, 17


def _init(name, arr, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(arr, dtype), name)


def onnx_of(net, style, opset=17, h=H, w=W):
    """An ONNX graph of ``net`` written the way exporters do. ``style``: 'd2s' (DepthToSpace),
    'rtr' (Reshape-Transpose-Reshape), 'resize' (Resize nearest + Conv)."""
    nodes, inits = [], []
    cur = "x"
    for i, layer in enumerate(net.layers):
        if layer.kind == "resize":
            inits.append(_init(f"scales{i}", [1, 1, layer.r, layer.r]))
            nodes.append(helper.make_node("Resize", [cur, "", f"scales{i}"], [f"up{i}"],
                                          name=f"Resize_{i}", mode="nearest",
                                          coordinate_transformation_mode="asymmetric",
                                          nearest_mode="floor"))
            cur = f"up{i}"
        inits += [_init(f"w{i}", layer.weight), _init(f"b{i}", layer.bias)]
        p = layer.padding
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"],
                                      name=f"Conv_{i}", kernel_shape=[layer.k, layer.k],
                                      pads=[p, p, p, p]))
        cur = f"c{i}"
        if layer.relu:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"Relu_{i}"))
            cur = f"r{i}"
        if layer.kind == "subpixel":
            r, c = layer.r, layer.c_out
            if style == "d2s":
                nodes.append(helper.make_node("DepthToSpace", [cur], ["y"], name="D2S",
                                              blocksize=r, mode=layer.mode))
            else:
                shape6 = [1, c, r, r, h, w] if layer.mode == "CRD" else [1, r, r, c, h, w]
                perm = [0, 1, 4, 2, 5, 3] if layer.mode == "CRD" else [0, 3, 4, 1, 5, 2]
                nodes += [helper.make_node("Constant", [], ["s6"],
                                           value=_init("s6v", shape6, np.int64)),
                          helper.make_node("Reshape", [cur, "s6"], ["t6"], name="Reshape_a"),
                          helper.make_node("Transpose", ["t6"], ["u6"], name="Transpose",
                                           perm=perm)]
                inits.append(_init("s4", [1, c, h * r, w * r], np.int64))
                nodes.append(helper.make_node("Reshape", ["u6", "s4"], ["y"], name="Reshape_b"))
            cur = "y"
    nodes[-1].output[0] = "y"
    r = net.scale
    graph = helper.make_graph(
        nodes, "sr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, h * r, w * r])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x[None, None].astype(np.float32)})[0][0, 0]


@pytest.mark.parametrize("kind,style,mode,r", [
    ("subpixel", "d2s", "CRD", 3), ("subpixel", "d2s", "DCR", 2),
    ("subpixel", "rtr", "CRD", 3), ("subpixel", "rtr", "DCR", 2),
    ("resize", "resize", "CRD", 3)])
def test_onnx_import_matches_onnxruntime(rng, tmp_path, kind, style, mode, r):
    net = random_network(rng, kind, r, mode=mode)
    model = onnx_of(net, style)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    got = import_onnx(path)
    assert [la.kind for la in got.layers] == [la.kind for la in net.layers]
    # A DCR shuffle is imported as CRD with the conv's output channels reordered.
    assert got.scale == r and got.layers[-1].mode == "CRD"
    x = real_plane(H, W)
    ref = run_ort(model, x)
    assert np.abs(got.forward(x, clamp=False) - ref).max() <= 1e-5
    assert np.abs(got.to_deconv().forward(x, clamp=False) - ref).max() <= 1e-5
    assert np.array_equal(load_model(path).layers[0].weight, got.layers[0].weight)


def _replace(model, index, node):
    nodes = list(model.graph.node)
    nodes[index] = node
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def test_onnx_unsupported_operator_named(rng):
    model = onnx_of(random_network(rng, widths=(4,)), "d2s")
    _replace(model, 1, helper.make_node("Softsign", ["c0"], ["r0"], name="act1"))
    with pytest.raises(ImportError_, match=r"node act1 \(Softsign\): operator Softsign is not "
                                           "supported"):
        import_onnx_model(model, "m")


def test_onnx_bilinear_resize_refused(rng):
    model = onnx_of(random_network(rng, "resize", 2, widths=(4,)), "resize")
    node = [n for n in model.graph.node if n.op_type == "Resize"][0]
    for a in node.attribute:
        if a.name == "mode":
            a.s = b"linear"
    with pytest.raises(ImportError_, match=r"m: Resize_1 \+ Conv_1: Resize mode 'linear' is "
                                           "not exactly a deconvolution"):
        import_onnx_model(model, "m")


def test_onnx_strided_conv_and_colour_input_refused(rng):
    model = onnx_of(random_network(rng, widths=(4,)), "d2s")
    conv = model.graph.node[0]
    conv.attribute.append(helper.make_attribute("strides", [2, 2]))
    with pytest.raises(ImportError_, match=r"node Conv_0 \(Conv\): strided convolution"):
        import_onnx_model(model, "m")
    net = random_network(rng, widths=(4,))
    model = onnx_of(net, "d2s")
    w = numpy_helper.to_array(model.graph.initializer[0])
    model.graph.initializer[0].CopyFrom(_init("w0", np.repeat(w, 3, axis=1)))
    with pytest.raises(Exception, match="layer 0 \\(Conv_0\\): takes 3 input channels"):
        import_onnx_model(model, "m")


def test_corrupted_onnx_file(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage that is not protobuf\xff\xff\xff")
    with pytest.raises(ImportError_, match="bad.onnx: corrupted ONNX file"):
        import_onnx(path)
    with pytest.raises(ModelError, match="bad.onnx: corrupted ONNX file"):
        load_model(path)


# PyTorch -----------------------------------------------------------------------------------
def _torch_espcn(torch, r=3):
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1),
                      nn.ReLU(), nn.Conv2d(6, r * r, 3, padding=1), nn.PixelShuffle(r))
    with torch.no_grad():
        m[4].bias.add_(0.4)
    return m.eval()


@pytest.mark.parametrize("opset,op", [(17, "DepthToSpace"), (9, "Transpose")])
def test_torch_onnx_export_imports(tmp_path, opset, op):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    m = _torch_espcn(torch)
    path = tmp_path / "t.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the legacy exporter warns about itself
        torch.onnx.export(m, torch.zeros(1, 1, H, W), str(path), opset_version=opset,
                          dynamo=False, input_names=["x"])
    model = onnx.load(str(path))
    assert op in [n.op_type for n in model.graph.node]
    net = import_onnx(path)
    x = real_plane(H, W)
    ref = run_ort(model, x)
    with torch.no_grad():
        tref = m(torch.from_numpy(x[None, None].astype(np.float32)))[0, 0].numpy()
    assert np.abs(net.forward(x, clamp=False) - ref).max() <= 1e-5
    assert np.abs(net.forward(x, clamp=False) - tref).max() <= 1e-5


def test_state_dict_import(tmp_path):
    torch = pytest.importorskip("torch")
    m = _torch_espcn(torch, 2)
    path = tmp_path / "sd.pth"
    torch.save(m.state_dict(), path)
    # Weights only: the activations and padding are options, never guessed.
    with pytest.raises(ImportError_, match=r"sd.pth: a state_dict does not say which "
                                           r"activation follows each conv: give --act"):
        import_state_dict(path, padding="same")
    with pytest.raises(ImportError_, match=r"sd.pth: a state_dict does not say how each conv "
                                           r"pads: give --padding"):
        import_state_dict(path, act="relu")
    with pytest.raises(ModelError, match=r"sd.pth: a state_dict holds weights only"):
        load_model(path)
    net = import_state_dict(path, act="relu", padding="same")
    assert net.scale == 2 and [la.kind for la in net.layers] == ["conv", "conv", "subpixel"]
    x = real_plane(H, W)
    with torch.no_grad():
        tref = m(torch.from_numpy(x[None, None].astype(np.float32)))[0, 0].numpy()
    got = load_model(path, options={"act": "relu", "padding": "2,1,1"})
    assert np.abs(got.forward(x, clamp=False) - tref).max() <= 1e-5
    # The wrong activation is not silently accepted either: it is what the user said.
    assert import_state_dict(path, act="tanh", padding="same").layers[0].act == "tanh"


def test_whole_module_pickle_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "whole.pt"
    torch.save(_torch_espcn(torch), path)
    with pytest.raises(ModelError, match=r"whole.pt: holds a whole pickled model or other "
                                         r"Python objects \(torch.nn.modules.container."
                                         r"Sequential\), not a state_dict; save the weights "
                                         r"only: torch.save\(model.state_dict\(\), path\)"):
        load_model(path)


def test_state_dict_with_batchnorm_refused(tmp_path):
    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    path = tmp_path / "bn.pt"
    torch.save(m.state_dict(), path)
    with pytest.raises(ImportError_, match=r"parameter '1.weight' \(shape \(4,\)\) is not a "
                                           "convolution"):
        import_state_dict(path, act="relu", padding="same")


def _damaged(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[:len(data) // 2]
    if how == "flipped":        # bytes inside the pickle flipped: the unpickler fails
        b = bytearray(data)
        i = data.index(b"data.pkl") + 60
        b[i:i + 40] = bytes(x ^ 0x5A for x in b[i:i + 40])
        return bytes(b)
    if how == "junk-pickle":    # a pickle the weights-only unpickler rejects as an operand
        return b"\x80\x02" + bytes(range(33, 200))
    return {"empty": b"", "zip-header": b"PK\x03\x04 definitely not a zip",
            "text": b"hello world\n"}[how]


@pytest.mark.parametrize("how", ["truncated", "flipped", "junk-pickle", "empty", "zip-header",
                                 "text"])
def test_corrupted_state_dict(tmp_path, how):
    # Every error of torch's weights-only unpickler mentions weights_only: a damaged file must
    # still be called corrupted, not "a whole pickled model".
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save(_torch_espcn(torch, 2).state_dict(), good)
    path = tmp_path / "bad.pt"
    path.write_bytes(_damaged(good.read_bytes(), how))
    with pytest.raises(ModelError, match=r"^\S*bad.pt: corrupted PyTorch file \(.*\)$"):
        load_model(path)
    with pytest.raises(ImportError_, match="bad.pt: corrupted PyTorch file"):
        import_state_dict(path, act="relu", padding="same")


def test_state_dict_without_torch_is_clear(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"w.pth: reading PyTorch files needs torch \(pip install "
                                         r"torch==2.13.0\), or export the model to ONNX"):
        load_model(path)
