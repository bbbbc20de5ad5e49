"""cocotb testbench of :class:`deconvsr.hw.soc.UartSoC` at the bit level: a host UART model
(8N1, LSB first) drives ``rx`` and samples ``tx`` in the middle of each bit.

Environment: ``DECONVSR_CLK_PS`` (clock period), ``DECONVSR_DIVISOR`` (the SoC's cycles per
bit), ``DECONVSR_BAUD_ERROR`` (the host UART's rate error, e.g. ``0.015``: its bit time is the
SoC's divided by ``1 + error``), ``DECONVSR_GAP_BITS`` (default 0: bytes back to back; else the
host idles a random 0..GAP_BITS bit times, to the picosecond, before each byte, so start bits
fall at every phase of the SoC's clock), ``DECONVSR_SEED``, ``DECONVSR_RESULT`` (JSON out).

The test: IDENTIFY, WRITE of 300 random bytes (about a third of them FEND/FESC/FIDLE) to ACT,
READ back, VERIFY, STATS; then one large WRITE burst (``protocol.MAX_PAYLOAD`` bytes) and a
READ burst timed from the first start bit sent to the last stop bit received.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, Timer
from cocotb.utils import get_sim_time

from deconvsr import protocol
from deconvsr.bus import Space
from deconvsr.protocol import Opcode
from deconvsr.sim.tb.link_models import ReplyParser, identify_ok
from deconvsr.sw.host.driver import Driver


class HostUart:
    """8N1 at ``bit_ps``: :meth:`send` queues bytes (sent back to back), received bytes go
    through a :class:`ReplyParser` into :attr:`replies`. ``gap_bits``: idle before each byte,
    uniform in 0..gap_bits bit times (drawn from ``rng``)."""

    def __init__(self, dut, bit_ps, *, gap_bits=0.0, rng=None):
        self.dut, self.bit_ps = dut, bit_ps
        self.gap_ps, self.rng = round(gap_bits * bit_ps), rng or random.Random(1)
        self.txq = bytearray()
        self.kick = Event()
        self.parser = ReplyParser()
        self.replies = []
        self.got = Event()
        self.bytes_rx = 0
        self.last_stop_ps = 0
        dut.rx.value = 1
        cocotb.start_soon(self._sender())
        cocotb.start_soon(self._receiver())

    def send(self, data):
        self.txq += data
        self.kick.set()

    async def _sender(self):
        while True:
            if not self.txq:
                self.kick.clear()
                await self.kick.wait()
                continue
            byte = self.txq.pop(0)
            if self.gap_ps:
                await Timer(self.rng.randrange(1, self.gap_ps + 1), unit="ps")
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await Timer(self.bit_ps, unit="ps")

    async def _receiver(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.tx)
            await Timer(self.bit_ps // 2, unit="ps")
            if int(dut.tx.value):
                continue                       # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ps, unit="ps")
                byte |= int(dut.tx.value) << i
            await Timer(self.bit_ps, unit="ps")
            if not int(dut.tx.value):
                raise AssertionError(f"framing error: stop bit 0 after {byte:#04x}")
            self.bytes_rx += 1
            self.last_stop_ps = get_sim_time("ps") + self.bit_ps // 2
            new = self.parser.feed((byte,))
            if new:
                self.replies += new
                self.got.set()

    async def request(self, frame, timeout_ps):
        n = len(self.replies)
        self.send(frame)
        t_end = get_sim_time("ps") + timeout_ps
        while len(self.replies) == n:
            self.got.clear()
            left = t_end - get_sim_time("ps")
            if left <= 0:
                raise AssertionError("no reply in time")
            await cocotb.triggers.First(self.got.wait(), Timer(left, unit="ps"))
        reply, body = self.replies[n]
        assert reply is not None, f"corrupted reply {body.hex()}"
        return reply


@cocotb.test()
async def uart_link(dut):
    period_ps = int(os.environ.get("DECONVSR_CLK_PS", "20834"))
    divisor = int(os.environ["DECONVSR_DIVISOR"])
    error = float(os.environ.get("DECONVSR_BAUD_ERROR", "0"))
    gap_bits = float(os.environ.get("DECONVSR_GAP_BITS", "0"))
    rng = random.Random(int(os.environ.get("DECONVSR_SEED", "1")))
    cocotb.start_soon(Clock(dut.clk, period_ps, unit="ps").start())
    dut.rst.value = 1
    dut.rx.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    bit_ps = round(divisor * period_ps / (1 + error))
    host = HostUart(dut, bit_ps, gap_bits=gap_bits, rng=random.Random(rng.random()))
    res = {"bit_ps": bit_ps, "divisor": divisor, "baud_error": error, "gap_bits": gap_bits}
    limit = 20_000 * 10 * bit_ps

    r = await host.request(Driver.encode(Opcode.IDENTIFY, 1), limit)
    assert identify_ok(r, 1), r
    info = protocol.unpack(protocol.LinkInfo, r.payload)
    res["identify"] = info

    special = (protocol.FEND, protocol.FESC, protocol.FIDLE)
    data = bytes(rng.choice(special) if rng.random() < 0.3 else rng.randrange(256)
                 for _ in range(300))
    r = await host.request(Driver.encode(Opcode.WRITE, 2, Space.ACT, 7, len(data), data), limit)
    assert (r.tag, r.status) == (2, 0), r
    r = await host.request(Driver.encode(Opcode.READ, 3, Space.ACT, 7, len(data)), limit)
    assert (r.tag, r.status) == (3, 0), r
    assert r.payload == data, "read back differs from what was written"
    r = await host.request(Driver.encode(Opcode.VERIFY, 4, Space.ACT, 7, len(data)), limit)
    assert int.from_bytes(r.payload, "big") == protocol.crc16(data)
    r = await host.request(Driver.encode(Opcode.STATS, 5), limit)
    stats = protocol.unpack(protocol.LinkStats, r.payload)
    res["stats"] = stats
    assert stats["frames"] == 4 and stats["crc_errors"] == 0 and stats["overruns"] == 0, stats

    # Bursts, timed from the first start bit out to the middle of the reply's last stop bit.
    bursts = {}
    big = bytes(rng.randrange(256) for _ in range(protocol.MAX_PAYLOAD))
    for name, frame in (("write", Driver.encode(Opcode.WRITE, 6, Space.WEIGHT, 0, len(big), big)),
                        ("read", Driver.encode(Opcode.READ, 7, Space.WEIGHT, 0, 1024))):
        rx0 = host.bytes_rx
        t0 = get_sim_time("ps")
        r = await host.request(frame, limit)
        assert r.status == 0, r
        bursts[name] = {"bytes_out": len(frame), "bytes_in": host.bytes_rx - rx0,
                        "payload": len(big) if name == "write" else len(r.payload),
                        "sim_ps": host.last_stop_ps - t0}
    res["bursts"] = bursts
    res["ok"] = True
    with open(os.environ["DECONVSR_RESULT"], "w") as f:
        json.dump(res, f)
