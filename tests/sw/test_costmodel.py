"""The cost model: formulas vs the paper's table, hand counts, and instrumented loop nests."""

import json

import numpy as np
import pytest

import deconvsr.sw.cli.main as cli
from deconvsr.sw.golden import algorithms
from deconvsr.sw.golden.costmodel import paper_comparison as compute
from deconvsr.sw.golden.costmodel import (ENERGY_TABLES, GTX680, OPERATORS, LayerCost, conv_cost,
                                   energy_pj, roofline, upsampling_cost, useful_macs_1d)
from deconvsr.sw.golden.reference import deconv2d, deconv_out_size
from deconvsr.sw.model.transforms import resize_to_deconv, subpixel_to_deconv


def ceil(a, b):
    return -(-a // b)


def paper_table(op, C, K, r, H):
    """§6 of the paper, literally (square H = W): (M, W, A, P)."""
    HW = H * H
    kd_nn = r + K - 1
    if op == "C-SP":
        return r**2 * K**2 * C**2 * HW, r**2 * K**2 * C**2, (1 + r**2) * C * HW, 2 * r**2 * C * HW
    if op == "C-NN":
        return r**2 * K**2 * C**2 * HW, K**2 * C**2, 2 * r**2 * C * HW, (1 + r**2) * C * HW
    if op == "D-SP/STRD":
        return (r**4 * K**2 * C**2 * HW, r**2 * K**2 * C**2,
                ((H + (H - 1) * (r - 1))**2 + r**2 * H**2) * C, 0)
    if op.startswith("D-SP/"):
        return r**2 * K**2 * C**2 * HW, r**2 * K**2 * C**2, (1 + r**2) * C * HW, 0
    if op in ("D-NN/STDD", "D-NN/REVD"):
        return kd_nn**2 * C**2 * HW, kd_nn**2 * C**2, (1 + r**2) * C * HW, 0
    if op in ("D-NN/REVD2", "D-NN/TDC"):
        return ceil(kd_nn, r)**2 * r**2 * C**2 * HW, kd_nn**2 * C**2, (1 + r**2) * C * HW, 0
    raise KeyError(op)     # D-NN/STRD is not in the table


@pytest.mark.parametrize("C,K,r,H", [(1, 3, 2, 4), (4, 3, 3, 5), (8, 5, 2, 7), (3, 1, 4, 3),
                                     (64, 3, 3, 321)])
def test_reduces_to_paper_table_when_cin_equals_cout(C, K, r, H):
    for op in OPERATORS:
        if op == "D-NN/STRD":
            continue
        c = upsampling_cost(op, C, C, K, r, H, H)
        m, w, a, p = paper_table(op, C, K, r, H)
        if op == "D-NN/TDC":
            # TDC stores its zero-padded sub-kernels: ceil(K_d/S)^2 S^2 >= the table's K_d^2.
            w = ceil(r + K - 1, r)**2 * r**2 * C**2
        assert (c.mac_slots, c.weights, c.activations, c.rearrange) == (m, w, a, p), op


def test_memory_bound_saving_formula():
    for r in (2, 3, 4):
        for orig, dec in (("C-SP", "D-SP/REVD2"), ("C-NN", "D-NN/REVD2")):
            a = upsampling_cost(orig, 16, 16, 3, r, 10, 12)
            b = upsampling_cost(dec, 16, 16, 3, r, 10, 12)
            ratio = (a.activations + a.rearrange) / (b.activations + b.rearrange)
            assert ratio == pytest.approx((1 + 3 * r * r) / (1 + r * r))
    assert (1 + 27) / (1 + 9) == pytest.approx(2.8)


def test_hand_counts_general_channels():
    # C_in = 2, C_out = 3, K = 3, r = 2, H x W = 4 x 5 (HW = 20), by hand:
    c = upsampling_cost("C-SP", 2, 3, 3, 2, 4, 5)
    # conv 2 -> 12 channels, 3x3, on 20 pixels: 12*2*9*20 = 4320; shuffle reads+writes 12*20 twice
    assert (c.mac_slots, c.weights, c.act_reads, c.act_writes, c.rearrange) == (
        4320, 216, 40, 240, 480)
    c = upsampling_cost("C-NN", 2, 3, 3, 2, 4, 5)
    # resize reads 40, writes 160; conv reads 160, writes 3*80 = 240; 3*2*9*80 = 4320 MACs
    assert (c.mac_slots, c.weights, c.act_reads, c.act_writes, c.rearrange) == (
        4320, 54, 160, 240, 200)
    # D-NN: K_d = 4, S = 2: STDD 16*6*20 = 1920; REVD2 ceil(4/2)^2*4*6*20 = 1920 (K_d mod S = 0)
    assert upsampling_cost("D-NN/STDD", 2, 3, 3, 2, 4, 5).mac_slots == 1920
    assert upsampling_cost("D-NN/REVD2", 2, 3, 3, 2, 4, 5).mac_slots == 1920
    # r = 3: K_d = 5: STDD 25*6*20 = 3000; REVD2 4*9*6*20 = 4320; STRD 25*6*9*20 = 27000
    assert upsampling_cost("D-NN/STDD", 2, 3, 3, 3, 4, 5).mac_slots == 3000
    assert upsampling_cost("D-NN/REVD2", 2, 3, 3, 3, 4, 5).mac_slots == 4320
    assert upsampling_cost("D-NN/STRD", 2, 3, 3, 3, 4, 5).mac_slots == 27000
    # STRD reads the zero-inserted map: (4 + 3*2) x (5 + 4*2) x 2 channels
    assert upsampling_cost("D-NN/STRD", 2, 3, 3, 3, 4, 5).act_reads == 10 * 13 * 2
    # ~2.25x fewer MACs than the resize conv for K = 3 (REVD2, r = 2 and 3)
    for r in (2, 3):
        ratio = (upsampling_cost("C-NN", 4, 4, 3, r, 8, 8).mac_slots
                 / upsampling_cost("D-NN/REVD2", 4, 4, 3, r, 8, 8).mac_slots)
        assert ratio == pytest.approx(2.25)
    assert conv_cost(1, 64, 5, 1, 1).mac_slots + conv_cost(64, 64, 3, 1, 1).mac_slots + \
        conv_cost(64, 32, 3, 1, 1).mac_slots + upsampling_cost(
            "C-SP", 32, 1, 3, 3, 1, 1).mac_slots == 59488      # §7: MACs per LR pixel


@pytest.mark.parametrize("bad", [("X-SP", 1), ("D-SP/FOO", 1), ("C-SP", 0), ("C-SP", 2.0)])
def test_invalid_arguments(bad):
    op, c = bad
    with pytest.raises(ValueError, match="operator must be one of|c_in must be an integer"):
        upsampling_cost(op, c, 1, 3, 2, 4, 4)


# Counted operations of real loop nests ----------------------------------------------------

class Tally:
    """A number that counts the multiplications it takes part in (instruments a loop nest)."""

    count = 0

    def __init__(self, v):
        self.v = v

    def __mul__(self, other):
        Tally.count += 1
        return self.v * (other.v if isinstance(other, Tally) else other)

    __rmul__ = __mul__

    def __float__(self):
        return float(self.v)


def counted(fn, x, wd, s, pd):
    Tally.count = 0
    xo = np.vectorize(Tally, otypes=[object])(x)
    wo = np.vectorize(Tally, otypes=[object])(wd)
    y = fn(xo, wo, s, pd)
    np.testing.assert_allclose(y, deconv2d(x, wd, s, pd), atol=1e-9)    # the nest is right
    return Tally.count


def revd2_fixed_trip(x, wd, s, pd):
    """REVD2 as hardware runs it: every output pixel, ceil(K_d/S)^2 tap slots per (i, o),
    taps beyond K_d or inputs outside the map are masked (zero) but still occupy a slot.
    Returns (output, slots)."""
    c_in, h, w = x.shape
    _, c_out, kd, _ = wd.shape
    kt = ceil(kd, s)
    ho, wo = deconv_out_size(h, kd, s, pd), deconv_out_size(w, kd, s, pd)
    y = np.zeros((c_out, ho, wo))
    slots = 0
    for o in range(c_out):
        for oy in range(ho):
            for ox in range(wo):
                fy, fx = (oy + pd) % s, (ox + pd) % s
                for i in range(c_in):
                    for m in range(kt):
                        for n in range(kt):
                            slots += 1
                            a, b = fy + s * m, fx + s * n
                            hh, ww = (oy + pd - a) // s, (ox + pd - b) // s
                            if a < kd and b < kd and 0 <= hh < h and 0 <= ww < w:
                                y[o, oy, ox] += x[i, hh, ww] * wd[i, o, a, b]
    return y, slots


@pytest.mark.parametrize("op", ["D-SP", "D-NN"])
@pytest.mark.parametrize("c_in,c_out,k,r,h,w", [(2, 3, 3, 2, 3, 4), (1, 2, 3, 3, 3, 3)])
def test_counts_match_instrumented_loop_nests(rng, op, c_in, c_out, k, r, h, w):
    pad = (k - 1) // 2
    if op == "D-SP":
        d = subpixel_to_deconv(rng.standard_normal((r * r * c_out, c_in, k, k)), r=r,
                               padding=pad)
    else:
        d = resize_to_deconv(rng.standard_normal((c_out, c_in, k, k)), r=r, padding=pad)
    x = rng.standard_normal((c_in, h, w))
    wd, s, pd, kd = d.weight, d.stride, d.padding, d.k
    ho, wo = deconv_out_size(h, kd, s, pd), deconv_out_size(w, kd, s, pd)
    assert (ho, wo) == (r * h, r * w)                       # "same": output r H x r W

    # REVD2 with fixed trip counts: its slots are the cost model's.
    y, slots = revd2_fixed_trip(x, wd, s, pd)
    np.testing.assert_allclose(y, deconv2d(x, wd, s, pd), atol=1e-9)
    assert slots == upsampling_cost(f"{op}/REVD2", c_in, c_out, k, r, h, w).mac_slots
    # STRD multiplies every slot of the zero-inserted convolution, zeros included.
    assert counted(algorithms.strd_loop, x, wd, s, pd) == upsampling_cost(
        f"{op}/STRD", c_in, c_out, k, r, h, w).mac_slots
    # Border-aware nests (STDD, REVD, REVD2, TDC) multiply exactly the in-range pairs.
    inside = useful_macs_1d(h, kd, s, pd, ho) * useful_macs_1d(w, kd, s, pd, wo) * c_in * c_out
    for fn in (algorithms.stdd_loop, algorithms.revd_loop, algorithms.revd2_loop):
        assert counted(fn, x, wd, s, pd) == inside, fn.__name__
    # ...which is at most the model's useful MACs (the model does not subtract borders).
    useful = upsampling_cost(f"{op}/STDD", c_in, c_out, k, r, h, w).useful_macs
    assert inside <= useful
    # Without cropping (P_d = 0, full output) the scatter executes exactly K_d^2 C_in C_out H W.
    assert counted(algorithms.stdd_loop, x, wd, s, 0) == kd * kd * c_in * c_out * h * w == useful


def test_tdc_counts_zero_padded_taps(rng):
    # K_d = 5, S = 3: TDC multiplies the zero-padded sub-kernel taps too (in-range inputs only).
    d = resize_to_deconv(rng.standard_normal((2, 1, 3, 3)), r=3, padding=1)
    x = rng.standard_normal((1, 4, 4))
    n = counted(algorithms.tdc_loop, x, d.weight, d.stride, d.padding)
    ho = deconv_out_size(4, d.k, d.stride, d.padding)
    # per axis: sub-kernel taps m < 2 per output, input h = q - m in range
    per_axis = sum(1 for oy in range(ho) for m in range(2)
                   if 0 <= (oy + d.padding) // 3 - m < 4)
    assert n == per_axis**2 * 2


# Modelled figures ------------------------------------------------------------------------

def test_energy_and_roofline():
    c = LayerCost("t", mac_slots=1000, useful_macs=1000, weights=10, act_reads=40, act_writes=50,
                  rearrange=0)
    assert energy_pj(c, ENERGY_TABLES["fp32"]) == pytest.approx(1000 * 4.6 + 100 * 640)
    assert energy_pj(c, ENERGY_TABLES["int8"]) == pytest.approx(1000 * 0.3 + 100 * 160)
    rl = roofline(c, 4, GTX680)
    assert rl["t_compute_s"] == pytest.approx(2000 / 3532.8e9)
    assert rl["t_memory_s"] == pytest.approx(400 / 192.2e9)
    assert rl["bound"] == "memory" and rl["latency_s"] == rl["t_memory_s"]
    assert rl["energy_pj"] == pytest.approx(2000 * 43.2 + 400 * 437.5 + 66.37 * rl["latency_s"]
                                            * 1e12)


def test_compute_headline_structure():
    res = compute()
    ops = res["operators"]
    assert list(ops) == list(OPERATORS)
    # Same MAC slots for C-SP and D-SP/REVD2; traffic differs by the shuffle.
    lay = {o: ops[o]["counted"]["layer"] for o in ops}
    assert lay["C-SP"]["mac_slots"] == lay["D-SP/REVD2"]["mac_slots"]
    assert lay["C-SP"]["words"] - lay["D-SP/REVD2"]["words"] == lay["C-SP"]["rearrange"]
    net_macs = ops["C-SP"]["counted"]["network"]["mac_slots"]
    assert net_macs == 59488 * 321 * 481
    hl = {(h["metric"], h["vs"]): h for h in res["headline"]}
    assert hl[("latency", "C-SP")]["layer_cin_eq_cout_memory_bound"] == pytest.approx(2.8)
    assert hl[("latency", "C-SP")]["paper"] == 2.1 and hl[("energy", "C-NN")]["paper"] == 2.7
    for h in res["headline"]:
        assert 1 <= h["network"] <= h["layer"]              # the other layers dilute the saving


# CLI ---------------------------------------------------------------------------------------

def test_cli_text_json_plot(tmp_path, capsys):
    png = tmp_path / "cm.png"
    assert cli.main(["costmodel", "--roofline", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "D-SP/REVD2" in out and "memory-bound formula (1+3r^2)/(1+r^2) = 2.80" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["costmodel", "--json", "-r", "2", "--size", "10", "12"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"]["r"] == 2 and data["memory_bound_formula"] == pytest.approx(2.6)
    assert data["operators"]["C-SP"]["counted"]["layer"]["mac_slots"] == 4 * 9 * 32 * 120


@pytest.mark.parametrize("argv,fragment", [(["-r", "0"], "--scale must be >= 1, not 0"),
                                           (["--size", "0", "5"], "--size H must be >= 1, not 0")])
def test_cli_bad_input(capsys, argv, fragment):
    assert cli.main(["costmodel", *argv]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deconvsr costmodel: error: {fragment}"]


def test_cli_unwritable_plot(tmp_path, capsys):
    assert cli.main(["costmodel", "--plot", str(tmp_path / "no" / "x.png")]) == cli.EXIT_INPUT
    assert "cannot write" in capsys.readouterr().err
