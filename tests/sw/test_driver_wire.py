"""The host driver against a scripted device whose frames are built by a second implementation
of the wire format (:mod:`deconvsr.sim.device.fault`, written from the protocol's text, not
from the host's helpers): the driver's rare paths (OVERRUN, WAIT's TIMEOUT, an error reply with
a damaged tag), its encoding, and its deadlines against a device that sends garbage, fillers,
partial replies or nothing."""

import binascii
import random
import time

import pytest

from deconvsr.bus import Space
from deconvsr.protocol import Opcode
from deconvsr.spec import SPECS
from deconvsr.sim.device.fault import (FEND, FIDLE, OP, ST, crc16, parse_request, reply_frame,
                                       request_frame, request_splitter)
from deconvsr.sw.host.driver import (NOISE_BYTES, DeviceError, Driver, EngineError, LinkError,
                                     LinkTimeout, VerifyError)
from deconvsr.sw.host.transport import Transport

LINK_INFO = bytes.fromhex("444c") + bytes([1, 0]) + (48_000_000).to_bytes(4, "little") + bytes(4)


class Scripted(Transport):
    """A device played by ``answer(req, n)``: every request the host writes is split and parsed
    independently (``req`` per :func:`parse_request`; ``n``: how many times this tag and opcode
    came before) and ``answer`` returns the bytes the device sends back, or a callable
    ``stream(max_bytes)`` that keeps giving bytes on every read (a device that never stops).
    Reads with nothing to give wait their whole timeout, as a real port does."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.splitter = request_splitter()
        self.requests = []
        self.inbox = bytearray()
        self.stream = None
        self.seen = {}

    def write(self, data):
        for body, how in self.splitter.feed(data):
            req = parse_request(body)
            assert how == "ok" and req and req["status"] == ST["OK"], (how, body)
            self.requests.append(req)
            key = (req["opcode"], req["tag"])
            n = self.seen.get(key, 0)
            self.seen[key] = n + 1
            got = self.answer(req, n)
            if callable(got):
                self.stream = got
            else:
                self.inbox += got

    def read(self, max_bytes, timeout):
        if self.inbox:
            data = bytes(self.inbox[:max_bytes])
            del self.inbox[:max_bytes]
            return data
        if self.stream is not None:
            time.sleep(0.001)
            return self.stream(max_bytes)
        time.sleep(timeout)
        return b""


def echo_device(mem=None):
    """A well-behaved scripted device: IDENTIFY (and the ID space of spec "sim"), READ/WRITE of
    one memory for the other spaces, RUN, WAIT (done)."""
    mem = bytearray(4096) if mem is None else mem
    ident = SPECS["sim"].id_bytes()

    def answer(req, n):
        op, tag = req["opcode"], req["tag"]
        if op == OP["IDENTIFY"]:
            return reply_frame(ST["OK"], tag, op, LINK_INFO)
        if op == OP["READ"] and req["space"] == Space.ID.value:
            return reply_frame(ST["OK"], tag, op, ident[:req["length"]].ljust(req["length"],
                                                                              b"\0"))
        if op == OP["READ"]:
            return reply_frame(ST["OK"], tag, op, bytes(mem[req["addr"]:req["addr"] +
                                                            req["length"]]))
        if op == OP["WRITE"]:
            mem[req["addr"]:req["addr"] + len(req["payload"])] = req["payload"]
            return reply_frame(ST["OK"], tag, op)
        if op == OP["WAIT"]:
            return reply_frame(ST["OK"], tag, op, bytes([2]))
        return reply_frame(ST["OK"], tag, op)
    return answer


def test_the_second_implementation_is_anchored():
    # CRC-16/IBM-3740's published check value, the standard library's CRC-CCITT (crc_hqx from
    # 0xFFFF is the same CRC), and a READ written out by hand from the text (tag 0x2A, space
    # ACT, addr 0x0102C0: its FEND byte escaped, length 3, CRC 0xDC92 MSB first).
    assert crc16(b"123456789") == 0x29B1
    rng = random.Random(0)
    for n in range(0, 300, 7):
        data = rng.randbytes(n)
        assert crc16(data) == binascii.crc_hqx(data, 0xFFFF)
    assert request_frame(OP["READ"], 0x2A, 5, 0x0102C0, 3) == bytes.fromhex(
        "c0 02 2a 05 db e0 02 01 03 00 dc 92")
    assert reply_frame(ST["OK"], 0x2A, OP["READ"], b"\xc0") == bytes.fromhex(
        "c0 00 2a 02 01 00") + crc16(bytes.fromhex("002a020100")).to_bytes(2, "big") + \
        bytes.fromhex("db e0") + crc16(b"\xc0").to_bytes(2, "big")


@pytest.mark.parametrize("op", list(Opcode))
def test_host_requests_match_the_text(op):
    rng = random.Random(op.value)
    payload = bytes(rng.choice([FEND, FIDLE, 0xDB, rng.randrange(256)]) for _ in range(40)) \
        if op == Opcode.WRITE else b""
    args = dict(tag=rng.randrange(1, 256), space=rng.randrange(8), addr=rng.randrange(1 << 24),
                length=len(payload) if payload else rng.randrange(1 << 16))
    assert Driver.encode(op, args["tag"], args["space"], args["addr"], args["length"],
                         payload) == request_frame(op.value, **args, payload=payload)


def test_host_reads_replies_built_from_the_text():
    data = bytes([FEND, 0xDB, FIDLE, 0, 255]) * 100
    mem = bytearray(4096)
    mem[100:600] = data
    t = Scripted(echo_device(mem))
    d = Driver(t, timeout=0.2)
    assert d.read(Space.ACT, 100, 500) == data
    d.write(Space.WEIGHT, 7, data)
    assert bytes(mem[7:507]) == data


def test_overrun_is_retried():
    def answer(req, n):
        if req["opcode"] == OP["READ"] and n == 0:
            return reply_frame(ST["OVERRUN"], req["tag"], req["opcode"])
        return echo_device(bytearray(b"abcdefgh" * 8))(req, n)
    t = Scripted(answer)
    d = Driver(t, timeout=5.0)
    t0 = time.monotonic()
    assert d.read(Space.ACT, 0, 8) == b"abcdefgh"
    assert time.monotonic() - t0 < 1.0                       # at once, not after a timeout
    reads = [r for r in t.requests if r["opcode"] == OP["READ"]]
    assert len(reads) == 2 and reads[0]["tag"] == reads[1]["tag"]
    assert d.stats["retries"] == 1


def test_refusals_are_not_retried():
    t = Scripted(lambda req, n: reply_frame(ST["BAD_SPACE"], req["tag"], req["opcode"]))
    with pytest.raises(DeviceError, match="BAD_SPACE"):
        Driver(t, timeout=0.2).write(Space.ACT, 0, b"x")
    assert len(t.requests) == 1


def test_error_reply_with_a_damaged_tag_is_retried_at_once():
    """The device could not read the request's header, so it could not read its tag either:
    its error reply is about the request in flight, whatever tag it carries."""
    device = echo_device()

    def answer(req, n):
        if n == 0:
            return reply_frame(ST["BAD_CRC"], (req["tag"] + 77) % 256, req["opcode"])
        return device(req, n)
    t = Scripted(answer)
    d = Driver(t, timeout=5.0)
    t0 = time.monotonic()
    d.write(Space.ACT, 0, b"abc")
    assert d.read(Space.ACT, 0, 3) == b"abc"
    assert time.monotonic() - t0 < 1.0
    assert d.stats["retries"] == 2


def _wait_device(busy_replies, *, watchdog_first=False):
    """WAIT answers "still busy" (TIMEOUT with the status byte) ``busy_replies`` times, then
    done; with ``watchdog_first``, every WAIT's first attempt gets the inter-byte watchdog's
    TIMEOUT (no status byte: a truncated request)."""
    left = [busy_replies]
    device = echo_device()

    def answer(req, n):
        op = req["opcode"]
        if op == OP["WAIT"]:
            if watchdog_first and n == 0:
                return reply_frame(ST["TIMEOUT"], req["tag"], op)
            if left[0] > 0:
                left[0] -= 1
                return reply_frame(ST["TIMEOUT"], req["tag"], op, bytes([1]))
            return reply_frame(ST["OK"], req["tag"], op, bytes([2]))
        return device(req, n)
    return answer


def test_wait_timeout_means_still_busy_not_a_link_error():
    t = Scripted(_wait_device(10 ** 6))
    d = Driver(t, timeout=0.5, wait_slice_cycles=1000 * 256)
    d.identify()
    with pytest.raises(EngineError, match="still busy after 3,000,000 cycles"):
        d.wait(timeout_cycles=3_000_000)
    waits = [r for r in t.requests if r["opcode"] == OP["WAIT"]]
    # 3,000,000 cycles in slices of 1,000 units of 256: 12 WAITs, each a new request
    assert [w["addr"] for w in waits] == [1000] * 11 + [719]
    assert len({w["tag"] for w in waits}) == 12 and d.stats["retries"] == 0


def test_wait_polls_until_done():
    t = Scripted(_wait_device(3))
    d = Driver(t, timeout=0.5, wait_slice_cycles=256)
    d.identify()
    assert d.wait(expected_cycles=100) == 2
    assert sum(r["opcode"] == OP["WAIT"] for r in t.requests) == 4


def test_wait_watchdog_timeout_is_retried():
    t = Scripted(_wait_device(0, watchdog_first=True))
    d = Driver(t, timeout=0.5)
    d.identify()
    assert d.wait(expected_cycles=1000) == 2
    waits = [r for r in t.requests if r["opcode"] == OP["WAIT"]]
    assert len(waits) == 2 and waits[0]["tag"] == waits[1]["tag"] and d.stats["retries"] == 1


def test_wait_bound_follows_the_expected_cycles():
    t = Scripted(_wait_device(10 ** 6))
    d = Driver(t, timeout=0.5, run_margin=2.0)
    d.identify()
    with pytest.raises(EngineError, match=r"expected 5,000,000"):
        d.wait(expected_cycles=5_000_000)
    units = sum(r["addr"] for r in t.requests if r["opcode"] == OP["WAIT"])
    assert units * 256 == pytest.approx(2 * 5_000_000 + (1 << 20), abs=256)


# --- deadlines: whatever the device sends, every wait ends ------------------------------------

def _garbage(rng):
    return lambda n: bytes(b if b != FEND else 0x55 for b in rng.randbytes(min(n, 4096)))


@pytest.mark.parametrize("what", ["garbage", "filler", "huge-length", "babble", "trickle",
                                  "partial", "silent"])
def test_every_wait_is_bounded(what):
    """A misbehaving device makes one bounded, typed error, whatever it sends: bytes that make
    no valid reply count against a budget (noise fails fast), and time is bounded even while
    bytes keep arriving."""
    rng = random.Random(1)
    timeout, retries = 0.3, 2
    stale = reply_frame(ST["OK"], 200, OP["READ"], b"x" * 100)
    if what == "garbage":                  # no frame start, ever (wrong baud rate)
        def answer(req, n):
            return _garbage(rng)
    elif what == "filler":                 # a frame start, then fillers for ever
        def answer(req, n):
            return lambda m: bytes([FEND]) + bytes([FIDLE]) * min(m, 4096)
    elif what == "huge-length":            # a valid header announcing 60,000 bytes, then noise
        def answer(req, n):
            head = reply_frame(ST["OK"], req["tag"], req["opcode"], length=60_000)
            sent = [False]

            def stream(m):
                if not sent[0]:
                    sent[0] = True
                    return head
                return bytes(rng.randrange(0, FEND) for _ in range(min(m, 1024)))
            return stream
    elif what == "babble":                 # valid replies, but never to this request
        def answer(req, n):
            return lambda m: stale
    elif what == "trickle":                # one noise byte at a time, never stopping
        def answer(req, n):
            return lambda m: bytes([0x41])
    elif what == "partial":                # half of the right reply, then nothing
        def answer(req, n):
            r = reply_frame(ST["OK"], req["tag"], req["opcode"], LINK_INFO)
            return r[:len(r) // 2]
    else:
        def answer(req, n):
            return b""
    t = Scripted(answer)
    d = Driver(t, timeout=timeout, retries=retries)
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout) as e:
        d.identify()
    elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert msg.startswith("IDENTIFY: no valid reply after 3 attempts") and "\n" not in msg
    assert "wrong port or baud rate" in msg or "is the device running" in msg
    assert len(t.requests) == 3
    if what in ("garbage", "filler", "huge-length", "babble"):
        assert "bytes without a valid reply" in msg
        assert elapsed < timeout            # the byte budget, long before the time limit
    else:
        assert elapsed == pytest.approx(3 * timeout, abs=0.25)


def test_byte_budget_allows_a_late_copy_of_the_previous_reply():
    """A duplicated long reply to the previous request is not noise: the budget counts it."""
    mem = bytearray(range(256)) * 16

    def answer(req, n):
        r = echo_device(mem)(req, n)
        return r + r if req["opcode"] == OP["READ"] else r
    t = Scripted(answer)
    d = Driver(t, timeout=0.3)
    for _ in range(3):
        assert d.read(Space.ACT, 0, 4096) == bytes(mem)
        assert d.read(Space.ACT, 0, 1) == b"\0"
    assert d.stats["retries"] == 0


def test_reply_limits_scale_with_the_line_rate():
    t = Scripted(echo_device())
    t.byte_time = 10 / 3e6
    d = Driver(t, timeout=2.0)
    frame = len(Driver.encode(Opcode.READ, 1, Space.OUT, 0, 4096))
    seconds, budget = d.reply_limits(Opcode.READ, frame, 4096)
    # (a 4,096-byte READ: at most 8,211 bytes back, stuffed; twice their line time)
    assert seconds == pytest.approx(2.0 + 2 * (frame + 8211) * 10 / 3e6)
    assert budget == 8211 + 1 + NOISE_BYTES
    wait = d.reply_limits(Opcode.WAIT, 11, extra_s=1.0)[0]      # (WAIT's reply: 21 bytes)
    assert wait == pytest.approx(3.0 + 2 * (11 + 21) * 10 / 3e6)


def test_transport_loss_is_one_link_error():
    class Closed(Scripted):
        def read(self, max_bytes, timeout):
            from deconvsr.sw.host.transport import TransportError
            raise TransportError("socket disconnected")
    with pytest.raises(LinkError, match="socket disconnected"):
        Driver(Closed(echo_device()), timeout=5.0).identify()


def test_reply_limits_per_request():
    """A request may say its reply's size and a latency allowance of its own (STEP-like
    requests: the reply carries what the request's payload asked for)."""
    t = Scripted(echo_device())
    t.byte_time = 10 / 3e6
    d = Driver(t, timeout=2.0)
    seconds, budget = d.reply_limits(Opcode.WRITE, 100, reply_payload=1000, timeout=5.0)
    assert budget == 1 + 2 * (5 + 2 + 1000 + 2) + 1 + NOISE_BYTES
    assert seconds == pytest.approx(5.0 + 2 * (100 + 2019) * 10 / 3e6)


