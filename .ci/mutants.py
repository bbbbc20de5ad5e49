#!/usr/bin/env python3
"""Mutation testing: does the quick suite (what CI runs) catch one-line bugs?

Each mutant changes one token of one module (a comparison, an arithmetic or bitwise operator,
``and``/``or``, ``True``/``False``, an integer constant) or is one of the NAMED bugs an earlier
review found; it is applied to a copy of the tree (``git archive HEAD``; the working tree is never
touched) and the module's tests run against it, cheapest first (``-x``, quick tests only). A
mutant is *killed* when a test fails (or the run exceeds its timeout: a hang), *survives*
otherwise. Random mutants are drawn with a fixed seed, so a run is reproducible.

    python .ci/mutants.py                      # every module, 20 random mutants each + named
    python .ci/mutants.py --module driver -n 5 --json out.json
    python .ci/mutants.py --named-only
    python .ci/mutants.py --only sw/host/driver.py:415:55      # one mutant again

Run it under the heavy-job lock (``flock /tmp/deconvsr-heavy.lock ...``): every mutant is a
pytest run (an engine mutant rebuilds the Verilator model, ~2 min). It prints one line per
mutant and a table (tried / killed per module); survivors are the list to read (a missing test,
or an equivalent mutant).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"deconvsr": "deconvsr", "deconvsr/hw": "hw", "deconvsr/sw": "sw",
                "deconvsr/sim": "sim"}     # import name -> source directory (pyproject)

#: module key -> (source file, test stages: each a list of pytest arguments, cheapest first)
MODULES = {
    "arith": ("deconvsr/arith.py", [["tests/shared/test_arith.py"],
                                    ["tests/sw/test_intmodel.py", "tests/sw/test_quantize.py"]]),
    "transforms": ("sw/model/transforms.py",
                   [["tests/sw/test_transforms.py"],
                    ["tests/sw/test_algorithms.py", "tests/sw/test_onnx_convert.py",
                     "tests/sw/test_network.py"]]),
    "intmodel": ("sw/golden/intmodel.py", [["tests/sw/test_intmodel.py"],
                                           ["tests/sw/test_quantize.py",
                                            "tests/sw/test_program.py"]]),
    "program": ("sw/host/program.py", [["tests/sw/test_program.py",
                                        "tests/sw/test_link_device.py"],
                                       ["tests/hw/test_engine_rtl.py", "-k",
                                        "tiled or random_layers"]]),
    "driver": ("sw/host/driver.py", [["tests/sw/test_driver.py", "tests/sw/test_driver_wire.py",
                                      "tests/sw/test_link_device.py"],
                                     ["tests/sw/test_catalogue.py", "-k", "misbehaving"]]),
    "decoder": ("hw/decoder.py", [["tests/hw/test_link.py"], ["tests/sim/test_link_fuzz.py"]]),
}

#: The bugs of issue #29 (module key, name, file or glob, original text, replacement; the file
#: is the one that holds the text).
NAMED = [
    ("engine", "valid window >= -> >", "hw/**/*.py", "(oy >= dn.vy1)", "(oy > dn.vy1)"),
    ("device", "tile coordinates swapped", "sw/host/device.py",
     "(y0, y1, x0, x1), pix = crop_tile(", "(x0, x1, y0, y1), pix = crop_tile("),
    ("driver", "OVERRUN not retried", "sw/host/driver.py",
     "Status.OVERRUN.value}", "}"),
    ("driver", "WAIT's TIMEOUT retried", "sw/host/driver.py",
     "            if reply.status in RETRY_STATUSES and not wait_timeout:",
     "            if reply.status in RETRY_STATUSES:"),
    ("driver", "error reply with a damaged tag skipped", "sw/host/driver.py",
     "            if reply.status in RETRY_STATUSES:\n                # An error",
     "            if False:\n                # An error"),
    ("decoder", "duplicate check ignores the opcode", "hw/decoder.py",
     "repeat.eq(last_valid & (last_tag == hdr.tag) &\n"
     "                               (last_op == hdr.opcode.as_value()))",
     "repeat.eq(last_valid & (last_tag == hdr.tag))"),
]
NAMED_TESTS = {
    "engine": [["tests/hw/test_engine_rtl.py", "-k", "tiled_frame_rtl"]],
    "device": [["tests/sw/test_link_device.py"]],
}

OPERATORS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-",
             "-": "+", "//": "*", "<<": ">>", ">>": "<<", "&": "|", "|": "&", "%": "//"}
NAMES = {"and": "or", "or": "and", "True": "False", "False": "True"}


@dataclass
class Mutant:
    module: str
    path: str
    line: int
    col: int
    old: str
    new: str
    name: str = ""
    text: str = field(default="", repr=False)      # the whole mutated source
    outcome: str = ""
    seconds: float = 0.0
    test: str = ""

    def describe(self) -> str:
        if self.name:
            return f"{self.path}: {self.name}"
        return f"{self.path}:{self.line}:{self.col}: {self.old!r} -> {self.new!r}"


def _skip_lines(src: str) -> set[int]:
    """Lines not worth mutating: logging, error messages, __all__, asserts of arguments."""
    skip = set()
    for i, line in enumerate(src.splitlines(), 1):
        s = line.strip()
        if s.startswith(("log.", "__all__", "raise ", "assert ", "def ", "class ", "import ",
                         "from ", "@")) or "ValueError(" in s or "Error(f" in s:
            skip.add(i)
    return skip


def candidates(module: str, path: str) -> list[Mutant]:
    src = (ROOT / path).read_text()
    skip = _skip_lines(src)
    lines = src.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    out = []
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        row, col = tok.start
        if row in skip:
            prev = tok
            continue
        new = None
        if tok.type == tokenize.OP and tok.string in OPERATORS:
            # not unary (* and ** are not mutated; a unary minus is kept)
            if tok.string in "+-" and (prev is None or prev.type == tokenize.OP and
                                       prev.string not in (")", "]")):
                new = None
            else:
                new = OPERATORS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in NAMES:
            new = NAMES[tok.string]
        elif tok.type == tokenize.NUMBER and tok.string.isdigit():
            new = str(int(tok.string) + 1)
        if new is not None:
            start = offsets[row - 1] + col
            text = src[:start] + new + src[start + len(tok.string):]
            try:
                compile(text, path, "exec")
            except SyntaxError:
                new = None
            else:
                out.append(Mutant(module, path, row, col, tok.string, new, text=text))
        prev = tok
    return out


def named_mutants() -> list[Mutant]:
    out = []
    for module, name, pattern, old, new in NAMED:
        hits = [p for p in sorted(ROOT.glob(pattern)) if old in p.read_text()]
        if len(hits) != 1 or hits[0].read_text().count(old) != 1:
            print(f"named mutant {name!r}: its text is not found exactly once under "
                  f"{pattern} (moved or changed?)", file=sys.stderr)
            continue
        src = hits[0].read_text()
        path = str(hits[0].relative_to(ROOT))
        line = src[:src.index(old)].count("\n") + 1
        out.append(Mutant(module, path, line, 0, old, new, name=name,
                          text=src.replace(old, new)))
    return out


def make_tree(dest: Path) -> Path:
    """HEAD's files in ``dest/src``, importable from there: ``deconvsr/{hw,sw,sim}`` are links
    to the top-level folders (the installed package maps them so, pyproject's package-dir).
    Tests run in it with ``PYTHONPATH`` on it, ahead of the editable install."""
    src = dest / "src"
    src.mkdir(parents=True)
    data = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(src, filter="data")
    for name, directory in PACKAGE_DIRS.items():
        if name != "deconvsr":
            (src / name).symlink_to(Path("..") / directory)
    where = subprocess.run([sys.executable, "-c", "import deconvsr.sw.host.driver as m; "
                            "print(m.__file__)"], cwd=src, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(src)}).stdout.strip()
    if not where.startswith(str(src)):
        raise SystemExit(f"the copy's modules are not the ones imported ({where})")
    return src


def run_tests(src: Path, args, timeout) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            "-m", "not slow", *args], cwd=src, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    tail = p.stdout.strip().splitlines()[-1:] or [""]
    if p.returncode == 0:
        return "passed", time.monotonic() - t0
    if p.returncode in (1,):
        return "failed", time.monotonic() - t0
    return f"error {p.returncode}: {tail[0][:100]}", time.monotonic() - t0


def check_baseline(src, stages, timeout):
    for args in stages:
        outcome, _ = run_tests(src, args, timeout)
        if outcome != "passed":
            raise SystemExit(f"the unmutated tree fails {' '.join(args)}: {outcome}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES),
                    help="only these modules (repeatable; default all)")
    ap.add_argument("-n", type=int, default=20, help="random mutants per module (default 20)")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--named-only", action="store_true")
    ap.add_argument("--no-named", action="store_true")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test stage")
    ap.add_argument("--json", metavar="FILE", help="write every mutant's outcome here")
    ap.add_argument("--only", action="append", metavar="PATH:LINE:COL",
                    help="just these one-token mutants (as the list prints them; repeatable)")
    args = ap.parse_args(argv)
    modules = args.module or list(MODULES)
    rng = random.Random(args.seed)
    mutants = []
    if args.only:
        for key in modules:
            mutants += [m for m in candidates(key, MODULES[key][0])
                        if f"{m.path}:{m.line}:{m.col}" in args.only]
    elif not args.named_only:
        for key in modules:
            cands = candidates(key, MODULES[key][0])
            mutants += rng.sample(cands, min(args.n, len(cands)))
    if not args.no_named and not args.only:
        mutants += [m for m in named_mutants() if args.module is None or m.module in modules]
    work = Path(tempfile.mkdtemp(prefix="deconvsr-mutants-"))
    try:
        src = make_tree(work)
        print(f"{len(mutants)} mutants; tree {src}", flush=True)
        checked = set()
        for m in mutants:
            stages = NAMED_TESTS.get(m.module) or MODULES[m.module][1]
            if m.module not in checked:
                check_baseline(src, stages, args.timeout)
                checked.add(m.module)
            target = src / m.path
            original = target.read_text()
            target.write_text(m.text)
            try:
                m.outcome = "survived"
                for stage in stages:
                    outcome, seconds = run_tests(src, stage, args.timeout)
                    m.seconds += seconds
                    if outcome != "passed":
                        m.outcome = "killed" if outcome == "failed" else f"killed ({outcome})"
                        m.test = " ".join(stage)
                        break
            finally:
                target.write_text(original)
            print(f"{m.outcome:>10}  {m.seconds:6.1f} s  {m.describe()}"
                  f"{'  by ' + m.test if m.test else ''}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nmodule       tried  killed  survived")
    table = {}
    for m in mutants:
        key = f"{m.module} (named)" if m.name else m.module
        t = table.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += m.outcome.startswith("killed")
    for key, (tried, killed) in table.items():
        print(f"{key:<16} {tried:5} {killed:7} {tried - killed:9}")
    total = len(mutants)
    killed = sum(m.outcome.startswith("killed") for m in mutants)
    print(f"{'all':<16} {total:5} {killed:7} {total - killed:9}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k: v for k, v in m.__dict__.items() if k != "text"} for m in mutants], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
