"""cocotb fuzz testbench of the command decoder through the byte-stream top
(:class:`deconvsr.hw.soc.StreamSoC`, bus twin): random byte strings
(:func:`deconvsr.sim.tb.link_models.fuzz_strings`), each followed by an IDENTIFY request whose
good reply must come back within a cycle budget, after which the link must report ``idle``.

Both streams run under idle insertion (``i.valid`` low with probability ``$DECONVSR_IDLE``) and
random backpressure (``o.ready`` low with ``$DECONVSR_BACKPRESSURE``); once offered, a byte stays
offered until taken. About 1 % of the strings are followed by a pause longer than the
deframer's watchdog, so TIMEOUT replies are exercised too.

Environment: ``DECONVSR_FUZZ_N`` strings, ``DECONVSR_SEED``, ``DECONVSR_TIMEOUT`` (the
watchdog the top was built with), ``DECONVSR_RESULT`` (JSON written here: strings, bytes fed,
cycles, reply statuses seen, and the first failure if any).
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from deconvsr.protocol import Opcode, Status
from deconvsr.sim.tb.link_models import ReplyParser, fuzz_strings, identify_ok
from deconvsr.sw.host.driver import Driver

BUDGET = 200_000     # cycles for one string + its IDENTIFY to be answered and the link idle


class Port:
    def __init__(self, dut, rng, idle_p, bp_p):
        self.dut, self.rng, self.idle_p, self.bp_p = dut, rng, idle_p, bp_p
        self.parser = ReplyParser()
        self.offered = False
        self.cycles = 0

    async def cycle(self, queue: bytearray, replies: list):
        dut = self.dut
        await FallingEdge(dut.clk)
        self.cycles += 1
        # A byte once offered stays offered until taken (stream transfer rules).
        self.offered = bool(queue) and (self.offered or self.rng.random() >= self.idle_p)
        dut.i__valid.value = int(self.offered)
        if self.offered:
            dut.i__payload.value = queue[0]
        ready = self.rng.random() >= self.bp_p
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if self.offered and int(dut.i__ready.value):
            del queue[0]
            self.offered = False
        if ready and int(dut.o__valid.value):
            replies += self.parser.feed((int(dut.o__payload.value),))


@cocotb.test()
async def fuzz(dut):
    n = int(os.environ.get("DECONVSR_FUZZ_N", "1000"))
    seed = int(os.environ.get("DECONVSR_SEED", "1"))
    timeout = int(os.environ.get("DECONVSR_TIMEOUT", "256"))
    idle_p = float(os.environ.get("DECONVSR_IDLE", "0.2"))
    bp_p = float(os.environ.get("DECONVSR_BACKPRESSURE", "0.2"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0

    rng = random.Random(seed ^ 0x5A5A)
    port = Port(dut, rng, idle_p, bp_p)
    t0 = time.perf_counter()
    res = {"strings": 0, "bytes": 0, "identify_bytes": 0, "max_len": 0, "kinds": {},
           "statuses": {}, "unparsable_replies": 0, "pauses": 0, "failure": None}
    tag = 0
    for index, (kind, s) in enumerate(fuzz_strings(seed, n)):
        tag = tag % 255 + 1
        ident = Driver.encode(Opcode.IDENTIFY, tag)
        replies = []
        queue = bytearray(s)
        start = port.cycles
        while queue:
            await port.cycle(queue, replies)
        if rng.random() < 0.01:          # a host that stops mid-frame: the watchdog fires
            res["pauses"] += 1
            for _ in range(timeout + 64):
                await port.cycle(queue, replies)
        queue += ident
        done = False
        while port.cycles - start < BUDGET:
            await port.cycle(queue, replies)
            if not done:
                done = any(identify_ok(r, tag) for r, _ in replies)
            if done and not queue and int(dut.idle.value):
                break
        for r, _ in replies:
            if r is None:
                res["unparsable_replies"] += 1
            else:
                name = Status(r.status).name if r.status in Status._value2member_map_ \
                    else f"0x{r.status:02x}"
                res["statuses"][name] = res["statuses"].get(name, 0) + 1
        if not done or port.cycles - start >= BUDGET:
            res["failure"] = {"index": index, "kind": kind, "bytes": s.hex(),
                              "replies": [b.hex() for _, b in replies], "done": done}
            break
        res["strings"] += 1
        res["bytes"] += len(s)
        res["identify_bytes"] += len(ident)
        res["max_len"] = max(res["max_len"], len(s))
        res["kinds"][kind] = res["kinds"].get(kind, 0) + 1
    res["cycles"] = port.cycles
    res["wall_s"] = time.perf_counter() - t0
    res["seed"] = seed
    with open(os.environ["DECONVSR_RESULT"], "w") as f:
        json.dump(res, f)
