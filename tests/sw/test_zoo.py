"""The model zoo: shipped models, model files, `deconvsr models`."""

import json
import shutil

import numpy as np
import pytest

import deconvsr.sw.cli.main as cli
from deconvsr.sw.model.network import Network
from deconvsr.sw.model.quantize import quantize
from deconvsr.sw.model.zoo import (MODELS_DIR, ModelError, fits_budget, load_model, model_info,
                             save_model, shipped_names)

try:
    from .test_network import random_network
except ImportError:  # tests/ is not a package: rootdir on sys.path
    from test_network import random_network

SHIPPED = {"espcn-paper-x3": (3, "espcn-paper"), "resize-paper-x3": (3, "resize-paper"),
           "edge-x2": (2, "edge"), "edge-x3": (3, "edge")}


def run_cli(monkeypatch, capsys, *argv):
    """``deconvsr`` main with this module's commands only (other engineers' commands may be
    missing from a partial checkout)."""
    monkeypatch.setattr(cli, "COMMANDS", ["models", "eval", "train"])
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_models_are_complete():
    assert set(SHIPPED) <= set(shipped_names())
    for name, (r, arch) in SHIPPED.items():
        net = load_model(name)
        assert net.name == name and net.scale == r and net.meta["arch"] == arch
        t = net.meta["training"]
        assert t["command"].startswith("deconvsr train ") and f"--scale {r}" in t["command"]
        assert t["dataset"] and t["steps"] > 0 and 0 < t["final_loss"] < 0.05
        cal = net.meta["calibration"]
        assert len(cal["act_ranges"]) == len(net.layers) - 1
        assert [len(m) for m in cal["input_means"]] == [la.c_in for la in net.layers]
        # Quantising needs no images and is deterministic.
        a, b = quantize(net), quantize(load_model(name))
        assert all(np.array_equal(x.weight, y.weight) and np.array_equal(x.mult, y.mult)
                   and np.array_equal(x.bias, y.bias) for x, y in zip(a, b))
        assert (MODELS_DIR / f"{name}.npz").stat().st_size < 300_000


def test_edge_models_are_edge_sized():
    for name in ("edge-x2", "edge-x3"):
        info = model_info(load_model(name))
        assert info["weight_bytes"] < 8192 and info["max_channels"] <= 16


def test_save_load_roundtrip(rng, tmp_path):
    net = random_network(rng, "resize", 2)
    net = Network(net.layers, "x", {"arch": "test", "calibration": {"act_ranges": [1.0, 2.0]}})
    npz, js = save_model(net, tmp_path / "m.npz")
    assert npz.name == "m.npz" and js.name == "m.json"
    back = load_model(npz)
    assert back.name == "m" and back.meta["arch"] == "test" and back.scale == 2
    for a, b in zip(net.layers, back.layers):
        assert np.allclose(a.weight, b.weight, atol=1e-6) and a.kind == b.kind and a.r == b.r
    assert load_model(js).layers[0].weight.shape == net.layers[0].weight.shape


@pytest.fixture
def model_copy(tmp_path):
    for suffix in (".npz", ".json"):
        shutil.copy(MODELS_DIR / f"edge-x2{suffix}", tmp_path / f"m{suffix}")
    return tmp_path / "m.npz"


def test_corrupted_weight_file(model_copy):
    np.save(model_copy.with_suffix(".npy"), np.zeros(3))
    model_copy.write_bytes(model_copy.with_suffix(".npy").read_bytes())
    with pytest.raises(ModelError, match=r"m.npz: corrupted weight file \(ValueError: a single "
                                         r".npy array"):
        load_model(model_copy)
    model_copy.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=r"m.npz: corrupted weight file"):
        load_model(model_copy)
    model_copy.write_bytes((MODELS_DIR / "edge-x2.npz").read_bytes())
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"m.npz: corrupted weight file") as e:
        load_model(model_copy)
    assert not e.value.not_found


def test_corrupted_metadata(model_copy):
    js = model_copy.with_suffix(".json")
    js.write_text("{ not json")
    with pytest.raises(ModelError, match=r"m.json: corrupted metadata \(not JSON"):
        load_model(model_copy)
    js.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelError, match="m.json: not a deconvsr model description"):
        load_model(model_copy)
    js.unlink()
    with pytest.raises(ModelError, match="m.npz: the metadata file m.json is missing"):
        load_model(model_copy)


def test_shape_mismatch(model_copy):
    js = model_copy.with_suffix(".json")
    meta = json.loads(js.read_text())
    meta["layers"][1]["c_out"] = 8
    js.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"m: layer 1 \(conv2\): weight shape \(16, 16, 3, 3\) "
                                         r"does not match the description \(8, 16, 3, 3\)"):
        load_model(model_copy)


