"""``deconvsr serve``: a simulated board on a TCP port, until stopped (Ctrl-C).

The board's SoC (its engine spec, its link at its line rate and clock) runs on the native
simulated device (:mod:`deconvsr.sim.device.native`), which accepts host connections one after
another and keeps its state between them, as a board does. Any program that speaks the link
protocol drives it like a board, e.g. ``deconvsr upscale IN.png -o OUT.png --device
serial:socket://127.0.0.1:PORT`` (the driver finds the simulated device's control port on
PORT + 1 and allows for simulated time running slower than real time).
"""

from __future__ import annotations

import time

from ...hw.boards import BOARDS
from ...sim.device import NativeDevice, NativeDeviceError
from .main import EXIT_DEVICE, EXIT_INPUT, CLIError

__all__ = ["register", "run", "served_board"]

BOARD_CHOICES = (*BOARDS, "sim")


def register(subparsers):
    p = subparsers.add_parser("serve", help="serve a simulated board on a TCP port",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--board", choices=BOARD_CHOICES, default="sim",
                   help="whose engine spec, clock and line rate (default sim: spec sim, 48 MHz, "
                        "the stream top)")
    p.add_argument("--top", choices=("stream", "uart", "spi"),
                   help="the link: stream (a byte per cycle), uart (the board's baud), spi "
                        "(default: uart for a board, stream for sim)")
    p.add_argument("--port", type=int, default=0,
                   help="TCP port (default: a free one); the control port is the next one")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.set_defaults(func=run)


def served_board(board: str, top: str | None) -> dict:
    """The simulated device's parameters for ``board`` (a name in BOARDS, or ``sim``)."""
    if board == "sim":
        return {"spec": "sim", "clk_hz": 48_000_000, "baud": 3_000_000,
                "top": top or "stream"}
    b = BOARDS[board]
    return {"spec": b.spec.name, "clk_hz": int(round(b.clk_hz)), "baud": b.baud,
            "top": top or "uart"}


def _device_name(top: str, url: str) -> str:
    return f"spi:{url}" if top == "spi" else f"serial:{url}"


def run(args) -> int:
    if not 0 <= args.port < 65535:
        raise CLIError(f"--port must be in 0..65534, not {args.port}", EXIT_INPUT)
    p = served_board(args.board, args.top)
    try:
        dev = NativeDevice(top=p["top"], engine="engine", spec=p["spec"], clk_hz=p["clk_hz"],
                           baud=p["baud"], serve=True, port=args.port, host=args.host)
    except ValueError as e:
        raise CLIError(str(e), EXIT_INPUT) from None
    print(f"building the simulated {args.board} (first time: a minute or two) ...", flush=True)
    try:
        dev.open()
    except NativeDeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    url = f"socket://{host}:{dev.port}"
    link = (f"UART {p['baud']:,} baud" if p["top"] == "uart" else
            "SPI" if p["top"] == "spi" else "byte stream")
    print(f"serving a simulated {args.board} (engine spec {p['spec']}, "
          f"{p['clk_hz'] / 1e6:g} MHz, {link}) on {url}", flush=True)
    print(f"  drive it with: deconvsr upscale IN.png -o OUT.png --device "
          f"{_device_name(p['top'], url)}", flush=True)
    print("  Ctrl-C stops it", flush=True)
    seen = 0
    try:
        while dev.proc.poll() is None:
            time.sleep(0.5)
            try:
                st = dev.status()
            except OSError:
                continue
            if st["connections"] != seen:
                seen = st["connections"]
                print(f"  connection {seen} (simulated so far: {st['cycles']:,} cycles, "
                      f"{st['bytes_in']:,} bytes in, {st['bytes_out']:,} out)", flush=True)
        raise CLIError(f"the simulated device stopped:\n{dev.log_tail()}", EXIT_DEVICE)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0
    finally:
        dev.close(timeout=5)
