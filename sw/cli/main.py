"""The ``deconvsr`` command line.

Each subcommand lives in its own module ``deconvsr.sw.cli.<name>`` exposing
``register(subparsers)`` (adds its parser and sets ``func``). Errors that users can cause are
:class:`CLIError` (or any ``deconvsr`` error type listed in ``USER_ERRORS``): printed as one line
with a distinct exit code, with the traceback only under ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback

from ...hw.boards import BOARDS

__all__ = ["CLIError", "main", "add_board_argument", "board_baud"]

# Subcommand modules, in the order `deconvsr --help` lists them.
COMMANDS = [
    "convert", "import", "costmodel", "bench", "models", "eval", "train",
    "build", "program", "report", "upscale", "info", "serve", "demo",
]
#: Commands whose module name differs (``import`` is a Python keyword).
MODULES = {"import": "import_model"}


class CLIError(Exception):
    """An error to show as one line. ``code`` is the process exit code."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# Exit codes: 0 ok, 1 internal error, 2 bad input/usage, 3 device/link error, 4 not found.
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_DEVICE = 3
EXIT_NOT_FOUND = 4


def add_board_argument(p) -> None:
    """``--board NAME`` for the commands that open a device: a ``serial:PORT`` device opens at
    that board's link rate (``deconvsr/constraints/boards.toml``)."""
    p.add_argument("--board", choices=list(BOARDS),
                   help="the board on a serial:PORT device: open the port at its link's baud ("
                        + ", ".join(f"{n} {b.baud}" for n, b in BOARDS.items())
                        + "); serial:PORT@BAUD overrides it")


def board_baud(args):
    """The baud of ``--board`` (None without one)."""
    return BOARDS[args.board].baud if getattr(args, "board", None) else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deconvsr",
        description="Deconvolution accelerator for CNN image upsampling (Colbert et al. 2021).")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging; -v also shows tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"deconvsr.sw.cli.{MODULES.get(name, name)}")
        module.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that every ``finally`` runs (temporary
    directories removed, a simulator stopped), as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return _main(argv)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return _main(argv)


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        return args.func(args) or 0
    except CLIError as e:
        if args.verbose:                 # the traceback too, but the same exit code
            traceback.print_exc()
        print(f"deconvsr {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"deconvsr {args.command}: {'terminated' if terminated else 'interrupted'}",
              file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
