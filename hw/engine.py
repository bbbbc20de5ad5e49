"""The deconvolution engine: P MAC lanes running REVD2 (output-stationary gather) over every
layer of a network from on-chip layer descriptors, behind the host bus.

See ``docs/engine.md`` for the dataflow and :mod:`deconvsr.descriptor` for the descriptor,
the requantisation entries and the byte addressing of every bus space.
"""

from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from ..bus import START_KEEP, BusSignature, CtrlReg, Space
from ..descriptor import (ADDR, BAND_BYTES, BAND_FIELDS, BASIC_COUNTERS, COUNTERS, DESC_BYTES, ENTRY_BYTES, SNAP_BASE, BiasEntry,
                          LayerDescriptor)
from ..spec import EngineSpec
from .ice40_mac import DualMul8, uses_ice40_dsp
from .lutmul import ShiftAddMul
from .requant import LutRequant, Requant

__all__ = ["Engine"]

OUT_BANK = 2048     # bytes per OUT memory bank (a power of two)
ACC_GROUP = 4       # lanes per copy of the accumulators' control register
OP_GROUP = 16       # lanes per copy of the activation word and the operand controls
ACT_BANK = 2048     # words per ACT memory bank in block RAM (ECP5 DP16KD 2048 x 9: no depth
                    # decode inside a bank)
ACT_BANK_REGS = 2   # registers after each ACT bank in block RAM: the first beside the bank's
                    # blocks (on ECP5 their own output register), the next the word picked
                    # from the banks (act_one), which the lane groups' copies take
BUSY_CLR_GROUP = 8  # copies of busy per copy of their clear register
ACT_PICK_BITS = 32  # bits of an activation word per copy of its bank-select register


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _widths(spec: EngineSpec) -> dict:
    """Internal datapath widths, sized by the spec rather than by the descriptor's fields:
    ``sw`` block/pixel coordinates (signed), ``aw`` word/byte addresses (signed: they may
    step outside the frame before the bounds checks), ``vb`` virtual output indices."""
    db = spec.dim_bits
    depth = max(spec.act_depth, spec.out_bytes, spec.weight_depth, spec.bias_depth,
                spec.in_bytes)
    return {"db": db, "sw": db + 2, "aw": max((depth - 1).bit_length(), db + 4) + 2,
            "vb": spec.bias_depth.bit_length() + 1}


def _packed_bits(widths: dict) -> list[int]:
    """Per bit of a packed entry word (``EngineSpec.entry_widths``), the bit of the 128-bit
    entry image it holds."""
    layout = data.Layout.cast(BiasEntry)
    return [layout[name].offset + k for name, w in widths.items() for k in range(w)]


def _entry_image(packed, widths: dict):
    """The 128-bit :class:`BiasEntry` image of a packed entry word: each field sign- or
    zero-extended, ``pad`` 0 (:func:`deconvsr.descriptor.canonical_entries`)."""
    parts, pos = [], 0
    for name, field in data.Layout.cast(BiasEntry):
        full = Shape.cast(field.shape).width
        w = widths.get(name, 0)
        bits = packed[pos:pos + w]
        pos += w
        fill = bits[-1] if w and Shape.cast(field.shape).signed else Const(0, 1)
        parts.append(Cat(bits, fill.replicate(full - w)) if w else Const(0, full))
    return Cat(*parts)


def _entry_write_data(byte, widths: dict | None):
    """An entry memory's write data for the host's ``byte``: in every byte lane (unpacked),
    or in each packed bit the byte's bits go to."""
    if widths is None:
        return byte.replicate(ENTRY_BYTES)
    return Cat(byte[b % 8] for b in _packed_bits(widths))


