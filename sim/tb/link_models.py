"""Host-side models shared by the link testbenches (``sim/tb/link_*.py``) and their pytest drivers:

* :class:`ReplyParser`: incremental reply-frame parser (bytes in, decoded replies out);
* :func:`fuzz_strings`: the fuzz corpus (seeded): garbage, corrupted valid frames, sync/escape
  soup, valid frames, concatenations;
* :func:`run_link_tb`: convert + Verilate + run a cocotb testbench, with the Verilator build
  serialised across processes (this machine's 2 cores: never two builds at once).

Nothing here drives simulator signals, so it imports without cocotb.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
from pathlib import Path

from ... import protocol
from ...bus import Space
from ...protocol import ESCAPE_XOR, FEND, FESC, FIDLE, Opcode
from ...spec import SPECS
from ...sw.host.driver import Driver
from ..device import cache_dir
from ..harness import run_cocotb

__all__ = ["ReplyParser", "fuzz_strings", "FUZZ_KINDS", "identify_ok", "run_link_tb",
           "build_root"]


class ReplyParser:
    """Feed line bytes (:meth:`feed`); complete reply frames come out of :meth:`feed` as
    ``(Reply or None, body)`` (None: CRC failed or cut short by a new FEND)."""

    def __init__(self):
        self.body = None       # None: hunting for FEND
        self.escaped = False
        self.need = None

    def feed(self, data) -> list:
        out = []
        hdr_n = protocol.REPLY_HEADER_BYTES + protocol.CRC_BYTES
        for b in data:
            if b == FEND:
                if self.body:
                    out.append((None, bytes(self.body)))
                self.body, self.escaped, self.need = bytearray(), False, hdr_n
                continue
            if self.body is None or b == FIDLE:
                continue
            if b == FESC:
                self.escaped = True
                continue
            self.body.append(b ^ ESCAPE_XOR if self.escaped else b)
            self.escaped = False
            if len(self.body) == hdr_n:
                hdr = bytes(self.body[:protocol.REPLY_HEADER_BYTES])
                if protocol.crc16(hdr) == int.from_bytes(self.body[-2:], "big"):
                    length = int.from_bytes(hdr[3:5], "little")
                    if length:
                        self.need = hdr_n + length + protocol.CRC_BYTES
            if len(self.body) >= self.need:
                body = bytes(self.body)
                out.append((Driver.decode_reply(body), body))
                self.body = None
        return out


def identify_ok(reply, tag) -> bool:
    """``reply`` is a good IDENTIFY reply for ``tag`` (status OK, magic, version)."""
    if reply is None or reply.tag != tag or reply.opcode != Opcode.IDENTIFY.value:
        return False
    if reply.status != protocol.Status.OK.value:
        return False
    if len(reply.payload) != protocol.LinkInfo.as_shape().size // 8:
        return False
    info = protocol.unpack(protocol.LinkInfo, reply.payload)
    return info["magic"] == protocol.LINK_MAGIC and info["version"] == protocol.PROTOCOL_VERSION


FUZZ_KINDS = ("garbage", "corrupted", "soup", "valid", "mixed")
_SPECIAL = (FEND, FESC, FIDLE)


def _random_request(rng: random.Random) -> bytes:
    """A well-formed request with small lengths (so replies stay short), any opcode, including
    undefined ones."""
    op = rng.choice([o.value for o in Opcode] + [0x00, 0x7F, 0xFF])
    space = rng.choice([s.value for s in Space] + [8, 15])
    length = rng.randrange(0, 41)
    addr = rng.randrange(0, 2048)
    payload = b""
    if op == Opcode.RUN.value:
        length = rng.randrange(0, 4)
    elif op == Opcode.WAIT.value:
        addr = rng.randrange(0, 8)
    if op == Opcode.WRITE.value and length:
        payload = bytes(rng.choice(_SPECIAL) if rng.random() < 0.2 else rng.randrange(256)
                        for _ in range(length))
    hdr = protocol.pack(protocol.RequestHeader, opcode=op, tag=rng.randrange(256), space=space,
                        addr=addr, length=length)
    body = hdr + protocol.crc16(hdr).to_bytes(2, "big")
    if payload:
        body += payload + protocol.crc16(payload).to_bytes(2, "big")
    return protocol.stuff(body)


def _corrupt(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randrange(1, 4)):
        if not b:
            break
        i = rng.randrange(len(b))
        what = rng.randrange(6)
        if what == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif what == 1:
            del b[i]
        elif what == 2:
            b.insert(i, b[i])
        elif what == 3:
            b.insert(i, rng.choice(_SPECIAL))
        elif what == 4:
            b[i] = rng.randrange(256)
        else:
            del b[i:]
    return bytes(b)


def fuzz_strings(seed: int, n: int, max_len: int = 64):
    """``n`` (kind, bytes) pairs, lengths 0..about ``max_len`` (a corrupted frame may be a few
    bytes longer), reproducible from ``seed``."""
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.choice(FUZZ_KINDS)
        if kind == "garbage":
            s = bytes(rng.randrange(256) for _ in range(rng.randrange(0, max_len + 1)))
        elif kind == "soup":
            s = bytes(rng.choice(_SPECIAL) if rng.random() < 0.6 else rng.randrange(256)
                      for _ in range(rng.randrange(0, max_len + 1)))
        elif kind == "valid":
            s = _random_request(rng)
        elif kind == "corrupted":
            s = _corrupt(rng, _random_request(rng))
        else:
            s = b""
            while len(s) < max_len and rng.random() < 0.8:
                part = rng.choice([_random_request(rng), _corrupt(rng, _random_request(rng)),
                                   bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))])
                s += part
            s = s[:max_len + 8]
        yield kind, s


def build_root() -> Path:
    root = cache_dir() / "verilator"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_link_tb(make_top, test_module: str, *, toplevel: str, env: dict, result_name="result"):
    """Run ``test_module`` against ``make_top()`` (built under the shared cache, one build at a
    time across processes); returns the JSON the testbench wrote to ``$DECONVSR_RESULT``."""
    root = build_root()
    bdir = root / f"tb_{toplevel}"
    result = bdir / f"{result_name}-{os.getpid()}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    if result.exists():
        result.unlink()
    with open(root / "link-tb.lock", "w") as lock:
        # One link testbench at a time: builds of one toplevel share a directory, and the
        # machine has 2 cores (a second Verilator build would fight the first).
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_cocotb(make_top, test_module, toplevel=toplevel, build_dir=bdir,
                   env={**{k: str(v) for k, v in env.items()}, "DECONVSR_RESULT": str(result)})
    data = json.loads(result.read_text())
    result.unlink()
    return data


# --- an in-process device model (host-side tests without a simulator) ------------------------

class LinkModel:
    """The device side of :mod:`deconvsr.protocol` in Python, as a
    :class:`~deconvsr.sw.host.transport.Transport` (``write`` request bytes, ``read`` reply bytes;
    ``read`` never sleeps: an empty read is an instant timeout). Spaces are byte arrays;
    ``ID`` holds ``spec.id_bytes()``. Like the gateware: header and payload CRCs are checked
    (error reply ``BAD_CRC``), a ``FEND`` inside a frame gives ``ABORTED``, WRITE to
    ID/CTRL/COUNT gives ``BAD_SPACE``, RUN and STEP are not repeated for a repeated tag (STEP
    writes IN and answers with OUT, both rings; its "engine" is always idle).

    ``corrupt_memory``: ``(space, addr)`` whose written byte is stored XOR 0x01 (a faulty RAM,
    for verification tests). ``log``: every decoded request header, in order.
    """

    def __init__(self, spec="sim", *, space_bytes=1 << 16, corrupt_memory=None):
        self.spec = SPECS[spec] if isinstance(spec, str) else spec
        self.mem = {s.value: bytearray(space_bytes) for s in Space}
        ident = self.spec.id_bytes()
        self.mem[Space.ID.value][:len(ident)] = ident
        self.corrupt = corrupt_memory
        self.out = bytearray()
        self.log = []
        self.runs = 0
        self._last_run = None
        self._body = None
        self._esc = False
        self.name = "model"

    # Transport interface
    def write(self, data: bytes) -> None:
        for b in data:
            self._byte(b)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        d = bytes(self.out[:max_bytes])
        del self.out[:max_bytes]
        return d

    def close(self):
        pass

    def _byte(self, b):
        if b == FEND:
            if self._body is not None and len(self._body):
                self._error(protocol.Status.ABORTED)
            self._body, self._esc = bytearray(), False
            return
        if self._body is None or b == FIDLE:
            return
        if b == FESC:
            self._esc = True
            return
        self._body.append(b ^ ESCAPE_XOR if self._esc else b)
        self._esc = False
        self._check()

    def _header(self):
        return protocol.unpack(protocol.RequestHeader, bytes(self._body[:protocol.HEADER_BYTES]))

    def _error(self, status):
        tag = op = 0
        if len(self._body) >= protocol.HEADER_BYTES:
            h = self._header()
            tag, op = h["tag"], h["opcode"]
        self._reply(status, tag, op)
        self._body = None

    def _check(self):
        n = protocol.HEADER_BYTES + protocol.CRC_BYTES
        body = self._body
        if len(body) < n:
            return
        hdr = bytes(body[:protocol.HEADER_BYTES])
        if protocol.crc16(hdr) != int.from_bytes(body[protocol.HEADER_BYTES:n], "big"):
            return self._error(protocol.Status.BAD_CRC)
        h = self._header()
        if h["opcode"] in (Opcode.WRITE.value, Opcode.STEP.value) and h["length"]:
            if len(body) < n + h["length"] + protocol.CRC_BYTES:
                return
            payload = bytes(body[n:n + h["length"]])
            if protocol.crc16(payload) != int.from_bytes(body[n + h["length"]:], "big"):
                return self._error(protocol.Status.BAD_CRC)
        else:
            payload = b""
        self._body = None
        self.log.append(h)
        self._execute(h, payload)

    def _reply(self, status, tag, op, payload=b""):
        st = status.value if hasattr(status, "value") else status
        hdr = protocol.pack(protocol.ReplyHeader, status=st, tag=tag, opcode=op,
                            length=len(payload))
        body = hdr + protocol.crc16(hdr).to_bytes(2, "big")
        if payload:
            body += payload + protocol.crc16(payload).to_bytes(2, "big")
        self.out += protocol.stuff(body)

    def _execute(self, h, payload):
        S = protocol.Status
        op, tag, space, addr, length = (h[k] for k in ("opcode", "tag", "space", "addr",
                                                       "length"))
        mem = self.mem.get(space)
        if op == Opcode.IDENTIFY.value:
            self._last_run = None
            info = protocol.pack(protocol.LinkInfo, magic=protocol.LINK_MAGIC,
                                 version=protocol.PROTOCOL_VERSION, kind=0, clk_hz=48_000_000,
                                 baud=0)
            return self._reply(S.OK, tag, op, info)
        if op == Opcode.READ.value:
            data = bytes(mem[addr:addr + length]) if mem is not None else b""
            return self._reply(S.OK, tag, op, data.ljust(length, b"\0"))
        if op == Opcode.WRITE.value:
            if space not in protocol.WRITABLE_SPACES:
                return self._reply(S.BAD_SPACE, tag, op)
            mem[addr:addr + len(payload)] = payload
            if self.corrupt and self.corrupt[0] == space and \
                    addr <= self.corrupt[1] < addr + len(payload):
                mem[self.corrupt[1]] ^= 0x01
            return self._reply(S.OK, tag, op)
        if op == Opcode.VERIFY.value:
            data = bytes(mem[addr:addr + length]) if mem is not None else b""
            return self._reply(S.OK, tag, op, protocol.crc16(data.ljust(length, b"\0"))
                               .to_bytes(2, "big"))
        if op in (Opcode.RUN.value, Opcode.RESET.value):
            if self._last_run != (op, tag):
                self.runs += op == Opcode.RUN.value
                self._last_run = (op, tag)
            return self._reply(S.OK, tag, op)
        if op == Opcode.WAIT.value:
            return self._reply(S.OK, tag, op, bytes([2]))
        if op == Opcode.STATS.value:
            return self._reply(S.OK, tag, op, bytes(8))
        if op == Opcode.STEP.value:
            n = protocol.STEP_HEADER_BYTES
            if len(payload) < n:
                return self._reply(S.BAD_OPCODE, tag, op)
            sh = protocol.unpack(protocol.StepHeader, payload[:n])
            ring = self.mem[Space.IN.value]
            for i, b in enumerate(payload[n:]):     # (IN and OUT are rings)
                ring[(addr + i) % len(ring)] = b
            if self._last_run != (op, tag):
                self.runs += space & 0x0F != 0
                self._last_run = (op, tag)
            out = self.mem[Space.OUT.value]
            data = bytes(out[(sh["out_addr"] + i) % len(out)] for i in range(sh["out_len"]))
            return self._reply(S.OK, tag, op, data)
        return self._reply(S.BAD_OPCODE, tag, op)
