"""``deconvsr upscale``: upscale images on a device (simulated RTL by default).

Colour images go through BT.601 studio-range YCbCr (:mod:`deconvsr.sw.host.imaging`): Y on the
device, Cb/Cr bicubic. The kernels are loaded once; every frame (or tile) after that only
sends its input and reads its output.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..host.device import DeviceError, open_device
from ..host.imaging import (IMAGE_EXTENSIONS, ImageError, bicubic_resize, load_rgb, psnr,
                            rgb_to_ycbcr, ssim, to_u8, ycbcr_to_rgb)
from ..model.quantize import QuantizeError
from ..model.zoo import ModelError, load_quantized
from .import_model import calibration_images
from .main import (EXIT_DEVICE, EXIT_INPUT, EXIT_NOT_FOUND, CLIError, add_board_argument,
                   board_baud)

__all__ = ["register", "run", "load_qlayers", "upscale_rgb", "comparison", "MAX_PIXELS"]

MAX_PIXELS = 4096 * 4096     #: larger inputs are refused (they would take hours in simulation)
DEVICE_HELP = ("golden (integer model), sim (RTL simulation, default), sim-uart, sim-spi, "
               "serial:PORT[@BAUD], spi:FTDI_URL")


def register(subparsers):
    p = subparsers.add_parser("upscale", help="upscale images on the accelerator",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="image files, directories or quoted globs ('photos/*.png')")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output PNG (one input) or directory")
    p.add_argument("--model", default="espcn-paper-x3", help="shipped model name or file")
    p.add_argument("--calib", metavar="DIR|skimage",
                   help="calibrate a model file that has none (an ONNX file) on these images "
                        "first (deconvsr import does it once and saves the package)")
    p.add_argument("--device", default="sim", help=DEVICE_HELP)
    add_board_argument(p)
    p.add_argument("--compare", metavar="CMP.png",
                   help="side-by-side PNG: bicubic | accelerator | difference (one input)")
    p.add_argument("--reference", metavar="HR.png", help="PSNR/SSIM of Y against this image")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-verify", action="store_true", help="skip the CRC check of kernels")
    p.add_argument("--timeout", type=positive_seconds, metavar="S",
                   help="a reply's allowance beyond its line time (default 2 s for a board, "
                        "120 s for a simulated device); a request is tried 5 times")
    p.set_defaults(func=run)


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} s: must be in (0, 3600]")
    return value


def load_qlayers(model: str, calib: str | None = None):
    """(network, quantised layers) of a model name/file, calibrated on ``calib`` images
    (``--calib``) if it has no calibration; CLIError on failure."""
    images = calibration_images(calib) if calib else None
    try:
        return load_quantized(model, calibrate_on=images)
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
    except QuantizeError as e:
        if "no calibrated" in str(e):
            raise CLIError(f"model {model} has no calibrated activation ranges: give --calib "
                           "DIR|skimage, or import it once with `deconvsr import`",
                           EXIT_INPUT) from None
        raise CLIError(f"model {model}: cannot be quantised: {e}", EXIT_INPUT) from None


def expand_inputs(items) -> list[Path]:
    paths = []
    for item in items:
        p = Path(item)
        if any(c in item for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(item))
            if not hits:
                raise CLIError(f"{item}: no files match", EXIT_NOT_FOUND)
            paths += [h for h in hits if h.is_file()]
        elif p.is_dir():
            found = sorted(x for x in p.iterdir() if x.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise CLIError(f"{p}: no image files", EXIT_NOT_FOUND)
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise CLIError(f"{p}: no such file", EXIT_NOT_FOUND)
    return paths


def read_image(path: Path) -> np.ndarray:
    """uint8 RGB of an image file (its size checked from the header first); CLIError."""
    try:
        return load_rgb(path, max_pixels=MAX_PIXELS)
    except ImageError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if "no such file" in str(e) else EXIT_INPUT) \
            from None


def image_format(path: Path) -> str:
    """The Pillow format that writes ``path`` (from its extension); CLIError if none."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise CLIError(f"{path}: cannot write images with extension {path.suffix or '(none)'!r}"
                       " (use .png)", EXIT_INPUT)
    return fmt


