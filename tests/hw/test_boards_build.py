"""Bitstream builds through YoWASP (slow, synth): the bring-up top on both boards must fit and
meet the engine clock; a target above the design's Fmax must be reported as a miss."""

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import pytest

from deconvsr.sw.flow import build as flow

pytestmark = [pytest.mark.synth, pytest.mark.slow]


def _need_tools(family):
    try:
        flow.tool_env(family)
    except flow.BuildError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("board, min_mhz", [("icebreaker", 36.0), ("ulx3s-85f", 90.0)])
def test_loopback_bitstream_meets_timing(board, min_mhz, tmp_path):
    family = "ice40" if board == "icebreaker" else "ecp5"
    _need_tools(family)
    result = flow.build(board, tmp_path, core="loopback")
    assert result.meets_timing and result.fmax_mhz >= min_mhz
    assert result.target_mhz >= min_mhz
    assert (tmp_path / result.bitstream).stat().st_size > 10_000
    assert result.utilisation["PLL"].used == 1
    again = flow.load_result(tmp_path)
    assert again.fmax == result.fmax


def test_timing_miss_is_an_error(tmp_path):
    _need_tools("ice40")
    with pytest.raises(flow.BuildError, match=r"icebreaker: misses timing") as e:
        flow.build("icebreaker", tmp_path, core="loopback", sync_mhz=250.0)
    assert e.value.kind == "timing"
    assert not flow.load_result(tmp_path).meets_timing   # the reports are still written


def test_abc9_fallback_detection():
    """Only yosys' abc9 reintegration assert switches the flow to the abc mapper."""
    from deconvsr.hw.synth import ABC_FALLBACK, abc9_failed
    bad = ("2.46.16.5. Executing ABC9.\n2.46.16.7. Executing ABC_OPS_REINTEGRATE pass\n"
           "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc:3091.\n")
    assert abc9_failed(bad)
    assert not abc9_failed("2.46.16.5. Executing ABC9.\nEnd of script.\n")
    assert not abc9_failed("ERROR: Module `top' not found!\n")
    opts, after = ABC_FALLBACK["ecp5"]
    assert "-run :map_luts" in opts and "abc -lut" in after and "-run map_cells:" in after


def test_seed_sweep_packs_the_fastest_placement(tmp_path):
    # A target no placement meets: every seed runs (two at a time), the fastest is packed.
    _need_tools("ice40")
    lines = []
    result = flow.build("icebreaker", tmp_path, core="loopback", sync_mhz=250.0,
                        seed=[1, 2, 3], jobs=2, check_result=False, progress=lines.append)
    fmax = {int(k): v for k, v in result.seed_fmax.items()}
    assert sorted(fmax) == [1, 2, 3] and all(v for v in fmax.values())
    assert result.seed == max(fmax, key=fmax.get)
    assert result.fmax_mhz == fmax[result.seed]
    assert sorted(lines) == sorted(f"seed {s}: {v:.1f} MHz" for s, v in fmax.items())
    # the packed bitstream's placement is that seed's
    name = "deconvsr_icebreaker"
    assert (tmp_path / f"{name}.asc").read_bytes() == \
        (tmp_path / f"seed-{result.seed}" / f"{name}.asc").read_bytes()
    assert flow.load_result(tmp_path).seed_fmax == result.seed_fmax


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_seed_sweep_stops_when_a_round_meets_timing(board, tmp_path):
    # (both families: each has its own pin-constraint file to hand to the seeds' runs)
    _need_tools("ice40" if board == "icebreaker" else "ecp5")
    result = flow.build(board, tmp_path, core="loopback", seed=[5, 6, 7, 8], jobs=2)
    assert sorted(result.seed_fmax) == ["5", "6"] and result.meets_timing
    assert (tmp_path / result.bitstream).stat().st_size > 10_000


def test_seed_sweep_stops_seeds_past_their_timeout(tmp_path):
    # Every seed stopped (a timeout no place and route can meet): the build fails, and says
    # which seeds were stopped.
    _need_tools("ice40")
    lines = []
    with pytest.raises(flow.BuildError, match="icebreaker: place and route"):
        flow.build("icebreaker", tmp_path, core="loopback", seed=[1, 2], jobs=2,
                   seed_timeout=0.001, progress=lines.append)
    assert sorted(lines) == ["seed 1: stopped after 0.001 s", "seed 2: stopped after 0.001 s"]


@pytest.mark.bitstream
def test_ulx3s_engine_bitstream_meets_timing_with_64_macs(tmp_path):
    """The product bitstream: the ULX3S-85F board top with the full engine (spec ulx3s-85f) and
    the UART link, at the default seed, fits and meets its engine clock (90 MHz) (issue #6).
    The tools are pinned and deterministic, so this is the bitstream `deconvsr build --board
    ulx3s-85f` writes on any machine (~10 minutes here). CI runs it (`.ci/run`)."""
    _need_tools("ecp5")
    result = flow.build("ulx3s-85f", tmp_path)     # raises BuildError on a miss or misfit
    assert result.core == "UartSoC" and result.macs >= 64
    assert result.target_mhz >= 90.0 and result.fmax_mhz >= 90.0 and result.meets_timing
    for res in ("LUT", "EBR", "DSP"):
        assert 0 < result.utilisation[res].used <= result.utilisation[res].available
    assert result.bram_outregs > 0
    assert (tmp_path / result.bitstream).stat().st_size > 100_000
    _docs_agree("build-ulx3s-85f", result, tmp_path)


def _docs_agree(name, result, tmp_path):
    """The README's (and docs') figures of this build are this build's (docs/figures.py)."""
    root = Path(__file__).resolve().parents[1]
    while not (root / "docs" / "figures.py").exists():
        root = root.parent
    spec = importlib.util.spec_from_file_location("figures", root / "docs" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    sys.modules["figures"] = figures
    spec.loader.exec_module(figures)
    diffs = figures.compare(figures.FIGURES[name], result.to_json())
    kept = Path(tempfile.gettempdir()) / f"{name}.json"
    kept.write_text(json.dumps(result.to_json()))
    assert not diffs, "\n".join(diffs) + (f"\n(this build's result: {kept}; `python "
                                          f"docs/figures.py update {name} --result {kept}`)")


@pytest.mark.bitstream
def test_icebreaker_engine_bitstream_meets_timing_with_16_macs(tmp_path):
    """The product bitstream: the iCEBreaker board top with the full streaming engine (spec
    icebreaker: 8 SB_MAC16 as 16 8x8 MACs, feature maps in SPRAM, the IN ring) and the UART
    link on its own clock, at the board's seed (boards.toml), fits the UP5K and meets the
    36 MHz engine clock and the link clock (~9 minutes here). CI runs it (`.ci/run`)."""
    _need_tools("ice40")
    result = flow.build("icebreaker", tmp_path)     # raises BuildError on a miss or misfit
    assert result.core == "UartSoC" and result.macs >= 16
    assert result.target_mhz >= 36.0 and result.fmax_mhz >= 36.0 and result.meets_timing
    assert result.utilisation["DSP"].used == result.utilisation["DSP"].available == 8
    assert result.utilisation["SPRAM"].used == 4
    for res in ("LC", "EBR"):
        assert 0 < result.utilisation[res].used <= result.utilisation[res].available
    assert len(result.fmax) == 2 and all(result.fmax[c] >= result.constraint[c]
                                         for c in result.fmax)
    assert (tmp_path / result.bitstream).stat().st_size > 100_000
    _docs_agree("build-icebreaker", result, tmp_path)
