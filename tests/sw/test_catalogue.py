"""The bad-input and fault catalogue: what a new user or a hostile tester gives the command line,
and what must come out. Every case ends within its class's bound, with exit 0 and a correct
result or one line on stderr and its exit code; no case leaves a wrong picture or overwrites a
file.

Classes and bounds (``BOUND``): inputs, models, outputs and arguments are checked before any
device work (under 10 s here, and never a device start: the cases name a device that would fail
with exit 3 if it were opened); a misbehaving device ends within the driver's deadlines
(``--timeout 0.5`` here: 5 attempts of 0.5 s plus a WAIT slice, :mod:`deconvsr.sw.host.driver`).
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvsr.sim.device.fault import FaultDevice
from deconvsr.sw.cli import upscale as cli_upscale
from deconvsr.sw.cli.main import CLIError, main

OK, EXIT_INPUT, EXIT_DEVICE, EXIT_NOT_FOUND = 0, 2, 3, 4
NO_DEVICE = "serial:/dev/deconvsr-no-such-port"     # reaching the device would be exit 3
BOUND = {"input": 10.0, "device": 8.0}


def run_cli(args, limit, capsys):
    """``main(args)`` in a thread: (code, stdout, stderr, seconds); fails if it does not end
    within ``limit`` s (a hang)."""
    box = {}

    def target():
        try:
            box["code"] = main([str(a) for a in args])
        except BaseException as e:          # reported below, in the test's thread
            box["exc"] = e
    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit)
    elapsed = time.monotonic() - t0
    assert not th.is_alive(), f"still running after {limit} s: {args}"
    out = capsys.readouterr()
    assert "exc" not in box, f"{args}: raised {box.get('exc')!r}\n{out.err}"
    return box["code"], out.out, out.err, elapsed


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def put(path, data: bytes):
    path.write_bytes(data)
    return path


def photo(path, h=12, w=14, mode="RGB"):
    rng = np.random.default_rng(len(str(path)))
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return path


def golden_out(tmp, src, model="edge-x2"):
    main(["upscale", str(src), "-o", str(tmp / "golden-ref.png"), "--device", "golden",
          "--model", model])
    with Image.open(tmp / "golden-ref.png") as im:
        return np.asarray(im)


# --- images in -------------------------------------------------------------------------------

def _grey16(tmp, ext):
    a = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (12, 1))
    Image.fromarray(a).save(tmp / f"g16{ext}")
    return tmp / f"g16{ext}", a / 257.0


def _float(tmp, hi):
    a = np.tile(np.linspace(0, hi, 64, dtype=np.float32), (12, 1))
    Image.fromarray(a).save(tmp / "f.tif")
    return tmp / "f.tif", a * 255.0


IMAGE_REFUSED = {
    "missing": (lambda t: t / "nope.png", EXIT_NOT_FOUND, "no such file"),
    "empty-file": (lambda t: put(t / "e.png", b""), EXIT_INPUT, "not an image"),
    "text-file": (lambda t: put(t / "x.png", b"hello"), EXIT_INPUT, "not an image"),
    "truncated-png": (lambda t: put(t / "tr.png", photo(t / "full.png", 40, 40).read_bytes()
                                    [:300]), EXIT_INPUT, "not a readable image"),
    "mislabelled-ok": (lambda t: put(t / "p.jpg", photo(t / "p.png").read_bytes()), None, ""),
    "directory-without-images": (lambda t: (t / "d").mkdir() or t / "d", EXIT_NOT_FOUND,
                                 "no image files"),
    "glob-without-match": (lambda t: f"{t}/*.nothing", EXIT_NOT_FOUND, "no files match"),
    "huge-from-header": (lambda t: Image.new("L", (13000, 13000)).save(t / "h.png") or
                         t / "h.png", EXIT_INPUT, "too large"),
    "float-out-of-range": (lambda t: _float(t, 3.0)[0], EXIT_INPUT, "expected 0..1"),
    "int32": (lambda t: Image.fromarray(np.full((8, 8), 1 << 20, np.int32)).save(t / "i.tif")
              or t / "i.tif", EXIT_INPUT, "convert it to 8 or 16 bits"),
}


@pytest.mark.parametrize("case", IMAGE_REFUSED)
def test_image_refused(case, tmp_path, capsys):
    make, code, text = IMAGE_REFUSED[case]
    src = make(tmp_path)
    if code is None:                # read fine: reaches the device (that does not exist)
        code, text = EXIT_DEVICE, "deconvsr-no-such-port"
    got, _, err, dt = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", NO_DEVICE,
                               "--model", "edge-x2"], BOUND["input"], capsys)
    assert (got, text in one_line(err)) == (code, True), err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("case", ["grey16-png", "grey16-tif", "float-tif"])
def test_deep_images_are_scaled_not_clipped(case, tmp_path, capsys):
    """16-bit and floating-point grey come in scaled to 8 bits (a full gradient stays a full
    gradient), not clipped to white or black."""
    from deconvsr.sw.host.imaging import load_rgb
    src, want = (_grey16(tmp_path, ".png") if case == "grey16-png" else
                 _grey16(tmp_path, ".tif") if case == "grey16-tif" else _float(tmp_path, 1.0))
    rgb = load_rgb(src)
    assert np.abs(rgb[..., 0].astype(float) - want).max() <= 0.5 + 1e-9
    got, _, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", "golden",
                              "--model", "edge-x2"], BOUND["input"], capsys)
    assert got == OK, err
    with Image.open(tmp_path / "o.png") as im:
        out = np.asarray(im)
    assert 100 < out.mean() < 155 and out.min() < 30 and out.max() > 225


def test_exif_orientation_is_applied(tmp_path, capsys):
    im = Image.fromarray(np.zeros((10, 16, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6                                   # rotate 90 degrees clockwise to view
    im.save(tmp_path / "r.jpg", exif=exif)
    got, _, err, _ = run_cli(["upscale", tmp_path / "r.jpg", "-o", tmp_path / "o.png",
                              "--device", "golden", "--model", "edge-x2"], 10, capsys)
    assert got == OK, err
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (20, 32)                            # 10 x 16 seen upright


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_with_a_warning(mode, tmp_path, capsys, caplog):
    a = np.zeros((8, 8, 4), np.uint8)                  # fully transparent black
    im = Image.fromarray(a, "RGBA")
    if mode == "P":                                    # a palette with a transparent entry
        im = Image.new("P", (8, 8), 0)
        im.putpalette([0, 0, 0] * 256)
        im.info["transparency"] = 0
        im.save(tmp_path / "t.png", transparency=0)
    else:
        im.convert(mode).save(tmp_path / "t.png")
    from deconvsr.sw.host.imaging import load_rgb
    assert (load_rgb(tmp_path / "t.png") == 255).all()          # over white
    assert "composited over white" in caplog.text
    caplog.clear()
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.full((8, 8, 4), 255, np.uint8), "RGBA").save(opaque)
    load_rgb(opaque)
    assert "composited" not in caplog.text


def test_multi_frame_file_warns(tmp_path, caplog):
    frames = [Image.new("L", (8, 8), v) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    from deconvsr.sw.host.imaging import load_rgb
    assert load_rgb(tmp_path / "a.gif").mean() == pytest.approx(10, abs=1)
    assert "2 frames; only the first is used" in caplog.text


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "I;16"])
def test_other_modes_read(mode, tmp_path):
    from deconvsr.sw.host.imaging import load_rgb
    src = tmp_path / ("m.tif" if mode in ("CMYK", "I;16") else "m.png")
    Image.new(mode, (6, 5)).save(src)
    rgb = load_rgb(src)
    assert rgb.shape == (5, 6, 3) and rgb.dtype == np.uint8


# --- outputs ---------------------------------------------------------------------------------

def test_batch_outputs_on_one_path_refused_before_the_device(tmp_path, capsys):
    photo(tmp_path / "a.png")
    photo(tmp_path / "a.jpg")
    got, _, err, _ = run_cli(["upscale", tmp_path / "a.png", tmp_path / "a.jpg", "-o",
                              f"{tmp_path}/out/", "--device", NO_DEVICE, "--model", "edge-x2"],
                             BOUND["input"], capsys)
    assert got == EXIT_INPUT and "would both write it" in one_line(err)
    assert not (tmp_path / "out").exists()


def test_the_same_input_twice_is_one_output(tmp_path, capsys):
    src = photo(tmp_path / "a.png")
    got, out, err, _ = run_cli(["upscale", src, str(src), f"{tmp_path}/*.png", "-o",
                                f"{tmp_path}/out/", "--device", "golden", "--model", "edge-x2"],
                               BOUND["input"], capsys)
    assert got == OK, err
    assert out.count("a.png -> ") == 1 and os.listdir(tmp_path / "out") == ["a_x2.png"]


@pytest.mark.parametrize("case", ["output-is-input", "compare-is-input", "compare-is-output",
                                  "reference-is-output", "bad-extension", "no-extension",
                                  "under-a-file", "output-is-a-directory-name"])
def test_outputs_checked_before_the_device(case, tmp_path, capsys):
    src = photo(tmp_path / "in.png")
    before = src.read_bytes()
    out = tmp_path / "o.png"
    extra = []
    if case == "output-is-input":
        out = src
    elif case == "compare-is-input":
        extra = ["--compare", src]
    elif case == "compare-is-output":
        extra = ["--compare", out]
    elif case == "reference-is-output":
        photo(out, 24, 28)
        extra = ["--reference", out]
    elif case == "bad-extension":
        out = tmp_path / "o.txt"
    elif case == "no-extension":
        out = tmp_path / "o"
    elif case == "under-a-file":
        out = src / "o.png"
    else:
        (tmp_path / "d.png").mkdir()
        out = tmp_path / "d.png"
    got, _, err, _ = run_cli(["upscale", src, "-o", out, "--device", NO_DEVICE, "--model",
                              "edge-x2", *extra], BOUND["input"], capsys)
    line = one_line(err)
    if case == "output-is-a-directory-name":     # an existing directory: outputs go inside
        assert got == EXIT_DEVICE and "deconvsr-no-such-port" in line
        return
    assert got == EXIT_INPUT, err
    assert src.read_bytes() == before
    assert "deconvsr-no-such-port" not in line


def test_reference_of_another_size_refused(tmp_path, capsys):
    src = photo(tmp_path / "in.png", 12, 14)
    photo(tmp_path / "ref.png", 24, 30)
    got, _, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", NO_DEVICE,
                              "--model", "edge-x2", "--reference", tmp_path / "ref.png"],
                             BOUND["input"], capsys)
    assert got == EXIT_INPUT and "the reference is 30x24, the output will be 28x24" in \
        one_line(err)
    photo(tmp_path / "ref.png", 24, 28)
    got, out, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", "golden",
                                "--model", "edge-x2", "--reference", tmp_path / "ref.png"],
                               BOUND["input"], capsys)
    assert got == OK and "PSNR" in out, err


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails half way leaves the previous file and no temporary one."""
    dest = tmp_path / "o.png"
    dest.write_bytes(b"previous")

    def broken_save(self, fp, format=None, **kw):
        Path(fp).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(CLIError, match="No space left"):
        cli_upscale.save_image(dest, np.zeros((4, 4, 3), np.uint8))
    assert dest.read_bytes() == b"previous" and os.listdir(tmp_path) == ["o.png"]