def _entry_write_en(byte_en, widths: dict | None):
    """An entry memory's write enables from ``byte_en`` (one-hot over the entry's bytes):
    per byte lane (unpacked), or per packed bit, its image byte's."""
    if widths is None:
        return byte_en
    return Cat(byte_en[b // 8] for b in _packed_bits(widths))


def _ctl_layout(w: dict) -> data.StructLayout:
    """Control travelling with each MAC cycle down the pipeline (a few bits: where a group's
    outputs go is kept by the group tracker at the accumulators, not carried along)."""
    return data.StructLayout({"valid": 1, "first": 1, "last": 1, "in_frame": 1})


def _meta_layout(w: dict) -> data.StructLayout:
    """A finished group's place: whether it is a pixel's last virtual group, its block
    origin and its output base address."""
    return data.StructLayout({"vg_last": 1, "by": signed(w["sw"]), "bx": signed(w["sw"]),
                              "obase": signed(w["aw"])})


def _out_tag_layout(w: dict, lane_bits: int, addr_bits: int | None = None) -> data.StructLayout:
    """Where a requantised output goes: ``write`` inside the output frame, ``zero`` outside
    the valid window (write 0), the address and the byte lane. ``addr_bits``: the address
    only as wide as the memories' (its consumers take its low bits; an address outside them
    is never written), else as the datapath's."""
    return data.StructLayout({"write": 1, "zero": 1,
                              "addr": signed(w["aw"]) if addr_bits is None else addr_bits,
                              "lane": max(lane_bits, 1)})


class Engine(wiring.Component):
    """The deconvolution engine.

    Parameters
    ----------
    spec : :class:`EngineSpec` (lanes, memory depths, arithmetic)

    Members
    -------
    bus : Out(:class:`BusSignature`) (that signature is written from the engine side:
        ``cmd`` flows in, ``rsp`` out): host commands and read responses. ``cmd`` is accepted
        when no read is in flight (a read takes 7 cycles, 8 with ACT in block RAM, before its
        byte is offered on ``rsp``; ``rsp.valid`` stays up until ``rsp.ready``). Memory
        spaces are accessible while the engine is idle; while busy, their reads return 0 and
        writes are ignored (CTRL, COUNT and ID always work).
    busy : Out(1), high from a start command until the last layer's last output is written.

    Timing: one MAC cycle per (block, virtual group, input channel word, tap); the MAC
    pipeline is 7 + log2(Pi) cycles deep (three more with ACT in block RAM, two more with
    ``multiplier="lut"``) and never stalls. The sequencer issues a bubble instead of a
    group's last MAC cycle while the previous group is still draining (a group
    of ``cw*T*T`` cycles produces ``Pv`` outputs, drained one, or ``spec.drain_lanes`` for
    ``wide`` layers, per cycle, or every other cycle with ``spec.requant == "serial"``):
    ``cycles_stalled`` counts those. Layers run back to back;
    per layer the descriptor load takes ``DESC_BYTES + 4`` cycles (with PREP) and the pipeline drain
    about ``17 + Pv`` cycles. Outputs reach memory 9 cycles after leaving the accumulators.

    Raises
    ------
    TypeError
        if ``spec`` is not an :class:`EngineSpec`.
    """

    def __init__(self, spec: EngineSpec):
        if not isinstance(spec, EngineSpec):
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise TypeError(f"spec must be an EngineSpec, not {spec!r}")
        self.spec = spec
        super().__init__({"bus": Out(BusSignature()), "busy": Out(1)})

    def elaborate(self, platform):
        # Design choice: lanes are organised as Pv groups of Pi lanes over a *broadcast* input
        # word, with virtual output channels (channel, phase) along the groups, so that both
        # C_in = 1 (first layer) and C_out = 1 (last layer) keep every lane busy. The adder
        # tree over the lanes is registered at every level; the accumulators tap the level
        # log2(Pi) of the layer together with the control delayed by the same amount.
        spec = self.spec
        P = spec.lanes
        A = spec.act_lanes      # activations per ACT word; a layer's Pi is at most A
        LA = _log2(A)           # so lvl = log2(Pi) is at most LA
        lean = spec.pipeline == "lean"      # (a small FPGA: see the uses below)
        # A streaming engine (spec.in_bytes): the IN memory, ring addresses, banded layers
        # (write-back of the next band's fields), FIRST and counters kept across starts.
        # Without it the engine is built exactly as before.
        streaming = bool(spec.in_bytes)
        a = spec.arith
        m = Module()

        # ---- memories -------------------------------------------------------------------
        # Memories are single-address (the engine and the host never access one at the same
        # time, and an ACT buffer is either read or written in a layer), so they map to
        # single-port RAM (iCE40 SPRAM) as well as to dual-port block RAM. Descriptors are
        # bytes, loaded into the descriptor register in DESC_BYTES cycles per layer.
        # A read and a write of one memory in the same cycle never matter (no_rw_check): else
        # yosys emulates the read-write collision of every block RAM bit with a flip-flop
        # and a multiplexer (~1 logic cell per bit on iCE40).
        rw = {"no_rw_check": 1}
        desc_mem = Memory(shape=unsigned(8), depth=spec.max_layers * DESC_BYTES, init=[],
                          attrs=rw)
        # The wide weight and entry words are split into slices (OP_GROUP lanes' weights, one
        # entry), each a memory with its own address register, so no single address net
        # reaches every block of a word across the die.
        n_ws = max(1, P // OP_GROUP)
        R = spec.drain_lanes
        w_mem = [Memory(shape=unsigned(P * 8 // n_ws), depth=spec.weight_depth, init=[],
                        attrs=rw) for _ in range(n_ws)]
        # (packed entries: only the bits this engine uses, written bit by bit from the host's
        # bytes; the word reads back as the 128-bit entry image, see _entry_image)
        e_widths = spec.entry_widths()
        e_bits = sum(e_widths.values()) if e_widths else ENTRY_BYTES * 8
        b_mem = [Memory(shape=unsigned(e_bits), depth=spec.bias_depth // R, init=[],
                        attrs=rw) for _ in range(R)]
        act_attrs = {**rw, **({} if spec.act_ram == "auto" else {"ram_style": spec.act_ram})}
        # ACT in block RAM: banks of ACT_BANK words, each read into its own register beside
        # it and written with its own registered enable (one-hot over the banks), so neither
        # a block RAM's clock-to-out nor a depth decode shares a cycle with a route across
        # the die. (iCE40 SPRAM, "huge": one bank per buffer, no extra register.)
        banked = spec.act_ram != "huge"
        ab = min(ACT_BANK, spec.act_depth) if banked else spec.act_depth    # words per bank
        nb = spec.act_depth // ab
        lab = _log2(ab)
        nbb = max(1, (nb - 1).bit_length())       # bank index bits
        # (and each bank in block RAM in 32-bit slices, each with its own address register:
        # one address net reached the 15 blocks of a 128-bit bank)
        n_as = max(1, A * 8 // 32) if banked else 1
        asw = A * 8 // n_as         # bits per slice
        act_mem = [[[Memory(shape=unsigned(asw), depth=ab, init=[], attrs=act_attrs)
                     for _ in range(n_as)] for _ in range(nb)] for _ in range(2)]
        # OUT is deep and narrow: banks of OUT_BANK bytes (one ECP5 DP16KD, 2048 x 9, each),
        # each read into its own register, so the bank multiplexer never follows a block
        # RAM's clock-to-out in the same cycle.
        n_ob = -(-spec.out_bytes // OUT_BANK)
        lob = _log2(OUT_BANK) if n_ob > 1 else max(1, (spec.out_bytes - 1).bit_length())
        out_mem = [Memory(shape=unsigned(8), depth=min(OUT_BANK, spec.out_bytes - i * OUT_BANK), attrs=rw,
                          init=[]) for i in range(n_ob)]
        id_bytes = spec.id_bytes()
        id_mem = Memory(shape=unsigned(8), depth=len(id_bytes), init=list(id_bytes))
        # IN (streaming engines): the packed input frame, a byte a pixel, written by the host
        # while the engine reads it (its own write and read ports: a simple dual-port RAM).
        in_mem = Memory(shape=unsigned(8), depth=spec.in_bytes, init=[], attrs=rw) \
            if spec.in_bytes else None
        m.submodules.desc_mem = desc_mem
        for i, mem in enumerate(w_mem):
            m.submodules[f"w_mem{i}"] = mem
        for i, mem in enumerate(b_mem):
            m.submodules[f"b_mem{i}"] = mem
        for b in range(2):
            for k, slices in enumerate(act_mem[b]):
                for j, mem in enumerate(slices):
                    m.submodules[f"act{b}_mem" + (f"{k}" if nb > 1 else "") +
                                 (f"_{j}" if n_as > 1 else "")] = mem
        for i, mem in enumerate(out_mem):
            m.submodules[f"out_mem{i}"] = mem
        m.submodules.id_mem = id_mem
        if in_mem is not None:
            m.submodules.in_mem = in_mem
        desc_rd = desc_mem.read_port()
        desc_wr = desc_mem.write_port()
        w_rd = [mem.read_port() for mem in w_mem]
        w_wr = [mem.write_port(granularity=8) for mem in w_mem]
        b_rd = [mem.read_port() for mem in b_mem]
        b_wr = [mem.write_port(granularity=1 if e_widths else 8) for mem in b_mem]
        b_read = _entry_image(b_rd[0].data, e_widths) if e_widths else Cat(rd.data for rd in b_rd)
        act_rd = [[[mem.read_port() for mem in slices] for slices in banks] for banks in act_mem]
        act_wr = [[[mem.write_port(granularity=8) for mem in slices] for slices in banks]
                  for banks in act_mem]
        out_rd = [mem.read_port() for mem in out_mem]
        out_wr = [mem.write_port() for mem in out_mem]
        id_rd = id_mem.read_port()
        in_rd = in_mem.read_port() if in_mem is not None else None
        in_wr = in_mem.write_port() if in_mem is not None else None
        # Per-layer snapshots of (cycles_busy, mac_used) at the end of each layer.
        # (in block RAM on iCE40: yosys would otherwise build this small memory of flip-flops
        # and multiplexers, ~500 logic cells)
        if spec.snapshots:
            snap_mem = Memory(shape=unsigned(64), depth=spec.max_layers, init=[],
                              attrs={**rw, **({"ram_style": "block"} if uses_ice40_dsp(platform) else {})})
            m.submodules.snap_mem = snap_mem
            snap_wr = snap_mem.write_port()
            snap_rd = snap_mem.read_port()
        else:   # (none: what would write them is left unused, COUNT reads 0 there)
            snap_wr = SimpleNamespace(addr=Signal(8), en=Signal(), data=Signal(64))
            snap_rd = SimpleNamespace(addr=Signal(8), data=Const(0, 64))

        # ---- control state ----------------------------------------------------------------
        busy = Signal()
        done = Signal()
        error = Signal()
        n_layers = Signal(8)
        layer = Signal(8)
        desc_raw = Signal(DESC_BYTES * 8, reset_less=True)
        desc = Signal(LayerDescriptor)
        m.d.comb += desc.eq(desc_raw)
        # The descriptor's fields are as wide as the protocol allows; the datapath uses only
        # the bits this spec can need (the host compiler checks sizes against the spec).
        wd = _widths(spec)
        ctl_layout = _ctl_layout(wd)
        meta_layout = _meta_layout(wd)
        SW, AW, VB, DB = wd["sw"], wd["aw"], wd["vb"], wd["db"]
        narrow = {"n_vg": VB, "pv_last": VB, "h_in": DB + 1, "w_in": DB + 1,
                  "h_out": DB + 1, "w_out": DB + 1, "qy0": DB + 1, "qy1": DB + 1,
                  "qx0": DB + 1, "qx1": DB + 1, "vy0": DB + 1, "vy1": DB + 1, "vx0": DB + 1,
                  "vx1": DB + 1, "by0": SW, "bx0": SW, "hw_in": AW, "in_base": AW,
                  "w_base": AW, "b_base": AW, "row0": AW, "obase0": AW, "orow": AW,
                  "qy_last": DB + 1}
        if lean:
            # (a small FPGA, where each descriptor bit is a logic cell: the fields whose
            # range the compiler bounds by a memory, as wide as that memory's addresses;
            # orow = S * w_out < 16 * 2**dim_bits)
            narrow.update(w_base=(spec.weight_depth - 1).bit_length(),
                          b_base=(spec.bias_depth - 1).bit_length(),
                          in_base=(spec.act_depth - 1).bit_length(),
                          hw_in=spec.act_depth.bit_length(), row0=spec.act_depth.bit_length(),
                          orow=DB + 4)

        def _narrow(name):
            v = getattr(desc, name)
            return v[:narrow[name]].as_signed() if v.shape().signed else v[:narrow[name]]

        dn = SimpleNamespace(**{name: _narrow(name) for name in narrow})
        db = Signal(range(DESC_BYTES + 3))
        desc_q = Signal(8, reset_less=True)     # the descriptor RAM's output, registered
        desc_q2 = Signal(8, reset_less=True)    # ... and once more, on its way to the fields
        start = Signal()
        soft_reset = Signal()
        m.d.comb += self.busy.eq(busy)
        # Exact copies of busy, each driving one group of the memories' address and data
        # multiplexers: set and cleared with it (by a start; at the end of the last layer or
        # by a soft reset, which wins), see the end of elaborate.
        busy_set = Signal()
        busy_copies = []

        def busy_copy(name):
            r = Signal(name=name)
            busy_copies.append(r)
            return r

        kept = COUNTERS if spec.counters == "all" else BASIC_COUNTERS
        # (reset-less: a start or soft reset clears them, and they power up as 0 from the
        # configuration's initial values; the reset route to all of them spanned the die)
        counters = {name: Signal(32, name=f"cnt_{name}", reset_less=True) if name in kept
                    else Const(0, 32) for name in COUNTERS}
        # (lean: the cycle counter in two halves, the low half's carry registered into the
        # high one a cycle later, so no 32-bit carry chain closes in a cycle; it is read
        # when the engine is idle, long after its last count. The layer counter as wide as
        # a run's layers: it is cleared at every start.)
        split = {}
        if lean and "cycles_busy" in kept:
            split["cycles_busy"] = (Signal(16, name="cnt_cycles_busy_lo", reset_less=True),
                                    Signal(16, name="cnt_cycles_busy_hi", reset_less=True),
                                    Signal(name="cnt_cycles_busy_cy", reset_less=True))
            counters["cycles_busy"] = Cat(*split["cycles_busy"][:2])
        if lean and "layers_done" in kept:
            counters["layers_done"] = Signal(range(spec.max_layers + 1),
                                             name="cnt_layers_done", reset_less=True)

        # ---- sequencer registers (pipeline stage 0) -----------------------------------------
        kx = Signal(4, reset_less=True)
        ky = Signal(4, reset_less=True)
        cg = Signal(9, reset_less=True)
        vg = Signal(VB, reset_less=True)
        qx = Signal(signed(SW), reset_less=True)
        qy = Signal(signed(SW), reset_less=True)
        ix = Signal(signed(SW), reset_less=True)
        iy = Signal(signed(SW), reset_less=True)
        # qx + 1 and qy + 1 (and the first values' successors) kept in registers: ix and iy
        # take them without an adder, so their one adder (- 1) has no multiplexer before it.
        qx_inc = Signal(signed(SW), reset_less=True)
        qy_inc = Signal(signed(SW), reset_less=True)
        qx0_inc = Signal(signed(SW), reset_less=True)
        plane = Signal(signed(AW), reset_less=True)
        rowoff = Signal(signed(AW), reset_less=True)
        qyw = Signal(signed(AW), reset_less=True)
        w_addr = Signal(AW, reset_less=True)
        # Ring buffers (streaming): a banded layer's ACT addresses wrap in planes of
        # 2**ring_bits words (reads unless from IN, writes unless to OUT: those memories wrap
        # at their own sizes); whether they do, registered per layer in PREP.
        RB = spec.ring_bits
        if streaming:
            in_ring = Signal()
            out_ring = Signal()

        # "Last value" flags of the loop counters, registered: set when a counter steps onto
        # its last value (so the sequencer's decisions come straight from flip-flops).
        last_kx, last_ky, last_cg, last_vg, last_qx, last_qy = (
            Signal(name=f"last_{n}") for n in ("kx", "ky", "cg", "vg", "qx", "qy"))
        # Whether the tap's input pixel is inside the frame: compared a cycle after issue, on
        # copies of ix and iy (the compares against the descriptor's sizes do not share a
        # cycle with the sequencer's stepping); it joins the control at stage 1.
        ix_a = Signal(signed(SW), reset_less=True)
        iy_a = Signal(signed(SW), reset_less=True)
        m.d.sync += [ix_a.eq(ix), iy_a.eq(iy), qx0_inc.eq(dn.qx0 + 1)]
        in_frame_a = Signal()
        m.d.comb += in_frame_a.eq((iy_a >= 0) & (iy_a < dn.h_in) & (ix_a >= 0) & (ix_a < dn.w_in))

        # ---- the MAC pipeline -------------------------------------------------------------
        # The pipeline never stalls (no enable fans out to its thousands of registers): the
        # sequencer instead spaces the last MAC cycles of consecutive groups by at least the
        # drain time of the earlier group, so a group reaches the accumulators only when the
        # hold bank can take it. ``adv`` = the sequencer advances (else it issues a bubble).
        adv = Signal()
        issuing = Signal()      # the sequencer is in a layer's MAC loop
        # The drain takes R outputs every ``period`` cycles (2 for a serial requantiser).
        period = {"parallel": 1, "serial": 2, "lut": LutRequant.PERIOD}[spec.requant]
        # ``spaced``: the small FPGA's lean pipeline with a requantiser slower than 2 cycles
        # an output. Every group's drain then takes more than two cycles, and the sequencer
        # holds each group's last MAC back by its predecessor's drain, so groups end, drains
        # run and the outer loop levels (vg, qx, qy) step at least that far apart. Wherever
        # ``spaced`` is tested, a value is computed a cycle ahead, from registers, on this
        # argument. (Only there: the ECP5 build's netlist stays as it was timed.)
        spaced = lean and period > 2
        drain_wait = Signal(range(period * P + 1))
        dw_next = Signal.like(drain_wait)
        dw_nz = Signal()        # drain_wait != 0, registered
        lr = _log2(R)
        # The layer's lvl = log2(Pi), decoded once into registers (the descriptor is loaded
        # two cycles before the MAC loop starts): the lane group size pv and a one-hot lvl
        # for every lane's operand and accumulator-input multiplexers.
        # (spec.fixed_pi: every layer's lvl is LA, a constant; the host plans for it, and
        # only NA = P / A accumulators exist.)
        lvl = Const(LA, 4) if spec.fixed_pi else desc.lvl
        NA = P >> LA if spec.fixed_pi else P
        if spec.fixed_pi:
            pv, lvl_oh = Const(NA, range(P + 1)), Const(1 << LA, LA + 1)
        else:
            pv = Signal(range(P + 1))
            lvl_oh = Signal(LA + 1)
            m.d.sync += [pv.eq(P >> lvl), lvl_oh.eq(1 << lvl)]

        def onehot_mux(choices, oh=lvl_oh):
            """The choice k whose ``oh`` bit is set (an AND-OR, no decoder in the path)."""
            out = 0
            for k, v in choices:
                out = out | Mux(oh[k], v, 0)
            return out
        def drain_cycles(cnt):
            return Mux(desc.wide, (cnt + R - 1) >> lr, cnt) * period
        # The wait after issuing a group's last MAC, minus one, for a full and for the last
        # lane group, registered beside pv from the descriptor (no adder or shift after the
        # sequencer's flags); whether the wait counter is nonzero next cycle and whether it
        # will be 1, from registers only (drain times not 1, or 2; drain_wait == 2).
        issue_m1 = Signal(range(period * P + 1), reset_less=True)
        issue_m1_last = Signal(range(period * P + 1), reset_less=True)
        drain_gt1 = Signal()
        drain_gt1_last = Signal()
        drain_is2 = Signal(reset_less=True)
        drain_is2_last = Signal(reset_less=True)
        dw_is1 = Signal()
        dw_next_nz = Signal()
        dw_next_is1 = Signal()
        full_drain, last_drain = drain_cycles(P >> lvl), drain_cycles(dn.pv_last)
        m.d.sync += [issue_m1.eq(full_drain - 1), issue_m1_last.eq(last_drain - 1),
                     drain_gt1.eq(full_drain != 1), drain_gt1_last.eq(last_drain != 1),
                     drain_is2.eq(full_drain == 2), drain_is2_last.eq(last_drain == 2),
                     dw_is1.eq(dw_next_is1)]
        last0 = last_cg & last_ky & last_kx
        # Timing: ``adv`` and the per-level step enables ``en`` (adv and every inner level on
        # its last value) are registers, computed from the flags' and drain_wait's next
        # values, so the sequencer's clock enables come straight from flip-flops.
        levels_ = ("kx", "ky", "cg", "vg", "qx", "qy")
        flags = dict(zip(levels_, (last_kx, last_ky, last_cg, last_vg, last_qx, last_qy)))
        n_last = {k: Signal(name=f"n_last_{k}") for k in levels_}
        for k in levels_:
            m.d.comb += n_last[k].eq(flags[k])      # hold unless the FSM says otherwise
            m.d.sync += flags[k].eq(n_last[k])
        # Their lookahead, registers too: ``one`` = the level's first value is its last (set
        # per layer), ``pre`` = the counter's next value is its last (kept as it steps), so
        # that the next flags need no adder or compare after the FSM's decisions.
        # (counter, first value, limit, offset): value v is the last when v + offset == limit
        loops = {"kx": (kx, 0, desc.t, 1), "ky": (ky, 0, desc.t, 1), "cg": (cg, 0, desc.cw, 1),
                 "vg": (vg, 0, dn.n_vg, 1), "qx": (qx, dn.qx0, dn.qx1, 0),
                 "qy": (qy, dn.qy0, dn.qy1, 0)}

        def hit(k, v):
            _, _, limit, off = loops[k]
            return v + off == limit
        # What the lookahead compares with, registered: the descriptor holds from PREP to
        # the layer's end, so ``ahead`` (the counter value two steps before the last: the
        # limit minus offset + 2, exact in signed arithmetic) and ``again`` (after a wrap,
        # the first value's successor is the last) are exact in RUN, and a step's lookahead
        # is one compare of two registers, no adder in front of it.
        ahead, again = {}, {}
        for k, (_, first, limit, off) in loops.items():
            ahead[k] = Signal(signed(len(limit) + 3), name=f"ahead_{k}", reset_less=True)
            again[k] = Signal(name=f"again_{k}", reset_less=True)
            m.d.sync += [ahead[k].eq(limit + Const(-(off + 2), signed(3))),
                         again[k].eq(hit(k, first + 1))]

        def pre_after_step(k):
            return loops[k][0] == ahead[k]

        def pre_after_wrap(k):
            return again[k]
        one = {k: Signal(name=f"one_{k}") for k in levels_}
        pre = {k: Signal(name=f"pre_last_{k}") for k in levels_}
        en = {k: Signal(name=f"en_{k}") for k in levels_[1:]}
        n_adv = Signal()
        m.d.comb += n_adv.eq(~(n_last["cg"] & n_last["ky"] & n_last["kx"] & dw_next_nz))
        held = Signal()         # ~adv, registered (not adv itself: a set-at-reset flip-flop
        m.d.sync += held.eq(~n_adv)     # here made yosys 0.70 abc9 assert)
        m.d.comb += adv.eq(~held)
        en["kx"] = adv
        if lean:
            # (the same enables, with n_adv folded into each: a level whose inner levels are
            # all on their last value steps unless the group's last MAC must wait)
            nl = dict(n_last)
            if spaced:
                # (groups end at least two cycles apart, the drain wait in between: when vg,
                # qx and qy may step next cycle they do not step in this one, so their next
                # flags are their flags, or in INIT their first ones: no step multiplexer)
                in_init = Signal(name="in_init")    # st["INIT"], below
                for k in ("vg", "qx"):
                    nl[k] = Mux(in_init, one[k], flags[k])
            l3 = nl["kx"] & nl["ky"] & nl["cg"]
            m.d.sync += [en["ky"].eq(nl["kx"] & ~(nl["ky"] & nl["cg"] & dw_next_nz)),
                         en["cg"].eq(nl["kx"] & nl["ky"] & ~(nl["cg"] & dw_next_nz)),
                         en["vg"].eq(l3 & ~dw_next_nz),
                         en["qx"].eq(l3 & ~dw_next_nz & nl["vg"]),
                         en["qy"].eq(l3 & ~dw_next_nz & nl["vg"] & nl["qx"])]
        else:
            inner = n_adv
            for k in levels_[1:]:
                inner = inner & n_last[levels_[levels_.index(k) - 1]]
                m.d.sync += en[k].eq(inner)
        # (a drain of period > 2 cycles: every group's drain takes more than one cycle)
        gt1 = (Const(1), Const(1)) if spaced else (drain_gt1_last, drain_gt1)
        with m.If(issuing & adv & last0):
            m.d.comb += [dw_next.eq(Mux(last_vg, issue_m1_last, issue_m1)),
                         dw_next_nz.eq(Mux(last_vg, *gt1)),
                         dw_next_is1.eq(Mux(last_vg, drain_is2_last, drain_is2))]
        with m.Elif(dw_nz):
            m.d.comb += [dw_next.eq(drain_wait - 1), dw_next_nz.eq(~dw_is1),
                         dw_next_is1.eq(drain_wait == 2)]
        # (dw_nz from dw_next_nz, which equals dw_next != 0 from registers only: no subtract
        # and compare after the sequencer's flags)
        m.d.sync += [drain_wait.eq(dw_next), dw_nz.eq(dw_next_nz)]
        ctl0 = Signal(ctl_layout)
        m.d.comb += [
            ctl0.valid.eq(issuing & adv),
            ctl0.first.eq((cg == 0) & (ky == 0) & (kx == 0)),
            ctl0.last.eq(last0),
        ]

        # Stage 1: memory read data. Stage 2: registered copies of the words (block RAM
        # output registers where the FPGA has them). Stage 3: each lane's operands, the
        # activation byte selected for the layer's Pi and zeroed outside the frame. Stage 4:
        # the products. Nothing between a RAM output and a multiplier shares a cycle.
        ctl = [ctl0]

        def stage(name):
            c = Signal(ctl_layout, name=name)
            m.d.sync += c.eq(ctl[-1])
            ctl.append(c)
            return c

        # Datapath registers (addresses, words, operands, products, sums, accumulators, the
        # hold bank, drain and write data, host read data) are reset-less: what they hold is
        # qualified by a reset control bit, and the reset then reaches only the controls
        # (a reset fanning out to every register of the array would be the critical net).
        # Stage A: the read addresses, registered (an adder and the fan-out to every block RAM
        # of a buffer do not share a cycle).
        act_addr = Signal(signed(AW), reset_less=True)
        w_raddr = Signal(AW, reset_less=True)
        act_addr_next = plane + rowoff + ix
        if streaming:
            # (ring buffers: the address's low ring_bits bits wrap, the plane's bits above)
            act_addr_next = Cat(act_addr_next[:RB],
                                Mux(in_ring, plane[RB:], act_addr_next[RB:])).as_signed()
        m.d.sync += [act_addr.eq(act_addr_next), w_raddr.eq(w_addr)]
        stage("ctla")
        ctl1 = stage("ctl1")
        m.d.sync += ctl1.in_frame.eq(in_frame_a)     # (ctl0 and ctla carry no in_frame)
        act_word = Signal(A * 8, reset_less=True)
        w_word = Signal(P * 8, reset_less=True)
        lean_words = lean and not banked
        host_act_sel = Signal()     # the ACT buffer a host read addresses (engine idle)
        host_act_bank = Signal(nbb)     # and its bank
        if banked:
            # The read address: the banks' address registers copy act_addr a cycle after it
            # is summed (in block RAM the copies are many and spread, and the three-input
            # adder stays out of their path); each bank's word then passes ACT_BANK_REGS
            # registers. So ACT reads take 1 + ACT_BANK_REGS cycles more, and the weights
            # (their address register below takes w_eaddr_next), the bank index and the
            # control pipeline are delayed to match.
            def delayed(value, n, name):
                for i in range(n):
                    r = Signal(len(value), name=f"{name}{i}", reset_less=True)
                    m.d.sync += r.eq(value)
                    value = r
                return value
            act_rd_addr = act_addr
            # (the last of them is act_one, the word picked from the banks' registers once,
            # which the copies per lane group then take: see act_pick)
            act_src = [[delayed(Cat(rd.data for rd in act_rd[b][k]), ACT_BANK_REGS - 1,
                                f"act_q{b}_{k}_") for k in range(nb)] for b in range(2)]
            # (the bank of the word in the banks' registers next cycle)
            bank_next = delayed(act_addr[lab:lab + nbb] if nb > 1 else Const(0, nbb),
                                ACT_BANK_REGS, "bank")
            # (the weights' read passes one register more, in place of one address delay:
            # block RAM outputs then drive only registers beside them, see w_word)
            w_eaddr_next = delayed(w_raddr, ACT_BANK_REGS - 1, "w_raddr_d")
            for i in range(1 + ACT_BANK_REGS):
                stage(f"ctl1_bank{i}")
        else:
            # (lean: the address registers copy act_addr, the registered sum, a cycle later,
            # and the word goes from the RAM to the lanes' operand registers without act_word
            # between, as the weights' does: so the three-input adder is not in front of the
            # address registers, and the word arrives in the same cycle as before)
            act_rd_addr = act_addr if lean_words else act_addr_next
            act_src = [[Cat(rd.data for rd in act_rd[b][0])] for b in range(2)]
            bank_next = Const(0, nbb)
            # (lean: the weights are read a cycle later, from the registered address, and
            # their RAM's data is the lanes' operand without w_word in between: on iCE40
            # a flip-flop fed by a RAM takes a logic cell of its own, 128 here)
            w_eaddr_next = w_raddr if lean_words else w_addr
        # The word of buffer buf, bank k (source buf * nb + k), chosen by a one-hot register
        # per copy of the word, loaded with the next cycle's choice (the engine's while busy,
        # the host read's, whose address holds, while idle): no decode and no single select
        # net in front of the copies' multiplexers.
        sources = act_src[0] + act_src[1]
        if spec.act_host:
            src_next = Cat(Mux(busy, bank_next, host_act_bank)[:(nb - 1).bit_length()],
                           Mux(busy, desc.in_buf, host_act_sel))
        else:   # (no host access to the feature maps: the engine's choice only)
            src_next = Cat(bank_next[:(nb - 1).bit_length()], desc.in_buf)
        if streaming:
            # The IN memory, a third source: its byte in lane 0, the other lanes 0. Its read
            # address a register copying the ACT read address, as the banks' (so its data
            # comes with theirs, through as many registers).
            in_pa = Signal(range(spec.in_bytes), name="in_pa", reset_less=True)
            m.d.sync += in_pa.eq(act_rd_addr)
            m.d.comb += in_rd.addr.eq(in_pa)
            in_data = in_rd.data
            for i in range(ACT_BANK_REGS - 1 if banked else 0):
                r = Signal(8, name=f"in_q{i}", reset_less=True)
                m.d.sync += r.eq(in_data)
                in_data = r
            sources.append(Cat(in_data, Const(0, A * 8 - 8)))
            src_next = Mux(busy & desc.in_src, len(sources) - 1, src_next)

        def act_pick(name):
            # (a one-hot register per ACT_PICK_BITS of the word: one would drive 2 * nb LUT
            # inputs per bit of it, and the placer put it 10 ns from some of them)
            chunks = []
            for c in range(0, A * 8, ACT_PICK_BITS):
                oh = Signal(len(sources), name=f"{name}{c // ACT_PICK_BITS}", reset_less=True)
                m.d.sync += oh.eq(1 << src_next)
                chunks.append(onehot_mux(enumerate(src[c:c + ACT_PICK_BITS] for src in sources),
                                         oh=oh))
            return Cat(*chunks)
        # The weight RAMs' data: in block RAM through a register first (on ECP5 the block's
        # own output register, docs/boards.md), so their pins never drive the lanes' wide
        # fan-out directly.
        w_data = Cat(rd.data for rd in w_rd)
        if banked:
            w_q = Signal(P * 8, reset_less=True)
            m.d.sync += w_q.eq(w_data)
            w_data = w_q
        if banked:
            # In block RAM the banks are spread over the die: their words are picked once,
            # into act_one (beside the banks' registers, which on ECP5 are the blocks' own
            # output registers), and the copies per lane group take act_one: each bank bit
            # reaches one multiplexer, not one per copy.
            act_one = Signal(A * 8, reset_less=True)
            m.d.sync += act_one.eq(act_pick("act_src"))

            def act_copy(name):
                return act_one
        else:
            act_copy = act_pick
        if lean_words:
            m.d.comb += [act_word.eq(act_copy("act_src0__rep")), w_word.eq(w_data)]
        else:
            m.d.sync += [act_word.eq(act_copy("act_src0__rep")), w_word.eq(w_data)]
        # Copies per group of OP_GROUP lanes of the activation word, the layer's lvl and the
        # in-frame bit, each driving only its group's operand multiplexers (the original
        # act_word feeds group 0 and the host reads). "__rep": kept apart by the flows
        # (deconvsr.hw.synth.KEEP_REPLICAS), which yosys would otherwise merge again.
        n_opg = max(1, P // OP_GROUP)
        op_word = [act_word]
        op_ctl = []
        for g in range(n_opg):
            if g:
                w_g = Signal(A * 8, name=f"act_word{g}__rep", reset_less=True)
                m.d["comb" if lean_words else "sync"] += w_g.eq(act_copy(f"act_src{g}__rep"))
                op_word.append(w_g)
            c_g = Signal(1 if spec.fixed_pi else LA + 2, name=f"op_ctl{g}__rep",
                         reset_less=True)
            m.d.sync += c_g.eq(Cat(ctl[-1].in_frame, *(() if spec.fixed_pi else (1 << lvl,))))
            op_ctl.append(c_g)
        ctl2 = stage("ctl2")

        # Lane l = g*Pi + j takes activation byte j = l mod Pi.
        a_ops, b_ops = [], []
        a_ins, b_ins = [], []       # the operands before their registers
        for lane in range(P):
            # (lanes l, l + A, ... take the same activation byte; in different groups their
            # operand registers have different sources and stay apart)
            g = lane // OP_GROUP
            act_sel = Signal(8, name=f"act_sel{lane}")
            if spec.fixed_pi:
                m.d.comb += act_sel.eq(op_word[g].word_select(lane & (A - 1), 8))
            else:
                m.d.comb += act_sel.eq(onehot_mux(
                    ((k, op_word[g].word_select(lane & ((1 << k) - 1), 8))
                     for k in range(LA + 1)), oh=op_ctl[g][1:]))
            a_op = Signal(8, name=f"a_op{lane}", reset_less=True)
            b_op = Signal(signed(8), name=f"b_op{lane}", reset_less=True)
            a_in = Mux(op_ctl[g][0], act_sel, 0)
            b_in = w_word.word_select(lane, 8)
            m.d.sync += [a_op.eq(a_in), b_op.eq(b_in)]
            a_ins.append(a_in)
            b_ins.append(b_in)
            a_ops.append(a_op)
            b_ops.append(b_op)
        stage("ctl3")

        # The products: ShiftAddMul per lane (logic, three stages), or the FPGA's multipliers,
        # pairs of lanes sharing a DualMul8 (one SB_MAC16 in 8x8 mode on iCE40, where yosys
        # would spend a DSP per product), registered.
        dual = a.act_bits == 8 and a.weight_bits == 8 and P >= 2
        prods = []
        if spec.multiplier == "lut":
            for lane in range(P):
                mul = ShiftAddMul(a.act_bits, a.weight_bits, stages=3)
                m.submodules[f"mul{lane}"] = mul
                m.d.comb += [mul.a.eq(a_ops[lane]), mul.b.eq(b_ops[lane])]
                prods.append(mul.p)
            stage("ctl4a")
            stage("ctl4b")
        else:
            # The last ``spec.lut_lanes`` lanes multiply in logic (their DSPs are spent
            # elsewhere): a ShiftAddMul fed before the operand registers (its first stage is
            # their register), so its product arrives with the DSPs'.
            n_dsp = P - spec.lut_lanes
            for lane in range(0, P, 2 if dual else 1):
                if lane >= n_dsp:
                    for i in range(2 if dual else 1):
                        mul = ShiftAddMul(a.act_bits, a.weight_bits)
                        m.submodules[f"lmul{lane + i}"] = mul
                        m.d.comb += [mul.a.eq(a_ins[lane + i]), mul.b.eq(b_ins[lane + i])]
                        prods.append(mul.p)
                elif dual:
                    # (the operand registers inside the DSP: SB_MAC16's A_REG/B_REG)
                    mul = DualMul8(operand_reg=True)
                    m.submodules[f"mul{lane // 2}"] = mul
                    m.d.comb += mul.en.eq(1)
                    for i in range(2):
                        m.d.comb += [mul.a[i].eq(a_ins[lane + i]), mul.b[i].eq(b_ins[lane + i])]
                    prods.extend([mul.p[0], mul.p[1]])
                else:
                    prod = Signal(signed(a.act_bits + a.weight_bits + 1), name=f"prod{lane}",
                                  reset_less=True)
                    m.d.sync += prod.eq(a_ops[lane] * b_ops[lane])
                    prods.append(prod)
        stage("ctl4")
        prod_stage = len(ctl) - 1           # the control aligned with ``prods``

        # Product stage + k: adder tree level k (registered), up to the widest split Pi = A.
        levels = [prods]
        for k in range(1, LA + 1):
            prev = levels[-1]
            cur = []
            for i in range(len(prev) // 2):
                s = Signal(signed(a.act_bits + a.weight_bits + 1 + k), name=f"sum{k}_{i}",
                           reset_less=True)
                m.d.sync += s.eq(prev[2 * i] + prev[2 * i + 1])
                cur.append(s)
            levels.append(cur)
            stage(f"ctl{prod_stage + k}")

        # Accumulators tap level lvl with the control of the product stage + lvl, registered
        # twice more (``acc_pre``, then ``acc_in``) so that no multiplexer sits before the
        # accumulators' adders and their high-fan-out controls, and the placer can split the
        # route from the adder tree to each accumulator.
        # (spec.pipeline == "lean": registered once, no acc_pre; the controls then skip
        # acc_mid. Only the cycle a group reaches the accumulators moves.)
        ctl_acc = Signal(ctl_layout, name="ctl_acc__rep")     # (not merged with a group's copy)
        acc_next = Signal(ctl_layout)
        acc_mid = Signal(ctl_layout)
        m.d.comb += acc_next.eq(onehot_mux((k, ctl[prod_stage + k].as_value())
                                           for k in range(LA + 1)))
        # (lean with a fixed Pi: the tree's last level is the accumulators' input, no
        # register between, and the few accumulators' controls are ctl_acc itself)
        direct = lean and spec.fixed_pi
        if direct:
            m.d.comb += [acc_mid.eq(acc_next), ctl_acc.eq(acc_next)]
        elif lean:
            m.d.comb += acc_mid.eq(acc_next)
            m.d.sync += ctl_acc.eq(acc_next)
        else:
            m.d.sync += [acc_mid.eq(acc_next), ctl_acc.eq(acc_mid)]
        # The accumulators' controls (first, valid, last, wide, lvl) in a copy per group of
        # ACC_GROUP lanes, so that no single flip-flop drives the adders and hold registers
        # of every lane across the die (at P = 64 that route alone was 12.6 ns), and the
        # group's push (valid and last, a cycle later: the hold bank takes the finished sums
        # from the accumulators' registers); "__rep": kept apart by the flows
        # (KEEP_REPLICAS).
        acc_grp = []
        for q in range(max(1, NA // ACC_GROUP)):
            # (reset-less, as a soft reset leaves them, see there: the reset's route to
            # them spanned the die; they load acc_mid, reset, a cycle after a reset, and the
            # FPGA powers them up as 0)
            r = Signal(4 if spec.fixed_pi else 4 + LA + 1, name=f"acc_ctl{q}__rep",
                       reset_less=True)
            m.d[("comb" if direct else "sync")] += r.eq(
                Cat(acc_mid.first, acc_mid.valid, acc_mid.last, desc.wide,
                    *(() if spec.fixed_pi else (1 << lvl,))))
            r_push = Signal(name=f"acc_push{q}__rep", reset_less=True)
            m.d.sync += r_push.eq(r[1] & r[2])
            acc_grp.append((r, SimpleNamespace(first=r[0], valid=r[1], push=r_push,
                                               wide=r[3],
                                               lvl_oh=lvl_oh if spec.fixed_pi else r[4:])))
        hold_full = Signal()
        hold_release = Signal()
        push = Signal()         # a finished group enters the hold bank
        d_go = Signal()         # the drain takes outputs this cycle
        if period > 2:
            # (a drain every ``period`` cycles: counted down after each, not restarted by a
            # push, so the requantiser's inputs are never closer; the sequencer's spacing of
            # groups by their drain time means a push never waits for it)
            # (d_zero: d_wait == 0, kept as a flip-flop beside it, so d_go, which enables
            # the hold bank, the tracker and the entry address, is an AND of two registers)
            d_wait = Signal(range(period))
            d_zero = Signal(init=1)
            m.d.comb += d_go.eq(hold_full & d_zero)
            m.d.sync += [d_wait.eq(Mux(d_go, period - 1, Mux(d_zero, 0, d_wait - 1))),
                         d_zero.eq(~d_go & (d_zero | (d_wait == 1)))]
        elif period > 1:
            d_tog = Signal()    # the off cycle of the drain's period
            m.d.comb += d_go.eq(hold_full & ~d_tog)
            m.d.sync += d_tog.eq(Mux(push, 0, d_go))
        else:
            m.d.comb += d_go.eq(hold_full)
        hold = [Signal(signed(a.acc_bits), name=f"hold{g}", reset_less=True) for g in range(NA)]
        hold_meta = Signal(meta_layout, reset_less=True)
        m.d.sync += push.eq(ctl_acc.valid & ctl_acc.last)
        for g in range(NA):
            acc = Signal(signed(a.acc_bits), name=f"acc{g}", reset_less=True)
            acc_in = Signal(signed(a.acc_bits), name=f"acc_in{g}", reset_less=True)
            # (lanes past the layer's group count take 0: they are never drained)
            gc = acc_grp[g // ACC_GROUP][1]
            # (lean: the group's controls load with acc_in, so the tree's level is chosen
            # by lvl_oh, the descriptor's, which holds through the layer as theirs does)
            tree_out = onehot_mux(((k, levels[k][g]) for k in range(LA + 1) if g < P >> k),
                                  oh=lvl_oh if lean else gc.lvl_oh)
            if direct:
                m.d.comb += acc_in.eq(tree_out)
            elif lean:
                m.d.sync += acc_in.eq(tree_out)
            else:
                acc_pre = Signal(signed(a.acc_bits), name=f"acc_pre{g}", reset_less=True)
                m.d.sync += [acc_pre.eq(tree_out), acc_in.eq(acc_pre)]
            with m.If(gc.valid):
                m.d.sync += acc.eq(Mux(gc.first, acc_in, acc + acc_in))
            # The held group drains from its bottom: the bank shifts down by the drain step
            # (1, or R when wide) every drain cycle (every cycle, or every other one with a
            # serial requantiser) and the drain takes hold[0 .. R-1], so no multiplexer over
            # the P accumulators follows it. (Shifting while empty is harmless: a push
            # reloads the bank.)
            below = [hold[g + s] if g + s < NA else Const(0, signed(a.acc_bits)) for s in (1, R)]
            hold_next = Mux(gc.push, acc, Mux(gc.wide, below[1], below[0]))
            if period > 1:
                with m.If(push | d_go):
                    m.d.sync += hold[g].eq(hold_next)
            else:
                m.d.sync += hold[g].eq(hold_next)
        # The group tracker: the place of the group reaching the accumulators, stepped at
        # each push as the sequencer's vg, qx and qy levels stepped at each group's issue
        # (groups arrive in issue order), instead of carrying it down every pipeline stage.
        g_vg = Signal(VB, reset_less=True)
        g_v0 = Signal(VB, reset_less=True)
        g_qx = Signal(signed(SW), reset_less=True)
        g_last_qx = Signal(reset_less=True)
        g_meta = Signal(meta_layout, reset_less=True)
        g_orow = Signal(signed(AW), reset_less=True)     # obase of the row
        g_last_vg = g_meta.vg_last
        # Their last-step flags compare with registered limits (the descriptor holds during
        # RUN): the value before the last, and whether the first value is the last, so no
        # adder or compare of descriptor fields sits after a push.
        g_ahead_vg = Signal(signed(len(dn.n_vg) + 2), name="g_ahead_vg", reset_less=True)
        g_ahead_qx = Signal(signed(len(dn.qx1) + 2), name="g_ahead_qx", reset_less=True)
        g_one_vg = Signal(name="g_one_vg", reset_less=True)
        g_one_qx = Signal(name="g_one_qx", reset_less=True)
        m.d.sync += [g_ahead_vg.eq(dn.n_vg - 2), g_ahead_qx.eq(dn.qx1 - 1),
                     g_one_vg.eq(dn.n_vg == 1), g_one_qx.eq(dn.qx0 == dn.qx1)]
        if spaced:
            # (lean, drains ``period`` apart: the tracker steps at releases, at least that far
            # apart and far from INIT and LOAD, so its compares and sums are registered a
            # cycle ahead)
            g_hit_vg = Signal(name="g_hit_vg", reset_less=True)
            g_hit_qx = Signal(name="g_hit_qx", reset_less=True)
            m.d.sync += [g_hit_vg.eq(g_vg == g_ahead_vg), g_hit_qx.eq(g_qx == g_ahead_qx)]

            def g_next(name, value):
                r = Signal.like(value, name=f"g_next_{name}", reset_less=True)
                m.d.sync += r.eq(value)
                return r
            g_sum = {"bx": g_next("bx", g_meta.bx + desc.stride),
                     "by": g_next("by", g_meta.by + desc.stride),
                     "obase": g_next("obase", g_meta.obase + desc.stride),
                     "orow": g_next("orow", g_orow + dn.orow),
                     "v0": g_next("v0", g_v0 + pv)}
        else:
            g_hit_vg, g_hit_qx = g_vg == g_ahead_vg, g_qx == g_ahead_qx
            g_sum = {"bx": g_meta.bx + desc.stride, "by": g_meta.by + desc.stride,
                     "obase": g_meta.obase + desc.stride, "orow": g_orow + dn.orow,
                     "v0": g_v0 + pv}
        def step_tracker():
            with m.If(~g_last_vg):
                m.d.sync += [g_vg.eq(g_vg + 1), g_v0.eq(g_sum["v0"]),
                             g_last_vg.eq(g_hit_vg)]
            with m.Else():
                m.d.sync += [g_vg.eq(0), g_v0.eq(0), g_last_vg.eq(g_one_vg)]
                with m.If(~g_last_qx):
                    m.d.sync += [g_qx.eq(g_qx + 1), g_meta.bx.eq(g_sum["bx"]),
                                 g_meta.obase.eq(g_sum["obase"]),
                                 g_last_qx.eq(g_hit_qx)]
                with m.Else():
                    m.d.sync += [g_qx.eq(dn.qx0), g_meta.bx.eq(dn.bx0),
                                 g_meta.by.eq(g_sum["by"]),
                                 g_orow.eq(g_sum["orow"]), g_meta.obase.eq(g_sum["orow"]),
                                 g_last_qx.eq(g_one_qx)]
        if lean:
            # (lean: the tracker steps when the held group is released, not when it is
            # pushed, so it is the held group's place while it drains: no copy of it. The
            # next push comes after the release, the sequencer spacing the groups by their
            # drain time.)
            hold_meta = g_meta
            with m.If(push):
                m.d.sync += hold_full.eq(1)
            with m.Elif(hold_release):
                m.d.sync += hold_full.eq(0)
                step_tracker()
        else:
            with m.If(push):
                m.d.sync += [hold_full.eq(1), hold_meta.eq(g_meta)]
                step_tracker()
            with m.Elif(hold_release):
                m.d.sync += hold_full.eq(0)

        # ---- drain: requantise the held group, one output per cycle ----------------------
        # R = spec.drain_lanes outputs per cycle when the descriptor says ``wide`` (the R
        # outputs are R consecutive channels of one pixel: one ACT word, R byte lanes).
        dg = Signal(range(P + R))
        d_cnt = Signal(range(P + 1))
        d_step = Signal(range(R + 1))
        m.d.comb += [d_cnt.eq(Mux(hold_meta.vg_last, dn.pv_last, pv)),
                     d_step.eq(Mux(desc.wide, R, 1))]
        if spaced:
            # (whether this drain is the group's last, registered: dg moves only at a drain
            # and d_cnt only at a release or in INIT, and drains are ``period`` cycles apart,
            # so the compare of the cycle before is exact; the release enables the tracker)
            # The release itself is a register too, from the next values of hold_full and
            # d_zero and that compare a cycle older (still exact: two cycles before a drain
            # nothing it reads moves), so the tracker's and the hold's enables start at a
            # flip-flop.
            d_at_last = Signal()
            rel_q = Signal()
            m.d.sync += [d_at_last.eq(dg + d_step >= d_cnt),
                         rel_q.eq((push | (hold_full & ~rel_q)) &
                                  ~d_go & (d_zero | (d_wait == 1)) & d_at_last)]
            m.d.comb += hold_release.eq(rel_q)
        else:
            m.d.comb += hold_release.eq(d_go & (dg + d_step >= d_cnt))
        with m.If(d_go):
            m.d.sync += dg.eq(Mux(hold_release, 0, dg + d_step))
        # The entry of output dg, b_base + v0 + dg, kept as a register that steps with dg
        # (loaded with the group, so no adder sits before the entry RAM's address).
        entry_index = Signal(AW, reset_less=True)
        entry_next = Signal(AW)     # (its next value: the entry RAMs' address registers')
        m.d.comb += entry_next.eq(Mux(push, dn.b_base + g_v0,
                                      Mux(d_go, entry_index + d_step, entry_index)))
        m.d.sync += entry_index.eq(entry_next)
        if lean:
            # (lean: neither d1 nor d2. The entry RAM is addressed with the entry index's next
            # value (see its address), so its word comes out in the drain's own cycle, with
            # the held group's bottom accumulator and place: the drain goes to d3 straight
            # from the hold bank. On iCE40 each flip-flop of a delay stage is a logic cell.)
            d1_valid = Const(0, 1)
            d2_valid, d2_wide, d2_sub = d_go, desc.wide, (entry_index[:lr] if lr else 0)
            d2_acc, d2_meta = hold[:R], hold_meta
            b_word = Signal(ENTRY_BYTES * 8 * R)
            m.d.comb += b_word.eq(b_read)
        else:
            d1_valid = Signal()
            d1_wide = Signal(reset_less=True)
            d1_sub = Signal(max(lr, 1), reset_less=True)
            d1_acc = [Signal(signed(a.acc_bits), name=f"d1_acc{r}", reset_less=True) for r in range(R)]
            d1_meta = Signal(meta_layout, reset_less=True)
            m.d.sync += [
                d1_valid.eq(d_go),
                d1_wide.eq(desc.wide),
                d1_sub.eq(entry_index[:lr] if lr else 0),
                d1_meta.eq(hold_meta),
            ]
            for r in range(R):
                m.d.sync += d1_acc[r].eq(hold[r])
            # d2: the entry word registered after the block RAM (whose clock-to-output is
            # most of a cycle), the rest delayed alongside.
            d2_valid = Signal()
            d2_wide = Signal(reset_less=True)
            d2_sub = Signal.like(d1_sub)
            d2_acc = [Signal(signed(a.acc_bits), name=f"d2_acc{r}", reset_less=True)
                      for r in range(R)]
            d2_meta = Signal(meta_layout, reset_less=True)
            b_word = Signal(ENTRY_BYTES * 8 * R, reset_less=True)
            m.d.sync += [d2_valid.eq(d1_valid), d2_wide.eq(d1_wide), d2_sub.eq(d1_sub),
                         d2_meta.eq(d1_meta), b_word.eq(b_read),
                         *[d2_acc[r].eq(d1_acc[r]) for r in range(R)]]
        entries = [Signal(BiasEntry, name=f"entry{r}") for r in range(R)]
        for r in range(R):
            if r == 0:
                m.d.comb += entries[0].eq(Mux(d2_wide, b_word[:ENTRY_BYTES * 8],
                                              b_word.word_select(d2_sub, ENTRY_BYTES * 8)))
            else:
                m.d.comb += entries[r].eq(b_word.word_select(r, ENTRY_BYTES * 8))
        entry = entries[0]
        # d3: the selected entries, the output position and address, registered (the entry
        # multiplexer and the adders do not share a cycle with the range compares).
        d3_valid = Signal()
        d3_wide = Signal(reset_less=True)
        d3_acc = [Signal(signed(a.acc_bits), name=f"d3_acc{r}", reset_less=True) for r in range(R)]
        d3_entry = [Signal(BiasEntry, name=f"d3_entry{r}", reset_less=True) for r in range(R)]
        oy = Signal(signed(SW + 1), reset_less=True)
        ox = Signal(signed(SW + 1), reset_less=True)
        d3_addr = Signal(signed(AW), reset_less=True)
        early = spec.requant == "lut"
        o_addr_next = d2_meta.obase + entry.off[:AW - 1]
        if streaming:
            # (ring buffers: the low ring_bits bits wrap, the entry's plane bits above)
            o_addr_next = Cat(o_addr_next[:RB],
                              Mux(out_ring, entry.off[RB:AW - 1], o_addr_next[RB:]))
        if early:
            # (the requantiser in logic takes its operands a stage early, from d2, and its
            # tag, from d3, as its multiply ends: d3 holds from one drain to the next)
            m.d.sync += d3_valid.eq(d2_valid)
            with m.If(d2_valid):
                m.d.sync += [d3_wide.eq(d2_wide),
                             oy.eq(d2_meta.by + entry.fy[:4]), ox.eq(d2_meta.bx + entry.fx[:4]),
                             d3_addr.eq(o_addr_next),
                             *(d3_entry[r].eq(entries[r]) for r in range(R))]
        else:
            m.d.sync += [d3_valid.eq(d2_valid), d3_wide.eq(d2_wide),
                         oy.eq(d2_meta.by + entry.fy[:4]), ox.eq(d2_meta.bx + entry.fx[:4]),
                         d3_addr.eq(o_addr_next),
                         *(d3_acc[r].eq(d2_acc[r]) for r in range(R)),
                         *(d3_entry[r].eq(entries[r]) for r in range(R))]
        requants = []
        # (lean: the tag's address as wide as the largest memory's, not the datapath's)
        tag_addr_bits = ((max(spec.act_depth, spec.out_bytes) - 1).bit_length() if lean
                         else None)
        # (requant="lut": one requantiser in logic, R = 1, fed a stage early: the operands
        # straight from the hold bank and the entry RAM, the tag from d3, which holds)
        for r in range(R):
            tag_shape = _out_tag_layout(wd, LA, tag_addr_bits) if r == 0 else unsigned(1)
            if early:
                rq = LutRequant(a, tag_shape, tag_delay=None)
            else:
                rq = Requant(a, tag_shape, serial=period > 1, lean=lean)
            m.submodules[f"requant{r}"] = rq
            requants.append(rq)
            shift_w = len(rq.i.payload.shift)
            if early:
                m.d.comb += [
                    rq.i.valid.eq(d2_valid),
                    rq.i.payload.acc.eq(d2_acc[r]),
                    rq.i.payload.bias.eq(entries[r].bias),
                    rq.i.payload.mult.eq(entries[r].mult),
                    rq.i.payload.shift.eq(entries[r].shift[:shift_w]),
                ]
            else:
                m.d.comb += [
                    rq.i.valid.eq(d3_valid & (d3_wide if r else 1)),
                    rq.i.payload.acc.eq(d3_acc[r]),
                    rq.i.payload.bias.eq(d3_entry[r].bias),
                    rq.i.payload.mult.eq(d3_entry[r].mult),
                    rq.i.payload.shift.eq(d3_entry[r].shift[:shift_w]),
                ]
        requant = requants[0]
        o_wide_c = d2_wide if early else d3_wide    # delayed by the requantiser's latency
        for i in range(requant.latency):
            o_wide_d = Signal(name=f"o_wide_d{i}")
            m.d.sync += o_wide_d.eq(o_wide_c)
            o_wide_c = o_wide_d
        t_write = (oy >= 0) & (oy < dn.h_out) & (ox >= 0) & (ox < dn.w_out)
        if spec.windows:
            t_zero = (oy < dn.vy0) | (oy >= dn.vy1) | (ox < dn.vx0) | (ox >= dn.vx1)
        else:   # (no valid windows: streamed frames compute only what they keep)
            t_zero = Const(0, 1)
        if early:
            # (the tag is taken as the multiply ends, PERIOD cycles after d3 loads: its
            # range compares have time to be registered)
            t_write_q = Signal(name="t_write_q", reset_less=True)
            t_zero_q = Signal(name="t_zero_q", reset_less=True)
            m.d.sync += [t_write_q.eq(t_write), t_zero_q.eq(t_zero)]
            t_write, t_zero = t_write_q, t_zero_q
        m.d.comb += [
            requant.i.payload.tag.write.eq(t_write),
            requant.i.payload.tag.zero.eq(t_zero),
            requant.i.payload.tag.addr.eq(d3_addr),
            requant.i.payload.tag.lane.eq(d3_entry[0].lane),
        ]
        # Output stage: the requantisers' outputs (zeroed outside the valid region), their
        # tag and write flag registered as they leave, then (write stage) the byte enables,
        # address and data registered again, so the memories' write ports (spread over many
        # block RAMs) are driven by flip-flops only, and the outputs reach the far banks
        # through a register of each bank's.
        o_tag_c = requant.o.payload.tag
        o_data_c = Mux(o_tag_c.zero, 0, requant.o.payload.data)
        o_group_c = Cat(*[Mux(o_tag_c.zero, 0, rq.o.payload.data) for rq in requants])
        o_tag = Signal(o_tag_c.shape(), reset_less=True)
        o_data = Signal(8, reset_less=True)
        o_group = Signal(8 * R, reset_less=True)    # R bytes for lanes lane..lane+R-1 (wide)
        # (the write stage's flags are reset-less and a soft reset leaves them: they load
        # every cycle from the requantiser, which a soft reset does not clear either, so
        # what is in flight is written either way)
        o_we = Signal(reset_less=True)
        o_wide2 = Signal()
        if early:
            # (the requantiser in logic holds its tag from its output until the next result,
            # at least 8 cycles: no register of it here)
            o_tag = o_tag_c
            m.d.sync += [o_data.eq(o_data_c), o_group.eq(o_group_c),
                         o_we.eq(requant.o.valid & o_tag_c.write), o_wide2.eq(o_wide_c)]
        else:
            m.d.sync += [o_tag.eq(o_tag_c), o_data.eq(o_data_c), o_group.eq(o_group_c),
                         o_we.eq(requant.o.valid & o_tag_c.write), o_wide2.eq(o_wide_c)]
        # an ACT write is in its write stage (for the pipeline-busy flag only; the banks'
        # write enables are their own, below; reset-less: after a soft reset, which clears
        # o_we, it reads 0 a cycle later, and the flag matters only at a layer's end)
        wr_act = Signal(reset_less=True)
        wr_out = Signal(n_ob)                                     # write OUT bank i
        wr_addr = Signal(signed(AW), reset_less=True)
        # Each ACT bank's byte write enables, registered (with wr_act, which only says that
        # some bank is written): the block RAMs' write enables come straight from flip-flops.
        # Each ACT bank has its own copy of the output stage (write flag for this bank, byte
        # lane, wide flag, the byte and the R bytes of a wide write) and of whether the layer
        # writes its buffer, so no output-stage register reaches every bank's write enables
        # and data pins; OUT likewise has its own write flag.
        o_bank_c = o_tag_c.addr[lab:lab + nbb] if nb > 1 else 0
        o_we_c = requant.o.valid & o_tag_c.write
        o_bk = [[SimpleNamespace(
            we=Signal(name=f"o_we{b}_{k}__rep", reset_less=True),
            tgt=Signal(name=f"act_tgt{b}_{k}__rep", reset_less=True),
            lane=Signal(len(o_tag.lane), name=f"o_lane{b}_{k}__rep", reset_less=True),
            wide=Signal(name=f"o_wide{b}_{k}__rep"),
            data=Signal(8, name=f"o_data{b}_{k}__rep", reset_less=True),
            group=Signal(8 * R, name=f"o_group{b}_{k}__rep", reset_less=True))
            for k in range(nb)] for b in range(2)]
        o_we_out = Signal(name="o_we_out__rep", reset_less=True)
        to_out_r = Signal(name="to_out__rep")
        m.d.sync += [to_out_r.eq(desc.to_out), o_we_out.eq(o_we_c & to_out_r)]
        we_act = [[Signal(A, name=f"we_act{b}_{k}", reset_less=True) for k in range(nb)]
                  for b in range(2)]
        for b in range(2):
            for k in range(nb):
                c = o_bk[b][k]
                m.d.sync += [c.we.eq(o_we_c & (o_bank_c == k)), c.lane.eq(o_tag_c.lane),
                             c.wide.eq(o_wide_c), c.data.eq(o_data_c), c.group.eq(o_group_c),
                             c.tgt.eq(~desc.to_out & (desc.in_buf == 1 - b))]
                byte_en = Mux(c.wide, ((1 << R) - 1) << c.lane, 1 << c.lane)
                m.d.sync += we_act[b][k].eq(Mux(c.we & c.tgt, byte_en, 0))
        m.d.sync += [
            wr_act.eq(o_we & ~desc.to_out),
            wr_out.eq(Mux(o_we_out,
                          1 << o_tag.addr[lob:lob + (n_ob - 1).bit_length()] if n_ob > 1 else 1, 0)),
            wr_addr.eq(o_tag.addr),
        ]
        # (OUT's byte, registered per OUT bank at the host ports below; ACT banks: below)
        wr_data_next = Mux(o_wide2, o_group[:8], o_data)

        # ---- sequencer / layer FSM ----------------------------------------------------------
        # Something is in the MAC pipeline, in two registered levels (the valid bits are
        # spread over the die: the MAC stages' and the drain's ORs, then their OR), so it
        # shows what was in flight two cycles before. The layer ends when it said nothing
        # was (``flush_ok``, registered), at least three cycles into FLUSH (nothing is
        # issued in FLUSH, so nothing is in flight then either).
        pb_mac = Signal()
        pb_out = Signal()
        pipe_busy = Signal()
        flush_age = Signal(2)       # cycles in FLUSH, up to 2
        flush_ok = Signal()         # the pipeline is empty: the layer may end
        m.d.sync += [
            pb_mac.eq(Cat([c.valid for c in ctl]).any() | acc_mid.valid | ctl_acc.valid | push),
            pb_out.eq(hold_full | o_we | wr_act | wr_out.any() | d1_valid | d2_valid | d3_valid |
                      requant.busy | requant.o.valid),
            pipe_busy.eq(pb_mac | pb_out),
        ]
        # (a register: the pipeline-busy flags are far from the FSM. flush_age counts only in
        # FLUSH, so its bit 1 says the FSM has been in FLUSH for two cycles; outside FLUSH
        # the flag is not used, and a layer's FLUSH is never two cycles after the last)
        flush_ok_d = Signal()       # (flush_ok's next value; also for busy_clr's, below)
        if not streaming:
            m.d.comb += flush_ok_d.eq(flush_age[1] & ~pipe_busy)
        m.d.sync += flush_ok.eq(flush_ok_d)
        m.d.sync += flush_age.eq(0)        # (counted in FLUSH, below)
        # The layer's snapshot is written a cycle after the layer ends, from registers (the
        # FSM state, the counters and the snapshot RAM are far apart on a large FPGA).
        snap_we = Signal()
        snap_addr = Signal.like(layer)
        snap_data = Signal(64, reset_less=True)
        m.d.sync += [snap_we.eq(0), snap_addr.eq(layer),
                     snap_data.eq(Cat((counters["cycles_busy"] + 2)[:32], counters["mac_used"]))]
        m.d.comb += [snap_wr.addr.eq(snap_addr), snap_wr.en.eq(snap_we), snap_wr.data.eq(snap_data)]
        # The descriptor byte written in a cycle of LOAD: a one-hot register shifted along (byte
        # k is written when db = k + 3), so each byte's clock enable is a flip-flop, not a
        # decode of db and the FSM state. The byte reaches the fields through two registers
        # (desc_q is the block RAM's output register on ECP5; from it to the farthest field
        # took 10.2 ns of routing in build BK, seed 4).
        desc_be = Signal(DESC_BYTES)
        m.d.sync += [desc_be.eq(0), desc_q2.eq(desc_q)]       # (desc_be shifted in LOAD)
        for k in range(DESC_BYTES):
            with m.If(desc_be[k]):
                m.d.sync += desc_raw[8 * k:8 * k + 8].eq(desc_q2)
        # (lean: the fields read only at INIT, by0, obase0 and row0, go from the descriptor's
        # bytes straight into the registers INIT would load them into, in LOAD (the last
        # layer's groups are all drained by then), and are not kept in the descriptor
        # register: each bit of it is a logic cell on iCE40)
        init_direct = {"by0": [g_meta.by], "obase0": [g_meta.obase, g_orow],
                       "row0": [rowoff, qyw]} if lean else {}
        for name, targets in init_direct.items():
            off = data.Layout.cast(LayerDescriptor)[name].offset
            for t in targets:
                for j in range(min(narrow[name], len(t))):
                    k, b = divmod(off + j, 8)
                    with m.If(desc_be[k]):
                        m.d.sync += t[j].eq(desc_q2[b])
        # The layer FSM, one-hot: a flip-flop per state, so that the state's many consumers
        # (step enables, address and counter loads, the group tracker) read a flip-flop, not
        # a decode of an encoded state. (yosys does not re-encode a state register with an
        # initial value.) A soft reset returns to IDLE from any state.
        st = {name: Signal(name=f"st_{name.lower()}", init=name == "IDLE")
              for name in ("IDLE", "LOAD", "PREP", "INIT", "RUN", "FLUSH")}
        if spaced:
            m.d.comb += in_init.eq(st["INIT"])
        if streaming:
            # A banded layer's write-back: once the pipeline is empty (the sequencer's row
            # counters and the group tracker then hold the next band's first row), the next
            # band's fields go into the descriptor's first BAND_BYTES bytes, a byte a cycle
            # (db counting them, as in LOAD), and the layer ends after the last. Everything
            # on the way is registered (the write-back has all the time of FLUSH): B - 1 in
            # PREP, the next qy1 in two steps, each byte (wb_q) a cycle before its write.
            wb_done = Signal()
            wb_go = Signal()            # writing back (the bytes' selection runs one ahead)
            wb_we = Signal()            # a byte is written (registered)
            wb_k = Signal(range(BAND_BYTES + 1))
            wb_q = Signal(8, reset_less=True)
            bm1 = Signal(SW - 1, reset_less=True)
            qy1_sum = Signal(signed(SW + 1), reset_less=True)
            qy1_next = Signal(signed(SW), reset_less=True)
            m.d.sync += [qy1_sum.eq(qy + bm1),
                         qy1_next.eq(Mux(qy1_sum > dn.qy_last, dn.qy_last, qy1_sum))]
            band_image = Signal(BAND_BYTES * 8)
            img = {name: Signal(Shape.cast(data.Layout.cast(LayerDescriptor)[name].shape),
                                name=f"wb_{name}") for name in BAND_FIELDS}
            m.d.comb += [img["row0"].eq(qyw), img["obase0"].eq(g_orow), img["qy0"].eq(qy),
                         img["qy1"].eq(qy1_next), img["by0"].eq(g_meta.by),
                         band_image.eq(Cat(*(img[name] for name in BAND_FIELDS)))]
            m.d.comb += [wb_go.eq(st["FLUSH"] & desc.banded & flush_age[1] & ~pipe_busy &
                                  ~wb_done),
                         flush_ok_d.eq(flush_age[1] & ~pipe_busy & (~desc.banded | wb_done))]
            m.d.sync += [wb_q.eq(band_image.word_select(wb_k[:_log2(BAND_BYTES) + 1], 8)),
                         wb_we.eq(wb_go & (wb_k != BAND_BYTES))]
            with m.If(wb_go & (wb_k != BAND_BYTES)):
                m.d.sync += wb_k.eq(wb_k + 1)
            with m.If(wb_we):
                m.d.sync += db.eq(db + 1)
                with m.If(db == BAND_BYTES - 1):
                    m.d.sync += [db.eq(0), wb_done.eq(1)]
            with m.If(~st["FLUSH"]):
                m.d.sync += [wb_done.eq(0), wb_k.eq(0)]
        db_end = db == DESC_BYTES + 2
        last_layer = Signal()       # (registered: layer and n_layers hold during FLUSH)
        last_layer_d = Signal()
        flush_d = Signal()          # (FLUSH's next value)
        m.d.comb += last_layer_d.eq(layer + 1 >= n_layers)
        m.d.sync += last_layer.eq(last_layer_d)
        run_end = en["qy"] & last_qy
        layer_end = st["FLUSH"] & flush_ok
        m.d.sync += [
            st["IDLE"].eq(soft_reset | (st["IDLE"] & ~start) | (layer_end & last_layer)),
            st["LOAD"].eq(~soft_reset & ((st["IDLE"] & start) | (st["LOAD"] & ~db_end) |
                                         (layer_end & ~last_layer))),
            st["PREP"].eq(~soft_reset & st["LOAD"] & db_end),
            st["INIT"].eq(~soft_reset & st["PREP"]),
            st["RUN"].eq(~soft_reset & (st["INIT"] | (st["RUN"] & ~run_end))),
            st["FLUSH"].eq(flush_d),
        ]
        m.d.comb += flush_d.eq(~soft_reset & ((st["RUN"] & run_end) | (st["FLUSH"] & ~flush_ok)))
        with m.If(st["IDLE"] & start):
            # (streaming: from the START byte's first descriptor: at the CTRL writes below)
            m.d.sync += [*([] if streaming else [layer.eq(0)]), busy.eq(1)]
        with m.If(st["LOAD"]):
            # Byte db is addressed in cycle db, leaves the RAM in cycle db + 1 into
            # desc_q (a register beside the block RAM: the descriptor's bits are spread
            # over the whole array), then desc_q2, and is written in cycle db + 3 (in place,
            # so the bits no field of this spec uses are not even registers).
            m.d.sync += [db.eq(db + 1), desc_be.eq(Cat(db == 2, desc_be[:-1]))]
            with m.If(db_end):
                m.d.sync += db.eq(0)
                if "desc_reads" in kept:
                    m.d.sync += counters["desc_reads"].eq(counters["desc_reads"] + 1)
            with m.If(soft_reset):
                m.d.sync += db.eq(0)
        with m.If(st["PREP"]):
            if streaming:
                m.d.sync += [in_ring.eq(desc.banded & ~desc.in_src),
                             out_ring.eq(desc.banded & ~desc.to_out),
                             bm1.eq(Cat(desc.band_lg > i for i in range(SW - 1)))]
            # The loops' lookahead flags from the new descriptor, registered a cycle
            # before INIT takes them (no compare of descriptor fields, spread over the
            # die, sits in front of the step enables).
            # (lean: ``pre`` is loaded in INIT from ``again``, the same compare registered,
            # so no adder and compare of descriptor fields feeds it)
            for k, (_, first, _, _) in loops.items():
                m.d.sync += one[k].eq(hit(k, first))
                if not lean:
                    m.d.sync += pre[k].eq(hit(k, first + 1))
        with m.If(st["INIT"]):
            if lean:    # (by0, obase0, row0: loaded in LOAD, see init_direct)
                w_row0 = narrow["row0"]
                # (the tracker's first flags from their registers, set from the descriptor
                # in PREP; and the loops' lookahead, see PREP)
                m.d.sync += [
                    g_vg.eq(0), g_v0.eq(0), g_qx.eq(dn.qx0), g_last_vg.eq(g_one_vg),
                    g_last_qx.eq(g_one_qx), g_meta.bx.eq(dn.bx0),
                    *(pre[k].eq(again[k]) for k in loops),
                    kx.eq(0), ky.eq(0), cg.eq(0), vg.eq(0),
                    qx.eq(dn.qx0), qy.eq(dn.qy0), ix.eq(dn.qx0), iy.eq(dn.qy0),
                    qx_inc.eq(qx0_inc), qy_inc.eq(dn.qy0 + 1),
                    plane.eq(dn.in_base), rowoff[w_row0:].eq(0), qyw[w_row0:].eq(0),
                    w_addr.eq(dn.w_base),
                ]
            else:
                m.d.sync += [
                    g_vg.eq(0), g_v0.eq(0), g_qx.eq(dn.qx0), g_last_vg.eq(dn.n_vg == 1),
                    g_last_qx.eq(dn.qx0 == dn.qx1), g_meta.by.eq(dn.by0), g_meta.bx.eq(dn.bx0),
                    g_meta.obase.eq(dn.obase0), g_orow.eq(dn.obase0),
                    kx.eq(0), ky.eq(0), cg.eq(0), vg.eq(0),
                    qx.eq(dn.qx0), qy.eq(dn.qy0), ix.eq(dn.qx0), iy.eq(dn.qy0),
                    qx_inc.eq(qx0_inc), qy_inc.eq(dn.qy0 + 1),
                    plane.eq(dn.in_base), rowoff.eq(dn.row0), qyw.eq(dn.row0),
                    w_addr.eq(dn.w_base),
                ]
            for k in loops:
                m.d.comb += n_last[k].eq(one[k])
        def level(k, step, wrap=None):
            """Loop level ``k`` on its step enable: step (or, on its last value, wrap) the
            counter and what follows it; its next flag and lookahead come from the
            lookahead registers. ``wrap=None``: the level never wraps (the outermost, whose
            last step ends the layer)."""
            with m.If(en[k]):
                if wrap is None:
                    m.d.sync += step
                    m.d.comb += n_last[k].eq(pre[k])
                    m.d.sync += pre[k].eq(pre_after_step(k))
                    return
                with m.If(~flags[k]):
                    m.d.sync += step
                    m.d.comb += n_last[k].eq(pre[k])
                    m.d.sync += pre[k].eq(pre_after_step(k))
                with m.Else():
                    m.d.sync += wrap
                    m.d.comb += n_last[k].eq(one[k])
                    m.d.sync += pre[k].eq(pre_after_wrap(k))

        with m.If(st["RUN"]):
            # One block per loop level, innermost first (a later assignment wins, as
            # the outer level's reset of a shared register must).
            with m.If(en["kx"]):
                m.d.sync += w_addr.eq(w_addr + 1)
            level("kx", [kx.eq(kx + 1), ix.eq(ix - 1)], [kx.eq(0), ix.eq(qx)])
            level("ky", [ky.eq(ky + 1), iy.eq(iy - 1), rowoff.eq(rowoff - dn.w_in)],
                  [ky.eq(0), iy.eq(qy), rowoff.eq(qyw)])
            level("cg", [cg.eq(cg + 1), plane.eq(plane + dn.hw_in)],
                  [cg.eq(0), plane.eq(dn.in_base)])
            level("vg", [vg.eq(vg + 1)], [vg.eq(0), w_addr.eq(dn.w_base)])
            level("qx", [qx.eq(qx_inc), ix.eq(qx_inc), qx_inc.eq(qx_inc + 1)],
                  [qx.eq(dn.qx0), ix.eq(dn.qx0), qx_inc.eq(qx0_inc)])
            level("qy", [qy.eq(qy_inc), iy.eq(qy_inc), qy_inc.eq(qy_inc + 1),
                         qyw.eq(qyw + dn.w_in), rowoff.eq(qyw + dn.w_in)])
        with m.If(st["FLUSH"]):
            m.d.sync += flush_age.eq(Mux(flush_age[1], 2, flush_age + 1))
            with m.If(flush_ok):
                m.d.sync += snap_we.eq(1)
                m.d.sync += [layer.eq(layer + 1),
                             counters["layers_done"].eq(counters["layers_done"] + 1)]
                with m.If(last_layer):
                    m.d.sync += [busy.eq(0), done.eq(1)]

        # (continuous assignments, not processes: Icarus starts them at time 0)
        # (busy_clr = soft_reset | (layer_end & last_layer), from registers of their own
        # loaded with that value's next-cycle terms, see the end of elaborate: a copy per
        # BUSY_CLR_GROUP busy copies)
        m.d.comb += [issuing.eq(st["RUN"]),
                     busy_set.eq(st["IDLE"] & start)]

        # ---- engine memory ports (engine side) --------------------------------------------
        out_buf = ~desc.in_buf
        # Read enables of single-port ACT RAM (iCE40 SPRAM): the input buffer during a layer.
        act_rd_en = [Signal(name=f"act{b}_rd_en") for b in range(2)]
        with m.If(busy):
            m.d.comb += [act_rd_en[0].eq(~desc.in_buf), act_rd_en[1].eq(desc.in_buf)]

        # ---- counters ---------------------------------------------------------------------
        # What the sequencer did, registered three times (the third with the in-frame test,
        # made a cycle after issue, from the control pipeline's register): the counters lag
        # it by a few cycles (always inside the busy period: the layer's pipeline drain
        # follows its last issue).
        issue_a = Signal()
        stalled_a = Signal()
        useful_a = Signal(range(P + 1), reset_less=True)
        m.d.sync += [issue_a.eq(issuing & adv), stalled_a.eq(issuing & ~adv),
                     useful_a.eq(desc.useful[last_cg][last_vg])]
        issue_b = Signal()
        useful_b = Signal(range(P + 1), reset_less=True)
        m.d.sync += [issue_b.eq(issue_a), useful_b.eq(useful_a)]
        issue = Signal()
        issue_in = Signal()         # an issue inside the input frame (a real ACT read)
        stalled = Signal()
        useful = Signal(range(P + 1))
        m.d.sync += [issue.eq(issue_b), issue_in.eq(issue_b & ctl1.in_frame), stalled.eq(stalled_a),
                     useful.eq(Mux(ctl1.in_frame, useful_b, 0))]

        clear_counters = Signal(reset_less=True)   # (loaded every cycle)

        # The counters see ``busy`` a cycle late, from a copy of their own (``busy`` reaches
        # the whole engine). The events they count happen only inside the busy period, so
        # only cycles_busy and mac_idle shift by a cycle: their totals are the same, and the
        # layer snapshot adds 2 (not 1) to cycles_busy for the cycles it has not yet counted.
        cnt_busy = Signal(name="cnt_busy__rep")
        m.d.sync += cnt_busy.eq(busy)

        def inc(name, cond, amount=1):
            if name in kept:
                # (each counter's own copy of the clear: one register reached all 30 x 32;
                # and its own registers of the event and the amount, a cycle late: the
                # events come from all over the die. Events fall inside the busy period with
                # a few cycles to spare, and the amounts of mac_idle, P at both ends of it,
                # add up the same.)
                if not isinstance(cond, int):
                    ev = Signal(name=f"cnt_ev_{name}__rep")
                    m.d.sync += ev.eq(cond)
                    cond = ev
                if not isinstance(amount, int):
                    amt = Signal(len(amount), name=f"cnt_amt_{name}__rep", reset_less=True)
                    m.d.sync += amt.eq(amount)
                    amount = amt
                # (the clear from clear_counters' register, two cycles after the start or
                # reset: nothing is counted in between, the events come with busy)
                clr = Signal(name=f"cnt_clr_{name}__rep")
                m.d.sync += clr.eq(clear_counters)
                if name in split:
                    lo, hi, cy = split[name]
                    low = Signal(len(lo) + 1, name=f"cnt_{name}_sum")
                    m.d.comb += low.eq(Mux(clr, 0, lo) + Mux(cnt_busy & cond, amount, 0))
                    m.d.sync += [lo.eq(low[:len(lo)]), cy.eq(low[-1]),
                                 hi.eq(Mux(clr, 0, hi + cy))]
                else:
                    m.d.sync += counters[name].eq(Mux(clr, 0, counters[name]) +
                                                  Mux(cnt_busy & cond, amount, 0))

        with m.If(clear_counters):      # the two the layer FSM counts
            for name in ("desc_reads", "layers_done"):
                if name in kept:
                    m.d.sync += counters[name].eq(0)
        inc("cycles_busy", 1)
        inc("cycles_stalled", stalled)
        inc("mac_used", issue, useful)
        inc("mac_idle", 1, P - Mux(issue, useful, 0))
        inc("act0_reads", issue_in & ~desc.in_buf)
        inc("act1_reads", issue_in & desc.in_buf)
        inc("act0_writes", o_we & ~desc.to_out & (out_buf == 0), Mux(o_wide2, R, 1))
        inc("act1_writes", o_we & ~desc.to_out & (out_buf == 1), Mux(o_wide2, R, 1))
        inc("weight_reads", issue)
        inc("bias_reads", d_go, d_step)
        inc("out_writes", o_we & desc.to_out)

        # ---- host bus -----------------------------------------------------------------------
        cmd = self.bus.cmd
        rsp = self.bus.rsp
        rd_pending = Signal()       # read issued last cycle, data on the ports now
        # read: the RAM words registered (ACT banks: their registers), a cycle per bit
        rdx = Signal(ACT_BANK_REGS if banked else 1)
        rd_space = Signal(Space, reset_less=True)
        rd_lane = Signal(8, reset_less=True)
        rd_ok = Signal()            # address in range and memory accessible
        # (lean: the command's address kept as wide as the largest space needs: its range
        # is checked on the full address as the command is taken, into ``ok``)
        HA = ADDR
        if lean:
            HA = (max(2 * spec.act_depth * A, spec.weight_depth * P,
                      spec.bias_depth * ENTRY_BYTES, spec.out_bytes,
                      spec.max_layers * DESC_BYTES, SNAP_BASE + 8 * spec.max_layers,
                      4 * len(COUNTERS)) - 1).bit_length()
        rd_addr = Signal(HA, reset_less=True)
        rsp_valid = Signal()
        rsp_data = Signal(8)
        # A taken command is registered first, with its address range check, and acts in the
        # next cycle: the bus's decode never shares a cycle with the link's logic.
        # ``ok``: stage 1 the address is in range, stage 2 the command may act.
        hcmd = data.StructLayout({"valid": 1, "write": 1, "space": Space, "addr": HA,
                                  "data": 8, "ok": 1})
        h1 = Signal(hcmd)
        h2 = Signal(hcmd)
        rd2 = Signal()          # read: the words registered, byte chosen next
        rd2b = Signal()         # read: the wide words' lane bytes registered
        rd3 = Signal()          # read: the byte registered, response next
        # ``cmd.ready``: no read in flight or answered, no CTRL command in the first stage,
        # i.e. ~(h1.valid & ~h1.write) & ~(h2.valid & ~h2.write) & ~(h1.valid & h1 is CTRL)
        # & ~rd_pending & ~rdx & ~rd2 & ~rd2b & ~rd3 & ~rsp_valid. It is a register (it
        # reaches the link's skid buffer), loaded with those terms' next values.
        ready = Signal(init=1)
        taken = cmd.valid & ready
        m.d.sync += ready.eq(~(taken & (~cmd.payload.write | (cmd.payload.space == Space.CTRL))) &
                             ~(h1.valid & ~h1.write) & ~(h2.valid & ~h2.write) &
                             ~rd_pending & ~rdx.any() & ~rd2 & ~rd2b &
                             ~rd3 & ~(rsp_valid & ~rsp.ready))
        m.d.comb += [cmd.ready.eq(ready), rsp.valid.eq(rsp_valid), rsp.payload.eq(rsp_data)]
        with m.If(rsp.valid & rsp.ready):
            m.d.sync += rsp_valid.eq(0)
        m.d.sync += h1.valid.eq(cmd.valid & cmd.ready)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [h1.write.eq(cmd.payload.write), h1.space.eq(cmd.payload.space),
                         h1.addr.eq(cmd.payload.addr), h1.data.eq(cmd.payload.data)]
        if lean:
            h1_is_reset = Signal(name="h1_is_reset")
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += h1_is_reset.eq(cmd.payload.addr == CtrlReg.RESET)

        # Second stage: whether the command may act (engine idle for the memories) is
        # registered too, so the memories' write ports are driven from flip-flops through one
        # multiplexer. A command behind a CTRL command is not taken until that one has acted.
        always = (h1.space == Space.ID) | (h1.space == Space.CTRL) | (h1.space == Space.COUNT)
        if streaming:   # (the host streams IN in and OUT out while the engine runs)
            always = always | (h1.space == Space.IN) | (h1.space == Space.OUT)
        m.d.sync += h2.valid.eq(h1.valid)
        with m.If(h1.valid):
            m.d.sync += [h2.eq(h1), h2.ok.eq(h1.ok & (always | ~busy))]
        # The control writes decoded in the same stage (start with a legal layer count, start
        # with a bad one, reset), so that acting on them is one gate away from flip-flops.
        h1_ctrl = h1.valid & h1.write & (h1.space == Space.CTRL)
        if lean:    # (a CTRL address beyond the kept bits is out of range, not an alias)
            h1_ctrl = h1_ctrl & h1.ok
        h2_start, h2_badstart, h2_reset = Signal(), Signal(), Signal()
        h1_count_ok = (h1.data != 0) & (h1.data <= spec.max_layers)
        if streaming:   # (the START byte: count, bits 0-3, from first, bits 4-6; keep, 7)
            h1_count_ok = (h1.data[:4] != 0) & (h1.data[4:7] + h1.data[:4] <= spec.max_layers)
        m.d.sync += [
            h2_start.eq(h1_ctrl & (h1.addr == CtrlReg.START_STATUS) & h1_count_ok),
            h2_badstart.eq(h1_ctrl & (h1.addr == CtrlReg.START_STATUS) & ~h1_count_ok),
            h2_reset.eq(h1_ctrl & (h1.addr == CtrlReg.RESET)),
        ]

        haddr = h2.addr
        hdata = h2.data
        take = h2.valid
        hread = take & ~h2.write
        space = h2.space
        lp = _log2(P)
        la = _log2(A)
        act_bytes = spec.act_depth * A
        lb = _log2(act_bytes)

        def ranged(limit):
            return cmd.payload.addr < limit

        # Which byte of a wide word, and whether the access is legal.
        def lane_of(addr):
            """The byte lane of a wide word an address picks, per wide space."""
            return {Space.WEIGHT: addr[:lp] if lp else Const(0, 1),
                    Space.ACT: addr[:la] if la else Const(0, 1),
                    Space.BIAS: addr[:_log2(ENTRY_BYTES * R)]}
        # The range check is made on the incoming command and registered with it; whether
        # the memories are accessible (engine idle) is decided when the command acts.
        in_range = Signal()
        with m.Switch(cmd.payload.space):
            with m.Case(Space.ID):
                m.d.comb += in_range.eq(ranged(len(id_bytes)))
            with m.Case(Space.CTRL):
                m.d.comb += in_range.eq(ranged(1 << HA) if lean else 1)
            with m.Case(Space.COUNT):
                m.d.comb += in_range.eq(ranged(4 * len(COUNTERS)) |
                                        ((cmd.payload.addr >= SNAP_BASE) &
                                         ranged(SNAP_BASE + 8 * spec.max_layers)))
            with m.Case(Space.DESC):
                m.d.comb += in_range.eq(ranged(spec.max_layers * DESC_BYTES))
            with m.Case(Space.WEIGHT):
                m.d.comb += in_range.eq(ranged(spec.weight_depth * P))
            with m.Case(Space.BIAS):
                m.d.comb += in_range.eq(ranged(spec.bias_depth * ENTRY_BYTES))
            with m.Case(Space.ACT):
                m.d.comb += in_range.eq(ranged(2 * act_bytes) if spec.act_host else 0)
            with m.Case(Space.OUT):
                # (streaming: OUT is a ring, its addresses wrap)
                m.d.comb += in_range.eq(1 if streaming else ranged(spec.out_bytes))
            if streaming:
                with m.Case(Space.IN):      # (a ring: addresses wrap)
                    m.d.comb += in_range.eq(1)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += h1.ok.eq(in_range)
        legal = h2.ok

        # Host-side port driving while idle.
        if spec.act_host:
            with m.If(~busy):
                m.d.comb += [act_rd_en[0].eq(hread), act_rd_en[1].eq(hread)]
        # One address per memory: the engine's while busy, the host's while idle.
        desc_addr = Mux(busy, Cat(db[:_log2(DESC_BYTES)], layer), haddr)
        # The block RAMs' addresses: registers (a copy per ACT and OUT bank), each loaded
        # with the engine's next address while busy, else with a taken command's address as
        # it enters the second stage (h1 -> h2), and holding otherwise: so no logic sits
        # between a flip-flop and the address pins of a memory's many blocks, and no
        # multiplexer shared by the copies sits in front of them (each copy's own enable).
        # An access acts in the second stage, when h2 holds the command the copy took.
        def host_reg(name, width, busy_r, engine_next, host_value):
            """A register named ``name`` as above; ``busy_r``: its busy copy, or the name of
            a new one."""
            r = Signal(width, name=name, reset_less=True)
            b = busy_r if isinstance(busy_r, Signal) else busy_copy(busy_r)
            with m.If(b):
                m.d.sync += r.eq(engine_next)
            with m.Elif(h1.valid):
                m.d.sync += r.eq(host_value)
            return r
        def h1_copy(name, value):
            """A copy, for one consumer, of a field of the command that enters the first
            stage: ``value`` of the link's command, registered every cycle, so it equals h1's
            field whenever h1.valid (the cycle after the command was taken). Each copy can sit
            beside its consumer, instead of h1 driving the consumers across the die."""
            r = Signal(len(value), name=name, reset_less=True)
            m.d.sync += r.eq(value)
            return r
        for port in (desc_rd, desc_wr):
            m.d.comb += port.addr.eq(desc_addr)
        for i in range(n_ws):
            w_pa = host_reg(f"w_pa{i}__rep", AW, f"w_busy{i}__rep", w_eaddr_next,
                            h1_copy(f"w_ha{i}__rep", cmd.payload.addr >> lp))
            m.d.comb += [w_rd[i].addr.eq(w_pa), w_wr[i].addr.eq(w_pa)]
        for i in range(R):
            b_pa = host_reg(f"b_pa{i}__rep", AW, f"b_busy{i}__rep", entry_next >> lr,
                            h1_copy(f"b_ha{i}__rep",
                                    cmd.payload.addr >> _log2(ENTRY_BYTES * R)))
            # (lean: while busy the entry RAM reads at the entry index's next value, a cycle
            # ahead of the drain, see there)
            m.d.comb += [b_rd[i].addr.eq(Mux(busy, entry_next >> lr, b_pa) if lean else b_pa),
                         b_wr[i].addr.eq(b_pa)]
        for i in range(n_ob):
            # (OUT is written by the engine only: each bank's byte registered alongside
            # wr_out, its enable gated by the bank's busy copy, since wr_out is not cleared
            # by a soft reset)
            o_busy = busy_copy(f"out_busy{i}__rep")
            if streaming:
                # (the host reads OUT while the engine writes it: a read address of the
                # host's, a write address of the engine's)
                o_pa = Signal(lob, name=f"out_pa{i}__rep", reset_less=True)
                o_ra = Signal(lob, name=f"out_ra{i}__rep", reset_less=True)
                o_ha = h1_copy(f"out_ha{i}__rep", cmd.payload.addr[:lob])
                m.d.sync += o_pa.eq(o_tag.addr)
                with m.If(h1.valid):
                    m.d.sync += o_ra.eq(o_ha)
            else:
                o_pa = o_ra = host_reg(f"out_pa{i}__rep", lob, o_busy, o_tag.addr,
                                       h1_copy(f"out_ha{i}__rep", cmd.payload.addr[:lob]))
            o_wd = Signal(8, name=f"out_wd{i}__rep", reset_less=True)
            m.d.sync += o_wd.eq(wr_data_next)
            m.d.comb += [out_rd[i].addr.eq(o_ra), out_wr[i].addr.eq(o_pa),
                         out_wr[i].data.eq(o_wd), out_wr[i].en.eq(wr_out[i] & o_busy)]
        for b in range(2):
            for k in range(nb):
                for j in range(n_as):
                    engine_addr = Mux(desc.in_buf == b, act_rd_addr, o_tag.addr)
                    if spec.act_host:
                        a_pa = host_reg(f"act_pa{b}_{k}_{j}__rep", lab,
                                        f"act_busy{b}_{k}_{j}__rep", engine_addr,
                                        h1_copy(f"act_ha{b}_{k}_{j}__rep",
                                                cmd.payload.addr[la:lb]))
                    else:   # (the engine's address only, loaded every cycle)
                        a_pa = Signal(lab, name=f"act_pa{b}_{k}_{j}__rep", reset_less=True)
                        m.d.sync += a_pa.eq(engine_addr)
                    m.d.comb += [act_rd[b][k][j].addr.eq(a_pa), act_wr[b][k][j].addr.eq(a_pa)]
        # Reads and writes of one memory never coincide. For single-port RAMs with "no change
        # on write" (iCE40 SPRAM feature buffers) say so structurally, a read disabled by a
        # write; elsewhere that gate would only lengthen the path to every block RAM's enable.
        single_port = spec.act_ram == "huge"
        # Block RAMs are read every cycle (no clock-enable logic in front of their many
        # blocks): what the host reads stays on its address until the response is sent.
        for b in range(2):
            for rds, wrs in zip(act_rd[b], act_wr[b]):
                for rd in rds:
                    m.d.comb += rd.en.eq(act_rd_en[b] & ~Cat(wr.en for wr in wrs).any()
                                         if single_port else 1)
        m.d.comb += [rd.en.eq(1) for rd in w_rd]
        m.d.comb += [id_rd.addr.eq(haddr),
                     snap_rd.addr.eq((haddr - SNAP_BASE) >> 3)]

        # Host writes: each memory's write enables decoded from the first stage into
        # registers of the second (legality included), so a write port's enable and data
        # come straight from flip-flops.
        # (which memory a taken write is for, decoded as it is taken)
        cp = cmd.payload
        w1 = {k: Signal(name=f"w1_{k}")
              for k in ("desc", "w", "b", "act0", "act1", *(("in",) if streaming else ()))}
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [
                w1["desc"].eq(cp.write & (cp.space == Space.DESC)),
                *((w1["in"].eq(cp.write & (cp.space == Space.IN)),) if streaming else ()),
                w1["w"].eq(cp.write & (cp.space == Space.WEIGHT)),
                w1["b"].eq(cp.write & (cp.space == Space.BIAS)),
                *(w1[f"act{b}"].eq(cp.write & (cp.space == Space.ACT) &
                                   ((cp.addr[lb] if lb < ADDR else 0) == b)) for b in range(2)),
            ]
        h1_mem_write = h1.valid & h1.ok & ~busy
        lane1 = lane_of(h1.addr)
        wen_desc = Signal()
        wen_w = Signal(P)
        wen_b = Signal(ENTRY_BYTES * R)
        wen_act = [[Signal(A, name=f"wen_act{b}_{k}") for k in range(nb)] for b in range(2)]
        h1_bank = h1.addr[la + lab:la + lab + nbb] if nb > 1 else 0
        m.d.sync += [
            wen_desc.eq(h1_mem_write & w1["desc"]),
            wen_w.eq(Mux(h1_mem_write & w1["w"], 1 << lane1[Space.WEIGHT], 0)),
            wen_b.eq(Mux(h1_mem_write & w1["b"], 1 << lane1[Space.BIAS], 0)),
            *(wen_act[b][k].eq(Mux(h1_mem_write & w1[f"act{b}"] & (h1_bank == k),
                                   1 << lane1[Space.ACT], 0))
              for b in range(2) for k in range(nb)),
        ]
        # (the weight and entry slices' write data: a copy of the host's byte per slice,
        # loaded as the command enters the second stage)
        def hdata_copy(name):
            r = Signal(8, name=name, reset_less=True)
            c = h1_copy(f"{name}_h", cmd.payload.data)     # (outside the If: every cycle)
            with m.If(h1.valid):
                m.d.sync += r.eq(c)
            return r
        if streaming:
            # (IN: written by the host whenever, read by the engine: its own ports)
            wen_in = Signal()
            m.d.sync += wen_in.eq(h1.valid & h1.ok & w1["in"])
            m.d.comb += [in_wr.addr.eq(haddr), in_wr.data.eq(hdata), in_wr.en.eq(wen_in)]
        if streaming:   # (the band write-back's bytes while busy, the host's while idle)
            wen_desc_all = wen_desc | wb_we
            desc_wdata = Mux(busy, wb_q, hdata)
        else:
            wen_desc_all, desc_wdata = wen_desc, hdata
        m.d.comb += [desc_wr.data.eq(desc_wdata), desc_wr.en.eq(wen_desc_all),
                     *(wr.data.eq(hdata_copy(f"w_wd{i}__rep").replicate(P // n_ws))
                       for i, wr in enumerate(w_wr)),
                     *(wr.en.eq(wen_w.word_select(i, P // n_ws)) for i, wr in enumerate(w_wr)),
                     *(wr.data.eq(_entry_write_data(hdata_copy(f"b_wd{i}__rep"), e_widths))
                       for i, wr in enumerate(b_wr)),
                     *(wr.en.eq(_entry_write_en(wen_b.word_select(i, ENTRY_BYTES), e_widths))
                       for i, wr in enumerate(b_wr))]
        # (the engine's enables are 0 while idle, the host's while busy.) Each ACT bank's
        # write data is a register of its own, loaded as the address registers are (the
        # engine's next data, or the host's byte), so no multiplexer and no single register
        # drives the data pins of blocks across the die.
        for b in range(2):
            for k in range(nb):
                # (from the bank's own copy of the output stage)
                c = o_bk[b][k]
                wdp = Mux(c.wide, c.group.replicate(A // R), c.data.replicate(A))
                wd = Signal(A * 8, name=f"act_wd{b}_{k}")
                for j in range(0, A * 8, 32):       # (a copy of busy per 32 bits)
                    if spec.act_host:
                        m.d.comb += wd[j:j + 32].eq(host_reg(
                            f"act_wd{b}_{k}_{j // 32}__rep", 32,
                            f"act_wbusy{b}_{k}_{j // 32}__rep", wdp[j:j + 32],
                            h1_copy(f"act_hd{b}_{k}_{j // 32}__rep",
                                    cmd.payload.data).replicate(4)))
                    else:   # (the engine's data only, loaded every cycle)
                        r = Signal(32, name=f"act_wd{b}_{k}_{j // 32}__rep", reset_less=True)
                        m.d.sync += r.eq(wdp[j:j + 32])
                        m.d.comb += wd[j:j + 32].eq(r)
                act_en = we_act[b][k] | wen_act[b][k] if spec.act_host else we_act[b][k]
                for j, wr in enumerate(act_wr[b][k]):
                    m.d.comb += [wr.data.eq(wd[j * asw:(j + 1) * asw]),
                                 wr.en.eq(act_en[j * asw // 8:(j + 1) * asw // 8])]

        # CTRL writes (always legal): start (idle only) or reset.
        with m.If(h2.valid & ~busy):
            with m.If(h2_badstart):
                m.d.sync += [error.eq(1), done.eq(0)]
            with m.If(h2_start):
                m.d.sync += [n_layers.eq(hdata[4:7] + hdata[:4] if streaming else hdata),
                             done.eq(0), error.eq(0)]
                if streaming:
                    m.d.sync += layer.eq(hdata[4:7])
        # (continuous assignments, not processes: the one-hot FSM's next state takes them
        # through logic, and Icarus would start a process's output as X)
        # (h2_start, h2_badstart and h2_reset imply h2.valid: they are decoded from h1.valid)
        m.d.comb += [start.eq(~busy & h2_start), soft_reset.eq(h2_reset)]
        # The counters are cleared a cycle after a start or reset (a registered clear: it
        # fans out to every counter bit), keeping what that cycle counts.
        m.d.sync += clear_counters.eq(((start & ~hdata[7]) if streaming else start) | soft_reset)

        with m.If(hread):
            m.d.sync += [rd_pending.eq(1), rd_space.eq(space), rd_ok.eq(legal),
                         rd_addr.eq(haddr)]
            if streaming:   # (OUT, a ring: its bank from the wrapped address)
                with m.If(space == Space.OUT):
                    m.d.sync += rd_addr.eq(haddr[:_log2(spec.out_bytes)])
            with m.Switch(space):
                for sp, lane in lane_of(haddr).items():
                    with m.Case(sp):
                        m.d.sync += rd_lane.eq(lane)
                with m.Case(Space.ACT):
                    pass
        # Reads: every memory's output is registered as it leaves the RAM (the wide words,
        # WEIGHT, BIAS and ACT, in the pipeline's own word registers), the byte is chosen from
        # those registers a cycle later, and the response a cycle after that: a block RAM
        # output never drives a multiplexer in the same cycle.
        rd2_space = Signal(Space, reset_less=True)
        rd2_lane = Signal(8, reset_less=True)
        rd2_ok = Signal()
        m.d.comb += [host_act_sel.eq(rd_addr[lb] if lb < ADDR else 0),
                     host_act_bank.eq(rd_addr[la + lab:la + lab + nbb] if nb > 1 else 0)]
        rd2_addr = Signal(HA, reset_less=True)
        # (a cycle more per register of the ACT banks: the same for every space)
        with m.If(rd_pending):
            m.d.sync += rd_pending.eq(0)
        m.d.sync += rdx.eq(Cat(rd_pending, rdx[:-1]))
        if lean:
            # (the read's fields hold from its first stage to its response: no copies)
            rd2_space, rd2_lane, rd2_ok, rd2_addr = rd_space, rd_lane, rd_ok, rd_addr
            with m.If(rdx[-1]):
                m.d.sync += rd2.eq(1)
        else:
            with m.If(rdx[-1]):
                m.d.sync += [rd2.eq(1), rd2_space.eq(rd_space),
                             rd2_lane.eq(rd_lane), rd2_ok.eq(rd_ok), rd2_addr.eq(rd_addr)]
        # The narrow memories' outputs, registered as they leave the RAM (every OUT bank
        # into its own register), and the addressed counter's word.
        out_q = [Signal(8, name=f"out_q{i}", reset_less=True) for i in range(n_ob)]
        id_q = Signal(8, reset_less=True)
        snap_q = Signal(64, reset_less=True)
        cnt_q = Signal(32, reset_less=True)
        # (lean: OUT, ID and the snapshots straight from their RAMs' outputs, which hold
        # through a read as its address does: a flip-flop fed by a RAM is a logic cell of
        # its own on iCE40)
        if lean:
            m.d.sync += desc_q.eq(desc_rd.data)
            m.d.comb += [*(q.eq(port.data) for q, port in zip(out_q, out_rd)),
                         id_q.eq(id_rd.data), snap_q.eq(snap_rd.data)]
        else:
            m.d.sync += [*(q.eq(port.data) for q, port in zip(out_q, out_rd)),
                         desc_q.eq(desc_rd.data), id_q.eq(id_rd.data), snap_q.eq(snap_rd.data)]
        # (the counter in two registered steps, eight counters each: the counters are spread
        # over the die; rd_addr holds from the read's first stage to its response)
        cnt_all = list(counters.values())
        if lean:
            # (lean: one multiplexer, of the few counters kept and zeros)
            m.d.comb += cnt_q.eq(Array(cnt_all)[rd_addr[2:2 + (len(cnt_all) - 1).bit_length()]])
        else:
            cnt_g = [Signal(32, name=f"cnt_g{k}", reset_less=True)
                     for k in range(-(-len(cnt_all) // 8))]
            for k, g in enumerate(cnt_g):
                m.d.sync += g.eq(Array(cnt_all[8 * k:8 * k + 8])[rd_addr[2:5]])
            m.d.sync += cnt_q.eq(Array(cnt_g)[rd_addr[5:8]])
        # Third stage: the byte chosen from those registers, in three registers (the narrow
        # spaces, the OUT bank, the wide words' lane), so each selection has a cycle of its
        # own; the response takes one of them. The narrow spaces and OUT choose in two
        # registered steps too (rd2, then rd2b): each narrow space's byte with its own address
        # decode, then the space's by a one-hot register; OUT's bank within groups of four
        # banks, then the group (rd2_addr holds from rd2 to the response).
        rd3_small = Signal(8, name="rd3_small", reset_less=True)
        rd3_out = Signal(8, name="rd3_out", reset_less=True)
        rd3_from = Signal(2)        # 0 narrow, 1 OUT, 2 wide
        small = {Space.ID: id_q,
                 Space.CTRL: Mux(rd2_addr == CtrlReg.START_STATUS, Cat(busy, done, error), 0),
                 Space.COUNT: Mux(rd2_addr < SNAP_BASE, cnt_q.word_select(rd2_addr[:2], 8),
                                  snap_q.word_select(rd2_addr[:3], 8)),
                 Space.DESC: desc_q}
        small_q = [Signal(8, name=f"rd2_{sp.name.lower()}", reset_less=True) for sp in small]
        small_oh = Signal(len(small), reset_less=True)  # the space's (none when not ok)
        out_g = [Signal(8, name=f"rd2_out{j}", reset_less=True) for j in range(-(-n_ob // 4))]
        with m.If(rd2):
            m.d.sync += [*(q.eq(v) for q, v in zip(small_q, small.values())),
                         small_oh.eq(Cat(rd2_ok & (rd2_space == sp) for sp in small)),
                         *(g.eq(Array(out_q[4 * j:4 * j + 4])[rd2_addr[lob:lob + 2]])
                           for j, g in enumerate(out_g))]
        with m.If(rd2b):
            m.d.sync += [rd3_small.eq(onehot_mux(enumerate(small_q), oh=small_oh)),
                         rd3_out.eq(Mux(rd2_ok, Array(out_g)[rd2_addr[lob + 2:]]
                                        if len(out_g) > 1 else out_g[0], 0))]
        # A wide word's byte in three steps: the lane's byte of each word's 8-byte group
        # (registered in rd2), the space's (in rd2b: one candidate per group), then the
        # group's (at the response).
        wide_words = {Space.WEIGHT: w_word, Space.BIAS: b_word,
                      **({Space.ACT: act_word} if spec.act_host else {})}
        n_grp = max(-(-len(w) // 64) for w in wide_words.values())
        cands = [Signal(8, name=f"rd3_cand{k}", reset_less=True) for k in range(n_grp)]
        rd3_grp = Signal(range(n_grp))
        for k, cand in enumerate(cands):
            # (the group's own copy of the byte lane, space and ok: one register would drive
            # the byte multiplexers of every wide word, bits spread over the whole die)
            sel = Signal(data.StructLayout({"lane": 3, "space": Space, "ok": 1}),
                         name=f"rd2_sel{k}__rep")
            with m.If(rdx[-1]):
                m.d.sync += sel.eq(Cat(rd_lane[:3], rd_space, rd_ok))
            c = Signal(8, name=f"cand{k}")
            for sp, word in wide_words.items():
                if 64 * k < len(word):
                    lane_byte = Signal(8, name=f"rd2_{sp.name.lower()}{k}", reset_less=True)
                    with m.If(rd2):
                        m.d.sync += lane_byte.eq(word[64 * k:64 * (k + 1)].word_select(sel.lane, 8))
                    with m.If(sel.space == sp):
                        m.d.comb += c.eq(lane_byte)
            with m.If(rd2b):
                m.d.sync += cand.eq(Mux(sel.ok, c, 0))
        with m.If(rd2b):
            m.d.sync += [rd2b.eq(0), rd3.eq(1)]
        with m.If(rd2):
            m.d.sync += [
                rd2.eq(0), rd2b.eq(1), rd3_grp.eq(rd2_lane[3:]),
                rd3_from.eq(Mux(rd2_space == Space.OUT, 1,
                                Mux((rd2_space == Space.WEIGHT) | (rd2_space == Space.BIAS) |
                                    (rd2_space == Space.ACT), 2, 0))),
            ]
        with m.If(rd3):
            m.d.sync += [rd3.eq(0), rsp_valid.eq(1),
                         rsp_data.eq(Mux(rd3_from[1], Array(cands)[rd3_grp] if n_grp > 1 else cands[0],
                                         Mux(rd3_from[0], rd3_out, rd3_small)))]

        # ---- soft reset -------------------------------------------------------------------
        with m.If(soft_reset):
            m.d.sync += [busy.eq(0), done.eq(0), error.eq(0), hold_full.eq(0), dg.eq(0),
                         *([] if lean else [d1_valid.eq(0), d2_valid.eq(0)]),  # (lean: none)
                         *([rel_q.eq(0)] if spaced else []),
                         d3_valid.eq(0), drain_wait.eq(0),
                         dw_nz.eq(0)]
            for c in [*ctl[1:], *([] if lean else [acc_mid]), *([] if direct else [ctl_acc])]:
                m.d.sync += c.valid.eq(0)
            m.d.sync += push.eq(0)
            # (not cleared: OUT's write enables, wr_out, which act only while busy; the
            # accumulators' per-group controls, whose stale valid or push only reloads
            # accumulators or hold registers that no drain will read: hold_full comes from
            # push, cleared here. A soft reset's route to them spanned the die.)
        # busy's copies, under the conditions that set and clear it (the FSM's IDLE start,
        # FLUSH end of the last layer, soft reset), so they equal it in every cycle. The
        # clear is a register: its next value from the next values of h2_reset, FLUSH,
        # flush_ok and last_layer.
        # (a copy of the clear per BUSY_CLR_GROUP copies of busy: one reached them all)
        for g in range(0, len(busy_copies), BUSY_CLR_GROUP):
            group = busy_copies[g:g + BUSY_CLR_GROUP]
            busy_clr = Signal(name=f"busy_clr{g // BUSY_CLR_GROUP}__rep")
            if lean:
                # (lean: the RESET command's compare registered with h1, and last_layer,
                # which holds through FLUSH, the only state where the second term is set)
                m.d.sync += busy_clr.eq((h1_ctrl & h1_is_reset) |
                                        (flush_d & flush_ok_d & last_layer))
            else:
                m.d.sync += busy_clr.eq((h1_ctrl & (h1.addr == CtrlReg.RESET)) |
                                        (flush_d & flush_ok_d & last_layer_d))
            with m.If(busy_set):
                m.d.sync += [c.eq(1) for c in group]
            with m.If(busy_clr):
                m.d.sync += [c.eq(0) for c in group]
        return m
