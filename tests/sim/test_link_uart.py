"""UartSoC (bus twin) at 3 Mbaud on a 48 MHz clock (16 clocks per bit) under Verilator, driven
bit by bit by a host UART model: IDENTIFY, write/read-back/verify, statistics, bursts; also with
the host's baud rate off by +-1.5 %. See ``deconvsr.sim.tb.link_uart``."""

import pytest

from deconvsr import protocol
from deconvsr.hw.decoder import LINK_KIND_UART
from deconvsr.sim.harness import available_simulators
from deconvsr.sim.tb.link_models import run_link_tb

CLK_HZ, BAUD = 48_000_000, 3_000_000
CLK_PS = 2 * round(0.5e12 / CLK_HZ)

needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="Verilator not installed")


def _top():
    from deconvsr.hw.soc import UartSoC
    return UartSoC(clk_hz=CLK_HZ, baud=BAUD)


@needs_verilator
@pytest.mark.parametrize("error", [0.0, pytest.param(0.015, marks=[pytest.mark.slow,
                                                                   pytest.mark.long]),
                                   pytest.param(-0.015, marks=[pytest.mark.slow,
                                                               pytest.mark.long])])
def test_uart_3mbaud(error):
    res = run_link_tb(_top, "deconvsr.sim.tb.link_uart", toplevel="link_uart",
                      env={"DECONVSR_CLK_PS": CLK_PS, "DECONVSR_DIVISOR": CLK_HZ // BAUD,
                           "DECONVSR_BAUD_ERROR": error, "DECONVSR_SEED": 3})
    assert res["ok"] and res["divisor"] == 16
    info = res["identify"]
    assert (info["kind"], info["clk_hz"], info["baud"]) == (LINK_KIND_UART, CLK_HZ, BAUD)
    w = res["bursts"]["write"]
    # Host bytes go at the host's bit time, replies at the SoC's (16 clocks).
    line_ps = 10 * (w["bytes_out"] * res["bit_ps"] + w["bytes_in"] * 16 * CLK_PS)
    # Back to back on the line: the burst takes its line time plus a short turnaround.
    assert line_ps <= w["sim_ps"] <= line_ps + 200 * CLK_PS * 16, (w, line_ps)
    assert w["payload"] / (w["bytes_out"] + w["bytes_in"]) > 0.95
    print(f"uart {error:+.3f}: bursts {res['bursts']}")


def test_stuffed_frame_sizes():
    # The burst's wire size is the stuffed frame: FEND + header + CRCs + escapes.
    from deconvsr.sw.host.driver import Driver
    from deconvsr.protocol import Opcode
    data = bytes([protocol.FEND, 1, protocol.FESC, 2, protocol.FIDLE])
    frame = Driver.encode(Opcode.WRITE, 1, 3, 0, len(data), data)
    assert len(frame) >= protocol.request_overhead(True) + len(data) + 3
