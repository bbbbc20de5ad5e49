"""The host program compiler, checked through the engine's behavioural twin (which executes the
packed memory images as the sequencer does) against the integer model; tiling; errors."""

import dataclasses

import numpy as np
import pytest

from deconvsr.bus import Space
from deconvsr.descriptor import DESC_BYTES, LayerDescriptor, unpack
from deconvsr.sim.engine_sim import run_programs
from deconvsr.spec import SPECS, EngineSpec
from deconvsr.sw.bench.engine import EDGE_ARCH, calibrated_network, random_qlayer
from deconvsr.sw.golden.intmodel import run_layer, run_network
from deconvsr.sw.host.stream import plan_stream
from deconvsr.sw.host.program import (ProgramError, compile_network, compile_tiled, crop_tile,
                                 frame_programs, halo, pack_weights, plan_layer, plan_tiles,
                                 set_input)
from deconvsr.sw.model.quantize import quantize
from deconvsr.sw.model.zoo import load_model

SMALL = EngineSpec(name="small", lanes=8, act_depth=1024, weight_depth=2048, bias_depth=256,
                   out_bytes=8192, max_layers=4)


def _random_case(rng):
    while True:
        s = int(rng.integers(1, 5))
        k = int(rng.integers(1, 10))
        pd = int(rng.integers(0, k))
        ci, co = int(rng.integers(1, 20)), int(rng.integers(1, 6))
        h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        if (h - 1) * s - 2 * pd + k >= 1 and (w - 1) * s - 2 * pd + k >= 1:
            return ci, co, k, s, pd, h, w


def test_compiled_layers_match_model(rng):
    for _ in range(40):
        ci, co, k, s, pd, h, w = _random_case(rng)
        x = rng.integers(0, 256, size=(ci, h, w))
        layer = random_qlayer(rng, ci, co, k, s, pd, x=x, periodic=bool(rng.integers(2)))
        prog = set_input(compile_network([layer], x.shape, SMALL), x.astype(np.uint8))
        out = run_programs([prog], SMALL, backend="model")[0]["out"]
        np.testing.assert_array_equal(out, run_network(x, [layer]), err_msg=str(prog.plans))


def test_compiled_network_matches_model(rng):
    x = rng.integers(0, 256, size=(1, 9, 7))
    layers = calibrated_network(rng, EDGE_ARCH, x)
    prog = set_input(compile_network(layers, x.shape, SMALL), x.astype(np.uint8))
    out = run_programs([prog], SMALL, backend="model")[0]["out"]
    want = run_network(x, layers)
    assert want.std() > 10
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("act_lanes,fixed_pi", [(1, False), (2, False), (4, False), (4, True)])
def test_narrow_act_words_match_model(rng, act_lanes, fixed_pi):
    """Feature-map words narrower than the lanes (``act_lanes``): the twin and the compiler
    agree with the integer model, and no layer takes more input channels than a word holds
    (with ``fixed_pi``, every layer takes exactly that many)."""
    spec = dataclasses.replace(SMALL, act_lanes=act_lanes, act_depth=4096, fixed_pi=fixed_pi)
    for _ in range(12):
        ci, co, k, s, pd, h, w = _random_case(rng)
        x = rng.integers(0, 256, size=(ci, h, w))
        layer = random_qlayer(rng, ci, co, k, s, pd, x=x, periodic=bool(rng.integers(2)))
        mid = run_layer(x, layer)
        layers = [layer, random_qlayer(rng, co, 3, 3, 1, 1, x=mid)]
        prog = set_input(compile_network(layers, x.shape, spec), x.astype(np.uint8))
        assert all(pl.pi <= act_lanes and pl.pi * pl.pv == spec.lanes for pl in prog.plans)
        assert all(pl.pi == act_lanes for pl in prog.plans) or not fixed_pi
        out = run_programs([prog], spec, backend="model")[0]["out"]
        np.testing.assert_array_equal(out, run_network(x, layers), err_msg=str(prog.plans))


