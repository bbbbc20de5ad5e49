"""The host driver: requests and replies of :mod:`deconvsr.protocol` over any
:class:`~deconvsr.sw.host.transport.Transport`.

Every request waits for its reply (stop and wait). A reply that does not arrive in time, fails
its CRC, or reports a link error (BAD_CRC, ABORTED, TIMEOUT, OVERRUN) makes the driver send the
same request again (same tag) up to ``retries`` times; then it raises :class:`LinkError`
(:class:`LinkTimeout` when no valid reply came). Replies with another tag (late replies to an
earlier attempt) are skipped.

Deadlines: no wait on the device is unbounded, whatever the device sends.

* **A reply** must be complete within ``timeout`` (the device's latency allowance) plus twice
  the line time of the request and of the longest reply it can have (``Transport.byte_time``:
  10 / baud on a UART, 0 where unknown), and within a **byte budget**: the worst-case stuffed
  size of that reply and of the previous request's reply (a late or duplicated one), plus
  :data:`NOISE_BYTES`. Bytes that do not make a valid reply for this request (noise at a wrong
  baud rate, fillers after a frame start, another request's replies) count against it, so a
  device streaming garbage fails in milliseconds, not never.
* **An engine run** (:meth:`Driver.wait`) is bounded by its expected duration: the compiler's
  cycle estimate times ``run_margin`` plus :data:`RUN_SLACK_CYCLES`, counted by the device
  (WAIT's own cycle bound, at the link clock of ``identify``, never faster than the engine's).
  The host polls in WAIT requests of at most ``wait_slice_cycles`` cycles (default one second
  at the device clock), each of them a reply like any other, so a device that goes silent
  mid-run is found within one slice plus the reply allowance, times the attempts.

At 3 Mbaud with the defaults (``timeout`` 2 s, 4 retries), a device that never answers fails in
5 x 2 s, one that goes silent mid-run in 5 x 3 s, one that streams noise in well under a second.
The simulated device runs slower than real time: :func:`~deconvsr.sw.device.open_device` gives
it generous reply allowances and slices counted in simulated cycles.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from ... import protocol
from ...bus import Space, Status as BusStatus, start_byte
from ...protocol import (ESCAPE_XOR, FEND, FESC, FIDLE, LinkInfo, LinkStats, Opcode, ReplyHeader,
                         RequestHeader, Status, StepHeader, crc16)
from ...spec import EngineSpec
from .transport import Transport, TransportError

__all__ = ["DriverError", "LinkError", "LinkTimeout", "DeviceError", "VerifyError",
           "IdentifyError", "EngineError", "DeviceInfo", "Driver", "hexdump", "NOISE_BYTES",
           "RUN_SLACK_CYCLES", "DEFAULT_RUN_CYCLES", "stuffed_max", "reply_body_max"]

log = logging.getLogger(__name__)

RETRY_STATUSES = {Status.BAD_CRC.value, Status.ABORTED.value, Status.TIMEOUT.value,
                  Status.OVERRUN.value}

#: Bytes a reply wait tolerates beyond the worst-case size of the replies it can meet.
NOISE_BYTES = 512
#: Cycles an engine run may take beyond ``run_margin`` times the expected ones.
RUN_SLACK_CYCLES = 1 << 20
#: Cycles the engine may take when nobody said how many to expect (``Driver.wait()``).
DEFAULT_RUN_CYCLES = 1 << 32
#: Payload bytes of the replies with a fixed payload.
_REPLY_PAYLOAD = {Opcode.IDENTIFY: LinkInfo.as_shape().size // 8, Opcode.VERIFY: 2,
                  Opcode.WAIT: 1, Opcode.STATS: LinkStats.as_shape().size // 8}


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


def _status_name(status: int) -> str:
    return Status(status).name if status in {s.value for s in Status} else hex(status)


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


def stuffed_max(n_body: int) -> int:
    """Largest wire size of a frame whose unstuffed body is ``n_body`` bytes."""
    return 1 + 2 * n_body


def reply_body_max(opcode: Opcode, length: int = 0, payload: int | None = None) -> int:
    """Unstuffed bytes of the longest reply ``opcode`` can get (READ: ``length`` payload;
    ``payload``: the payload bytes, for an opcode whose request says them elsewhere)."""
    n = payload if payload is not None else \
        length if opcode == Opcode.READ else _REPLY_PAYLOAD.get(opcode, 0)
    return protocol.REPLY_HEADER_BYTES + protocol.CRC_BYTES + (n + protocol.CRC_BYTES if n else 0)


class _Wait:
    """The limits of one reply wait (see the module docstring)."""

    def __init__(self, reader, seconds: float, max_bytes: int, reply_bytes: int = 0):
        self.seconds = seconds
        self.reply_bytes = reply_bytes
        self.deadline = time.monotonic() + seconds
        self.start = reader.received
        self.limit = reader.received + max_bytes
        self.max_bytes = max_bytes


class _ReplyReader:
    """Unstuffs reply frames from the transport (keeps leftover bytes between calls).
    ``received`` counts every byte taken from the transport."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.buf = bytearray()
        self.pos = 0
        self.received = 0

    def _fill(self, w: _Wait):
        got = self.received - w.start
        if self.received >= w.limit:
            raise LinkTimeout(f"{got:,} bytes without a valid reply (the reply is at most "
                              f"{w.reply_bytes:,})")
        left = w.deadline - time.monotonic()
        data = self.transport.read(1 << 16, left) if left > 0 else b""
        if not data:
            raise LinkTimeout(f"no reply in {w.seconds:.3g} s" if not got else
                              f"{got:,} bytes in {w.seconds:.3g} s, no valid reply")
        self.received += len(data)
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def frame(self, w: _Wait) -> bytes:
        """The next frame's unstuffed bytes, complete per its header (CRCs unchecked).
        Raises :class:`LinkTimeout` when ``w``'s time or byte budget runs out."""
        while True:
            i = self.buf.find(FEND, self.pos)
            if i >= 0:
                self.pos = i + 1
                break
            self.pos = len(self.buf)
            self._fill(w)
        body = bytearray()
        need = protocol.REPLY_HEADER_BYTES + protocol.CRC_BYTES
        escaped = False
        while len(body) < need:
            if self.pos >= len(self.buf):
                self._fill(w)
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

    def __init__(self, transport: Transport, *, timeout: float = 2.0, retries: int = 4,
                 progress: bool = False, wait_slice_cycles: int | None = None,
                 run_margin: float = 2.0):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
        if wait_slice_cycles is not None and not 1 <= wait_slice_cycles < 1 << 32:
            raise ValueError(f"wait_slice_cycles must be in 1..2**32-1, not {wait_slice_cycles!r}")
        if not run_margin >= 1:
            raise ValueError(f"run_margin must be >= 1, not {run_margin!r}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self.wait_slice_cycles = wait_slice_cycles
        self.run_margin = run_margin
        self._reader = _ReplyReader(transport)
        self._tags = itertools.cycle(range(1, 256))
        self._last_reply_max = 0       # the previous request's longest reply (a late copy)
        self.info: DeviceInfo | None = None
        self.stats = {"requests": 0, "retries": 0, "bytes_out": 0, "bytes_in": 0,
                      "payload_out": 0, "payload_in": 0, "valid_replies": 0}

    @property
    def byte_time(self) -> float:
        """Seconds per byte on the line (0 when the transport does not know)."""
        return float(getattr(self.transport, "byte_time", 0.0) or 0.0)

    def reply_limits(self, opcode: Opcode, frame_bytes: int, length: int = 0,
                     extra_s: float = 0.0, *, reply_payload: int | None = None,
                     timeout: float | None = None) -> tuple[float, int]:
        """(seconds, bytes) one attempt of a request may wait for its reply: the latency
        allowance (``timeout``, default the driver's) plus twice the line time of the request
        (``frame_bytes`` on the wire) and of its longest reply, plus ``extra_s`` (the device
        time it takes: a WAIT's); bytes: the longest reply and the previous request's,
        stuffed, plus :data:`NOISE_BYTES`. ``reply_payload``: the longest reply payload, where
        the opcode alone does not say (default: :func:`reply_body_max`'s)."""
        reply = stuffed_max(reply_body_max(opcode, length, reply_payload))
        allowance = self.timeout if timeout is None else timeout
        seconds = allowance + extra_s + 2 * self.byte_time * (frame_bytes + reply)
        return seconds, reply + stuffed_max(self._last_reply_max) + NOISE_BYTES

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
                extra_s: float = 0.0, reply_payload: int | None = None,
                timeout: float | None = None) -> Reply:
        """Send one request and return its OK reply (retrying link errors).

        Each attempt waits as :meth:`reply_limits` says: ``extra_s`` is the device time the
        request takes beyond a reply's latency (WAIT's), ``reply_payload`` its longest reply
        payload where the opcode does not say, ``timeout`` a latency allowance other than
        the driver's. Raises :class:`DeviceError` for a refusal, :class:`LinkError` when
        retries run out (:class:`LinkTimeout` if no valid reply came).
        """
        tag = next(self._tags)
        frame = self.encode(opcode, tag, space, addr, length, payload)
        seconds, max_bytes = self.reply_limits(opcode, len(frame), length, extra_s,
                                               reply_payload=reply_payload, timeout=timeout)
        body_max = reply_body_max(opcode, length, reply_payload)
        reply_bytes = stuffed_max(body_max)
        self._last_reply_max = body_max
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
                reply = self._await_reply(tag, _Wait(self._reader, seconds, max_bytes,
                                                     reply_bytes))
            except LinkTimeout as e:
                last = str(e)
                timed_out = True
                continue
            except TransportError as e:
                raise LinkError(str(e)) from None
            # WAIT's own TIMEOUT (the engine still busy) comes with the status byte; a
            # TIMEOUT without it is the inter-byte watchdog's (a truncated request): retried.
            wait_timeout = (opcode == Opcode.WAIT and reply.status == Status.TIMEOUT.value
                            and len(reply.payload) == 1)
            if reply.status in RETRY_STATUSES and not wait_timeout:
                last = f"device reported {_status_name(reply.status)}"
                timed_out = False
                continue
            if reply.status != Status.OK.value and not wait_timeout:
                raise DeviceError(f"{opcode.name} refused by the device: "
                                  f"{_status_name(reply.status)}", reply.status)
            self.stats["payload_out"] += len(payload)
            self.stats["payload_in"] += len(reply.payload)
            return reply
        # Typed by the last failure: LinkTimeout (no valid reply) or LinkError (the device
        # kept reporting link errors); both are LinkErrors.
        error = LinkTimeout if timed_out else LinkError
        if not timed_out:
            hint = ": the link is damaging requests (cable, baud rate error?)"
        elif not self.stats["valid_replies"]:
            hint = (": wrong port or baud rate, or not a deconvsr board?" if self.byte_time
                    else ": is the device running?")
        else:
            hint = ": the device stopped answering"
        raise error(f"{opcode.name}: no valid reply after {self.retries + 1} attempts, the "
                    f"last: {last}{hint}")

    def _await_reply(self, tag, w: _Wait) -> Reply:
        while True:
            body = self._reader.frame(w)
            self.stats["bytes_in"] += len(body) + 1
            reply = self.decode_reply(body)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<- %s", hexdump(body))
            if reply is None:
                log.info("reply failed its CRC or was cut short: %s", hexdump(body))
                raise LinkTimeout("corrupted reply")
            if reply.tag == tag:
                self.stats["valid_replies"] += 1
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
        raw = self.read(Space.ID, 0, EngineSpec.ID_BYTES_MAX)
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

    def wait(self, expected_cycles: int | None = None, *,
             timeout_cycles: int | None = None) -> int:
        """Wait until the engine is not busy; returns its status byte.

        ``expected_cycles``: how long the run should take (engine cycles, e.g.
        :meth:`Program.expected_cycles <deconvsr.sw.program.Program.expected_cycles>`); the
        run may take ``run_margin`` times that plus :data:`RUN_SLACK_CYCLES` (or exactly
        ``timeout_cycles``; neither: :data:`DEFAULT_RUN_CYCLES`). The device counts them (at
        the link clock, which is never faster than the engine's); the host polls in slices.

        Raises :class:`EngineError` if the engine reports an error or is still busy after
        that many cycles; :class:`LinkError` if the device stops answering.
        """
        if timeout_cycles is None:
            timeout_cycles = DEFAULT_RUN_CYCLES if expected_cycles is None else \
                math.ceil(expected_cycles * self.run_margin) + RUN_SLACK_CYCLES
        clk_hz = self.info.link["clk_hz"] if self.info and self.info.link["clk_hz"] else \
            48_000_000
        slice_cycles = self.wait_slice_cycles or clk_hz
        unit = protocol.WAIT_UNIT
        left = max(1, -(-int(timeout_cycles) // unit))        # in WAIT units
        while True:
            units = min(left, max(1, slice_cycles // unit), (1 << 24) - 1)
            r = self.request(Opcode.WAIT, addr=units, extra_s=units * unit / clk_hz)
            left -= units
            status = r.payload[0] if r.payload else 0
            if r.status == Status.OK.value and not status & BusStatus.BUSY:
                break
            if left <= 0:
                expected = "" if expected_cycles is None else f" (expected {expected_cycles:,})"
                raise EngineError(f"the engine is still busy after {int(timeout_cycles):,} "
                                  f"cycles{expected}")
        if status & BusStatus.ERROR:
            raise EngineError(f"the engine reported an error (status {status:#04x})")
        return status

    @staticmethod
    def step_payload(in_data: bytes, out_addr: int, out_len: int, polls: int) -> bytes:
        """A STEP request's payload: its :class:`~deconvsr.protocol.StepHeader` and the IN
        bytes (the request's header carries the START byte and the IN address)."""
        hdr = protocol.pack(StepHeader, out_addr=out_addr & 0xFFFF, out_len=out_len,
                            polls=polls)
        payload = hdr + bytes(in_data)
        if len(payload) > 0xFFFF:
            raise ValueError(f"STEP payload of {len(payload)} bytes exceeds 65535")
        return payload

    def step(self, first: int, count: int, in_addr: int, in_data: bytes, out_addr: int,
             out_len: int, *, polls: int = 0xFFFF, timeout=None) -> bytes:
        """One STEP of a streamed frame (:mod:`deconvsr.protocol`): ``in_data`` to ``IN`` from
        ``in_addr``, then, once the engine is idle (at most ``polls`` x WAIT_UNIT cycles),
        start ``count`` descriptors from ``first`` (each its next band); returns the ``out_len``
        bytes of ``OUT`` from ``out_addr`` read while they run.

        Raises :class:`EngineError` if the engine stayed busy, :class:`LinkError` if the link
        fails (a retry is safe: the device runs a step once per tag)."""
        payload = self.step_payload(in_data, out_addr, out_len, polls)
        clk_hz = self.info.link["clk_hz"] if self.info and self.info.link["clk_hz"] else \
            48_000_000
        try:
            # (the device may wait for the engine up to polls x WAIT_UNIT cycles first)
            r = self.request(Opcode.STEP, start_byte(count, first, keep=True) if count else 0,
                             in_addr, len(payload), payload,
                             extra_s=polls * protocol.WAIT_UNIT / clk_hz,
                             reply_payload=out_len, timeout=timeout)
        except LinkError as e:
            if "TIMEOUT" in str(e):
                raise EngineError(f"the engine is still busy after {polls} polls of "
                                  f"{protocol.WAIT_UNIT} cycles ({e})") from None
            raise
        if len(r.payload) != out_len:
            raise LinkError(f"STEP returned {len(r.payload)} bytes, asked for {out_len}")
        return r.payload

    def counters(self, n: int = 8) -> list[int]:
        raw = self.read(Space.COUNT, 0, 4 * n)
        return list(struct.unpack(f"<{n}I", raw))

    def link_stats(self) -> dict:
        r = self.request(Opcode.STATS)
        return protocol.unpack(LinkStats, r.payload)

    def reset(self):
        self.request(Opcode.RESET)
