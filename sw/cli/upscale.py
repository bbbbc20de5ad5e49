"""``deconvsr upscale``: upscale images on a device (simulated RTL by default).

Colour images go through BT.601 studio-range YCbCr (:mod:`deconvsr.sw.host.imaging`): Y on the
device, Cb/Cr bicubic. The kernels are loaded once; every frame (or tile) after that only
sends its input and reads its output.
"""

from __future__ import annotations

import glob
import json
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
from .main import EXIT_DEVICE, EXIT_INPUT, EXIT_NOT_FOUND, CLIError

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
    p.add_argument("--device", default="sim", help=DEVICE_HELP)
    p.add_argument("--compare", metavar="CMP.png",
                   help="side-by-side PNG: bicubic | accelerator | difference (one input)")
    p.add_argument("--reference", metavar="HR.png", help="PSNR/SSIM of Y against this image")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-verify", action="store_true", help="skip the CRC check of kernels")
    p.set_defaults(func=run)


def load_qlayers(model: str):
    """(network, quantised layers) of a model name/file; CLIError on failure."""
    try:
        return load_quantized(model)
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
    except QuantizeError as e:
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
    try:
        rgb = load_rgb(path)
    except ImageError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if "no such file" in str(e) else EXIT_INPUT) \
            from None
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise CLIError(f"{path}: the image is empty ({w}x{h})", EXIT_INPUT)
    if h * w > MAX_PIXELS:
        raise CLIError(f"{path}: {w}x{h} is too large (at most {MAX_PIXELS} pixels)", EXIT_INPUT)
    return rgb


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


def _save(path: Path, rgb: np.ndarray):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: cannot write ({e})", EXIT_INPUT) from None


def _reference_scores(ref_path, y_hr, scale):
    ref = read_image(Path(ref_path))
    ry = to_u8(rgb_to_ycbcr(ref)[..., 0])
    h, w = min(ry.shape[0], y_hr.shape[0]), min(ry.shape[1], y_hr.shape[1])
    if h < 2 * scale + 1 or w < 2 * scale + 1:
        raise CLIError(f"{ref_path}: too small to compare", EXIT_INPUT)
    a, b = ry[:h, :w], y_hr[:h, :w]
    return {"psnr_db": psnr(a, b, border=scale), "ssim": ssim(a, b, border=scale)}


def run(args) -> int:
    paths = expand_inputs(args.inputs)
    out_arg = Path(args.output)
    many = len(paths) > 1 or out_arg.is_dir() or args.output.endswith("/")
    if many and (args.compare or args.reference):
        raise CLIError("--compare and --reference take one input image", EXIT_INPUT)
    images = [(p, read_image(p)) for p in paths]   # all inputs checked before the device
    net, qlayers = load_qlayers(args.model)
    t0 = time.perf_counter()
    try:
        device = open_device(args.device, progress=sys.stderr.isatty() and not args.json,
                             verify=not args.no_verify)
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    t_open = time.perf_counter() - t0
    results = []
    try:
        t1 = time.perf_counter()
        for path, rgb in images:
            ts = time.perf_counter()
            try:
                out, y_hr, _ = upscale_rgb(device, qlayers, net.scale, rgb)
            except DeviceError as e:
                raise CLIError(str(e), EXIT_DEVICE) from None
            dest = out_arg / f"{path.stem}_x{net.scale}.png" if many else out_arg
            _save(dest, out)
            item = {"input": str(path), "output": str(dest), "size_in": list(rgb.shape[1::-1]),
                    "size_out": list(out.shape[1::-1]),
                    "seconds": round(time.perf_counter() - ts, 3)}
            if args.compare:
                _save(Path(args.compare), comparison(rgb, out))
                item["compare"] = args.compare
            if args.reference:
                item.update(_reference_scores(args.reference, y_hr, net.scale))
            results.append(item)
        elapsed = time.perf_counter() - t1
        counters = device.counters()
    except KeyboardInterrupt:
        raise
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
