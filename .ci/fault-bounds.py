#!/usr/bin/env python3
"""How long `deconvsr upscale` takes to end against each misbehaving device of
:mod:`deconvsr.sim.device.fault` (a device on a socket, its frames tiled), with the driver's
default deadlines or ``--timeout S``: one line per fault with the exit code, the seconds and
the message (or whether the picture equals the golden model's).

    python .ci/fault-bounds.py [--timeout 0.5]
"""

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deconvsr.sim.device.fault import FAULTS, FaultDevice
from deconvsr.sw.cli.main import main


def run(args):
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(io.StringIO()):
        t0 = time.monotonic()
        code = main([str(a) for a in args])
    return code, time.monotonic() - t0, out.getvalue().strip().splitlines()[-1:] or [""]


def cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", help="passed to upscale (default: the driver's, 2 s)")
    ap.add_argument("--model", default="edge-x2")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fault-bounds-"))
    rgb = (np.arange(20 * 24 * 3).reshape(20, 24, 3) * 7 % 251).astype(np.uint8)
    Image.fromarray(rgb).save(tmp / "in.png")
    run(["upscale", tmp / "in.png", "-o", tmp / "golden.png", "--device", "golden", "--model",
         args.model])
    golden = np.asarray(Image.open(tmp / "golden.png"))
    extra = ["--timeout", args.timeout] if args.timeout else []
    for fault in [None, *FAULTS]:
        with FaultDevice(fault) as dev:
            out = tmp / f"{fault}.png"
            code, seconds, msg = run(["upscale", tmp / "in.png", "-o", out, "--device",
                                      f"serial:{dev.url}", "--model", args.model, *extra])
        if code == 0:
            msg = ["the golden model's picture" if np.array_equal(
                np.asarray(Image.open(out)), golden) else "A DIFFERENT PICTURE"]
        print(f"{str(fault):15} exit {code}  {seconds:6.2f} s  {msg[0][:150]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
