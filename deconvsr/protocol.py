"""The host link protocol: the one definition imported by the gateware (``deconvsr.hw.framing``,
``deconvsr.hw.decoder``) and by the host driver (``deconvsr.sw.host.driver``).

Wire format
===========

Both directions carry *frames* over a byte stream (UART, SPI or a simulator socket). Frames are
delimited SLIP-style: every frame starts with :data:`FEND`; inside a frame, a :data:`FEND`,
:data:`FESC` or :data:`FIDLE` data byte is sent as ``FESC, byte ^ 0x20`` (so ``FEND`` never
appears inside a frame and a receiver always resynchronises at the next frame start).
:data:`FIDLE` is a filler that receivers drop wherever it appears (an SPI peripheral must send
something while the host clocks it; a host clocks replies out with it). After unstuffing a frame is::

    request:  RequestHeader (8 bytes) | CRC(header) (2) | [payload (length) | CRC(payload) (2)]
    reply:    ReplyHeader   (5 bytes) | CRC(header) (2) | [payload (length) | CRC(payload) (2)]

A request carries a payload only for :attr:`Opcode.WRITE` with ``length > 0``; a reply carries
one when its ``length > 0``. CRCs are :data:`CRC` (CRC-16/IBM-3740, a.k.a. CCITT-FALSE), sent
most significant byte first; header and payload have separate CRCs so the device trusts
``opcode``/``space``/``addr``/``length`` before it acts on any payload byte. Multi-byte header
fields are little-endian (the byte order of :class:`amaranth.lib.data.Struct` packing).

Every request gets exactly one reply, carrying the request's ``tag`` and a :class:`Status`.
A frame whose header CRC fails, that is truncated by a new ``FEND`` or by the inter-byte
watchdog, or whose payload CRC fails, gets an error reply; writes are idempotent, so the host
retries the whole frame. :attr:`Opcode.RUN` and :attr:`Opcode.RESET` are not idempotent: the
device remembers the tag of the last one it executed and acknowledges a repeat without acting.

Opcodes
=======

========== ====================================================================================
IDENTIFY   reply payload: :class:`LinkInfo` (the engine's own ID is read with READ of Space.ID)
READ       ``length`` bytes of ``space`` from ``addr`` (bus reads); reply payload: those bytes
WRITE      payload -> ``space`` from ``addr`` (bus writes); spaces ID, CTRL, COUNT refused
VERIFY     CRC of ``length`` bytes of ``space`` from ``addr``; reply payload: 2 bytes (MSB first)
RUN        start ``length`` layers (bus write CTRL[0] = length); reply once started
WAIT       poll CTRL[0] until not busy, at most ``addr`` x :data:`WAIT_UNIT` cycles; reply
           payload: the status byte; status TIMEOUT if still busy
RESET      engine soft reset (CTRL[1]) and clear the link counters
STATS      reply payload: :class:`LinkStats`
STEP       one step of a streamed frame (below)
========== ====================================================================================

STEP
====

The frame streaming request (gateware version 2). Its payload is a :class:`StepHeader` and
then bytes for the ``IN`` memory, written from ``addr`` (``IN`` addresses wrap: it is a ring
of input rows); the header's ``space`` field holds the CTRL START byte of the layers to start
(:func:`deconvsr.bus.start_byte`; a count of 0 starts nothing). Once the
payload's CRC has checked, the device waits until the engine is idle (the previous step
done; at most ``StepHeader.polls`` polls :data:`WAIT_UNIT` cycles apart, else it replies
TIMEOUT and starts nothing), writes ``space`` to START (banded descriptors: each runs its
next band) and replies with ``StepHeader.out_len`` bytes of ``OUT`` from
``StepHeader.out_addr`` (wrapping: a ring of output rows), read while the new step runs.
So the link carries the next rows in and the previous step's rows out while the engine
computes, and a frame costs one request and one reply per step. Like RUN, a STEP with the
tag of the last one executed is not run again; its reply is sent again.
"""


from amaranth.hdl import unsigned
from amaranth.lib import data, enum
from amaranth.lib.crc import catalog

__all__ = ["PROTOCOL_VERSION", "FEND", "FESC", "FIDLE", "SPECIAL_BYTES", "ESCAPE_XOR", "CRC", "crc16", "Opcode", "Status",
           "RequestHeader", "ReplyHeader", "StepHeader", "LinkInfo", "LinkStats", "MAX_PAYLOAD", "WAIT_UNIT",
           "HEADER_BYTES", "STEP_HEADER_BYTES", "REPLY_HEADER_BYTES", "CRC_BYTES", "WRITABLE_SPACES",
           "pack", "unpack", "stuff", "request_overhead", "reply_overhead"]

PROTOCOL_VERSION = 1

FEND = 0xC0        #: frame start
FESC = 0xDB        #: escape: the next byte is XORed with ESCAPE_XOR
FIDLE = 0xDD       #: filler, dropped anywhere by receivers (SPI sends it when it has nothing)
SPECIAL_BYTES = (FEND, FESC, FIDLE)
ESCAPE_XOR = 0x20

#: The CRC of headers and payloads: one parameters object gives the gateware
#: (``CRC.create()``) and the software model (``CRC.compute(bytes)``, or the fast :func:`crc16`).
CRC = catalog.CRC16_IBM_3740(8)
CRC_BYTES = 2

#: Largest payload the host puts in one frame (the gateware accepts any 16-bit length).
MAX_PAYLOAD = 4096
#: WAIT counts its timeout in units of this many clock cycles.
WAIT_UNIT = 256


