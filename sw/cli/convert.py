"""``deconvsr convert MODEL.onnx -o OUT.onnx [--json]``: rewrite sub-pixel and nearest-resize
convolutions of an ONNX model into ``ConvTranspose`` (see :mod:`deconvsr.sw.model.onnx_convert`)."""

from __future__ import annotations

import json
import os

from ..model.transforms import TransformError
from .main import EXIT_INPUT, EXIT_INTERNAL, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "run", "load_model"]


def register(subparsers):
    p = subparsers.add_parser(
        "convert", help="rewrite sub-pixel / resize convolutions of an ONNX model into "
                        "ConvTranspose",
        description="Find every sub-pixel convolution (Conv + DepthToSpace, or the "
                    "Reshape-Transpose-Reshape pixel shuffle) and every nearest resize "
                    "convolution (Resize/Upsample + Conv) and rewrite it into an exactly "
                    "equivalent ConvTranspose (plus a periodic bias where needed).")
    p.add_argument("model", metavar="MODEL.onnx", help="input ONNX model")
    p.add_argument("-o", "--output", metavar="OUT.onnx",
                   help="where to write the rewritten model (omit to only report)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--allow-unchanged", action="store_true",
                   help="exit 0 (and write OUT.onnx unchanged) when there is nothing to convert")
    p.set_defaults(func=run)


def load_model(path: str):
    """Load and check an ONNX model, turning every failure into a one-line :class:`CLIError`."""
    import onnx     # heavy (about 1 s): only for this command
    from google.protobuf.message import DecodeError

    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file", EXIT_NOT_FOUND)
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not an ONNX file", EXIT_INPUT)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CLIError(f"{path}: cannot read: {e.strerror or e}", EXIT_INPUT) from e
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as e:
        raise CLIError(f"{path}: corrupted or not an ONNX model (cannot parse: {e})",
                       EXIT_INPUT) from e
    if not data or model.ir_version == 0 or not model.HasField("graph"):
        raise CLIError(f"{path}: corrupted or not an ONNX model (no IR version or graph)",
                       EXIT_INPUT)
    try:
        onnx.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"{path}: cannot load its external weights: {first}", EXIT_INPUT) from e
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"{path}: invalid ONNX model: {first}", EXIT_INPUT) from e
    return model


def run(args) -> int:
    # onnx (and the rewriter built on it) is a heavy import (about 1 s): only for this command.
    import onnx

    from ..model.onnx_convert import convert_model

    model = load_model(args.model)
    if args.output and os.path.exists(args.output) and os.path.samefile(args.output, args.model):
        raise CLIError(f"{args.output}: would overwrite the input {args.model}", EXIT_INPUT)
    try:
        result = convert_model(model)
    except TransformError as e:
        raise CLIError(f"{args.model}: cannot convert {e}", EXIT_INPUT) from e
    try:
        onnx.checker.check_model(result.model)
    except onnx.checker.ValidationError as e:      # a bug here, not the user's fault
        first = str(e).strip().splitlines()[0]
        raise CLIError(f"rewritten model fails onnx.checker: {first}", EXIT_INTERNAL) from e
    nothing = not result.rewrites and not args.allow_unchanged
    if args.output and not nothing:
        # Atomic: a temporary file beside the output, renamed over it when complete (an
        # interrupted run leaves the old file or the new one, never half of one).
        tmp = os.path.join(os.path.dirname(os.path.abspath(args.output)),
                           f".{os.path.basename(args.output)}.{os.getpid()}.part")
        try:
            onnx.save(result.model, tmp)
            os.replace(tmp, args.output)
        except OSError as e:
            raise CLIError(f"{args.output}: cannot write: {e.strerror or e}", EXIT_INPUT) from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    if args.json:
        print(json.dumps({
            "input": args.model, "output": args.output,
            "written": bool(args.output) and not nothing,
            "rewritten": [r.as_dict() for r in result.rewrites],
            "skipped": [s.as_dict() for s in result.skipped],
        }, indent=2))
    else:
        for r in result.rewrites:
            print(f"rewrote {r.line()}")
        for s in result.skipped:
            print(f"skipped {s.line()}")
        if not result.rewrites and args.allow_unchanged:
            print(f"{args.model}: nothing to convert (no sub-pixel or nearest-resize "
                  "convolution)")
        if args.output and not nothing:
            what = (f"{len(result.rewrites)} pattern(s) rewritten" if result.rewrites
                    else "unchanged")
            print(f"wrote {args.output} ({what})")
    if nothing:
        raise CLIError(f"{args.model}: nothing to convert (no sub-pixel or nearest-resize "
                       "convolution); --allow-unchanged to accept that", EXIT_INPUT)
    return 0
