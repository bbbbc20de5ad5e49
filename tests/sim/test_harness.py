"""The simulation harness builds Amaranth designs and runs cocotb on them."""

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from deconvsr.sim.harness import available_simulators, run_cocotb


class Counter(wiring.Component):
    count: Out(8)

    def __init__(self, step=1):
        self._step = step
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + self._step)
        return m


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_counter(simulator, tmp_path):
    if simulator not in available_simulators():
        pytest.skip(f"{simulator} not installed")
    run_cocotb(Counter, "deconvsr.sim.tb.smoke", toplevel="counter", build_dir=tmp_path,
               simulator=simulator)


def test_failure_is_reported(tmp_path):
    # A design that counts in twos must fail the testbench: the harness must not hide it.
    with pytest.raises(AssertionError, match="tests failed"):
        run_cocotb(lambda: Counter(step=2), "deconvsr.sim.tb.smoke", toplevel="counter2",
                   build_dir=tmp_path, simulator=available_simulators()[0])
