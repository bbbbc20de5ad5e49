"""`deconvsr import`: a trained network (ONNX in any export form, or a PyTorch state_dict with
its activations and padding given) converted, calibrated and saved as a package that
`upscale`, `eval`, `models` and `bench engine` take by path; networks the engine cannot run
yet (Tanh, PReLU, LeakyReLU) imported with their activation recorded and refused, one line,
where they would run."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import deconvsr.sw.cli.main as cli
from deconvsr.sw.cli.upscale import upscale_rgb
from deconvsr.sw.host.device import GoldenDevice
from deconvsr.sw.host.imaging import rgb_to_ycbcr, to_u8
from deconvsr.sw.model.quantize import run_quantized
from deconvsr.sw.model.zoo import load_model, load_quantized

FORMS = Path(__file__).parent / "onnx_forms"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err, command, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"deconvsr {command}: "), lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def photos(tmp_path, rng):
    """Two small photographs in a folder (calibration and test images)."""
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(2):
        y, x = np.mgrid[:60, :72]
        img = 128 + 60 * np.sin(x / (5 + i)) * np.cos(y / 7) + rng.normal(0, 8, (60, 72))
        rgb = np.clip(np.stack([img, img * 0.9, img * 0.8], -1), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(d / f"p{i}.png")
    return d


def test_onnx_import_then_every_command(tmp_path, photos, capsys):
    src = FORMS / "sub-ts9-dynamic.onnx"        # the form `convert` used to miss
    pkg = tmp_path / "pkgs" / "mine.npz"
    code, out, err = run(capsys, "import", src, "-o", pkg, "--calib", photos)
    assert code == 0 and err == "", err
    assert out.startswith(f"imported {src} -> {pkg} (+ mine.json): x3")
    meta = json.loads(pkg.with_suffix(".json").read_text())
    assert meta["format"] == "deconvsr-model/1" and meta["imported"]["file"] == src.name
    assert meta["imported"]["calibration_images"] == ["p0.png", "p1.png"]
    assert len(meta["calibration"]["act_ranges"]) == 1
    # models / upscale (golden) / eval take the package by path.
    code, out, _ = run(capsys, "models", pkg)
    assert code == 0 and out.startswith("mine  x3  ")
    code, _, err = run(capsys, "upscale", photos / "p0.png", "-o", tmp_path / "o.png",
                       "--model", pkg, "--device", "golden")
    assert code == 0, err
    net, q = load_quantized(pkg)
    want, y_hr, _ = upscale_rgb(GoldenDevice(), q, 3, np.asarray(Image.open(photos / "p0.png")))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), want)
    y = to_u8(rgb_to_ycbcr(np.asarray(Image.open(photos / "p0.png")))[..., 0])
    assert np.array_equal(y_hr, run_quantized(q, y)) and y_hr.shape == (180, 216)
    code, out, err = run(capsys, "eval", "--data", photos, "--model", pkg)
    assert code == 0 and "quantisation: int8 loses" in out and "note" not in err
    # upscale --model MODEL.onnx --calib DIR: the same on the fly.
    code, _, err = run(capsys, "upscale", photos / "p0.png", "-o", tmp_path / "o2.png",
                       "--model", src, "--device", "golden", "--calib", photos)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o2.png")),
                          np.asarray(Image.open(tmp_path / "o.png")))
    code, _, err = run(capsys, "upscale", photos / "p0.png", "-o", tmp_path / "o3.png",
                       "--model", src, "--device", "golden")
    assert code == cli.EXIT_INPUT
    one_line(err, "upscale", "no calibrated activation ranges", "--calib", "deconvsr import")


def test_tf2onnx_style_import(tmp_path, photos, capsys, rng):
    # NHWC in and out, DepthToSpace(DCR) between transposes: imported as a CRD sub-pixel layer
    # with its channels reordered; the float network equals onnxruntime.
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["xn"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xn", "w1"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.2, name="act1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["t"], pads=[1] * 4, name="conv2"),
             helper.make_node("Transpose", ["t"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2]),
             helper.make_node("DepthToSpace", ["t2"], ["d"], blocksize=2, mode="DCR"),
             helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, "tf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "H", "W", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "H2", "W2", 1])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "tf.onnx"
    onnx.save(model, path)
    net = load_model(path)
    assert [la.act for la in net.layers] == ["leakyrelu", "none"]
    assert net.layers[0].act_name == "LeakyReLU(0.2)"
    x = rng.random((9, 11))
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None, :, :, None].astype(np.float32)})[0][0, :, :, 0]
    np.testing.assert_allclose(net.forward(x, clamp=False), ref, rtol=1e-5, atol=1e-5)
    code, out, err = run(capsys, "import", path, "-o", tmp_path / "tf.npz", "--calib", photos)
    assert code == 0
    one_line(err, "import", "layer 0 (conv1): activation LeakyReLU(0.2): the engine runs ReLU "
                            "only for now")
    back = load_model(tmp_path / "tf.npz")
    assert back.layers[0].act == "leakyrelu" and float(back.layers[0].act_param) == np.float32(0.2)


def _espcn_tanh(torch, r=3):
    """The structure of a published ESPCN x3 state_dict (first_part: conv 5x5 64, Tanh, conv
    3x3 32, Tanh; last_part: conv 3x3 r^2 + PixelShuffle)."""
    nn = torch.nn
    torch.manual_seed(1)

    class ESPCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.first_part = nn.Sequential(nn.Conv2d(1, 64, 5, padding=2), nn.Tanh(),
                                            nn.Conv2d(64, 32, 3, padding=1), nn.Tanh())
            self.last_part = nn.Sequential(nn.Conv2d(32, r * r, 3, padding=1),
                                           nn.PixelShuffle(r))

        def forward(self, x):
            return self.last_part(self.first_part(x))
    return ESPCN().eval()


def test_tanh_state_dict_is_imported_as_tanh_and_refused_to_run(tmp_path, photos, capsys):
    torch = pytest.importorskip("torch")
    m = _espcn_tanh(torch)
    src = tmp_path / "espcn_x3.pth"
    torch.save(m.state_dict(), src)
    pkg = tmp_path / "espcn.npz"
    # Nothing is guessed: no --act, no --padding -> one line each.
    code, out, err = run(capsys, "import", src, "-o", pkg, "--calib", photos)
    assert code == cli.EXIT_INPUT and out == "" and not pkg.exists()
    one_line(err, "import", "espcn_x3.pth: a state_dict does not say which activation follows "
                            "each conv: give --act")
    code, _, err = run(capsys, "import", src, "-o", pkg, "--calib", photos, "--act", "tanh")
    assert code == cli.EXIT_INPUT
    one_line(err, "import", "does not say how each conv pads: give --padding")
    code, out, err = run(capsys, "import", src, "-o", pkg, "--calib", photos, "--act", "tanh",
                         "--padding", "same")
    assert code == 0 and "conv 1->64 5x5 Tanh" in out
    one_line(err, "import", "layer 0 (first_part.0): activation Tanh: the engine runs ReLU only "
                            "for now")
    net = load_model(pkg)
    assert [la.act for la in net.layers] == ["tanh", "tanh", "none"]
    x = np.random.default_rng(0).random((12, 14))
    with torch.no_grad():
        tref = m(torch.from_numpy(x[None, None].astype(np.float32)))[0, 0].numpy()
    np.testing.assert_allclose(net.forward(x, clamp=False), tref, rtol=1e-4, atol=1e-5)
    # Refused where it would run, one line naming the layer and the activation.
    for argv in (["upscale", photos / "p0.png", "-o", tmp_path / "o.png", "--model", pkg,
                  "--device", "golden"],
                 ["bench", "engine", "--model", pkg]):
        code, out, err = run(capsys, *argv)
        assert code == cli.EXIT_INPUT and out == ""
        one_line(err, argv[0],
                 "layer 0 (first_part.0): activation Tanh: the engine runs ReLU only for now")
    code, out, _ = run(capsys, "models", pkg)
    assert code == 0 and "fits: none (espcn: layer 0 (first_part.0): activation Tanh" in out


def test_prelu_state_dict(tmp_path, photos, capsys):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.PReLU(8), nn.Conv2d(8, 4, 3, padding=1),
                      nn.PixelShuffle(2)).eval()
    with torch.no_grad():
        m[1].weight.uniform_(-0.5, 0.5)
    src = tmp_path / "fsr.pt"
    torch.save(m.state_dict(), src)
    code, _, err = run(capsys, "import", src, "-o", tmp_path / "p.npz", "--calib", photos,
                       "--act", "relu", "--padding", "same")
    assert code == cli.EXIT_INPUT
    one_line(err, "import", "parameter '1.weight' (shape (8,)) is not a convolution (a PReLU? "
                            "give --act prelu)")
    code, _, err = run(capsys, "import", src, "-o", tmp_path / "p.npz", "--calib", photos,
                       "--act", "prelu", "--padding", "same")
    assert code == 0 and "activation PReLU" in err
    net = load_model(tmp_path / "p.npz")
    np.testing.assert_allclose(net.layers[0].act_param, m[1].weight.detach().numpy(), rtol=1e-6)
    x = np.random.default_rng(1).random((10, 9))
    with torch.no_grad():
        tref = m(torch.from_numpy(x[None, None].astype(np.float32)))[0, 0].numpy()
    np.testing.assert_allclose(net.forward(x, clamp=False), tref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv,fragments", [
    (["--act", "swish"], ["--act: 'swish' is not one of relu, tanh"]),
    (["--act", "relu,relu,relu,relu", "--padding", "same"], ["--act: 4 activations for 2 "
                                                             "hidden layers"]),
    (["--act", "leakyrelu:abc", "--padding", "same"], ["--act: slope 'abc'"]),
    (["--act", "relu", "--padding", "2,1"], ["--padding: '2,1' is not 'same', one integer or "
                                             "one integer per conv (3)"]),
    (["--act", "relu", "--padding", "same", "--scale", "9"], ["--scale: must be in 2..8"]),
])
def test_bad_options_one_line(tmp_path, photos, capsys, argv, fragments):
    torch = pytest.importorskip("torch")
    src = tmp_path / "m.pth"
    torch.save(_espcn_tanh(torch).state_dict(), src)
    if "--padding" not in argv:
        argv = argv + ["--padding", "same"]
    code, out, err = run(capsys, "import", src, "-o", tmp_path / "o.npz", "--calib", photos,
                         *argv)
    assert code == cli.EXIT_INPUT and out == "" and not (tmp_path / "o.npz").exists()
    one_line(err, "import", *fragments)


@pytest.mark.parametrize("case,fragments,code", [
    ("missing", ["nope.onnx: no such file"], cli.EXIT_NOT_FOUND),
    ("corrupted", ["bad.onnx: corrupted ONNX file"], cli.EXIT_INPUT),
    ("act-on-onnx", ["--act: only for a PyTorch state_dict"], cli.EXIT_INPUT),
    ("bad-output", ["-o: ", "out.png: give NAME.npz"], cli.EXIT_INPUT),
    ("no-calib", ["--calib: ", "no such file"], cli.EXIT_NOT_FOUND),
])
def test_refused_files_and_options_one_line(tmp_path, photos, capsys, case, fragments, code):
    src = tmp_path / "m.onnx"
    shutil.copy(FORMS / "resize-ts17-dynamic.onnx", src)
    argv = [src, "-o", tmp_path / "o.npz", "--calib", photos]
    if case == "missing":
        argv[0] = tmp_path / "nope.onnx"
    elif case == "corrupted":
        argv[0] = tmp_path / "bad.onnx"
        argv[0].write_bytes(src.read_bytes()[:200] + b"\xff" * 50)
    elif case == "act-on-onnx":
        argv += ["--act", "relu"]
    elif case == "bad-output":
        argv[2] = tmp_path / "out.png"
    else:
        argv[4] = tmp_path / "nowhere"
    got, out, err = run(capsys, "import", *argv)
    assert got == code and out == ""
    one_line(err, "import", *fragments)
