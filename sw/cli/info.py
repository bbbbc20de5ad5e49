"""``deconvsr info``: identify a device and print its counters."""

from __future__ import annotations

import json

from ..host.device import DeviceError, GoldenDevice, open_device
from .main import EXIT_DEVICE, CLIError
from .upscale import positive_seconds

__all__ = ["register", "run"]


def register(subparsers):
    p = subparsers.add_parser("info", help="identify a device and read its counters",
                              description=__doc__)
    p.add_argument("--device", default="sim", help="sim, sim-uart, sim-spi, serial:PORT[@BAUD], "
                   "spi:FTDI_URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=positive_seconds, metavar="S",
                   help="a reply's allowance beyond its line time (default 2 s for a board, "
                        "120 s for a simulated device)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        device = open_device(args.device, timeout=args.timeout)
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    try:
        if isinstance(device, GoldenDevice):
            raise CLIError("the golden model is not a device: nothing to identify", EXIT_DEVICE)
        info = {"identify": device.identify(), "counters": device.counters()}
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
    return 0
