"""The pieces of the board-top simulation (``deconvsr.sim.board_top``): the PLL models make the
clock their divider settings give (and refuse settings outside the data sheet's ranges), the
sources name what the board top instantiates, and bad arguments get one clear error.

The PLL models run under Icarus (quick); the whole board top runs in
``test_boards_system.py`` (slow).
"""

import shutil
import subprocess

import pytest

from deconvsr.hw.boards import BOARDS, ecp5_pll, ice40_pll
from deconvsr.sim import board_top
from deconvsr.sim.board_top import MODELS_DIR, BoardSimError

# A bench that drives the reference at REF_PS and prints the PLL's output period, measured over
# 64 output cycles after lock.
BENCH = r"""
`timescale 1ns / 1ps
module tb;
  reg refclk = 0;
  wire out, lock;
  real t0, t1;
  integer i;
  always #(REF_PS / 2000.0) refclk = ~refclk;
  INSTANCE
  initial begin
    wait (lock);
    @(posedge out); t0 = $realtime;
    for (i = 0; i < 64; i = i + 1) @(posedge out);
    t1 = $realtime;
    $display("PERIOD_PS %0d", $rtoi((t1 - t0) * 1000.0 / 64 + 0.5));
    $finish;
  end
  initial begin #200000; $display("TIMEOUT"); $finish; end
endmodule
"""

ICE40 = """SB_PLL40_PAD #(.FEEDBACK_PATH("SIMPLE"), .DIVR({r}), .DIVF({f}), .DIVQ({q}),
  .FILTER_RANGE(1)) pll (.PACKAGEPIN(refclk), .PLLOUTGLOBAL(out), .LOCK(lock), .RESETB(1'b1),
  .BYPASS(1'b0));"""
ECP5 = """EHXPLLL #(.CLKI_DIV({i}), .CLKFB_DIV({fb}), .CLKOP_DIV({op}), .FEEDBK_PATH("CLKOP"))
  pll (.CLKI(refclk), .CLKFB(out), .CLKOP(out), .LOCK(lock), .RST(1'b0));"""


def _run_pll(tmp_path, model, instance, ref_hz):
    if not shutil.which("iverilog"):
        pytest.skip("iverilog not installed")
    ref_ps = 2 * round(0.5e12 / ref_hz)
    (tmp_path / "tb.v").write_text(BENCH.replace("REF_PS", str(ref_ps))
                                   .replace("INSTANCE", instance))
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", str(MODELS_DIR / "pll_model.v"),
                    str(MODELS_DIR / model)],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    return out


def _period(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("PERIOD_PS")]
    assert lines, out
    return int(lines[0].split()[1])


def test_ice40_pll_model_makes_the_boards_clock(tmp_path):
    board = BOARDS["icebreaker"]
    p = ice40_pll(12e6, board.sync_hz)
    inst = ICE40.format(r=p.ref_div - 1, f=p.fb_div - 1, q=p.out_div.bit_length() - 1)
    got = _period(_run_pll(tmp_path, "sb_pll40_pad.v", inst, 12e6))
    assert abs(got - 1e12 / board.clk_hz) <= 2, (got, board.clk_hz)


ICE40_2F = """SB_PLL40_2F_PAD #(.FEEDBACK_PATH("SIMPLE"), .DIVR({r}), .DIVF({f}), .DIVQ({q}),
  .FILTER_RANGE(1), .PLLOUT_SELECT_PORTA("{a}"), .PLLOUT_SELECT_PORTB("{b}")) pll
  (.PACKAGEPIN(refclk), .PLLOUTGLOBALA({out_a}), .PLLOUTGLOBALB({out_b}), .LOCK(lock),
  .RESETB(1'b1), .BYPASS(1'b0));"""


@pytest.mark.parametrize("port", ["A", "B"])
def test_ice40_2f_pll_model_makes_the_engine_and_link_clocks(tmp_path, port):
    # the board's settings: port A the engine clock, port B the link's (half of it)
    board = BOARDS["icebreaker"]
    assert board.link_div == 2
    p = ice40_pll(12e6, board.sync_hz)
    other = "unused"
    inst = f"wire {other};\n" + ICE40_2F.format(
        r=p.ref_div - 1, f=p.fb_div - 1, q=p.out_div.bit_length() - 1,
        a="GENCLK", b="GENCLK_HALF",
        out_a="out" if port == "A" else other, out_b="out" if port == "B" else other)
    got = _period(_run_pll(tmp_path, "sb_pll40_pad.v", inst, 12e6))
    want_hz = board.clk_hz if port == "A" else board.link_hz
    assert abs(got - 1e12 / want_hz) <= 2, (got, want_hz)


