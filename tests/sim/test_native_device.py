"""The native simulated device (``deconvsr.sim.device.native``: Verilator C++ model + C++ loop).

Against the cocotb device it replaces for the CLI: the same reply bytes for the same requests
(stream and UART tops), the same driver results (SPI top), and its own behaviours: serving
connections in a row, a frame cut short, the real-time waits it grants a host, the build's
Verilog edit and its parameter checks. The bus twin stands in for the engine (small builds);
the engine itself runs on it in tests/sw/test_upscale.py and test_demo.py.
"""

import json
import random
import socket

import pytest

from deconvsr.bus import Space
from deconvsr.protocol import Opcode, Status
from deconvsr.sim.harness import available_simulators
from deconvsr.sw.host.driver import Driver
from deconvsr.sw.host.transport import SerialTransport, SocketSpiPort, SpiTransport, Transport

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="Verilator not installed")


class Recording(Transport):
    """A transport that keeps every byte it read."""

    def __init__(self, inner):
        self.inner, self.name, self.got = inner, inner.name, bytearray()

    def write(self, data):
        self.inner.write(data)

    def read(self, max_bytes, timeout):
        data = self.inner.read(max_bytes, timeout)
        self.got += data
        return data

    def close(self):
        self.inner.close()


def _session(dev, top):
    """A driver session on ``dev``: (results, bytes the device sent, the device's status)."""
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(700))
    inner = (SpiTransport(SocketSpiPort("127.0.0.1", dev.port)) if top == "spi"
             else SerialTransport(dev.url))
    t = Recording(inner)
    with t:
        d = Driver(t, timeout=60.0)
        info = d.identify().describe()
        d.write(Space.WEIGHT, 5, data, verify="crc")
        back = d.read(Space.WEIGHT, 5, len(data))
        d.run(3)
        status = d.wait()
        counters = d.counters(2)
        results = {"info": info, "back": back == data, "status": status, "counters": counters,
                   "retries": d.stats["retries"]}
        st = dev.status()
    return results, bytes(t.got), st


@pytest.mark.parametrize("top", ["stream", "uart", "spi"])
def test_native_device_answers_as_the_cocotb_device(top):
    from deconvsr.sim.device import NativeDevice, SimDevice
    with NativeDevice(top=top, engine="twin") as dev:
        native, native_bytes, native_st = _session(dev, top)
    with SimDevice(top=top, engine="twin") as dev:
        cocotb, cocotb_bytes, cocotb_st = _session(dev, top)
    assert native["back"] and native["retries"] == 0
    assert native["counters"][1] == 1                  # one run
    assert native == cocotb
    assert native_st["bytes_in"] == cocotb_st["bytes_in"]
    if top != "spi":   # (SPI: the host's polls depend on when the reply is ready)
        assert native_bytes == cocotb_bytes
        assert native_st["bytes_out"] == cocotb_st["bytes_out"] == len(native_bytes)
    # Simulated time stops while the SoC is idle: it measures the line and the device.
    assert native_st["sim_ps"] == native_st["cycles"] * 20834
    if top == "uart":   # 3 Mbaud: at least the bits on the line, in both directions
        bits = 10 * (native_st["bytes_in"] + native_st["bytes_out"])
        assert native_st["sim_ps"] >= bits * 333_333
        assert native_st["sim_ps"] == pytest.approx(cocotb_st["sim_ps"], rel=0.01)
    assert native_st["host_waits"] == 0     # the host never stopped in mid-frame


def _reply(t, timeout=20.0):
    """The next reply frame on transport ``t``."""
    from deconvsr.sw.host.driver import _ReplyReader, _Wait
    reader = _ReplyReader(t)
    return Driver.decode_reply(reader.frame(_Wait(reader, timeout, 4096)))


