"""A device that misbehaves on purpose, for the host's fault-injection tests.

The device side of the link is written here a second time, from the wire format's *text* (the
docstring of :mod:`deconvsr.protocol`), sharing no code with the host's protocol helpers
(``deconvsr.protocol.crc16/pack/stuff``, the driver's reader): a bug both of those had would
not cancel out in a test against this one. Only the engine's behaviour comes from the project:
RUN executes the layers on the NumPy twin (:class:`deconvsr.sim.engine_sim.EngineModel`), so the
device computes real pictures.

* :func:`crc16`, :func:`request_frame`, :func:`reply_frame`, :class:`Unstuffer`,
  :func:`parse_request`, :func:`parse_reply`: the wire format;
* :class:`WireDevice`: the device (bytes in, bytes out) with its memories and the engine twin;
* :class:`FaultDevice`: a :class:`WireDevice` on a TCP socket (``socket://127.0.0.1:PORT``,
  the URL pyserial opens: ``--device serial:socket://127.0.0.1:PORT``) that misbehaves as its
  ``fault`` says (:data:`FAULTS`).

    python -m deconvsr.sim.device.fault --fault silent-mid-run --spec tiny
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import threading
import time

from ...bus import Space
from ...spec import SPECS, EngineSpec
from ..engine_sim import EngineModel

__all__ = ["crc16", "stuff", "request_frame", "reply_frame", "Unstuffer", "parse_request",
           "parse_reply", "reply_splitter", "request_splitter", "WireDevice", "FaultDevice",
           "FAULTS", "OP", "ST", "SPACE", "tiny_spec"]

# --- the wire format, from the text ----------------------------------------------------------

FEND, FESC, FIDLE, XOR = 0xC0, 0xDB, 0xDD, 0x20
OP = {"IDENTIFY": 0x01, "READ": 0x02, "WRITE": 0x03, "VERIFY": 0x04, "RUN": 0x05, "WAIT": 0x06,
      "RESET": 0x07, "STATS": 0x08}
ST = {"OK": 0x00, "BAD_CRC": 0x01, "BAD_OPCODE": 0x02, "BAD_SPACE": 0x03, "ABORTED": 0x04,
      "TIMEOUT": 0x05, "OVERRUN": 0x06}
SPACE = {"ID": 0, "CTRL": 1, "DESC": 2, "WEIGHT": 3, "BIAS": 4, "ACT": 5, "OUT": 6, "COUNT": 7}
WRITABLE = {2, 3, 4, 5, 6}
WAIT_UNIT = 256
LINK_MAGIC = 0x4C44
BUSY, DONE = 1, 2


def crc16(data: bytes) -> int:
    """CRC-16/IBM-3740 (CCITT-FALSE): polynomial 0x1021, initial 0xFFFF, no reflection, no
    final XOR; bit by bit (check value: ``crc16(b"123456789") == 0x29B1``)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    out = bytearray([FEND])
    for b in body:
        out += bytes([FESC, b ^ XOR]) if b in (FEND, FESC, FIDLE) else bytes([b])
    return bytes(out)


def _crc_be(data: bytes) -> bytes:
    return crc16(data).to_bytes(2, "big")


def request_frame(opcode: int, tag: int, space: int = 0, addr: int = 0, length: int = 0,
                  payload: bytes = b"") -> bytes:
    """A request on the wire: opcode, tag, space (1 byte each), addr (3 bytes LE), length
    (2 bytes LE), CRC MSB first; a payload (WRITE) with its own CRC."""
    hdr = bytes([opcode, tag, space]) + addr.to_bytes(3, "little") + length.to_bytes(2, "little")
    body = hdr + _crc_be(hdr)
    if payload:
        body += payload + _crc_be(payload)
    return stuff(body)


def reply_frame(status: int, tag: int, opcode: int, payload: bytes = b"", *,
                length: int | None = None) -> bytes:
    """A reply on the wire: status, tag, opcode (1 byte each), length (2 bytes LE), CRC; a
    payload with its CRC when length > 0 (``length`` may lie, for fault tests)."""
    n = len(payload) if length is None else length
    hdr = bytes([status, tag, opcode]) + n.to_bytes(2, "little")
    body = hdr + _crc_be(hdr)
    if payload:
        body += payload + _crc_be(payload)
    return stuff(body)


