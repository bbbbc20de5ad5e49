"""The link gateware (framing, decoder, twin) under Amaranth's simulator, driven by the host
driver's own encoder/decoder: replies, fault injection, resynchronisation, random backpressure."""

import pytest
from amaranth.sim import Simulator

from deconvsr import protocol
from deconvsr.bus import Space, start_byte
from deconvsr.hw.soc import StreamSoC
from deconvsr.protocol import Opcode, Status
from deconvsr.sim.tb.link_models import ReplyParser
from deconvsr.sw.host.driver import Driver


def run_link(stream: bytes, rng=None, cycles=None, spec="sim"):
    """Feed ``stream`` into a StreamSoC (twin engine); returns the reply frames decoded.
    (``spec="icebreaker"``: the lean link, one bus read in flight, short replies' bytes from
    a register.)"""
    dut = StreamSoC(spec, timeout=400)
    out = []
    cycles = cycles or 40 * len(stream) + 3000

    async def tb(ctx):
        for b in stream:
            if rng is not None and rng.random() < 0.3:      # idle insertion
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, v, p, r in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.o.ready):
            if v and r:
                out.append(p)
            ctx.set(dut.o.ready, 1 if rng is None else int(rng.random() < 0.6))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(sink)
    sim.run_until(cycles * 1e-6)
    # Every complete frame (None: failed its CRC or cut short); a frame still incomplete at
    # the end of the run is not a reply.
    return [reply for reply, _ in ReplyParser().feed(bytes(out))]


def enc(op, tag, space=0, addr=0, length=0, payload=b""):
    return Driver.encode(op, tag, space, addr, length, payload)


def test_crc_models_agree(rng):
    data = bytes(rng.integers(0, 256, 300, dtype="uint8"))
    assert protocol.crc16(data) == protocol.CRC.compute(data)


@pytest.mark.parametrize("spec", ["sim", "icebreaker"])
@pytest.mark.parametrize("backpressure", [False, True])
def test_write_read_verify(rng, backpressure, spec):
    data = bytes([0xC0, 0xC0, 0xC0, 0xDB, 0xDD, 0x00, 0xFF]) + bytes(rng.integers(0, 256, 60,
                                                                                  dtype="uint8"))
    stream = (enc(Opcode.IDENTIFY, 1) + enc(Opcode.WRITE, 2, Space.ACT, 5, len(data), data) +
              enc(Opcode.READ, 3, Space.ACT, 5, len(data)) +
              enc(Opcode.VERIFY, 4, Space.ACT, 5, len(data)))
    r = run_link(stream, rng if backpressure else None, spec=spec)
    assert [x.tag for x in r] == [1, 2, 3, 4]
    assert all(x.status == Status.OK.value for x in r)
    assert protocol.unpack(protocol.LinkInfo, r[0].payload)["magic"] == protocol.LINK_MAGIC
    assert r[2].payload == data
    assert int.from_bytes(r[3].payload, "big") == protocol.crc16(data)


@pytest.mark.parametrize("fault", ["flip_header", "flip_payload", "drop", "duplicate",
                                   "truncate", "garbage"])
def test_faults_detected_then_recovers(rng, fault):
    data = bytes(rng.integers(0, 256, 40, dtype="uint8"))
    good = enc(Opcode.WRITE, 7, Space.ACT, 0, len(data), data)
    bad = bytearray(good)
    if fault == "flip_header":
        bad[3] ^= 0x10
    elif fault == "flip_payload":
        bad[20] ^= 0x01 if bad[20] not in (0xC0, 0xC1) else 0x02
    elif fault == "drop":
        del bad[25]
    elif fault == "duplicate":
        bad.insert(25, bad[25])
    elif fault == "truncate":
        bad = bad[:30]
    else:
        bad = bytes(rng.integers(0, 0xC0, 50, dtype="uint8")) + bad
    stream = bytes(bad) + enc(Opcode.READ, 8, Space.ACT, 0, len(data))
    r = run_link(stream)
    if fault == "garbage":          # garbage between frames is ignored
        assert [x.status for x in r][-2:] == [0, 0]
        assert r[-1].payload == data
    else:
        assert r[0].status in (Status.BAD_CRC.value, Status.ABORTED.value, Status.TIMEOUT.value)
        assert r[-1].tag == 8 and r[-1].status == Status.OK.value
    assert all(x is not None for x in r)


