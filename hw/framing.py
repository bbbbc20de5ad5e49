"""Link framing (see :mod:`deconvsr.protocol` for the wire format).

Receive path: line bytes -> :class:`Unstuffer` (tokens: data byte or frame start) ->
:class:`Deframer` (checks header and payload CRCs, watchdog; emits :class:`RxEvent`).
Transmit path: :class:`Framer` (reply header + payload -> tokens, CRCs appended) ->
:class:`Stuffer` (tokens -> escaped line bytes).
"""

from amaranth import Module, Signal, Cat, Const, Mux
from amaranth.hdl import unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..protocol import Opcode, ReplyHeader, RequestHeader, Status

__all__ = ["Token", "RxKind", "RxEvent", "Unstuffer", "Stuffer", "Deframer", "Framer",
           "SkidBuffer"]


class Token(data.Struct):
    """A byte of an unstuffed frame, or (``start``) the frame delimiter."""
    data: unsigned(8)
    start: unsigned(1)


class RxKind(enum.Enum, shape=2):
    HEADER = 0   #: a request header passed its CRC (``header`` valid)
    DATA = 1     #: one WRITE/STEP payload byte (``data``)
    END = 2      #: the WRITE/STEP payload passed its CRC
    ERROR = 3    #: the frame failed (``status``; ``header`` holds what was received)


class RxEvent(data.Struct):
    kind: RxKind
    status: Status
    data: unsigned(8)
    header: RequestHeader