def check_writable(path: Path):
    """``path`` can be created or replaced (its directory exists or can be made, and is
    writable); CLIError otherwise. Nothing is created."""
    if path.is_dir():
        raise CLIError(f"{path}: is a directory", EXIT_INPUT)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{path}: {parent} is not a directory", EXIT_INPUT)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{path}: cannot write in {parent} (permission denied)", EXIT_INPUT)
    if path.exists() and not os.access(path, os.W_OK):
        raise CLIError(f"{path}: cannot replace it (permission denied)", EXIT_INPUT)


def plan_outputs(paths, output: str, many: bool, scale: int, *, compare=None,
                 reference=None) -> list[Path]:
    """The output path of every input, all checked before any device work: a known image
    extension, writable, no two outputs on one path, never an input (nor the ``compare`` or
    ``reference`` image). CLIError otherwise."""
    out_arg = Path(output)
    outs = [out_arg / f"{p.stem}_x{scale}.png" for p in paths] if many else [out_arg]
    keys = {}
    inputs = {p.resolve(): p for p in paths}
    if reference:
        inputs[Path(reference).resolve()] = Path(reference)
    extra = [(Path(compare), "--compare")] if compare else []
    for path, src in [*zip(outs, map(str, paths)), *extra]:
        image_format(path)
        check_writable(path)
        key = path.resolve()
        if key in inputs:
            raise CLIError(f"{path}: would overwrite the input {inputs[key]}", EXIT_INPUT)
        if key in keys:
            raise CLIError(f"{path}: {keys[key]} and {src} would both write it (rename one, or "
                           "upscale them into different directories)", EXIT_INPUT)
        keys[key] = src
    return outs


def check_reference(ref_path, in_shape, scale) -> np.ndarray:
    """The reference image, if its size is the output's (``scale`` x the input's)."""
    ref = read_image(Path(ref_path))
    want = (in_shape[0] * scale, in_shape[1] * scale)
    if ref.shape[:2] != want:
        raise CLIError(f"{ref_path}: the reference is {ref.shape[1]}x{ref.shape[0]}, the output "
                       f"will be {want[1]}x{want[0]}: scores need the same size", EXIT_INPUT)
    if min(want) < 2 * scale + 11:
        raise CLIError(f"{ref_path}: too small to compare (the scores shave {scale} pixels and "
                       "need an 11 x 11 window)", EXIT_INPUT)
    return ref


def upscale_rgb(device, qlayers, scale: int, rgb: np.ndarray):
    """(output RGB, device Y, input YCbCr float) of one uint8 RGB image."""
    ycc = rgb_to_ycbcr(rgb)
    y = to_u8(ycc[..., 0])
    y_hr = device.upscale(qlayers, y)
    h, w = y_hr.shape
    cb = bicubic_resize(ycc[..., 1], (w, h))
    cr = bicubic_resize(ycc[..., 2], (w, h))
    out = to_u8(ycbcr_to_rgb(np.stack([y_hr.astype(np.float64), cb, cr], axis=-1)))
    return out, y_hr, ycc


def comparison(rgb_in: np.ndarray, out: np.ndarray) -> np.ndarray:
    """bicubic | accelerator | |difference| x4 (of the RGB images), side by side."""
    h, w = out.shape[:2]
    bic = np.stack([bicubic_resize(rgb_in[..., c].astype(np.float64), (w, h))
                    for c in range(3)], axis=-1)
    bic_u8 = to_u8(bic)
    diff = to_u8(np.abs(out.astype(np.float64) - bic) * 4)
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([bic_u8, gap, out, gap, diff], axis=1)