def test_run_takes_1_to_255_layers():
    t = Scripted(echo_device())
    d = Driver(t, timeout=0.2)
    d.run(1)
    d.run(255)
    assert [r["length"] for r in t.requests if r["opcode"] == OP["RUN"]] == [1, 255]
    for bad in (0, 256):
        with pytest.raises(ValueError, match="n_layers must be in 1..255"):
            d.run(bad)


def test_long_transfers_are_chunked_exactly():
    """10,000 bytes: two full 4,096-byte frames and a short one, each way, byte-exact."""
    mem = bytearray(16384)
    t = Scripted(echo_device(mem))
    d = Driver(t, timeout=0.2)
    data = bytes(random.Random(3).randbytes(10_000))
    d.write(Space.ACT, 100, data)
    assert bytes(mem[100:10_100]) == data and mem[10_100] == 0
    assert d.read(Space.ACT, 100, 10_000) == data
    sizes = [(r["opcode"], r["addr"], r["length"]) for r in t.requests]
    assert sizes == [(OP["WRITE"], 100, 4096), (OP["WRITE"], 4196, 4096),
                     (OP["WRITE"], 8292, 1808), (OP["READ"], 100, 4096),
                     (OP["READ"], 4196, 4096), (OP["READ"], 8292, 1808)]


