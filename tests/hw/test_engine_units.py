"""Unit tests of the engine's pieces in amaranth.sim: requantisation against the arithmetic
contract, the descriptor packing, parameter validation, and a tiny engine run over the bus
(sequencer, phase counters, MAC tree, drain) against the integer model."""

import dataclasses

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from deconvsr.arith import DEFAULT_ARITH, requantize
from deconvsr.bus import BusCommand, Space
from deconvsr.descriptor import BiasEntry, DESC_BYTES, DIM, LayerDescriptor, pack, unpack
from deconvsr.hw.engine import Engine
from deconvsr.hw.requant import Requant
from deconvsr.spec import EngineSpec
from deconvsr.sw.bench.engine import random_qlayer
from deconvsr.sw.golden.intmodel import run_network
from deconvsr.sw.host.program import compile_network, set_input


def test_requant_matches_contract(rng):
    a = DEFAULT_ARITH
    cases = [(0, 0, 1, 0), (255, 0, 1, 0), (256, 0, 1, 0), (-1, 0, 1, 0),
             (a.acc_max, 0, a.mult_max, 0), (a.acc_min, 0, a.mult_max, 0),
             (a.acc_max, 0, a.mult_max, a.shift_max), (a.acc_min, -1, a.mult_max, a.shift_max),
             (-3, 0, 1, 1), (3, 0, 1, 1), (5, 0, 1, 1), (-5, 0, 1, 1), (1 << 20, -(1 << 20), 7, 3),
             (100, 28, 3, 1), (1000, 0, 65535, 24), (-1000, 0, 65535, 24)]
    for _ in range(200):
        cases.append((int(rng.integers(-2**30, 2**30)), int(rng.integers(-2**20, 2**20)),
                      int(rng.integers(0, 2**16)), int(rng.integers(0, 48))))
    dut = Requant(a, tag_shape=16)
    got = []

    async def bench(ctx):
        for i in range(len(cases) + dut.latency + 1):
            if i < len(cases):
                acc, bias, mult, shift = cases[i]
                ctx.set(dut.i.payload, {"acc": acc, "bias": bias, "mult": mult, "shift": shift,
                                        "tag": i})
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.o.valid):
                got.append((ctx.get(dut.o.payload.tag), ctx.get(dut.o.payload.data)))
            # busy: an accepted input is in a stage before the output one.
            assert ctx.get(dut.busy) == (0 < i <= len(cases) + dut.latency - 2)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [t for t, _ in got] == list(range(len(cases)))
    for (tag, q), (acc, bias, mult, shift) in zip(got, cases):
        want = requantize(acc + bias, mult, shift)
        assert q == want, (acc, bias, mult, shift, q, want)
    # Both saturation ends are exercised.
    assert {0, 255} <= {q for _, q in got}


