"""The SPI peripheral (mode 0) and SpiSoC under Amaranth's simulator, against a host-side SPI
master model with pyftdi's exchange semantics (CS low, full-duplex bytes MSB first, CS high);
and the real driver over the simulated SPI device (Verilator, bus twin)."""

import random

import pytest
from amaranth.sim import Simulator

from deconvsr import protocol
from deconvsr.bus import Space
from deconvsr.hw.spi import SPIPeripheral
from deconvsr.protocol import FIDLE, Opcode
from deconvsr.sim.harness import available_simulators
from deconvsr.sim.tb.link_models import ReplyParser, identify_ok
from deconvsr.sw.host.driver import Driver


class Master:
    """SPI master model (mode 0). ``half``: system cycles per half SCK period (random per bit
    in ``jitter`` mode: 4..7)."""

    def __init__(self, dut, half=4, rng=None):
        self.dut, self.half, self.rng = dut, half, rng

    def _half(self):
        return self.half if self.rng is None else self.rng.randrange(4, 8)

    async def exchange(self, ctx, data, *, bits_only=None):
        dut = self.dut
        ctx.set(dut.cs_n, 0)
        await ctx.tick().repeat(4)
        out = bytearray()
        for byte in data:
            got = 0
            for i in range(7, -1, -1) if bits_only is None else range(7, 7 - bits_only, -1):
                ctx.set(dut.copi, (byte >> i) & 1)
                await ctx.tick().repeat(self._half())
                got = (got << 1) | ctx.get(dut.cipo)     # sampled as SCK rises
                ctx.set(dut.sck, 1)
                await ctx.tick().repeat(self._half())
                ctx.set(dut.sck, 0)
            out.append(got)
        await ctx.tick().repeat(self._half())
        ctx.set(dut.cs_n, 1)
        await ctx.tick().repeat(4)
        return bytes(out)


def _run(dut, tb, cycles=200_000, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    for p in processes:
        sim.add_process(p)
    sim.run_until(cycles * 1e-6)


@pytest.mark.parametrize("jitter", [False, True])
def test_peripheral_bytes_both_ways(jitter):
    rng = random.Random(1)
    dut = SPIPeripheral()
    to_host = [rng.randrange(256) for _ in range(40)]
    from_host = bytes(rng.randrange(256) for _ in range(60))
    got_rx, got_host = [], bytearray()

    async def tx_source(ctx):        # the link's bytes, with idle insertion
        for b in to_host:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.tx.valid, 1)
            ctx.set(dut.tx.payload, b)
            await ctx.tick().until(dut.tx.ready)
            ctx.set(dut.tx.valid, 0)

    async def rx_sink(ctx):          # always ready within a byte time: never an overrun
        async for _, _, v, p, ov, r in ctx.tick().sample(dut.rx.valid, dut.rx.payload,
                                                        dut.overrun, dut.rx.ready):
            assert not ov
            if v and r:
                got_rx.append(p)
            ctx.set(dut.rx.ready, int(rng.random() < 0.5))

    async def host(ctx):
        m = Master(dut, rng=rng if jitter else None)
        # Many short transactions: a byte chosen just before CS rises must not be lost.
        for off in range(0, len(from_host), 7):
            got_host.extend(await m.exchange(ctx, from_host[off:off + 7]))
            await ctx.tick().repeat(rng.randrange(1, 30))

    _run(dut, host, cycles=100_000, processes=[tx_source, rx_sink])
    assert bytes(got_rx) == from_host
    assert [b for b in got_host if b != FIDLE] == [b for b in to_host if b != FIDLE]
    assert got_host.count(FIDLE) > 0          # the host clocked faster than the link fed


def test_peripheral_cs_framing_and_overrun():
    dut = SPIPeripheral()
    seen, overruns = [], []

    async def mon(ctx):
        async for _, _, v, p, ov in ctx.tick().sample(dut.rx.valid, dut.rx.payload,
                                                     dut.overrun):
            if ov:
                overruns.append(1)
            if v and not seen or (v and seen[-1] != p):
                seen.append(p)

    async def host(ctx):
        m = Master(dut)
        await m.exchange(ctx, b"\xff", bits_only=5)     # cut short by CS: discarded
        await m.exchange(ctx, b"\x5a")
        await ctx.tick().repeat(10)
        assert ctx.get(dut.rx.valid) and ctx.get(dut.rx.payload) == 0x5A
        await m.exchange(ctx, b"\x33")                  # rx not taken (ready low): dropped
        await ctx.tick().repeat(10)
        assert ctx.get(dut.rx.payload) == 0x5A

    _run(dut, host, cycles=2000, processes=[mon])
    assert seen == [0x5A] and overruns == [1]


def _spi_soc_session(requests, rng=None, poll=16, chunk=None):
    from deconvsr.hw.soc import SpiSoC
    dut = SpiSoC(timeout=4000)
    replies = []

    async def host(ctx):
        m = Master(dut, rng=rng)
        parser = ReplyParser()
        for frame, tag in requests:
            step = chunk or len(frame)
            for off in range(0, len(frame), step):
                for r in parser.feed(await m.exchange(ctx, frame[off:off + step])):
                    replies.append(r[0])
            for _ in range(50):
                if any(r is not None and r.tag == tag for r in replies):
                    break
                for r in parser.feed(await m.exchange(ctx, bytes([FIDLE]) * poll)):
                    replies.append(r[0])

    _run(dut, host, cycles=400_000)
    return replies


@pytest.mark.parametrize("mode", ["plain", "jitter_small_transactions"])
def test_spi_soc_identify_write_read(mode):
    rng = random.Random(4)
    data = bytes(rng.choice((0xC0, 0xDB, 0xDD)) if rng.random() < 0.3 else rng.randrange(256)
                 for _ in range(40))
    reqs = [(Driver.encode(Opcode.IDENTIFY, 1), 1),
            (Driver.encode(Opcode.WRITE, 2, Space.ACT, 3, len(data), data), 2),
            (Driver.encode(Opcode.READ, 3, Space.ACT, 3, len(data)), 3)]
    jitter = mode != "plain"
    r = _spi_soc_session(reqs, rng if jitter else None, poll=5 if jitter else 16,
                         chunk=6 if jitter else None)
    assert all(x is not None for x in r)
    assert identify_ok(r[0], 1)
    assert protocol.unpack(protocol.LinkInfo, r[0].payload)["kind"] == 2      # SPI
    assert (r[1].tag, r[1].status) == (2, 0)
    assert (r[2].tag, r[2].status, r[2].payload) == (3, 0, data)


@pytest.mark.skipif("verilator" not in available_simulators(), reason="Verilator not installed")
def test_driver_over_simulated_spi_device():
    from deconvsr.sim.device import SimDevice
    from deconvsr.sw.host.transport import SocketSpiPort, SpiTransport
    rng = random.Random(5)
    data = bytes(rng.randrange(256) for _ in range(500))
    with SimDevice(top="spi", engine="twin") as sim:
        with SpiTransport(SocketSpiPort("127.0.0.1", sim.port)) as t:
            d = Driver(t, timeout=60.0)
            info = d.identify()
            assert info.describe()["link"] == "spi"
            d.write(Space.WEIGHT, 0, data, verify="crc")
            assert d.read(Space.WEIGHT, 0, len(data)) == data
            assert d.stats["retries"] == 0
            assert d.link_stats()["crc_errors"] == 0