def test_ice40_2f_pll_model_refuses_other_outputs(tmp_path):
    inst = "wire x;\n" + ICE40_2F.format(r=0, f=63, q=4, a="SHIFTREG_0deg", b="GENCLK",
                                         out_a="x", out_b="out")
    out = _run_pll(tmp_path, "sb_pll40_pad.v", inst, 12e6)
    assert "PLLOUT_SELECT SHIFTREG_0deg / GENCLK is not modelled" in out, out


def test_ecp5_pll_model_makes_the_boards_clock(tmp_path):
    board = BOARDS["ulx3s-85f"]
    p = ecp5_pll(25e6, board.sync_hz)
    inst = ECP5.format(i=p.ref_div, fb=p.fb_div, op=p.out_div)
    got = _period(_run_pll(tmp_path, "ecp5_prims.v", inst, 25e6))
    assert abs(got - 1e12 / board.clk_hz) <= 2, (got, board.clk_hz)


@pytest.mark.parametrize("model, instance, message", [
    # VCO 12 MHz * 100 = 1200 MHz: above 1066
    ("sb_pll40_pad.v", ICE40.format(r=0, f=99, q=4), "SB_PLL40_PAD model: out of range"),
    # VCO 25 MHz * 4 * 10 = 1000 MHz: above 800
    ("ecp5_prims.v", ECP5.format(i=1, fb=4, op=10), "EHXPLLL model: out of range"),
])
def test_pll_models_refuse_settings_out_of_range(tmp_path, model, instance, message):
    ref = 12e6 if model.startswith("sb_") else 25e6
    out = _run_pll(tmp_path, model, instance, ref)
    assert message in out and "PERIOD_PS" not in out, out


@pytest.mark.parametrize("name, prims", [("icebreaker", ("SB_IO", "SB_MAC16", "SB_PLL40_PAD",
                                                         "SB_PLL40_2F_PAD")),
                                         ("ulx3s-85f", ("IB", "OBZ", "EHXPLLL"))])
def test_primitive_models_cover_the_board_tops_instances(name, prims):
    text = board_top.primitive_models(name)
    for prim in prims:
        assert f"module {prim} " in text or f"module {prim}(" in text, prim
    # the Verilator edit of SB_IO's clock enable was applied
    assert "=== 1'bz" not in text


def test_wrapper_names_the_boards_pins():
    text = board_top.wrapper_verilog("ulx3s-85f", "board_ulx3s_85f")
    assert "board_ulx3s_85f dut (.clk25_0__io(osc_pin), .uart_0__rx__io(rx_pin)" in text
    assert "assign in_reset = dut.rst;" in text


def test_board_sim_errors():
    with pytest.raises(BoardSimError, match="board must be one of icebreaker, ulx3s-85f, "
                                            "not 'nope'"):
        board_top.osc_hz("nope")


def test_sim_device_board_arguments():
    sim = pytest.importorskip("deconvsr.sim.device")
    with pytest.raises(ValueError, match="board is needed with top 'board' and only there, "
                                         "not None with top 'board'"):
        sim.SimDevice(top="board")
    with pytest.raises(ValueError, match="board is needed with top 'board' and only there, "
                                         "not 'icebreaker' with top 'uart'"):
        sim.SimDevice(top="uart", board="icebreaker")
    with pytest.raises(ValueError, match="board must be one of icebreaker, ulx3s-85f, "
                                         "not 'nope'"):
        sim.SimDevice(top="board", board="nope")
    dev = sim.SimDevice(top="board", board="ulx3s-85f")
    assert (dev.spec, dev.baud, dev.clk_hz) == ("ulx3s-85f", BOARDS["ulx3s-85f"].baud,
                                               int(BOARDS["ulx3s-85f"].clk_hz))
