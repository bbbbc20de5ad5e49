"""The figures of README.md and docs/*.md that commands produce (``docs/figures.py``): every
registered place still stands in its doc, and (slow) the quick commands still print what the
docs say. The build figures are checked by the bitstream tests, on the builds CI makes."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "docs" / "figures.py").exists():
    ROOT = ROOT.parent


def figures():
    spec = importlib.util.spec_from_file_location("figures", ROOT / "docs" / "figures.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["figures"] = mod           # (its dataclasses look themselves up there)
    spec.loader.exec_module(mod)
    return mod


def test_every_place_stands_once_in_its_doc():
    f = figures()
    for fs in f.FIGURES.values():
        for place in fs.places:
            m = f.find(place)
            assert m.groupdict() and all(m.groupdict().values()), (fs.name, place.path)


def test_update_writes_the_commands_figures(tmp_path, monkeypatch):
    f = figures()
    for name in ("README.md", "docs/models.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.setattr(f, "ROOT", tmp_path)
    fs = f.FIGURES["eval-edge-x2"]
    result = {"mean": {"psnr": {"bicubic": 30.0, "float": 31.004, "deconv": 31.004,
                                "int8": 30.996},
                       "ssim": {"bicubic": 0.9, "float": 0.91, "deconv": 0.91, "int8": 0.905}},
              "summary": {"gain_vs_bicubic_db": 1.004, "int8_gain_vs_bicubic_db": 0.996,
                          "int8_loss_db": 0.008},
              "images": [{"name": n, "psnr": {"bicubic": 30.0, "float": 31.0 + i / 100}}
                         for i, n in enumerate(("astronaut", "chelsea", "coffee", "rocket"))]}
    assert f.compare(fs, result)
    assert f.update(fs, result) > 0
    assert f.compare(fs, result) == []
    assert "| `edge-x2` (for small FPGAs) | 3,280 | 30.00 | 31.00 | 31.00 | +1.00 dB |" in \
        (tmp_path / "README.md").read_text()
    assert "astronaut +1.00, chelsea +1.01, coffee +1.02, rocket +1.03" in \
        (tmp_path / "docs/models.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["models", "eval-espcn-paper-x3", "eval-resize-paper-x3",
                                  "eval-edge-x2", "eval-edge-x3"])
def test_docs_agree_with_the_commands(name):
    f = figures()
    fs = f.FIGURES[name]
    diffs = f.compare(fs, fs.run())
    assert not diffs, "\n".join(diffs) + f"\n(python docs/figures.py update {name})"
