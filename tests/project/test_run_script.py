"""``./run test``'s selection, as the README states it: TEST_ARGS unset runs the quick suite,
TEST_ARGS="" everything, and quoted markers expressions work."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "run").exists():          # (wherever this file sits under tests/)
    ROOT = ROOT.parent


def test_run_test_selection():
    """Counted on a test with two quick and two slow UART cases (+-1.5 % baud error); the
    first ``./run`` alone (it re-installs a stale venv: two pip runs at once would race),
    the other two side by side."""
    target = next(ROOT.glob("tests/**/test_link_uart.py"))
    cases = {None: 2, "": 4, "-m 'slow and not synth'": 2}
    procs, outs = {}, {}
    for i, test_args in enumerate(cases):
        if i == 1:
            outs[None] = procs[None].communicate(timeout=600)[0]
        env = {k: v for k, v in os.environ.items() if k != "TEST_ARGS"}
        if test_args is not None:
            env["TEST_ARGS"] = test_args
        procs[test_args] = subprocess.Popen(
            [str(ROOT / "run"), "test", "-n", "0", "--collect-only", "-q",
             f"{target}::test_uart_back_to_back"], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for test_args, want in cases.items():
        out = outs[test_args] if test_args in outs else \
            procs[test_args].communicate(timeout=300)[0]
        assert procs[test_args].returncode == 0, out
        m = re.search(r"(\d+)(?:/\d+)? tests? collected", out)
        assert m and int(m.group(1)) == want, (test_args, out)
