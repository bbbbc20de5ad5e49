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
    * STEP (a streamed frame's step, :mod:`deconvsr.protocol`): the payload's
      :class:`~deconvsr.protocol.StepHeader` into a register, the rest as IN writes as it
      arrives; once its CRC checked, WAIT's polling (at most ``StepHeader.polls``), the
      start (the header's ``space`` to CTRL START), and a READ-like reply of ``out_len`` OUT bytes, read
      while the engine runs. A repeated STEP (same tag) starts nothing and replies again.
    * ``overrun`` (a pulse from the receiver) counts lost bytes in :class:`LinkStats`.
    * ``idle``: waiting for a request with nothing in progress.
    * ``registered_small``: a short payload's byte (IDENTIFY, STATS, VERIFY, WAIT) from a
      register, one every other cycle (a small FPGA: its table's multiplexer off the reply
      path).
    * ``busy``: a request is being executed or answered: its header (``rx.payload.header``)
      must stay as it is (drive :attr:`Deframer.hold <deconvsr.hw.framing.Deframer>` with it).
    """

    rx: In(stream.Signature(RxEvent))
    tx_hdr: Out(stream.Signature(ReplyHeader))
    tx_data: Out(stream.Signature(8))
    bus: In(BusSignature())   # flipped: the link is the initiator (cmd out, rsp in)
    overrun: In(1)
    idle: Out(1)
    busy: Out(1)

    def __init__(self, *, kind: int = LINK_KIND_STREAM, clk_hz: int = 48_000_000, baud: int = 0,
                 max_outstanding: int = 4, registered_small: bool = False):
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
        self._registered_small = registered_small
        super().__init__()

    def elaborate(self, platform):
        # Area and timing: the request header is the deframer's register (held stable by
        # `busy` -> Deframer.hold), not a copy; the reply header's tag and opcode are that
        # header's; short reply payloads are read at `pos` from one byte table (the IDENTIFY
        # record, the live counters, the VERIFY CRC, the WAIT status byte) instead of being
        # loaded into a wide shift register. The counters are bumped when a reply is finished,
        # so STATS reports the requests before it (the overrun counter, which can change at
        # any cycle, is read from a snapshot taken when STATS starts).
        m = Module()
        info_bytes = len(self._info)
        counters = Signal(LinkStats)
        stats_bytes = len(counters.as_value()) // 8
        pos_info = 0
        pos_stats = pos_info + info_bytes
        pos_crc = pos_stats + stats_bytes
        pos_wait = pos_crc + protocol.CRC_BYTES
        table_bytes = pos_wait + 1

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self._depth)
        m.submodules.vcrc = vcrc = protocol.CRC.create()

        ev = self.rx.payload
        hdr = ev.header                         # stable while `busy`
        status = Signal(range(max(s.value for s in Status) + 1))
        small_len = Signal(range(max(info_bytes, stats_bytes, protocol.CRC_BYTES) + 1))
        read_reply = Signal()                   # the payload is READ data (to_take bytes)
        # STEP: its StepHeader's bytes go straight where they are used (out_len into to_take,
        # polls into polls), except the OUT address, held here (the address register counts
        # the IN writes meanwhile); its START byte is the header's ``space``
        step_out = Signal(16, reset_less=True)
        step_left = Signal(range(protocol.STEP_HEADER_BYTES + 1))   # header bytes to come
        step_go = Signal()                      # STEP: start layers once the engine is idle
        pos = Signal(range(table_bytes))        # next short-payload byte
        space = Signal(len(self.bus.cmd.payload.space.as_value()))
        addr = Signal.like(hdr.addr)
        to_issue = Signal.like(hdr.length)      # bus reads still to issue
        to_take = Signal.like(hdr.length)       # responses still to consume
        issuing = Signal()                      # to_issue != 0, kept as a register
        inflight = Signal(range(self._depth + 1))
        polls = Signal.like(hdr.addr)
        polls_zero = Signal()                   # polls == 0, kept as a register
        nap = Signal(range(protocol.WAIT_UNIT))
        writable = Signal()
        last_tag = Signal.like(hdr.tag)
        last_op = Signal.like(hdr.opcode.as_value())
        last_valid = Signal()
        overruns_snap = Signal.like(counters.overruns)
        wait_status = Signal(8)

        cmd, rsp = self.bus.cmd, self.bus.rsp

        # Bus responses always have room in the FIFO (reads in flight <= its depth).
        m.d.comb += [fifo.w_data.eq(rsp.payload), fifo.w_en.eq(rsp.valid),
                     rsp.ready.eq(fifo.w_rdy)]
        issued = cmd.valid & cmd.ready & ~cmd.payload.write
        popped = fifo.r_en & fifo.r_rdy
        m.d.sync += inflight.eq(inflight + issued - popped)

        # The bus command's payload comes from registers set when the request is dispatched
        # (space, address, direction; the CTRL register of WAIT/RUN/RESET loaded into them),
        # not from a multiplexer on the FSM state: the states only drive ``cmd.valid``.
        cmd_write = Signal()        # WRITE, RUN, RESET
        cmd_ctrl = Signal()         # RUN, RESET: the data byte is the header's length
        cmd_step = Signal()         # STEP's START: the data byte is the header's space
        addr_inc = Signal()         # READ, VERIFY, WRITE: the address steps per command
        m.d.comb += [cmd.payload.space.as_value().eq(space), cmd.payload.addr.eq(addr),
                     cmd.payload.write.eq(cmd_write),
                     cmd.payload.data.eq(Mux(cmd_step, hdr.space,
                                             Mux(cmd_ctrl, hdr.length[:8], ev.data)))]

        def issue_reads():
            m.d.comb += cmd.valid.eq(issuing & (inflight < self._depth))
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += [to_issue.eq(to_issue - 1), issuing.eq(to_issue != 1)]

        def reply(st, length=0, *, at=None):
            if isinstance(st, Status):
                st = st.value
            elif hasattr(st, "as_value"):   # an EnumView from an event
                st = st.as_value()
            m.d.sync += [status.eq(st), small_len.eq(length), read_reply.eq(0)]
            if at is not None:
                m.d.sync += pos.eq(at)
            m.next = "SEND_HEADER"

        def bump(field):
            value = getattr(counters, field)
            with m.If(value != (1 << len(value)) - 1):
                m.d.sync += value.eq(value + 1)

        # (counted a cycle after the receiver flags it: the flag's route and the saturating
        # counter's compare and carry chain do not share a cycle)
        overrun_q = Signal()
        m.d.sync += overrun_q.eq(self.overrun)
        with m.If(overrun_q):
            bump("overruns")

        m.d.comb += [self.tx_hdr.payload.status.as_value().eq(status),
                     self.tx_hdr.payload.tag.eq(hdr.tag),
                     self.tx_hdr.payload.opcode.eq(hdr.opcode),
                     self.tx_hdr.payload.length.eq(Mux(read_reply, to_take, small_len))]

        small_byte = Signal(8)
        small_q = Signal(8, reset_less=True)    # (registered_small: the byte at pos, and
        small_fresh = Signal()                  # whether it is pos's, not the last one's)
        stats = Cat(counters.frames, counters.crc_errors, counters.framing_errors, overruns_snap)
        with m.Switch(pos):
            for i in range(info_bytes):
                with m.Case(pos_info + i):
                    m.d.comb += small_byte.eq(self._info[i])
            for i in range(stats_bytes):
                with m.Case(pos_stats + i):
                    m.d.comb += small_byte.eq(stats[8 * i:8 * i + 8])
            with m.Case(pos_crc):                       # the CRC goes MSB first
                m.d.comb += small_byte.eq(vcrc.crc[8:])
            with m.Case(pos_crc + 1):
                m.d.comb += small_byte.eq(vcrc.crc[:8])
            with m.Case(pos_wait):
                m.d.comb += small_byte.eq(wait_status)

        # Decodes of the header, registered: the header is stable for several cycles before
        # its HEADER event, so they are valid in DISPATCH and keep it off the timing path.
        op_is = {op: Signal(name=f"op_is_{op.name.lower()}") for op in Opcode}
        length_zero = Signal()
        addr_zero = Signal()
        repeat = Signal()       # a RUN/RESET with the tag of the last one executed
        writable_space = Const(0, 1)
        for sp in protocol.WRITABLE_SPACES:
            writable_space = writable_space | (hdr.space == sp)
        m.d.sync += [op_is[op].eq(hdr.opcode == op) for op in Opcode]
        m.d.sync += [length_zero.eq(hdr.length == 0), addr_zero.eq(hdr.addr == 0),
                     writable.eq(writable_space),
                     repeat.eq(last_valid & (last_tag == hdr.tag) &
                               (last_op == hdr.opcode.as_value()))]

        # `busy` is a register (it gates the deframer's input): set when a request leaves IDLE,
        # cleared when FINISH returns to it.
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.rx.ready.eq(1), self.idle.eq(~self.rx.valid)]
                # loaded whatever the event (short enables; the header is stable when its
                # event comes, and so are its registered decodes)
                m.d.sync += [space.eq(hdr.space[:len(space)]), to_issue.eq(hdr.length),
                             issuing.eq(~length_zero), to_take.eq(hdr.length)]
                with m.If(self.rx.valid):
                    with m.If(ev.kind == RxKind.HEADER):
                        m.d.sync += self.busy.eq(1)
                        m.next = "DISPATCH"
                    with m.Elif(ev.kind == RxKind.ERROR):
                        m.d.sync += self.busy.eq(1)
                        reply(ev.status)

            with m.State("DISPATCH"):
                m.d.sync += [cmd_write.eq(op_is[Opcode.WRITE] | op_is[Opcode.RUN] |
                                          op_is[Opcode.RESET]),
                             cmd_ctrl.eq(op_is[Opcode.RUN] | op_is[Opcode.RESET]),
                             addr_inc.eq(op_is[Opcode.READ] | op_is[Opcode.WRITE] |
                                         op_is[Opcode.VERIFY])]
                with m.If(op_is[Opcode.RUN] | op_is[Opcode.RESET] | op_is[Opcode.WAIT]):
                    m.d.sync += [space.eq(Space.CTRL),
                                 addr.eq(Mux(op_is[Opcode.RESET], CtrlReg.RESET,
                                             CtrlReg.START_STATUS))]
                with m.If(op_is[Opcode.IDENTIFY]):
                    m.d.sync += last_valid.eq(0)
                    reply(Status.OK, info_bytes, at=pos_info)
                with m.Elif(op_is[Opcode.READ]):
                    reply(Status.OK)
                    m.d.sync += read_reply.eq(~length_zero)
                with m.Elif(op_is[Opcode.WRITE]):
                    with m.If(length_zero):
                        reply(Status.OK)
                    with m.Else():
                        m.next = "WRITE"
                with m.Elif(op_is[Opcode.VERIFY]):
                    m.d.comb += vcrc.start.eq(1)
                    m.next = "VERIFY"
                with m.Elif(op_is[Opcode.RUN] | op_is[Opcode.RESET]):
                    with m.If(repeat):
                        reply(Status.OK)
                    with m.Else():
                        m.next = "CTRL_WRITE"
                with m.Elif(op_is[Opcode.WAIT]):
                    m.d.sync += [polls.eq(hdr.addr), polls_zero.eq(addr_zero),
                                 to_issue.eq(1), issuing.eq(1)]
                    m.next = "WAIT_READ"
                with m.Elif(op_is[Opcode.STATS]):
                    m.d.sync += overruns_snap.eq(counters.overruns)
                    reply(Status.OK, stats_bytes, at=pos_stats)
                with m.Elif(op_is[Opcode.STEP]):
                    m.d.sync += [space.eq(Space.IN), cmd_write.eq(1), addr_inc.eq(1),
                                 step_left.eq(protocol.STEP_HEADER_BYTES), polls[16:].eq(0)]
                    with m.If(hdr.length < protocol.STEP_HEADER_BYTES):
                        reply(Status.BAD_OPCODE)    # (no room for its header; the payload's
                    with m.Else():                  # events are dropped in hunting)
                        m.next = "STEP_DATA"
                with m.Else():
                    reply(Status.BAD_OPCODE)

            with m.State("WRITE"):
                is_data = ev.kind == RxKind.DATA
                m.d.comb += [cmd.valid.eq(self.rx.valid & is_data & writable),
                             self.rx.ready.eq(~(is_data & writable) | cmd.ready)]
                with m.If(self.rx.valid & self.rx.ready):
                    with m.If(ev.kind == RxKind.END):
                        with m.If(writable):
                            reply(Status.OK)
                        with m.Else():
                            reply(Status.BAD_SPACE)
                    with m.Elif(ev.kind == RxKind.ERROR):
                        reply(ev.status)

            with m.State("STEP_DATA"):
                # the step header's bytes into its register (least significant first), then
                # IN writes as the bytes come; act only once the payload's CRC has checked
                is_data = ev.kind == RxKind.DATA
                in_hdr = step_left != 0
                m.d.comb += [cmd.valid.eq(self.rx.valid & is_data & ~in_hdr),
                             self.rx.ready.eq(~(is_data & ~in_hdr) | cmd.ready)]
                with m.If(self.rx.valid & self.rx.ready):
                    with m.If(is_data & in_hdr):
                        m.d.sync += step_left.eq(step_left - 1)
                        # (StepHeader: out_addr (2 bytes), out_len (2), polls (2))
                        with m.Switch(step_left):
                            with m.Case(6):
                                m.d.sync += step_out[:8].eq(ev.data)
                            with m.Case(5):
                                m.d.sync += step_out[8:].eq(ev.data)
                            with m.Case(4):
                                m.d.sync += to_take[:8].eq(ev.data)
                            with m.Case(3):
                                m.d.sync += to_take[8:].eq(ev.data)
                            with m.Case(2):
                                m.d.sync += polls[:8].eq(ev.data)
                            with m.Case(1):
                                m.d.sync += polls[8:16].eq(ev.data)
                    with m.If(ev.kind == RxKind.END):
                        m.d.sync += [space.eq(Space.CTRL), addr.eq(CtrlReg.START_STATUS),
                                     cmd_write.eq(0), addr_inc.eq(0),
                                     polls_zero.eq(polls == 0),
                                     to_issue.eq(1), issuing.eq(1), step_go.eq(~repeat)]
                        with m.If(repeat):
                            m.next = "STEP_REPLY"
                        with m.Else():
                            m.next = "WAIT_READ"
                    with m.Elif(ev.kind == RxKind.ERROR):
                        reply(ev.status)

            with m.State("STEP_CTRL"):
                m.d.comb += cmd.valid.eq(1)
                with m.If(cmd.ready):
                    m.d.sync += [last_valid.eq(1), last_tag.eq(hdr.tag),
                                 last_op.eq(hdr.opcode.as_value())]
                    m.next = "STEP_REPLY"

            with m.State("STEP_REPLY"):
                # (the reply's reads: OUT from out_addr, out_len bytes, as READ does)
                m.d.sync += [space.eq(Space.OUT), addr.eq(step_out), cmd_write.eq(0),
                             cmd_step.eq(0), addr_inc.eq(1), to_issue.eq(to_take),
                             issuing.eq(to_take != 0)]
                reply(Status.OK)
                m.d.sync += read_reply.eq(to_take != 0)

            with m.State("CTRL_WRITE"):
                m.d.comb += cmd.valid.eq(1)
                with m.If(cmd.ready):
                    m.d.sync += [last_valid.eq(1), last_tag.eq(hdr.tag),
                                 last_op.eq(hdr.opcode.as_value())]
                    with m.If(op_is[Opcode.RESET]):
                        m.d.sync += counters.eq(0)
                    reply(Status.OK)

            with m.State("VERIFY"):
                # The CRC restarted in DISPATCH; an empty range leaves its initial value, as
                # the software model gives. It has settled when `to_take` reaches zero.
                issue_reads()
                m.d.comb += [fifo.r_en.eq(1), vcrc.valid.eq(fifo.r_rdy),
                             vcrc.data.eq(fifo.r_data)]
                with m.If(fifo.r_rdy):
                    m.d.sync += to_take.eq(to_take - 1)
                with m.If(to_take == 0):
                    reply(Status.OK, protocol.CRC_BYTES, at=pos_crc)

            with m.State("WAIT_READ"):
                issue_reads()
                m.d.comb += fifo.r_en.eq(1)
                with m.If(fifo.r_rdy):
                    with m.If(fifo.r_data[0] & ~polls_zero):   # busy: nap, then poll again
                        m.d.sync += [polls.eq(polls - 1), polls_zero.eq(polls == 1),
                                     nap.eq(protocol.WAIT_UNIT - 1)]
                        m.next = "WAIT_NAP"
                    with m.Elif(step_go & ~fifo.r_data[0]):    # STEP: idle, start
                        with m.If(hdr.space[:4] == 0):      # (a count of 0)
                            m.d.sync += [last_valid.eq(1), last_tag.eq(hdr.tag),
                                         last_op.eq(hdr.opcode.as_value())]
                            m.next = "STEP_REPLY"
                        with m.Else():
                            m.d.sync += [space.eq(Space.CTRL), addr.eq(CtrlReg.START_STATUS),
                                         cmd_write.eq(1), cmd_step.eq(1)]
                            m.next = "STEP_CTRL"
                    with m.Elif(step_go):                      # STEP: still busy, no start
                        reply(Status.TIMEOUT)
                    with m.Else():
                        m.d.sync += wait_status.eq(fifo.r_data)
                        reply(Mux(fifo.r_data[0], Status.TIMEOUT.value, Status.OK.value), 1,
                              at=pos_wait)
            with m.State("WAIT_NAP"):
                m.d.sync += nap.eq(nap - 1)
                with m.If(nap == 0):
                    m.d.sync += [to_issue.eq(1), issuing.eq(1)]
                    m.next = "WAIT_READ"

            with m.State("SEND_HEADER"):
                m.d.comb += self.tx_hdr.valid.eq(1)
                with m.If(self.tx_hdr.ready):
                    with m.If(read_reply):
                        m.next = "READ"
                    with m.Elif(small_len != 0):
                        m.next = "SMALL"
                    with m.Else():
                        m.next = "FINISH"

            with m.State("SMALL"):
                if self._registered_small:
                    # (the byte from a register loaded from the table every cycle: a byte
                    # every other cycle, the table's multiplexer off the reply path)
                    m.d.comb += [self.tx_data.valid.eq(small_fresh),
                                 self.tx_data.payload.eq(small_q)]
                    with m.If(self.tx_data.ready & small_fresh):
                        m.d.sync += [pos.eq(pos + 1), small_len.eq(small_len - 1)]
                        with m.If(small_len == 1):
                            m.next = "FINISH"
                else:
                    m.d.comb += [self.tx_data.valid.eq(1), self.tx_data.payload.eq(small_byte)]
                    with m.If(self.tx_data.ready):
                        m.d.sync += [pos.eq(pos + 1), small_len.eq(small_len - 1)]
                        with m.If(small_len == 1):
                            m.next = "FINISH"

            with m.State("READ"):
                issue_reads()
                m.d.comb += [self.tx_data.valid.eq(fifo.r_rdy),
                             self.tx_data.payload.eq(fifo.r_data),
                             fifo.r_en.eq(self.tx_data.ready)]
                with m.If(popped):
                    m.d.sync += to_take.eq(to_take - 1)
                    with m.If(to_take == 1):
                        m.next = "FINISH"

            with m.State("FINISH"):                    # the reply is out: count it
                m.d.sync += step_go.eq(0)
                with m.Switch(status):
                    with m.Case(Status.OK):
                        bump("frames")
                    with m.Case(Status.BAD_CRC):
                        bump("crc_errors")
                    with m.Case(Status.TIMEOUT):
                        with m.If((hdr.opcode != Opcode.WAIT) & (hdr.opcode != Opcode.STEP)):
                            bump("framing_errors")
                    with m.Default():
                        bump("framing_errors")
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"
        if self._registered_small:
            m.d.sync += [small_q.eq(small_byte),
                         small_fresh.eq(~(self.tx_data.valid & self.tx_data.ready))]
        # The bus address: the header's while idle, then one up per command of READ, VERIFY
        # and WRITE (WAIT, RUN and RESET load their CTRL register in DISPATCH).
        with m.If(~self.busy):
            m.d.sync += addr.eq(hdr.addr)
        with m.Elif(cmd.valid & cmd.ready & addr_inc):
            m.d.sync += addr.eq(addr + 1)
        return m
