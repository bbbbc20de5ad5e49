"""Requantisation pipeline: ``clamp(((acc + bias) * m + round) >> s, 0, 2**act_bits - 1)``,
exactly :func:`deconvsr.arith.requantize`."""

from amaranth import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arith import DEFAULT_ARITH, ArithSpec

__all__ = ["Requant", "LutRequant"]


def _interface(rq, arith: ArithSpec, tag_shape) -> dict:
    """A requantiser's members (``i``, ``o``, ``busy``), its ``shift_bits``, ``in_layout`` and
    ``out_layout`` set on ``rq``."""
    rq.shift_bits = Shape.cast(range(arith.shift_max + 1)).width
    rq.in_layout = data.StructLayout({
        "acc": signed(arith.acc_bits), "bias": signed(arith.acc_bits),
        "mult": unsigned(arith.mult_bits), "shift": unsigned(rq.shift_bits), "tag": tag_shape})
    rq.out_layout = data.StructLayout({"data": unsigned(arith.act_bits), "tag": tag_shape})
    return {"i": In(stream.Signature(rq.in_layout, always_ready=True)),
            "o": Out(stream.Signature(rq.out_layout, always_ready=True)),
            "busy": Out(1)}


def _window(m, v, sel, k: int, nb: int):
    """``u = v >> (sel << k)`` (arithmetic) as registers: its low ``nb`` bits, its sign and
    whether any bit above those is set (what the clamp reads of it, not all of it)."""
    width = len(v)
    u_low = Signal(nb, reset_less=True)
    u_neg = Signal(reset_less=True)
    u_big = Signal(reset_less=True)
    m.d.sync += u_neg.eq(v[-1])
    with m.Switch(sel):
        for j in range(1 << len(sel)):
            lo = min(j << k, width - 1)
            with m.Case(j):
                m.d.sync += [u_low.eq(v[lo:lo + nb]),
                             u_big.eq(v[lo + nb:].any() if lo + nb < width else 0)]
    return u_low, u_neg, u_big


