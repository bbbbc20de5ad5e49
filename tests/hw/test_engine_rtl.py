"""The engine's generated Verilog under cocotb (Verilator; one Icarus case), bit-exact against the
integer model, with the host bus driven under idle insertion and random backpressure.

Each spec's Verilator model is built once (cached by Verilog hash in a per-user temporary
directory, serialised by a file lock for ``pytest -n``) and many cases run in one simulator
process.
"""

import dataclasses

import numpy as np
import pytest

from deconvsr.bus import CtrlReg, Space
from deconvsr.hw.engine import ACT_BANK
from deconvsr.descriptor import BASIC_COUNTERS, COUNTERS, ENTRY_BYTES, canonical_entries
from deconvsr.sim.engine_sim import cached_build_dir, run_programs
from deconvsr.sim.harness import available_simulators
from deconvsr.arith import ArithSpec
from deconvsr.spec import SPECS, EngineSpec
from deconvsr.sw.bench.engine import (EDGE_ARCH, PAPER_ARCH, calibrated_network, random_qlayer,
                                      camera_tile)
from deconvsr.sw.golden.intmodel import QLayer, run_layer, run_network
from deconvsr.sw.host.program import compile_network, compile_tiled, crop_tile, plan_tiles, set_input

QUICK = EngineSpec(name="quick", lanes=8, act_depth=512, weight_depth=1024, bias_depth=128,
                   out_bytes=4096, max_layers=4, drain_lanes=2)

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="verilator not installed")


build_dir = cached_build_dir


def _layer_cases(rng, spec, n):
    """Random layers over strides 1..4, K_d 1..9, paddings, odd/even sizes, both bias kinds,
    plus saturation at both ends."""
    cases = []
    strides = [1, 2, 3, 4] * n
    for i in range(n):
        s = strides[i]
        k = int(rng.integers(1, 10))
        pd = int(rng.integers(0, k))
        ci, co = int(rng.integers(1, 2 * spec.lanes + 3)), int(rng.integers(1, 5))
        h, w = int(rng.integers(2, 8)), int(rng.integers(2, 8))
        if (h - 1) * s - 2 * pd + k < 1 or (w - 1) * s - 2 * pd + k < 1:
            pd = 0
        x = rng.integers(0, 256, size=(ci, h, w))
        layer = random_qlayer(rng, ci, co, k, s, pd, x=x, periodic=bool(i % 2),
                              arith=spec.arith)
        if i % 3 == 2:
            # Into an ACT buffer (wide drain when C_out is even), then a 1x1 layer to OUT.
            mid = run_layer(x, layer)
            cases.append(([layer, random_qlayer(rng, co, 2, 1, 1, 0, x=mid, arith=spec.arith)],
                          x))
        else:
            cases.append(([layer], x))
    # Saturation: high (big positive weights and mult) and low (negative bias).
    x = rng.integers(128, 256, size=(5, 4, 5))
    w = np.full((5, 2, 4, 4), 127)
    w[:, 1] = -128
    mmax, s0 = spec.arith.mult_max, spec.arith.shift_min
    hi = QLayer(w, np.zeros((2, 2, 2), int), np.array([mmax, 1]), np.array([s0, s0]), 2, 1,
                name="sat")
    cases.append(([hi], x))
    lo = QLayer(rng.integers(-5, 5, size=(5, 3, 3, 3)), np.full((3, 1, 1), -(1 << 20)),
                np.array([1, 3, mmax]), np.array([s0, s0 + 4, spec.arith.shift_max]), 1, 1,
                name="neg")
    cases.append(([lo], x))
    # 1x1 layers with C_in = 1: with narrow ACT words (A < P) their groups are shorter than
    # their drain (Pv outputs per 1-cycle group), so the sequencer must hold back each group's
    # last cycle (into an ACT buffer, then to OUT).
    x = rng.integers(0, 256, size=(1, 5, 6))
    short = random_qlayer(rng, 1, 2 * spec.lanes, 1, 1, 0, x=x, arith=spec.arith)
    cases.append(([short, random_qlayer(rng, 2 * spec.lanes, 3, 1, 1, 0,
                                        x=run_layer(x, short), arith=spec.arith)], x))
    cases.append(([random_qlayer(rng, 1, 5, 1, 2, 0, x=x, arith=spec.arith)], x))
    # A three-layer network (ping-pong buffers, OUT memory).
    x = rng.integers(0, 256, size=(1, 6, 7))
    cases.append((calibrated_network(rng, [(1, 9, 3, 1, 1), (9, 5, 3, 1, 1), (5, 2, 4, 2, 1)], x,
                                     arith=spec.arith), x))
    return cases


