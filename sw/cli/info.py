"""``deconvsr info``: identify a device and print its counters."""

from __future__ import annotations

import json

from ..host.device import DeviceError, GoldenDevice, open_device
from ..host.program import ProgramError
from ..host.stream import compile_frame
from .main import EXIT_DEVICE, CLIError, add_board_argument, board_baud
from .upscale import load_qlayers, positive_seconds

__all__ = ["register", "run"]


def register(subparsers):
    p = subparsers.add_parser("info", help="identify a device and read its counters",
                              description=__doc__)
    p.add_argument("--device", default="sim", help="sim, sim-uart, sim-spi, serial:PORT[@BAUD], "
                   "spi:FTDI_URL")
    p.add_argument("--model", metavar="MODEL",
                   help="also say whether this model (a name or file, e.g. an imported "
                        "NAME.npz) runs on the device: its program compiled for the device's "
                        "engine on a 64 x 64 frame")
    add_board_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=positive_seconds, metavar="S",
                   help="a reply's allowance beyond its line time (default 2 s for a board, "
                        "120 s for a simulated device)")
    p.set_defaults(func=run)


def _fits(qlayers, spec) -> dict:
    try:
        compile_frame(qlayers, (64, 64), spec)
    except ProgramError as e:
        return {"fits": False, "why": str(e)}
    return {"fits": True, "why": None}


def run(args) -> int:
    qlayers = load_qlayers(args.model)[1] if args.model else None
    try:
        device = open_device(args.device, timeout=args.timeout, baud=board_baud(args))
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    try:
        if isinstance(device, GoldenDevice):
            raise CLIError("the golden model is not a device: nothing to identify", EXIT_DEVICE)
        info = {"identify": device.identify(), "counters": device.counters()}
        if qlayers is not None:
            info["model"] = {"model": args.model, **_fits(qlayers, device.info.spec)}
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    finally:
        device.close()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info["identify"].items():
            print(f"{k:>14}: {v}")
        for k, v in info["counters"].items():
            print(f"{k:>14}: {v}")
        if "model" in info:
            m = info["model"]
            print(f"{'model':>14}: {m['model']}: "
                  + ("runs on this device" if m["fits"] else f"does not fit ({m['why']})"))
    return 0
