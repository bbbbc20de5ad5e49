"""`deconvsr eval`: the evaluation pipeline, its errors, and (slow) the acceptance numbers."""

import json

import numpy as np
import pytest
from PIL import Image

from deconvsr.sw.model.evaluate import evaluate, self_ensemble, standard_upscalers
from deconvsr.sw.host.imaging import (bicubic_resize, crop_to_multiple, degrade, psnr, rgb_to_ycbcr,
                                 to_u8)
from deconvsr.sw.model.network import Network
from deconvsr.sw.model.quantize import calibrate, quantize
from deconvsr.sw.model.zoo import MODELS_DIR, load_model

try:
    from .test_network import random_network
    from .test_zoo import run_cli
except ImportError:  # tests/ is not a package: rootdir on sys.path
    from test_network import random_network
    from test_zoo import run_cli


def photo(h=61, w=76):
    data = pytest.importorskip("skimage.data")
    return np.asarray(data.astronaut())[100:100 + h, 200:200 + w]


def test_evaluate_pipeline(rng):
    rgb = photo()
    net = random_network(rng, "subpixel", 3)
    hr = to_u8(rgb_to_ycbcr(crop_to_multiple(rgb, 3))[..., 0])
    lr = degrade(hr, 3)
    net = Network(net.layers, "n", {"calibration": calibrate(net, [lr / 255.0])})
    ups = standard_upscalers(net, quantize(net))
    ups["nearest"] = lambda x: np.kron(x, np.ones((3, 3)))       # a plugged-in backend
    res = evaluate([("astro", rgb)], 3, ups, min_lr=net.receptive_field)
    row = res["images"][0]
    assert row["hr_size"] == [75, 60] and row["lr_size"] == [25, 20]
    assert res["methods"] == ["bicubic", "float", "deconv", "int8", "nearest"]
    bic = to_u8(bicubic_resize(lr, (75, 60)))
    assert row["psnr"]["bicubic"] == pytest.approx(psnr(hr, bic, border=3))
    assert row["psnr"]["nearest"] == pytest.approx(psnr(hr, np.kron(lr, np.ones((3, 3))),
                                                        border=3))
    assert row["psnr"]["float"] == row["psnr"]["deconv"]
    assert row["max_abs_diff"]["float-deconv"] <= 1e-10
    assert abs(row["psnr"]["float"] - row["psnr"]["int8"]) < 1.0
    assert res["mean"]["psnr"]["bicubic"] == row["psnr"]["bicubic"]


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(photo(80, 96)).save(path)
    return path


def test_eval_command_json(monkeypatch, capsys, png):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), "--model",
                             "edge-x2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["model"] == "edge-x2" and res["scale"] == 2
    assert res["methods"] == ["bicubic", "float", "deconv", "int8"]
    s = res["summary"]
    assert s["max_abs_diff_float_deconv"] <= 1e-4
    assert abs(s["int8_loss_db"]) < 0.5
    assert s["gain_vs_bicubic_db"] == pytest.approx(
        res["mean"]["psnr"]["float"] - res["mean"]["psnr"]["bicubic"])


def test_eval_command_table(monkeypatch, capsys, png):
    code, out, _ = run_cli(monkeypatch, capsys, "eval", "--data", str(png), str(png),
                           "--model", "edge-x2", "--scale", "2", "--limit", "1")
    assert code == 0
    assert "BT.601 studio-range Y" in out and "2-pixel border shaved" in out
    assert out.count("img.png") == 1 and "\nmean " in out


def test_self_ensemble(rng):
    """The mean over the 8 flips/rotations, each output turned back: an upscaler that commutes
    with them is unchanged; one that does not is averaged."""
    lr = rng.integers(0, 256, size=(5, 7)).astype(float)
    nearest = lambda x: np.kron(x, np.ones((3, 3)))             # noqa: E731
    np.testing.assert_array_equal(self_ensemble(nearest)(lr), nearest(lr))
    # an upscaler that weights the top-left corner: its ensemble spreads the weight to all four
    def corner(x):
        y = np.kron(x, np.ones((2, 2)))
        y[0, 0] *= 2
        return y

    got = self_ensemble(corner)(lr)
    want = np.kron(lr, np.ones((2, 2)))
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        want[i, j] *= 1.25                                      # 2 of the 8 put it in each corner
    np.testing.assert_allclose(got, want)


