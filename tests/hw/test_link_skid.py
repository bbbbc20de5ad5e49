"""SkidBuffer: the register stage of the link's reply path."""

import random

import pytest
from amaranth.sim import Simulator

from deconvsr.hw.framing import SkidBuffer


@pytest.mark.parametrize("skid", [True, False], ids=["skid", "one-entry"])
@pytest.mark.parametrize("p_idle, p_stall", [(0.0, 0.0), (0.3, 0.5), (0.7, 0.1)])
def test_order_and_throughput(p_idle, p_stall, skid):
    """Every byte once, in order, one a cycle when never stalled (also the one-entry
    register of a lean link, whose ready passes through)."""
    rng = random.Random(int(10 * p_idle + 100 * p_stall))
    dut = SkidBuffer(8, skid=skid)
    sent = [rng.randrange(256) for _ in range(300)]
    got = []

    async def src(ctx):
        for b in sent:
            while rng.random() < p_idle:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        async for _, _, v, p, r in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.o.ready):
            if v and r:
                got.append(p)
            ctx.set(dut.o.ready, int(rng.random() >= p_stall))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(src)
    sim.add_process(sink)
    cycles = [0]

    async def count(ctx):
        while len(got) < len(sent):
            await ctx.tick()
            cycles[0] += 1
    sim.add_testbench(count)
    sim.run_until(5000e-6)
    assert got == sent
    if p_idle == p_stall == 0:
        assert cycles[0] <= len(sent) + 3      # one transfer per cycle


def test_ready_is_registered():
    dut = SkidBuffer(8)

    async def tb(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 0)
        for _ in range(3):                     # fill: output register + skid
            await ctx.tick()
        for o_ready in (0, 1, 0, 1):
            ctx.set(dut.o.ready, o_ready)      # no tick: i.ready must not follow o.ready
            assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.i.ready) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
