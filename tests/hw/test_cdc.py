"""StreamCDC: the host bus between a link on its own clock and the engine."""

import random

import pytest
from amaranth import Module, Value
from amaranth.sim import Simulator

from deconvsr.bus import BusCommand
from deconvsr.hw.cdc import StreamCDC


def _run(dut, sent, *, i_period, o_period, p_idle, p_stall, seed):
    """Drive ``sent`` into ``dut.i`` (domain ``a``) and collect ``dut.o`` (domain ``b``)."""
    rng = random.Random(seed)
    got, payloads_while_valid = [], []
    m = Module()
    m.submodules.dut = dut

    async def src(ctx):
        for v in sent:
            while rng.random() < p_idle:
                await ctx.tick("a")
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), v)
            await ctx.tick("a").until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            # (junk on the payload between transfers: the output must not follow it)
            ctx.set(Value.cast(dut.i.payload), v ^ 0x55)

    async def sink(ctx):
        async for _, _, v, p, r in ctx.tick("b").sample(dut.o.valid,
                                                         Value.cast(dut.o.payload), dut.o.ready):
            if v:
                payloads_while_valid.append(p)
            if v and r:
                got.append(p)
            ctx.set(dut.o.ready, int(rng.random() >= p_stall))

    sim = Simulator(m)
    sim.add_clock(i_period, domain="a")
    sim.add_clock(o_period, domain="b", phase=o_period * 0.37)
    sim.add_testbench(src)
    sim.add_process(sink)
    steps = [0]

    async def wait_all(ctx):
        while len(got) < len(sent):
            await ctx.tick("a")
            steps[0] += 1
    sim.add_testbench(wait_all)
    sim.run_until((len(sent) + 10) * 40 * max(i_period, o_period))
    return got, payloads_while_valid, steps[0]


@pytest.mark.parametrize("i_period, o_period", [(2e-8, 1e-8), (1e-8, 2e-8), (3e-8, 1.7e-8)],
                         ids=["slow-to-fast", "fast-to-slow", "unrelated"])
@pytest.mark.parametrize("p_idle, p_stall", [(0.0, 0.0), (0.4, 0.6)])
def test_every_transfer_once_in_order(i_period, o_period, p_idle, p_stall):
    dut = StreamCDC(8, i_domain="a", o_domain="b")
    rng = random.Random(7)
    sent = [rng.randrange(256) for _ in range(120)]
    got, seen, a_cycles = _run(dut, sent, i_period=i_period, o_period=o_period,
                               p_idle=p_idle, p_stall=p_stall, seed=int(p_stall * 10))
    assert got == sent
    # o.payload holds while o.valid: every value seen while valid is one that was sent
    assert set(seen) <= set(sent)
    if p_idle == p_stall == 0:
        # one transfer in flight: at most ~(stages + 2) cycles of each domain per transfer
        per = a_cycles / len(sent)
        assert per <= 4 + 4 * o_period / i_period, per


def test_bus_commands_cross_whole():
    dut = StreamCDC(BusCommand, i_domain="a", o_domain="b")
    rng = random.Random(3)
    sent = [BusCommand.const({"space": rng.randrange(8), "write": rng.randrange(2),
                              "addr": rng.randrange(1 << 24), "data": rng.randrange(256)})
            .as_value().value for _ in range(40)]
    got, _, _ = _run(dut, sent, i_period=4.2e-8, o_period=2.1e-8, p_idle=0.2, p_stall=0.3,
                     seed=5)
    assert got == sent


def test_ready_and_valid_are_registered():
    """i.ready does not follow i.valid, nor o.valid o.ready, within a cycle."""
    dut = StreamCDC(8, i_domain="a", o_domain="b")
    m = Module()
    m.submodules.dut = dut

    async def tb(ctx):
        assert ctx.get(dut.i.ready) == 1 and ctx.get(dut.o.valid) == 0
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 0xA5)
        assert ctx.get(dut.i.ready) == 1        # no combinational path valid -> ready
        await ctx.tick("a")
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.busy) == 1
        await ctx.tick("b").until(dut.o.valid)
        assert ctx.get(dut.o.payload) == 0xA5
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.o.valid) == 1        # no combinational path ready -> valid
        await ctx.tick("b")
        ctx.set(dut.o.ready, 0)
        assert ctx.get(dut.o.valid) == 0
        await ctx.tick("a").until(dut.i.ready)
        assert ctx.get(dut.busy) == 0

    sim = Simulator(m)
    sim.add_clock(2e-8, domain="a")
    sim.add_clock(1e-8, domain="b")
    sim.add_testbench(tb)
    sim.run_until(1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(i_domain="a", o_domain="a"), "i_domain and o_domain must differ, not both 'a'"),
    (dict(i_domain="a", o_domain="b", stages=1), "stages must be an integer >= 2, not 1"),
])
def test_parameters_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamCDC(8, **kwargs)


def test_soc_link_clock_is_checked():
    from deconvsr.hw.soc import UartSoC
    with pytest.raises(ValueError, match="link_clock must be one of shared, own, not 'fast'"):
        UartSoC("icebreaker", link_clock="fast")