def test_eval_command_self_ensemble(monkeypatch, capsys, png):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), "--model",
                             "edge-x2", "--json", "--self-ensemble")
    assert code == 0, err
    res = json.loads(out)
    assert res["methods"] == ["bicubic", "float", "deconv", "int8", "float-x8"]
    assert res["summary"]["self_ensemble_gain_vs_bicubic_db"] == pytest.approx(
        res["mean"]["psnr"]["float-x8"] - res["mean"]["psnr"]["bicubic"])


def _one_line_error(capsys_result, code, expected_code, text):
    _, out, err = capsys_result
    assert code == expected_code
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("deconvsr eval: error: ") and text in err


@pytest.mark.parametrize("argv,expected_code,text", [
    (["--model", "edge-x2", "--scale", "3"], 2, "model edge-x2 upscales by 2, but --scale is 3"),
    (["--model", "no-such-model"], 4, "unknown model 'no-such-model'"),
    (["--model", "edge-x2", "--limit", "0"], 2, "--limit must be >= 1, not 0"),
])
def test_eval_argument_errors(monkeypatch, capsys, png, argv, expected_code, text):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), *argv)
    _one_line_error((code, out, err), code, expected_code, text)


def test_eval_missing_data(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(tmp_path / "none"),
                             "--model", "edge-x2")
    _one_line_error((code, out, err), code, 4, "none: no such file or directory")


def test_eval_image_smaller_than_receptive_field(monkeypatch, capsys, tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(photo(40, 60)).save(path)       # x3 -> 20 x 13 LR; edge-x3 needs 9
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(path), "--model",
                             "edge-x3")
    assert code == 0, err
    Image.fromarray(photo(24, 60)).save(path)       # x3 -> 20 x 8 LR
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(path), "--model",
                             "edge-x3")
    _one_line_error((code, out, err), code, 2, "tiny.png: 60x24 is too small: its x3 downscale "
                                               "20x8 must be at least 9x9")


def test_eval_corrupted_model(monkeypatch, capsys, png, tmp_path):
    for suffix in (".npz", ".json"):
        (tmp_path / f"m{suffix}").write_bytes((MODELS_DIR / f"edge-x2{suffix}").read_bytes())
    (tmp_path / "m.npz").write_bytes(b"PK\x03\x04broken")
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), "--model",
                             str(tmp_path / "m.npz"))
    _one_line_error((code, out, err), code, 2, "m.npz: corrupted weight file")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["espcn-paper-x3", "resize-paper-x3", "edge-x2", "edge-x3"])
def test_acceptance_on_skimage_photos(monkeypatch, capsys, name):
    """The issue's acceptance numbers on the CC0 photographs (not trained on)."""
    pytest.importorskip("skimage")
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", "skimage", "--model", name,
                             "--json")
    assert code == 0, err
    s = json.loads(out)["summary"]
    assert s["max_abs_diff_float_deconv"] <= 1e-4
    assert s["int8_loss_db"] <= 0.1
    assert s["gain_vs_bicubic_db"] > 0 and s["int8_gain_vs_bicubic_db"] > 0
    assert load_model(name).scale == json.loads(out)["scale"]


def test_eval_imported_onnx_calibrates_on_the_images(monkeypatch, capsys, png, tmp_path, rng):
    import onnx
    try:
        from .test_importers import onnx_of
    except ImportError:
        from test_importers import onnx_of
    net = random_network(rng, "subpixel", 2)
    onnx.save(onnx_of(net, "d2s"), str(tmp_path / "r.onnx"))
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), "--model",
                             str(tmp_path / "r.onnx"), "--json")
    assert code == 0
    assert err == ("deconvsr eval: note: the model file has no calibration: int8 calibrated "
                   "on the evaluated images\n")
    res = json.loads(out)
    assert res["methods"] == ["bicubic", "float", "deconv", "int8"]
    assert res["summary"]["max_abs_diff_float_deconv"] <= 1e-4


def test_eval_shape_mismatch_is_one_line(monkeypatch, capsys, png, tmp_path):
    for suffix in (".npz", ".json"):
        (tmp_path / f"m{suffix}").write_bytes((MODELS_DIR / f"edge-x2{suffix}").read_bytes())
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["layers"][0]["k"] = 3
    meta["layers"][0]["padding"] = 1
    (tmp_path / "m.json").write_text(json.dumps(meta))
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(png), "--model",
                             str(tmp_path / "m.npz"))
    _one_line_error((code, out, err), code, 2, "m: layer 0 (conv1): weight shape (16, 1, 5, 5) "
                                               "does not match the description (16, 1, 3, 3)")