class Unstuffer:
    """Bytes in (:meth:`feed`), frame bodies out: everything between a FEND and the next (or
    until ``complete(body)`` says the frame is whole), fillers dropped, escapes undone. A body
    cut short by a new FEND comes out as ``(body, "aborted")``."""

    def __init__(self, complete):
        self.complete = complete
        self.body = None
        self.esc = False

    def feed(self, data: bytes):
        out = []
        for b in data:
            if b == FEND:
                if self.body:
                    out.append((bytes(self.body), "aborted"))
                self.body, self.esc = bytearray(), False
                continue
            if self.body is None or b == FIDLE:
                continue
            if b == FESC:
                self.esc = True
                continue
            self.body.append(b ^ XOR if self.esc else b)
            self.esc = False
            if self.complete(self.body):
                out.append((bytes(self.body), "ok"))
                self.body = None
        return out


def _request_complete(body) -> bool:
    if len(body) < 10:
        return False
    if crc16(bytes(body[:8])) != int.from_bytes(body[8:10], "big"):
        return True                                  # a bad header ends the frame
    length = int.from_bytes(body[6:8], "little")
    if body[0] != OP["WRITE"] or not length:
        return True
    return len(body) >= 10 + length + 2


def _reply_complete(body) -> bool:
    if len(body) < 7:
        return False
    if crc16(bytes(body[:5])) != int.from_bytes(body[5:7], "big"):
        return True
    length = int.from_bytes(body[3:5], "little")
    return not length or len(body) >= 7 + length + 2


def parse_request(body: bytes) -> dict | None:
    """A request's fields (``status``: what the device should answer, OK or BAD_CRC)."""
    if len(body) < 10:
        return None
    op, tag, space = body[0], body[1], body[2]
    addr, length = int.from_bytes(body[3:6], "little"), int.from_bytes(body[6:8], "little")
    req = {"opcode": op, "tag": tag, "space": space, "addr": addr, "length": length,
           "payload": b"", "status": ST["OK"]}
    if crc16(body[:8]) != int.from_bytes(body[8:10], "big"):
        req["status"] = ST["BAD_CRC"]
    elif op == OP["WRITE"] and length:
        payload = body[10:10 + length]
        if len(payload) != length or crc16(payload) != int.from_bytes(body[10 + length:], "big"):
            req["status"] = ST["BAD_CRC"]
        req["payload"] = payload
    return req


def parse_reply(body: bytes) -> dict | None:
    """A reply's fields, or None if it fails a CRC or is incomplete."""
    if len(body) < 7 or crc16(body[:5]) != int.from_bytes(body[5:7], "big"):
        return None
    length = int.from_bytes(body[3:5], "little")
    payload = body[7:7 + length]
    if length and (len(payload) != length or
                   crc16(payload) != int.from_bytes(body[7 + length:9 + length], "big")):
        return None
    return {"status": body[0], "tag": body[1], "opcode": body[2], "payload": payload}


def reply_splitter():
    """An :class:`Unstuffer` for replies (a host's view of the line)."""
    return Unstuffer(_reply_complete)


def request_splitter():
    """An :class:`Unstuffer` for requests (a device's view of the line)."""
    return Unstuffer(_request_complete)


# --- the device ------------------------------------------------------------------------------

def tiny_spec():
    """An engine spec with buffers so small that small frames are tiled (the host's tiled
    path, as on a real board), for the shipped edge networks."""
    return EngineSpec(name="tiny", lanes=8, act_depth=512, weight_depth=1024, bias_depth=128,
                      out_bytes=1024, max_layers=4, drain_lanes=2)


