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
from deconvsr.sim.engine_sim import run_programs
from deconvsr.sim.harness import available_simulators, vendor_cells
from deconvsr.spec import SPECS
from deconvsr.sw.bench.engine import calibrated_network, random_qlayer
from deconvsr.sw.flow.build import BuildError, tool_env
from deconvsr.sw.golden.intmodel import run_layer, run_network
from deconvsr.sw.host.program import compile_network, set_input

pytestmark = [pytest.mark.synth, pytest.mark.slow, pytest.mark.bitstream,
              pytest.mark.skipif("verilator" not in available_simulators(),
                                 reason="verilator not installed")]


def _cases(rng, spec):
    """Random layers (strides 1-3, kernels 1-7, both bias kinds), a network through the ACT
    buffers, groups shorter than the drain (1x1, C_in = 1) and saturation at both ends."""
    cases = []
    for i, (s, k, ci, co) in enumerate([(1, 3, 3, 5), (2, 4, 5, 3), (3, 7, 2, 5), (2, 1, 9, 2)]):
        x = rng.integers(0, 256, size=(ci, int(rng.integers(3, 7)), int(rng.integers(3, 7))))
        cases.append(([random_qlayer(rng, ci, co, k, s, k // 2, x=x, periodic=bool(i % 2),
                                     arith=spec.arith)], x))
    x = rng.integers(0, 256, size=(1, 5, 6))
    short = random_qlayer(rng, 1, 2 * spec.lanes, 1, 1, 0, x=x, arith=spec.arith)
    cases.append(([short, random_qlayer(rng, 2 * spec.lanes, 3, 1, 1, 0, x=run_layer(x, short),
                                        arith=spec.arith)], x))
    x = rng.integers(0, 256, size=(1, 6, 7))
    cases.append((calibrated_network(rng, [(1, 9, 3, 1, 1), (9, 5, 3, 1, 1), (5, 2, 4, 2, 1)], x,
                                     arith=spec.arith), x))
    x = rng.integers(128, 256, size=(4, 4, 5))
    sat = random_qlayer(rng, 4, 2, 3, 2, 1, x=x, arith=spec.arith)
    w = np.full_like(sat.weight, 127)
    w[:, 1] = -128
    cases.append(([dataclasses.replace(sat, weight=w)], x))
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
    cases = _cases(rng, spec)
    progs = [set_input(compile_network(layers, x.shape, spec), x.astype(np.uint8))
             for layers, x in cases]
    results = run_programs(progs, spec, backend="rtl", build_dir=tmp_path / "sim",
                           netlist=netlist, libraries=[vendor_cells("ice40")],
                           idle=0.2, backpressure=0.2, seed=int(rng.integers(1 << 30)))
    for (layers, x), prog, res in zip(cases, progs, results):
        np.testing.assert_array_equal(res["out"], run_network(x, layers), err_msg=f"{prog.plans}")
        assert res["counters"]["cycles_busy"] == res["cycles"]
        assert res["counters"]["layers_done"] == len(layers)
    outs = np.concatenate([r["out"].ravel() for r in results])
    assert (outs == 0).any() and (outs == 255).any()