class Opcode(enum.Enum, shape=8):
    IDENTIFY = 0x01
    READ = 0x02
    WRITE = 0x03
    VERIFY = 0x04
    RUN = 0x05
    WAIT = 0x06
    RESET = 0x07
    STATS = 0x08
    STEP = 0x09


class Status(enum.Enum, shape=8):
    OK = 0x00
    BAD_CRC = 0x01       #: header or payload CRC mismatch
    BAD_OPCODE = 0x02
    BAD_SPACE = 0x03     #: WRITE to a read-only space
    ABORTED = 0x04       #: frame cut short by a new frame start
    TIMEOUT = 0x05       #: inter-byte watchdog fired (truncated frame), or WAIT timed out
    OVERRUN = 0x06       #: bytes were lost (receiver overrun)


class RequestHeader(data.Struct):
    opcode: Opcode
    tag: unsigned(8)
    space: unsigned(8)   #: a deconvsr.bus.Space value
    addr: unsigned(24)
    length: unsigned(16)


class ReplyHeader(data.Struct):
    status: Status
    tag: unsigned(8)
    opcode: Opcode
    length: unsigned(16)


class LinkInfo(data.Struct):
    """IDENTIFY's reply payload."""
    magic: unsigned(16)         #: LINK_MAGIC
    version: unsigned(8)        #: PROTOCOL_VERSION
    kind: unsigned(8)           #: 0 byte stream, 1 UART, 2 SPI
    clk_hz: unsigned(32)        #: the link's clock (the engine's, or its own: hw.soc)
    baud: unsigned(32)          #: UART baud rate (0 for other links)


LINK_MAGIC = 0x4C44  # "DL" little-endian
LINK_KINDS = {0: "stream", 1: "uart", 2: "spi"}


class StepHeader(data.Struct):
    """The first bytes of a STEP request's payload."""
    out_addr: unsigned(16)      #: OUT address of the reply's bytes (wrapping)
    out_len: unsigned(16)       #: bytes of OUT in the reply
    polls: unsigned(16)         #: how long to wait for the engine (WAIT's ``addr``)


class LinkStats(data.Struct):
    """STATS's reply payload: saturating 16-bit gateware counters (cleared by RESET)."""
    frames: unsigned(16)        #: requests executed with status OK
    crc_errors: unsigned(16)
    framing_errors: unsigned(16)  #: aborted or timed-out frames, bad opcodes
    overruns: unsigned(16)      #: bytes lost by the receiver


HEADER_BYTES = RequestHeader.as_shape().size // 8
STEP_HEADER_BYTES = StepHeader.as_shape().size // 8
REPLY_HEADER_BYTES = ReplyHeader.as_shape().size // 8

# bus.Space values a WRITE may target (ID, CTRL, COUNT are refused: CTRL is written only by
# RUN/RESET, whose execution is gated by the header CRC and deduplicated by tag).
WRITABLE_SPACES = frozenset({2, 3, 4, 5, 6, 8})


# --- host-side helpers -------------------------------------------------------------------------

def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()
_CRC_ALGO = CRC.algorithm
# The fast path below implements exactly this parameter set; checked here once at import.
if (_CRC_ALGO.crc_width, _CRC_ALGO.polynomial, _CRC_ALGO.initial_crc, _CRC_ALGO.reflect_input,
        _CRC_ALGO.reflect_output, _CRC_ALGO.xor_output) != (16, 0x1021, 0xFFFF, False, False, 0):
    raise RuntimeError("crc16 fast path does not match protocol.CRC")  # pragma: no cover


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """Table-driven :data:`CRC` (equal to ``CRC.compute(data)``, about 50x faster)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ b]
    return crc


def pack(struct_cls, **fields) -> bytes:
    """Bytes of a header struct (little-endian field packing, as in the gateware)."""
    layout = struct_cls.as_shape()
    value = 0
    for name, v in fields.items():
        field = layout[name]
        if isinstance(v, enum.Enum):
            v = v.value
        v = int(v)
        if not 0 <= v < (1 << field.width):
            raise ValueError(f"{struct_cls.__name__}.{name} must be in 0..{(1 << field.width) - 1}"
                             f", not {v}")
        value |= v << field.offset
    return value.to_bytes(layout.size // 8, "little")


def unpack(struct_cls, raw: bytes) -> dict:
    """Inverse of :func:`pack`: a dict of ints (enum fields as raw ints)."""
    layout = struct_cls.as_shape()
    if len(raw) != layout.size // 8:
        raise ValueError(f"{struct_cls.__name__} is {layout.size // 8} bytes, not {len(raw)}")
    value = int.from_bytes(raw, "little")
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def stuff(body: bytes) -> bytes:
    """One frame on the wire: FEND then ``body`` with FEND/FESC escaped."""
    out = bytearray([FEND])
    for b in body:
        if b in SPECIAL_BYTES:
            out += bytes((FESC, b ^ ESCAPE_XOR))
        else:
            out.append(b)
    return bytes(out)


def request_overhead(with_payload: bool) -> int:
    """Unstuffed framing bytes of one request (FEND + header + CRCs)."""
    return 1 + HEADER_BYTES + CRC_BYTES + (CRC_BYTES if with_payload else 0)


def reply_overhead(with_payload: bool) -> int:
    return 1 + REPLY_HEADER_BYTES + CRC_BYTES + (CRC_BYTES if with_payload else 0)