def test_batch_keeps_what_it_finished(tmp_path, capsys):
    """The device goes silent on the second image: the first one's output is kept and the
    error says so."""
    from deconvsr.sim.device.fault import tiny_spec
    from deconvsr.sw.host.imaging import load_rgb, rgb_to_ycbcr, to_u8
    from deconvsr.sw.host.program import frame_programs
    from deconvsr.sw.model.quantize import quantize
    from deconvsr.sw.model.zoo import load_model
    for name in ("a", "b"):
        photo(tmp_path / f"{name}.png", 20, 22)
    y = to_u8(rgb_to_ycbcr(load_rgb(tmp_path / "a.png"))[..., 0])
    runs = len(frame_programs(quantize(load_model("edge-x2")), y, tiny_spec())[0])
    assert runs > 1                                 # (tiled: the host's tiled path)
    with FaultDevice("silent-mid-run", runs_before=runs) as dev:
        got, _, err, _ = run_cli(["upscale", tmp_path / "a.png", tmp_path / "b.png", "-o",
                                  f"{tmp_path}/out/", "--device", f"serial:{dev.url}",
                                  "--model", "edge-x2", "--timeout", "0.5"],
                                 BOUND["device"], capsys)
        assert dev.device.runs == runs + 1
    assert got == EXIT_DEVICE and "(1 of 2 images written before it)" in one_line(err)
    assert os.listdir(tmp_path / "out") == ["a_x2.png"]


