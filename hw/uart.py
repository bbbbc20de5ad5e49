"""UART receiver and transmitter (8N1), with stream interfaces.

The bit time is ``divisor`` clock cycles; :func:`uart_divisor` derives it from the clock and the
baud rate (48 MHz / 3 Mbaud = 16; the iCEBreaker's 18 MHz link clock / 6 Mbaud = 3).

The receiver samples each bit once, ``divisor // 2`` cycles after the clock edge at which it
saw the start bit's falling edge (through its synchroniser), then every ``divisor`` cycles.
That edge is seen 0-1 cycle late, so a bit is sampled between ``divisor // 2`` and
``divisor // 2 + 1`` cycles after it began: at 3 cycles per bit, 1-2 cycles into it (the
middle third), at 4, 2-3 cycles. :func:`rx_tolerance` gives the host rate errors this
survives up to the stop bit (3 cycles per bit: -3.6 % .. +3.4 %).
"""

from amaranth import Module, Signal, Cat, C
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["uart_divisor", "rx_tolerance", "UARTRx", "UARTTx", "MIN_DIVISOR"]

#: Fewest clock cycles per bit. At 3 the receiver's sample lands in the middle third of each
#: bit (see the module docstring); at 2 it could land on the next bit's edge.
MIN_DIVISOR = 3


def uart_divisor(clk_hz: int, baud: int, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``.

    Raises
    ------
    ValueError
        if the divisor is below 4 or the achieved rate is off by more than ``tolerance``.
    """
    if not isinstance(clk_hz, int) or clk_hz <= 0:
        raise ValueError(f"clk_hz must be a positive integer, not {clk_hz!r}")
    if not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud} needs a divisor of {clk_hz / baud:.2f} at {clk_hz} Hz; "
                         f"the minimum is {MIN_DIVISOR}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"baud {baud} at {clk_hz} Hz is off by {error:.1%} (divisor {divisor}); "
                         f"the limit is {tolerance:.0%}")
    return divisor


def rx_tolerance(divisor: int) -> tuple[float, float]:
    """The host's baud-rate errors ``(low, high)`` that :class:`UARTRx` at ``divisor`` takes,
    as fractions (``+0.01``: the host 1 % fast, its bits ``divisor / 1.01`` cycles long),
    from its sampling alone (no line jitter): the stop bit's sample, ``9 divisor + divisor // 2
    + (0..1)`` cycles after the start edge, must fall inside the host's stop bit."""
    _check_divisor(divisor)
    last = 9 * divisor + divisor // 2        # the stop bit's sample, without the 0..1 lag
    return 9 * divisor / last - 1, 10 * divisor / (last + 1) - 1


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")


class UARTRx(wiring.Component):
    """8N1 receiver.

    ``rx`` is the line (synchronised inside). Each received byte is offered on ``data``; the
    receiver cannot wait, so a byte that completes while the previous one is still not taken is
    dropped and ``overrun`` pulses for one cycle. A byte whose stop bit is 0 is dropped and
    ``frame_error`` pulses. A start bit shorter than half a bit time is ignored (glitch).
    Latency: the byte is offered at the middle of its stop bit (plus 2 synchroniser cycles).
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    overrun: Out(1)
    frame_error: Out(1)
    busy: Out(1)

    def __init__(self, *, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self._divisor))
        bits = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), bits.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):  # glitch: not a start bit
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), shreg.eq(Cat(shreg[1:], rx)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                    with m.Elif(self.data.valid & ~self.data.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.data.valid.eq(1), self.data.payload.eq(shreg)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: takes a byte from ``data`` whenever the line is free or in the last
    cycle of a stop bit, so bytes offered in time go back to back (10 bit times per byte, no
    idle cycle between them). ``busy`` is high while a byte is on the line."""

    data: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        shreg = Signal(10, init=0x3FF)   # stop, data[7:0], start; LSB goes out first
        bits = Signal(range(11))

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(bits != 0),
                     self.data.ready.eq((bits == 0) | ((bits == 1) & (timer == 0)))]
        with m.If(self.data.ready & self.data.valid):
            m.d.sync += [shreg.eq(Cat(C(0, 1), self.data.payload, C(1, 1))), bits.eq(10),
                         timer.eq(self._divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [timer.eq(self._divisor - 1), shreg.eq(Cat(shreg[1:], C(1, 1))),
                             bits.eq(bits - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
