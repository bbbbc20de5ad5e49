"""``deconvsr bench engine`` and the synthesis check."""

import json

import pytest

from deconvsr.sw.cli import main


def test_bench_engine_rejects_bad_size(capsys):
    assert main(["bench", "engine", "--size", "2"]) == 2
    assert "--size must be in 4..512, not 2" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_engine_json(capsys):
    code = main(["bench", "engine", "--json", "--size", "12", "--net", "edge"])
    report = json.loads(capsys.readouterr().out)
    net = report["networks"][0]
    assert net["bit_exact"] is True
    assert sum(r["cycles"] for r in net["layers"]) == net["cycles"]
    assert sum(r["useful_macs"] for r in net["layers"]) == net["useful_macs"]
    assert 0 < net["utilisation"] <= 1
    # 12x12 frames lose more to the borders than 64x64 ones but stay above the frame goal.
    assert code == (0 if report["ok"] else 1)


@pytest.mark.slow
@pytest.mark.synth
def test_synthesis_fits_ecp5():
    from deconvsr.hw.synth import synthesize
    from deconvsr.spec import SPECS
    r = synthesize(SPECS["ulx3s-85f"], "ecp5-85f")
    assert r["counts"]["DSP"] >= SPECS["ulx3s-85f"].lanes // 2
    assert r["fits"], r["fits_by"]
