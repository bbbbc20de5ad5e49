"""``deconvsr models``: list the shipped networks."""

from __future__ import annotations

import json

from ..model.zoo import ModelError, load_model, model_info, shipped_names
from .main import EXIT_INPUT, CLIError

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the shipped networks",
        description="The shipped super-resolution networks: upscale factor, layers, MACs per "
                    "low-resolution pixel, int8 weight bytes after the transform, engines "
                    "they fit and how they were trained.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    infos = []
    for name in shipped_names():
        try:
            infos.append(model_info(load_model(name)))
        except ModelError as e:
            raise CLIError(f"shipped model {name} is broken: {e}", EXIT_INPUT) from None
    if args.json:
        print(json.dumps(infos, indent=1))
        return 0
    for info in infos:
        fits = ", ".join(info["fits"]) or "no engine budget registered"
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
