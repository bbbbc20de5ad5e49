"""The ECP5 flow's netlist step that moves a block RAM's read register into the block
(``deconvsr.hw.synth.absorb_bram_output_registers``): on hand-made yosys JSON netlists
(quick), and on a small design through yosys and nextpnr-ecp5 (synth, slow)."""

import copy
import json
import subprocess

import pytest

from deconvsr.hw.synth import absorb_bram_output_registers

CLK, CE, RST = 2, 3, 4


def _ram(name_bits, regmode="NOREG"):
    """A DP16KD reading on port A, its DOA0..n pins on nets ``name_bits``."""
    conn = {"CLKA": [CLK], "CLKB": ["0"], "OCEA": ["1"], "OCEB": ["1"], "CEA": ["1"]}
    dirs = {}
    for i in range(18):
        conn[f"DOA{i}"] = [name_bits[i]] if i < len(name_bits) else [1000 + i]
        conn[f"DOB{i}"] = [2000 + i]
        dirs[f"DOA{i}"] = dirs[f"DOB{i}"] = "output"
    return {"type": "DP16KD", "parameters": {"REGMODE_A": regmode, "REGMODE_B": "NOREG",
                                             "CLKAMUX": "CLKA", "GSR": "DISABLED"},
            "connections": conn, "port_directions": dirs}


def _ff(d, q, *, clk=CLK, ce=None, lsr="0", regset="RESET"):
    conn = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    params = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
              "REGSET": regset, "SRMODE": "LSR_OVER_CE"}
    if ce is not None:
        conn["CE"] = [ce]
        params["CEMUX"] = "CE"
    return {"type": "TRELLIS_FF", "parameters": params, "connections": conn,
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                "Q": "output"}}


def _netlist(ffs, extra=None, width=3):
    cells = {"ram": _ram([10 + i for i in range(width)])}
    for i, ff in enumerate(ffs):
        cells[f"ff{i}"] = ff
    cells.update(extra or {})
    return {"modules": {"top": {"ports": {"q": {"direction": "output",
                                                "bits": [20 + i for i in range(width)]}},
                                "cells": cells, "netnames": {}}}}


def test_read_register_moves_into_the_block():
    net = _netlist([_ff(10 + i, 20 + i) for i in range(3)])
    assert absorb_bram_output_registers(net) == ["ram.A"]
    cells = net["modules"]["top"]["cells"]
    assert set(cells) == {"ram"}
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG"
    assert ram["parameters"]["REGMODE_B"] == "NOREG"
    assert [ram["connections"][f"DOA{i}"] for i in range(3)] == [[20], [21], [22]]
    assert ram["connections"]["OCEA"] == ["1"]
    # idempotent: a second run finds nothing more to do
    assert absorb_bram_output_registers(net) == []


def test_common_clock_enable_goes_to_oce():
    net = _netlist([_ff(10 + i, 20 + i, ce=CE) for i in range(3)])
    assert absorb_bram_output_registers(net) == ["ram.A"]
    assert net["modules"]["top"]["cells"]["ram"]["connections"]["OCEA"] == [CE]


@pytest.mark.parametrize("why, ffs, extra", [
    ("a reset", [_ff(10, 20), _ff(11, 21, lsr=RST), _ff(12, 22)], None),
    ("powers up as 1", [_ff(10, 20), _ff(11, 21, regset="SET"), _ff(12, 22)], None),
    ("another clock", [_ff(10, 20), _ff(11, 21, clk=9), _ff(12, 22)], None),
    ("two enables", [_ff(10, 20, ce=CE), _ff(11, 21, ce=7), _ff(12, 22, ce=CE)], None),
    ("one enabled, one not", [_ff(10, 20, ce=CE), _ff(11, 21), _ff(12, 22, ce=CE)], None),
    ("logic after a pin", [_ff(10, 20), _ff(12, 22)],
     {"lut": {"type": "LUT4", "connections": {"A": [11], "Z": [21]},
              "port_directions": {"A": "input", "Z": "output"}}}),
    ("a pin drives two flip-flops", [_ff(10, 20), _ff(11, 21), _ff(11, 30), _ff(12, 22)],
     None),
])
def test_left_alone(why, ffs, extra):
    net = _netlist(ffs, extra)
    before = copy.deepcopy(net)
    assert absorb_bram_output_registers(net) == [], why
    assert net == before


def test_output_register_already_used():
    net = _netlist([_ff(10 + i, 20 + i) for i in range(3)])
    net["modules"]["top"]["cells"]["ram"]["parameters"]["REGMODE_A"] = "OUTREG"
    assert absorb_bram_output_registers(net) == []


