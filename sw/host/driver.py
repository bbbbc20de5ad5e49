"""The host driver: requests and replies of :mod:`deconvsr.protocol` over any
:class:`~deconvsr.sw.host.transport.Transport`.

Every request waits for its reply (stop and wait). A reply that does not arrive within
``timeout``, fails its CRC, or reports a link error (BAD_CRC, ABORTED, TIMEOUT, OVERRUN) makes
the driver send the same request again (same tag) up to ``retries`` times; then it raises
:class:`LinkError`. Replies with another tag (late replies to an earlier attempt) are skipped.
"""

from __future__ import annotations

import itertools
import logging
import struct
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from ... import protocol
from ...bus import Space, Status as BusStatus
from ...protocol import (ESCAPE_XOR, FEND, FESC, FIDLE, LinkInfo, LinkStats, Opcode, ReplyHeader,
                         RequestHeader, Status, crc16)
from ...spec import EngineSpec
from .transport import Transport, TransportError

__all__ = ["DriverError", "LinkError", "LinkTimeout", "DeviceError", "VerifyError",
           "IdentifyError", "EngineError", "DeviceInfo", "Driver", "hexdump"]

log = logging.getLogger(__name__)

RETRY_STATUSES = {Status.BAD_CRC.value, Status.ABORTED.value, Status.TIMEOUT.value,
                  Status.OVERRUN.value}


class DriverError(Exception):
    """Base of the driver's errors."""


class LinkError(DriverError):
    """The link failed after all retries (or the transport failed)."""


class LinkTimeout(LinkError):
    """No (valid) reply in time."""


class DeviceError(DriverError):
    """The device refused a request (a status that retrying cannot fix)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class VerifyError(DriverError):
    """Data read back (or its CRC) differs from what was written."""


class IdentifyError(DriverError):
    """The device is not a deconvsr link/engine this driver supports."""


class EngineError(DriverError):
    """The engine reported an error or did not finish."""


def hexdump(data: bytes, limit: int = 32) -> str:
    head = data[:limit].hex(" ")
    return head + (f" ... (+{len(data) - limit} bytes)" if len(data) > limit else "")


@dataclass
class Reply:
    status: int
    tag: int
    opcode: int
    payload: bytes


@dataclass
class DeviceInfo:
    link: dict
    spec: EngineSpec
    id_bytes: bytes = field(repr=False, default=b"")

    def describe(self) -> dict:
        s = self.spec
        return {"link": protocol.LINK_KINDS.get(self.link["kind"], "?"),
                "protocol": self.link["version"], "link_clk_hz": self.link["clk_hz"],
                "baud": self.link["baud"], "lanes": s.lanes, "max_layers": s.max_layers,
                "dim_bits": s.dim_bits, "act_depth": s.act_depth,
                "weight_depth": s.weight_depth, "bias_depth": s.bias_depth,
                "out_bytes": s.out_bytes, "weight_bits": s.arith.weight_bits,
                "act_bits": s.arith.act_bits, "acc_bits": s.arith.acc_bits}


class _ReplyReader:
    """Unstuffs reply frames from the transport (keeps leftover bytes between calls)."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.buf = bytearray()
        self.pos = 0

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        data = self.transport.read(1 << 16, max(left, 0))
        if not data:
            raise LinkTimeout("no reply from the device")
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def frame(self, deadline) -> bytes:
        """The next frame's unstuffed bytes, complete per its header (CRCs unchecked)."""
        while True:
            i = self.buf.find(FEND, self.pos)
            if i >= 0:
                self.pos = i + 1
                break
            self.pos = len(self.buf)
            self._fill(deadline)
        body = bytearray()
        need = protocol.REPLY_HEADER_BYTES + protocol.CRC_BYTES
        escaped = False
        while len(body) < need:
            if self.pos >= len(self.buf):
                self._fill(deadline)
                continue
            b = self.buf[self.pos]
            self.pos += 1
            if b == FEND:              # a new frame started: this one was cut short
                self.pos -= 1
                return bytes(body)
            if b == FIDLE:
                continue
            if b == FESC:
                escaped = True
                continue
            body.append(b ^ ESCAPE_XOR if escaped else b)
            escaped = False
            if len(body) == protocol.REPLY_HEADER_BYTES + protocol.CRC_BYTES:
                hdr = body[:protocol.REPLY_HEADER_BYTES]
                if crc16(hdr) != int.from_bytes(body[-2:], "big"):
                    return bytes(body)     # a damaged length must not be trusted
                length = int.from_bytes(hdr[3:5], "little")
                if length:
                    need += length + protocol.CRC_BYTES
        return bytes(body)


