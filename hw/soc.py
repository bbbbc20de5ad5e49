"""Link + engine tops.

* :class:`Link`: the portable link core, line bytes in and out as streams, bus initiator out:
  ``Unstuffer -> Deframer -> Decoder -> Framer -> [reg] -> Stuffer -> [reg]``, bus commands
  ``Decoder -> [reg] -> engine`` (the register stages are
  :class:`~deconvsr.hw.framing.SkidBuffer`: no combinational path from the line's ``ready``
  into the decoder, nor from the decoder's FSM into the engine's address decode).
* :class:`StreamSoC`: link + engine with the line bytes as stream ports (fast simulation: the
  simulated device feeds host bytes straight in).
* :class:`UartSoC`: link + engine behind an 8N1 UART (``rx``/``tx`` pins), with a receive FIFO.
* :class:`SpiSoC`: link + engine behind the SPI peripheral (mode 0).

The engine is ``"twin"`` (:class:`~deconvsr.hw.bus_twin.BusTwin`), ``"engine"`` (the real
:class:`deconvsr.hw.engine.Engine`) or any callable ``spec -> Component`` with a
``bus: Out(BusSignature())`` member (the responder side, as ``deconvsr.bus`` documents).

``idle`` (every top): nothing in progress and no frame being received: the simulated device
may stop simulated time until the host sends more. ``waiting``: inside a request frame with no
byte offered (the deframer's watchdog is counting).
"""

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect

from ..bus import BusCommand, BusSignature
from ..spec import SPECS, EngineSpec
from .decoder import LINK_KIND_SPI, LINK_KIND_STREAM, LINK_KIND_UART, Decoder
from .framing import Deframer, Framer, SkidBuffer, Stuffer, Token, Unstuffer

__all__ = ["Link", "StreamSoC", "UartSoC", "SpiSoC", "make_engine", "DEFAULT_CLK_HZ",
           "DEFAULT_BAUD"]

DEFAULT_CLK_HZ = 48_000_000
DEFAULT_BAUD = 3_000_000


def make_engine(engine, spec: EngineSpec):
    if engine == "twin":
        from .bus_twin import BusTwin
        return BusTwin(spec)
    if engine == "engine":
        from .engine import Engine
        return Engine(spec)
    if callable(engine):
        return engine(spec)
    raise ValueError(f"engine must be 'twin', 'engine' or a callable, not {engine!r}")