@pytest.mark.parametrize("bad", [0, 70_000])
def test_crc_verification_covers_every_byte(bad):
    """A device that holds one wrong byte, the first or one past the first 64 KiB CRC range:
    the CRC verification names it."""
    mem = bytearray(1 << 17)

    def answer(req, n):
        if req["opcode"] == OP["VERIFY"]:
            part = bytes(mem[req["addr"]:req["addr"] + req["length"]])
            return reply_frame(ST["OK"], req["tag"], req["opcode"],
                               crc16(part).to_bytes(2, "big"))
        out = echo_device(mem)(req, n)
        if req["opcode"] == OP["WRITE"] and req["addr"] <= bad < req["addr"] + req["length"]:
            mem[bad] ^= 0x01
        return out
    d = Driver(Scripted(answer), timeout=0.2)
    data = bytes(random.Random(4).randbytes(80_000))
    with pytest.raises(VerifyError, match="device CRC"):
        d.write(Space.WEIGHT, 0, data, verify="crc")


def test_a_reply_cut_short_is_never_a_reply():
    """Every prefix of a reply body is incomplete, also a header whose CRC fits in its one
    byte that arrived (CRC < 256: the short CRC read as a number would equal it)."""
    hdr = next(h for h in (bytes([ST["OK"], tag, OP["RUN"], 0, 0]) for tag in range(256))
               if crc16(h) < 256)
    assert Driver.decode_reply(hdr + crc16(hdr).to_bytes(2, "big")) is not None
    assert Driver.decode_reply(hdr + bytes([crc16(hdr)])) is None
    payload = bytes(range(7))
    hdr = bytes([ST["OK"], 9, OP["READ"]]) + len(payload).to_bytes(2, "little")
    body = hdr + crc16(hdr).to_bytes(2, "big") + payload + crc16(payload).to_bytes(2, "big")
    assert Driver.decode_reply(body).payload == payload
    assert all(Driver.decode_reply(body[:n]) is None for n in range(len(body)))


@pytest.mark.parametrize("how", ["silent", "reset"])
def test_simulated_spi_device_that_stops_is_one_link_error(how):
    """The simulated SPI device's socket: a device that stops answering (its socket's timeout)
    or resets the connection ends in one LinkError, not an OSError's traceback."""
    import socket
    import threading
    from deconvsr.sw.host.transport import SocketSpiPort, SpiTransport
    srv = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        conn, _ = srv.accept()
        if how == "reset":      # (SO_LINGER 0: the close sends a RST)
            conn.recv(1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            conn.close()
        else:
            held.append(conn)
    th = threading.Thread(target=accept, daemon=True)
    th.start()
    port = SocketSpiPort("127.0.0.1", srv.getsockname()[1], timeout=0.3)
    t0 = time.monotonic()
    try:
        with pytest.raises(LinkError, match="SPI exchange failed|closed the connection"):
            Driver(SpiTransport(port), timeout=0.2, retries=1).identify()
    finally:
        port.close()
        srv.close()
        for c in held:
            c.close()
    assert time.monotonic() - t0 < 3