def test_native_device_serves_connections_in_a_row():
    from deconvsr.sim.device import NativeDevice
    data = bytes(range(200))
    with NativeDevice(top="stream", engine="twin", serve=True) as dev:
        assert dev.ctrl_port == dev.port + 1      # where a host that knows one finds the other
        with SerialTransport(dev.url) as t:
            d = Driver(t, timeout=30.0)
            d.identify()
            d.write(Space.BIAS, 0, data)
        with SerialTransport(dev.url) as t:        # the device kept its state, as a board does
            d = Driver(t, timeout=30.0)
            d.identify()
            assert d.read(Space.BIAS, 0, len(data)) == data
        # A host that goes away in mid-frame: the frame ends at the watchdog, the next host
        # is served.
        frame = Driver.encode(Opcode.WRITE, 9, Space.BIAS, 0, len(data), data)
        with SerialTransport(dev.url) as t:
            t.write(frame[:40])
        with SerialTransport(dev.url) as t:
            d = Driver(t, timeout=30.0)
            d.identify()
            assert d.read(Space.BIAS, 0, len(data)) == data
        st = dev.status()
        assert st["connections"] == 4
        assert dev.proc.poll() is None            # still serving
    assert dev.proc is None


def test_native_device_times_out_a_frame_cut_short():
    """A host that stops in mid-frame gets one real-time wait, then the watchdog answers."""
    from deconvsr.sim.device import NativeDevice
    data = bytes(64)
    frame = Driver.encode(Opcode.WRITE, 5, Space.BIAS, 0, len(data), data)
    with NativeDevice(top="stream", engine="twin") as dev:
        with SerialTransport(dev.url) as t:
            t.write(frame[:30])
            reply = _reply(t)
            st = dev.status()
    assert reply.status == Status.TIMEOUT.value
    assert st["host_waits"] == 1


def test_native_device_status_and_exit():
    from deconvsr.sim.device import NativeDevice
    dev = NativeDevice(top="stream", engine="twin").open()
    try:
        with socket.create_connection(("127.0.0.1", dev.ctrl_port), timeout=10) as s:
            line = s.makefile().readline()
        st = json.loads(line)
        assert set(st) == {"sim_ps", "cycles", "bytes_in", "bytes_out", "connections",
                           "host_waits"}
        assert st["connections"] == 0 and st["cycles"] == 6       # the reset's cycles
        with SerialTransport(dev.url) as t:
            Driver(t, timeout=30.0).identify()
    finally:
        dev.close(timeout=10)       # (the device exits when its one host hangs up)
    assert dev.proc is None


def test_strip_zero_inits_keeps_everything_else():
    from deconvsr.sim.device.native import strip_zero_inits
    text = "\n".join([
        "  reg [7:0] mem [3:0];",
        "  initial begin",
        "    mem[0] = 8'h00;",
        "    mem[1] = 8'h2a;",
        "    \\mem$2 [2] = 8'd0;",
        "  end",
        "  always @* begin",
        "    x[3] = 1'h0;",
        "  end", ""])
    assert strip_zero_inits(text).splitlines() == [
        "  reg [7:0] mem [3:0];", "  initial begin", "    mem[1] = 8'h2a;", "  end",
        "  always @* begin", "    x[3] = 1'h0;", "  end"]


@pytest.mark.parametrize("kwargs, message", [
    ({"top": "board"}, "top must be one of stream, uart, spi, not 'board'"),
    ({"sck_cycles": 5}, "sck_cycles must be an even integer >= 2, not 5"),
    ({"port": 70000}, "port must be in 0..65535, not 70000"),
    ({"top": "uart", "baud": 40_000_000}, "baud 40000000 is too high for a 48000000 Hz clock"),
])
def test_native_device_rejects_bad_parameters(kwargs, message):
    from deconvsr.sim.device import NativeDevice
    with pytest.raises(ValueError) as e:
        NativeDevice(**kwargs)
    assert str(e.value) == message


def test_terminated_while_the_native_device_runs_leaves_nothing(tmp_path):
    """SIGTERM while the engine runs a frame on the native device: exit 143, one line, no
    temporary directory, no device process left."""
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from PIL import Image
    from skimage import data
    src = tmp_path / "in.png"
    Image.fromarray(np.asarray(data.astronaut())[100:132, 200:232]).save(src)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "deconvsr.sw.cli", "upscale", str(src), "-o",
                          str(tmp_path / "o.png"), "--device", "sim"],
                         env={**__import__("os").environ, "TMPDIR": str(tmp)},
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    port_files = []
    while not port_files:                         # the device runs
        assert p.poll() is None and time.monotonic() - t0 < 600, p.stderr.read()
        port_files = list(tmp.glob("deconvsr-sim-*/port"))
        time.sleep(0.02)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1].endswith("terminated") and "Traceback" not in err
    assert list(tmp.iterdir()) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp) not in ps
