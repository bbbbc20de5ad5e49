# amaranth: UnusedElaboratable=no
"""UARTRx / UARTTx (``deconvsr.hw.uart``) in amaranth.sim, the line driven in simulated time
(edges anywhere between clock edges, not on them): the divisors the boards use (the
iCEBreaker's link: 18 MHz / 6 Mbaud = 3; 48 MHz / 3 Mbaud = 16; the ULX3S: 33), random bytes
back to back and with random idle gaps, the host's rate off both ways. Outside
:func:`~deconvsr.hw.uart.rx_tolerance` the receiver must fail (the check can fail)."""

import random

import pytest
from amaranth.sim import Simulator

from deconvsr.hw.uart import MIN_DIVISOR, UARTRx, UARTTx, rx_tolerance, uart_divisor

PERIOD = 1 / 24e6


def _receive(divisor, data, *, error=0.0, gap_bits=0.0, seed=1):
    """Send ``data`` into a UARTRx at ``divisor`` from a host whose bit time is the receiver's
    divided by ``1 + error``; ``gap_bits``: idle before each byte, uniform in 0..gap_bits bit
    times (any fraction of a clock). Returns (bytes received, frame errors, overruns)."""
    rng = random.Random(seed)
    dut = UARTRx(divisor=divisor)
    bit = divisor * PERIOD / (1 + error)
    got, errors = [], {"frame": 0, "overrun": 0}
    done = []

    async def host(ctx):
        ctx.set(dut.rx, 1)
        await ctx.delay(PERIOD * (5 + rng.random()))
        for byte in data:
            if gap_bits:
                await ctx.delay(rng.random() * gap_bits * bit)
            for b in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(dut.rx, b)
                await ctx.delay(bit)
        await ctx.delay(2 * bit)
        done.append(True)

    async def sink(ctx):
        ctx.set(dut.data.ready, 1)
        async for _, _, valid, payload, fe, ov in ctx.tick().sample(
                dut.data.valid, dut.data.payload, dut.frame_error, dut.overrun):
            if valid:
                got.append(payload)
            errors["frame"] += fe
            errors["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(host)
    sim.add_process(sink)
    sim.run_until(len(data) * (10 + gap_bits + 1) * bit + 1e-6)
    assert done, "the host did not finish"
    return bytes(got), errors["frame"], errors["overrun"]


def _data(n, seed):
    rng = random.Random(seed)
    # every bit pattern that stresses sampling: alternating bits, long runs, random
    return bytes([0x55, 0xAA, 0x00, 0xFF, 0x01, 0x80, 0xFE, 0x7F] +
                 [rng.randrange(256) for _ in range(n - 8)])


def test_divisors_of_the_boards():
    assert uart_divisor(18_000_000, 6_000_000) == 3        # iCEBreaker link: exact
    assert uart_divisor(24_000_000, 6_000_000) == 4
    assert uart_divisor(100_000_000, 3_000_000) == 33      # 100 MHz: 3.03 Mbaud, +1 %
    assert uart_divisor(90_000_000, 3_000_000) == 30       # ULX3S: exact
    with pytest.raises(ValueError, match="minimum is 3"):
        uart_divisor(24_000_000, 12_000_000)               # 2 clocks per bit: refused
    with pytest.raises(ValueError):
        UARTRx(divisor=MIN_DIVISOR - 1)


def test_rx_tolerance_figures():
    low, high = rx_tolerance(3)
    assert (round(low, 4), round(high, 4)) == (-0.0357, 0.0345)   # 27/28 - 1, 30/29 - 1
    low, high = rx_tolerance(16)
    assert (round(low, 4), round(high, 4)) == (-0.0526, 0.0458)


@pytest.mark.parametrize("divisor", [3, 4, 16, 33])
@pytest.mark.parametrize("error", [0.0, 0.003, -0.003])
@pytest.mark.parametrize("gap_bits", [0.0, 2.5], ids=["back-to-back", "gaps"])
def test_rx_receives_every_byte(divisor, error, gap_bits):
    data = _data(120 if divisor < 16 else 40, divisor)    # ~4k bit times of simulation
    got, frame_errors, overruns = _receive(divisor, data, error=error, gap_bits=gap_bits,
                                           seed=divisor * 7 + int(error * 1e4))
    assert (got, frame_errors, overruns) == (data, 0, 0)


@pytest.mark.parametrize("divisor", [3, 16])
@pytest.mark.parametrize("side", [0, 1], ids=["slow-host", "fast-host"])
def test_rx_near_and_beyond_its_tolerance(divisor, side):
    """0.4 % inside the computed tolerance every byte arrives; 1 % beyond it they do not."""
    data = _data(150 if divisor < 16 else 50, 5)
    edge = rx_tolerance(divisor)[side]
    inside = edge - 0.004 if side else edge + 0.004
    got, fe, _ = _receive(divisor, data, error=inside, gap_bits=1.5, seed=11)
    assert (got, fe) == (data, 0)
    outside = edge + 0.01 if side else edge - 0.01
    got, fe, _ = _receive(divisor, data, error=outside, gap_bits=1.5, seed=11)
    assert got != data or fe > 0


@pytest.mark.parametrize("divisor", [3, 16])
def test_tx_bit_times_and_loopback(divisor):
    """UARTTx back to back: every bit exactly ``divisor`` clocks, 10 bits a byte, LSB first;
    its line into a UARTRx at the same divisor returns the bytes."""
    data = _data(40, 3)
    tx, rx = UARTTx(divisor=divisor), UARTRx(divisor=divisor)
    from amaranth import Module
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    line, got = [], []

    async def source(ctx):
        for byte in data:
            ctx.set(tx.data.valid, 1)
            ctx.set(tx.data.payload, byte)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)

    async def watch(ctx):
        ctx.set(rx.data.ready, 1)
        async for _, _, level, valid, payload in ctx.tick().sample(tx.tx, rx.data.valid,
                                                                    rx.data.payload):
            line.append(level)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(PERIOD)
    sim.add_testbench(source)
    sim.add_process(watch)
    sim.run_until((len(data) + 3) * 10 * divisor * PERIOD)
    assert bytes(got) == data
    start = line.index(0)
    frames = line[start:start + len(data) * 10 * divisor]
    for i, byte in enumerate(data):
        bits = [0] + [(byte >> k) & 1 for k in range(8)] + [1]
        want = [b for b in bits for _ in range(divisor)]
        assert frames[i * 10 * divisor:(i + 1) * 10 * divisor] == want, i
