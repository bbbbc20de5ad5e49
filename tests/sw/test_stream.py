"""The streaming compiler (bands through rings, the IN memory, column stripes) checked on the
engine's behavioural twin against the integer model run on the whole frame."""

import dataclasses

import numpy as np
import pytest

from deconvsr.descriptor import next_band
from deconvsr.sim.engine_sim import EngineModel
from deconvsr.spec import SPECS, EngineSpec
from deconvsr.sw.bench.engine import EDGE_ARCH, PAPER_ARCH, calibrated_network
from deconvsr.sw.golden.intmodel import run_network
from deconvsr.sw.host.program import ProgramError
from deconvsr.sw.host.stream import frame_macs, plan_stream, run_stream_model
from deconvsr.sw.model.quantize import quantize
from deconvsr.sw.model.zoo import load_model

#: Small streaming engines: a narrow one (act_lanes 2, fixed Pi, packed entries as the
#: iCE40's), and one whose small memories force stripes and short bands.
NARROW = EngineSpec(name="narrow", lanes=8, act_lanes=2, act_depth=2048, weight_depth=2048,
                    bias_depth=256, out_bytes=1024, in_bytes=256, max_layers=4, fixed_pi=True,
                    ring_bits=8)
TIGHT = EngineSpec(name="tight", lanes=8, act_depth=1024, weight_depth=2048, bias_depth=256,
                   out_bytes=512, in_bytes=128, max_layers=4, drain_lanes=2, ring_bits=8)
SIZES = [(1, 1), (1, 9), (9, 1), (2, 3), (7, 5), (13, 29), (17, 4), (31, 37)]


def _net(rng, arch, spec, size=(12, 12)):
    x = rng.integers(0, 256, size=(arch[0][0], *size))
    return calibrated_network(rng, arch, x, arith=spec.arith)


@pytest.mark.parametrize("spec", [NARROW, TIGHT], ids=lambda s: s.name)
@pytest.mark.parametrize("arch", [EDGE_ARCH, [(1, 4, 3, 1, 1), (4, 1, 9, 3, 3)],
                                  [(1, 3, 5, 1, 2), (3, 2, 3, 1, 1), (2, 1, 5, 3, 1)]],
                         ids=["edge", "two-layer", "resize-last"])
def test_streamed_frames_equal_the_whole_frame(rng, spec, arch):
    """Awkward sizes (1 x 1, a row, a column, odd, prime, wider than tall, wider than any
    ring) come out equal to the integer model on the whole frame."""
    layers = _net(rng, arch, spec)
    for h, w in SIZES:
        x = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
        plan = plan_stream(layers, (h, w), spec)
        got = run_stream_model(layers, x, spec, plan)
        np.testing.assert_array_equal(got, run_network(x[None], layers),
                                      err_msg=f"{h}x{w}, {len(plan.stripes)} stripes, "
                                              f"B={1 << plan.band_lg}")


def test_every_band_and_stripe_choice_is_exact(rng):
    """The plan's choices are not special: every band size and stripe count that fits gives
    the same exact result."""
    spec = dataclasses.replace(TIGHT, act_depth=4096, out_bytes=4096, in_bytes=1024)
    layers = _net(rng, EDGE_ARCH, spec)
    x = rng.integers(0, 256, size=(21, 26)).astype(np.uint8)
    want = run_network(x[None], layers)
    tried = 0
    for lg in range(0, 5):
        for n in (1, 2, 3, 5):
            try:
                plan = plan_stream(layers, x.shape, spec, band_lg=lg, stripes=n)
            except ProgramError:
                continue
            tried += 1
            np.testing.assert_array_equal(run_stream_model(layers, x, spec, plan), want,
                                          err_msg=f"B={1 << lg}, {n} stripes")
    assert tried >= 12


def test_planner_uses_stripes_and_bands_the_memories_need(rng):
    layers = _net(rng, EDGE_ARCH, TIGHT)
    small = plan_stream(layers, (8, 8), TIGHT)
    wide = plan_stream(layers, (8, 120), TIGHT)
    assert len(small.stripes) == 1 and len(wide.stripes) > 1
    assert small.band_lg >= wide.band_lg
    # stripes cover the frame's columns once, and only the input columns overlap
    cores = [(s.c0, s.c1) for s in wide.stripes]
    assert cores[0][0] == 0 and cores[-1][1] == 120
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    assert all(s.x0 <= s.c0 and s.x1 >= s.c1 for s in wide.stripes)