def test_bad_opcode_and_readonly_space():
    hdr = protocol.pack(protocol.RequestHeader, opcode=0x7E, tag=9, space=0, addr=0, length=0)
    frame = protocol.stuff(hdr + protocol.crc16(hdr).to_bytes(2, "big"))
    r = run_link(frame + enc(Opcode.WRITE, 10, Space.ID, 0, 2, b"xy"))
    assert (r[0].tag, r[0].status) == (9, Status.BAD_OPCODE.value)
    assert (r[1].tag, r[1].status) == (10, Status.BAD_SPACE.value)


def test_run_is_not_repeated_for_a_retry():
    # The same RUN tag twice runs once (runs counter in the twin's COUNT[4..7]).
    stream = (enc(Opcode.IDENTIFY, 1) + enc(Opcode.RUN, 2, length=1) + enc(Opcode.RUN, 2, length=1)
              + enc(Opcode.WAIT, 3, addr=100) + enc(Opcode.READ, 4, Space.COUNT, 4, 4))
    r = run_link(stream, cycles=30000)
    assert [x.status for x in r] == [0, 0, 0, 0, 0]
    assert int.from_bytes(r[4].payload, "little") == 1


def test_run_and_reset_with_the_same_tag_both_execute():
    """The duplicate check is on (opcode, tag): a RESET carrying the tag of the RUN before it
    is a new request (it clears the link counters), and so is a RUN after a RESET with its
    tag (it runs: the twin's run counter, COUNT[4..7], counts it after the reset)."""
    stream = (enc(Opcode.IDENTIFY, 1) + enc(Opcode.RUN, 2, length=1) + enc(Opcode.WAIT, 3, addr=100)
              + enc(Opcode.STATS, 4) + enc(Opcode.RESET, 2) + enc(Opcode.STATS, 5)
              + enc(Opcode.RESET, 7) + enc(Opcode.RUN, 7, length=1) + enc(Opcode.WAIT, 8, addr=100)
              + enc(Opcode.READ, 9, Space.COUNT, 4, 4))
    r = run_link(stream, cycles=40000)
    assert [x.tag for x in r] == [1, 2, 3, 4, 2, 5, 7, 7, 8, 9]
    assert all(x.status == Status.OK.value for x in r)
    before = protocol.unpack(protocol.LinkStats, r[3].payload)["frames"]
    after = protocol.unpack(protocol.LinkStats, r[5].payload)["frames"]
    assert before == 3 and after <= 1, (before, after)
    assert int.from_bytes(r[9].payload, "little") == 1


def test_verify_twice_each_crc_its_own(rng):
    """Every VERIFY restarts the device's CRC: a second one over another range (and an empty
    one) gives that range's CRC, not one carried on from the first."""
    data = bytes(rng.integers(0, 256, 90, dtype="uint8"))
    stream = (enc(Opcode.WRITE, 1, Space.ACT, 0, len(data), data)
              + enc(Opcode.VERIFY, 2, Space.ACT, 0, 40) + enc(Opcode.VERIFY, 3, Space.ACT, 40, 50)
              + enc(Opcode.VERIFY, 4, Space.ACT, 7, 0))
    r = run_link(stream)
    assert [x.tag for x in r] == [1, 2, 3, 4] and all(x.status == 0 for x in r)
    got = [int.from_bytes(x.payload, "big") for x in r[1:]]
    assert got == [protocol.crc16(data[:40]), protocol.crc16(data[40:]), protocol.crc16(b"")]


