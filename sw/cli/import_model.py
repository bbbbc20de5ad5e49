"""``deconvsr import MODEL.{onnx,pt,pth} -o NAME.npz``: convert a trained network, calibrate
its activation ranges on sample images and save a model package (``NAME.npz`` + ``NAME.json``,
the format of the shipped networks) that ``upscale``, ``eval``, ``models`` and ``bench engine``
take by path.

A state_dict holds weights only: ``--act`` and ``--padding`` say what it does not (nothing is
guessed). A network whose hidden activations are not ReLU is imported with its activations
recorded, and refused by the commands that run it on the engine (ReLU only for now).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ..host.imaging import ImageError
from ..model.evaluate import calibrated_on, load_images
from ..model.importers import ACT_CHOICES, ImportError_, load_state_dict
from ..model.network import NetworkError
from ..model.quantize import QuantizeError, quantize
from ..model.zoo import ModelError, deconv_weight_bytes, fitting_specs, load_model, save_model
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "run", "calibration_images"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="convert, calibrate and save a trained ONNX / PyTorch network",
        description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="ONNX file, or PyTorch state_dict (.pt/.pth)")
    p.add_argument("-o", "--output", required=True, metavar="NAME.npz",
                   help="the package to write (NAME.npz and NAME.json)")
    p.add_argument("--calib", default="skimage", metavar="DIR|skimage",
                   help="images to calibrate the activation ranges on: a folder or file, or "
                        "'skimage' (scikit-image's photographs; default)")
    p.add_argument("--act", metavar="ACT",
                   help=f"state_dict only: the activation after each hidden conv ({ACT_CHOICES}"
                        "; one, or one per hidden layer, comma-separated)")
    p.add_argument("--padding", metavar="PAD",
                   help="state_dict only: each conv's padding: 'same' (K//2), one integer, or "
                        "one per conv")
    p.add_argument("--last", choices=["subpixel", "resize"], default="subpixel",
                   help="state_dict only: the last conv feeds a PixelShuffle (default) or "
                        "follows a nearest upsample")
    p.add_argument("--scale", type=int, metavar="R",
                   help="state_dict only: the upscale factor (needed with --last resize)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def calibration_images(spec: str):
    """``[(name, uint8 RGB)]`` of ``--calib`` (CLIError when there are none)."""
    try:
        images = load_images([spec])
    except ImageError as e:
        raise CLIError(f"--calib: {e}", EXIT_NOT_FOUND if "no such file" in str(e)
                       else EXIT_INPUT) from None
    if not images:
        raise CLIError(f"--calib: {spec}: no images", EXIT_INPUT)
    return images


def run(args) -> int:
    src = Path(args.model)
    pt = src.suffix.lower() in (".pt", ".pth")
    if not pt:
        for opt in ("act", "padding", "scale"):
            if getattr(args, opt) is not None:
                raise CLIError(f"--{opt}: only for a PyTorch state_dict; {src.name} says it "
                               "itself", EXIT_INPUT)
    out = Path(args.output)
    if out.suffix.lower() not in ("", ".npz"):
        raise CLIError(f"-o: {args.output}: give NAME.npz (the package is NAME.npz + "
                       "NAME.json)", EXIT_INPUT)
    if args.scale is not None and not 2 <= args.scale <= 8:
        raise CLIError(f"--scale: must be in 2..8, not {args.scale}", EXIT_INPUT)
    options = ({"act": args.act, "padding": args.padding, "last": args.last, "r": args.scale}
               if pt else None)
    if pt and (args.act is None or args.padding is None):
        try:        # a corrupted or whole-model file is said first
            load_state_dict(src)
        except ImportError_ as e:
            raise CLIError(str(e), EXIT_NOT_FOUND if "no such file" in str(e)
                           else EXIT_INPUT) from None
        missing = "--act" if args.act is None else "--padding"
        what = ("which activation follows each conv" if args.act is None
                else "how each conv pads")
        raise CLIError(f"{src}: a state_dict does not say {what}: give {missing}"
                       + (f" ({ACT_CHOICES})" if args.act is None else " (same, or one "
                          "integer per conv)"), EXIT_INPUT)
    try:
        net = load_model(src, options=options)
    except ModelError as e:
        raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
    images = calibration_images(args.calib)
    try:
        calibrated = calibrated_on(net, images)
    except NetworkError as e:
        raise CLIError(f"{src}: {e}", EXIT_INPUT) from None
    if calibrated is None:
        raise CLIError(f"--calib: no image of {args.calib} is as large as the network's "
                       f"receptive field ({net.receptive_field} LR pixels at x{net.scale})",
                       EXIT_INPUT)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    meta = {**calibrated.meta, "arch": "imported",
            "imported": {"file": src.name, "sha256": digest,
                         "command": "deconvsr " + " ".join(sys.argv[1:]) if sys.argv else "",
                         "calibration_images": [n for n, _ in images]}}
    if options:
        meta["imported"]["options"] = {k: v for k, v in options.items() if v is not None}
    net = type(net)(net.layers, out.stem, meta)
    runnable, why = True, None
    try:
        quantize(net)
    except QuantizeError as e:
        runnable, why = False, str(e)
    try:
        npz, js = save_model(net, out)
    except OSError as e:
        raise CLIError(f"{args.output}: cannot write: {e.strerror or e}", EXIT_INPUT) from None
    fits = fitting_specs(net) if runnable else []
    summary = {"input": str(src), "output": str(npz), "metadata": str(js), "scale": net.scale,
               "layers": net.describe(), "weight_bytes": deconv_weight_bytes(net),
               "calibration_images": len(images), "runs_on_engine": runnable, "fits": fits,
               "refused_because": why}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"imported {src} -> {npz} (+ {js.name}): x{net.scale}, "
              f"{summary['weight_bytes']:,} weight bytes, calibrated on {len(images)} image(s)")
        for layer in summary["layers"]:
            print(f"    {layer}")
        if runnable:
            print(f"fits: {', '.join(fits) or 'no engine spec'}")
    if why:
        print(f"deconvsr import: note: {why}; the package records it, and upscale/bench refuse "
              "it", file=sys.stderr)
    return 0