class WireDevice:
    """The device side: ``receive(bytes)`` returns the reply bytes for every request completed.

    ``spec``: an :class:`~deconvsr.spec.EngineSpec` (or "tiny", a spec whose buffers are small
    enough that small frames are tiled); ``clk_hz`` the link clock it reports; ``run_s``:
    the real seconds a RUN keeps the engine busy (WAIT answers TIMEOUT until then, bounded by
    its own ``addr x 256`` cycles at ``clk_hz``). ``requests``: every request received
    (a dict per :func:`parse_request`), for tests. ``intercept(req)``: if it returns bytes,
    they are the reply and the request is not executed.
    """

    def __init__(self, spec="tiny", *, clk_hz=48_000_000, run_s=0.0):
        if spec == "tiny":
            spec = tiny_spec()
        elif isinstance(spec, str):
            spec = SPECS[spec]
        self.spec, self.clk_hz, self.run_s = spec, clk_hz, run_s
        self.engine = EngineModel(spec)
        self.unstuffer = request_splitter()
        self.requests = []
        self.runs = 0
        self.last = None                 # (opcode, tag) of the last RUN/RESET executed
        self.busy_until = 0.0
        self.stats = [0, 0, 0, 0]        # frames, crc errors, framing errors, overruns
        self.intercept = None

    def receive(self, data: bytes) -> bytes:
        out = b""
        for body, how in self.unstuffer.feed(data):
            req = parse_request(body)
            if how == "aborted" or req is None:
                self.stats[2] += 1
                out += reply_frame(ST["ABORTED"], req["tag"] if req else 0,
                                   req["opcode"] if req else 0)
                continue
            self.requests.append(req)
            if req["status"] != ST["OK"]:
                self.stats[1] += 1
                out += reply_frame(req["status"], req["tag"], req["opcode"])
                continue
            answer = self.intercept(req) if self.intercept else None
            out += self.execute(req) if answer is None else answer
        return out

    def _mem(self, space):
        return self.engine.mem.get(Space(space)) if space in range(8) else None

    def _status(self) -> int:
        return BUSY if time.monotonic() < self.busy_until else DONE * (self.runs > 0)

    def execute(self, req) -> bytes:
        op, tag, space, addr, length = (req[k] for k in ("opcode", "tag", "space", "addr",
                                                         "length"))

        def ok(payload=b""):
            self.stats[0] += 1
            return reply_frame(ST["OK"], tag, op, payload)

        if op == OP["IDENTIFY"]:
            self.last = None
            return ok(struct.pack("<HBBII", LINK_MAGIC, 1, 0, self.clk_hz, 0))
        if op == OP["READ"]:
            if space == SPACE["CTRL"]:
                return ok(bytes([self._status()]).ljust(length, b"\0")[:length])
            mem = self._mem(space)
            data = bytes(mem[addr:addr + length]) if mem is not None else b""
            return ok(data.ljust(length, b"\0"))
        if op == OP["WRITE"]:
            if space not in WRITABLE:
                return reply_frame(ST["BAD_SPACE"], tag, op)
            self.engine.write(space, addr, req["payload"])
            return ok()
        if op == OP["VERIFY"]:
            mem = self._mem(space)
            data = bytes(mem[addr:addr + length]) if mem is not None else b""
            return ok(_crc_be(data.ljust(length, b"\0")))
        if op in (OP["RUN"], OP["RESET"]):
            if self.last != (op, tag):
                self.last = (op, tag)
                if op == OP["RUN"]:
                    self.runs += 1
                    self.engine.start(length)
                    self.busy_until = time.monotonic() + self.run_s
                else:
                    self.busy_until = 0.0
                    self.stats = [0, 0, 0, 0]
            return ok()
        if op == OP["WAIT"]:
            left = self.busy_until - time.monotonic()
            bound = addr * WAIT_UNIT / self.clk_hz
            if left > 0:
                time.sleep(min(left, bound))
            status = self._status()
            self.stats[0] += 1
            return reply_frame(ST["TIMEOUT"] if status & BUSY else ST["OK"], tag, op,
                               bytes([status]))
        if op == OP["STATS"]:
            return ok(struct.pack("<4H", *(min(v, 0xFFFF) for v in self.stats)))
        self.stats[2] += 1
        return reply_frame(ST["BAD_OPCODE"], tag, op)


# --- on a socket, with faults ----------------------------------------------------------------

#: What :class:`FaultDevice` can do wrong (``None``: nothing).
FAULTS = {
    "garbage": "streams random bytes with no frame start at the line rate, from the connection on "
               "(a wrong baud rate or the wrong tty)",
    "filler": "answers the first request with a frame start and then endless fillers",
    "partial": "sends only the first half of every reply",
    "silent": "never answers",
    "silent-mid-run": "answers until an engine run starts, then never again",
    "close-mid-run": "closes the connection when an engine run starts",
    "slow": "answers correctly, each reply byte by byte at a tenth of the line rate",
    "bad-tag": "answers every request's first attempt with an error reply whose tag is damaged",
    "noise-between": "answers correctly, with a burst of noise before every reply",
}


