"""Board tops: the portable core (the SoC: link + engine) on an amaranth-boards platform.

A board top only adds what a board needs around the unchanged core:

* a PLL from the board oscillator to the engine clock (iCEBreaker: ``SB_PLL40_PAD`` from the
  12 MHz pin; ULX3S: ``EHXPLLL`` from 25 MHz) and a reset held until the PLL locks;
* the core's UART on the board's USB serial resource (``uart``), SPI (the alternative link) on
  header pins added as a platform resource from ``deconvsr/constraints/boards.toml``;
* LEDs: heartbeat (clock running), link activity, and the core's status bits if it has any.

Pins come from the platform's resources only; the extras (clock target, baud, SPI pins) are
data in ``deconvsr/constraints/boards.toml``.

    from deconvsr.hw.boards import BOARDS, BoardTop
    board = BOARDS["icebreaker"]
    platform = board.platform()
    plan = platform.prepare(BoardTop(board), name="deconvsr_icebreaker")

The core is chosen by :func:`make_core` (the one line to change when the core changes).
"""



import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from amaranth import Cat, ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.build import Resource
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from deconvsr.spec import SPECS, EngineSpec

__all__ = ["CONSTRAINTS_DIR", "Board", "BOARDS", "BoardError", "PLLParams", "ice40_pll",
           "ecp5_pll", "LoopbackCore", "CORES", "DEFAULT_CORE", "make_core", "BoardTop", "load_board_extras"]

#: ``boards.toml`` (and its README): package data of :mod:`deconvsr`, read through
#: :mod:`importlib.resources` (``deconvsr/constraints/`` in the source tree).
CONSTRAINTS_DIR = resources.files("deconvsr") / "constraints"


class BoardError(ValueError):
    """A board name, clock or pin description that cannot be used."""


# --------------------------------------------------------------------------------------------
# PLL parameter search (software models of icepll / ecppll, checked against them in the tests)

@dataclass(frozen=True)
class PLLParams:
    """Divider settings of one PLL output. ``fout_hz`` is what the settings achieve."""
    fin_hz: float
    fout_hz: float
    fvco_hz: float
    ref_div: int       #: iCE40: DIVR + 1; ECP5: CLKI_DIV
    fb_div: int        #: iCE40: DIVF + 1; ECP5: CLKFB_DIV
    out_div: int       #: iCE40: 2 ** DIVQ; ECP5: CLKOP_DIV
    filter_range: int = 0  #: iCE40 only


def ice40_pll(fin_hz: float, fout_hz: float) -> PLLParams:
    """Dividers of an iCE40 ``SB_PLL40_*`` in SIMPLE feedback mode closest to ``fout_hz``.

    Same search and limits as IceStorm's ``icepll`` (PFD 10..133 MHz, VCO 533..1066 MHz,
    output 16..275 MHz). Raises :class:`BoardError` if no setting reaches the range.
    """
    if not 10e6 <= fin_hz <= 133e6:
        raise BoardError(f"iCE40 PLL input must be 10..133 MHz, not {fin_hz / 1e6:g} MHz")
    if not 16e6 <= fout_hz <= 275e6:
        raise BoardError(f"iCE40 PLL output must be 16..275 MHz, not {fout_hz / 1e6:g} MHz")
    best = None
    for divr in range(16):
        fpfd = fin_hz / (divr + 1)
        if not 10e6 <= fpfd <= 133e6:
            continue
        for divf in range(128):
            fvco = fpfd * (divf + 1)
            if not 533e6 <= fvco <= 1066e6:
                continue
            for divq in range(1, 7):
                fout = fvco / (1 << divq)
                if best is None or abs(fout - fout_hz) < abs(best.fout_hz - fout_hz):
                    filt = next((i for i, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), 1)
                                 if fpfd < lim), 6)
                    best = PLLParams(fin_hz, fout, fvco, divr + 1, divf + 1, 1 << divq, filt)
    if best is None:
        raise BoardError(f"no iCE40 PLL setting for {fin_hz / 1e6:g} -> {fout_hz / 1e6:g} MHz")
    return best


