"""Fuzz: random byte strings into the command decoder (Verilator, StreamSoC with the bus twin);
after every string an IDENTIFY must still succeed. See ``deconvsr.sim.tb.link_fuzz``."""

import pytest

from deconvsr.protocol import FEND, FESC, FIDLE
from deconvsr.sim.harness import available_simulators
from deconvsr.sim.tb.link_models import ReplyParser, fuzz_strings, identify_ok, run_link_tb
from deconvsr.sw.host.driver import Driver
from deconvsr.protocol import Opcode

needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="Verilator not installed")
TIMEOUT = 256


def _top():
    from deconvsr.hw.soc import StreamSoC
    return StreamSoC(timeout=TIMEOUT)


def _fuzz(n, seed):
    res = run_link_tb(_top, "deconvsr.sim.tb.link_fuzz", toplevel="link_fuzz",
                      env={"DECONVSR_FUZZ_N": n, "DECONVSR_SEED": seed,
                           "DECONVSR_TIMEOUT": TIMEOUT})
    print(f"fuzz: {res['strings']} strings, {res['bytes']} bytes (+{res['identify_bytes']} "
          f"IDENTIFY bytes), {res['cycles']} cycles, {res['wall_s']:.1f} s; replies "
          f"{res['statuses']}; kinds {res['kinds']}")
    assert res["failure"] is None, res["failure"]
    assert res["strings"] == n
    # The corpus did reach the error paths (not just ignored garbage between frames).
    for status in ("OK", "BAD_CRC", "ABORTED", "TIMEOUT"):
        assert res["statuses"].get(status, 0) > 0, (status, res["statuses"])
    return res


def test_corpus_shape():
    strings = list(fuzz_strings(3, 2000))
    assert len(strings) == 2000
    assert min(len(s) for _, s in strings) == 0
    assert max(len(s) for _, s in strings) <= 72
    joined = b"".join(s for _, s in strings)
    for b in (FEND, FESC, FIDLE):
        assert joined.count(b) > 1000
    assert {k for k, _ in strings} == {"garbage", "corrupted", "soup", "valid", "mixed"}
    assert list(fuzz_strings(3, 50)) == strings[:50]       # reproducible


def test_reply_parser_finds_identify_after_noise():
    # The host-side parser the fuzz bench uses: a cut-short frame, then a good reply.
    from deconvsr import protocol
    info = protocol.pack(protocol.LinkInfo, magic=protocol.LINK_MAGIC,
                         version=protocol.PROTOCOL_VERSION, kind=0, clk_hz=1, baud=0)
    hdr = protocol.pack(protocol.ReplyHeader, status=0, tag=5, opcode=Opcode.IDENTIFY, length=12)
    body = hdr + protocol.crc16(hdr).to_bytes(2, "big") + info + \
        protocol.crc16(info).to_bytes(2, "big")
    out = ReplyParser().feed(bytes([FEND, 1, 2]) + protocol.stuff(body))
    assert out[0][0] is None and identify_ok(out[1][0], 5) and not identify_ok(out[1][0], 6)
    bad = bytearray(protocol.stuff(body))
    bad[-3] ^= 1
    assert ReplyParser().feed(bytes(bad))[0][0] is None
    assert Driver.encode(Opcode.IDENTIFY, 5)[0] == FEND


@needs_verilator
def test_fuzz_10000():
    # ~20 s of simulation (quick suite): 10,000 strings in one simulator process.
    res = _fuzz(10_000, 12345)
    assert res["strings"] >= 10_000 and res["bytes"] > 200_000


@needs_verilator
@pytest.mark.slow
@pytest.mark.long
def test_fuzz_50000_other_seed():
    _fuzz(50_000, 777)
