"""UartSoC (bus twin) under Verilator, driven bit by bit by a host UART model: IDENTIFY,
write/read-back/verify, statistics, bursts (``deconvsr.sim.tb.link_uart``). Two links:

* 3 Mbaud on a 48 MHz clock (16 clocks per bit), also with the host's rate off by +-1.5 %;
* the iCEBreaker's: its link clock and baud from ``boards.toml`` (18 MHz, 6 Mbaud: 3 clocks per
  bit), back to back, and with random idle gaps and the host's rate off by +-0.3 % (its
  FT2232H and the FPGA share one crystal: on the board the rates are equal)."""

import pytest

from deconvsr import protocol
from deconvsr.hw.boards import BOARDS
from deconvsr.hw.decoder import LINK_KIND_UART
from deconvsr.sim.harness import available_simulators
from deconvsr.sim.tb.link_models import run_link_tb

ICEBREAKER = BOARDS["icebreaker"]
#: name -> (clock, baud, the testbench's toplevel: one Verilator build directory each)
LINKS = {"48mhz-3mbaud": (48_000_000, 3_000_000, "link_uart"),
         "icebreaker": (int(ICEBREAKER.link_hz), ICEBREAKER.baud, "link_uart_icebreaker")}

needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="Verilator not installed")


def _run(link, error, gap_bits=0.0, seed=3):
    from deconvsr.hw.soc import UartSoC
    clk_hz, baud, toplevel = LINKS[link]
    clk_ps = 2 * round(0.5e12 / clk_hz)
    res = run_link_tb(lambda: UartSoC(clk_hz=clk_hz, baud=baud), "deconvsr.sim.tb.link_uart",
                      toplevel=toplevel,
                      env={"DECONVSR_CLK_PS": clk_ps, "DECONVSR_DIVISOR": clk_hz // baud,
                           "DECONVSR_BAUD_ERROR": error, "DECONVSR_GAP_BITS": gap_bits,
                           "DECONVSR_SEED": seed})
    assert res["ok"] and res["divisor"] == clk_hz // baud
    info = res["identify"]
    assert (info["kind"], info["clk_hz"], info["baud"]) == (LINK_KIND_UART, clk_hz, baud)
    return res, clk_ps


@needs_verilator
@pytest.mark.parametrize("link, error", [
    ("48mhz-3mbaud", 0.0),
    pytest.param("48mhz-3mbaud", 0.015, marks=[pytest.mark.slow, pytest.mark.long]),
    pytest.param("48mhz-3mbaud", -0.015, marks=[pytest.mark.slow, pytest.mark.long]),
    ("icebreaker", 0.0)])
def test_uart_back_to_back(link, error):
    res, clk_ps = _run(link, error)
    divisor = res["divisor"]
    w = res["bursts"]["write"]
    # Host bytes go at the host's bit time, replies at the SoC's (divisor clocks).
    line_ps = 10 * (w["bytes_out"] * res["bit_ps"] + w["bytes_in"] * divisor * clk_ps)
    # Back to back on the line: the burst takes its line time plus a short turnaround.
    assert line_ps <= w["sim_ps"] <= line_ps + 200 * clk_ps * divisor, (w, line_ps)
    assert w["payload"] / (w["bytes_out"] + w["bytes_in"]) > 0.95
    r = res["bursts"]["read"]
    # The reply of a READ burst leaves back to back too (the transmitter takes the next byte
    # in the last cycle of a stop bit): its line time plus the request's and a turnaround.
    read_ps = 10 * (r["bytes_out"] * res["bit_ps"] + r["bytes_in"] * divisor * clk_ps)
    assert read_ps <= r["sim_ps"] <= read_ps + 200 * clk_ps * divisor, (r, read_ps)
    print(f"uart {link} {error:+.3f}: bursts {res['bursts']}")


@needs_verilator
@pytest.mark.parametrize("error", [0.003, -0.003])
def test_icebreaker_uart_with_gaps_and_rate_error(error):
    """Random idle before every host byte (0..2.5 bit times, to the picosecond: start bits at
    every phase of the 18 MHz clock) with the host 0.3 % fast or slow."""
    res, _ = _run("icebreaker", error, gap_bits=2.5, seed=7)
    assert res["stats"]["crc_errors"] == 0 and res["stats"]["overruns"] == 0


def test_stuffed_frame_sizes():
    # The burst's wire size is the stuffed frame: FEND + header + CRCs + escapes.
    from deconvsr.sw.host.driver import Driver
    from deconvsr.protocol import Opcode
    data = bytes([protocol.FEND, 1, protocol.FESC, 2, protocol.FIDLE])
    frame = Driver.encode(Opcode.WRITE, 1, 3, 0, len(data), data)
    assert len(frame) >= protocol.request_overhead(True) + len(data) + 3