def ecp5_pll(fin_hz: float, fout_hz: float) -> PLLParams:
    """Dividers of an ECP5 ``EHXPLLL`` (CLKOP fed back) closest to ``fout_hz``.

    Same search as prjtrellis' ``ecppll`` (PFD 3.125..400 MHz, VCO 400..800 MHz, ties broken by
    the VCO nearest 600 MHz). Raises :class:`BoardError` when out of range.
    """
    if not 8e6 <= fin_hz <= 400e6:
        raise BoardError(f"ECP5 PLL input must be 8..400 MHz, not {fin_hz / 1e6:g} MHz")
    if not 3.125e6 <= fout_hz <= 400e6:
        raise BoardError(f"ECP5 PLL output must be 3.125..400 MHz, not {fout_hz / 1e6:g} MHz")
    best = None
    for in_div in range(1, 129):
        fpfd = fin_hz / in_div
        if not 3.125e6 <= fpfd <= 400e6:
            continue
        for fb_div in range(1, 81):
            for out_div in range(1, 129):
                fvco = fpfd * fb_div * out_div
                if not 400e6 <= fvco <= 800e6:
                    continue
                fout = fpfd * fb_div
                key = (round(abs(fout - fout_hz), 3), abs(fvco - 600e6))
                if best is None or key < best[0]:
                    best = (key, PLLParams(fin_hz, fout, fvco, in_div, fb_div, out_div))
    if best is None:
        raise BoardError(f"no ECP5 PLL setting for {fin_hz / 1e6:g} -> {fout_hz / 1e6:g} MHz")
    return best[1]


# --------------------------------------------------------------------------------------------
# Boards

@dataclass(frozen=True)
class Board:
    """One supported board: its platform, engine spec, clocks, baud and tool options.

    ``spi`` maps ``cs_n/clk/copi/cipo`` to connector pins on ``spi_conn``.
    """
    name: str
    family: str                    #: "ice40" or "ecp5"
    platform_name: str             #: class name in amaranth_boards
    platform_module: str
    osc: str                       #: oscillator resource name
    sync_hz: float                 #: engine clock target
    baud: int
    spec: EngineSpec
    spi_conn: tuple = ()
    spi: dict = field(default_factory=dict)
    leds: int = 2                  #: LEDs the top drives (of the platform's ``led`` resources)
    synth_opts: str = ""
    programmer: tuple = ()         #: command (without the bitstream) that programs the board
    bitstream_ext: str = "bin"
    #: the link (UART/SPI, command decoder) runs at the engine clock / ``link_div``: 1, the
    #: engine's clock; 2, a clock of its own at half (iCE40 only: the PLL's ``GENCLK_HALF``)
    link_div: int = 1
    #: nextpnr's placement seed for this board's product build (the tools are deterministic:
    #: a seed gives the same placement on any machine)
    seed: int = 1

    def __post_init__(self):
        if self.link_div not in (1, 2) or (self.link_div == 2 and self.family != "ice40"):
            raise BoardError(f"{self.name}: link_div must be 1, or 2 on an iCE40, "
                             f"not {self.link_div!r}")

    def platform(self):
        """A fresh amaranth-boards platform with the SPI resource added."""
        import importlib
        cls = getattr(importlib.import_module(self.platform_module), self.platform_name)
        platform = cls()
        if self.spi:
            from amaranth_boards.resources import SPIResource
            platform.add_resources([SPIResource("spi", 0, role="peripheral",
                                                conn=tuple(self.spi_conn), **self.spi,
                                                attrs=self._io_attrs())])
        return platform

    def _io_attrs(self):
        from amaranth.build import Attrs
        return Attrs(IO_STANDARD="SB_LVCMOS") if self.family == "ice40" else \
            Attrs(IO_TYPE="LVCMOS33")

    def pll(self) -> PLLParams:
        osc_hz = {"ice40": 12e6, "ecp5": 25e6}[self.family]
        return (ice40_pll if self.family == "ice40" else ecp5_pll)(osc_hz, self.sync_hz)

    @property
    def clk_hz(self) -> float:
        """The engine clock the PLL actually makes."""
        return self.pll().fout_hz

    @property
    def link_hz(self) -> float:
        """The link's clock (the UART's bit timing and the link's watchdog count it)."""
        return self.clk_hz / self.link_div


def load_board_extras(path=None) -> dict:
    """The per-board extras from ``deconvsr/constraints/boards.toml`` (or ``path``)."""
    path = Path(path) if path else CONSTRAINTS_DIR / "boards.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BoardError(f"board constraints file {path} is missing") from None
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"board constraints file {path}: {e}") from None
    for name, entry in data.items():
        for key in ("sync_mhz", "baud"):
            if not isinstance(entry.get(key), (int, float)) or entry[key] <= 0:
                raise BoardError(f"{path}: [{name}] {key} must be a positive number, "
                                 f"not {entry.get(key)!r}")
        if not isinstance(entry.get("seed", 1), int) or entry.get("seed", 1) < 1:
            raise BoardError(f"{path}: [{name}] seed must be a positive integer, "
                             f"not {entry['seed']!r}")
        if entry.get("link_div", 1) not in (1, 2):
            raise BoardError(f"{path}: [{name}] link_div must be 1 or 2, "
                             f"not {entry['link_div']!r}")
        spi = entry.get("spi", {})
        missing = {"conn", "cs_n", "clk", "copi", "cipo"} - set(spi)
        if spi and missing:
            raise BoardError(f"{path}: [{name}.spi] lacks {', '.join(sorted(missing))}")
    return data


