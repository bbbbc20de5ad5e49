"""Requantisation pipeline: ``clamp(((acc + bias) * m + round) >> s, 0, 2**act_bits - 1)``,
exactly :func:`deconvsr.arith.requantize`."""

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arith import DEFAULT_ARITH, ArithSpec

__all__ = ["Requant"]


class Requant(wiring.Component):
    """One accumulator per cycle in, one activation per cycle out.

    Parameters
    ----------
    arith : the arithmetic contract (widths)
    tag_shape : a shape carried alongside unchanged (addresses, flags of the caller)

    Members
    -------
    i : In(stream) of ``{acc, bias, mult, shift, tag}``; always ready.
    o : Out(stream) of ``{data, tag}``; always ready (no backpressure: the consumer must take
        every output).

    Latency: an input accepted in cycle ``n`` appears on ``o`` in cycle ``n + latency``
    (``latency`` = 4). Throughput one per cycle. ``busy`` is high while an accepted input has
    not reached ``o`` yet.

    Raises
    ------
    TypeError
        if ``arith`` is not an :class:`ArithSpec`.
    """

    def __init__(self, arith: ArithSpec = DEFAULT_ARITH, tag_shape=unsigned(1)):
        if not isinstance(arith, ArithSpec):
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise TypeError(f"arith must be an ArithSpec, not {arith!r}")
        self.arith = arith
        self.shift_bits = Shape.cast(range(arith.shift_max + 1)).width
        self.in_layout = data.StructLayout({
            "acc": signed(arith.acc_bits), "bias": signed(arith.acc_bits),
            "mult": unsigned(arith.mult_bits), "shift": unsigned(self.shift_bits),
            "tag": tag_shape})
        self.out_layout = data.StructLayout({"data": unsigned(arith.act_bits), "tag": tag_shape})
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
            "busy": Out(1),
        })

    #: Cycles from ``i`` to ``o``.
    latency = 4
    #: Low bits of ``acc + bias`` multiplied separately (fits one 18x18 DSP with the multiplier).
    LO_BITS = 17

    def elaborate(self, platform):
        # Four register stages, each at most one adder deep: (acc + bias); the two partial
        # products of its low 17 and high bits (each one DSP multiply); their sum plus the
        # rounding constant; the shift. The clamp is combinational on the output side so that
        # the caller can register it with its own write stage.
        a = self.arith
        m = Module()
        lo_bits = self.LO_BITS
        sum_w = a.acc_bits + 1
        s1_valid = Signal()
        s1_sum = Signal(signed(sum_w), reset_less=True)
        s1_mult = Signal(unsigned(a.mult_bits), reset_less=True)
        s1_shift = Signal(self.shift_bits, reset_less=True)
        s1_tag = Signal.like(self.i.payload.tag, reset_less=True)
        m.d.sync += [
            s1_valid.eq(self.i.valid),
            s1_sum.eq(self.i.payload.acc + self.i.payload.bias),
            s1_mult.eq(self.i.payload.mult),
            s1_shift.eq(self.i.payload.shift),
            s1_tag.eq(self.i.payload.tag),
        ]
        s2_valid = Signal()
        s2_lo = Signal(unsigned(lo_bits + a.mult_bits), reset_less=True)
        s2_hi = Signal(signed(max(sum_w - lo_bits, 1) + a.mult_bits + 1), reset_less=True)
        s2_rnd = Signal(unsigned(a.shift_max + 1), reset_less=True)
        s2_shift = Signal(self.shift_bits, reset_less=True)
        s2_tag = Signal.like(s1_tag, reset_less=True)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_lo.eq(s1_sum[:lo_bits] * s1_mult),
            s2_hi.eq(s1_sum[lo_bits:].as_signed() * s1_mult if sum_w > lo_bits else 0),
            s2_rnd.eq(Mux(s1_shift == 0, 0, (1 << s1_shift) >> 1)),
            s2_shift.eq(s1_shift),
            s2_tag.eq(s1_tag),
        ]
        s3_valid = Signal()
        s3_t = Signal(signed(a.product_bits + 1), reset_less=True)
        s3_shift = Signal(self.shift_bits, reset_less=True)
        s3_tag = Signal.like(s1_tag, reset_less=True)
        m.d.sync += [
            s3_valid.eq(s2_valid),
            s3_t.eq((s2_hi << lo_bits) + s2_lo + s2_rnd),
            s3_shift.eq(s2_shift),
            s3_tag.eq(s2_tag),
        ]
        s4_valid = Signal()
        q = Signal(signed(a.product_bits + 1), reset_less=True)
        s4_tag = Signal.like(s1_tag, reset_less=True)
        m.d.sync += [
            s4_valid.eq(s3_valid),
            q.eq(s3_t >> s3_shift),
            s4_tag.eq(s3_tag),
        ]
        m.d.comb += [
            self.busy.eq(s1_valid | s2_valid | s3_valid),
            self.o.valid.eq(s4_valid),
            self.o.payload.tag.eq(s4_tag),
            self.o.payload.data.eq(Mux(q < 0, 0, Mux(q > a.act_max, a.act_max, q))),
        ]
        return m