class Driver:
    """One device session. Call :meth:`identify` first (it also starts the session on the
    device, resetting its duplicate-suppression memory)."""

    def __init__(self, transport: Transport, *, timeout: float = 5.0, retries: int = 4,
                 progress: bool = False):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self._reader = _ReplyReader(transport)
        self._tags = itertools.cycle(range(1, 256))
        self.info: DeviceInfo | None = None
        self.stats = {"requests": 0, "retries": 0, "bytes_out": 0, "bytes_in": 0,
                      "payload_out": 0, "payload_in": 0}

    # --- framing ----------------------------------------------------------------------------

    @staticmethod
    def encode(opcode, tag, space=0, addr=0, length=0, payload=b"") -> bytes:
        space = space.value if isinstance(space, Space) else int(space)
        hdr = protocol.pack(RequestHeader, opcode=opcode, tag=tag, space=space,
                            addr=addr, length=length)
        body = hdr + crc16(hdr).to_bytes(2, "big")
        if payload:
            body += payload + crc16(payload).to_bytes(2, "big")
        return protocol.stuff(body)

    @staticmethod
    def decode_reply(body: bytes) -> Reply | None:
        """A reply from its unstuffed bytes, or None if it is incomplete or fails a CRC."""
        n = protocol.REPLY_HEADER_BYTES
        if len(body) < n + 2:
            return None
        hdr = body[:n]
        if crc16(hdr) != int.from_bytes(body[n:n + 2], "big"):
            return None
        h = protocol.unpack(ReplyHeader, hdr)
        payload = b""
        if h["length"]:
            payload = body[n + 2:n + 2 + h["length"]]
            crc = body[n + 2 + h["length"]:n + 4 + h["length"]]
            if len(payload) != h["length"] or len(crc) != 2 or \
                    crc16(payload) != int.from_bytes(crc, "big"):
                return None
        return Reply(h["status"], h["tag"], h["opcode"], payload)

    def request(self, opcode: Opcode, space=0, addr=0, length=0, payload=b"", *,
                timeout=None) -> Reply:
        """Send one request and return its OK reply (retrying link errors).

        Raises :class:`DeviceError` for a refusal, :class:`LinkError` when retries run out.
        """
        tag = next(self._tags)
        frame = self.encode(opcode, tag, space, addr, length, payload)
        timeout = self.timeout if timeout is None else timeout
        last = "no attempt"
        timed_out = False
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                log.info("retry %d of %s tag %d: %s", attempt, opcode.name, tag, last)
            self.stats["requests"] += 1
            self.stats["bytes_out"] += len(frame)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("-> %s tag=%d space=%s addr=%#x len=%d: %s", opcode.name, tag, space,
                          addr, length, hexdump(frame))
            try:
                self.transport.write(frame)
                reply = self._await_reply(tag, time.monotonic() + timeout)
            except LinkTimeout as e:
                last = str(e)
                timed_out = True
                continue
            except TransportError as e:
                raise LinkError(str(e)) from None
            if reply.status in RETRY_STATUSES and not (
                    opcode == Opcode.WAIT and reply.status == Status.TIMEOUT.value):
                last = f"device reported {Status(reply.status).name}"
                timed_out = False
                continue
            if reply.status != Status.OK.value and not (
                    opcode == Opcode.WAIT and reply.status == Status.TIMEOUT.value):
                name = Status(reply.status).name if reply.status in {s.value for s in Status} \
                    else hex(reply.status)
                raise DeviceError(f"{opcode.name} refused by the device: {name}", reply.status)
            self.stats["payload_out"] += len(payload)
            self.stats["payload_in"] += len(reply.payload)
            return reply
        # Typed by the last failure: LinkTimeout (no valid reply) or LinkError (the device
        # kept reporting link errors); both are LinkErrors.
        error = LinkTimeout if timed_out else LinkError
        raise error(f"{opcode.name}: no valid reply after {self.retries + 1} attempts ({last})")

    def _await_reply(self, tag, deadline) -> Reply:
        while True:
            body = self._reader.frame(deadline)
            self.stats["bytes_in"] += len(body) + 1
            reply = self.decode_reply(body)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<- %s", hexdump(body))
            if reply is None:
                log.info("reply failed its CRC or was cut short: %s", hexdump(body))
                raise LinkTimeout("corrupted reply")
            if reply.tag == tag:
                return reply
            if reply.status in RETRY_STATUSES:
                # An error about a frame whose header was damaged: its tag may be too.
                return reply
            log.info("skipping a reply with tag %d (expected %d)", reply.tag, tag)

    # --- operations -------------------------------------------------------------------------

    def identify(self) -> DeviceInfo:
        """Link information and the engine's identification (``Space.ID``)."""
        r = self.request(Opcode.IDENTIFY)
        if len(r.payload) != LinkInfo.as_shape().size // 8:
            raise IdentifyError(f"link information is {len(r.payload)} bytes")
        link = protocol.unpack(LinkInfo, r.payload)
        if link["magic"] != protocol.LINK_MAGIC:
            raise IdentifyError(f"not a deconvsr link (magic {link['magic']:#06x})")
        if link["version"] != protocol.PROTOCOL_VERSION:
            raise IdentifyError(f"link protocol {link['version']} is not the supported "
                                f"{protocol.PROTOCOL_VERSION}")
        raw = self.read(Space.ID, 0, struct.calcsize(EngineSpec._ID_FORMAT))
        try:
            spec = EngineSpec.from_id_bytes(raw)
        except ValueError as e:
            raise IdentifyError(f"engine identification: {e}") from None
        self.info = DeviceInfo(link, spec, raw)
        return self.info

    def _chunks(self, n, what):
        bar = None
        if self.progress and n >= 1 << 15:
            bar = tqdm(total=n, unit="B", unit_scale=True, desc=what, leave=False)
        try:
            for off in range(0, n, protocol.MAX_PAYLOAD):
                yield off, min(protocol.MAX_PAYLOAD, n - off)
                if bar:
                    bar.update(min(protocol.MAX_PAYLOAD, n - off))
        finally:
            if bar:
                bar.close()

    def read(self, space: Space, addr: int, n: int) -> bytes:
        out = bytearray()
        for off, size in self._chunks(n, f"read {Space(space).name}"):
            r = self.request(Opcode.READ, space, addr + off, size)
            if len(r.payload) != size:
                raise LinkError(f"READ returned {len(r.payload)} bytes, asked for {size}")
            out += r.payload
        return bytes(out)

    def write(self, space: Space, addr: int, data: bytes, *, verify: str | None = None):
        """Write ``data``; ``verify`` = "crc" (device CRC of the range) or "readback"."""
        data = bytes(data)
        for off, size in self._chunks(len(data), f"write {Space(space).name}"):
            self.request(Opcode.WRITE, space, addr + off, size, data[off:off + size])
        if verify:
            self.verify(space, addr, data, method=verify)

    def device_crc(self, space: Space, addr: int, n: int) -> int:
        r = self.request(Opcode.VERIFY, space, addr, n)
        return int.from_bytes(r.payload, "big")

    def verify(self, space: Space, addr: int, data: bytes, *, method="crc"):
        """Check that the device holds ``data`` (raises :class:`VerifyError`)."""
        if method == "crc":
            for off in range(0, len(data), 0xFFFF):
                part = data[off:off + 0xFFFF]
                got = self.device_crc(space, addr + off, len(part))
                if got != crc16(part):
                    raise VerifyError(f"{Space(space).name}[{addr + off:#x}..+{len(part)}]: "
                                      f"device CRC {got:#06x}, expected {crc16(part):#06x}")
        elif method == "readback":
            back = self.read(space, addr, len(data))
            if back != data:
                first = next(i for i, (a, b) in enumerate(zip(back, data)) if a != b)
                raise VerifyError(f"{Space(space).name}[{addr + first:#x}]: read back "
                                  f"{back[first]:#04x}, wrote {data[first]:#04x}")
        else:
            raise ValueError(f"method must be 'crc' or 'readback', not {method!r}")

    def run(self, n_layers: int):
        if not 1 <= n_layers <= 255:
            raise ValueError(f"n_layers must be in 1..255, not {n_layers}")
        self.request(Opcode.RUN, length=n_layers)

    def status(self) -> int:
        return self.read(Space.CTRL, 0, 1)[0]

    def wait(self, timeout_cycles: int = 1 << 32, *, real_timeout: float = 3600.0) -> int:
        """Wait until the engine is not busy; returns its status byte.

        Raises :class:`EngineError` if the engine reports an error or is still busy after
        ``timeout_cycles`` device cycles.
        """
        units = max(1, min((1 << 24) - 1, timeout_cycles // protocol.WAIT_UNIT))
        r = self.request(Opcode.WAIT, addr=units, timeout=real_timeout)
        status = r.payload[0] if r.payload else 0
        if r.status == Status.TIMEOUT.value or status & BusStatus.BUSY:
            raise EngineError(f"the engine is still busy after {units * protocol.WAIT_UNIT} "
                              "cycles")
        if status & BusStatus.ERROR:
            raise EngineError(f"the engine reported an error (status {status:#04x})")
        return status

    def counters(self, n: int = 8) -> list[int]:
        raw = self.read(Space.COUNT, 0, 4 * n)
        return list(struct.unpack(f"<{n}I", raw))

    def link_stats(self) -> dict:
        r = self.request(Opcode.STATS)
        return protocol.unpack(LinkStats, r.payload)

    def reset(self):
        self.request(Opcode.RESET)
