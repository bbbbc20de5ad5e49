"""`deconvsr demo` (the README's main job) through the simulated RTL, on a small crop."""

import json

from deconvsr.sw.cli.main import main


def test_demo_sim_is_bit_exact_and_beats_bicubic(tmp_path, capsys):
    code = main(["demo", "--size", "12", "-o", str(tmp_path), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["bit_exact_with_golden"] is True
    assert summary["output"] == [36, 36]
    assert summary["psnr_y_db"]["accelerator"] > summary["psnr_y_db"]["bicubic"]
    assert summary["counters"]["cycles_busy"] > 0
    for name in summary["files"]:
        assert (tmp_path / name.split("/")[-1]).stat().st_size > 0


def test_demo_rejects_bad_size(capsys):
    assert main(["demo", "--size", "2"]) == 2
    assert capsys.readouterr().err == "deconvsr demo: error: --size must be in 4..170, not 2\n"
