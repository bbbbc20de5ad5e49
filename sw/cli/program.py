"""``deconvsr program``: load a built bitstream into a board (iceprog / openFPGALoader)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .build import _boards, load_board_build
from .main import EXIT_DEVICE, EXIT_NOT_FOUND, CLIError

__all__ = ["register", "program_command"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "program", help="load a built bitstream into a board",
        description="Program the board's FPGA with the bitstream `deconvsr build` wrote: "
                    "iCEBreaker with iceprog (or openFPGALoader -b icebreaker), ULX3S with "
                    "openFPGALoader -b ulx3s. SRAM only unless --flash.")
    p.add_argument("--board", required=True, choices=_boards())
    p.add_argument("-i", "--input", type=Path, metavar="DIR",
                   help="build directory (default build/BOARD)")
    p.add_argument("--flash", action="store_true",
                   help="write the configuration flash (survives power-off)")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.set_defaults(func=run)


def program_command(board, bitstream: Path, *, flash: bool = False,
                    which=None) -> list[str]:
    """The programmer command line for ``board``, with the first installed tool.

    Raises :class:`CLIError` (exit code 4) when no programmer is installed.
    """
    which = which or shutil.which
    candidates = []
    if board.family == "ice40":
        candidates.append(["iceprog", *([] if flash else ["-S"]), str(bitstream)])
        candidates.append(["openFPGALoader", "-b", "icebreaker", *(["-f"] if flash else []),
                           str(bitstream)])
    else:
        candidates.append(["openFPGALoader", "-b", "ulx3s", *(["-f"] if flash else ["-m"]),
                           str(bitstream)])
    for cmd in candidates:
        if which(cmd[0]):
            return cmd
    names = " or ".join(sorted({c[0] for c in candidates}))
    raise CLIError(f"no programmer for {board.name}: install {names} "
                   f"(Debian: apt install fpga-icestorm / openfpgaloader)", EXIT_NOT_FOUND)


def run(args) -> int:
    board, indir, result = load_board_build(args)
    bitstream = Path(indir) / result.bitstream
    if not bitstream.exists():
        raise CLIError(f"bitstream {bitstream} is missing: run `deconvsr build`", EXIT_NOT_FOUND)
    cmd = program_command(board, bitstream, flash=args.flash)
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise CLIError(f"{cmd[0]} failed (exit {e.returncode}): is the board connected?",
                       EXIT_DEVICE) from None
    print(f"the board's UART link runs at {board.baud} baud: "
          f"--device serial:PORT --board {board.name} (or serial:PORT@{board.baud})")
    return 0
