"""The synthesised iCE40 engine (yosys' mapped netlist: LUT4s, carries, flip-flops, SB_MAC16s,
block RAM, SPRAM) simulated with yosys' cell models under Verilator, bit-exact against the
integer model. Simulating the generated RTL cannot see what synthesis does to it: this is the
test that catches a tool rewriting cells (yosys' ``ice40_dsp`` once turned the instantiated
8x8 SB_MAC16 pairs into 16x16 multipliers, and every RTL test still passed). Slow (the
netlist's Verilator build is ~5 minutes here); CI runs it with the bitstreams."""

import dataclasses

import numpy as np
import pytest

from deconvsr.hw.synth import write_netlist
from deconvsr.sim.engine_sim import run_stream_rtl
from deconvsr.sim.harness import available_simulators, vendor_cells
from deconvsr.spec import SPECS
from deconvsr.sw.bench.engine import calibrated_network
from deconvsr.sw.flow.build import BuildError, tool_env
from deconvsr.sw.golden.intmodel import run_network
from deconvsr.sw.host.stream import plan_stream

pytestmark = [pytest.mark.synth, pytest.mark.slow, pytest.mark.bitstream,
              pytest.mark.skipif("verilator" not in available_simulators(),
                                 reason="verilator not installed")]


def _cases(rng, spec):
    """Streamed frames (the iCE40 engine takes nothing else) through networks covering the
    last layer's strides 1-3 and kernels up to 9, both bias kinds, groups shorter than the
    drain (a 1 x 1 layer of many channels), frames needing several bands and stripes, and
    saturation at both ends."""
    cases = []
    for i, (arch, size) in enumerate([
            ([(1, 6, 5, 1, 2), (6, 1, 4, 2, 1)], (9, 13)),
            ([(1, 5, 3, 1, 1), (5, 4, 3, 1, 1), (4, 1, 9, 3, 3)], (7, 11)),
            ([(1, spec.lanes, 1, 1, 0), (spec.lanes, 1, 3, 1, 1)], (5, 6)),
            ([(1, 9, 3, 1, 1), (9, 5, 3, 1, 1), (5, 1, 5, 3, 1)], (6, 300))]):
        x = rng.integers(0, 256, size=(1, *size))
        cases.append((calibrated_network(rng, arch, x, arith=spec.arith), x))
    x = rng.integers(128, 256, size=(1, 4, 5))
    layers = calibrated_network(rng, [(1, 4, 3, 1, 1), (4, 1, 4, 2, 1)], x, arith=spec.arith)
    w = np.full_like(layers[-1].weight, 127)
    w[:2] = -128
    cases.append(([layers[0], dataclasses.replace(layers[-1], weight=w)], x))
    return cases


def test_synthesised_icebreaker_engine_is_bit_exact(rng, tmp_path):
    try:
        tool_env("ice40")
    except BuildError as e:
        pytest.skip(str(e))
    spec = SPECS["icebreaker"]
    netlist = write_netlist(spec, "icebreaker", tmp_path / "synth")
    text = netlist.read_text()
    assert text.count("SB_MAC16 ") == 8 and "SB_SPRAM256KA " in text   # mapped, not RTL
    outs = []
    for i, (layers, x) in enumerate(_cases(rng, spec)):
        plan = plan_stream(layers, x.shape[1:], spec)
        res = run_stream_rtl(plan, x[0].astype(np.uint8), build_dir=tmp_path / "sim",
                             netlist=netlist, libraries=[vendor_cells("ice40")],
                             idle=0.2, backpressure=0.2, seed=i)
        np.testing.assert_array_equal(res["out"], run_network(x, layers),
                                      err_msg=f"case {i}: B={1 << plan.band_lg}, "
                                              f"{len(plan.stripes)} stripes")
        assert res["counters"]["cycles_busy"] == sum(res["step_cycles"])
        outs.append(res["out"].ravel())
    outs = np.concatenate(outs)
    assert (outs == 0).any() and (outs == 255).any()
