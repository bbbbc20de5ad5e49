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
