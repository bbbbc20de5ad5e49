"""``deconvsr train``: train a network on a folder of images (needs the ``train`` extra)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..host.imaging import ImageError
from ..model.network import ARCHS, NetworkError
from ..model.train import TrainError, train
from ..model.zoo import ModelError, load_model, save_model
from .main import EXIT_INPUT, EXIT_NOT_FOUND, CLIError

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a super-resolution network (needs torch)",
        description="Train on any folder of photographs: BT.601 Y channel, random LR/HR patch "
                    "pairs (Pillow bicubic degradation, as eval), flips/rotations, Adam. Writes "
                    "OUT.npz + OUT.json with the training record and calibrated activation "
                    "ranges.")
    p.add_argument("--data", required=True, help="folder of training images")
    p.add_argument("--arch", required=True, choices=sorted(ARCHS), help="architecture")
    p.add_argument("--scale", type=int, required=True, help="upscale factor r")
    p.add_argument("-o", "--output", required=True, help="output path (OUT.npz + OUT.json)")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget (default 5)")
    p.add_argument("--batch", type=int, default=32, help="patches per step (default 32)")
    p.add_argument("--patch", type=int, default=24, help="LR patch side (default 24)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--loss", choices=("l1", "mse"), default="l1")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="stop after this many steps (the learning-rate "
                                             "schedule then follows steps, not time)")
    p.add_argument("--init", choices=("interp", "kaiming"), default="interp",
                   help="initialisation: 'interp' starts as bilinear interpolation (default)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="continue training from this model (same architecture and scale)")
    p.add_argument("--hr-scales", default="1", metavar="S,S,...",
                   help="also train on copies of each photograph downscaled by these factors "
                        "(multi-scale augmentation; default 1: full size only)")
    p.add_argument("--context", action="store_true",
                   help="loss on each patch's centre, the real image around it as input (as "
                        "whole-image inference sees it), not on zero-padded patch borders")
    p.add_argument("--qat", action="store_true",
                   help="quantisation-aware: train through the int8 model's rounding at the "
                        "--init-from model's activation ranges")
    p.set_defaults(func=run)


def run(args) -> int:
    if not Path(args.data).exists():
        raise CLIError(f"{args.data}: no such directory", EXIT_NOT_FOUND)
    name = Path(args.output).with_suffix("").name if args.output.endswith(".npz") \
        else Path(args.output).name
    # The command as a canonical, complete line (every option spelled out), so the record
    # does not depend on how it was invoked.
    command = (f"deconvsr train --data {shlex.quote(args.data)} --arch {args.arch} "
               f"--scale {args.scale} -o {shlex.quote(args.output)} --minutes {args.minutes:g}"
               + (f" --steps {args.steps}" if args.steps else "")
               + f" --batch {args.batch} --patch {args.patch} --lr {args.lr:g} --loss {args.loss}"
               f" --threads {args.threads} --init {args.init} --seed {args.seed}"
               + (f" --init-from {shlex.quote(args.init_from)}" if args.init_from else ""))
    try:
        hr_scales = tuple(float(v) for v in args.hr_scales.split(","))
    except ValueError:
        raise CLIError(f"--hr-scales: not a list of numbers: {args.hr_scales!r}",
                       EXIT_INPUT) from None
    if args.hr_scales != "1":
        command += f" --hr-scales {args.hr_scales}"
    if args.context:
        command += " --context"
    if args.qat:
        command += " --qat"
    init_from = None
    if args.init_from:
        try:
            init_from = load_model(args.init_from)
        except ModelError as e:
            raise CLIError(str(e), EXIT_NOT_FOUND if e.not_found else EXIT_INPUT) from None
    try:
        net = train(args.data, args.arch, args.scale, minutes=args.minutes, batch=args.batch,
                    patch=args.patch, lr=args.lr, loss=args.loss, threads=args.threads,
                    seed=args.seed, name=name, command=command, init=args.init,
                    max_steps=args.steps, init_from=init_from, hr_scales=hr_scales,
                    context=args.context, qat=args.qat)
    except (TrainError, ImageError, NetworkError) as e:
        raise CLIError(str(e), EXIT_INPUT) from None
    npz, js = save_model(net, args.output)
    t = net.meta["training"]
    print(f"trained {name}: {t['steps']} steps in {t['seconds']} s, final {t['loss']} loss "
          f"{t['final_loss']:.5f}; wrote {npz} and {js}")
    return 0