def step_payload(out_addr, out_len, polls, data=b""):
    return protocol.pack(protocol.StepHeader, out_addr=out_addr, out_len=out_len,
                         polls=polls) + data


@pytest.mark.parametrize("spec", ["sim", "icebreaker"])
@pytest.mark.parametrize("backpressure", [False, True])
def test_step_writes_in_starts_and_replies_with_out(rng, spec, backpressure):
    """STEP: its IN bytes written, the engine started once (a retry with the same tag is not
    run again but answered again) with the START byte of the header's space, the reply the
    OUT bytes asked for."""
    out = bytes(rng.integers(0, 256, 37, dtype="uint8")) + bytes([0xC0, 0xDB, 0xDD])
    data = bytes(rng.integers(0, 256, 50, dtype="uint8")) + bytes([0xC0, 0xDB])
    p1 = step_payload(3, len(out), 100, data)
    p2 = step_payload(0, 0, 100)
    start = start_byte(2, first=5, keep=True)
    stream = (enc(Opcode.IDENTIFY, 1) + enc(Opcode.WRITE, 2, Space.OUT, 3, len(out), out)
              + enc(Opcode.STEP, 3, start, 9, len(p1), p1)        # space = the START byte
              + enc(Opcode.STEP, 3, start, 9, len(p1), p1)        # the same tag: not run again
              + enc(Opcode.READ, 4, Space.IN, 9, len(data))
              + enc(Opcode.READ, 5, Space.CTRL, 2, 1)
              + enc(Opcode.STEP, 6, 0x50, 0, len(p2), p2)         # a count of 0: no start
              + enc(Opcode.WAIT, 7, addr=100) + enc(Opcode.READ, 8, Space.COUNT, 4, 4))
    r = run_link(stream, rng if backpressure else None, cycles=60000, spec=spec)
    assert [x.tag for x in r] == [1, 2, 3, 3, 4, 5, 6, 7, 8]
    assert all(x.status == Status.OK.value for x in r)
    assert r[2].payload == out and r[3].payload == out
    assert r[4].payload == data
    assert r[5].payload == bytes([start])
    assert r[6].payload == b""
    assert int.from_bytes(r[8].payload, "little") == 1      # started once


def test_step_waits_for_the_engine_or_times_out():
    """A STEP while the engine runs waits for it (then starts), or, with too few polls,
    answers TIMEOUT and starts nothing; a STEP whose payload fails its CRC starts nothing."""
    p_wait = step_payload(0, 0, 50)
    p_none = step_payload(0, 0, 0)
    bad = bytearray(enc(Opcode.STEP, 5, 1, 0, len(p_wait), p_wait))
    bad[-3] ^= 0x01 if bad[-3] not in (0xC0, 0xC1) else 0x02     # in the payload CRC
    stream = (enc(Opcode.IDENTIFY, 1) + enc(Opcode.RUN, 2, length=4)   # busy 4 x 64 cycles
              + enc(Opcode.STEP, 3, 1, 0, len(p_none), p_none)       # no polls: TIMEOUT
              + enc(Opcode.STEP, 4, 1, 0, len(p_wait), p_wait)       # waits, then starts
              + bytes(bad)
              + enc(Opcode.WAIT, 6, addr=100) + enc(Opcode.READ, 7, Space.COUNT, 4, 4)
              + enc(Opcode.STEP, 8, 1, 0, 4, b"abcd"))               # no room for its header
    r = run_link(stream, cycles=60000)
    assert [x.tag for x in r[:3]] == [1, 2, 3]
    assert r[2].status == Status.TIMEOUT.value
    assert (r[3].tag, r[3].status) == (4, Status.OK.value)
    assert r[4].status == Status.BAD_CRC.value
    assert int.from_bytes(r[6].payload, "little") == 2      # RUN and the STEP that waited
    assert (r[7].tag, r[7].status) == (8, Status.BAD_OPCODE.value)