def _check(results, progs, cases, spec):
    for (layers, x), prog, res in zip(cases, progs, results):
        want = run_network(x, layers)
        np.testing.assert_array_equal(res["out"], want, err_msg=f"{prog.plans}")
        c = res["counters"]
        assert c["cycles_busy"] == res["cycles"]
        # The compiler's estimate (what the driver bounds a run with: times 2, plus 2**20
        # cycles) never falls short of the RTL by more than a quarter, nor is it loose by more
        # than 2.5x (here 0.78x .. 1.94x of the RTL's cycles).
        est = prog.expected_cycles()
        assert res["cycles"] <= 1.25 * est + 200 and est <= 2.5 * res["cycles"] + 200, \
            (res["cycles"], est, prog.plans)
        assert c["layers_done"] == len(layers)
        useful = prog.useful_macs()         # (the host's count of what mac_used counts)
        assert 0 < sum(useful) <= spec.lanes * res["cycles"]
        if spec.snapshots:
            assert sum(layer["cycles"] for layer in res["layers"]) == res["cycles"]
            if spec.counters == "all":
                assert [layer["mac_used"] for layer in res["layers"]] == useful
        else:
            assert res["layers"] == []
        if spec.counters == "basic":
            assert all(v == 0 for k, v in c.items() if k not in BASIC_COUNTERS)
            continue
        assert c["mac_used"] == sum(useful)
        assert c["mac_used"] + c["mac_idle"] == spec.lanes * res["cycles"]
        assert c["out_writes"] == want.size


def test_random_layers_rtl(rng):
    cases = _layer_cases(rng, QUICK, 24)
    progs = [set_input(compile_network(layers, x.shape, QUICK), x.astype(np.uint8))
             for layers, x in cases]
    wide = [w for p in progs for w in p.wide]
    assert any(wide) and not all(wide)   # both drain modes are exercised
    with build_dir(QUICK) as bd:
        results = run_programs(progs, QUICK, backend="rtl", build_dir=bd, idle=0.3,
                               backpressure=0.3, seed=int(rng.integers(1 << 30)))
    _check(results, progs, cases, QUICK)
    outs = np.concatenate([r["out"].ravel() for r in results])
    assert (outs == 0).any() and (outs == 255).any()


#: Narrow feature-map words (the iCE40 layout): 8 lanes fed from 2-activation ACT words; the
#: small FPGA's counter set; the ECP5 spec's multipliers in logic (ShiftAddMul).
NARROW = EngineSpec(name="narrow", lanes=8, act_lanes=2, act_depth=2048, weight_depth=2048,
                    bias_depth=128, out_bytes=4096, max_layers=4, drain_lanes=2,
                    counters="basic", multiplier="lut")


