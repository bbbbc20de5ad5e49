"""`deconvsr serve`: a simulated board on a TCP port that `upscale --device serial:socket://...`
drives like a board, connection after connection, until Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from deconvsr.sim.harness import available_simulators
from deconvsr.sw.cli.main import main
from deconvsr.sw.cli.serve import served_board
from deconvsr.sw.host.device import served_sim

needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="Verilator not installed")


def test_served_board_is_the_boards_spec_clock_and_line():
    from deconvsr.hw.boards import BOARDS
    ice = served_board("icebreaker", None)
    assert ice == {"spec": "icebreaker", "clk_hz": round(BOARDS["icebreaker"].clk_hz),
                   "baud": BOARDS["icebreaker"].baud, "top": "uart"}
    assert served_board("ulx3s-85f", "spi")["top"] == "spi"
    assert served_board("sim", None) == {"spec": "sim", "clk_hz": 48_000_000,
                                         "baud": 3_000_000, "top": "stream"}


def test_served_sim_is_none_for_anything_else():
    assert served_sim("socket://127.0.0.1:1") is None       # nothing listens there
    assert served_sim("/dev/ttyUSB0") is None
    assert served_sim("socket://nohost") is None


def test_serve_rejects_a_bad_port(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    assert capsys.readouterr().err == ("deconvsr serve: error: --port must be in 0..65534, "
                                       "not 70000\n")


def _photo(path, side):
    from skimage import data
    Image.fromarray(np.asarray(data.astronaut())[100:100 + side, 200:200 + side]).save(path)
    return path


@needs_verilator
def test_serve_drives_two_upscales_in_a_row_then_stops_on_ctrl_c(tmp_path, capsys):
    # (SIGINT's default handler in the child: a pytest-xdist worker ignores SIGINT, and a
    # child inherits that, so Ctrl-C would never reach the server)
    proc = subprocess.Popen([sys.executable, "-m", "deconvsr.sw.cli", "serve", "--board", "sim"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = None
        deadline = time.monotonic() + 600
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"on (socket://127\.0\.0\.1:\d+)", line)
            url = m and m.group(1)
        assert url, "".join(lines) + proc.stderr.read()
        src = _photo(tmp_path / "in.png", 8)
        assert main(["upscale", str(src), "-o", str(tmp_path / "g.png"), "--device",
                     "golden"]) == 0
        capsys.readouterr()                                 # (its summary line)
        golden = np.asarray(Image.open(tmp_path / "g.png"))
        for k in range(2):
            out = tmp_path / f"s{k}.png"
            code = main(["upscale", str(src), "-o", str(out), "--device", f"serial:{url}",
                         "--json"])
            io = capsys.readouterr()
            assert code == 0, io.err
            summary = json.loads(io.out)
            assert summary["transfer"]["sim_ps"]["stream"] > 0  # it knew it was simulated
            assert np.array_equal(np.asarray(Image.open(out)), golden)
        os.killpg(proc.pid, signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    out = "".join(lines) + rest
    assert "connection 2" in out and out.rstrip().endswith("stopped")