def _make_boards() -> dict[str, Board]:
    extras = load_board_extras()
    common = {
        "icebreaker": dict(family="ice40", platform_name="ICEBreakerPlatform",
                           platform_module="amaranth_boards.icebreaker", osc="clk12", leds=2,
                           # (no -dsp: its ice40_dsp pass rewrites instantiated SB_MAC16s,
                           # DualMul8's 8x8 pairs, into combinational 16x16 multipliers)
                           synth_opts="", programmer=("iceprog",), bitstream_ext="bin"),
        "ulx3s-85f": dict(family="ecp5", platform_name="ULX3S_85F_Platform",
                          platform_module="amaranth_boards.ulx3s", osc="clk25", leds=8,
                          programmer=("openFPGALoader", "-b", "ulx3s"), bitstream_ext="bit"),
    }
    boards = {}
    for name, kw in common.items():
        if name not in extras:
            raise BoardError(f"deconvsr/constraints/boards.toml has no [{name}] section")
        ex = extras[name]
        spi = dict(ex.get("spi", {}))
        conn = tuple(spi.pop("conn", ()))
        if conn:
            conn = (conn[0], int(conn[1]))
        boards[name] = Board(name=name, sync_hz=float(ex["sync_mhz"]) * 1e6,
                             baud=int(ex["baud"]), spec=SPECS[name], spi_conn=conn, spi=spi,
                             link_div=int(ex.get("link_div", 1)), seed=int(ex.get("seed", 1)),
                             **kw)
    return boards


BOARDS: dict[str, Board] = _make_boards()


# --------------------------------------------------------------------------------------------
# Cores

class LoopbackCore(wiring.Component):
    """Stand-in core for board bring-up: echoes the UART and the SPI.

    The board-facing members of the SoC (:mod:`deconvsr.hw.soc`): ``rx``/``tx`` (idle high),
    ``sck``/``copi``/``cipo``/``cs_n`` (SPI mode 0), ``idle``. ``tx`` is ``rx`` through a
    2-flop synchroniser and a register; ``cipo`` is ``copi`` as sampled at the last rising
    ``sck`` edge while selected (a 1-bit SPI echo).
    """
    rx: In(1, init=1)
    tx: Out(1, init=1)
    sck: In(1)
    copi: In(1)
    cipo: Out(1)
    cs_n: In(1, init=1)
    idle: Out(1)

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)
        m.d.sync += self.tx.eq(rx)
        copi, sck, cs_n = Signal(), Signal(), Signal(init=1)
        m.submodules.spi_sync = FFSynchronizer(
            Cat(self.copi, self.sck, self.cs_n), Cat(copi, sck, cs_n), init=0b100)
        sck_q = Signal()
        m.d.sync += sck_q.eq(sck)
        with m.If(~cs_n & sck & ~sck_q):
            m.d.sync += self.cipo.eq(copi)
        m.d.comb += self.idle.eq(rx & cs_n)
        return m


CORES = ("engine", "twin", "loopback")
DEFAULT_CORE = "engine"


def make_core(board: Board, *, link: str = "uart", core: str = DEFAULT_CORE):
    """The core a board top wraps: the SoC (``deconvsr.hw.soc``) with the real engine
    (``"engine"``) or its behavioural twin (``"twin"``), or the :class:`LoopbackCore`.

    Raises :class:`BoardError` for an unknown link/core or when the SoC is not available.
    """
    if link not in ("uart", "spi"):
        raise BoardError(f"link must be 'uart' or 'spi', not {link!r}")
    if core not in CORES:
        raise BoardError(f"core must be one of {', '.join(CORES)}, not {core!r}")
    if core == "loopback":
        return LoopbackCore()
    try:
        from .soc import SpiSoC, UartSoC
    except ImportError as e:
        raise BoardError(f"the SoC is not available ({e}); use core 'loopback'") from None
    kw = dict(engine=core, clk_hz=int(board.link_hz),
              **({"link_clock": "own"} if board.link_div != 1 else {}))
    if link == "uart":
        return UartSoC(board.spec, baud=board.baud, **kw)
    return SpiSoC(board.spec, **kw)


# --------------------------------------------------------------------------------------------
# The board top