def test_rings_are_needed(rng):
    """The rings are as small as the schedule allows: an engine whose ring planes are half as
    large (the ring then holds fewer rows than the band schedule reads) gets the frame wrong."""
    spec = dataclasses.replace(TIGHT, in_bytes=1024, out_bytes=1024)
    layers = _net(rng, EDGE_ARCH, spec)
    x = rng.integers(0, 256, size=(24, 50)).astype(np.uint8)
    want = run_network(x[None], layers)
    plan = plan_stream(layers, x.shape, spec, band_lg=1, stripes=1)
    np.testing.assert_array_equal(run_stream_model(layers, x, spec, plan), want)
    rows = 2 * 2 + 1                # (2B + 1 rows of the 3 x 3 layer's input)
    assert rows * 50 <= 1 << spec.ring_bits < 2 * rows * 50
    small = EngineModel(dataclasses.replace(spec, ring_bits=spec.ring_bits - 1))
    bad = run_stream_model(layers, x, spec, plan, model=small)
    assert not np.array_equal(bad, want)


def test_next_band_of_a_descriptor():
    d = {"banded": 1, "band_lg": 2, "qy0": 1, "qy1": 4, "qy_last": 10, "row0": 20, "w_in": 20,
         "by0": 0, "stride": 3, "obase0": -2, "orow": 90}
    b1 = next_band(d)
    assert (b1["qy0"], b1["qy1"], b1["row0"], b1["by0"], b1["obase0"]) == (5, 8, 100, 12, 358)
    b2 = next_band(b1)
    assert (b2["qy0"], b2["qy1"], b2["row0"], b2["by0"], b2["obase0"]) == (9, 10, 180, 24, 718)
    b3 = next_band(b2)          # (past qy_last: the host never starts it)
    assert b3["qy0"] == 11 and b3["row0"] == 220


@pytest.mark.parametrize("model,board", [("edge-x2", "icebreaker"), ("edge-x3", "icebreaker"),
                                         ("espcn-paper-x3", "ulx3s-85f"),
                                         ("resize-paper-x3", "ulx3s-85f")])
def test_shipped_networks_stream_on_the_boards(rng, model, board):
    """The shipped networks on the boards' streaming memories, 64 x 64 and a frame that
    needs stripes, exact."""
    spec = dataclasses.replace(SPECS[board], in_bytes=SPECS[board].in_bytes or 1024,
                               out_bytes=1 << (SPECS[board].out_bytes.bit_length() - 1))
    layers = quantize(load_model(model), spec=spec.arith)
    for h, w in [(64, 64), (19, 250)]:
        x = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
        plan = plan_stream(layers, x.shape, spec)
        np.testing.assert_array_equal(run_stream_model(layers, x, spec, plan),
                                      run_network(x[None], layers))
        if w == 250:
            assert len(plan.stripes) > 1


def test_errors_name_the_resource(rng):
    layers = _net(rng, EDGE_ARCH, TIGHT)
    with pytest.raises(ProgramError, match="no IN memory"):
        plan_stream(layers, (8, 8), dataclasses.replace(SPECS["sim"], in_bytes=0, ring_bits=0))
    with pytest.raises(ProgramError, match="one channel"):
        plan_stream(_net(rng, [(2, 2, 3, 1, 1), (2, 1, 6, 2, 2)], TIGHT), (8, 8), TIGHT)
    with pytest.raises(ProgramError, match="stride-1"):
        plan_stream(_net(rng, [(1, 2, 4, 2, 1), (2, 1, 6, 2, 2)], TIGHT), (8, 8), TIGHT)
    with pytest.raises(ProgramError, match="weights"):
        plan_stream(_net(rng, PAPER_ARCH, TIGHT), (8, 8), TIGHT)
    with pytest.raises(ProgramError, match="at least 1 x 1"):
        plan_stream(layers, (0, 5), TIGHT)


@pytest.mark.parametrize("model", ["edge-x2", "edge-x3"])
def test_frames_taller_than_the_coordinates_go_in_row_chunks(rng, model):
    """On the iCEBreaker's engine (8-bit sizes: at most 255 HR rows) a tall frame runs in row
    chunks: exact, the HR frame read back once (no seam rows), the LR rows re-sent at the
    seams only, and the useful MACs the frame's (seams not counted)."""
    spec = SPECS["icebreaker"]
    layers = quantize(load_model(model), spec=spec.arith)
    s = layers[-1].stride
    h, w = 300 // s, 21
    x = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
    plan = plan_stream(layers, x.shape, spec)
    chunks = {st.y_in0 for st in plan.stripes}
    assert len(chunks) > 1
    np.testing.assert_array_equal(run_stream_model(layers, x, spec, plan),
                                  run_network(x[None], layers))
    reqs = [(st, r) for st in plan.stripes for r in st.requests]
    assert sum(r.out_len for _, r in reqs) == s * h * s * w
    sent = sum((r.in_rows[1] - r.in_rows[0]) * (st.x1 - st.x0) for st, r in reqs)
    assert h * w < sent <= h * w + 2 * (len(chunks) - 1) * 8 * w
    assert plan.useful == frame_macs(layers, h, w)
