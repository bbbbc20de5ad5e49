"""Two 8x8 multipliers in one iCE40 ``SB_MAC16`` (the UP5K has 8: 16 products per cycle).

Yosys' ``synth_ice40 -dsp`` maps every multiplication to its own SB_MAC16 in 16x16 mode, so an
engine with 16 lanes of 8x8 products asks for 16 DSPs and does not fit the UP5K's 8. The
SB_MAC16's 8x8 mode (``MODE_8x8``) holds two independent multipliers, ``A[15:8] x B[15:8]``
(top, ``O[31:16]``) and ``A[7:0] x B[7:0]`` (bottom, ``O[15:0]``), each with its own output
register (``TOP_8x8_MULT_REG``/``BOT_8x8_MULT_REG``) enabled by ``CE``. :class:`DualMul8`
instantiates it on iCE40 platforms and is plain Amaranth elsewhere (simulation, ECP5, whose
MULT18X18D yosys maps by itself), with the same cycle behaviour.

Synthesise it **without** ``synth_ice40 -dsp``: that option's ``ice40_dsp`` pass takes every
SB_MAC16 in the design for one it made from a ``$mul`` and rewrites an instantiated one into
a combinational 16x16 multiplier (``MODE_8x8`` 0, no operand or product registers, clock tied
low: yosys 0.70 here; ``tests/hw/test_boards_mac.py`` checks the flows keep the instance's
settings). Without ``-dsp`` the instance is a black box and keeps them; multiplications
elsewhere then map to logic.

Signedness: with ``A_SIGNED``/``B_SIGNED`` each 8-bit operand is sign-extended to 16 bits
(yosys' ``cells_sim.v`` model); the 16-bit result is the product modulo 2**16, which is exact
for any 8x8 product (unsigned x signed: -32640..32385; signed x signed: -16256..16384;
unsigned x unsigned: 0..65025, read as unsigned).
"""

from amaranth import ClockSignal, Module, ResetSignal, Signal
from amaranth.hdl import Instance, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DualMul8", "uses_ice40_dsp"]


def uses_ice40_dsp(platform) -> bool:
    """True when ``platform`` is an iCE40 platform (an SB_MAC16 can be instantiated)."""
    return str(getattr(platform, "family", "")).lower() == "ice40"


class DualMul8(wiring.Component):
    """Two registered 8x8 products: on a clock edge with ``en``, ``p[i] <= a[i] * b[i]``.

    Parameters
    ----------
    a_signed, b_signed : bool
        Signedness of the ``a`` and ``b`` operands (default: ``a`` unsigned activations,
        ``b`` signed weights, the engine's arithmetic).
    use_dsp : bool or None
        Instantiate ``SB_MAC16`` (True), use Amaranth ``*`` (False), or decide from the
        platform (None: SB_MAC16 on iCE40).
    domain : str
        Clock domain of the product registers (reset to 0 with it).
    operand_reg : bool
        Register the operands first (in the SB_MAC16, its ``A_REG``/``B_REG``: on a small
        FPGA an operand register outside the DSP costs a logic cell per bit).

    Members
    -------
    a : In(ArrayOf 2 x 8 bits), b : In(2 x 8 bits), en : In(1)
    p : Out(2 x signed(16)) (unsigned(16) when both operands are unsigned)

    Latency: 1 cycle (the product register), 2 with ``operand_reg``; ``p`` (and the operand
    registers) hold while ``en`` is low.
    """

    def __new__(cls, *, a_signed: bool = False, b_signed: bool = True, use_dsp=None,
                domain: str = "sync", operand_reg: bool = False, **kwargs):
        # Validate before the object exists, so a refused one is not reported as unused.
        for name, value in (("a_signed", a_signed), ("b_signed", b_signed),
                            ("operand_reg", operand_reg)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        if use_dsp is not None and not isinstance(use_dsp, bool):
            raise TypeError(f"use_dsp must be None, True or False, not {use_dsp!r}")
        return super().__new__(cls, **kwargs)

    def __init__(self, *, a_signed: bool = False, b_signed: bool = True, use_dsp=None,
                 domain: str = "sync", operand_reg: bool = False):
        self.operand_reg = operand_reg
        self.a_signed = a_signed
        self.b_signed = b_signed
        self.use_dsp = use_dsp
        self._domain = domain
        a_shape = signed(8) if a_signed else unsigned(8)
        b_shape = signed(8) if b_signed else unsigned(8)
        p_shape = signed(16) if (a_signed or b_signed) else unsigned(16)
        from amaranth.lib.data import ArrayLayout
        super().__init__({
            "a": In(ArrayLayout(a_shape, 2)),
            "b": In(ArrayLayout(b_shape, 2)),
            "en": In(1),
            "p": Out(ArrayLayout(p_shape, 2)),
        })

    def elaborate(self, platform):
        m = Module()
        use_dsp = uses_ice40_dsp(platform) if self.use_dsp is None else self.use_dsp
        if not use_dsp:
            for i in range(2):      # (data registers: no reset)
                p = Signal.like(self.p[i], reset_less=True, name=f"p{i}")
                a_i, b_i = self.a[i], self.b[i]
                if self.operand_reg:
                    a_i = Signal.like(self.a[i], reset_less=True, name=f"a{i}")
                    b_i = Signal.like(self.b[i], reset_less=True, name=f"b{i}")
                    with m.If(self.en):
                        m.d[self._domain] += [a_i.eq(self.a[i]), b_i.eq(self.b[i])]
                with m.If(self.en):
                    m.d[self._domain] += p.eq(a_i * b_i)
                m.d.comb += self.p[i].eq(p)
            return m
        o = Signal(32)
        m.submodules.mac = Instance(
            "SB_MAC16",
            p_NEG_TRIGGER=0, p_C_REG=0, p_A_REG=int(self.operand_reg),
            p_B_REG=int(self.operand_reg), p_D_REG=0,
            p_TOP_8x8_MULT_REG=1, p_BOT_8x8_MULT_REG=1,
            p_PIPELINE_16x16_MULT_REG1=0, p_PIPELINE_16x16_MULT_REG2=0,
            p_TOPOUTPUT_SELECT=2, p_TOPADDSUB_LOWERINPUT=0, p_TOPADDSUB_UPPERINPUT=0,
            p_TOPADDSUB_CARRYSELECT=0,
            p_BOTOUTPUT_SELECT=2, p_BOTADDSUB_LOWERINPUT=0, p_BOTADDSUB_UPPERINPUT=0,
            p_BOTADDSUB_CARRYSELECT=0,
            p_MODE_8x8=1, p_A_SIGNED=int(self.a_signed), p_B_SIGNED=int(self.b_signed),
            i_CLK=ClockSignal(self._domain), i_CE=self.en,
            # top multiplier: operands [15:8] -> O[31:16]; bottom: [7:0] -> O[15:0]
            i_A=self.a.as_value(), i_B=self.b.as_value(), i_C=0, i_D=0,
            i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
            i_IRSTTOP=ResetSignal(self._domain), i_IRSTBOT=ResetSignal(self._domain),
            i_ORSTTOP=0, i_ORSTBOT=0, i_OLOADTOP=0, i_OLOADBOT=0,
            i_ADDSUBTOP=0, i_ADDSUBBOT=0, i_OHOLDTOP=0, i_OHOLDBOT=0,
            i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
            o_O=o)
        m.d.comb += self.p.as_value().eq(o)
        return m
