"""System test of a board top: the Verilog the board flow synthesises (pins, IO buffers, PLL,
power-on reset, LEDs, the UART link + engine core at the board's engine spec, with the FPGA's
DSP blocks), with simulation models of the FPGA primitives (``deconvsr.sim.board_top``). The
test bench drives only the oscillator pin, at the oscillator's frequency, and the UART pins,
at the board's baud; the host driver sends one small frame; the result must equal the
bit-exact integer model.

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
    from deconvsr.bus import Space
    from deconvsr.sim.harness import available_simulators
    from deconvsr.sw.bench.engine import random_qlayer
    from deconvsr.sw.host.driver import Driver
    from deconvsr.sw.golden.intmodel import run_network
    from deconvsr.sw.host.program import compile_network, set_input
    from deconvsr.sw.host.transport import open_transport

    if "verilator" not in available_simulators():
        pytest.skip("verilator not installed")
    board = BOARDS[board_name]

    x = rng.integers(0, 256, size=(1, 6, 6), dtype=np.uint8)
    # a x2 deconvolution (the last layer of a sub-pixel network): 6x6 -> 12x12
    layer = random_qlayer(rng, 1, 1, 4, 2, 1, x=x)
    prog = set_input(compile_network([layer], x.shape, board.spec), x)
    want = run_network(x, [layer])

    with sim.SimDevice(top="board", board=board_name) as dev:
        transport = open_transport(dev.url, baud=board.baud)
        try:
            drv = Driver(transport, timeout=60.0)
            info = drv.identify()
            for space, addr, data in prog.setup + prog.inputs:
                drv.write(space, addr, data)
            drv.run(prog.n_layers)
            drv.wait()
            got = prog.decode(drv.read(Space.OUT, prog.out_addr, prog.out_len))
            sim_ps = dev.sim_time_ps()
        finally:
            transport.close()
    assert info is not None
    np.testing.assert_array_equal(got.reshape(want.shape), want)
    # simulated time covers at least the bits that crossed the line at the board's baud
    line_bytes = len(x.tobytes()) + want.size
    assert sim_ps >= line_bytes * 10 * 1e12 / board.baud
