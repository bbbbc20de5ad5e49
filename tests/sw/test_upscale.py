"""`deconvsr upscale` end to end: the simulated RTL is bit-exact with the golden model; bad
input gives one line and a distinct exit code."""

import numpy as np
import pytest
from PIL import Image

from deconvsr.sw.cli.main import EXIT_DEVICE, EXIT_INPUT, EXIT_NOT_FOUND, main


def _photo(path, side, rng=None):
    from skimage import data
    img = np.asarray(data.astronaut())[120:120 + side, 220:220 + side]
    Image.fromarray(img).save(path)
    return path


def _load(path):
    with Image.open(path) as im:
        return np.asarray(im)


def _run(capsys, *argv):
    code = main(list(map(str, argv)))
    return code, capsys.readouterr()


def test_tiny_frame_sim_equals_golden(tmp_path, capsys):
    src = _photo(tmp_path / "in.png", 10)
    code, out = _run(capsys, "upscale", src, "-o", tmp_path / "g.png", "--device", "golden")
    assert code == 0, out.err
    code, out = _run(capsys, "upscale", src, "-o", tmp_path / "s.png", "--device", "sim",
                     "--compare", tmp_path / "c.png")
    assert code == 0, out.err
    g, s = (_load(tmp_path / n) for n in ("g.png", "s.png"))
    assert g.shape == (30, 30, 3) and np.array_equal(g, s)
    assert _load(tmp_path / "c.png").shape[1] > 3 * 30


@pytest.mark.slow
@pytest.mark.long
def test_photo_sim_equals_golden(tmp_path, capsys):
    src = _photo(tmp_path / "in.png", 48)
    for dev in ("golden", "sim"):
        assert _run(capsys, "upscale", src, "-o", tmp_path / f"{dev}.png", "--device", dev)[0] == 0
    assert np.array_equal(_load(tmp_path / "golden.png"), _load(tmp_path / "sim.png"))


@pytest.mark.parametrize("case, code", [("missing", EXIT_NOT_FOUND), ("notimage", EXIT_INPUT),
                                        ("zero", EXIT_INPUT), ("huge", EXIT_INPUT),
                                        ("model", EXIT_NOT_FOUND), ("port", EXIT_DEVICE)])
def test_bad_input(tmp_path, capsys, case, code):
    src = _photo(tmp_path / "ok.png", 8)
    args = ["upscale", src, "-o", tmp_path / "o.png", "--device", "golden"]
    if case == "missing":
        args[1] = tmp_path / "nope.png"
    elif case == "notimage":
        (tmp_path / "x.png").write_text("not an image")
        args[1] = tmp_path / "x.png"
    elif case == "zero":
        (tmp_path / "z.png").write_bytes(b"")
        args[1] = tmp_path / "z.png"
    elif case == "huge":
        Image.new("L", (4097, 4097)).save(tmp_path / "h.png")
        args[1] = tmp_path / "h.png"
    elif case == "model":
        args += ["--model", "no-such-model"]
    else:
        args[-1] = "serial:/dev/does-not-exist"
    got, io = _run(capsys, *args)
    assert got == code
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in io.err