# --- models ----------------------------------------------------------------------------------

def _model_copy(tmp, mutate_json=None, npz_bytes=None):
    from deconvsr.sw.model.zoo import MODELS_DIR
    (tmp / "m.npz").write_bytes((MODELS_DIR / "edge-x2.npz").read_bytes())
    text = (MODELS_DIR / "edge-x2.json").read_text()
    if mutate_json:
        text = mutate_json(text)
    (tmp / "m.json").write_text(text)
    if npz_bytes is not None:
        (tmp / "m.npz").write_bytes(npz_bytes(tmp / "m.npz"))
    return tmp / "m.npz"


def _pickled_npz(path):
    """An .npz whose array is a pickle (loading it would run code): refused, not loaded."""
    buf = io.BytesIO()
    arr = np.empty(1, dtype=object)
    arr[0] = {"evil": 1}
    np.savez(buf, **{"layer0.weight": arr})
    return buf.getvalue()


MODELS = {
    "unknown-name": (lambda t: "no-such-model", EXIT_NOT_FOUND, "unknown model"),
    "missing-file": (lambda t: t / "none.npz", EXIT_NOT_FOUND, "no such file"),
    "truncated-npz": (lambda t: _model_copy(t, npz_bytes=lambda p: p.read_bytes()[:100]),
                      EXIT_INPUT, "corrupted weight file"),
    "pickle-payload": (lambda t: _model_copy(t, npz_bytes=_pickled_npz), EXIT_INPUT,
                       "corrupted weight file"),
    "json-not-json": (lambda t: _model_copy(t, lambda s: s[:30]), EXIT_INPUT, "not JSON"),
    "json-scale-text": (lambda t: _model_copy(t, lambda s: s.replace('"scale": 2',
                                                                     '"scale": "two"')),
                        EXIT_INPUT, "scale must be an integer"),
    "json-k-text": (lambda t: _model_copy(t, lambda s: s.replace('"k": 5', '"k": "five"', 1)),
                    EXIT_INPUT, "k must be an integer"),
    "json-layer-number": (lambda t: _model_copy(t, lambda s: s.replace(
        '"layers": [', '"layers": [5, ', 1)), EXIT_INPUT, "is not an object"),
    "unknown-suffix": (lambda t: put(t / "m.h5", b"x"), EXIT_INPUT, "unknown model file type"),
}


