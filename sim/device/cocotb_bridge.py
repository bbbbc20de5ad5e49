"""cocotb bridge: the simulated device. A SoC top (``StreamSoC``, ``UartSoC`` or ``SpiSoC``) runs
under the simulator and a TCP server on 127.0.0.1 carries the host's bytes into its link and
its reply bytes back, so the host driver connects with ``socket://127.0.0.1:PORT``.

Environment (set by :mod:`deconvsr.sim.device`):
``DECONVSR_TOP`` stream|uart|spi|board, ``DECONVSR_CLK_PS`` clock period,
``DECONVSR_DIVISOR`` (uart: cycles per bit), ``DECONVSR_BIT_PS`` and ``DECONVSR_OSC_PS``
(board: the host UART's bit time and the oscillator's period; the board top, wrapped as
:mod:`deconvsr.sim.board_top` describes, makes its own clock and reset),
``DECONVSR_SCK_CYCLES`` (spi: cycles per SCK period), ``DECONVSR_PORT_FILE`` where to write
``"DATA_PORT CTRL_PORT"``.

Simulated time only advances while the SoC has work (its ``idle`` output is low): when it is
idle and no host byte is pending, the bridge blocks on the socket, so simulated time measures
line and device time, not host think time. Inside a request frame with no byte pending
(``waiting``, seen at two checks in a row: the deframer also shows it for the cycle in which it
checks a frame's CRC, after the frame's last byte) the bridge waits up to :data:`WAIT_REAL_S`
of real time for the host before letting simulated time run (so a truncated frame still meets
the watchdog).

A connection to the control port gets one JSON line: ``{"sim_ps": ..., "bytes_in": ...,
"bytes_out": ...}`` and is closed. The test ends (and the simulator exits) when the host closes
the data connection.
"""

import json
import os
import select
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, RisingEdge, Timer
from cocotb.utils import get_sim_time

WAIT_REAL_S = 0.25
DEBUG = bool(os.environ.get("DECONVSR_BRIDGE_DEBUG"))
CHUNK = 65536


class Bridge:
    def __init__(self, dut):
        self.dut = dut
        self.rxq = bytearray()      # host -> device, not yet in the RTL
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        ctrl = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ctrl.bind(("127.0.0.1", 0))
        ctrl.listen(4)
        self.ctrl = ctrl
        port_file = os.environ["DECONVSR_PORT_FILE"]
        with open(port_file + ".tmp", "w") as f:
            f.write(f"{srv.getsockname()[1]} {ctrl.getsockname()[1]}\n")
        os.replace(port_file + ".tmp", port_file)
        srv.settimeout(120)
        self.conn, _ = srv.accept()
        srv.close()
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.setblocking(False)

    def _serve_ctrl(self):
        c, _ = self.ctrl.accept()
        msg = {"sim_ps": get_sim_time("ps"), "bytes_in": self.bytes_in,
               "bytes_out": self.bytes_out}
        c.sendall((json.dumps(msg) + "\n").encode())
        c.close()

    def poll(self, timeout):
        """Take host bytes into ``rxq``; block up to ``timeout`` s (None: until something)."""
        while True:
            r, _, _ = select.select([self.conn, self.ctrl], [], [], timeout)
            if self.ctrl in r:
                self._serve_ctrl()
                if self.conn not in r:
                    if timeout == 0:
                        return
                    continue
            if self.conn in r:
                try:
                    data = self.conn.recv(CHUNK)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    self.closed = True
                else:
                    self.rxq += data
                    self.bytes_in += len(data)
            return

    def send(self, data):
        if not data:
            return
        self.bytes_out += len(data)
        view = memoryview(bytes(data))
        while view:
            try:
                n = self.conn.send(view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self.conn], [], 1.0)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                return


async def reset(dut, period_ps):
    cocotb.start_soon(Clock(dut.clk, period_ps, unit="ps").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)


