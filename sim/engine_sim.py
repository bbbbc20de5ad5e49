"""Run engine programs (:class:`deconvsr.sw.host.program.Program`) on the RTL (cocotb + Verilator or
Icarus on the generated Verilog) or on :class:`EngineModel`, a behavioural twin in NumPy that
executes the same memory images (descriptors, packed weights, entries) the way the sequencer
does. Both return the outputs and the performance counters.

    res = run_programs([prog1, prog2], spec, backend="rtl", build_dir=...)
    res[0]["out"], res[0]["counters"], res[0]["cycles"]
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..arith import requantize
from ..bus import CtrlReg, Space, start_byte
from ..descriptor import (BAND_BYTES, COUNTERS, DESC_BYTES, ENTRY_BYTES, SNAP_BASE, BiasEntry,
                          LayerDescriptor, canonical_entries, decode_counters, next_band, pack,
                          unpack)
from ..hw.engine import Engine
from ..spec import EngineSpec
from .harness import run_cocotb

__all__ = ["EngineModel", "run_programs", "program_ops", "cached_build_dir"]


@contextmanager
def cached_build_dir(spec: EngineSpec, simulator: str = "verilator"):
    """A per-user build directory for ``spec`` that survives between runs (the harness
    rebuilds only when the Verilog changes), locked while in use so that parallel test
    workers never build the same model at once."""
    root = Path(tempfile.gettempdir()) / f"deconvsr-engine-{os.getuid()}" / \
        f"{spec.name}-{simulator}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class EngineModel:
    """Behavioural twin of :class:`deconvsr.hw.engine.Engine` at the bus level (byte spaces,
    CTRL), computing each layer from the memory images with NumPy: bands, ring addresses and
    the IN memory as :class:`deconvsr.descriptor.LayerDescriptor` defines them. Counters are
    not modelled (all zero)."""

    def __init__(self, spec: EngineSpec):
        p = spec.lanes
        self.spec = spec
        self.mem = {
            Space.DESC: bytearray(spec.max_layers * DESC_BYTES),
            Space.WEIGHT: bytearray(spec.weight_depth * p),
            Space.BIAS: bytearray(spec.bias_depth * ENTRY_BYTES),
            Space.ACT: bytearray(2 * spec.act_depth * spec.act_lanes),
            Space.OUT: bytearray(spec.out_bytes),
            Space.IN: bytearray(spec.in_bytes),
            Space.ID: bytearray(spec.id_bytes()),
            Space.COUNT: bytearray(4 * len(COUNTERS)),
        }

    def write(self, space, addr, data: bytes):
        if Space(space) == Space.CTRL:
            for i, b in enumerate(data):
                if addr + i == CtrlReg.START_STATUS:
                    if self.spec.in_bytes:      # (count, first: see deconvsr.bus)
                        self.start(b & 0x0F, first=b >> 4 & 7)
                    else:
                        self.start(b)
            return
        if Space(space) == Space.ACT and not self.spec.act_host:
            return                      # (no host access to the feature maps)
        mem = self.mem[Space(space)]
        if Space(space) == Space.IN and mem:
            # (IN is a ring: its addresses wrap)
            for i in range(0, len(data), len(mem)):
                part = data[i:i + len(mem)]
                a = (addr + i) % len(mem)
                n = min(len(part), len(mem) - a)
                mem[a:a + n] = part[:n]
                mem[:len(part) - n] = part[n:]
            return
        n = max(0, min(len(data), len(mem) - addr))
        mem[addr:addr + n] = data[:n]
        widths = self.spec.entry_widths()
        if Space(space) == Space.BIAS and widths and n:
            # (packed entries: the engine keeps only each field's low bits)
            lo = addr // ENTRY_BYTES * ENTRY_BYTES
            hi = -(-(addr + n) // ENTRY_BYTES) * ENTRY_BYTES
            mem[lo:hi] = canonical_entries(bytes(mem[lo:hi]), widths)

    def read(self, space, addr, n) -> bytes:
        if Space(space) == Space.ACT and not self.spec.act_host:
            return bytes(n)
        mem = self.mem[Space(space)]
        if Space(space) in (Space.OUT, Space.IN) and self.spec.in_bytes:
            # (a streaming engine's OUT and IN are rings: addresses wrap)
            return bytes(mem[(addr + i) % len(mem)] for i in range(n))
        return bytes(mem[addr:addr + n]).ljust(n, b"\0")

    def start(self, n_layers: int, *, first: int = 0):
        """Run descriptors ``first .. first + n_layers - 1``; a banded one runs its band and
        its band fields move on to the next (written back, as the engine does)."""
        for i in range(first, first + n_layers):
            at = i * DESC_BYTES
            raw = bytes(self.mem[Space.DESC][at:at + DESC_BYTES])
            d = unpack(LayerDescriptor, raw)
            self._layer(d)
            if d["banded"]:
                nxt = pack(LayerDescriptor, {**next_band(d), "useful": [[0, 0], [0, 0]]},
                           DESC_BYTES)
                self.mem[Space.DESC][at:at + BAND_BYTES] = nxt[:BAND_BYTES]

    @staticmethod
    def _ring(base, value, mbits):
        """An address whose low ``mbits`` bits wrap (``mbits`` 0: no ring)."""
        if not mbits:
            return base + value
        mask = (1 << mbits) - 1
        return (base & ~mask) | ((base + value) & mask)

    def _layer(self, d):
        spec = self.spec
        p = spec.lanes
        pi = 1 << d["lvl"]
        pv = p // pi
        t, s = d["t"], d["stride"]
        act = np.frombuffer(bytes(self.mem[Space.ACT]), dtype=np.uint8).reshape(
            2, spec.act_depth, spec.act_lanes)
        if d["in_src"]:
            # (the IN memory: one activation a byte, channel 0 of the word)
            src = np.zeros((max(spec.in_bytes, 1), spec.act_lanes), dtype=np.int64)
            src[:spec.in_bytes, 0] = np.frombuffer(bytes(self.mem[Space.IN]), dtype=np.uint8)
        else:
            src = act[d["in_buf"]].astype(np.int64)
        wts = np.frombuffer(bytes(self.mem[Space.WEIGHT]), dtype=np.int8).reshape(-1, p)
        ents = bytes(self.mem[Space.BIAS])
        qy = np.arange(d["qy0"], d["qy1"] + 1)
        qx = np.arange(d["qx0"], d["qx1"] + 1)
        nby, nbx = len(qy), len(qx)
        lane_src = np.arange(p) & (pi - 1)
        ring = spec.ring_bits
        for vg in range(d["n_vg"]):
            acc = np.zeros((nby, nbx, p), dtype=np.int64)
            for cg in range(d["cw"]):
                for ky in range(t):
                    for kx in range(t):
                        iy = qy - ky
                        ix = qx - kx
                        ok = ((iy >= 0) & (iy < d["h_in"]))[:, None] & \
                             ((ix >= 0) & (ix < d["w_in"]))[None, :]
                        lin = d["row0"] + (iy - d["qy0"])[:, None] * d["w_in"] + ix[None, :]
                        addr = self._ring(d["in_base"] + cg * d["hw_in"], lin,
                                          ring if d["banded"] and not d["in_src"] else 0)
                        addr = np.where(ok, addr, 0)
                        x = np.where(ok[..., None], src[addr % len(src)], 0)[..., lane_src]
                        w = wts[d["w_base"] + ((vg * d["cw"] + cg) * t + ky) * t + kx].astype(np.int64)
                        acc += x * w
            sums = acc.reshape(nby, nbx, pv, pi).sum(axis=3)
            cnt = d["pv_last"] if vg == d["n_vg"] - 1 else pv
            for g in range(cnt):
                v = vg * pv + g
                e = unpack(BiasEntry, ents[(d["b_base"] + v) * ENTRY_BYTES:
                                           (d["b_base"] + v + 1) * ENTRY_BYTES])
                q = requantize(sums[:, :, g] + e["bias"], e["mult"], e["shift"], spec.arith)
                by = d["by0"] + s * np.arange(nby)
                bx = d["bx0"] + s * np.arange(nbx)
                oy = (by + e["fy"])[:, None] + 0 * bx[None, :]
                ox = (bx + e["fx"])[None, :] + 0 * by[:, None]
                inside = (oy >= 0) & (oy < d["h_out"]) & (ox >= 0) & (ox < d["w_out"])
                inwin = (oy >= d["vy0"]) & (oy < d["vy1"]) & (ox >= d["vx0"]) & (ox < d["vx1"])
                if not spec.windows:    # (an engine without valid windows ignores them)
                    inwin = np.ones_like(inwin)
                val = np.where(inwin, q, 0)
                obase = d["obase0"] + d["orow"] * np.arange(nby)[:, None] + \
                    s * np.arange(nbx)[None, :]
                addr = self._ring(e["off"], obase,
                                  ring if d["banded"] and not d["to_out"] else 0)
                for a, vv in zip(addr[inside], val[inside]):
                    if d["to_out"]:     # (a streaming engine's OUT wraps: a ring)
                        self.mem[Space.OUT][a % spec.out_bytes if spec.in_bytes else a] = vv
                    else:
                        base = (1 - d["in_buf"]) * spec.act_depth * spec.act_lanes
                        self.mem[Space.ACT][base + a * spec.act_lanes + e["lane"]] = vv


def program_ops(prog) -> list:
    """The bus operations of one program run, as JSON-able lists:
    ``["w", space, addr, hex]``, ``["start", n]``, ``["r", space, addr, n]``."""
    ops = [["w", Space(sp).value, int(addr), bytes(data).hex()] for sp, addr, data in prog.setup + prog.inputs]
    ops.append(["start", prog.n_layers])
    ops.append(["r", Space.OUT.value, prog.out_addr, prog.out_len])
    ops.append(["r", Space.COUNT.value, 0, 4 * len(COUNTERS)])
    ops.append(["r", Space.COUNT.value, SNAP_BASE, 8 * prog.n_layers])
    return ops


def _decode(prog, reads, cycles=None, wall=None):
    """``layers``: per layer ``cycles`` and ``mac_used`` from the snapshots (differences;
    empty for an engine without snapshots)."""
    layers = []
    prev = (0, 0)
    snaps = reads[2] if len(reads) > 2 and prog.spec.snapshots else b""
    for i in range(len(snaps) // 8):
        cyc = int.from_bytes(snaps[8 * i:8 * i + 4], "little")
        used = int.from_bytes(snaps[8 * i + 4:8 * i + 8], "little")
        layers.append({"cycles": cyc - prev[0], "mac_used": used - prev[1]})
        prev = (cyc, used)
    return {"out": prog.decode(reads[0]), "counters": decode_counters(reads[1]),
            "layers": layers, "cycles": cycles, "wall": wall}


def run_programs(progs, spec: EngineSpec, *, backend="rtl", build_dir=None, simulator="verilator",
                 idle=0.0, backpressure=0.0, seed=0, extra_ops=None, netlist=None, libraries=()):
    """Run each program (setup + inputs + start + read OUT + read COUNT) in order in one
    simulator process; returns a list of dicts ``out``, ``counters``, ``cycles`` (run cycles
    from start to not busy), ``wall`` (seconds of simulator wall time of the run).

    ``idle``/``backpressure``: probabilities of an idle cycle on ``cmd.valid`` and of
    ``rsp.ready`` low, per cycle (RTL only). ``extra_ops``: a list of op lists run first
    (for bus tests); their reads are returned as ``result[-1]["extra"]``. ``netlist``: a
    synthesised netlist of the engine (Verilog, top module ``engine_<spec name>``, e.g. from
    :func:`deconvsr.hw.synth.write_netlist`) to run instead of the generated RTL, with
    ``libraries`` the vendor cell models it needs (RTL backend only).
    """
    if backend == "model":
        results = []
        for prog in progs:
            model = EngineModel(spec)
            for sp, addr, data in prog.setup + prog.inputs:
                model.write(sp, addr, data)
            model.start(prog.n_layers)
            results.append(_decode(prog, [model.read(Space.OUT, prog.out_addr, prog.out_len),
                                          bytes(4 * len(COUNTERS))]))
        return results
    if build_dir is None:
        raise ValueError("build_dir is required for the rtl backend")
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    jobs = [program_ops(p) for p in progs]
    if extra_ops is not None:
        jobs.insert(0, extra_ops)
    case = build_dir / f"case_{os.getpid()}_{time.monotonic_ns()}.json"
    result = case.with_suffix(".out.json")
    case.write_text(json.dumps({"jobs": jobs, "idle": idle, "backpressure": backpressure,
                                "seed": seed}))
    toplevel = "engine_" + "".join(ch if ch.isalnum() else "_" for ch in spec.name)
    make_top = (lambda: Path(netlist).read_text()) if netlist else (lambda: Engine(spec))
    run_cocotb(make_top, "deconvsr.sim.tb.engine", toplevel=toplevel, libraries=libraries,
               build_dir=build_dir, simulator=simulator,
               env={"DECONVSR_CASE": str(case), "DECONVSR_RESULT": str(result)})
    res = json.loads(result.read_text())
    out = []
    if extra_ops is not None:
        extra = res.pop(0)
    for prog, r in zip(progs, res):
        out.append(_decode(prog, [bytes.fromhex(h) for h in r["reads"]], r["cycles"], r["wall"]))
    if extra_ops is not None:
        out.append({"extra": [bytes.fromhex(h) for h in extra["reads"]]})
    return out


def stream_ops(plan, frame) -> tuple[list, list]:
    """The bus operations that stream ``frame`` through ``plan`` (a
    :class:`deconvsr.sw.stream.StreamPlan`) as the STEP requests do, one step at a time (the
    reply's OUT read after the step), then the counters: ``(ops, places)``, ``places`` the
    ``(stripe, request)`` of each OUT read, in order."""
    ops, places = [], []
    for stripe in plan.stripes:
        for sp, addr, data in stripe.setup + stripe.rewind:
            ops.append(["w", Space(sp).value, int(addr), bytes(data).hex()])
        for req in stripe.requests:
            data = stripe.in_bytes(frame, req)
            if data:
                ops.append(["w", Space.IN.value, req.in_addr, data.hex()])
            if req.count:
                ops.append(["start", start_byte(req.count, req.first, keep=True)])
            if req.out_len:
                ops.append(["r", Space.OUT.value, req.out_addr, req.out_len])
                places.append((stripe, req))
    ops.append(["r", Space.COUNT.value, 0, 4 * len(COUNTERS)])
    return ops, places


def run_stream_rtl(plan, frame, *, build_dir, simulator="verilator", idle=0.0,
                   backpressure=0.0, seed=0, netlist=None, libraries=(), extra_reads=()) -> dict:
    """Stream ``frame`` through ``plan`` on the engine's RTL (see :func:`stream_ops`):
    ``out`` (the HR frame), ``step_cycles`` (busy cycles of each start), ``counters``, and
    ``extra``: the bytes of each ``(space, addr, n)`` of ``extra_reads``, read at the end."""
    spec = plan.spec
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    frame = np.asarray(frame, dtype=np.uint8)
    ops, places = stream_ops(plan, frame)
    ops += [["r", Space(sp).value, int(addr), int(n)] for sp, addr, n in extra_reads]
    # (one job per start, so that each start's cycles are reported)
    jobs, job = [], []
    for op in ops:
        job.append(op)
        if op[0] == "start":
            jobs.append(job)
            job = []
    jobs.append(job)
    case = build_dir / f"case_{os.getpid()}_{time.monotonic_ns()}.json"
    result = case.with_suffix(".out.json")
    case.write_text(json.dumps({"jobs": jobs, "idle": idle, "backpressure": backpressure,
                                "seed": seed}))
    toplevel = "engine_" + "".join(ch if ch.isalnum() else "_" for ch in spec.name)
    make_top = (lambda: Path(netlist).read_text()) if netlist else (lambda: Engine(spec))
    run_cocotb(make_top, "deconvsr.sim.tb.engine", toplevel=toplevel, libraries=libraries,
               build_dir=build_dir, simulator=simulator,
               env={"DECONVSR_CASE": str(case), "DECONVSR_RESULT": str(result)})
    res = json.loads(result.read_text())
    reads = [bytes.fromhex(h) for r in res for h in r["reads"]]
    out = np.zeros(plan.out_frame, dtype=np.uint8)
    for (stripe, req), raw in zip(places, reads):
        plan.place(out, stripe, req, raw)
    n_extra = len(extra_reads)
    count = reads[len(reads) - 1 - n_extra]
    return {"out": out, "step_cycles": [r["cycles"] for r in res if r["cycles"] is not None],
            "counters": decode_counters(count), "extra": reads[len(reads) - n_extra:],
            "wall": sum(r["wall"] or 0 for r in res)}