@pytest.mark.parametrize("case", MODELS)
def test_model_refused(case, tmp_path, capsys):
    make, code, text = MODELS[case]
    model = make(tmp_path)
    src = photo(tmp_path / "in.png")
    got, _, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", NO_DEVICE,
                              "--model", model], BOUND["input"], capsys)
    assert got == code and text in one_line(err), err


def test_convert_with_missing_external_weights(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [w])
    m = helper.make_model(g)
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="w.bin",
                                   size_threshold=0)
    onnx.save(m, tmp_path / "ext.onnx")
    (tmp_path / "w.bin").unlink()
    got, _, err, _ = run_cli(["convert", tmp_path / "ext.onnx", "-o", tmp_path / "o.onnx"],
                             BOUND["input"], capsys)
    assert got == EXIT_INPUT and "cannot load its external weights" in one_line(err)


ONNX_FORM = Path(__file__).parent / "onnx_forms" / "resize-ts13-static.onnx"


def test_convert_never_overwrites_its_input(tmp_path, capsys):
    """``convert M.onnx -o M.onnx`` (also spelt another way) is refused and the input kept."""
    src = tmp_path / "m.onnx"
    src.write_bytes(ONNX_FORM.read_bytes())
    for out in (src, tmp_path / "." / "m.onnx"):
        got, _, err, _ = run_cli(["convert", src, "-o", out], BOUND["input"], capsys)
        assert got == EXIT_INPUT and "would overwrite the input" in one_line(err)
    assert src.read_bytes() == ONNX_FORM.read_bytes() and os.listdir(tmp_path) == ["m.onnx"]