class Unstuffer(wiring.Component):
    """Line bytes in, :class:`Token` out. ``FEND`` -> a start token; ``FESC, b`` -> ``b ^ 0x20``;
    ``FIDLE`` (filler, e.g. on SPI) is dropped. The output is a register and ``i.ready`` is
    ``~o.valid`` (no combinational path from ``o.ready`` to ``i.ready``): one byte per cycle
    while bytes are consumed silently, one token every other cycle otherwise.
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(Token))

    def elaborate(self, platform):
        m = Module()
        escaped = Signal()
        byte = self.i.payload
        is_fend = byte == protocol.FEND
        is_fesc = byte == protocol.FESC
        is_idle = byte == protocol.FIDLE
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            # A token is produced for everything but FESC and FIDLE, which are consumed
            # silently; a filler keeps the escape state.
            with m.If(is_fend | ~(is_fesc | is_idle)):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.start.eq(is_fend),
                             self.o.payload.data.eq(Cat(byte[:5], byte[5] ^ escaped, byte[6:]))]
            with m.If(~is_idle):
                m.d.sync += escaped.eq(is_fesc)
        return m


class Stuffer(wiring.Component):
    """:class:`Token` in, line bytes out: a start token becomes ``FEND``; data bytes equal to
    ``FEND``, ``FESC`` or ``FIDLE`` become ``FESC, b ^ 0x20`` (two cycles). ``busy`` is high while
    a token is being sent."""

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(8))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        second = Signal()   # the escaped byte of a FESC pair is due
        byte = self.i.payload.data
        special = (byte == protocol.FEND) | (byte == protocol.FESC) | (byte == protocol.FIDLE)
        m.d.comb += self.o.valid.eq(self.i.valid), self.busy.eq(self.i.valid)
        with m.If(self.i.payload.start):
            m.d.comb += [self.o.payload.eq(protocol.FEND), self.i.ready.eq(self.o.ready)]
        with m.Elif(special & ~second):
            m.d.comb += self.o.payload.eq(protocol.FESC)
            with m.If(self.i.valid & self.o.ready):   # only a byte actually sent counts
                m.d.sync += second.eq(1)
        with m.Else():
            m.d.comb += [self.o.payload.eq(byte ^ Cat(Const(0, 5), special)),
                         self.i.ready.eq(self.o.ready)]
            with m.If(self.i.valid & self.o.ready):
                m.d.sync += second.eq(0)
        return m


class Deframer(wiring.Component):
    """Tokens in, :class:`RxEvent` out.

    For each frame: a ``HEADER`` event once the header CRC matched; for a WRITE or STEP with a payload,
    one ``DATA`` event per payload byte, then ``END`` (payload CRC matched) or ``ERROR``
    (``BAD_CRC``). Any failure emits one ``ERROR`` event and returns to hunting for a frame
    start: header CRC mismatch (``BAD_CRC``), a frame start inside a frame (``ABORTED``, and the
    new frame is received), or no byte for ``timeout`` cycles inside a frame (``TIMEOUT``).
    Bytes outside frames are ignored.

    The event's ``kind``/``status``/``data`` are registers; its ``header`` is the header
    register itself, which changes only while no event is pending and ``hold`` is low.
    ``hold`` (from the consumer): the last header is still in use; the deframer does not start
    a new header (it stalls on the frame start, or at the first header byte after an abort),
    but still delivers the payload and the errors of the current frame.
    ``i.ready`` is a register (no event pending): the deframer takes at most one token per
    cycle, and one every other cycle while it emits an event per token (payload bytes).
    ``hunting`` is high between frames, ``waiting`` when inside a frame with no input offered
    (the watchdog is counting).
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(RxEvent))
    hold: In(1)
    hunting: Out(1)
    waiting: Out(1)

    def __init__(self, *, timeout: int):
        if not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"timeout must be an integer >= 16 cycles, not {timeout!r}")
        self._timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        # One CRC processor serves the header and then the payload; it also takes the two
        # received CRC bytes, so a part is good when the register holds the residue (zero)
        # one cycle after its last byte (the *_CHECK states): no 16-bit compare, no byte store.
        # The payload length counts down (a compare with a constant, not with `length - 1`).
        # `i.ready` depends on registers only (`~o.valid`), so the decoder's `ready` never
        # reaches back through this block into the unstuffer and the receive FIFO.
        m = Module()
        m.submodules.crc = crc = protocol.CRC.create()

        hdr_bytes = protocol.HEADER_BYTES
        header = Signal(RequestHeader)
        index = Signal(range(hdr_bytes))             # header bytes received
        remaining = Signal.like(header.length)       # payload bytes still due
        second = Signal()                            # the next CRC byte is the last one
        timer = Signal(range(self._timeout))
        late = Signal()                              # the timer has run out
        ev_kind = Signal(RxKind)
        ev_status = Signal(range(max(s.value for s in Status) + 1))   # as few bits as needed
        ev_data = Signal(8)

        m.d.comb += [self.o.payload.kind.eq(ev_kind),
                     self.o.payload.status.as_value().eq(ev_status),
                     self.o.payload.data.eq(ev_data),
                     self.o.payload.header.eq(header)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def emit(kind, status=Status.OK, byte=0):
            m.d.sync += [self.o.valid.eq(1), ev_kind.eq(kind), ev_status.eq(status.value),
                         ev_data.eq(byte)]

        tok = self.i.payload
        m.d.comb += self.i.ready.eq(~self.o.valid)
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        m.d.comb += crc.data.eq(tok.data)

        def new_header():
            m.d.comb += crc.start.eq(1)
            m.d.sync += index.eq(0)
            m.next = "HEADER"

        abort = Signal()    # a frame start inside a frame
        expire = Signal()   # the inter-byte watchdog fired

        def guarded():
            """Inside a frame: abort and timeout take precedence over the state's own logic,
            which runs under the returned ``Elif`` when a data token is taken."""
            with m.If(abort):
                emit(RxKind.ERROR, Status.ABORTED)
                new_header()
            with m.Elif(expire):
                emit(RxKind.ERROR, Status.TIMEOUT)
                m.next = "HUNT"
            return m.Elif(take)

        def crc_pair(next_state):
            m.d.comb += crc.valid.eq(1)
            m.d.sync += second.eq(~second)
            with m.If(second):
                m.next = next_state

        with m.FSM() as fsm:
            with m.State("HUNT"):
                m.d.comb += self.i.ready.eq(~self.o.valid & ~self.hold)
                with m.If(take & tok.start):
                    new_header()
            with m.State("HEADER"):
                # after an abort: wait for the consumer to release the header
                m.d.comb += self.i.ready.eq(~self.o.valid & ~self.hold)
                with m.If(take):
                    # Written even when the token is a frame start (an abort): the bytes from
                    # `index` on are stale anyway, and the enables stay short.
                    m.d.sync += header.as_value().word_select(index, 8).eq(tok.data)
                with guarded():
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == hdr_bytes - 1):
                        m.d.sync += second.eq(0)
                        m.next = "HEADER_CRC"
            with m.State("HEADER_CRC"):
                with guarded():
                    crc_pair("HEADER_CHECK")
            with m.State("HEADER_CHECK"):
                m.d.comb += [self.i.ready.eq(0), crc.start.eq(1)]          # the payload's CRC starts afresh
                m.d.sync += remaining.eq(header.length)
                with m.If(~crc.match_detected):
                    emit(RxKind.ERROR, Status.BAD_CRC)
                    m.next = "HUNT"
                with m.Else():
                    emit(RxKind.HEADER)
                    with m.If(((header.opcode == Opcode.WRITE) | (header.opcode == Opcode.STEP))
                              & (header.length != 0)):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "HUNT"
            with m.State("PAYLOAD"):
                with guarded():
                    m.d.comb += crc.valid.eq(1)
                    emit(RxKind.DATA, byte=tok.data)
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.d.sync += second.eq(0)
                        m.next = "PAYLOAD_CRC"
            with m.State("PAYLOAD_CRC"):
                with guarded():
                    crc_pair("PAYLOAD_CHECK")
            with m.State("PAYLOAD_CHECK"):
                m.d.comb += self.i.ready.eq(0)
                with m.If(~crc.match_detected):
                    emit(RxKind.ERROR, Status.BAD_CRC)
                with m.Else():
                    emit(RxKind.END)
                m.next = "HUNT"

        in_frame = ~fsm.ongoing("HUNT")
        m.d.comb += [
            self.hunting.eq(~in_frame),
            self.waiting.eq(in_frame & ~self.i.valid),
            abort.eq(in_frame & take & tok.start),
            expire.eq(in_frame & late & ~self.o.valid & ~self.i.valid),
        ]
        # `late` registers the timer's end (the watchdog fires one cycle later, and its wide
        # compare is off the path into the state machine).
        with m.If(~in_frame | take):
            m.d.sync += [timer.eq(0), late.eq(0)]
        with m.Elif(~self.o.valid & ~self.i.valid):
            m.d.sync += timer.eq(timer + 1)
            with m.If(timer == self._timeout - 1):
                m.d.sync += late.eq(1)
        return m