class FaultDevice:
    """A :class:`WireDevice` on ``127.0.0.1:port`` (one connection at a time) that misbehaves
    as ``fault`` says (:data:`FAULTS`). ``byte_rate``: bytes per second of the emulated line
    (3 Mbaud: 300,000) for streamed garbage and slow replies; ``runs_before``: engine runs
    the "-mid-run" faults let pass first. A context manager; ``url`` is what pyserial opens."""

    def __init__(self, fault=None, *, spec="tiny", byte_rate=300_000, seed=0, run_s=0.0,
                 port=0, runs_before=0):
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, not {fault!r}")
        self.fault, self.byte_rate, self.runs_before = fault, byte_rate, runs_before
        self.rng = random.Random(seed)
        self.device = WireDevice(spec, run_s=run_s)
        self._srv = socket.create_server(("127.0.0.1", port))
        self.port = self._srv.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fault-device")
        self.bytes_sent = 0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        try:
            self._srv.close()
        except OSError:
            pass
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _serve(self):
        self._srv.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    self._session(conn)
                except OSError:             # the host went away
                    pass

    def _send(self, conn, data: bytes, rate=None):
        """Send ``data``, paced at ``rate`` bytes/s (None: at once)."""
        if not rate:
            conn.sendall(data)
            self.bytes_sent += len(data)
            return
        chunk = max(1, int(rate * 0.01))
        for i in range(0, len(data), chunk):
            if self._stop.is_set():
                return
            conn.sendall(data[i:i + chunk])
            self.bytes_sent += len(data[i:i + chunk])
            time.sleep(len(data[i:i + chunk]) / rate)

    def _stream(self, conn, make):
        """Send ``make(n)`` bytes at the line rate until the host goes away."""
        conn.setblocking(False)
        while not self._stop.is_set():
            try:
                if conn.recv(1 << 16) == b"":
                    return
            except BlockingIOError:
                pass
            n = int(self.byte_rate * 0.01)
            try:
                conn.sendall(make(n))
            except BlockingIOError:
                pass
            self.bytes_sent += n
            time.sleep(0.01)

    def _session(self, conn):
        f, dev = self.fault, self.device
        if f == "bad-tag":
            seen = set()

            def first_attempt_damaged(req):
                key = (req["opcode"], req["tag"])
                if key in seen:
                    return None
                seen.add(key)
                return reply_frame(ST["BAD_CRC"], (req["tag"] + 77) % 256, req["opcode"])
            dev.intercept = first_attempt_damaged
        if f == "garbage":
            # no FEND: random bytes below it and above it
            return self._stream(conn, lambda n: bytes(
                b if b != FEND else 0x55 for b in self.rng.randbytes(n)))
        conn.settimeout(0.1)
        running = False
        filler = False
        while not self._stop.is_set():
            if filler:
                self._send(conn, bytes([FIDLE]) * int(self.byte_rate * 0.01))
                time.sleep(0.01)
                continue
            try:
                data = conn.recv(1 << 16)
            except socket.timeout:
                continue
            if not data:
                return
            n_before = len(dev.requests)
            out = dev.receive(data)
            new = dev.requests[n_before:]
            if any(r["opcode"] == OP["RUN"] and r["status"] == ST["OK"] for r in new) and \
                    dev.runs > self.runs_before:
                if f == "close-mid-run":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if f == "silent-mid-run":
                    running = True
                    self._send(conn, out)        # the RUN itself is acknowledged
                    continue
            if f == "silent" or running:
                continue
            if f == "filler" and new:
                self._send(conn, bytes([FEND]))
                filler = True
                continue
            if f == "partial":
                out = out[:max(1, len(out) // 2)]
            elif f == "slow":
                self._send(conn, out, rate=self.byte_rate / 10)
                continue
            elif f == "noise-between":
                out = bytes(self.rng.randrange(0, FEND) for _ in range(40)) + out
            self._send(conn, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deconvsr.sim.device.fault",
                                description="A misbehaving deconvsr device on a TCP port.")
    p.add_argument("--fault", choices=sorted(FAULTS), help="what to do wrong (default: nothing)")
    p.add_argument("--spec", default="tiny", help="engine spec it reports (default: tiny)")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    with FaultDevice(args.fault, spec=args.spec, port=args.port) as dev:
        print(f"--device serial:{dev.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
