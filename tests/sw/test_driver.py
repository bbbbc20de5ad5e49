"""The host driver's retry path against an in-process device model
(:class:`deconvsr.sim.tb.link_models.LinkModel`) behind a fault-injecting transport: corrupted,
dropped, duplicated, truncated, late replies; corrupted requests; bounded retries ending in a
typed exception; timeouts; refusals not retried; verification failures reported; never
silently wrong data."""

import random
import time

import pytest

from deconvsr import protocol
from deconvsr.bus import Space
from deconvsr.protocol import Opcode, Status
from deconvsr.sim.tb.link_models import LinkModel
from deconvsr.sw.host.driver import (DeviceError, Driver, LinkError, LinkTimeout, VerifyError)
from deconvsr.sw.host.transport import Transport, TransportError


class Faulty(Transport):
    """Wraps a device model. Each request's reply (everything the model answers to one
    ``write``) goes through the next fault of ``replies`` (then "ok"); with ``p_byte`` every
    reply byte is also damaged at random with that probability (flip, drop or duplicate), and
    request bytes with ``p_req``."""

    name = "faulty"

    def __init__(self, inner, replies=(), *, p_byte=0.0, p_req=0.0, seed=0):
        self.inner = inner
        self.plan = list(replies)
        self.p_byte, self.p_req = p_byte, p_req
        self.rng = random.Random(seed)
        self.buf = bytearray()
        self.late = b""
        self.writes = 0
        self.faults = 0
        self.req_flip = None

    def _damage(self, data, p):
        out = bytearray()
        for b in data:
            if self.rng.random() < p:
                self.faults += 1
                what = self.rng.randrange(3)
                if what == 0:
                    out.append(b ^ (1 << self.rng.randrange(8)))
                elif what == 2:
                    out += bytes((b, b))
                continue
            out.append(b)
        return bytes(out)

    def write(self, data):
        self.writes += 1
        data = self._damage(data, self.p_req)
        if self.req_flip is not None:              # damage one header byte of every request
            data = data[:self.req_flip] + bytes([data[self.req_flip] ^ 0x04]) + \
                data[self.req_flip + 1:]
        self.inner.write(data)
        reply = self.inner.read(1 << 20, 0)
        fault = self.plan.pop(0) if self.plan else "ok"
        r = self.rng
        if fault == "flip":
            i = r.randrange(1, len(reply))           # keep the leading FEND
            reply = reply[:i] + bytes([reply[i] ^ (1 << r.randrange(8))]) + reply[i + 1:]
        elif fault == "drop_byte":
            i = r.randrange(1, len(reply))
            reply = reply[:i] + reply[i + 1:]
        elif fault == "dup_byte":
            # (a doubled FESC is harmless: an escape escapes the same way twice; so is a
            # doubled last byte, after the frame's end)
            i = r.choice([j for j in range(1, len(reply) - 1) if reply[j] != protocol.FESC])
            reply = reply[:i + 1] + reply[i:]
        elif fault == "drop":
            reply = b""
        elif fault == "truncate":
            reply = reply[:r.randrange(1, len(reply))]
        elif fault == "garbage":                     # line noise before the frame (no FEND)
            reply = bytes(r.randrange(0, 0xC0) for _ in range(20)) + reply
        elif fault == "duplicate":
            reply = reply + reply
        elif fault == "late":                        # delivered after the next request's reply
            self.late, reply = reply, b""
        else:
            assert fault == "ok", fault
            reply, self.late = self.late + reply, b""
        if fault != "ok":
            self.faults += 1
        self.buf += self._damage(reply, self.p_byte)

    def read(self, max_bytes, timeout):
        d = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        return d


def _driver(replies=(), retries=4, **kw):
    model = LinkModel()
    t = Faulty(model, replies, **kw)
    d = Driver(t, timeout=0.01, retries=retries)
    d.identify()
    t.plan = list(replies)
    d.stats["retries"] = 0
    return d, t, model


def _data(rng, n=300):
    special = (protocol.FEND, protocol.FESC, protocol.FIDLE)
    return bytes(rng.choice(special) if rng.random() < 0.2 else rng.randrange(256)
                 for _ in range(n))


@pytest.mark.parametrize("fault", ["flip", "drop_byte", "dup_byte", "drop", "truncate"])
@pytest.mark.parametrize("n_faults", [1, 4])
def test_reply_faults_retried_then_exact(fault, n_faults):
    rng = random.Random(n_faults)
    d, t, model = _driver()
    data = _data(rng)
    d.write(Space.ACT, 10, data)
    t.plan = [fault] * n_faults
    executed = len(model.log)
    assert d.read(Space.ACT, 10, len(data)) == data
    assert d.stats["retries"] == n_faults
    assert len(model.log) - executed == n_faults + 1       # one execution per attempt


@pytest.mark.parametrize("fault", ["flip", "drop_byte", "dup_byte", "drop", "truncate"])
def test_retries_bounded_then_link_error(fault):
    d, t, model = _driver(retries=3)
    t.plan = [fault] * 10
    before = t.writes
    with pytest.raises(LinkError, match="no valid reply after 4 attempts"):
        d.read(Space.ACT, 0, 64)
    assert t.writes - before == 4


@pytest.mark.parametrize("fault", ["garbage", "duplicate"])
def test_harmless_noise_needs_no_retry(fault):
    rng = random.Random(5)
    d, t, _ = _driver()
    data = _data(rng, 100)
    d.write(Space.WEIGHT, 0, data)
    t.plan = [fault, "ok", fault]
    assert d.read(Space.WEIGHT, 0, 100) == data
    assert d.read(Space.WEIGHT, 50, 50) == data[50:]       # a stale duplicate is skipped
    assert d.read(Space.WEIGHT, 0, 10) == data[:10]
    assert d.stats["retries"] == 0