def test_edge_network_on_the_icebreaker_split():
    """16 lanes over 4-activation words: every layer of the edge networks keeps every lane
    busy except the x3 output layer (9 virtual outputs in groups of 4). With a fixed Pi (the
    iCE40 spec's four accumulators) the one-channel first layer uses a lane in four."""
    rng = np.random.default_rng(0)
    shapes = [(1, 16, 5, 1, 2), (16, 16, 3, 1, 1), (16, 1, 6, 2, 2), (16, 1, 9, 3, 3)]
    layers = [random_qlayer(rng, *a) for a in shapes]
    plans = [plan_layer(layer, 16, 1, 4) for layer in layers]
    assert [(p.pi, p.pv, p.n_vg) for p in plans] == [(1, 16, 1), (4, 4, 4), (4, 4, 1),
                                                      (4, 4, 3)]
    fixed = [plan_layer(layer, 16, 1, 4, fixed_pi=True) for layer in layers]
    assert [(p.pi, p.pv, p.n_vg, p.cw) for p in fixed] == [(4, 4, 4, 1), (4, 4, 4, 4),
                                                            (4, 4, 1, 4), (4, 4, 3, 4)]


def test_shipped_edge_networks_run_on_the_icebreaker_spec():
    """Every layer at Pi = 4 (fixed_pi): edge-x2's first layer takes 4 x 25 words, 280 in
    all, edge-x3 352 (its 9 outputs in groups of 4), of the spec's 512; their entries fit the
    packed 64-bit words. Half the weight memory (256 words) would hold neither."""
    spec = SPECS["icebreaker"]      # (a streaming engine: frames go band by band)
    for name, words in (("edge-x2", 280), ("edge-x3", 352)):
        layers = quantize(load_model(name), spec=spec.arith)
        plan = plan_stream(layers, (64, 64), spec)
        weights = dict((sp, d) for sp, _, d in plan.stripes[0].setup)[Space.WEIGHT]
        assert len(weights) == words * spec.lanes
        assert all(d["lvl"] == spec.act_lanes.bit_length() - 1
                   for d in plan.stripes[0].descriptors)
        with pytest.raises(ProgramError, match="weights need"):
            plan_stream(layers, (64, 64), dataclasses.replace(spec, weight_depth=256))


def test_packed_entries_refuse_what_they_cannot_hold(rng):
    """A stride above 4 and a bias wider than the accumulator are refused by name."""
    spec = dataclasses.replace(SPECS["icebreaker"], weight_depth=4096, bias_depth=256)
    with pytest.raises(ProgramError, match="stride 5 exceeds 4"):
        compile_network([random_qlayer(rng, 1, 1, 5, 5, 0)], (1, 4, 4), spec)
    layer = random_qlayer(rng, 1, 2, 3, 1, 1)
    layer.bias[...] = 1 << 23
    with pytest.raises(ProgramError, match="entry field bias=8388608 does not fit"):
        compile_network([layer], (1, 4, 4), spec)
    layer.bias[...] = (1 << 23) - 1
    compile_network([layer], (1, 4, 4), spec)


def test_plan_uses_all_lanes_on_the_paper_network():
    shapes = [(1, 64, 5, 1, 2), (64, 64, 3, 1, 1), (64, 32, 3, 1, 1), (32, 1, 9, 3, 3)]
    rng = np.random.default_rng(0)
    plans16 = [plan_layer(random_qlayer(rng, *a), 16) for a in shapes]
    assert [(p.pi, p.pv) for p in plans16] == [(1, 16), (16, 1), (16, 1), (16, 1)]
    plans64 = [plan_layer(random_qlayer(rng, *a), 64) for a in shapes]
    assert (plans64[3].pi, plans64[3].pv, plans64[3].n_vg) == (32, 2, 5)


def test_weight_packing_order(rng):
    layer = random_qlayer(rng, 3, 2, 4, 2, 1)
    plan = plan_layer(layer, 4)
    words = pack_weights(layer, plan, 4)
    assert words.shape == (plan.weight_words, 4)
    # word ((vg*cw + cg)*T + ky)*T + kx, lane g*Pi + j = W[cg*Pi + j, o, fy + ky*S, fx + kx*S]
    # with v = vg*Pv + g = (fy*S + fx)*C_out + o.
    for vg in range(plan.n_vg):
        for ky in range(plan.t):
            for kx in range(plan.t):
                for g in range(plan.pv):
                    v = vg * plan.pv + g
                    fy, fx, o = v // (2 * 2), (v // 2) % 2, v % 2
                    for j in range(plan.pi):
                        a, b = fy + ky * 2, fx + kx * 2
                        want = layer.weight[j, o, a, b] if j < 3 and v < plan.v else 0
                        got = words[(vg * plan.t + ky) * plan.t + kx, g * plan.pi + j]
                        assert got == want