def test_convert_writes_atomically(tmp_path, capsys, monkeypatch):
    """A save that fails half way leaves the previous output and no temporary file; one that
    completes replaces it."""
    import onnx
    dest = tmp_path / "o.onnx"
    dest.write_bytes(b"previous")
    real_save = onnx.save

    def broken_save(model, f, *a, **kw):
        Path(f).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(onnx, "save", broken_save)
    got, _, err, _ = run_cli(["convert", ONNX_FORM, "-o", dest], BOUND["input"], capsys)
    assert got == EXIT_INPUT and "No space left" in one_line(err)
    assert dest.read_bytes() == b"previous" and os.listdir(tmp_path) == ["o.onnx"]
    monkeypatch.setattr(onnx, "save", real_save)
    got, _, err, _ = run_cli(["convert", ONNX_FORM, "-o", dest], BOUND["input"], capsys)
    assert got == OK and os.listdir(tmp_path) == ["o.onnx"]
    assert onnx.load(str(dest)).graph.node


def test_saved_model_is_written_whole(tmp_path, monkeypatch):
    """A model save (import, train) that fails half way leaves the previous package and no
    temporary file."""
    from deconvsr.sw.model import zoo
    net = zoo.load_model("edge-x2")
    old = zoo.save_model(net, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in old}

    def broken(f, **arrays):
        f.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(zoo.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="No space left"):
        zoo.save_model(net, tmp_path / "m")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# --- devices ---------------------------------------------------------------------------------

DEVICE_FAULTS = {      # fault: (exit code, text of the line, or None: a correct picture)
    None: (OK, None),
    "garbage": (EXIT_DEVICE, "bytes without a valid reply"),
    "filler": (EXIT_DEVICE, "bytes without a valid reply"),
    "partial": (EXIT_DEVICE, "no valid reply"),
    "silent": (EXIT_DEVICE, "no reply in 0.5 s"),
    "silent-mid-run": (EXIT_DEVICE, "WAIT: no valid reply after 5 attempts"),
    "close-mid-run": (EXIT_DEVICE, "socket disconnected"),
    "slow": (OK, None),
    "bad-tag": (OK, None),
    "noise-between": (OK, None),
}


@pytest.mark.parametrize("fault", DEVICE_FAULTS, ids=str)
def test_misbehaving_device(fault, tmp_path, capsys):
    """A device on a socket, tiled frames (its spec is small): a correct picture, or one line
    within the deadlines."""
    src = photo(tmp_path / "in.png", 20, 22)
    want = golden_out(tmp_path, src)
    capsys.readouterr()
    code, text = DEVICE_FAULTS[fault]
    with FaultDevice(fault) as dev:
        got, out, err, dt = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device",
                                     f"serial:{dev.url}", "--model", "edge-x2", "--timeout",
                                     "0.5"], BOUND["device"] + 20 * (fault == "slow"), capsys)
    if text is None:
        assert got == OK, err
        with Image.open(tmp_path / "o.png") as im:
            assert np.array_equal(np.asarray(im), want)
    else:
        assert got == code and text in one_line(err), err
        assert not (tmp_path / "o.png").exists()
        assert dt < BOUND["device"]


def test_misbehaving_device_is_named_by_its_hint(tmp_path):
    """On a real line (a baud rate known), noise gets the wrong-port-or-baud hint."""
    from deconvsr.sw.host.driver import Driver, LinkTimeout
    from deconvsr.sw.host.transport import SerialTransport
    with FaultDevice("garbage") as dev:
        t = SerialTransport(dev.url)
        t.byte_time = 10 / 3e6
        with pytest.raises(LinkTimeout, match="wrong port or baud rate"):
            Driver(t).identify()
        t.close()