def test_late_reply_is_taken_by_tag_not_position():
    rng = random.Random(6)
    d, t, model = _driver()
    a, b = _data(rng, 40), _data(rng, 40)
    d.write(Space.ACT, 0, a + b)
    t.plan = ["late"]
    assert d.read(Space.ACT, 0, 40) == a       # attempt 1 times out; attempt 2's reply follows
    assert d.read(Space.ACT, 40, 40) == b      # the other late copy (same old tag) is skipped
    assert d.stats["retries"] == 1


def test_corrupted_request_gets_bad_crc_and_is_resent():
    rng = random.Random(7)
    d, t, model = _driver()
    data = _data(rng, 200)
    t.p_req = 1.0 / 400          # about one damaged byte per request
    t.rng.seed(2)
    for _ in range(5):
        d.write(Space.BIAS, 0, data)
    t.p_req = 0.0
    assert bytes(model.mem[Space.BIAS.value][:200]) == data
    assert t.faults > 0 and d.stats["retries"] > 0


def test_run_retry_executes_once():
    d, t, model = _driver()
    t.plan = ["drop", "flip"]
    d.run(2)
    assert model.runs == 1 and d.stats["retries"] == 2
    d.run(2)                                     # a new request (new tag) runs again
    assert model.runs == 2


def test_random_faults_never_silently_wrong():
    """Random damage on both directions: every operation returns the device's exact data or
    raises LinkError; nothing in between."""
    rng = random.Random(8)
    model = LinkModel()
    t = Faulty(model, p_byte=0.002, p_req=0.001, seed=9)
    d = Driver(t, timeout=0.01, retries=3)
    d.identify()
    ok = failed = 0
    for i in range(300):
        addr, n = rng.randrange(0, 2000), rng.randrange(1, 600)
        try:
            if rng.random() < 0.5:
                data = _data(rng, n)
                d.write(Space.ACT, addr, data)
                assert bytes(model.mem[Space.ACT.value][addr:addr + n]) == data
            else:
                got = d.read(Space.ACT, addr, n)
                assert got == bytes(model.mem[Space.ACT.value][addr:addr + n])
            ok += 1
        except LinkError:
            failed += 1
    assert t.faults > 100 and d.stats["retries"] > 50
    assert ok > 250, (ok, failed)


class Silent(Transport):
    name = "silent"

    def __init__(self):
        self.writes = 0

    def write(self, data):
        self.writes += 1

    def read(self, max_bytes, timeout):
        time.sleep(timeout)
        return b""


def test_timeout_is_bounded_and_typed():
    t = Silent()
    d = Driver(t, timeout=0.05, retries=2)
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout) as e:
        d.request(Opcode.IDENTIFY)
    elapsed = time.monotonic() - t0
    assert isinstance(e.value, LinkError) and "3 attempts" in str(e.value)
    assert t.writes == 3 and 0.14 <= elapsed < 1.0


def test_transport_failure_is_a_link_error():
    class Broken(Silent):
        def write(self, data):
            raise TransportError("cable unplugged")
    with pytest.raises(LinkError, match="cable unplugged"):
        Driver(Broken(), timeout=0.01).request(Opcode.IDENTIFY)


def test_refusal_is_not_retried():
    d, t, model = _driver()
    with pytest.raises(DeviceError) as e:
        d.write(Space.ID, 0, b"xy")
    assert e.value.status == Status.BAD_SPACE.value and d.stats["retries"] == 0


@pytest.mark.parametrize("method", ["readback", "crc"])
def test_verification_failure_is_reported(method):
    model = LinkModel(corrupt_memory=(Space.WEIGHT.value, 137))
    d = Driver(model, timeout=0.01)
    d.identify()
    data = bytes(range(256))
    with pytest.raises(VerifyError, match="0x89" if method == "readback" else "CRC"):
        d.write(Space.WEIGHT, 0, data, verify=method)
    d.write(Space.WEIGHT, 1000, data, verify=method)       # a good range passes


def test_persistent_request_damage_is_a_link_error_not_a_timeout():
    d, t, model = _driver(retries=2)
    t.req_flip = 4           # every request's header damaged: the device answers BAD_CRC
    with pytest.raises(LinkError, match="device reported") as e:
        d.write(Space.ACT, 0, b"abc")
    assert not isinstance(e.value, LinkTimeout)
    assert bytes(model.mem[Space.ACT.value][:3]) == b"\0\0\0"


@pytest.mark.parametrize("fault", ["flip", "drop_byte", "drop", "truncate", "late"])
def test_step_retried_runs_once_and_returns_the_out_bytes(fault):
    """A STEP whose reply is lost or damaged is sent again with its tag: the device starts
    the layers once, writes its IN bytes (a ring) and answers with the same OUT bytes (a ring,
    read across its end)."""
    rng = random.Random(5)
    d, t, model = _driver()
    ring = len(model.mem[Space.OUT.value])
    out = _data(rng, 50)
    d.write(Space.OUT, ring - 20, out[:20])
    d.write(Space.OUT, 0, out[20:])
    data = _data(rng, 90)
    in_ring = len(model.mem[Space.IN.value])
    t.plan = [fault]
    got = d.step(2, 3, in_ring - 40, data, ring - 20, 50)
    assert got == out
    assert model.runs == 1
    assert bytes(model.mem[Space.IN.value][-40:]) + bytes(model.mem[Space.IN.value][:50]) \
        == data
    assert d.stats["retries"] >= 1
    # A STEP that starts nothing (the frame's last reply) is not a run.
    assert d.step(0, 0, 0, b"", 0, 4) == out[20:24]
    assert model.runs == 1