def test_pin_on_a_module_port_stays():
    net = _netlist([_ff(10 + i, 20 + i) for i in range(3)])
    net["modules"]["top"]["ports"]["raw"] = {"direction": "output", "bits": [11]}
    assert absorb_bram_output_registers(net) == []


def _tools():
    from deconvsr.sw.flow import build as flow
    try:
        return flow.tool_env("ecp5")
    except flow.BuildError as e:
        pytest.skip(str(e))


def _pnr(cwd, netlist):
    """nextpnr-ecp5 on the 85F at 100 MHz: (Fmax MHz, the bitstream's text configuration)."""
    subprocess.run([_tools()["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381", "--json", netlist,
                    "--freq", "100", "--lpf-allow-unconstrained", "--timing-allow-fail",
                    "--seed", "1", "--report", "r.json", "--textcfg", "t.cfg"],
                   cwd=cwd, check=True, capture_output=True)
    fmax = json.loads((cwd / "r.json").read_text())["fmax"]
    return min(v["achieved"] for v in fmax.values()), (cwd / "t.cfg").read_text()


@pytest.mark.synth
@pytest.mark.slow
def test_yosys_netlist_through_nextpnr(tmp_path):
    """Memories read straight into a register (absorbed), into an enabled register (absorbed,
    the enable on OCE) and through an adder (kept) by yosys' real ECP5 mapping: the rewritten
    netlist places and routes, the bitstream's block RAMs have their output registers, and
    the clock runs faster (the blocks' outputs are ~1 ns after the clock, not ~5.6)."""
    from amaranth import Module, Signal
    from amaranth.back import rtlil
    from amaranth.lib.memory import Memory

    from deconvsr.hw.synth import NO_COLLISION, absorb_bram_output_registers_file

    def design(kinds):
        m = Module()
        addr, wd, en = Signal(11), Signal(16), Signal()
        ports = [addr, wd, en]
        for kind in kinds:
            m.submodules[kind] = mem = Memory(shape=16, depth=2048, init=[],
                                              attrs={"no_rw_check": 1})
            rd, wr = mem.read_port(), mem.write_port()
            m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), wr.data.eq(wd), wr.en.eq(en)]
            q = Signal(16, name=f"q_{kind}", reset_less=True)
            q2 = Signal(16, name=f"q2_{kind}", reset_less=True)   # logic after q
            if kind == "enabled":
                with m.If(en):
                    m.d.sync += q.eq(rd.data)
            else:
                m.d.sync += q.eq(rd.data + 1 if kind == "added" else rd.data)
            m.d.sync += q2.eq(q ^ q.rotate_left(5))
            ports.append(q2)
        (tmp_path / "t.il").write_text(rtlil.convert(m, ports=ports, name="top"))
        subprocess.run([_tools()["YOSYS"], "-q", "-p", f"read_rtlil t.il; {NO_COLLISION}; "
                        "synth_ecp5 -top top -json t.json"], cwd=tmp_path, check=True)
        (tmp_path / "before.json").write_text((tmp_path / "t.json").read_text())
        changed = absorb_bram_output_registers_file(tmp_path / "t.json")
        return changed, json.loads((tmp_path / "t.json").read_text())["modules"]["top"]

    changed, top = design(["plain", "enabled", "added"])
    rams = {n: c for n, c in top["cells"].items() if c["type"] == "DP16KD"}
    assert {n.split(".")[0]: c["parameters"]["REGMODE_A"] for n, c in rams.items()} == \
        {"plain": "OUTREG", "enabled": "OUTREG", "added": "NOREG"}
    assert sorted(c.split(".")[0] for c in changed) == ["enabled"] * 2 + ["plain"] * 2
    en_bit = top["netnames"]["en"]["bits"][0]
    assert all(c["connections"]["OCEA"] == [en_bit] for n, c in rams.items()
               if n.startswith("enabled"))
    _, cfg = _pnr(tmp_path, "t.json")
    assert cfg.count("REGMODE_A OUTREG") == 4 and cfg.count("REGMODE_A NOREG") == 2

    # without the adder's memory, the slowest path starts at a block RAM: before, its data
    # pins (NOREG) -> the q register; after, its output register -> the multiplier -> q2.
    changed, _ = design(["plain", "enabled"])
    assert len(changed) == 4
    fmax_before, _ = _pnr(tmp_path, "before.json")
    fmax_after, _ = _pnr(tmp_path, "t.json")
    assert fmax_after > 1.15 * fmax_before, (fmax_before, fmax_after)