def _check_requant_run(dut, bench, cases, got, sent, a):
    """Run ``bench`` on ``dut``; every case's result in order, ``latency`` cycles after it
    went in, equal to the contract; both clamps seen."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [t for _, t, _ in got] == list(range(len(cases)))
    assert [i for i, _, _ in got] == [i + dut.latency for i in sent]
    for (_, tag, q), (acc, bias, mult, shift) in zip(got, cases):
        want = requantize(acc + bias, mult, shift, a)
        assert q == want, (acc, bias, mult, shift, q, want)
    assert {0, 255} <= {q for _, _, q in got}


@pytest.mark.parametrize("lean,shift_max", [(False, 47), (True, 47), (True, 31)],
                         ids=["full", "lean", "lean-31"])
def test_requant_serial_matches_contract(rng, lean, shift_max):
    """One multiplier used twice per output (the iCE40's single SB_MAC16): inputs every
    other cycle, at the narrower widths it supports (lean: the last shift stage keeps only
    what the clamp reads)."""
    from deconvsr.arith import ArithSpec
    a = ArithSpec(acc_bits=24, mult_bits=15, shift_max=shift_max)
    cases = [(0, 0, 1, 0), (255, 0, 1, 0), (-1, 0, 1, 0), (a.acc_max, 0, a.mult_max, 0),
             (a.acc_min, 0, a.mult_max, 0), (a.acc_max, a.acc_max, a.mult_max, a.shift_max),
             (a.acc_min, a.acc_min, a.mult_max, a.shift_max), (-5, 0, 1, 1), (5, 0, 1, 1),
             ((1 << 15) - 1, 1, a.mult_max, 15), (-(1 << 15), 0, a.mult_max, 15)]
    for _ in range(300):
        cases.append((int(rng.integers(a.acc_min, a.acc_max + 1)),
                      int(rng.integers(-2**20, 2**20)), int(rng.integers(0, a.mult_max + 1)),
                      int(rng.integers(0, a.shift_max + 1))))
    dut = Requant(a, tag_shape=16, serial=True, lean=lean)
    assert dut.latency == 7
    got, sent = [], []

    async def bench(ctx):
        k = 0
        for i in range(3 * len(cases) + dut.latency + 4):
            # every other cycle, sometimes a gap of three
            go = k < len(cases) and i % 2 == 0 and i % 14 != 6
            if go:
                acc, bias, mult, shift = cases[k]
                ctx.set(dut.i.payload, {"acc": acc, "bias": bias, "mult": mult, "shift": shift,
                                        "tag": k})
                sent.append(i)
                k += 1
            if not go:      # what is offered without valid must not matter
                ctx.set(dut.i.payload, {"acc": int(rng.integers(a.acc_min, a.acc_max + 1)),
                                        "bias": 7, "mult": 3, "shift": 5, "tag": 999})
            ctx.set(dut.i.valid, go)
            if ctx.get(dut.o.valid):
                got.append((i, ctx.get(dut.o.payload.tag), ctx.get(dut.o.payload.data)))
            await ctx.tick()

    _check_requant_run(dut, bench, cases, got, sent, a)
    with pytest.raises(ValueError, match="serial requantiser needs"):
        Requant(DEFAULT_ARITH, serial=True)


@pytest.mark.parametrize("tag_delay", [0, 1, None])
def test_lut_requant_matches_contract(rng, tag_delay):
    """The requantiser in logic (Booth steps, one input per PERIOD cycles): the contract at
    the iCE40 widths, every shift from shift_min, both clamps, inputs spaced by exactly the
    period and by more; the tag taken tag_delay cycles after the operands."""
    from deconvsr.arith import ArithSpec
    from deconvsr.hw.requant import LutRequant
    a = ArithSpec(acc_bits=24, mult_bits=15, shift_max=31, shift_min=15)
    cases = [(0, 0, 1, 15), (255, 0, 1, 15), (-1, 0, 1, 15), (a.acc_max, 0, a.mult_max, 15),
             (a.acc_min, 0, a.mult_max, 15), (a.acc_max, a.acc_max, a.mult_max, 31),
             (a.acc_min, a.acc_min, a.mult_max, 31), (a.acc_min, a.acc_min, a.mult_max, 15),
             (-5, 0, 1 << 14, 15), (5, 0, 1 << 14, 15), (3, 0, 1 << 14, 15),
             ((1 << 15) - 1, 1, a.mult_max, 30), (-(1 << 15), 0, a.mult_max, 16),
             (1000, 0, 0, 20), (1 << 20, 0, 0x5555, 27), (-(1 << 20), 3, 0x2AAA, 27)]
    cases += [(int(rng.integers(-4096, 4096)), 0, int(rng.integers(0, a.mult_max + 1)),
               sh) for sh in range(15, 32)]
    for _ in range(150):
        cases.append((int(rng.integers(a.acc_min, a.acc_max + 1)),
                      int(rng.integers(-2**20, 2**20)), int(rng.integers(0, a.mult_max + 1)),
                      int(rng.integers(a.shift_min, a.shift_max + 1))))
    dut = LutRequant(a, tag_shape=16, tag_delay=tag_delay)
    per = dut.period
    got, sent = [], []

    async def bench(ctx):
        k, nxt = 0, 0
        for i in range((per + 2) * len(cases) + dut.latency + 4):
            go = k < len(cases) and i >= nxt
            before = len(sent)      # (inputs sent in earlier cycles)
            if go:
                acc, bias, mult, shift = cases[k]
                ctx.set(dut.i.payload, {"acc": acc, "bias": bias, "mult": mult, "shift": shift,
                                        "tag": 999})
                sent.append(i)
                nxt = i + per + (3 if k % 5 == 4 else 0)
            else:           # what is offered without valid must not matter
                ctx.set(dut.i.payload, {"acc": int(rng.integers(a.acc_min, a.acc_max + 1)),
                                        "bias": 7, "mult": 3, "shift": 20, "tag": 999})
            if tag_delay is None:   # the last earlier input's tag, held for the period
                if before and i <= sent[before - 1] + per:
                    ctx.set(dut.i.payload.tag, before - 1)
            elif sent and i == sent[-1] + tag_delay:
                ctx.set(dut.i.payload.tag, len(sent) - 1)
            ctx.set(dut.i.valid, go)
            if go:
                k += 1
            if ctx.get(dut.o.valid):
                got.append((i, ctx.get(dut.o.payload.tag), ctx.get(dut.o.payload.data)))
            await ctx.tick()

    _check_requant_run(dut, bench, cases, got, sent, a)
    with pytest.raises(ValueError, match="needs shift_min >= 15"):
        LutRequant(ArithSpec(acc_bits=24, mult_bits=15))


def test_requant_rejects_bad_arith():
    with pytest.raises(TypeError, match="arith must be an ArithSpec"):
        Requant(8)


def test_engine_rejects_bad_spec():
    with pytest.raises(TypeError, match="spec must be an EngineSpec"):
        Engine({"lanes": 16})


def test_spec_act_depth_power_of_two():
    with pytest.raises(ValueError, match="act_depth must be a power of two, not 1000"):
        EngineSpec(act_depth=1000)


def test_spec_act_lanes():
    assert EngineSpec(lanes=16).act_lanes == 16
    narrow = EngineSpec(name="n", lanes=16, act_lanes=4, drain_lanes=4, counters="basic")
    back = EngineSpec.from_id_bytes(narrow.id_bytes(), name="n")
    assert back == narrow
    fixed = dataclasses.replace(narrow, fixed_pi=True)
    assert EngineSpec.from_id_bytes(fixed.id_bytes(), name="n") == fixed
    with pytest.raises(ValueError, match="fixed_pi must be True or False, not 1"):
        EngineSpec(fixed_pi=1)
    # Identification written before act_lanes existed (last byte 0) means act_lanes = lanes.
    old = bytearray(EngineSpec(lanes=8).id_bytes())
    old[-1] = 0
    assert EngineSpec.from_id_bytes(bytes(old)).act_lanes == 8
    with pytest.raises(ValueError, match=r"act_lanes must be a power of two in 1..lanes \(16\), not 32"):
        EngineSpec(lanes=16, act_lanes=32)
    with pytest.raises(ValueError, match="drain_lanes must be a power of two dividing act_lanes"):
        EngineSpec(lanes=16, act_lanes=2, drain_lanes=4)
    with pytest.raises(ValueError, match="counters must be 'all' or 'basic', not 'some'"):
        EngineSpec(counters="some")


def test_descriptor_pack_roundtrip_and_limits():
    d = {name: 0 for name, _ in data.Layout.cast(LayerDescriptor)}
    d.update(useful=[[1, 2], [3, 4]], by0=-3, obase0=-(1 << 20), h_in=(1 << DIM) - 1, t=15)
    raw = pack(LayerDescriptor, d, DESC_BYTES)
    back = unpack(LayerDescriptor, raw)
    assert (back["by0"], back["obase0"], back["h_in"], back["t"]) == \
        (-3, -(1 << 20), (1 << DIM) - 1, 15)
    with pytest.raises(ValueError, match="value 16 does not fit"):
        pack(LayerDescriptor, {**d, "t": 16}, DESC_BYTES)
    with pytest.raises(ValueError, match="does not fit"):
        pack(BiasEntry, {"bias": 1 << 31, "mult": 0, "shift": 0, "lane": 0, "fy": 0, "fx": 0,
                         "off": 0}, 16)


TINY = EngineSpec(name="tiny", lanes=4, act_depth=64, weight_depth=128, bias_depth=32,
                  out_bytes=1024, max_layers=2, dim_bits=6)


def _cmd_value(space, write, addr, data):
    return {"space": space, "write": write, "addr": addr, "data": data}


def _run_engine_pysim(spec, prog, *, reads):
    """Drive the bus in amaranth.sim: all writes of ``prog``, start, wait, then ``reads``
    (list of (space, addr, n)). Returns the read bytes per read and the run cycles."""
    dut = Engine(spec)
    results = []
    cycles = []

    async def bench(ctx):
        async def send(space, write, addr, data):
            ctx.set(dut.bus.cmd.payload, _cmd_value(space, write, addr, data))
            ctx.set(dut.bus.cmd.valid, 1)
            while True:
                ready = ctx.get(dut.bus.cmd.ready)
                await ctx.tick()
                if ready:
                    break
            ctx.set(dut.bus.cmd.valid, 0)

        ctx.set(dut.bus.rsp.ready, 1)
        for space, addr, data in prog.writes():
            for i, b in enumerate(data):
                await send(space, 1, addr + i, b)
        for _ in range(4):          # the start command acts two cycles after it is taken
            if ctx.get(dut.busy):
                break
            await ctx.tick()
        assert ctx.get(dut.busy)
        n = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            n += 1
        cycles.append(n)
        for space, addr, count in reads:
            got = []
            for i in range(count):
                await send(space, 0, addr + i, 0)
                while not ctx.get(dut.bus.rsp.valid):
                    await ctx.tick()
                got.append(ctx.get(dut.bus.rsp.payload))
                await ctx.tick()
            results.append(bytes(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results, cycles[0]


@pytest.mark.parametrize("stride,k,pd", [(2, 4, 1), (3, 5, 2), (1, 3, 1)])
def test_tiny_engine_pysim(rng, stride, k, pd):
    """Sequencer, phase counters, lane mapping and drain on a tiny engine in amaranth.sim."""
    x = rng.integers(0, 256, size=(3, 3, 4))
    layer = random_qlayer(rng, 3, 2, k, stride, pd, x=x)
    prog = set_input(compile_network([layer], x.shape, TINY), x.astype(np.uint8))
    (out, ident), cycles = _run_engine_pysim(
        TINY, prog, reads=[(Space.OUT, 0, prog.out_len), (Space.ID, 0, len(TINY.id_bytes()))])
    want = run_network(x, [layer])
    assert want.max() > want.min()  # a non-trivial case
    np.testing.assert_array_equal(prog.decode(out), want)
    assert ident == TINY.id_bytes()
    plan = prog.plans[0]
    blocks = (prog.out_shape[1] - 1 + pd) // stride - pd // stride + 1
    blocks *= (prog.out_shape[2] - 1 + pd) // stride - pd // stride + 1
    # One MAC cycle per (block, group, word, tap) plus the descriptor load (DESC_BYTES + 4)
    # and the pipeline drain (~18 + Pv cycles with ACT's two bank registers and the
    # requantiser's output register).
    assert blocks * plan.n_vg * plan.group_cycles() <= cycles <= \
        blocks * plan.n_vg * max(plan.group_cycles(), plan.pv) + DESC_BYTES + 34


def test_bus_command_layout_is_the_shared_one():
    # The testbenches pack commands from the same Struct: check the field order they rely on.
    names = [name for name, _ in data.Layout.cast(BusCommand)]
    assert names == ["space", "write", "addr", "data"]
