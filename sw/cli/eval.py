"""``deconvsr eval``: quality of a network against bicubic, before/after transform and after
quantisation.

How images are degraded and measured: :mod:`deconvsr.sw.model.evaluate`.
"""

from __future__ import annotations

import json
import sys

from ..host.imaging import ImageError
from ..model.evaluate import calibrated_on, evaluate, load_images, self_ensemble, standard_upscalers
from ..model.quantize import QuantizeError, quantize
from ..model.zoo import ModelError, load_model
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "run"]


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
            calibrated = calibrated_on(net, images)
            if calibrated is not None:
                net = calibrated
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
