"""Devices that upscale a Y plane with a quantised network.

* ``golden``: the bit-exact integer model (:mod:`deconvsr.sw.golden.intmodel`), no hardware;
* ``sim``: the SoC (link + engine) simulated by Verilator as a native C++ model, reached over
  a TCP socket (:mod:`deconvsr.sim.device.native`); ``sim-uart``/``sim-spi`` use the UART/SPI
  tops; ``sim-cocotb``, ``sim-cocotb-uart``, ``sim-cocotb-spi``: the same under cocotb
  (:class:`deconvsr.sim.device.SimDevice`, slower);
* ``serial:PORT[@BAUD]``: a board on a serial port (anything pyserial's ``serial_for_url``
  opens, e.g. ``serial:/dev/ttyUSB1``, ``serial:socket://host:port``) at ``BAUD``, else at
  ``open_device``'s ``baud`` (the CLI's ``--board``: the board's, from ``boards.toml``), else
  3 Mbaud. A board's UART runs at its one rate (``boards.toml``): at another the device never
  answers, and the error names each board's rate. A simulated device that ``deconvsr serve``
  runs is recognised by its control port (the data port + 1) and gets the simulated device's
  reply allowances;
* ``spi:FTDI_URL``: a board through an FTDI MPSSE SPI master (pyftdi); ``spi:socket://host:port``
  a simulated SPI top (``deconvsr serve --top spi``).

Link devices load the program's setup (weights, entries; and descriptors) only when it differs
from what the device already holds, verify weights and entries with the device's CRC. A
streaming engine (gateware version 2, ``spec.in_bytes``) then gets each frame band by band
(:mod:`deconvsr.sw.host.stream`): the descriptors once, then one STEP request per step,
carrying only the frame's input rows in and its output rows back while the engine computes.
An older engine gets each frame (or tile) as before: write the input, run, wait, read.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np

from ...bus import Space
from ...descriptor import COUNTERS
from ...hw.boards import BOARDS
from ...sim.device import NativeDevice, NativeDeviceError, SimDevice, SimDeviceError
from ..golden.intmodel import run_network
from .driver import Driver, DriverError
from .program import (OUT_CYCLES_MAX, ProgramError, crop_tile, decode_counters,
                      frame_programs)
from .stream import plan_stream, step_polls
from .transport import FtdiSpiPort, SerialTransport, SocketSpiPort, SpiTransport, TransportError

__all__ = ["DeviceError", "Device", "GoldenDevice", "LinkDevice", "open_device", "SIM_DEVICES",
           "RemoteSim", "served_sim", "DEFAULT_BAUD"]

#: Simulated device names -> (runtime, top).
SIM_DEVICES = {"sim": ("native", "stream"), "sim-uart": ("native", "uart"),
               "sim-spi": ("native", "spi"), "sim-cocotb": ("cocotb", "stream"),
               "sim-cocotb-uart": ("cocotb", "uart"), "sim-cocotb-spi": ("cocotb", "spi")}

log = logging.getLogger(__name__)

#: A ``serial:PORT`` device's rate when neither ``@BAUD`` nor ``baud`` gives one.
DEFAULT_BAUD = 3_000_000


class DeviceError(Exception):
    """A device cannot be opened or used (the CLI's EXIT_DEVICE)."""


class Device:
    name = "device"

    def identify(self) -> dict:
        return {"device": self.name}

    def upscale(self, layers, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def counters(self) -> dict:
        return {}

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GoldenDevice(Device):
    name = "golden"

    def __init__(self):
        self.stats = {"frames": 0, "compute_s": 0.0}

    def upscale(self, layers, y):
        t0 = time.perf_counter()
        out = run_network(np.asarray(y, dtype=np.uint8), layers)[0]
        self.stats["frames"] += 1
        self.stats["compute_s"] += time.perf_counter() - t0
        return out


class LinkDevice(Device):
    """A device behind the link driver (simulated or real)."""

    def __init__(self, driver: Driver, *, name="link", sim=None, verify=True):
        self.driver = driver
        self.name = name
        self.sim = sim
        self.verify = verify
        self._held = {}           # (space, addr) -> bytes the device holds from setup
        try:
            self.info = driver.identify()
        except DriverError as e:
            self.close()
            raise DeviceError(f"{name}: {e}") from None
        self.stats = {"frames": 0, "tiles": 0, "steps": 0, "setup_bytes": 0, "input_bytes": 0,
                      "output_bytes": 0, "wall": {"setup": 0.0, "input": 0.0, "run": 0.0,
                                                  "output": 0.0, "stream": 0.0},
                      "sim_ps": {"setup": 0, "input": 0, "run": 0, "output": 0, "stream": 0}}

    def identify(self):
        return {"device": self.name, **self.info.describe()}

    def _phase(self, name, fn):
        t0 = time.perf_counter()
        s0 = self.sim.sim_time_ps() if self.sim else 0
        result = fn()
        self.stats["wall"][name] += time.perf_counter() - t0
        if self.sim:
            self.stats["sim_ps"][name] += self.sim.sim_time_ps() - s0
        return result

    def _programs(self, layers, y):
        try:
            progs, ext = frame_programs(layers, y, self.info.spec)
        except ProgramError as e:
            raise DeviceError(f"{self.name}: {e}") from None
        if ext is not None:
            log.info("frame %s does not fit the buffers: tiles of %d x %d (with the halo)", y.shape,
                     ext, ext)
        return progs, ext

    def _load_setup(self, writes):
        d = self.driver
        for space, addr, data in writes:
            key = (int(space.value if hasattr(space, "value") else space), addr)
            if self._held.get(key) == bytes(data):
                continue
            verify = "crc" if self.verify and space in (Space.WEIGHT, Space.BIAS) else None
            d.write(space, addr, data, verify=verify)
            self._held[key] = bytes(data)
            self.stats["setup_bytes"] += len(data)

    def upscale(self, layers, y):
        y = np.asarray(y, dtype=np.uint8)
        if self.info.spec.in_bytes:
            return self._upscale_stream(layers, y)
        d = self.driver
        progs, ext = self._programs(layers, y)
        out = None
        try:
            for tile, prog in progs:
                self._phase("setup", lambda: self._load_setup(prog.setup))

                def write_input():
                    for space, addr, data in prog.inputs:
                        d.write(space, addr, data)
                        self.stats["input_bytes"] += len(data)
                self._phase("input", write_input)

                def run():
                    d.run(prog.n_layers)
                    # (the device's requantiser is not in its ID ROM: the slowest's bound)
                    d.wait(prog.expected_cycles(OUT_CYCLES_MAX))
                self._phase("run", run)
                raw = self._phase("output", lambda: d.read(Space.OUT, prog.out_addr,
                                                           prog.out_len))
                self.stats["output_bytes"] += len(raw)
                res = prog.decode(raw)
                self.stats["tiles"] += 1
                if tile is None:
                    out = res[0]
                else:
                    if out is None:
                        oh, ow = layers[-1].out_size(*y.shape)
                        out = np.zeros((oh, ow), dtype=np.uint8)
                    (y0, y1, x0, x1), pix = crop_tile(layers, tile, res, ext)
                    out[y0:y1, x0:x1] = pix[0]
        except DriverError as e:
            raise DeviceError(f"{self.name}: {e}") from None
        self.stats["frames"] += 1
        return out

    def _upscale_stream(self, layers, y):
        """A frame band by band through a streaming engine (see the module docstring)."""
        spec = self.info.spec
        try:
            plan = plan_stream(layers, y.shape, spec)
        except ProgramError as e:
            raise DeviceError(f"{self.name}: {e}") from None
        out = np.zeros(plan.out_frame, dtype=np.uint8)
        d = self.driver
        try:
            for stripe in plan.stripes:
                self._phase("setup", lambda: self._load_setup(stripe.setup))
                # (the descriptors every frame: the engine has moved their bands on)
                for space, addr, data in stripe.rewind:
                    self._phase("setup", lambda: d.write(space, addr, data))
                    self._held.pop((int(space.value), addr), None)
                polls = step_polls(stripe, spec)

                def steps():
                    for k, req in enumerate(stripe.requests):
                        data = stripe.in_bytes(y, req)
                        raw = d.step(req.first, req.count, req.in_addr, data, req.out_addr,
                                     req.out_len, polls=polls[k])
                        plan.place(out, stripe, req, raw)
                        self.stats["input_bytes"] += len(data)
                        self.stats["output_bytes"] += len(raw)
                        self.stats["steps"] += 1
                self._phase("stream", steps)
        except DriverError as e:
            raise DeviceError(f"{self.name}: {e}") from None
        self.stats["frames"] += 1
        return out[0]

    def counters(self):
        try:
            raw = self.driver.read(Space.COUNT, 0, 4 * len(COUNTERS))
            return {**decode_counters(raw), "link": self.driver.link_stats()}
        except DriverError as e:
            raise DeviceError(f"{self.name}: {e}") from None

    def close(self):
        try:
            self.driver.transport.close()
        finally:
            if self.sim is not None:
                self.sim.close()
                self.sim = None


def _baud_hint(baud: int) -> str:
    boards = ", ".join(f"{name} {board.baud}" for name, board in BOARDS.items())
    return (f"the port was opened at {baud} baud, the boards' links run at {boards}: "
            f"use serial:PORT@BAUD or --board NAME")


def open_device(name: str, *, engine="engine", spec="sim", progress=False, timeout=None,
                verify=True, baud=None) -> Device:
    """Open a device by name (see the module docstring); ``baud``: a ``serial:PORT`` device's
    rate when the name has no ``@BAUD``. Raises :class:`DeviceError`."""
    if name == "golden":
        return GoldenDevice()
    if name in SIM_DEVICES:
        runtime, top = SIM_DEVICES[name]
        sim = (NativeDevice if runtime == "native" else SimDevice)(top=top, engine=engine,
                                                                   spec=spec)
        try:
            sim.open()
            if top == "spi":
                transport = SpiTransport(SocketSpiPort("127.0.0.1", sim.port), name=name)
            else:
                transport = SerialTransport(sim.url)
        except (NativeDeviceError, SimDeviceError, TransportError) as e:
            sim.close()
            raise DeviceError(f"{name}: {e}") from None
        return _sim_link(transport, name, sim, timeout, progress, verify)
    remote = None
    try:
        if name.startswith("serial:"):
            url, _, rate = name[7:].partition("@")
            baud = int(rate) if rate else baud or DEFAULT_BAUD
            transport = SerialTransport(url, baud=baud)
            remote = served_sim(url)
        elif name.startswith("spi:socket://"):
            host, port = _host_port(name[4:])
            transport = SpiTransport(SocketSpiPort(host, port), name=name)
            remote = served_sim(name[4:])
        elif name.startswith("spi:"):
            transport = SpiTransport(FtdiSpiPort(name[4:]), name=name)
        else:
            raise DeviceError(f"unknown device {name!r}: use golden, sim, sim-uart, sim-spi, "
                              "sim-cocotb[-uart|-spi], serial:PORT[@BAUD] or spi:FTDI_URL")
    except (TransportError, ValueError, OSError) as e:
        raise DeviceError(f"{name}: {e}") from None
    if remote is not None:
        return _sim_link(transport, name, remote, timeout, progress, verify)
    driver = Driver(transport, timeout=timeout or 2.0, progress=progress)
    try:
        return LinkDevice(driver, name=name, verify=verify)
    except DeviceError as e:
        if not name.startswith("serial:"):
            raise
        raise DeviceError(f"{e}; {_baud_hint(baud)}") from None


def _sim_link(transport, name, sim, timeout, progress, verify) -> LinkDevice:
    # Simulated time runs slower than real time (10-200x): generous reply allowances, and
    # runs polled in slices of simulated cycles (a few seconds each here).
    driver = Driver(transport, timeout=timeout or 120.0, progress=progress,
                    wait_slice_cycles=1 << 20)
    return LinkDevice(driver, name=name, sim=sim, verify=verify)


def _host_port(url: str) -> tuple[str, int]:
    """``socket://HOST:PORT`` -> (HOST, PORT); raises ValueError."""
    if not url.startswith("socket://"):
        raise ValueError(f"not a socket:// URL: {url!r}")
    host, _, port = url[len("socket://"):].partition("/")[0].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65535:
        raise ValueError(f"a socket:// URL needs HOST:PORT, not {url!r}")
    return host, int(port)


class RemoteSim:
    """The control port of a simulated device another process runs (``deconvsr serve``):
    simulated time and traffic, as :class:`~deconvsr.sim.device.NativeDevice` reports them."""

    def __init__(self, host: str, ctrl_port: int):
        self.host, self.ctrl_port = host, ctrl_port

    def status(self, timeout=30.0) -> dict:
        with socket.create_connection((self.host, self.ctrl_port), timeout=timeout) as s:
            data = b""
            while not data.endswith(b"\n") and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def sim_time_ps(self) -> int:
        return self.status()["sim_ps"]

    def close(self):
        pass


def served_sim(url: str, timeout: float = 0.5) -> RemoteSim | None:
    """The simulated device behind ``socket://HOST:PORT``, if there is one: ``deconvsr serve``
    puts its control port on PORT + 1, which answers one JSON status line. None for anything
    else (a board behind a network serial server: nothing there, or not that line)."""
    try:
        host, port = _host_port(url)
    except ValueError:
        return None
    remote = RemoteSim(host, port + 1)
    try:
        status = remote.status(timeout=timeout)
    except (OSError, ValueError):
        return None
    return remote if isinstance(status, dict) and "sim_ps" in status else None