def save_image(path: Path, rgb: np.ndarray):
    """Write atomically: a temporary file next to ``path``, renamed over it when complete, so
    an interrupted run leaves the old file or the new one, never half of one."""
    fmt = image_format(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(tmp, format=fmt)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: cannot write ({e.strerror or e})", EXIT_INPUT) from None
    finally:
        tmp.unlink(missing_ok=True)


def _reference_scores(ref, y_hr, scale):
    ry = to_u8(rgb_to_ycbcr(ref)[..., 0])
    return {"psnr_db": psnr(ry, y_hr, border=scale), "ssim": ssim(ry, y_hr, border=scale)}


def run(args) -> int:
    paths = []
    for p in expand_inputs(args.inputs):          # each file once, however it was named
        if p.resolve() not in {q.resolve() for q in paths}:
            paths.append(p)
    out_arg = Path(args.output)
    many = len(paths) > 1 or out_arg.is_dir() or args.output.endswith("/")
    if many and (args.compare or args.reference):
        raise CLIError("--compare and --reference take one input image", EXIT_INPUT)
    # Everything that can be checked is, before the device starts: inputs, model, outputs.
    images = [(p, read_image(p)) for p in paths]
    net, qlayers = load_qlayers(args.model, args.calib)
    outs = plan_outputs(paths, args.output, many, net.scale, compare=args.compare,
                        reference=args.reference)
    ref = check_reference(args.reference, images[0][1].shape, net.scale) if args.reference \
        else None
    t0 = time.perf_counter()
    try:
        device = open_device(args.device, baud=board_baud(args),
                             progress=sys.stderr.isatty() and not args.json,
                             verify=not args.no_verify, timeout=args.timeout)
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    t_open = time.perf_counter() - t0
    results = []
    try:
        t1 = time.perf_counter()
        for (path, rgb), dest in zip(images, outs):
            ts = time.perf_counter()
            try:
                out, y_hr, _ = upscale_rgb(device, qlayers, net.scale, rgb)
            except DeviceError as e:
                done = f" ({len(results)} of {len(images)} images written before it)" \
                    if len(images) > 1 else ""
                raise CLIError(f"{e}{done}", EXIT_DEVICE) from None
            save_image(dest, out)
            item = {"input": str(path), "output": str(dest), "size_in": list(rgb.shape[1::-1]),
                    "size_out": list(out.shape[1::-1]),
                    "seconds": round(time.perf_counter() - ts, 3)}
            if args.compare:
                save_image(Path(args.compare), comparison(rgb, out))
                item["compare"] = args.compare
            if ref is not None:
                item.update(_reference_scores(ref, y_hr, net.scale))
            results.append(item)
        elapsed = time.perf_counter() - t1
        try:
            counters = device.counters()
        except DeviceError as e:
            raise CLIError(f"{e} (all {len(results)} images written)", EXIT_DEVICE) from None
    finally:
        device.close()
    summary = {"device": args.device, "model": net.name, "scale": net.scale,
               "frames": len(results), "open_seconds": round(t_open, 3),
               "seconds": round(elapsed, 3), "frames_per_second": len(results) / elapsed
               if elapsed > 0 else None, "images": results, "counters": counters}
    stats = getattr(device, "stats", None)
    if stats:
        summary["transfer"] = stats
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        for r in results:
            extra = f", PSNR {r['psnr_db']:.2f} dB" if "psnr_db" in r else ""
            print(f"{r['input']} -> {r['output']} ({r['size_in'][0]}x{r['size_in'][1]} -> "
                  f"{r['size_out'][0]}x{r['size_out'][1]}, {r['seconds']:.2f} s{extra})")
        print(f"{len(results)} frame(s) on {args.device} in {elapsed:.2f} s "
              f"({summary['frames_per_second']:.3f} frames/s; device start {t_open:.1f} s)")
    return 0
