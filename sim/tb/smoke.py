"""Smoke testbench for the harness itself: a free-running counter counts clock edges."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


@cocotb.test()
async def counts(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    before = int(dut.count.value)
    await ClockCycles(dut.clk, 10)
    after = int(dut.count.value)
    assert (after - before) % 256 == 10, (before, after)
