"""cocotb testbench of :class:`deconvsr.hw.engine.Engine`: executes bus operation lists (see
:func:`deconvsr.sim.engine_sim.program_ops`) from the JSON file ``$DECONVSR_CASE`` and writes
the read bytes, the run cycles and the wall time per job to ``$DECONVSR_RESULT``.

The driver inserts idle cycles on ``cmd.valid`` and the monitor drops ``rsp.ready`` at random
with the probabilities given in the case file. The bus protocol is checked on the fly: a read
returns exactly one byte, in order, and ``cmd.valid`` never depends on ``cmd.ready``.
"""

import json
import os
import random
import time

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from deconvsr.bus import BusCommand, Space

_FIELDS = {name: field.offset for name, field in data.Layout.cast(BusCommand)}


def _payload(space, write, addr, byte):
    return ((int(space) << _FIELDS["space"]) | (int(write) << _FIELDS["write"]) |
            (addr << _FIELDS["addr"]) | (byte << _FIELDS["data"]))


class BusDriver:
    def __init__(self, dut, rng, idle, backpressure):
        self.dut = dut
        self.rng = rng
        self.idle = idle
        self.backpressure = backpressure
        self.expected = 0
        self.received = []

    async def send(self, space, write, addr, byte):
        dut = self.dut
        while self.idle and self.rng.random() < self.idle:
            dut.bus__cmd__valid.value = 0
            await RisingEdge(dut.clk)
        dut.bus__cmd__payload.value = _payload(space, write, addr, byte)
        dut.bus__cmd__valid.value = 1
        while True:
            await ReadOnly()
            accepted = int(dut.bus__cmd__ready.value)
            await RisingEdge(dut.clk)
            if accepted:
                break
        dut.bus__cmd__valid.value = 0
        if not write:
            self.expected += 1

    async def monitor(self):
        dut = self.dut
        while True:
            ready = not (self.backpressure and self.rng.random() < self.backpressure)
            dut.bus__rsp__ready.value = int(ready)
            await ReadOnly()
            if ready and int(dut.bus__rsp__valid.value):
                self.received.append(int(dut.bus__rsp__payload.value))
            await RisingEdge(dut.clk)

    async def read(self, space, addr, n):
        start = len(self.received)
        for i in range(n):
            await self.send(space, 0, addr + i, 0)
        while len(self.received) < start + n:
            await RisingEdge(self.dut.clk)
        # A few more cycles: no extra response may appear.
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        assert len(self.received) == start + n, \
            f"{len(self.received) - start} responses for {n} reads"
        return bytes(self.received[start:start + n])


@cocotb.test()
async def run_case(dut):
    with open(os.environ["DECONVSR_CASE"]) as f:
        case = json.load(f)
    rng = random.Random(case.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.bus__cmd__valid.value = 0
    dut.bus__rsp__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    drv = BusDriver(dut, rng, case.get("idle", 0.0), case.get("backpressure", 0.0))
    cocotb.start_soon(drv.monitor())
    results = []
    for job in case["jobs"]:
        reads = []
        cycles = None
        wall = None
        for op in job:
            if op[0] == "w":
                _, space, addr, hexdata = op
                for i, b in enumerate(bytes.fromhex(hexdata)):
                    await drv.send(space, 1, addr + i, b)
            elif op[0] == "r":
                _, space, addr, n = op
                reads.append((await drv.read(space, addr, n)).hex())
            elif op[0] == "start":
                t0 = time.perf_counter()
                await drv.send(Space.CTRL.value, 1, 0, op[1])
                # The start is accepted at the edge just awaited; busy rises there.
                await ReadOnly()
                assert int(dut.busy.value) == 1, "engine did not start"
                n = 0
                await RisingEdge(dut.clk)
                n += 1
                # Count cycles until busy falls, without a Python callback per cycle.
                start_ns = cocotb.utils.get_sim_time(unit="ns")
                await FallingEdge(dut.busy)
                cycles = int(round((cocotb.utils.get_sim_time(unit="ns") - start_ns) / 10)) + 1
                wall = time.perf_counter() - t0
                await RisingEdge(dut.clk)
            elif op[0] == "wait":
                for _ in range(op[1]):
                    await RisingEdge(dut.clk)
            else:
                raise ValueError(f"unknown op {op[0]!r}")
        results.append({"reads": reads, "cycles": cycles, "wall": wall})
    with open(os.environ["DECONVSR_RESULT"], "w") as f:
        json.dump(results, f)
