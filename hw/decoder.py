"""The command decoder: executes link requests (:class:`deconvsr.protocol.Opcode`) on the engine
host bus and produces exactly one reply per request."""

from amaranth import Module, Signal, Cat, Const, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..bus import BusSignature, CtrlReg, Space
from ..protocol import LinkInfo, LinkStats, Opcode, ReplyHeader, Status
from .framing import RxEvent, RxKind

__all__ = ["Decoder", "LINK_KIND_STREAM", "LINK_KIND_UART", "LINK_KIND_SPI"]

LINK_KIND_STREAM, LINK_KIND_UART, LINK_KIND_SPI = 0, 1, 2


class Decoder(wiring.Component):
    """Request events in (``rx``, from :class:`~deconvsr.hw.framing.Deframer`), replies out
    (``tx_hdr`` + ``tx_data`` to :class:`~deconvsr.hw.framing.Framer`), bus initiator (``bus``).

    * READ and VERIFY keep up to ``max_outstanding`` bus reads in flight into a FIFO, so the
      bus response stream is never back-pressured; READ streams one byte per cycle when the
      reply path is ready.
    * WRITE forwards each payload byte as a bus write as it arrives (the header CRC has already
      been checked); a payload CRC error is reported after the fact and the host rewrites.
    * RUN and RESET remember the tag they executed; a request with the same opcode and tag
      (a retry whose reply was lost) is acknowledged without acting. IDENTIFY forgets it
      (a new host session starts with IDENTIFY).
    * WAIT polls the engine status every :data:`protocol.WAIT_UNIT` cycles, at most ``addr``
      times, so no request can keep the decoder busy forever.
    * ``overrun`` (a pulse from the receiver) counts lost bytes in :class:`LinkStats`.
    * ``idle``: waiting for a request with nothing in progress.
    """

    rx: In(stream.Signature(RxEvent))
    tx_hdr: Out(stream.Signature(ReplyHeader))
    tx_data: Out(stream.Signature(8))
    bus: In(BusSignature())   # flipped: the link is the initiator (cmd out, rsp in)
    overrun: In(1)
    idle: Out(1)

    def __init__(self, *, kind: int = LINK_KIND_STREAM, clk_hz: int = 48_000_000, baud: int = 0,
                 max_outstanding: int = 4):
        if kind not in protocol.LINK_KINDS:
            raise ValueError(f"kind must be one of {sorted(protocol.LINK_KINDS)}, not {kind!r}")
        if not isinstance(clk_hz, int) or not 0 < clk_hz < 1 << 32:
            raise ValueError(f"clk_hz must be an integer in 1..{(1 << 32) - 1}, not {clk_hz!r}")
        if not isinstance(baud, int) or not 0 <= baud < 1 << 32:
            raise ValueError(f"baud must be an integer in 0..{(1 << 32) - 1}, not {baud!r}")
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"max_outstanding must be a positive integer, not {max_outstanding!r}")
        self._info = protocol.pack(LinkInfo, magic=protocol.LINK_MAGIC,
                                   version=protocol.PROTOCOL_VERSION, kind=kind, clk_hz=clk_hz,
                                   baud=baud)
        self._depth = max_outstanding
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        info_bytes = len(self._info)
        stats_bytes = LinkStats.as_shape().size // 8
        small_bits = 8 * max(info_bytes, stats_bytes, protocol.CRC_BYTES)

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self._depth)
        m.submodules.vcrc = vcrc = protocol.CRC.create()

        hdr = Signal(protocol.RequestHeader)
        status = Signal(8)             # a Status value
        reply_tag = Signal(8)
        reply_op = Signal(8)
        reply_len = Signal(16)
        small = Signal(small_bits)     # short reply payloads, sent LSB byte first
        addr = Signal(24)
        to_issue = Signal(16)          # bus reads still to issue
        to_take = Signal(16)           # responses still to consume
        inflight = Signal(range(self._depth + 1))
        polls = Signal(24)
        nap = Signal(range(protocol.WAIT_UNIT))
        writable = Signal()
        last_tag = Signal(8)
        last_op = Signal(8)
        last_valid = Signal()
        counters = Signal(LinkStats)
        first_verify = Signal()

        cmd, rsp = self.bus.cmd, self.bus.rsp
        ev = self.rx.payload

        # Bus responses always have room in the FIFO (reads in flight <= its depth).
        m.d.comb += [fifo.w_data.eq(rsp.payload), fifo.w_en.eq(rsp.valid),
                     rsp.ready.eq(fifo.w_rdy)]
        issued = cmd.valid & cmd.ready & ~cmd.payload.write
        popped = fifo.r_en & fifo.r_rdy
        m.d.sync += inflight.eq(inflight + issued - popped)

        def issue_reads():
            m.d.comb += [cmd.valid.eq((to_issue != 0) & (inflight < self._depth)),
                         cmd.payload.space.as_value().eq(hdr.space[:4]),
                         cmd.payload.addr.eq(addr), cmd.payload.write.eq(0)]
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += [to_issue.eq(to_issue - 1), addr.eq(addr + 1)]

        def reply(st, length=0, *, tag=None, op=None):
            if isinstance(st, Status):
                st = st.value
            elif hasattr(st, "as_value"):   # an EnumView from an event
                st = st.as_value()
            m.d.sync += [status.eq(st), reply_len.eq(length),
                         reply_tag.eq(hdr.tag if tag is None else tag),
                         reply_op.eq(hdr.opcode.as_value() if op is None else op)]
            m.next = "SEND_HEADER"

        def bump(field):
            value = getattr(counters, field)
            with m.If(value != 0xFFFF):
                m.d.sync += value.eq(value + 1)

        with m.If(self.overrun):
            bump("overruns")

        m.d.comb += self.tx_hdr.payload.status.as_value().eq(status)
        m.d.comb += [self.tx_hdr.payload.tag.eq(reply_tag),
                     self.tx_hdr.payload.opcode.as_value().eq(reply_op),
                     self.tx_hdr.payload.length.eq(reply_len)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.rx.ready.eq(1), self.idle.eq(~self.rx.valid)]
                with m.If(self.rx.valid):
                    with m.If(ev.kind == RxKind.HEADER):
                        m.d.sync += [hdr.eq(ev.header), addr.eq(ev.header.addr),
                                     to_issue.eq(ev.header.length),
                                     to_take.eq(ev.header.length)]
                        m.next = "DISPATCH"
                    with m.Elif(ev.kind == RxKind.ERROR):
                        reply(ev.status, tag=ev.header.tag, op=ev.header.opcode.as_value())

            with m.State("DISPATCH"):
                with m.Switch(hdr.opcode):
                    with m.Case(Opcode.IDENTIFY):
                        m.d.sync += [small.eq(int.from_bytes(self._info, "little")),
                                     last_valid.eq(0)]
                        reply(Status.OK, info_bytes)
                    with m.Case(Opcode.READ):
                        reply(Status.OK, hdr.length)
                    with m.Case(Opcode.WRITE):
                        ok = Const(0, 1)
                        for s in protocol.WRITABLE_SPACES:
                            ok = ok | (hdr.space == s)
                        m.d.sync += writable.eq(ok)
                        with m.If(hdr.length == 0):
                            reply(Status.OK)
                        with m.Else():
                            m.next = "WRITE"
                    with m.Case(Opcode.VERIFY):
                        m.d.sync += first_verify.eq(1)
                        m.next = "VERIFY"
                    with m.Case(Opcode.RUN, Opcode.RESET):
                        with m.If(last_valid & (last_tag == hdr.tag) &
                                  (last_op == hdr.opcode.as_value())):
                            reply(Status.OK)
                        with m.Else():
                            m.next = "CTRL_WRITE"
                    with m.Case(Opcode.WAIT):
                        m.d.sync += [polls.eq(hdr.addr), to_issue.eq(1), to_take.eq(1),
                                     addr.eq(CtrlReg.START_STATUS), hdr.space.eq(Space.CTRL)]
                        m.next = "WAIT_READ"
                    with m.Case(Opcode.STATS):
                        m.d.sync += small.eq(counters.as_value())
                        reply(Status.OK, stats_bytes)
                    with m.Default():
                        reply(Status.BAD_OPCODE)

            with m.State("WRITE"):
                is_data = ev.kind == RxKind.DATA
                m.d.comb += [cmd.payload.space.as_value().eq(hdr.space[:4]),
                             cmd.payload.addr.eq(addr), cmd.payload.write.eq(1),
                             cmd.payload.data.eq(ev.data),
                             cmd.valid.eq(self.rx.valid & is_data & writable),
                             self.rx.ready.eq(~(is_data & writable) | cmd.ready)]
                with m.If(self.rx.valid & self.rx.ready):
                    with m.If(is_data):
                        m.d.sync += addr.eq(addr + 1)
                    with m.Elif(ev.kind == RxKind.END):
                        with m.If(writable):
                            reply(Status.OK)
                        with m.Else():
                            reply(Status.BAD_SPACE)
                    with m.Elif(ev.kind == RxKind.ERROR):
                        reply(ev.status)

            with m.State("CTRL_WRITE"):
                is_run = hdr.opcode == Opcode.RUN
                m.d.comb += [cmd.valid.eq(1), cmd.payload.space.eq(Space.CTRL),
                             cmd.payload.write.eq(1),
                             cmd.payload.addr.eq(Cat(~is_run, Const(0, 23))),
                             cmd.payload.data.eq(hdr.length[:8])]
                with m.If(cmd.ready):
                    m.d.sync += [last_valid.eq(1), last_tag.eq(hdr.tag),
                                 last_op.eq(hdr.opcode.as_value())]
                    with m.If(~is_run):
                        m.d.sync += counters.eq(0)
                    reply(Status.OK)

            with m.State("VERIFY"):
                issue_reads()
                m.d.comb += [fifo.r_en.eq(1), vcrc.valid.eq(fifo.r_rdy),
                             vcrc.data.eq(fifo.r_data), vcrc.start.eq(first_verify)]
                with m.If(fifo.r_rdy):
                    m.d.sync += [to_take.eq(to_take - 1), first_verify.eq(0)]
                with m.If(to_take == 0):
                    m.next = "VERIFY_DONE"
            with m.State("VERIFY_DONE"):
                # The CRC register is one cycle behind its input; it has settled here. An empty
                # range leaves it at its initial value, as the software model gives.
                with m.If(first_verify):
                    m.d.sync += small.eq(int.from_bytes(protocol.CRC.compute(b"")
                                                        .to_bytes(2, "big"), "little"))
                with m.Else():
                    m.d.sync += small.eq(Cat(vcrc.crc[8:], vcrc.crc[:8]))
                reply(Status.OK, protocol.CRC_BYTES)

            with m.State("WAIT_READ"):
                issue_reads()
                m.d.comb += fifo.r_en.eq(1)
                with m.If(fifo.r_rdy):
                    with m.If(fifo.r_data[0] & (polls != 0)):   # busy: nap, then poll again
                        m.d.sync += [polls.eq(polls - 1), nap.eq(protocol.WAIT_UNIT - 1)]
                        m.next = "WAIT_NAP"
                    with m.Else():
                        m.d.sync += small.eq(fifo.r_data)
                        reply(Mux(fifo.r_data[0], Status.TIMEOUT.value, Status.OK.value), 1)
            with m.State("WAIT_NAP"):
                m.d.sync += nap.eq(nap - 1)
                with m.If(nap == 0):
                    m.d.sync += [to_issue.eq(1), to_take.eq(1), addr.eq(CtrlReg.START_STATUS)]
                    m.next = "WAIT_READ"

            with m.State("SEND_HEADER"):
                m.d.comb += self.tx_hdr.valid.eq(1)
                with m.If(self.tx_hdr.ready):
                    with m.Switch(status):
                        with m.Case(Status.OK):
                            bump("frames")
                        with m.Case(Status.BAD_CRC):
                            bump("crc_errors")
                        with m.Case(Status.TIMEOUT):
                            with m.If(reply_op != Opcode.WAIT.value):
                                bump("framing_errors")
                        with m.Default():
                            bump("framing_errors")
                    with m.If(reply_len == 0):
                        m.next = "IDLE"
                    with m.Elif((status == Status.OK.value) & (hdr.opcode == Opcode.READ) &
                                (reply_op == Opcode.READ.value)):
                        m.next = "READ"
                    with m.Else():
                        m.next = "SMALL"

            with m.State("SMALL"):
                m.d.comb += [self.tx_data.valid.eq(1), self.tx_data.payload.eq(small[:8])]
                with m.If(self.tx_data.ready):
                    m.d.sync += [small.eq(small >> 8), reply_len.eq(reply_len - 1)]
                    with m.If(reply_len == 1):
                        m.next = "IDLE"

            with m.State("READ"):
                issue_reads()
                m.d.comb += [self.tx_data.valid.eq(fifo.r_rdy),
                             self.tx_data.payload.eq(fifo.r_data),
                             fifo.r_en.eq(self.tx_data.ready)]
                with m.If(popped):
                    m.d.sync += to_take.eq(to_take - 1)
                    with m.If(to_take == 1):
                        m.next = "IDLE"
        return m

