"""SPI peripheral (mode 0: CPOL 0, CPHA 0; MSB first), byte streams in and out.

The host (an FTDI MPSSE master through pyftdi, :class:`deconvsr.sw.host.transport.FtdiSpiPort`, or
the simulator bridge) clocks full-duplex exchanges: every byte it sends on ``copi`` returns one
byte on ``cipo``. When the link has nothing to send the peripheral sends
:data:`~deconvsr.protocol.FIDLE`, which every receiver drops.
"""

from amaranth import Module, Signal, Cat, C, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .. import protocol

__all__ = ["SPIPeripheral", "SYNC_STAGES", "MIN_SCK_DIVISOR"]

SYNC_STAGES = 2
#: The slowest allowed system clock is this many times the SCK frequency.
MIN_SCK_DIVISOR = 8


class SPIPeripheral(wiring.Component):
    """Mode 0 SPI peripheral in the system clock domain (``sck``, ``copi``, ``cs_n`` are
    synchronised: SCK must be at most clk / :data:`MIN_SCK_DIVISOR`, so that ``cipo`` has
    changed, :data:`SYNC_STAGES` + 1 cycles after a falling SCK edge, before the next rising one).

    Members
    -------
    ``rx``: each byte received (8 rising SCK edges with ``cs_n`` low) is offered on this stream.
    The peripheral cannot wait: a byte completed while the previous one is still not taken is
    dropped and ``overrun`` pulses for one cycle.

    ``tx``: bytes to send. A byte is chosen at the start of each SPI byte (``cs_n`` falling, or
    the falling SCK edge after the 8th bit): the ``tx`` payload if ``tx`` is valid, else
    ``FIDLE``. It is *taken* from ``tx`` (``ready`` pulses) only at the first rising edge of
    that byte, i.e. once the host has sampled its first bit; a byte chosen just before ``cs_n``
    rises is therefore not lost, it goes out in the next transaction.

    ``cs_n`` high: the bit counter is cleared and a partial byte is discarded (CS framing).
    ``busy``: ``cs_n`` is low.

    Latency: ``rx`` is valid :data:`SYNC_STAGES` + 1 cycles after the 8th rising SCK edge.
    """

    sck: In(1)
    copi: In(1)
    cs_n: In(1, init=1)
    cipo: Out(1)
    rx: Out(stream.Signature(8))
    tx: In(stream.Signature(8))
    overrun: Out(1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        sck = Signal()
        copi = Signal()
        cs_n = Signal(init=1)
        m.submodules.sync_sck = FFSynchronizer(self.sck, sck, stages=SYNC_STAGES)
        m.submodules.sync_copi = FFSynchronizer(self.copi, copi, stages=SYNC_STAGES)
        m.submodules.sync_cs = FFSynchronizer(self.cs_n, cs_n, init=1, stages=SYNC_STAGES)

        sck_prev = Signal()
        cs_prev = Signal(init=1)
        m.d.sync += [sck_prev.eq(sck), cs_prev.eq(cs_n)]
        active = ~cs_n
        rise = active & sck & ~sck_prev
        fall = active & ~sck & sck_prev
        start = cs_prev & ~cs_n

        bits = Signal(range(8))          # bits of the current byte received so far
        rx_sr = Signal(8)
        tx_sr = Signal(8, init=protocol.FIDLE)
        tx_pending = Signal()            # tx_sr holds a byte peeked from tx, not yet taken

        m.d.comb += [self.cipo.eq(tx_sr[7]), self.busy.eq(active)]

        with m.If(self.rx.ready):
            m.d.sync += self.rx.valid.eq(0)

        def choose():
            m.d.sync += [tx_sr.eq(Mux(self.tx.valid, self.tx.payload, protocol.FIDLE)),
                         tx_pending.eq(self.tx.valid)]

        with m.If(~active):
            m.d.sync += [bits.eq(0), tx_pending.eq(0)]
        with m.Elif(start):
            choose()
        with m.Elif(rise):
            m.d.sync += [rx_sr.eq(Cat(copi, rx_sr[:7])), bits.eq(bits + 1)]
            with m.If((bits == 0) & tx_pending):
                m.d.comb += self.tx.ready.eq(1)
                m.d.sync += tx_pending.eq(0)
            with m.If(bits == 7):
                with m.If(self.rx.valid & ~self.rx.ready):
                    m.d.comb += self.overrun.eq(1)
                with m.Else():
                    m.d.sync += [self.rx.valid.eq(1), self.rx.payload.eq(Cat(copi, rx_sr[:7]))]
        with m.Elif(fall):
            with m.If(bits == 0):
                choose()
            with m.Else():
                m.d.sync += tx_sr.eq(Cat(C(1, 1), tx_sr[:7]))
        return m