class Link(wiring.Component):
    """Line bytes ``i`` -> requests on ``bus`` -> replies as line bytes ``o``.

    ``timeout``: inter-byte watchdog, in cycles (a request frame that stalls this long is
    answered with TIMEOUT and dropped). ``lean``: one bus read in flight and the short
    replies' bytes from a register (the engine spec's ``pipeline="lean"``). ``cmd_reg``:
    a register stage on the bus commands (without it, ``bus.cmd`` comes from the decoder).
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    bus: In(BusSignature())   # flipped: the link is the initiator (cmd out, rsp in)
    overrun: In(1)
    idle: Out(1)
    waiting: Out(1)

    def __init__(self, *, kind=LINK_KIND_STREAM, clk_hz=DEFAULT_CLK_HZ, baud=0, timeout=None,
                 lean=False, cmd_reg=True):
        if timeout is None:
            timeout = max(1024, clk_hz // 1000)    # 1 ms
        self._decoder_args = dict(kind=kind, clk_hz=clk_hz, baud=baud)
        self._timeout = timeout
        self._lean = lean
        self._cmd_reg = cmd_reg
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.unstuffer = unstuffer = Unstuffer()
        m.submodules.deframer = deframer = Deframer(timeout=self._timeout)
        # (lean: one bus read in flight; the engine answers in ~10 cycles, the line takes a
        # byte in 64 at the fastest SPI clock and in 160 from the 3 Mbaud UART)
        m.submodules.decoder = decoder = Decoder(**self._decoder_args,
                                                 **({"max_outstanding": 1, "registered_small": True}
                                                    if self._lean else {}))
        m.submodules.framer = framer = Framer()
        m.submodules.stuffer = stuffer = Stuffer()
        # Register stages on the reply path: without them the line's `ready` (UART transmitter,
        # SPI) ran combinationally through stuffer -> framer -> decoder (READ FIFO, CRC, FSM),
        # the longest path of the link (27.6 MHz on the iCE40 against a 48 MHz target).
        m.submodules.tx_reg = tx_reg = SkidBuffer(Token)
        m.submodules.out_reg = out_reg = SkidBuffer(8)
        wiring.connect(m, wiring.flipped(self.i), unstuffer.i)
        connect(m, unstuffer.o, deframer.i)
        connect(m, deframer.o, decoder.rx)
        connect(m, decoder.tx_hdr, framer.hdr)
        connect(m, decoder.tx_data, framer.data)
        connect(m, framer.o, tx_reg.i)
        connect(m, tx_reg.o, stuffer.i)
        connect(m, stuffer.o, out_reg.i)
        connect(m, out_reg.o, wiring.flipped(self.o))
        # And one on the bus commands: the decoder's FSM drove the engine's (or the twin's)
        # address decode and write enables combinationally, the next-longest path.
        # (``cmd_reg=False``: none, for a consumer that registers the command itself, as the
        # clock-domain crossing does.)
        if self._cmd_reg:
            m.submodules.cmd_reg = cmd_reg = SkidBuffer(BusCommand)
            connect(m, decoder.bus.cmd, cmd_reg.i)
            connect(m, cmd_reg.o, wiring.flipped(self.bus.cmd))
            cmd_busy = cmd_reg.busy
        else:
            connect(m, decoder.bus.cmd, wiring.flipped(self.bus.cmd))
            cmd_busy = 0
        connect(m, wiring.flipped(self.bus.rsp), decoder.bus.rsp)
        m.d.comb += [
            decoder.overrun.eq(self.overrun),
            deframer.hold.eq(decoder.busy),
            self.idle.eq(decoder.idle & deframer.hunting & ~unstuffer.o.valid & ~framer.busy &
                         ~tx_reg.busy & ~stuffer.busy & ~out_reg.busy & ~cmd_busy &
                         ~self.i.valid),
            self.waiting.eq(deframer.waiting & ~unstuffer.o.valid & decoder.rx.ready),
        ]
        return m


LINK_CLOCKS = ("shared", "own")


class _SoC(wiring.Component):
    def __init__(self, spec, engine, members, link_clock="shared"):
        if link_clock not in LINK_CLOCKS:
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise ValueError(f"link_clock must be one of {', '.join(LINK_CLOCKS)}, "
                             f"not {link_clock!r}")
        self._link_clock = link_clock
        if isinstance(spec, str):
            if spec not in SPECS:
                raise ValueError(f"unknown spec {spec!r}; known: {', '.join(SPECS)}")
            spec = SPECS[spec]
        if not isinstance(spec, EngineSpec):
            raise TypeError(f"spec must be an EngineSpec or a name, not {spec!r}")
        self.spec = spec
        self._engine = engine
        super().__init__(members)

    def _link_region(self, m):
        """A domain ``link``: sync's clock, and sync's reset through a register of its own
        (``link_clock="own"``: the domain is the parent's, nothing is added here).

        The link side (UART or SPI, FIFO, link) runs in it, so the registers its reset goes
        to are the link's only and the placer keeps that register and its synchronous-reset
        routes beside the link (on the ECP5-85F the single sync reset register, among the
        engine's ~800 reset loads, was 10.6-11 ns from the link's: build BI). The link leaves
        reset one cycle after the engine; the copy is kept apart by its ``__rep`` name
        (:data:`deconvsr.hw.synth.KEEP_REPLICAS`).
        """
        if self._link_clock == "own":
            return DomainRenamer({"sync": "link"})
        m.domains.link = ClockDomain("link", local=True)
        rst = Signal(init=1, reset_less=True, name="link_rst__rep")
        m.d.sync += rst.eq(ResetSignal("sync"))
        m.d.comb += [ClockSignal("link").eq(ClockSignal("sync")), ResetSignal("link").eq(rst)]
        return DomainRenamer({"sync": "link"})

    def _make_link(self, region, **kwargs):
        return region(Link(**self._link_args, **kwargs, lean=self.spec.pipeline == "lean",
                           cmd_reg=self._link_clock == "shared"))

    def _add_engine(self, m, link):
        """The engine on ``link``'s bus. With ``link_clock="own"`` the commands and replies
        cross between the ``link`` and ``sync`` domains (:class:`~deconvsr.hw.cdc.StreamCDC`);
        returns the crossings' busy (a transfer in flight), or None."""
        m.submodules.engine = engine = make_engine(self._engine, self.spec)
        if self._link_clock == "shared":
            connect(m, link.bus, engine.bus)
            return None
        from .cdc import StreamCDC
        m.submodules.cmd_cdc = cmd_cdc = StreamCDC(BusCommand, i_domain="link", o_domain="sync")
        m.submodules.rsp_cdc = rsp_cdc = StreamCDC(8, i_domain="sync", o_domain="link")
        connect(m, link.bus.cmd, cmd_cdc.i)
        connect(m, cmd_cdc.o, engine.bus.cmd)
        connect(m, engine.bus.rsp, rsp_cdc.i)
        connect(m, rsp_cdc.o, link.bus.rsp)
        return cmd_cdc.busy | rsp_cdc.busy


class StreamSoC(_SoC):
    """Link + engine; line bytes as streams ``i``/``o`` (with backpressure both ways)."""

    def __init__(self, spec="sim", *, engine="twin", clk_hz=DEFAULT_CLK_HZ, timeout=None):
        self._link_args = dict(kind=LINK_KIND_STREAM, clk_hz=clk_hz, timeout=timeout)
        super().__init__(spec, engine, {
            "i": In(stream.Signature(8)), "o": Out(stream.Signature(8)),
            "idle": Out(1), "waiting": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(**self._link_args, lean=self.spec.pipeline == "lean")
        connect(m, wiring.flipped(self.i), link.i)
        connect(m, link.o, wiring.flipped(self.o))
        m.d.comb += [self.idle.eq(link.idle), self.waiting.eq(link.waiting)]
        self._add_engine(m, link)
        return m


class UartSoC(_SoC):
    """Link + engine behind an 8N1 UART at ``baud`` (``rx``, ``tx`` pins). A ``rx_fifo``-byte
    FIFO absorbs received bytes while the decoder is busy; bytes beyond it are lost and counted
    (``overruns`` in the link statistics)."""

    def __init__(self, spec="sim", *, engine="twin", clk_hz=DEFAULT_CLK_HZ, baud=DEFAULT_BAUD,
                 rx_fifo=64, timeout=None, link_clock="shared"):
        from .uart import uart_divisor
        self._divisor = uart_divisor(clk_hz, baud)
        if timeout is None:   # 1 ms, but at least 16 byte times
            timeout = max(clk_hz // 1000, 160 * self._divisor)
        self._link_args = dict(kind=LINK_KIND_UART, clk_hz=clk_hz, baud=baud, timeout=timeout)
        self._rx_fifo = rx_fifo
        super().__init__(spec, engine, {
            "rx": In(1, init=1), "tx": Out(1, init=1), "idle": Out(1), "waiting": Out(1)},
            link_clock)

    def elaborate(self, platform):
        from .uart import UARTRx, UARTTx
        m = Module()
        region = self._link_region(m)
        m.submodules.link = link = self._make_link(region)
        m.submodules.uart_rx = rx = region(UARTRx(divisor=self._divisor))
        m.submodules.uart_tx = tx = region(UARTTx(divisor=self._divisor))
        m.submodules.rx_fifo = fifo = region(SyncFIFOBuffered(width=8, depth=self._rx_fifo))
        idle = link.idle & ~rx.busy & ~fifo.r_rdy & ~tx.busy & ~link.o.valid
        m.d.comb += [
            rx.rx.eq(self.rx), self.tx.eq(tx.tx),
            fifo.w_data.eq(rx.data.payload), fifo.w_en.eq(rx.data.valid),
            rx.data.ready.eq(fifo.w_rdy),
            link.i.valid.eq(fifo.r_rdy), link.i.payload.eq(fifo.r_data),
            fifo.r_en.eq(link.i.ready),
            link.overrun.eq(rx.overrun),
            *([self.idle.eq(idle)] if self._link_clock == "shared" else []),
            self.waiting.eq(link.waiting & ~rx.busy & ~fifo.r_rdy),
        ]
        connect(m, link.o, tx.data)
        crossing = self._add_engine(m, link)
        if crossing is not None:
            m.d.comb += self.idle.eq(idle & ~crossing)
        return m


class SpiSoC(_SoC):
    """Link + engine behind the SPI peripheral (mode 0; ``sck``, ``copi``, ``cipo``, ``cs_n``)."""

    def __init__(self, spec="sim", *, engine="twin", clk_hz=DEFAULT_CLK_HZ, rx_fifo=64,
                 timeout=None, link_clock="shared"):
        self._link_args = dict(kind=LINK_KIND_SPI, clk_hz=clk_hz, timeout=timeout)
        self._rx_fifo = rx_fifo
        super().__init__(spec, engine, {
            "sck": In(1), "copi": In(1), "cipo": Out(1), "cs_n": In(1, init=1),
            "idle": Out(1), "waiting": Out(1)}, link_clock)

    def elaborate(self, platform):
        from .spi import SPIPeripheral
        m = Module()
        region = self._link_region(m)
        m.submodules.link = link = self._make_link(region)
        m.submodules.spi = spi = region(SPIPeripheral())
        m.submodules.rx_fifo = fifo = region(SyncFIFOBuffered(width=8, depth=self._rx_fifo))
        idle = link.idle & ~fifo.r_rdy & ~link.o.valid
        m.d.comb += [
            spi.sck.eq(self.sck), spi.copi.eq(self.copi), spi.cs_n.eq(self.cs_n),
            self.cipo.eq(spi.cipo),
            fifo.w_data.eq(spi.rx.payload), fifo.w_en.eq(spi.rx.valid),
            spi.rx.ready.eq(fifo.w_rdy),
            link.i.valid.eq(fifo.r_rdy), link.i.payload.eq(fifo.r_data),
            fifo.r_en.eq(link.i.ready),
            link.overrun.eq(spi.overrun),
            *([self.idle.eq(idle)] if self._link_clock == "shared" else []),
            self.waiting.eq(link.waiting & ~fifo.r_rdy),
        ]
        connect(m, link.o, spi.tx)
        crossing = self._add_engine(m, link)
        if crossing is not None:
            m.d.comb += self.idle.eq(idle & ~crossing)
        return m