class Framer(wiring.Component):
    """Reply header (``hdr``) + ``hdr.length`` payload bytes (``data``) in, :class:`Token` out:
    start token, header, header CRC, payload, payload CRC (the last two only if ``length > 0``).
    The header is read from ``hdr.payload`` while it is sent: ``hdr`` is taken (``ready``) with
    the last byte of the header CRC, so its payload must stay valid until then (as the stream
    rules require anyway). ``busy`` is high until the frame's last token is sent.
    """

    hdr: In(stream.Signature(ReplyHeader))
    data: In(stream.Signature(8))
    o: Out(stream.Signature(Token))
    busy: Out(1)

    def elaborate(self, platform):
        # No copy of the header (the decoder holds it); counters count down to a constant (no
        # compare with `length - 1`); the CRC's two bytes are told apart by one flag. The CRC
        # takes its byte, valid and start from registers (`crc_in`): the byte selection and
        # the handshake do not reach the CRC's XOR network in the same cycle (ECP5 builds
        # BG-BI: 10.1-10.4 ns); the first CRC byte of each check waits a cycle for it (`lag`).
        m = Module()
        m.submodules.crc = crc = protocol.CRC.create()
        crc_in = Signal(8)
        crc_valid = Signal()
        crc_start = Signal()
        m.d.sync += [crc.data.eq(crc_in), crc.valid.eq(crc_valid), crc.start.eq(crc_start)]
        lag = Signal()                        # the last byte's CRC update is still due
        m.d.sync += lag.eq(0)
        hdr_bytes = protocol.REPLY_HEADER_BYTES
        header = self.hdr.payload
        index = Signal(range(hdr_bytes))      # header byte being sent
        remaining = Signal.like(header.length)
        second = Signal()                     # the CRC's low byte is due
        crc_byte = Mux(second, crc.crc[:8], crc.crc[8:])
        sent = self.o.valid & self.o.ready

        with m.FSM() as fsm:
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
            with m.State("IDLE"):
                m.d.comb += [self.o.valid.eq(self.hdr.valid), self.o.payload.start.eq(1),
                             crc_start.eq(1)]
                m.d.sync += index.eq(0)
                with m.If(self.hdr.valid & self.o.ready):
                    m.next = "HEADER"
            with m.State("HEADER"):
                byte = header.as_value().word_select(index, 8)
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(byte),
                             crc_in.eq(byte), crc_valid.eq(self.o.ready)]
                with m.If(self.o.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == hdr_bytes - 1):
                        m.d.sync += [second.eq(0), lag.eq(1)]
                        m.next = "HEADER_CRC"
            with m.State("HEADER_CRC"):
                m.d.comb += [self.o.valid.eq(~lag), self.o.payload.data.eq(crc_byte)]
                with m.If(self.o.ready & ~lag):
                    m.d.sync += [second.eq(1), remaining.eq(header.length)]
                    with m.If(second):
                        m.d.comb += [self.hdr.ready.eq(1),
                                     crc_start.eq(1)]      # the payload's CRC starts afresh
                        with m.If(header.length == 0):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(self.data.valid),
                             self.o.payload.data.eq(self.data.payload),
                             self.data.ready.eq(self.o.ready),
                             crc_in.eq(self.data.payload), crc_valid.eq(sent)]
                with m.If(sent):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.d.sync += [second.eq(0), lag.eq(1)]
                        m.next = "PAYLOAD_CRC"
            with m.State("PAYLOAD_CRC"):
                m.d.comb += [self.o.valid.eq(~lag), self.o.payload.data.eq(crc_byte)]
                with m.If(self.o.ready & ~lag):
                    m.d.sync += second.eq(1)
                    with m.If(second):
                        m.next = "IDLE"
        return m