async def run_stream(dut, bridge):
    """Byte-stream top: one host byte per cycle into ``i``; ``o`` is ready except while time
    runs in bulk. Inputs are driven at the falling edge and handshakes sampled a quarter
    period later (settled: ``i.ready`` may depend on the byte), so they are exactly the next
    rising edge's."""
    out = bytearray()
    bulk = 16
    spell = 0           # checks in a row that saw `waiting`
    while not bridge.closed:
        await FallingEdge(dut.clk)
        dut.o__ready.value = 1
        if bridge.rxq:
            dut.i__valid.value = 1
            dut.i__payload.value = bridge.rxq[0]
        else:
            dut.i__valid.value = 0
        await Timer(bridge.period_ps // 4, unit="ps")   # inputs applied, outputs settled
        o_valid = int(dut.o__valid.value)
        if bridge.rxq and int(dut.i__ready.value):
            if DEBUG:
                dut._log.warning("in %02x", bridge.rxq[0])
            del bridge.rxq[0]
        if o_valid:
            out.append(int(dut.o__payload.value))
            bulk = 16
            if len(out) >= CHUNK:
                bridge.send(out)
                out.clear()
        if bridge.rxq:
            bulk = 16
            spell = 0
            continue
        idle, waiting = int(dut.idle.value), int(dut.waiting.value)
        spell = spell + 1 if waiting else 0
        if out and not o_valid:
            bridge.send(out)
            out.clear()
        if o_valid:
            bridge.poll(0)
            continue
        if idle:
            bridge.poll(None)
        elif spell >= 2:
            bridge.poll(WAIT_REAL_S)
        else:
            bridge.poll(0)
        if bridge.rxq or bridge.closed:
            continue
        # Computing, or a host that stopped mid-frame: let time run in bulk (nothing is lost:
        # o is not ready and i not valid meanwhile), growing the step while nothing happens.
        # The transfers sampled above happen at the coming rising edge: wait for it first.
        await RisingEdge(dut.clk)
        dut.o__ready.value = 0
        dut.i__valid.value = 0
        await Timer(bulk * bridge.period_ps, unit="ps")
        bulk = min(bulk * 2, 4096)
    bridge.send(out)


async def run_uart(dut, bridge):
    """UART top: the host's UART sends bytes back to back at the line rate; a receiver
    samples ``tx`` in the middle of each bit."""
    if os.environ.get("DECONVSR_TOP") == "board":
        bit_ps = int(os.environ["DECONVSR_BIT_PS"])      # the host's UART: the baud alone
    else:
        bit_ps = int(os.environ["DECONVSR_DIVISOR"]) * bridge.period_ps
    dut.rx.value = 1
    state = {"sending": False, "receiving": False}
    kick = Event()
    out = bytearray()
    spell = 0

    async def sender():
        while True:
            if not bridge.rxq:
                state["sending"] = False
                kick.clear()
                await kick.wait()
                continue
            state["sending"] = True
            byte = bridge.rxq.pop(0)
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                dut.rx.value = bit
                await Timer(bit_ps, unit="ps")

    async def receiver():
        while True:
            await FallingEdge(dut.tx)
            state["receiving"] = True
            await Timer(bit_ps // 2, unit="ps")
            if int(dut.tx.value):
                state["receiving"] = False
                continue
            byte = 0
            for i in range(8):
                await Timer(bit_ps, unit="ps")
                byte |= int(dut.tx.value) << i
            await Timer(bit_ps, unit="ps")     # middle of the stop bit
            out.append(byte)
            state["receiving"] = False

    cocotb.start_soon(sender())
    cocotb.start_soon(receiver())
    while not bridge.closed:
        await Timer(bit_ps, unit="ps")
        idle, waiting = int(dut.idle.value), int(dut.waiting.value)
        quiet = not state["sending"] and not state["receiving"] and not bridge.rxq
        spell = spell + 1 if waiting and quiet else 0
        if out and (quiet or len(out) >= 4096):
            bridge.send(out)
            out.clear()
        if bridge.rxq or state["sending"]:
            bridge.poll(0)
        elif idle and quiet:
            bridge.poll(None)
        elif spell >= 2:
            bridge.poll(WAIT_REAL_S)
        else:
            bridge.poll(0)
        if bridge.rxq and not state["sending"]:
            kick.set()
    bridge.send(out)


async def run_spi(dut, bridge):
    """SPI top (mode 0): each host byte is exchanged on the bus and the byte clocked out of
    ``cipo`` at the same time goes back to the host (one for one)."""
    half_ps = int(os.environ.get("DECONVSR_SCK_CYCLES", "8")) * bridge.period_ps // 2
    dut.sck.value = 0
    dut.cs_n.value = 1
    dut.copi.value = 0
    # CS is tracked here, not read back from the pin: a value written in this time step reads
    # back as the old one until time advances (the first exchange after an idle went out with
    # CS high and was ignored).
    selected = False
    spell = 0
    while not bridge.closed:
        if not bridge.rxq:
            idle, waiting = int(dut.idle.value), int(dut.waiting.value)
            spell = spell + 1 if waiting else 0
            if idle:
                dut.cs_n.value = 1
                selected = False
                bridge.poll(None)
            elif spell >= 2:
                bridge.poll(WAIT_REAL_S)
            else:
                bridge.poll(0)
            if not bridge.rxq:
                await Timer(64 * bridge.period_ps, unit="ps")
                continue
        if not selected:
            dut.cs_n.value = 0
            selected = True
            await Timer(4 * bridge.period_ps, unit="ps")
        out = bytearray()
        chunk = bytes(bridge.rxq[:4096])
        del bridge.rxq[:len(chunk)]
        for byte in chunk:
            got = 0
            for i in range(7, -1, -1):
                dut.copi.value = (byte >> i) & 1
                await Timer(half_ps, unit="ps")
                dut.sck.value = 1
                got = (got << 1) | int(dut.cipo.value)
                await Timer(half_ps, unit="ps")
                dut.sck.value = 0
            out.append(got)
        bridge.send(out)
        bridge.poll(0)


async def power_up(dut, osc_ps, timeout_ps=10**10):
    """Board top: the oscillator runs; wait until the board's own reset (PLL lock, then the
    power-on count) lets go."""
    dut.rx.value = 1
    cocotb.start_soon(Clock(dut.osc, osc_ps, unit="ps").start())
    t0 = get_sim_time("ps")
    await Timer(osc_ps, unit="ps")
    while int(dut.in_reset.value):
        if get_sim_time("ps") - t0 > timeout_ps:
            raise RuntimeError("the board top stayed in reset (PLL not locked?)")
        await Timer(64 * osc_ps, unit="ps")


@cocotb.test()
async def serve(dut):
    period_ps = int(os.environ.get("DECONVSR_CLK_PS", "20834"))
    top = os.environ.get("DECONVSR_TOP", "stream")
    if top == "board":
        await power_up(dut, int(os.environ["DECONVSR_OSC_PS"]))
    else:
        await reset(dut, period_ps)
    bridge = Bridge(dut)
    bridge.period_ps = period_ps
    runner = {"stream": run_stream, "uart": run_uart, "spi": run_spi, "board": run_uart}[top]
    await runner(dut, bridge)
    bridge.conn.close()
    bridge.ctrl.close()
    await Timer(bridge.period_ps, unit="ps")
