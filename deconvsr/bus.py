"""The engine's host bus: the one interface between the link (UART/SPI command decoder) and the
deconvolution engine, and the address map both the gateware and the host driver use.

Every memory and register of the engine appears to the host as a byte-addressable *space*.
A bus command is a stream transfer carrying ``(space, write, addr, data)``; every **read**
command produces exactly one response byte on ``rsp``, in command order; writes produce
none. Reads of addresses outside a space return 0; writes there are ignored.

``CTRL`` registers (byte addresses):

==== ======= =========================================================================
addr access  meaning
==== ======= =========================================================================
0    write   start. A streaming engine (``EngineSpec.in_bytes``): ``data`` =
             :func:`start_byte`: run ``count`` descriptors (1..15, bits 0-3) from ``first``
             (0..7, bits 4-6); bit 7 (:data:`START_KEEP`) keeps the performance counters
             running on (else the start clears them), so a streamed frame's steps add up.
             Other engines: ``data`` = number of layers to run (descriptors 0 .. data - 1)
0    read    status: bit 0 busy, bit 1 done (sticky until the next start), bit 2 error
1    write   soft reset of the engine state machine and counters (any data)
==== ======= =========================================================================
 ``IN`` is written and ``OUT`` read by
the host also while the engine runs (the host streams a frame's rows in and its result out
while the engine computes); the other memory spaces only while it is idle.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Space", "ADDR_BITS", "BusCommand", "BusSignature", "CtrlReg", "Status", "START_KEEP",
           "start_byte"]

ADDR_BITS = 24


class Space(enum.Enum, shape=4):
    ID = 0       #: read-only identification ROM (see ``deconvsr.spec.EngineSpec.id_bytes``)
    CTRL = 1     #: control/status registers (table above)
    DESC = 2     #: layer descriptors
    WEIGHT = 3   #: weight memory
    BIAS = 4     #: bias and requantisation entries
    ACT = 5      #: feature-map buffers (the input frame is written here)
    OUT = 6      #: final output image
    COUNT = 7    #: performance counters (read-only, 32-bit little-endian each)
    IN = 8       #: input memory: the packed frame, one byte a pixel (a ring of rows)


#: START's flag: do not clear the counters (a streamed frame's STEPs set it).
START_KEEP = 0x80


def start_byte(count: int, first: int = 0, keep: bool = False) -> int:
    """A streaming engine's START data: ``count`` descriptors from ``first``."""
    if not 0 <= count <= 15 or not 0 <= first <= 7:
        raise ValueError(f"a start runs 0..15 descriptors from 0..7, not {count} from {first}")
    return count | first << 4 | (START_KEEP if keep else 0)


class CtrlReg(enum.IntEnum):
    START_STATUS = 0
    RESET = 1


class Status(enum.IntFlag):
    BUSY = 1
    DONE = 2
    ERROR = 4


class BusCommand(data.Struct):
    space: Space
    write: 1
    addr: unsigned(ADDR_BITS)
    data: unsigned(8)


class BusSignature(wiring.Signature):
    """Seen from the engine (the responder): ``cmd`` comes in, ``rsp`` goes out."""

    def __init__(self):
        super().__init__({
            "cmd": In(stream.Signature(BusCommand)),
            "rsp": Out(stream.Signature(8)),
        })
