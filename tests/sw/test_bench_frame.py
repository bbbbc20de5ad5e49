"""``deconvsr bench frame``: frames measured end to end on a simulated board agree with the
model the benchmark uses for large frames, carry nothing but the frame on the wire, and are
bit-exact."""

import pytest

from deconvsr.sim.harness import available_simulators
from deconvsr.sw.bench import frame as bench_frame

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="verilator not installed")


def test_measured_frame_and_model_agree():
    fb = bench_frame.FrameBench("icebreaker", "edge-x2", (9, 14), frames=1)
    rtl = bench_frame.measure(fb)
    assert rtl["bit_exact"]
    overhead = bench_frame.calibrate(fb)        # (on a 6 x 6 frame)
    model = bench_frame.model(fb, overhead)
    assert model["engine_cycles"] == rtl["engine_cycles"]
    assert model["frame_s"] == pytest.approx(rtl["frame_s"], rel=0.01)
    assert model["wire_to_device"] == pytest.approx(rtl["wire_to_device"], abs=2)
    assert model["wire_from_device"] == rtl["wire_from_device"]
    # nothing but the frame on the wire: 1 byte a pixel in, the kept pixels out, framing
    assert rtl["wire_to_device"] + rtl["wire_from_device"] <= 1.05 * rtl["frame_bytes"] + 512
    assert rtl["frame_bytes"] == 9 * 14 * 5


def test_the_uart_rate_sets_the_line_time():
    """--baud: the same frame's wire bytes at half the rate take twice the line time."""
    fast = bench_frame.model(bench_frame.FrameBench("icebreaker", "edge-x2", (40, 40)), 0)
    slow = bench_frame.model(bench_frame.FrameBench("icebreaker", "edge-x2", (40, 40),
                                                    baud=3_000_000), 0)
    assert fast["line_baud"] == 6_000_000 and slow["line_baud"] == 3_000_000
    assert (fast["wire_to_device"], fast["wire_from_device"]) == \
        (slow["wire_to_device"], slow["wire_from_device"])
    assert slow["line_s"] == pytest.approx(2 * fast["line_s"])
    assert slow["frame_s"] > fast["frame_s"]


def test_cli_refuses_a_baud_without_the_uart(capsys):
    import deconvsr.sw.cli.main as cli
    assert cli.main(["bench", "frame", "--board", "icebreaker", "--link", "spi",
                     "--baud", "3000000"]) != 0
    assert "--baud" in capsys.readouterr().err
