"""System test of a board top: the Verilog the board flow synthesises (pins, IO buffers, PLL,
power-on reset, LEDs, the UART link + engine core at the board's engine spec, with the FPGA's
DSP blocks), with simulation models of the FPGA primitives (``deconvsr.sim.board_top``). The
test bench drives only the oscillator pin, at the oscillator's frequency, and the UART pins,
at the board's baud; the host driver sends one small frame; the result must equal the
bit-exact integer model (streamed band by band: the boards' engines stream).

Uses the simulated device (``deconvsr.sim.device``: Verilator + ``sim/device/cocotb_bridge.py``).
Slow: the first run builds the board top with Verilator (cached by content hash afterwards).
"""

import numpy as np
import pytest

from deconvsr.hw.boards import BOARDS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("board_name", ["icebreaker", "ulx3s-85f"])
def test_board_top_runs_a_frame_over_the_uart(board_name, rng):
    sim = pytest.importorskip("deconvsr.sim.device")
    from deconvsr.sim.harness import available_simulators
    from deconvsr.sw.bench.engine import calibrated_network
    from deconvsr.sw.host.device import LinkDevice
    from deconvsr.sw.host.driver import Driver
    from deconvsr.sw.golden.intmodel import run_network
    from deconvsr.sw.host.transport import open_transport

    if "verilator" not in available_simulators():
        pytest.skip("verilator not installed")
    board = BOARDS[board_name]

    x = rng.integers(0, 256, size=(1, 6, 6), dtype=np.uint8)
    # a 3 x 3 feature layer and a x2 deconvolution (a sub-pixel network's last): 6x6 -> 12x12
    layers = calibrated_network(rng, [(1, 4, 3, 1, 1), (4, 1, 4, 2, 1)], x,
                                arith=board.spec.arith)
    want = run_network(x, layers)

    with sim.SimDevice(top="board", board=board_name) as dev:
        transport = open_transport(dev.url, baud=board.baud)
        try:
            device = LinkDevice(Driver(transport, timeout=60.0), name="board")
            got = device.upscale(layers, x[0])
            sim_ps = dev.sim_time_ps()
        finally:
            transport.close()
    assert device.info.spec.in_bytes == board.spec.in_bytes      # (a streaming engine)
    np.testing.assert_array_equal(got, want[0])
    # simulated time covers at least the bits that crossed the line at the board's baud
    line_bytes = len(x.tobytes()) + want.size
    assert sim_ps >= line_bytes * 10 * 1e12 / board.baud