class SkidBuffer(wiring.Component):
    """A register stage for a stream of ``shape``: ``o.valid``/``o.payload`` and ``i.ready``
    all come from registers, so neither the forward (valid, payload) nor the backward (ready)
    combinational path crosses it. Two entries (output register + skid register); a transfer
    per cycle when ``o`` is always ready; latency one cycle. ``busy``: holding a transfer.

    ``skid=False``: one entry, the output register only; ``i.ready`` is then
    ``~o.valid | o.ready``, combinational (for a consumer whose ready is a register, on a
    small FPGA where each payload bit of the skid register is a logic cell).
    """

    def __init__(self, shape, *, skid=True):
        self._skid = skid
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        if not self._skid:
            out = Signal.like(self.i.payload, reset_less=True)
            load = self.o.ready | ~self.o.valid
            m.d.comb += [self.i.ready.eq(load), self.busy.eq(self.o.valid),
                         self.o.payload.eq(out)]
            with m.If(load):
                m.d.sync += [out.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
            return m
        # (the payload registers are reset-less: the valid bits qualify them, and the
        # reset then reaches fewer flip-flops)
        skid = Signal.like(self.i.payload, reset_less=True)
        out = Signal.like(self.i.payload, reset_less=True)
        skid_valid = Signal()
        m.d.comb += [self.i.ready.eq(~skid_valid), self.busy.eq(self.o.valid),
                     self.o.payload.eq(out)]
        with m.If(self.o.ready | ~self.o.valid):        # the output register can load
            with m.If(skid_valid):
                m.d.sync += [out.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [out.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):        # output stalled: park the input
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
