"""UART receiver and transmitter (8N1), with stream interfaces.

The bit time is ``divisor`` clock cycles; :func:`uart_divisor` derives it from the clock and the
baud rate (48 MHz / 3 Mbaud = 16).
"""

from amaranth import Module, Signal, Cat, C
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["uart_divisor", "UARTRx", "UARTTx"]

MIN_DIVISOR = 4


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
    """8N1 transmitter: takes a byte from ``data`` whenever the line is free (back to back, no
    gap: 10 bit times per byte). ``busy`` is high while a byte is on the line."""

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

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(bits != 0)]
        with m.If(bits == 0):
            m.d.comb += self.data.ready.eq(1)
            with m.If(self.data.valid):
                m.d.sync += [shreg.eq(Cat(C(0, 1), self.data.payload, C(1, 1))), bits.eq(10),
                             timer.eq(self._divisor - 1)]
        with m.Else():
            with m.If(timer == 0):
                m.d.sync += [timer.eq(self._divisor - 1), shreg.eq(Cat(shreg[1:], C(1, 1))),
                             bits.eq(bits - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
