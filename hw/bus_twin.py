"""A behavioural twin of the engine's host bus (:class:`deconvsr.bus.BusSignature`): memories and
registers only, no arithmetic. It lets the link, the driver and the simulated device be built
and tested fast and before (or without) the real engine.

* ``ID`` returns ``spec.id_bytes()``; ``DESC``/``WEIGHT``/``BIAS``/``ACT``/``OUT``/``IN`` are RAMs
  of ``ram_bytes`` bytes each (reads beyond return 0, writes beyond are ignored), reachable
  while "running" too;
* ``CTRL[0]`` write ``n`` starts a "run": busy for ``busy_cycles * max(n, 1)`` cycles, then
  done; ``CTRL[0]`` read is the status; ``CTRL[1]`` write resets status and counters;
  ``CTRL[2]`` holds the last START byte (read back at the same address);
* ``COUNT`` holds two 32-bit little-endian counters: busy cycles (offset 0) and runs (offset 4).

One read in flight: a read command is taken when the response register is free or being
emptied, and its byte is offered on ``rsp`` the next cycle.
"""

from amaranth import Module, Signal, Cat, Const
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from ..bus import BusSignature, Space, Status as BusStatus
from ..spec import EngineSpec

__all__ = ["BusTwin"]

N_COUNTERS = 2


class BusTwin(wiring.Component):
    bus: Out(BusSignature())  # the responder: cmd in, rsp out (as deconvsr.bus documents)

    def __init__(self, spec: EngineSpec, *, ram_bytes: int = 1024, busy_cycles: int = 64):
        if not isinstance(spec, EngineSpec):
            raise TypeError(f"spec must be an EngineSpec, not {spec!r}")
        if not isinstance(ram_bytes, int) or ram_bytes < 64 or ram_bytes & (ram_bytes - 1):
            raise ValueError(f"ram_bytes must be a power of two >= 64, not {ram_bytes!r}")
        if not isinstance(busy_cycles, int) or busy_cycles < 1:
            raise ValueError(f"busy_cycles must be a positive integer, not {busy_cycles!r}")
        self._spec = spec
        self._ram_bytes = ram_bytes
        self._busy_cycles = busy_cycles
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        abits = (self._ram_bytes - 1).bit_length()
        id_bytes = self._spec.id_bytes()
        if len(id_bytes) > self._ram_bytes:
            raise ValueError(f"ram_bytes {self._ram_bytes} cannot hold the {len(id_bytes)}-byte ID")
        # One memory for all spaces, indexed by (space, addr); the ID space is its ROM part.
        n_spaces = max(sp.value for sp in Space) + 1
        init = list(id_bytes) + [0] * (n_spaces * self._ram_bytes - len(id_bytes))
        m.submodules.mem = mem = Memory(shape=8, depth=n_spaces * self._ram_bytes, init=init)
        wr, rd = mem.write_port(), mem.read_port()

        cmd, rsp = self.bus.cmd, self.bus.rsp
        c = cmd.payload
        space = c.space.as_value()
        in_range = (c.addr >> abits) == 0
        take = cmd.valid & cmd.ready
        m.d.comb += cmd.ready.eq(~rsp.valid | rsp.ready)

        status = Signal(3)
        remaining = Signal(32)
        counters = [Signal(32, name=f"counter{i}") for i in range(N_COUNTERS)]
        busy_cycles, runs = counters

        ram_space = (space == Space.DESC) | (space == Space.WEIGHT) | (space == Space.BIAS) | \
                    (space == Space.ACT) | (space == Space.OUT) | (space == Space.IN)
        m.d.comb += [
            wr.addr.eq(Cat(c.addr[:abits], space)),
            wr.data.eq(c.data),
            wr.en.eq(take & c.write & ram_space & in_range),
            rd.addr.eq(Cat(c.addr[:abits], space)),
            rd.en.eq(take & ~c.write),
        ]

        # The response is chosen one cycle later, when the memory's data is out.
        r_space = Signal(4)
        r_addr = Signal(3)
        first = Signal(8)           # CTRL[2]: the last START byte
        r_in_range = Signal()
        r_count_ok = Signal()
        with m.If(rsp.ready):
            m.d.sync += rsp.valid.eq(0)
        with m.If(take & ~c.write):
            m.d.sync += [rsp.valid.eq(1), r_space.eq(space), r_addr.eq(c.addr[:3]),
                         r_in_range.eq(in_range), r_count_ok.eq(c.addr < 4 * N_COUNTERS)]
        count_bytes = Cat(*counters)
        with m.Switch(r_space):
            with m.Case(Space.ID, Space.DESC, Space.WEIGHT, Space.BIAS, Space.ACT, Space.OUT,
                        Space.IN):
                m.d.comb += rsp.payload.eq(rd.data & r_in_range.replicate(8))
            with m.Case(Space.CTRL):
                with m.Switch(r_addr):
                    with m.Case(0):
                        m.d.comb += rsp.payload.eq(Cat(status, Const(0, 5)))
                    with m.Case(2):
                        m.d.comb += rsp.payload.eq(first)
            with m.Case(Space.COUNT):
                m.d.comb += rsp.payload.eq(count_bytes.word_select(r_addr, 8)
                                               & r_count_ok.replicate(8))
            with m.Default():
                m.d.comb += rsp.payload.eq(0)

        with m.If(remaining != 0):
            m.d.sync += [remaining.eq(remaining - 1), busy_cycles.eq(busy_cycles + 1)]
            with m.If(remaining == 1):
                m.d.sync += status.eq(BusStatus.DONE)
        with m.If(take & c.write & (space == Space.CTRL)):
            with m.Switch(c.addr):
                with m.Case(0):
                    n = Signal(4)           # (a streaming START's count: bits 0-3)
                    m.d.comb += n.eq(c.data[:4])
                    m.d.sync += [status.eq(BusStatus.BUSY), runs.eq(runs + 1), first.eq(c.data),
                                 remaining.eq(self._busy_cycles * (n | (n == 0)))]
                with m.Case(1):
                    m.d.sync += [status.eq(0), remaining.eq(0), first.eq(0)] + \
                        [x.eq(0) for x in counters]
        return m
