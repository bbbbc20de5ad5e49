"""`deconvsr bench sim`: both simulated devices run the frame bit-exact and report their speed
(the speed-up itself is a benchmark figure, not asserted here)."""

import json

import pytest

from deconvsr.sim.harness import available_simulators
from deconvsr.sw.bench import sim as bench_sim
from deconvsr.sw.cli.main import main

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="Verilator not installed")


def test_bench_sim_native_only(capsys):
    assert main(["bench", "sim", "--only", "native", "--size", "4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    d = r["devices"]["native"]
    assert r["ok"] and d["bit_exact"]
    assert "speedup" not in r
    # The run phase is the engine's run: its simulated cycles cover the engine's busy cycles.
    assert d["cycles_busy"] > 0 and d["run_cycles"] >= d["cycles_busy"]
    assert d["cycles_per_s"] > 0
    assert len(d["load_before"]) == 3


@pytest.mark.slow
def test_bench_sim_both_devices():
    r = bench_sim.measure(size=4)
    assert r["ok"], r
    nat, coc = r["devices"]["native"], r["devices"]["cocotb"]
    assert nat["cycles_busy"] == coc["cycles_busy"]         # the same RTL, the same frame
    assert r["speedup"] == pytest.approx(nat["cycles_per_s"] / coc["cycles_per_s"], rel=0.01)
    assert "native / cocotb" in bench_sim.render(r)


def test_bench_sim_rejects_a_bad_size(capsys):
    assert main(["bench", "sim", "--size", "2"]) == 2
    assert capsys.readouterr().err == "deconvsr bench: error: --size must be in 4..128, not 2\n"
