"""The link gateware (framing, decoder, twin) under Amaranth's simulator, driven by the host
driver's own encoder/decoder: replies, fault injection, resynchronisation, random backpressure."""

import pytest
from amaranth.sim import Simulator

from deconvsr import protocol
from deconvsr.bus import Space
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
