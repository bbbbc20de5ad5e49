"""``deconvsr eval``: quality of a network against bicubic, before/after transform and after
quantisation.

Per image: crop (bottom/right) to a multiple of ``r``, take the 8-bit BT.601 studio-range Y
plane, downscale it with Pillow bicubic and round to 8 bits (:func:`imaging.degrade`); then
upscale that LR plane with every method and measure PSNR/SSIM on Y against the HR plane, ``r``
border pixels shaved. Outputs are rounded to 8 bits before measuring.

Methods are *upscale functions* ``f(lr_u8 (H, W)) -> float (rH, rW) in 0..255``; :func:`evaluate`
takes any mapping of them, so another backend (e.g. a device) plugs in as one more entry.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

import numpy as np

from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "standard_upscalers", "self_ensemble", "evaluate", "load_images",
           "Upscaler"]

Upscaler = Callable[[np.ndarray], np.ndarray]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="PSNR/SSIM of a network vs bicubic, float, transformed and int8",
        description="Downscale each image (crop to a multiple of r, 8-bit BT.601 studio-range "
                    "Y, Pillow bicubic, rounded to 8 bits), upscale it with bicubic, the float "
                    "network as trained, the float deconvolution network after the transform "
                    "and the int8 integer model; PSNR and SSIM on Y with r border pixels "
                    "shaved.")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR_OR_FILES",
                   help="image folder(s)/file(s), or 'skimage' for scikit-image's CC0 photos "
                        "(astronaut, chelsea, coffee, rocket)")
    p.add_argument("--model", required=True, help="shipped model name or .npz/.onnx/.pt file")
    p.add_argument("--scale", type=int, help="upscale factor (must match the model)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, help="evaluate at most N images")
    p.add_argument("--self-ensemble", action="store_true",
                   help="also the float network's x8 self-ensemble ('float-x8': the mean of "
                        "its outputs over the 8 flips/rotations of the input; 8 times the "
                        "compute), a measure of what more training of the same network "
                        "might still reach")
    p.set_defaults(func=run)


def standard_upscalers(network, qlayers=None) -> dict[str, Upscaler]:
    """bicubic, float (trained form), deconv (transformed float) and int8 (if ``qlayers``)."""
    from ..host.imaging import bicubic_resize
    from ..model.quantize import run_quantized

    r = network.scale
    dnet = network.to_deconv()
    ups = {
        "bicubic": lambda lr: bicubic_resize(lr, (lr.shape[1] * r, lr.shape[0] * r)),
        "float": lambda lr: network.forward(lr / 255.0) * 255.0,
        "deconv": lambda lr: dnet.forward(lr / 255.0) * 255.0,
    }
    if qlayers is not None:
        ups["int8"] = lambda lr: run_quantized(qlayers, lr).astype(np.float64)
    return ups


def self_ensemble(f: Upscaler) -> Upscaler:
    """``f`` averaged over the 8 flips/rotations of its input (each output turned back)."""
    def g(lr):
        acc = 0.0
        for k in range(4):
            for flip in (False, True):
                x = np.rot90(lr, k)
                x = x[:, ::-1] if flip else x
                y = np.asarray(f(np.ascontiguousarray(x)), dtype=np.float64)
                acc = acc + np.rot90(y[:, ::-1] if flip else y, -k)
        return acc / 8
    return g


def load_images(data, limit=None) -> list[tuple[str, np.ndarray]]:
    """``[(name, uint8 RGB)]`` from ``--data`` arguments."""
    from ..host.imaging import list_images, load_rgb, skimage_photos

    out = []
    for item in data:
        if item == "skimage":
            out.extend(skimage_photos())
        else:
            out.extend((p.name, load_rgb(p)) for p in list_images(item))
        if limit is not None and len(out) >= limit:
            break
    return out[:limit] if limit is not None else out


def evaluate(images, r: int, upscalers: dict[str, Upscaler], *, min_lr: int = 1,
             compare=(("float", "deconv"),)) -> dict:
    """Evaluate every upscaler on every image.

    Returns ``{"images": [{name, hr_size, lr_size, psnr: {m: dB}, ssim: {m: v},
    max_abs_diff: {"a-b": v}}], "mean": {"psnr": {...}, "ssim": {...}}}``. ``max_abs_diff``
    compares unrounded outputs on the ``[0, 1]`` scale for each pair in ``compare``.

    Raises
    ------
    ImageError
        for an image whose LR plane is smaller than ``min_lr`` (the receptive field).
    """
    from ..host.imaging import ImageError, crop_to_multiple, degrade, psnr, rgb_to_ycbcr, ssim, to_u8

    rows = []
    for name, rgb in images:
        hr = to_u8(rgb_to_ycbcr(crop_to_multiple(rgb, r))[..., 0])
        lr_h, lr_w = hr.shape[0] // r, hr.shape[1] // r
        if min(lr_h, lr_w) < max(min_lr, 1) or min(hr.shape) - 2 * r < 11:
            need = max(min_lr, 1, -(-(11 + 2 * r) // r))
            raise ImageError(f"{name}: {rgb.shape[1]}x{rgb.shape[0]} is too small: its "
                             f"x{r} downscale {lr_w}x{lr_h} must be at least {need}x{need} "
                             "(the network's receptive field and the SSIM window)")
        lr = degrade(hr, r)
        outs = {m: np.asarray(f(lr), dtype=np.float64) for m, f in upscalers.items()}
        row = {"name": name, "hr_size": [hr.shape[1], hr.shape[0]], "lr_size": [lr_w, lr_h],
               "psnr": {}, "ssim": {}, "max_abs_diff": {}}
        for m, y in outs.items():
            if y.shape != hr.shape:
                raise ImageError(f"{name}: method {m} returned {y.shape}, expected {hr.shape}")
            y8 = to_u8(y)
            row["psnr"][m] = psnr(hr, y8, border=r)
            row["ssim"][m] = ssim(hr, y8, border=r)
        for a, b in compare:
            if a in outs and b in outs:
                row["max_abs_diff"][f"{a}-{b}"] = float(np.abs(outs[a] - outs[b]).max() / 255)
        rows.append(row)
    methods = list(upscalers)
    mean = {k: {m: float(np.mean([row[k][m] for row in rows])) for m in methods}
            for k in ("psnr", "ssim")}
    return {"images": rows, "mean": mean, "scale": r, "methods": methods}


def _table(res, model_name) -> str:
    methods = res["methods"]
    r = res["scale"]
    head = f"{'image':<14} {'HR size':>10}  " + "  ".join(f"{m:>16}" for m in methods)
    lines = [f"model {model_name}, x{r}: PSNR dB / SSIM on BT.601 studio-range Y (8-bit), "
             f"{r}-pixel border shaved; LR = Pillow bicubic of the HR cropped to a multiple of "
             f"{r}", head, "-" * len(head)]
    for row in res["images"] + [{"name": "mean", "hr_size": None, **res["mean"]}]:
        size = "x".join(map(str, row["hr_size"])) if row["hr_size"] else ""
        cells = "  ".join(f"{row['psnr'][m]:7.2f} / {row['ssim'][m]:.4f}" for m in methods)
        lines.append(f"{row['name']:<14} {size:>10}  {cells}")
    s = res["summary"]
    if "gain_vs_bicubic_db" in s:
        lines.append(f"gain over bicubic: float {s['gain_vs_bicubic_db']:+.2f} dB"
                     + (f", int8 {s['int8_gain_vs_bicubic_db']:+.2f} dB"
                        if "int8_gain_vs_bicubic_db" in s else "")
                     + (f", float x8 self-ensemble {s['self_ensemble_gain_vs_bicubic_db']:+.2f} dB"
                        if "self_ensemble_gain_vs_bicubic_db" in s else ""))
    if "max_abs_diff_float_deconv" in s:
        lines.append(f"transform: max |float - deconv| = {s['max_abs_diff_float_deconv']:.2e} "
                     "(on [0, 1])")
    if "int8_loss_db" in s:
        lines.append(f"quantisation: int8 loses {s['int8_loss_db']:.3f} dB vs float (mean)")
    return "\n".join(lines)


def run(args) -> int:
    from ..host.imaging import ImageError
    from ..model.quantize import QuantizeError, quantize
    from ..model.zoo import ModelError, load_model

    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, not {args.limit}", EXIT_INPUT)
    try:
        net = load_model(args.model)
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
    if args.scale is not None and args.scale != net.scale:
        raise CLIError(f"model {net.name} upscales by {net.scale}, but --scale is "
                       f"{args.scale}", EXIT_INPUT)
    try:
        images = load_images(args.data, args.limit)
        if not images:
            raise CLIError("no images to evaluate", EXIT_INPUT)
        notes = []
        if not net.meta.get("calibration"):
            # An imported model has no calibration: calibrate on the LR planes evaluated.
            from ..host.imaging import crop_to_multiple, degrade, rgb_to_ycbcr, to_u8
            from ..model.network import Network
            from ..model.quantize import calibrate
            r = net.scale
            planes = [degrade(to_u8(rgb_to_ycbcr(crop_to_multiple(rgb, r))[..., 0]), r) / 255.0
                      for _, rgb in images]
            planes = [p for p in planes if min(p.shape) >= net.receptive_field]
            if planes:
                net = Network(net.layers, net.name, {**net.meta,
                                                     "calibration": calibrate(net, planes)})
                notes.append("the model file has no calibration: int8 calibrated on the "
                             "evaluated images")
        try:
            qlayers = quantize(net)
        except QuantizeError as e:
            notes.append(f"no int8 model ({e})")
            qlayers = None
        ups = standard_upscalers(net, qlayers)
        if args.self_ensemble:
            ups["float-x8"] = self_ensemble(ups["float"])
        res = evaluate(images, net.scale, ups, min_lr=net.receptive_field)
    except ImageError as e:
        code = EXIT_NOT_FOUND if "no such file" in str(e) else EXIT_INPUT
        raise CLIError(str(e), code) from None
    for note in notes:
        print(f"deconvsr eval: note: {note}", file=sys.stderr)
    mean = res["mean"]["psnr"]
    summary = {"gain_vs_bicubic_db": mean["float"] - mean["bicubic"]}
    if "int8" in mean:
        summary["int8_gain_vs_bicubic_db"] = mean["int8"] - mean["bicubic"]
        summary["int8_loss_db"] = mean["float"] - mean["int8"]
    if "float-x8" in mean:
        summary["self_ensemble_gain_vs_bicubic_db"] = mean["float-x8"] - mean["bicubic"]
    diffs = [row["max_abs_diff"].get("float-deconv", 0.0) for row in res["images"]]
    summary["max_abs_diff_float_deconv"] = max(diffs)
    res["summary"] = summary
    res["model"] = net.name
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(_table(res, net.name))
    return 0