class BoardTop(Elaboratable):
    """PLL, reset, pins and LEDs around ``core``: a component, or a name for
    :func:`make_core` (``"engine"``, ``"twin"``, ``"loopback"``; default ``"engine"``).

    LEDs: 0 heartbeat (~1.5 Hz from the PLL clock: the PLL runs and locked), 1 link activity
    (stretched ~20 ms per edge on rx or SPI clock); on boards with more LEDs, the core's
    ``status`` bits follow.
    """

    def __new__(cls, board: Board, core=None, *, link: str = "uart", **kwargs):
        # Validate before the object exists, so a refused top is not reported as unused.
        if not isinstance(board, Board):
            raise TypeError(f"board must be a Board, not {board!r}")
        if link not in ("uart", "spi"):
            raise BoardError(f"link must be 'uart' or 'spi', not {link!r}")
        if isinstance(core, str) and core not in CORES:
            raise BoardError(f"core must be one of {', '.join(CORES)}, not {core!r}")
        return super().__new__(cls, **kwargs)

    def __init__(self, board: Board, core=None, *, link: str = "uart"):
        self.board = board
        self.link = link
        if core is None or isinstance(core, str):
            core = make_core(board, link=link, core=core or DEFAULT_CORE)
        self.core = core

    # Clocking -------------------------------------------------------------------------------
    def _pll_ice40(self, m, platform, clk, locked, link_clk=None):
        p = self.board.pll()
        osc = platform.request(self.board.osc, dir="-")
        common = dict(
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=p.ref_div - 1, p_DIVF=p.fb_div - 1, p_DIVQ=int(math.log2(p.out_div)),
            p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=osc.io,
            i_RESETB=1, i_BYPASS=0,
            o_LOCK=locked)
        if link_clk is None:
            m.submodules.pll = Instance("SB_PLL40_PAD", **common, o_PLLOUTGLOBAL=clk)
        else:
            # two global outputs: A the engine clock, B the same halved (in phase with A)
            m.submodules.pll = Instance(
                "SB_PLL40_2F_PAD", **common,
                p_PLLOUT_SELECT_PORTA="GENCLK", p_PLLOUT_SELECT_PORTB="GENCLK_HALF",
                o_PLLOUTGLOBALA=clk, o_PLLOUTGLOBALB=link_clk)

    def _pll_ecp5(self, m, platform, clk, locked):
        p = self.board.pll()
        m.submodules.osc_buf = osc = io.Buffer("i", platform.request(self.board.osc, dir="-"))
        clkop = clk
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.fin_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.fout_hz / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=p.ref_div, p_CLKFB_DIV=p.fb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.out_div,
            p_CLKOP_CPHASE=p.out_div - 1, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=osc.i, i_CLKFB=clkop, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clkop, o_LOCK=locked)

    def elaborate(self, platform):
        # The PLL clock drives one domain, ``sync``, for link and engine alike: a single clock
        # keeps the core portable and the timing report to one number per board. Reset is held
        # while the PLL is unlocked and for 2**10 clocks after (iCE40 BRAM needs a few us after
        # configuration before reads return data).
        m = Module()
        board = self.board
        m.domains.sync = ClockDomain("sync")
        locked = Signal()
        clk = Signal(name="pll_clk")
        if platform is None:
            raise BoardError("BoardTop needs a platform (use the core for simulation)")
        link_clk = None
        if board.link_div != 1:
            link_clk = Signal(name="pll_link_clk")
            m.domains.link = ClockDomain("link")
            m.d.comb += ClockSignal("link").eq(link_clk)
        if board.family == "ice40":
            self._pll_ice40(m, platform, clk, locked, link_clk)
        else:
            self._pll_ecp5(m, platform, clk, locked)
        # No clock constraint on ``clk``: nextpnr derives the PLL output's frequency from the
        # dividers and the oscillator's constraint (synthesis renames the net anyway).
        m.d.comb += ClockSignal("sync").eq(clk)

        m.domains.por = ClockDomain("por", local=True)
        m.d.comb += ClockSignal("por").eq(clk)
        m.submodules.lock_sync = ResetSynchronizer(~locked, domain="por")
        por_done = Signal()
        if board.family == "ice40":
            # (counting to its top bit: the enable is that bit, not a 10-bit compare)
            por_count = Signal(11)
            with m.If(~por_count[-1]):
                m.d.por += por_count.eq(por_count + 1)
            m.d.comb += por_done.eq(por_count[-1])
        else:
            por_count = Signal(10)
            with m.If(por_count == (1 << len(por_count)) - 1):
                m.d.por += por_done.eq(1)
            with m.Else():
                m.d.por += por_count.eq(por_count + 1)
        # The synchroniser (four stages) drives a local domain; the sync domain's reset is
        # one plain register more, whose only input is the synchroniser's: the placer puts
        # it among the ~800 registers it resets, not beside the synchroniser (whose chain
        # nextpnr placed in a corner of the ECP5-85F, 5 + 9 ns from the registers).
        m.domains.rsync = ClockDomain("rsync", local=True)
        m.d.comb += ClockSignal("rsync").eq(clk)
        m.submodules.rst_sync = ResetSynchronizer(~por_done, domain="rsync", stages=4)
        rst_q = Signal(init=1, name="rst_q")
        m.d.por += rst_q.eq(ResetSignal("rsync"))
        if board.family == "ecp5":
            # ECP5: the reset on a primary clock network (a DCCA), as the clock is: its
            # ~800 synchronous-reset loads spread over the die, and from one register through
            # the general routing the farthest took 10-11 ns (builds AZ, BI, BJ).
            rst_glb = Signal(name="rst_glb")
            m.submodules.rst_dcc = Instance("DCCA", i_CLKI=rst_q, i_CE=1, o_CLKO=rst_glb)
            m.d.comb += ResetSignal("sync").eq(rst_glb)
        else:
            m.d.comb += ResetSignal("sync").eq(rst_q)
        if link_clk is not None:
            # the link's reset: the power-on reset, synchronised to the link's clock
            m.submodules.link_rst_sync = ResetSynchronizer(~por_done, domain="link")

        m.submodules.core = core = self.core
        members = core.signature.members
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        if "rx" in members:
            m.d.comb += [core.rx.eq(uart_rx.i), uart_tx.o.eq(core.tx)]
        else:
            m.d.comb += uart_tx.o.eq(1)                 # idle line
        link_clk = 0
        if board.spi:
            spi = platform.request("spi", 0, dir="-")
            bufs = {}
            for sub in ("cs", "clk", "copi"):
                bufs[sub] = m.submodules[f"spi_{sub}"] = io.Buffer("i", getattr(spi, sub))
            m.submodules.spi_cipo = cipo = io.Buffer("o", spi.cipo)
            link_clk = bufs["clk"].i
            m.d.comb += cipo.oe.eq(bufs["cs"].i)        # drive CIPO only while selected
            if "sck" in members:
                # the resource's cs is active high (PinsN); the core's cs_n is active low
                m.d.comb += [core.cs_n.eq(~bufs["cs"].i), core.sck.eq(bufs["clk"].i),
                             core.copi.eq(bufs["copi"].i), cipo.o.eq(core.cipo)]
        # The core's idle/waiting under fixed names: the simulated board test
        # (``deconvsr.sim.board_top``) paces simulated time by them. No pin, no logic.
        core_idle, core_waiting = Signal(name="core_idle"), Signal(name="core_waiting")
        if "idle" in members:
            m.d.comb += core_idle.eq(core.idle)
        if "waiting" in members:
            m.d.comb += core_waiting.eq(core.waiting)
        status = [~core.idle] if "idle" in members else []
        status += [core.waiting] if "waiting" in members else []

        # LEDs. A free-running counter (no compare: only its carry chain limits Fmax) gives the
        # heartbeat and a ~5 ms tick; link activity reloads a 3-bit stretch counter.
        beat_bits = max(1, int(math.log2(board.clk_hz)))       # MSB toggles every ~1 s
        tick_bit = max(1, int(math.log2(board.clk_hz / 200)))  # ~200 Hz
        beat = Signal(beat_bits)
        m.d.sync += beat.eq(beat + 1)
        beat_led = beat[-1]
        tick_q = Signal()
        tick = Signal()
        m.d.sync += tick_q.eq(beat[tick_bit])
        m.d.comb += tick.eq(beat[tick_bit] & ~tick_q)
        act = Signal(3)
        line = Signal(2, init=1)
        line_q = Signal(2, init=1)
        m.submodules.act_sync = FFSynchronizer(Cat(uart_rx.i, link_clk), line, init=1)
        m.d.sync += line_q.eq(line)
        with m.If(line != line_q):
            m.d.sync += act.eq(4)
        with m.Elif(tick & (act != 0)):
            m.d.sync += act.eq(act - 1)
        led_bits = [beat_led, act != 0, *status]
        for i in range(board.leds):
            m.submodules[f"led_{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            # (registered: a register whose only load is the pad; the status bits come from
            # logic anywhere in the core)
            led_q = Signal(name=f"led_q{i}")
            m.d.sync += led_q.eq(led_bits[i] if i < len(led_bits) else 0)
            m.d.comb += led.o.eq(led_q)
        return m