def test_unknown_names(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nope': not a shipped model") as e:
        load_model("nope")
    assert e.value.not_found
    with pytest.raises(ModelError, match="missing.onnx: no such file"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unknown model file type '.h5'"):
        load_model(tmp_path / "w.h5")


def test_fits_budget_hook():
    net = load_model("edge-x3")
    assert fits_budget(net, max_channels=16, weight_bytes=8192)
    assert not fits_budget(net, max_channels=8)
    assert not fits_budget(load_model("espcn-paper-x3"), weight_bytes=8192)


def test_models_command(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "models", "--json")
    assert code == 0 and err == ""
    infos = {i["name"]: i for i in json.loads(out)}
    assert infos["espcn-paper-x3"]["macs_per_lr_pixel"] == 59_488
    assert infos["espcn-paper-x3"]["weight_bytes"] == 1600 + 36864 + 18432 + 2592
    assert infos["resize-paper-x3"]["layers"][-1] == "nearest x3 + conv 32->1 3x3"
    assert infos["edge-x2"]["scale"] == 2
    assert infos["edge-x2"]["trained"]["dataset"]
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0 and "espcn-paper-x3  x3  59,488 MACs/LR pixel" in out


def _photo_dir(tmp_path, n=2):
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    d = tmp_path / "photos"
    d.mkdir()
    for i, name in enumerate(("astronaut", "coffee")[:n]):
        Image.fromarray(np.asarray(getattr(data, name)())[:150, :180]).save(d / f"{i}.png")
    return d


def test_train_command_writes_a_loadable_model(monkeypatch, capsys, tmp_path):
    pytest.importorskip("torch")
    data = _photo_dir(tmp_path)
    out = tmp_path / "m"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--data", str(data), "--arch",
                                "edge", "--scale", "2", "-o", str(out), "--steps", "3",
                                "--threads", "1", "--batch", "4")
    assert code == 0, err
    assert "trained m: 3 steps" in stdout
    net = load_model(tmp_path / "m.npz")
    t = net.meta["training"]
    assert t["steps"] == 3 and t["dataset"] == "photos" and t["images"] == 2
    assert t["command"] == (f"deconvsr train --data {data} --arch edge --scale 2 -o {out} "
                            "--minutes 5 --steps 3 --batch 4 --patch 24 --lr 0.001 --loss l1 "
                            "--threads 1 --init interp --seed 0")
    assert net.meta["arch"] == "edge" and net.scale == 2
    assert len(quantize(net)) == 3                      # calibrated: quantises without images
    # Continue training from it; a different architecture is refused.
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--data", str(data), "--arch",
                                "edge", "--scale", "2", "-o", str(tmp_path / "m2"), "--steps",
                                "1", "--threads", "1", "--batch", "2", "--init-from",
                                str(tmp_path / "m.npz"))
    assert code == 0, err
    assert load_model(tmp_path / "m2.npz").meta["training"]["init_from"]["training"]["steps"] == 3
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--data", str(data), "--arch",
                                "edge", "--scale", "3", "-o", str(tmp_path / "m3"), "--steps",
                                "1", "--init-from", str(tmp_path / "m.npz"))
    assert code == 2 and "--init-from m: its layers" in err and "differ from the requested" in err


def test_train_without_torch_is_one_line(monkeypatch, capsys, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch -> ImportError
    code, out, err = run_cli(monkeypatch, capsys, "train", "--data", str(tmp_path), "--arch",
                             "edge", "--scale", "2", "-o", str(tmp_path / "m"))
    assert code == 2 and out == ""
    assert err == ("deconvsr train: error: training needs PyTorch: pip install torch==2.13.0 "
                   "(the 'train' extra)\n")


def test_train_bad_data(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", str(tmp_path / "none"),
                           "--arch", "edge", "--scale", "2", "-o", str(tmp_path / "m"))
    assert code == 4 and err.strip().endswith("none: no such directory")


def test_fits_lists_the_specs_the_compiler_accepts(monkeypatch):
    """``deconvsr models``' "fits" comes from the program compiler, not the byte budget
    alone: both edge networks run on the iCE40 spec (edge-x3 in 352 of its 512 weight
    words), but with 320 words its 5,120 weight bytes would hold edge-x3's 4,000 bytes and
    not their packing (every layer at Pi = 4 leaves lanes idle)."""
    import dataclasses
    from deconvsr.spec import SPECS
    assert "icebreaker" in model_info(load_model("edge-x2"))["fits"]
    fits3 = model_info(load_model("edge-x3"))["fits"]
    assert "icebreaker" in fits3 and "ulx3s-85f" in fits3
    monkeypatch.setitem(SPECS, "icebreaker", dataclasses.replace(SPECS["icebreaker"],
                                                                 weight_depth=320))
    assert fits_budget(load_model("edge-x3"), weight_bytes=320 * 16)
    assert "icebreaker" not in model_info(load_model("edge-x3"))["fits"]
    assert "icebreaker" in model_info(load_model("edge-x2"))["fits"]


def test_fits_budget_counts_layers_and_bias_entries():
    net = load_model("edge-x3")                        # 16 + 16 + 1 * 3 * 3 bias entries
    assert fits_budget(net, bias_entries=41) and not fits_budget(net, bias_entries=40)
    assert fits_budget(net, max_layers=3) and not fits_budget(net, max_layers=2)
    assert fits_budget(net, weight_bytes=4000) and not fits_budget(net, weight_bytes=3999)


def test_multiscale_training_pairs(tmp_path):
    """--hr-scales adds downscaled copies of each photograph as HR images (numpy only)."""
    from deconvsr.sw.host.imaging import degrade
    from deconvsr.sw.model.train import TrainError, load_pairs

    data = _photo_dir(tmp_path, 1)
    pairs = load_pairs(data, 3, min_lr=16, hr_scales=(1.0, 0.5))
    assert [hr.shape for _, hr in pairs] == [(150, 180), (75, 90)]
    for lr, hr in pairs:
        assert lr.shape == (hr.shape[0] // 3, hr.shape[1] // 3)
        hr_u8 = np.rint(hr * 255).astype(np.uint8)
        assert np.array_equal(np.rint(lr * 255).astype(np.uint8), degrade(hr_u8, 3))
    assert len(load_pairs(data, 3, min_lr=30, hr_scales=(1.0, 0.5))) == 1  # too small: skipped
    with pytest.raises(TrainError, match="HR scales"):
        load_pairs(data, 3, hr_scales=(1.5,))
