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

    Latency: an input accepted in cycle ``n`` appears on ``o`` in cycle ``n + 2``. Throughput
    one per cycle.

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
        })

    def elaborate(self, platform):
        # Two register stages: (acc + bias) then the multiply-add; the shift and the clamp are
        # combinational on the output side so that the caller can register them with its own
        # write stage.
        a = self.arith
        m = Module()
        s1_valid = Signal()
        s1_sum = Signal(signed(a.acc_bits + 1))
        s1_mult = Signal(unsigned(a.mult_bits))
        s1_shift = Signal(self.shift_bits)
        s1_tag = Signal.like(self.i.payload.tag)
        m.d.sync += [
            s1_valid.eq(self.i.valid),
            s1_sum.eq(self.i.payload.acc + self.i.payload.bias),
            s1_mult.eq(self.i.payload.mult),
            s1_shift.eq(self.i.payload.shift),
            s1_tag.eq(self.i.payload.tag),
        ]
        s2_valid = Signal()
        s2_t = Signal(signed(a.product_bits + 1))
        s2_shift = Signal(self.shift_bits)
        s2_tag = Signal.like(s1_tag)
        rnd = Signal(unsigned(a.shift_max + 1))
        m.d.comb += rnd.eq(Mux(s1_shift == 0, 0, (1 << s1_shift) >> 1))
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_t.eq(s1_sum * s1_mult + rnd),
            s2_shift.eq(s1_shift),
            s2_tag.eq(s1_tag),
        ]
        q = Signal(signed(a.product_bits + 1))
        m.d.comb += q.eq(s2_t >> s2_shift)
        m.d.comb += [
            self.o.valid.eq(s2_valid),
            self.o.payload.tag.eq(s2_tag),
            self.o.payload.data.eq(Mux(q < 0, 0, Mux(q > a.act_max, a.act_max, q))),
        ]
        return m