def test_narrow_act_words_rtl(rng):
    """act_lanes < lanes: every layer takes Pi <= 2 input channels per cycle, the other lane
    groups go over virtual outputs; bit-exact. Only the basic counters count."""
    cases = _layer_cases(rng, NARROW, 9)
    progs = [set_input(compile_network(layers, x.shape, NARROW), x.astype(np.uint8))
             for layers, x in cases]
    plans = [pl for p in progs for pl in p.plans]
    assert all(pl.pi <= NARROW.act_lanes for pl in plans)
    assert {pl.pi for pl in plans} == {1, 2}
    with build_dir(NARROW) as bd:
        results = run_programs(progs, NARROW, backend="rtl", build_dir=bd, idle=0.3,
                               backpressure=0.3, seed=int(rng.integers(1 << 30)))
    # Some groups drain longer than they compute: the sequencer held their successors back
    # (else the hold bank would be overwritten and the outputs wrong).
    assert any(pl.pv // NARROW.drain_lanes > pl.group_cycles() for p in progs for pl in p.plans)
    _check(results, progs, cases, NARROW)


#: The small-FPGA datapath (the iCE40 spec's choices at a test size): a narrower accumulator
#: and requantiser multiplier, one multiplier used twice per output (a drain every other
#: cycle), DSP-pair products but for two lanes in logic, 4-activation words, every layer at
#: Pi = 4 (two accumulators behind a fixed adder tree), packed entries, no snapshots; the
#: requantiser in logic (one output every 8 cycles, shifts from 15). LEAN_SERIAL: the
#: serial requantiser (one SB_MAC16 used twice: a drain every other cycle) with two lanes in
#: logic instead.
LEAN = EngineSpec(name="lean", lanes=8, act_lanes=4, act_depth=2048, weight_depth=2048,
                  bias_depth=128, out_bytes=4096, max_layers=4, counters="basic",
                  requant="lut", pipeline="lean", fixed_pi=True, act_ram="huge",
                  snapshots=False, packed_entries=True,
                  arith=ArithSpec(acc_bits=26, mult_bits=15, shift_min=15))
LEAN_SERIAL = dataclasses.replace(LEAN, name="lean-serial", requant="serial", lut_lanes=2,
                                  arith=ArithSpec(acc_bits=26, mult_bits=15))


@pytest.mark.parametrize("spec", [LEAN, pytest.param(LEAN_SERIAL, marks=pytest.mark.slow)],
                         ids=lambda s: s.name)
def test_lean_datapath_rtl(rng, spec):
    """The slow requantisers' drain (one output per 8 cycles, or per 2 with the serial one:
    the sequencer holds groups back that much longer), the narrow arithmetic and the fixed
    Pi (layers with fewer input channels than a word holds leave lanes idle), bit-exact."""
    cases = _layer_cases(rng, spec, 9)
    # one run past 2**16 cycles (the lean cycle counter's halves carry a cycle apart)
    x = rng.integers(0, 256, size=(8, 24, 24))
    big = random_qlayer(rng, 8, 4, 9, 1, 4, x=x, arith=spec.arith)
    cases.append(([big], x))
    progs = [set_input(compile_network(layers, x.shape, spec), x.astype(np.uint8))
             for layers, x in cases]
    plans = [pl for p in progs for pl in p.plans]
    assert all(pl.pi == spec.act_lanes for pl in plans)
    assert any(pl.c_in < spec.act_lanes for pl in plans)
    with build_dir(spec) as bd:
        results = run_programs(progs, spec, backend="rtl", build_dir=bd, idle=0.3,
                               backpressure=0.3, seed=int(rng.integers(1 << 30)))
    assert any(2 * pl.pv > pl.group_cycles() for p in progs for pl in p.plans)
    assert results[-1]["cycles"] > 1 << 16
    _check(results, progs, cases, spec)


BANKED = dataclasses.replace(QUICK, name="banked", act_depth=2 * ACT_BANK)


@pytest.mark.parametrize("spec", [QUICK, LEAN, pytest.param(BANKED, marks=pytest.mark.slow)],
                         ids=lambda s: s.name)
def test_bus_spaces_rtl(rng, spec):
    """ID, status, readback of every writable space, out-of-range reads return 0 and writes
    there are ignored, counters after a run; under idle insertion and backpressure. (LEAN:
    the weights, OUT, ID and snapshots read straight from their RAMs' outputs. Slow: the
    same with ACT in two banks per buffer, whose words reach the host through the banks'
    registers.)"""
    p, a = spec.lanes, spec.act_lanes
    wbytes = bytes(rng.integers(0, 256, size=3 * p, dtype=np.uint8))
    ops = [
        ["r", Space.ID.value, 0, len(spec.id_bytes()) + 2],
        ["r", Space.CTRL.value, 0, 1],
        ["w", Space.WEIGHT.value, 5, wbytes.hex()],
        ["w", Space.BIAS.value, 17, "a1b2c3"],
        ["w", Space.DESC.value, 64 + 3, "0102"],
        ["w", Space.ACT.value, spec.act_depth * a + 2 * a - 1, "7f80"],
        ["w", Space.WEIGHT.value, spec.weight_depth * p, "ff"],   # out of range: ignored
        ["r", Space.WEIGHT.value, 5, len(wbytes)],
        ["r", Space.BIAS.value, 17, 3],
        ["r", Space.DESC.value, 64 + 3, 2],
        ["r", Space.ACT.value, spec.act_depth * a + 2 * a - 1, 2],
        ["r", Space.WEIGHT.value, spec.weight_depth * p, 2],
        ["r", Space.OUT.value, spec.out_bytes, 1],
        ["w", Space.CTRL.value, 0, "00"],                            # start 0 layers: error
        ["r", Space.CTRL.value, 0, 1],
        ["w", Space.CTRL.value, 1, "00"],                            # soft reset clears it
        ["r", Space.CTRL.value, 0, 1],
        ["r", Space.COUNT.value, 0, 8],
        ["w", Space.ACT.value, (spec.act_depth - 1) * a + 1, "5aa5"],  # buffer 0's last word
        ["r", Space.ACT.value, (spec.act_depth - 1) * a + 1, 2],
        # far out of range: no alias of the low bits (a lean engine keeps fewer of them)
        ["r", Space.WEIGHT.value, (1 << 23) + 5, 3],
        ["w", Space.CTRL.value, (1 << 23) + CtrlReg.START_STATUS, "00"],  # not a bad start
        ["r", Space.CTRL.value, 0, 1],
    ]
    x = rng.integers(0, 256, size=(3, 4, 4))
    layer = random_qlayer(rng, 3, 2, 3, 1, 1, x=x)
    prog = set_input(compile_network([layer], x.shape, spec), x.astype(np.uint8))
    with build_dir(spec) as bd:
        res = run_programs([prog], spec, backend="rtl", build_dir=bd, idle=0.4,
                           backpressure=0.5, seed=int(rng.integers(1 << 30)),
                           extra_ops=ops)
    r = res[-1]["extra"]
    assert r[0] == spec.id_bytes() + b"\0\0"
    assert r[1] == b"\0"
    assert r[2] == wbytes
    image = bytearray(2 * ENTRY_BYTES)
    image[17:20] = bytes.fromhex("a1b2c3")
    assert r[3] == canonical_entries(bytes(image), spec.entry_widths())[17:20]
    if spec.packed_entries:     # (bias bits 24.. not kept: read as bit 23's copies)
        assert r[3] == bytes.fromhex("a1b2ff")
    else:
        assert r[3] == bytes.fromhex("a1b2c3")
    assert r[4] == bytes.fromhex("0102")
    assert r[5] == bytes.fromhex("7f80")
    assert r[6] == b"\0\0" and r[7] == b"\0"
    assert r[8] == bytes([4])   # error bit
    assert r[9] == b"\0" and r[10] == bytes(8)
    assert r[11] == bytes.fromhex("5aa5")
    assert r[12] == bytes(3) and r[13] == b"\0"
    np.testing.assert_array_equal(res[0]["out"], run_layer(x, layer))
    assert len(res[0]["counters"]) == len(COUNTERS)


@pytest.mark.skipif("icarus" not in available_simulators(), reason="icarus not installed")
def test_one_layer_icarus(rng, tmp_path):
    spec = EngineSpec(name="icarus", lanes=4, act_depth=64, weight_depth=128, bias_depth=32,
                      out_bytes=512, max_layers=2)
    x = rng.integers(0, 256, size=(3, 4, 3))
    layer = random_qlayer(rng, 3, 2, 5, 3, 2, x=x)
    prog = set_input(compile_network([layer], x.shape, spec), x.astype(np.uint8))
    res = run_programs([prog], spec, backend="rtl", build_dir=tmp_path, simulator="icarus",
                       idle=0.2, backpressure=0.2)
    np.testing.assert_array_equal(res[0]["out"], run_layer(x, layer))


# ---- slow: the paper's network on a real image -------------------------------------------

@pytest.mark.slow
def test_paper_and_edge_networks_rtl(rng):
    """Every layer of the paper network on a camera tile (each layer fed the model's
    activations), the complete paper network, and the edge network, on the "sim" spec."""
    spec = SPECS["sim"]
    x = camera_tile(20).astype(np.int64)
    paper = calibrated_network(rng, PAPER_ARCH, x)
    edge = calibrated_network(rng, EDGE_ARCH, x, prefix="E")
    cases = []
    act = x
    for layer in paper:
        cases.append(([layer], act))
        act = run_layer(act, layer)
    cases.append((paper, x))
    cases.append((edge, x))
    progs = [set_input(compile_network(layers, a.shape, spec), a.astype(np.uint8))
             for layers, a in cases]
    with build_dir(spec) as bd:
        results = run_programs(progs, spec, backend="rtl", build_dir=bd, idle=0.1,
                               backpressure=0.1)
    _check(results, progs, cases, spec)
    # The whole networks: the compiler's estimate within 0.5 % (measured: paper 0.9999x,
    # 1,487,456 against 1,487,611 cycles; edge 0.9986x).
    for prog, res in zip(progs[-2:], results[-2:]):
        assert abs(prog.expected_cycles() / res["cycles"] - 1) < 0.005, \
            (prog.expected_cycles(), res["cycles"])


@pytest.mark.slow
def test_trained_models_rtl():
    """The zoo's trained, quantised paper (x3) and edge (x2) models on a camera tile."""
    from deconvsr.sw.bench.engine import zoo_network
    spec = SPECS["sim"]
    x = camera_tile(16).astype(np.int64)
    cases = [(zoo_network("paper"), x), (zoo_network("edge"), x)]
    progs = [set_input(compile_network(layers, a.shape, spec), a.astype(np.uint8))
             for layers, a in cases]
    with build_dir(spec) as bd:             # (the host bus under idle cycles and backpressure)
        results = run_programs(progs, spec, backend="rtl", build_dir=bd, idle=0.2,
                               backpressure=0.2, seed=3)
    _check(results, progs, cases, spec)
    assert results[0]["out"].shape == (1, 48, 48) and results[0]["out"].std() > 2


def test_tiled_frame_rtl_every_pixel(rng):
    """A frame in tiles on the RTL (a small spec, a small network: quick) equals the untiled
    integer model in every pixel: the valid windows at the frame's edges, the halo, the crop.
    The frame is not square, nor a multiple of the tile core."""
    spec = QUICK
    h, w = 11, 9
    x = camera_tile(16)[:, :h, :w].astype(np.int64)
    layers = calibrated_network(rng, [(1, 6, 3, 1, 1), (6, 4, 3, 1, 1), (4, 1, 4, 2, 1)], x,
                                arith=spec.arith)
    want = run_network(x, layers)
    pairs = list(compile_tiled(layers, x.astype(np.uint8), spec, core=4))
    ext = plan_tiles(layers, (h, w), 4)[1]
    assert len(pairs) == 9
    with build_dir(spec) as bd:             # (the host bus under idle cycles and backpressure)
        results = run_programs([p for _, p in pairs], spec, backend="rtl", build_dir=bd,
                               idle=0.2, backpressure=0.2, seed=5)
    got = np.full(want.shape, -1, dtype=np.int64)
    for (tile, prog), res in zip(pairs, results):
        (y0, y1, x0, x1), pix = crop_tile(layers, tile, res["out"], ext)
        got[:, y0:y1, x0:x1] = pix
        # (the compiler's estimate, which the driver's run deadline is made of)
        assert 0.8 <= prog.expected_cycles() / res["cycles"] <= 1.25, \
            (prog.expected_cycles(), res["cycles"])
    np.testing.assert_array_equal(got, want)
    assert want.std() > 5            # (a picture, not a flat field)


@pytest.mark.slow
def test_tiled_network_rtl(rng):
    """A frame processed in tiles on the RTL equals the untiled integer model."""
    spec = SPECS["sim"]
    h, w = 26, 22
    x = camera_tile(32)[:, :h, :w].astype(np.int64)
    layers = calibrated_network(rng, EDGE_ARCH, x)
    want = run_network(x, layers)
    tiles, ext = plan_tiles(layers, (h, w), 12)
    pairs = list(compile_tiled(layers, x.astype(np.uint8), spec, core=12))
    with build_dir(spec) as bd:             # (the host bus under idle cycles and backpressure)
        results = run_programs([p for _, p in pairs], spec, backend="rtl", build_dir=bd,
                               idle=0.2, backpressure=0.2, seed=4)
    got = np.full(want.shape, -1, dtype=np.int64)
    for (tile, _), res in zip(pairs, results):
        (y0, y1, x0, x1), pix = crop_tile(layers, tile, res["out"], ext)
        got[:, y0:y1, x0:x1] = pix
    np.testing.assert_array_equal(got, want)