def _clamp(m, u_low, u_neg, u_big, act_bits: int):
    """``(u + 1) >> 1`` clamped to ``0 .. 2**act_bits - 1`` from :func:`_window`'s registers:
    u < 0 gives 0 (u = -1 rounds to 0), u >= 0 clamps when a high bit is set or the low bits
    are all ones (u > 2 * act_max)."""
    low = Signal(len(u_low) + 1)
    m.d.comb += low.eq(u_low + 1)
    return Mux(u_neg, 0, Mux(u_big | u_low.all(), (1 << act_bits) - 1, low[1:act_bits + 1]))


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

    lean : the last shift stage keeps only what the clamp reads (the output's low bits,
        its sign and whether any higher bit is set) instead of the whole shifted product
        (a small FPGA: ~100 logic cells fewer on iCE40). Same results and latency.
    serial : False (default): the two partial products in two multipliers, one input per
        cycle. True: one multiplier (one iCE40 SB_MAC16 in 16 x 16 mode) computes them in two
        consecutive cycles; inputs at most every other cycle. Needs ``acc_bits <= 30`` and
        ``mult_bits <= 15`` (both partial products are then signed 16 x 16).

    Latency: an input accepted in cycle ``n`` appears on ``o`` in cycle ``n + latency``
    (``latency`` = 6, or 7 when ``serial``; ``o`` comes from registers). Throughput one per cycle (one per two cycles
    when ``serial``). ``busy`` is high while an accepted input has not reached ``o`` yet.

    Raises
    ------
    TypeError
        if ``arith`` is not an :class:`ArithSpec`.
    ValueError
        if ``serial`` and the widths do not fit one 16 x 16 multiplier.
    """

    def __init__(self, arith: ArithSpec = DEFAULT_ARITH, tag_shape=unsigned(1), *,
                 serial: bool = False, lean: bool = False):
        if not isinstance(arith, ArithSpec):
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise TypeError(f"arith must be an ArithSpec, not {arith!r}")
        if serial and not arith.fits_serial_requant:
            self._MustUse__silence = True
            raise ValueError(f"a serial requantiser needs acc_bits <= 30 and mult_bits <= 15, "
                             f"not {arith.acc_bits} and {arith.mult_bits}")
        self.arith = arith
        self.serial = serial
        self.lean = lean
        self.latency = 7 if serial else 6
        self.lo_bits = 15 if serial else self.LO_BITS
        super().__init__(_interface(self, arith, tag_shape))

    #: Low bits of ``acc + bias`` multiplied separately (fits one 18x18 DSP with the multiplier).
    LO_BITS = 17

    def elaborate(self, platform):
        # Five register stages, each at most one adder deep: (acc + bias); the two partial
        # products of its low 17 and high bits (each one DSP multiply); their sum; the shift
        # in two steps.
        # The rounding increment and the clamp (on the low bits only) are combinational on
        # the output side so that the caller can register them with its own write stage.
        a = self.arith
        m = Module()
        lo_bits = self.lo_bits
        sum_w = a.acc_bits + 1
        s1_valid = Signal()
        s1_sum = Signal(signed(sum_w), reset_less=True)
        s1_mult = Signal(unsigned(a.mult_bits), reset_less=True)
        s1_shift = Signal(self.shift_bits, reset_less=True)
        s1_tag = Signal.like(self.i.payload.tag, reset_less=True)
        m.d.sync += s1_valid.eq(self.i.valid)
        # (serial: s1 is read in the two cycles after it is loaded, so it loads only inputs)
        with m.If(self.i.valid if self.serial else 1):
            m.d.sync += [
                s1_sum.eq(self.i.payload.acc + self.i.payload.bias),
                s1_mult.eq(self.i.payload.mult),
                s1_shift.eq(self.i.payload.shift),
                s1_tag.eq(self.i.payload.tag),
            ]
        s2_valid = Signal()
        s2_lo = Signal(unsigned(lo_bits + a.mult_bits), reset_less=True)
        s2_hi = Signal(signed(max(sum_w - lo_bits, 1) + a.mult_bits + 1), reset_less=True)
        s2_shift = Signal(self.shift_bits, reset_less=True)
        s2_tag = Signal.like(s1_tag, reset_less=True)
        hi = s1_sum[lo_bits:].as_signed() if sum_w > lo_bits else Const(0, signed(1))
        if self.serial:
            # Cycle 1 (s1 just loaded): the low part's product into ``p``; cycle 2 (s1 still
            # holds: inputs come at most every other cycle): the high part's, while the low
            # one moves on. One signed 16 x 16 multiply: the low part zero-extended.
            s1b_valid = Signal()            # the second cycle of s1's input
            p = Signal(signed(32), reset_less=True)
            p_lo = Signal(signed(32), reset_less=True)
            opnd = Signal(signed(16))
            m.d.comb += opnd.eq(Mux(s1b_valid, hi, s1_sum[:lo_bits]))
            m.d.sync += [s1b_valid.eq(s1_valid), p.eq(opnd * s1_mult), p_lo.eq(p)]
            m.d.sync += [
                s2_valid.eq(s1b_valid),
                s2_shift.eq(s1_shift),
                s2_tag.eq(s1_tag),
            ]
            m.d.comb += [s2_lo.eq(p_lo), s2_hi.eq(p)]
            busy_extra = s1b_valid
        else:
            m.d.sync += [
                s2_valid.eq(s1_valid),
                s2_lo.eq(s1_sum[:lo_bits] * s1_mult),
                s2_hi.eq(hi * s1_mult if sum_w > lo_bits else 0),
                s2_shift.eq(s1_shift),
                s2_tag.eq(s1_tag),
            ]
            busy_extra = 0
        s3_valid = Signal()
        s3_t = Signal(signed(a.product_bits + 1), reset_less=True)
        s3_shift = Signal(self.shift_bits, reset_less=True)
        s3_tag = Signal.like(s1_tag, reset_less=True)
        m.d.sync += [
            s3_valid.eq(s2_valid),
            s3_t.eq((s2_hi << lo_bits) + s2_lo),
            s3_shift.eq(s2_shift),
            s3_tag.eq(s2_tag),
        ]
        # Round half up by shifting first: with u = (2 t) >> s (floor), q = (u + 1) >> 1 =
        # floor((t + 2**(s-1)) / 2**s) for s > 0, and t for s = 0. No rounding constant, and
        # the clamp needs only u's sign, whether u > 2 * act_max, and u's low bits.
        # The shift in two stages: by the low bits of s, then by the rest (a barrel shifter
        # of 40-odd bits in one cycle is six logic levels).
        k = min(3, self.shift_bits)
        s35_valid = Signal()
        v = Signal(signed(a.product_bits + 2), reset_less=True)
        s35_shift = Signal(max(self.shift_bits - k, 1), reset_less=True)
        s35_tag = Signal.like(s1_tag, reset_less=True)
        m.d.sync += [
            s35_valid.eq(s3_valid),
            v.eq((s3_t << 1) >> s3_shift[:k]),
            s35_shift.eq(s3_shift[k:] if self.shift_bits > k else 0),
            s35_tag.eq(s3_tag),
        ]
        s4_valid = Signal()
        if self.lean:
            # u = v >> 8j kept as its low act_bits + 1 bits, its sign and whether any bit
            # above those is set (for u >= 0: u > 2 * act_max iff that, or the low bits all
            # ones); u < 0 gives 0 (u = -1 rounds to 0, the rest clamps).
            s4_tag = Signal.like(s1_tag, reset_less=True)
            m.d.sync += [s4_valid.eq(s35_valid), s4_tag.eq(s35_tag)]
            u_low, u_neg, u_big = _window(m, v, s35_shift, k, a.act_bits + 1)
            clamped = _clamp(m, u_low, u_neg, u_big, a.act_bits)
            s5_valid = Signal()
            s5_data = Signal(a.act_bits, reset_less=True)
            s5_tag = Signal.like(s1_tag, reset_less=True)
            m.d.sync += [s5_valid.eq(s4_valid), s5_data.eq(clamped), s5_tag.eq(s4_tag)]
        else:
            u = Signal(signed(a.product_bits + 2), reset_less=True)
            s4_tag = Signal.like(s1_tag, reset_less=True)
            m.d.sync += [
                s4_valid.eq(s35_valid),
                u.eq(v >> (s35_shift << k)),
                s4_tag.eq(s35_tag),
            ]
            # The clamped byte into the output registers (the outputs fan out to the
            # consumer's write stage: from flip-flops, not from this adder).
            low = Signal(a.act_bits + 3)
            m.d.comb += low.eq(u[:a.act_bits + 2] + 1)
            s5_valid = Signal()
            s5_data = Signal(a.act_bits, reset_less=True)
            s5_tag = Signal.like(s1_tag, reset_less=True)
            m.d.sync += [
                s5_valid.eq(s4_valid),
                s5_data.eq(Mux(u < -1, 0, Mux(u > 2 * a.act_max, a.act_max,
                                              low[1:a.act_bits + 1]))),
                s5_tag.eq(s4_tag),
            ]
        m.d.comb += [
            self.busy.eq(s1_valid | busy_extra | s2_valid | s3_valid | s35_valid | s4_valid),
            self.o.valid.eq(s5_valid),
            self.o.payload.tag.eq(s5_tag),
            self.o.payload.data.eq(s5_data),
        ]
        return m


class LutRequant(wiring.Component):
    """The requantiser of :class:`Requant` in logic only, for an FPGA whose multipliers all
    go to the MAC lanes (the iCE40UP5K's eight SB_MAC16): ``acc + bias`` times the multiplier
    in :data:`PERIOD` cycles, one radix-4 Booth digit of ``m`` a cycle, least significant
    first, each step adding ``0``, ``+-a`` or ``+-2a`` and dropping two bits (an adder and a
    multiplexer instead of a multiplier). What it drops is the product's low
    14 bits, which a shift of at least 15 never reads: needs ``arith.shift_min >= 15`` and
    ``mult_bits <= 15``. Then the shift (by ``s - 15``) and the clamp as in the lean
    :class:`Requant`.

    One input every :data:`PERIOD` cycles at most (the caller spaces them); ``tag_delay``
    (0 or 1): the input's tag is taken that many cycles after its ``valid`` (a caller that
    computes the destination a cycle after the operands); None: the tag is taken
    :data:`PERIOD` cycles after ``valid``, as the multiply's addends end (no register of it
    until then; the caller holds it there, e.g. from a cycle after ``valid`` for PERIOD
    cycles). Output ``latency`` cycles after
    the input, with the tag; ``busy`` while an accepted input has not reached ``o``.

    Raises
    ------
    TypeError
        if ``arith`` is not an :class:`ArithSpec`.
    ValueError
        if the widths do not fit (``shift_min < 15`` or ``mult_bits > 15``).
    """

    #: Cycles per input: the eight Booth steps of a 15-bit multiplier.
    PERIOD = 8
    #: The product bits the multiply drops (the shift must be at least one more).
    DROPPED = 14

    def __init__(self, arith: ArithSpec = DEFAULT_ARITH, tag_shape=unsigned(1), *,
                 tag_delay: int = 0):
        if not isinstance(arith, ArithSpec):
            self._MustUse__silence = True
            raise TypeError(f"arith must be an ArithSpec, not {arith!r}")
        if arith.shift_min < self.DROPPED + 1 or arith.mult_bits > 15:
            self._MustUse__silence = True
            raise ValueError(f"a requantiser in logic needs shift_min >= {self.DROPPED + 1} "
                             f"and mult_bits <= 15, not {arith.shift_min} and "
                             f"{arith.mult_bits}")
        if tag_delay not in (0, 1, None):
            self._MustUse__silence = True
            raise ValueError(f"tag_delay must be 0, 1 or None, not {tag_delay!r}")
        self.arith = arith
        self.tag_delay = tag_delay
        self.period = self.PERIOD
        self.latency = self.PERIOD + 5
        super().__init__(_interface(self, arith, tag_shape))

    def elaborate(self, platform):
        # The multiply is two stages a cycle apart: A makes each step's addend (the Booth
        # digit of the multiplier's next two bits times a, inverted when negative, with the
        # +1 as a carry in) into a register, and B adds it to the running sum. So B's loop is
        # a flip-flop, an adder and the flip-flop again (the sum's bits go to the register
        # a step shifted, its two low bits to a register of their own, so there is no
        # multiplexer after the adder); the digit decode and the operand selection are A's.
        # A takes the next input in the cycle of its last step, B finishes a cycle after A.
        a = self.arith
        m = Module()
        x = self.i.payload
        sum_w = a.acc_bits + 1
        steps = self.PERIOD
        # Stage A: the multiplicand a = acc + bias, the multiplier's bits still to use
        # (least significant first; bit 15 is 0, so m is its own 16-bit two's complement) and
        # the bit below them, the step, the shift beyond what the multiply drops.
        ma = Signal(signed(sum_w), reset_less=True)
        mq = Signal(2 * steps, reset_less=True)
        mprev = Signal(reset_less=True)
        msh = Signal(max((a.shift_max - self.DROPPED - 1).bit_length(), 1), reset_less=True)
        mstep = Signal(range(steps))
        mbusy = Signal()
        mtag = Signal.like(x.tag, reset_less=True)
        b0, b1 = mq[0], mq[1]
        one = b0 ^ mprev                                    # Booth digit +-1
        two = (b1 & ~b0 & ~mprev) | (~b1 & b0 & mprev)      # +-2
        neg = b1 & ~(b0 & mprev)                            # negative
        mag = Signal(signed(sum_w + 2))
        m.d.comb += mag.eq(Mux(one, ma, 0) | Mux(two, ma << 1, 0))
        # A -> B: the addend and its carry in, whether B steps, and its first and last step
        add = Signal(signed(sum_w + 2), reset_less=True)
        add_c = Signal(reset_less=True)
        b_en = Signal()
        b_first = Signal(reset_less=True)
        b_last = Signal()
        # Stage B: P = floor(a * m[:2k] / 4**k) after step k (P's register holds the sum
        # shifted by two, p_low its two low bits); after the last step, Cat(p_low, P) is the
        # product's bits from 14 up, floor(a * m / 2**14).
        p = Signal(signed(sum_w + 2), reset_less=True)
        p_low = Signal(2, reset_less=True)
        total = Signal(signed(sum_w + 2))
        m.d.comb += total.eq(Mux(b_first, 0, p) + add + add_c)
        # After the multiply: the shift and the tag, held until the output (taken at A's last
        # step; the next input's come PERIOD cycles later: one result at a time in the rest).
        xv = Signal()
        xsh = Signal.like(msh, reset_less=True)
        xtag = Signal.like(x.tag, reset_less=True)
        m.d.sync += [xv.eq(b_en & b_last), b_en.eq(mbusy)]
        with m.If(mbusy):
            m.d.sync += [mq.eq(mq >> 2), mprev.eq(mq[1]), mstep.eq(mstep + 1),
                         add.eq(Mux(neg, ~mag, mag)), add_c.eq(neg),
                         b_first.eq(mstep == 0), b_last.eq(mstep == steps - 1)]
            with m.If(mstep == steps - 1):
                m.d.sync += [mbusy.eq(0), xsh.eq(msh),
                             xtag.eq(x.tag if self.tag_delay is None else mtag)]
        with m.If(b_en):
            m.d.sync += [p.eq(total >> 2), p_low.eq(total[:2])]
        with m.If(self.i.valid):
            m.d.sync += [ma.eq(x.acc + x.bias), mq.eq(x.mult), mprev.eq(0),
                         msh.eq(x.shift - (self.DROPPED + 1)), mstep.eq(0), mbusy.eq(1)]
        if self.tag_delay is not None:
            if self.tag_delay:
                tag_now = Signal()
                m.d.sync += tag_now.eq(self.i.valid)
            else:
                tag_now = self.i.valid
            with m.If(tag_now):
                m.d.sync += mtag.eq(x.tag)
        prod = Signal(signed(sum_w + 2))
        m.d.comb += prod.eq(Cat(p_low, p[:sum_w]))
        # u = (2 t) >> s = P >> (s - 15), in two steps (by the low 3 bits, then by 8j), kept
        # as its low act_bits + 1 bits, its sign and whether any higher bit is set; then
        # q = (u + 1) >> 1 clamped (u < 0 gives 0).
        k = min(3, len(xsh))
        vv = Signal()
        v = Signal(signed(len(p)), reset_less=True)
        m.d.sync += [vv.eq(xv), v.eq(prod >> xsh[:k])]
        uv = Signal()
        m.d.sync += uv.eq(vv)
        hi = xsh[k:] if len(xsh) > k else Const(0, 1)
        u_low, u_neg, u_big = _window(m, v, hi, k, a.act_bits + 1)
        clamped = _clamp(m, u_low, u_neg, u_big, a.act_bits)
        ov = Signal()
        data_ = Signal(a.act_bits, reset_less=True)
        m.d.sync += [ov.eq(uv), data_.eq(clamped)]
        m.d.comb += [
            self.busy.eq(mbusy | b_en | xv | vv | uv),
            self.o.valid.eq(ov),
            self.o.payload.data.eq(data_),
            self.o.payload.tag.eq(xtag),
        ]
        return m
