"""ShiftAddMul: the logic multiplier (no DSP) of the ECP5 engine, against Python's product."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from deconvsr.hw.lutmul import ShiftAddMul


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("a_bits,b_bits", [(8, 8), (5, 3), (8, 2)])
def test_products_exact(a_bits, b_bits, stages):
    """Every (a, b) pair for small widths, the extremes and 3000 random pairs at 8 x 8;
    ``p`` follows its operands by exactly LATENCY cycles."""
    rng = np.random.default_rng(a_bits * 31 + b_bits)
    amax, blo, bhi = (1 << a_bits) - 1, -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    if a_bits * b_bits <= 16:
        pairs = [(x, y) for x in range(amax + 1) for y in range(blo, bhi + 1)]
    else:
        pairs = [(x, y) for x in (0, 1, amax) for y in (blo, -1, 0, 1, bhi)]
        pairs += [(int(x), int(y)) for x, y in zip(rng.integers(0, amax + 1, 3000),
                                                   rng.integers(blo, bhi + 1, 3000))]
    dut = ShiftAddMul(a_bits, b_bits, stages=stages)
    got = []

    async def bench(ctx):
        for i in range(len(pairs) + dut.LATENCY):
            if i < len(pairs):
                ctx.set(dut.a, pairs[i][0])
                ctx.set(dut.b, pairs[i][1])
            await ctx.tick()
            if i + 1 >= dut.LATENCY:
                got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [x * y for x, y in pairs]
    assert got[:len(want)] == want


def test_bad_widths():
    with pytest.raises(ValueError, match="b_bits >= 2"):
        ShiftAddMul(8, 1)
    with pytest.raises(ValueError, match="stages 2 or 3"):
        ShiftAddMul(8, 8, stages=4)
