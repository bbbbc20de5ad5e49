"""The streaming engine (``EngineSpec.in_bytes``) under cocotb + Verilator: frames streamed band
by band through the rings and the IN memory (the bus operations the STEP requests make) are
bit-exact against the integer model on the whole frame, on a deep (block-RAM) and a lean
(iCE40-like) engine, with the bus under idle insertion and backpressure; the band write-back
leaves the descriptors where the twin does; the cycle model matches the RTL."""

import dataclasses

import numpy as np
import pytest

from deconvsr.bus import Space
from deconvsr.descriptor import DESC_BYTES, LayerDescriptor, unpack
from deconvsr.sim.engine_sim import cached_build_dir, run_stream_rtl
from deconvsr.sim.harness import available_simulators
from deconvsr.spec import SPECS, EngineSpec
from deconvsr.sw.bench.engine import EDGE_ARCH, calibrated_network
from deconvsr.sw.golden.intmodel import run_network
from deconvsr.sw.host.stream import plan_stream, step_cycles

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="verilator not installed")

#: A deep engine (block-RAM banks, two requantisers) and the iCEBreaker's lean engine, both
#: with small streaming memories so that frames need several bands and stripes.
DEEP = EngineSpec(name="stream_deep", lanes=8, act_depth=1024, weight_depth=2048,
                  bias_depth=256, out_bytes=512, in_bytes=128, max_layers=4, drain_lanes=2,
                  ring_bits=8)
LEAN = dataclasses.replace(SPECS["icebreaker"], name="stream_lean", in_bytes=256,
                          out_bytes=1024)
RESIZE_LAST = [(1, 3, 5, 1, 2), (3, 2, 3, 1, 1), (2, 1, 5, 3, 1)]


def _network(rng, arch, spec):
    return calibrated_network(rng, arch, rng.integers(0, 256, size=(1, 12, 12)),
                              arith=spec.arith)


@pytest.mark.parametrize("spec", [DEEP, LEAN], ids=lambda s: s.name)
@pytest.mark.parametrize("arch", [EDGE_ARCH, RESIZE_LAST], ids=["edge", "resize-last"])
def test_streamed_frames_rtl(rng, spec, arch):
    """Frames of awkward sizes (a pixel, a row, prime, wider than the rings: stripes), each
    equal to the integer model on the whole frame."""
    layers = _network(rng, arch, spec)
    with cached_build_dir(spec) as bd:
        for h, w in [(1, 1), (3, 17), (11, 7), (13, 40)]:
            x = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
            plan = plan_stream(layers, (h, w), spec)
            r = run_stream_rtl(plan, x, build_dir=bd, idle=0.2, backpressure=0.2,
                               seed=h * 100 + w)
            np.testing.assert_array_equal(r["out"], run_network(x[None], layers),
                                          err_msg=f"{h}x{w}: B={1 << plan.band_lg}, "
                                                  f"{len(plan.stripes)} stripes")
            assert sum(r["step_cycles"]) == r["counters"]["cycles_busy"]  # (kept across starts)


def test_write_back_and_cycle_model_rtl(rng):
    """After a frame every descriptor has moved past its last band as the twin's did (the
    coordinates exactly, the ring addresses in their rings' bits), and the cycle model gives
    every step's cycles to within one cycle per layer start."""
    spec = DEEP
    layers = _network(rng, EDGE_ARCH, spec)
    x = rng.integers(0, 256, size=(14, 9)).astype(np.uint8)
    plan = plan_stream(layers, x.shape, spec, band_lg=1)
    stripe = plan.stripes[0]
    with cached_build_dir(spec) as bd:
        r = run_stream_rtl(plan, x, build_dir=bd, extra_reads=[(Space.DESC, 0,
                                                                len(layers) * DESC_BYTES)])
    raw = r["extra"][0]
    from deconvsr.sim.engine_sim import EngineModel
    from deconvsr.sw.host.stream import run_stream_model
    twin = EngineModel(spec)
    run_stream_model(layers, x, spec, plan, model=twin)
    for i, d in enumerate(stripe.descriptors):
        got = unpack(LayerDescriptor, raw[i * DESC_BYTES:(i + 1) * DESC_BYTES])
        want = unpack(LayerDescriptor, twin.read(Space.DESC, i * DESC_BYTES, DESC_BYTES))
        assert (got["qy0"], got["qy1"], got["by0"]) == (want["qy0"], want["qy1"], want["by0"])
        assert got["qy0"] > d["qy_last"]
        # (ring addresses: what the engine keeps of them, their ring's bits)
        m_in = spec.in_bytes - 1 if d["in_src"] else (1 << spec.ring_bits) - 1
        m_out = spec.out_bytes - 1 if d["to_out"] else (1 << spec.ring_bits) - 1
        assert got["row0"] & m_in == want["row0"] & m_in
        assert got["obase0"] & m_out == want["obase0"] & m_out
    # The model: MAC cycles and the drain exactly, a constant per layer start calibrated
    # from the first step (one layer), within a cycle per start everywhere else.
    starts = [q.count for q in stripe.requests if q.count]
    model0 = step_cycles(stripe, spec, 0)[:len(starts)]
    per_start = r["step_cycles"][0] - model0[0]
    model = step_cycles(stripe, spec, per_start)[:len(starts)]
    for got, want, n in zip(r["step_cycles"], model, starts):
        assert abs(got - want) <= 4 * n, (r["step_cycles"], model)


def test_row_chunks_rtl(rng):
    """A frame taller than the lean engine's 8-bit coordinates reach, in row chunks on the
    RTL: equal to the integer model on the whole frame."""
    layers = _network(rng, EDGE_ARCH, LEAN)
    h = 300 // layers[-1].stride
    x = rng.integers(0, 256, size=(h, 5)).astype(np.uint8)
    plan = plan_stream(layers, x.shape, LEAN)
    assert len({st.y_in0 for st in plan.stripes}) > 1
    with cached_build_dir(LEAN) as bd:
        r = run_stream_rtl(plan, x, build_dir=bd)
    np.testing.assert_array_equal(r["out"], run_network(x[None], layers))
