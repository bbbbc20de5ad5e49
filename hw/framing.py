"""Link framing (see :mod:`deconvsr.protocol` for the wire format).

Receive path: line bytes -> :class:`Unstuffer` (tokens: data byte or frame start) ->
:class:`Deframer` (checks header and payload CRCs, watchdog; emits :class:`RxEvent`).
Transmit path: :class:`Framer` (reply header + payload -> tokens, CRCs appended) ->
:class:`Stuffer` (tokens -> escaped line bytes).
"""

from amaranth import Module, Signal, Cat, Const
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
    DATA = 1     #: one WRITE payload byte (``data``)
    END = 2      #: the WRITE payload passed its CRC
    ERROR = 3    #: the frame failed (``status``; ``header`` holds what was received)


class RxEvent(data.Struct):
    kind: RxKind
    status: Status
    data: unsigned(8)
    header: RequestHeader


class Unstuffer(wiring.Component):
    """Line bytes in, :class:`Token` out. ``FEND`` -> a start token; ``FESC, b`` -> ``b ^ 0x20``;
    ``FIDLE`` (filler, e.g. on SPI) is dropped. One cycle per byte; passes backpressure through.
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
        # A token is produced for everything but FESC and FIDLE; those are consumed silently.
        produce = is_fend | ~(is_fesc | is_idle)
        m.d.comb += [
            self.o.valid.eq(self.i.valid & produce),
            self.o.payload.start.eq(is_fend),
            self.o.payload.data.eq(Cat(byte[:5], byte[5] ^ escaped, byte[6:])),
            self.i.ready.eq(self.o.ready | ~produce),
        ]
        with m.If(self.i.valid & self.i.ready & ~is_idle):  # a filler keeps the escape state
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

    For each frame: a ``HEADER`` event once the header CRC matched; for a WRITE with a payload,
    one ``DATA`` event per payload byte, then ``END`` (payload CRC matched) or ``ERROR``
    (``BAD_CRC``). Any failure emits one ``ERROR`` event and returns to hunting for a frame
    start: header CRC mismatch (``BAD_CRC``), a frame start inside a frame (``ABORTED``, and the
    new frame is received), or no byte for ``timeout`` cycles inside a frame (``TIMEOUT``).
    Bytes outside frames are ignored. The output is a register: one token per cycle when
    ``o`` is ready; ``hunting`` is high between frames, ``waiting`` when inside a frame with no
    input offered (the watchdog is counting).
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(RxEvent))
    hunting: Out(1)
    waiting: Out(1)

    def __init__(self, *, timeout: int):
        if not isinstance(timeout, int) or timeout < 16:
            raise ValueError(f"timeout must be an integer >= 16 cycles, not {timeout!r}")
        self._timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        # One CRC processor serves the header and then the payload: `restart` makes the next
        # byte it sees start a new computation. The received CRC bytes are not fed to it; the
        # second one is compared with its (registered) output.
        m = Module()
        m.submodules.crc = crc = protocol.CRC.create()

        hdr_bytes = protocol.HEADER_BYTES
        header = Signal(RequestHeader)
        count = Signal(16)        # bytes of the current part received
        crc_hi = Signal(8)
        restart = Signal()
        timer = Signal(range(self._timeout + 1))

        can_emit = ~self.o.valid | self.o.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def emit(kind, status=Status.OK, byte=0):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.kind.eq(kind),
                         self.o.payload.status.eq(status), self.o.payload.data.eq(byte)]

        m.d.sync += self.o.payload.header.eq(header)
        tok = self.i.payload
        take = self.i.valid & can_emit
        m.d.comb += self.i.ready.eq(can_emit)
        m.d.comb += [crc.data.eq(tok.data), crc.start.eq(restart)]

        def feed_crc():
            m.d.comb += crc.valid.eq(1)
            m.d.sync += restart.eq(0)

        abort = Signal()    # a frame start inside a frame
        expire = Signal()   # the inter-byte watchdog fired

        def guarded():
            """Inside a frame: abort and timeout take precedence over the state's own logic,
            which runs under the returned ``Elif`` when a data token is taken."""
            with m.If(abort):
                emit(RxKind.ERROR, Status.ABORTED)
                m.d.sync += [count.eq(0), restart.eq(1)]
                m.next = "HEADER"
            with m.Elif(expire):
                emit(RxKind.ERROR, Status.TIMEOUT)
                m.next = "HUNT"
            return m.Elif(take)

        with m.FSM() as fsm:
            with m.State("HUNT"):
                with m.If(take & tok.start):
                    m.d.sync += [count.eq(0), restart.eq(1)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with guarded():
                    feed_crc()
                    m.d.sync += [header.as_value().word_select(count[:3], 8).eq(tok.data),
                                 count.eq(count + 1)]
                    with m.If(count == hdr_bytes - 1):
                        m.d.sync += count.eq(0)
                        m.next = "HEADER_CRC"
            with m.State("HEADER_CRC"):
                with guarded():
                    m.d.sync += [crc_hi.eq(tok.data), count.eq(count + 1)]
                    with m.If(count == 1):
                        m.d.sync += [count.eq(0), restart.eq(1)]
                        with m.If(Cat(tok.data, crc_hi) != crc.crc):
                            emit(RxKind.ERROR, Status.BAD_CRC)
                            m.next = "HUNT"
                        with m.Else():
                            emit(RxKind.HEADER)
                            with m.If((header.opcode == Opcode.WRITE) & (header.length != 0)):
                                m.next = "PAYLOAD"
                            with m.Else():
                                m.next = "HUNT"
            with m.State("PAYLOAD"):
                with guarded():
                    feed_crc()
                    emit(RxKind.DATA, byte=tok.data)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == header.length - 1):
                        m.d.sync += count.eq(0)
                        m.next = "PAYLOAD_CRC"
            with m.State("PAYLOAD_CRC"):
                with guarded():
                    m.d.sync += [crc_hi.eq(tok.data), count.eq(count + 1)]
                    with m.If(count == 1):
                        with m.If(Cat(tok.data, crc_hi) != crc.crc):
                            emit(RxKind.ERROR, Status.BAD_CRC)
                        with m.Else():
                            emit(RxKind.END)
                        m.next = "HUNT"

        in_frame = ~fsm.ongoing("HUNT")
        m.d.comb += [
            self.hunting.eq(~in_frame),
            self.waiting.eq(in_frame & ~self.i.valid),
            abort.eq(in_frame & take & tok.start),
            expire.eq(in_frame & can_emit & ~self.i.valid & (timer == self._timeout - 1)),
        ]
        with m.If(~in_frame | take):
            m.d.sync += timer.eq(0)
        with m.Elif(can_emit & ~self.i.valid):
            m.d.sync += timer.eq(timer + 1)
        return m


class Framer(wiring.Component):
    """Reply header (``hdr``) + ``hdr.length`` payload bytes (``data``) in, :class:`Token` out:
    start token, header, header CRC, payload, payload CRC (the last two only if ``length > 0``).
    ``hdr`` is taken when its frame starts; ``busy`` is high until its last token is sent.
    """

    hdr: In(stream.Signature(ReplyHeader))
    data: In(stream.Signature(8))
    o: Out(stream.Signature(Token))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = protocol.CRC.create()
        header = Signal(ReplyHeader)
        count = Signal(16)
        first = Signal()
        m.d.comb += crc.start.eq(first)

        def send(byte, *, to_crc=True):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(byte)]
            with m.If(self.o.ready):
                m.d.sync += count.eq(count + 1)
                if to_crc:
                    m.d.comb += [crc.valid.eq(1), crc.data.eq(byte)]
                    m.d.sync += first.eq(0)

        with m.FSM() as fsm:
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
            with m.State("IDLE"):
                m.d.comb += [self.o.valid.eq(self.hdr.valid), self.o.payload.start.eq(1),
                             self.hdr.ready.eq(self.o.ready)]
                with m.If(self.hdr.valid & self.o.ready):
                    m.d.sync += [header.eq(self.hdr.payload), count.eq(0), first.eq(1)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                send(header.as_value().word_select(count[:3], 8))
                with m.If(self.o.ready & (count == protocol.REPLY_HEADER_BYTES - 1)):
                    m.d.sync += count.eq(0)
                    m.next = "HEADER_CRC"
            with m.State("HEADER_CRC"):
                send(crc.crc.word_select(~count[0], 8), to_crc=False)
                with m.If(self.o.ready & (count == 1)):
                    m.d.sync += [count.eq(0), first.eq(1)]
                    with m.If(header.length == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(self.data.valid),
                             self.o.payload.data.eq(self.data.payload),
                             self.data.ready.eq(self.o.ready)]
                with m.If(self.data.valid & self.o.ready):
                    m.d.comb += [crc.valid.eq(1), crc.data.eq(self.data.payload)]
                    m.d.sync += [first.eq(0), count.eq(count + 1)]
                    with m.If(count == header.length - 1):
                        m.d.sync += count.eq(0)
                        m.next = "PAYLOAD_CRC"
            with m.State("PAYLOAD_CRC"):
                send(crc.crc.word_select(~count[0], 8), to_crc=False)
                with m.If(self.o.ready & (count == 1)):
                    m.d.sync += count.eq(0)
                    m.next = "IDLE"
        return m


class SkidBuffer(wiring.Component):
    """A register stage for a stream of ``shape``: ``o.valid``/``o.payload`` and ``i.ready``
    all come from registers, so neither the forward (valid, payload) nor the backward (ready)
    combinational path crosses it. Two entries (output register + skid register); a transfer
    per cycle when ``o`` is always ready; latency one cycle. ``busy``: holding a transfer.
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += [self.i.ready.eq(~skid_valid), self.busy.eq(self.o.valid)]
        with m.If(self.o.ready | ~self.o.valid):        # the output register can load
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):        # output stalled: park the input
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
