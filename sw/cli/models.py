"""``deconvsr models [MODEL ...]``: list the shipped networks, or describe model files (an
imported package, an ONNX file)."""

from __future__ import annotations

import json

from ..model.network import NetworkError
from ..model.zoo import ModelError, load_model, model_info, shipped_names
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the shipped networks",
        description="The shipped super-resolution networks: upscale factor, layers, MACs per "
                    "low-resolution pixel, int8 weight bytes after the transform, engines "
                    "they fit and how they were trained.")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model names or files to describe (default: every shipped network)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    infos = []
    for name in args.models or shipped_names():
        try:
            net = load_model(name)
        except ModelError as e:
            if args.models:
                raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
            raise CLIError(f"shipped model {name} is broken: {e}", EXIT_INPUT) from None
        try:
            net.engine_check()
            info = model_info(net)
        except NetworkError as e:       # recorded activations the engine does not run yet
            info = {**model_info(net, fits=False), "refused_because": str(e)}
        infos.append(info)
    if args.json:
        print(json.dumps(infos, indent=1))
        return 0
    for info in infos:
        fits = ", ".join(info["fits"]) or "no engine budget registered"
        if info.get("refused_because"):
            fits = f"none ({info['refused_because']})"
        print(f"{info['name']}  x{info['scale']}  {info['macs_per_lr_pixel']:,} MACs/LR pixel, "
              f"{info['weight_bytes']:,} weight bytes (int8, after transform); fits: {fits}")
        for layer in info["layers"]:
            print(f"    {layer}")
        t = info["trained"]
        if t:
            runs = (f" in {t['runs']} runs ({t['total_minutes']:g} min, {t['total_steps']} steps "
                    "in all)" if t.get("runs", 1) > 1 else "")
            print(f"    trained: {t['dataset']}, {t['minutes']:g} min, {t['steps']} steps, "
                  f"final {t['loss']} loss {t['final_loss']}{runs}")
            print(f"    command: {t['command']}")
    if not infos:
        print("no shipped models")
    return 0
