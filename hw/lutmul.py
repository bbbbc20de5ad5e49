"""An unsigned x signed multiplier in logic, as shift-and-add in two registered stages.

The ECP5's MULT18X18D, as yosys infers it, is used combinationally: about 4 ns inside the
block plus the routes to and from fabric registers that the placer does not keep beside it,
which limits a 100 MHz engine. :class:`ShiftAddMul` has no multiplication for yosys to put in
a DSP: stage 1 adds the partial products of the low and the high half of ``b`` (two short
adder trees on carry chains), stage 2 adds the two halves. ``p`` is ``a * b`` two cycles
after ``a`` and ``b`` (exact: ``len(a) + len(b) + 1`` signed bits). With ``stages=3`` each
half's adder tree is split by a register after its first level (one carry chain per stage,
for a 100 MHz ECP5 engine): three cycles.

About 110 LUTs for 8 x 8 bits; the engine uses it per lane with ``EngineSpec(multiplier=
"lut")`` (the ``ulx3s-85f`` spec: 64 lanes in ~7k of the 84k LUTs, DSPs left free).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ShiftAddMul"]


class ShiftAddMul(wiring.Component):
    """``p <= a * b`` with latency ``stages``; ``a`` unsigned, ``b`` signed (two's complement).

    Parameters
    ----------
    a_bits, b_bits : operand widths (``b_bits >= 2``).
    stages : 2 or 3 registered stages (``LATENCY``).
    """

    def __init__(self, a_bits: int = 8, b_bits: int = 8, *, stages: int = 2):
        if not (isinstance(a_bits, int) and isinstance(b_bits, int) and a_bits >= 1
                and b_bits >= 2) or stages not in (2, 3):
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise ValueError(f"need a_bits >= 1, b_bits >= 2 and stages 2 or 3, not "
                             f"{a_bits!r}, {b_bits!r}, {stages!r}")
        self.a_bits, self.b_bits = a_bits, b_bits
        self.LATENCY = stages
        super().__init__({"a": In(unsigned(a_bits)), "b": In(signed(b_bits)),
                          "p": Out(signed(a_bits + b_bits + 1))})

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b.as_unsigned()
        wa, wb = self.a_bits, self.b_bits
        h = wb // 2

        def level(terms):
            return [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                    for i in range(0, len(terms), 2)]

        def tree(terms, name):
            if self.LATENCY == 3:       # the first level registered
                regs = []
                for i, t in enumerate(level(terms)):
                    r = Signal.like(t, name=f"{name}_s{i}", reset_less=True)
                    m.d.sync += r.eq(t)
                    regs.append(r)
                terms = regs
            while len(terms) > 1:       # pairwise: log2(n) adder levels
                terms = level(terms)
            return terms[0]

        # Partial products: a << i when bit i of b is set; the top bit of b weighs -2**(wb-1).
        lo_terms = [Mux(b[i], a << i, 0) for i in range(h)]
        hi_terms = [Mux(b[i], a << (i - h), 0) for i in range(h, wb - 1)]
        hi_terms.append(-Mux(b[wb - 1], a << (wb - 1 - h), 0))
        lo = Signal(unsigned(wa + h), reset_less=True)
        hi = Signal(signed(wa + wb - h + 1), reset_less=True)
        p = Signal.like(self.p, reset_less=True)       # (data registers: no reset)
        m.d.sync += [lo.eq(tree(lo_terms, "lo")), hi.eq(tree(hi_terms, "hi")), p.eq((hi << h) + lo)]
        m.d.comb += self.p.eq(p)
        return m
