"""cocotb testbench of :class:`deconvsr.hw.engine.Engine`: executes bus operation lists (see
:func:`deconvsr.sim.engine_sim.program_ops`) from the JSON file ``$DECONVSR_CASE`` and writes
the read bytes, the run cycles and the wall time per job to ``$DECONVSR_RESULT``.

The driver inserts idle cycles on ``cmd.valid`` and drops ``rsp.ready`` at random with the
probabilities given in the case file; once offered, a command stays valid until taken. The
protocol is checked on the fly: a read returns exactly one byte, in order; writes none.
"""

import json
import os
import random
import time

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from deconvsr.bus import BusCommand, CtrlReg, Space

CLOCK_NS = 10

_FIELDS = {name: field.offset for name, field in data.Layout.cast(BusCommand)}


def _payload(space, write, addr, byte):
    return ((int(space) << _FIELDS["space"]) | (int(write) << _FIELDS["write"]) |
            (addr << _FIELDS["addr"]) | (byte << _FIELDS["data"]))


class BusDriver:
    """Drives ``cmd`` and takes ``rsp`` in one per-cycle loop while a transfer is in progress
    (no Python runs per cycle while the engine computes)."""

    def __init__(self, dut, rng, idle, backpressure):
        self.dut = dut
        self.rng = rng
        self.idle = idle
        self.backpressure = backpressure

    async def transfer(self, space, write, addr, data=b"", n=0):
        """Send ``len(data)`` writes or ``n`` reads at consecutive addresses; return the read
        bytes. Checks one response per read, in order, none for writes."""
        dut = self.dut
        count = len(data) if write else n
        sent = 0
        received = []
        valid = 0
        while sent < count or len(received) < (0 if write else n):
            if not valid and sent < count and not (self.idle and self.rng.random() < self.idle):
                valid = 1
                dut.bus__cmd__payload.value = _payload(space, write, addr + sent,
                                                       data[sent] if write else 0)
            dut.bus__cmd__valid.value = valid
            ready = int(not (self.backpressure and self.rng.random() < self.backpressure))
            dut.bus__rsp__ready.value = ready
            await ReadOnly()
            if valid and int(dut.bus__cmd__ready.value):
                sent += 1
                valid = 0
            if ready and int(dut.bus__rsp__valid.value):
                received.append(int(dut.bus__rsp__payload.value))
            await RisingEdge(dut.clk)
        dut.bus__cmd__valid.value = 0
        dut.bus__rsp__ready.value = 1
        # No further response may appear.
        for _ in range(3):
            await ReadOnly()
            if int(dut.bus__rsp__valid.value):
                raise AssertionError(f"unexpected response after {n} reads / {len(data)} writes")
            await RisingEdge(dut.clk)
        if len(received) != (0 if write else n):
            raise AssertionError(f"{len(received)} responses for {n} reads")
        return bytes(received)


async def _rising_time(signal):
    """Simulation time (ns) of ``signal``'s next rising edge."""
    await RisingEdge(signal)
    return get_sim_time(unit="ns")


@cocotb.test()
async def run_case(dut):
    with open(os.environ["DECONVSR_CASE"]) as f:
        case = json.load(f)
    rng = random.Random(case.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.bus__cmd__valid.value = 0
    dut.bus__rsp__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    drv = BusDriver(dut, rng, case.get("idle", 0.0), case.get("backpressure", 0.0))
    results = []
    for job in case["jobs"]:
        reads = []
        cycles = None
        wall = None
        for op in job:
            if op[0] == "w":
                _, space, addr, hexdata = op
                await drv.transfer(space, 1, addr, bytes.fromhex(hexdata))
            elif op[0] == "r":
                _, space, addr, n = op
                reads.append((await drv.transfer(space, 0, addr, n=n)).hex())
            elif op[0] == "start":
                t0 = time.perf_counter()
                rose = cocotb.start_soon(_rising_time(dut.busy))
                await drv.transfer(Space.CTRL.value, 1, CtrlReg.START_STATUS, bytes([op[1]]))
                # transfer() returns 3 cycles after the start was accepted; busy rose 2 cycles
                # after it (the command acts from the engine's second bus stage).
                if not rose.done() or not int(dut.busy.value):
                    raise AssertionError("engine did not start (or finished within 3 cycles)")
                start_ns = rose.result()
                # Count cycles until busy falls, without a Python callback per cycle.
                await FallingEdge(dut.busy)
                cycles = int(round((get_sim_time(unit="ns") - start_ns) / CLOCK_NS))
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