@pytest.mark.parametrize("device, text", [("serial:/dev/deconvsr-no-such-port", "cannot open"),
                                          ("bogus", "unknown device"),
                                          ("serial:socket://127.0.0.1:1", "cannot open")])
def test_device_cannot_open(device, text, tmp_path, capsys):
    src = photo(tmp_path / "in.png")
    got, _, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", device,
                              "--model", "edge-x2"], BOUND["input"], capsys)
    assert got == EXIT_DEVICE and text in one_line(err), err


def test_unwritable_simulator_cache(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DECONVSR_CACHE", str(tmp_path / "file" / "cache"))
    src = photo(tmp_path / "in.png")
    got, _, err, _ = run_cli(["upscale", src, "-o", tmp_path / "o.png", "--device", "sim",
                              "--model", "edge-x2"], 60, capsys)
    assert got == EXIT_DEVICE and "set DECONVSR_CACHE" in one_line(err)


# --- arguments and other commands ------------------------------------------------------------

@pytest.mark.parametrize("size", [("-5", "5"), ("0", "0"), ("5000", "8")])
def test_report_size_refused(size, tmp_path, capsys):
    got, _, err, _ = run_cli(["report", "--board", "icebreaker", "--input", tmp_path,
                              "--size", *size], BOUND["input"], capsys)
    assert got == EXIT_INPUT and "a frame size is 1..4096" in one_line(err)


BUILD_JSON = {
    "not-json": "{bad",
    "a-list": "[1, 2]",
    "fmax-text": '{"board": "icebreaker", "target_mhz": 48, "utilisation": {}, '
                 '"fmax": {"clk": "fast"}, "constraint": {}}',
    "target-null": '{"board": "icebreaker", "target_mhz": null, "utilisation": {}, '
                   '"fmax": {}, "constraint": {}}',
    "utilisation-list": '{"board": "icebreaker", "target_mhz": 48, "utilisation": [1], '
                        '"fmax": {}, "constraint": {}}',
    "field-missing": '{"board": "icebreaker"}',
}


@pytest.mark.parametrize("case", BUILD_JSON)
def test_corrupted_build_json(case, tmp_path, capsys):
    (tmp_path / "build.json").write_text(BUILD_JSON[case])
    got, _, err, _ = run_cli(["report", "--board", "icebreaker", "--input", tmp_path,
                              "--size", "8", "8"], BOUND["input"], capsys)
    assert got == EXIT_NOT_FOUND and "not a deconvsr build result" in one_line(err), err


def test_verbose_keeps_the_exit_code(tmp_path, capsys):
    got, _, err, _ = run_cli(["-v", "upscale", tmp_path / "nope.png", "-o", tmp_path / "o.png"],
                             BOUND["input"], capsys)
    assert got == EXIT_NOT_FOUND and "Traceback" in err


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_device_start_leaves_nothing(sig, tmp_path):
    """Interrupted while the simulated device starts: no temporary directory, no simulator
    left behind, exit 130 / 143."""
    src = photo(tmp_path / "in.png")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    # (a test runner's worker may ignore SIGINT, and a child inherits that: a user's shell
    # does not, so the child starts with the default)
    # (the cocotb device: its start takes seconds; the native one starts in milliseconds, see
    # tests/sim/test_native_device.py for an interrupt while it runs)
    p = subprocess.Popen([sys.executable, "-m", "deconvsr.sw.cli", "upscale", str(src), "-o",
                          str(tmp_path / "o.png"), "--model", "edge-x2", "--device",
                          "sim-cocotb"],
                         env=env, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    while not any(tmp.glob("deconvsr-sim-*")):     # the simulator is being started
        assert p.poll() is None and time.monotonic() - t0 < 600, p.stderr.read()
        time.sleep(0.02)
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == (130 if sig == signal.SIGINT else 143), err
    # (the last line: a first Verilator build logs its commands)
    assert err.strip().splitlines()[-1].endswith(
        "interrupted" if sig == signal.SIGINT else "terminated") and "Traceback" not in err
    assert list(tmp.iterdir()) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp) not in ps