def test_descriptor_fields(rng):
    layer = random_qlayer(rng, 32, 1, 9, 3, 3)
    prog = compile_network([layer], (32, 10, 12), SPECS["sim"])
    space, addr, raw = prog.setup[0]
    assert (space, addr) == (Space.DESC, 0)
    d = unpack(LayerDescriptor, raw[:DESC_BYTES])
    assert (d["qy0"], d["qy1"], d["by0"], d["h_out"], d["w_out"]) == (1, 10, 0, 30, 36)
    assert (d["t"], d["stride"], d["to_out"], d["in_buf"]) == (3, 3, 1, 0)


@pytest.mark.parametrize("spec_kw,message", [
    (dict(act_depth=64), "input needs 100 words of ACT buffer, act_depth is 64"),
    (dict(weight_depth=16), "weights need 64 words, weight_depth is 16"),
    (dict(out_bytes=64), "output needs 1444 bytes, out_bytes is 64"),
    (dict(bias_depth=8), "requantisation entries need 16, bias_depth is 8"),
])
def test_program_errors(rng, spec_kw, message):
    layer = random_qlayer(rng, 8, 4, 3, 2, 1)
    spec = EngineSpec(**{**dict(lanes=8, act_depth=1024, weight_depth=1024, bias_depth=64,
                                out_bytes=2048), **spec_kw})
    with pytest.raises(ProgramError, match=message):
        compile_network([layer], (8, 10, 10), spec)


def test_too_many_layers(rng):
    layers = [random_qlayer(rng, 1, 1, 3, 1, 1) for _ in range(5)]
    with pytest.raises(ProgramError, match="5 layers exceed the 4 descriptors"):
        compile_network(layers, (1, 8, 8), SMALL)


def test_tiling_rejects_unsupported(rng):
    layers = [random_qlayer(rng, 1, 2, 3, 2, 1), random_qlayer(rng, 2, 1, 3, 1, 1)]
    with pytest.raises(ProgramError, match="tiling supports 'same' stride-1 feature layers"):
        plan_tiles(layers, (16, 16), 8)


def test_tiled_equals_untiled(rng):
    """A frame tiled with halos and valid windows gives exactly the untiled network output."""
    h, w = 23, 19
    x = rng.integers(0, 256, size=(1, h, w))
    layers = calibrated_network(rng, EDGE_ARCH, x)
    want = run_network(x, layers)
    assert halo(layers) == 2 + 1 + 1
    got = np.full(want.shape, -1, dtype=np.int64)
    tiles, ext = plan_tiles(layers, (h, w), 8)
    for tile, prog in compile_tiled(layers, x.astype(np.uint8), SMALL, core=8):
        out = run_programs([prog], SMALL, backend="model")[0]["out"]
        (y0, y1, x0, x1), pix = crop_tile(layers, tile, out, ext)
        got[:, y0:y1, x0:x1] = pix
    np.testing.assert_array_equal(got, want)


def test_tiling_needs_the_windows(rng):
    """Without the valid window (feature pixels outside the frame = relu(bias)) tiles differ:
    the window is what makes tiling exact at the frame border."""
    h, w = 12, 12
    x = rng.integers(0, 256, size=(1, h, w))
    layers = calibrated_network(rng, EDGE_ARCH, x)
    want = run_network(x, layers)
    tiles, ext = plan_tiles(layers, (h, w), 6)
    tile = tiles[0]
    crop = np.zeros((1, ext, ext), dtype=np.uint8)
    crop[:, -tile.y0:, -tile.x0:] = x[:, :ext + tile.y0, :ext + tile.x0]
    prog = set_input(compile_network(layers, crop.shape, SMALL), crop)
    out = run_programs([prog], SMALL, backend="model")[0]["out"]
    (y0, y1, x0, x1), pix = crop_tile(layers, tile, out, ext)
    assert not np.array_equal(pix, want[:, y0:y1, x0:x1])
