"""The engine specification: one frozen object that the gateware constructor, the host program
compiler, the driver (through ``identify``) and the tests all take.

Board sizes live here as named specs so that the host can compare what it reads back from a
device with what it expects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .arith import DEFAULT_ARITH, ArithSpec

__all__ = ["EngineSpec", "SPECS", "GATEWARE_VERSION"]

GATEWARE_VERSION = 2   #: the newest gateware the host supports (2: streaming, Space.IN)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class EngineSpec:
    """Sizes of one engine instance.

    Members
    -------
    lanes : number of MAC units P (power of two)
    act_lanes : activations per feature-map word A (power of two, at most ``lanes``; default
        ``lanes``). A layer takes ``Pi <= A`` input channels per cycle and spreads the
        ``P / Pi`` lane groups over virtual output channels, so a narrow buffer (the iCE40's
        16-bit SPRAMs) can still feed every lane.
    act_depth : words per feature-map buffer (a word holds ``act_lanes`` activations; power
        of two). There are two such buffers (ping-pong): layer ``i`` reads one, writes the
        other.
    weight_depth : words of weight memory (a word holds ``lanes`` weights)
    bias_depth : bias/requantisation entries (one per virtual output channel
        ``(o, phase)`` of each layer, see :mod:`deconvsr.descriptor`)
    out_bytes : bytes of the final-output memory
    in_bytes : bytes of the input memory (``Space.IN``: the packed frame streamed in, a ring
        of input rows; a power of two), or 0: an engine without it (gateware version 1: no
        streaming, the frame goes into an ACT buffer as whole words). In the ID ROM.
    windows : the descriptors' valid windows (outputs outside them written as 0: what tiles
        need); False (a streaming engine only) drops them, a small FPGA's logic cells: such
        an engine runs streamed frames only (the host streams every frame to it). In the ID
        ROM (version 2).
    ring_bits : a streaming engine's feature-map rings: every ring of rows in an ACT buffer
        is made of aligned planes of ``2**ring_bits`` words (one per channel word), whose
        addresses wrap (the IN and OUT rings wrap at their memories' sizes). In the ID ROM
        (version 2).
    act_host : the host may read and write the feature-map buffers (``Space.ACT``: the input
        frame of an engine without ``IN``, debugging); False (a streaming engine only: its
        frames come through ``IN``) drops the host's ports on them, a small FPGA's logic
        cells. In the ID ROM (version 2).
    max_layers : layer descriptors
    drain_lanes : requantisers R (power of two dividing ``lanes`` and ``bias_depth``): a
        layer whose ``Pv`` outputs per group exceed its group cycles drains R per cycle
    dim_bits : width of the row/column counters (frames up to ``2**dim_bits - 1``)
    act_ram : yosys ``ram_style`` of the ACT buffers ("auto", "block", "huge" = iCE40 SPRAM)
    counters : "all" performance counters, or "basic" (``descriptor.BASIC_COUNTERS`` only:
        cycles and layers; the others read 0, the useful MACs come from the host's
        ``Program.useful_macs``)
    multiplier : "dsp" (the FPGA's multipliers: SB_MAC16 pairs on iCE40, MULT18X18D as yosys
        infers it on ECP5) or "lut" (shift-and-add in logic, two registered stages, no DSP:
        the ECP5's inferred MULT18X18D is combinational, ~4 ns plus its routes, too slow for
        100 MHz). Gateware-only (not in the ID ROM); "lut" adds a cycle per layer.
    requant : "parallel" (two multipliers, one output per cycle per requantiser) or "serial"
        (one multiplier used twice: one DSP, one output every other cycle; needs
        ``acc_bits <= 30`` and ``mult_bits <= 15``), or "lut" (in logic, no multiplier:
        one output every 8 cycles, a radix-4 Booth step a cycle; needs
        ``arith.shift_min >= 15``, ``mult_bits <= 15`` and ``drain_lanes = 1``; leaves every
        DSP to the lanes). Gateware-only (``shift_min`` is in the ID ROM).
    lut_lanes : with ``multiplier="dsp"``, how many lanes (the last ones, an even number)
        multiply in logic instead, leaving their DSPs to the requantiser (the iCE40UP5K's 8
        SB_MAC16: 7 lane pairs plus the serial requantiser). Gateware-only.
    pipeline : "deep" (the registers a large FPGA needs at 100 MHz: the accumulators' inputs
        pass two registers after the adder tree) or "lean" (one: for a small FPGA at a lower
        clock, where every flip-flop without logic in front of it costs a logic cell). Does
        not change the cycles per layer. Gateware-only.
    fixed_pi : every layer takes ``Pi = act_lanes`` input channels per cycle (default False:
        the host picks ``Pi`` per layer, down to 1 for a one-channel input). The engine then
        builds ``lanes / act_lanes`` accumulators and a fixed adder tree instead of ``lanes``
        accumulators behind a tree tapped at any level; a layer with fewer input channels
        leaves lanes idle (a small FPGA: each accumulator with its hold register costs ~75
        iCE40 logic cells). In the ID ROM (the host plans for it).
    snapshots : keep the per-layer snapshots of ``cycles_busy`` and ``mac_used`` (default
        True; False on a small FPGA: their memory takes four iCE40 block RAMs, and the
        ``COUNT`` space reads 0 from :data:`~deconvsr.descriptor.SNAP_BASE`). In the ID ROM.
    packed_entries : the entry memory keeps only the bits of each
        :class:`~deconvsr.descriptor.BiasEntry` field this engine can use
        (:meth:`entry_widths`: 64 instead of 128 bits a word on the iCE40 spec, four block
        RAMs instead of eight); a read of ``BIAS`` returns the stored bits sign- or
        zero-extended (:func:`deconvsr.descriptor.canonical_entries`), and the host compiler
        refuses entries that do not fit (strides above 4, say). Needs ``drain_lanes == 1``.
        In the ID ROM.
    arith : the arithmetic contract

    Raises
    ------
    ValueError
        naming the field, its value and the limit.
    """

    name: str = "sim"
    lanes: int = 16
    act_lanes: int | None = None
    act_depth: int = 16384
    weight_depth: int = 8192
    bias_depth: int = 1024
    out_bytes: int = 65536
    in_bytes: int = 0
    windows: bool = True
    act_host: bool = True
    ring_bits: int = 0
    max_layers: int = 8
    dim_bits: int = 10
    drain_lanes: int = 1
    act_ram: str = "auto"
    counters: str = "all"
    multiplier: str = "dsp"
    requant: str = "parallel"
    lut_lanes: int = 0
    pipeline: str = "deep"
    fixed_pi: bool = False
    snapshots: bool = True
    packed_entries: bool = False
    arith: ArithSpec = field(default=DEFAULT_ARITH)

    #: The fields the ID ROM leaves out: how the gateware is built (memory style, multiplier
    #: and requantiser kinds, pipeline depth), not what the host compiles for. The host's
    #: program compiler never reads them, so a program compiled from the spec a device reports
    #: equals one compiled from the spec it was built from (``tests/shared/test_spec.py``, for
    #: every named spec and shipped network). Some change the engine's cycle counts
    #: (``requant``: the drain's spacing; ``multiplier="lut"``: a cycle per layer), which the
    #: host never predicts from a spec: cycle figures are measured on the RTL built from the
    #: full spec (``deconvsr bench engine``, ``deconvsr report`` with the build's recorded
    #: spec). A new field goes in the ROM or here (the test checks that every field is one).
    GATEWARE_ONLY_FIELDS = ("act_ram", "multiplier", "requant", "lut_lanes", "pipeline")

    def __post_init__(self):
        if not isinstance(self.lanes, int) or not _pow2(self.lanes) or self.lanes > 256:
            raise ValueError(f"lanes must be a power of two in 1..256, not {self.lanes!r}")
        if self.act_lanes is None:
            object.__setattr__(self, "act_lanes", self.lanes)
        if (not isinstance(self.act_lanes, int) or not _pow2(self.act_lanes)
                or self.act_lanes > self.lanes):
            raise ValueError(f"act_lanes must be a power of two in 1..lanes ({self.lanes}), "
                             f"not {self.act_lanes!r}")
        for name in ("act_depth", "weight_depth", "bias_depth", "out_bytes", "max_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 1 << 22:
                raise ValueError(f"{name} must be an integer in 1..{1 << 22}, not {value!r}")
        if (not isinstance(self.in_bytes, int) or not 0 <= self.in_bytes <= 1 << 22
                or (self.in_bytes and not _pow2(self.in_bytes))):
            raise ValueError(f"in_bytes must be 0 or a power of two up to {1 << 22}, not "
                             f"{self.in_bytes!r}")
        for name in ("windows", "act_host"):
            if not getattr(self, name) and not self.in_bytes:
                raise ValueError(f"{name}=False needs a streaming engine (in_bytes > 0)")
        if self.in_bytes:
            if (not isinstance(self.ring_bits, int)
                    or not 1 <= self.ring_bits <= self.act_depth.bit_length() - 1):
                raise ValueError(f"ring_bits must be in 1..log2(act_depth) "
                                 f"({self.act_depth.bit_length() - 1}) for a streaming engine, "
                                 f"not {self.ring_bits!r}")
            if self.max_layers > 8:
                raise ValueError(f"a streaming engine starts descriptors 0..7 (its START "
                                 f"byte): max_layers must be at most 8, not {self.max_layers}")
        elif self.ring_bits:
            raise ValueError(f"ring_bits is for a streaming engine (in_bytes > 0), not "
                             f"{self.ring_bits!r}")
        if self.in_bytes and not _pow2(self.out_bytes):
            raise ValueError(f"out_bytes must be a power of two with in_bytes (OUT is then a "
                             f"ring), not {self.out_bytes!r}")
        if not _pow2(self.act_depth):
            raise ValueError(f"act_depth must be a power of two, not {self.act_depth!r}")
        if self.act_depth * self.act_lanes * 2 > 1 << 24:
            raise ValueError(f"act_depth * act_lanes * 2 = {self.act_depth * self.act_lanes * 2} bytes "
                             f"exceeds the 24-bit bus address space")
        if (not isinstance(self.drain_lanes, int) or not _pow2(self.drain_lanes)
                or self.drain_lanes > self.act_lanes or self.bias_depth % self.drain_lanes):
            raise ValueError(f"drain_lanes must be a power of two dividing act_lanes and bias_depth, "
                             f"not {self.drain_lanes!r}")
        if self.act_ram not in ("auto", "block", "huge"):
            raise ValueError(f"act_ram must be 'auto', 'block' or 'huge', not {self.act_ram!r}")
        if self.counters not in ("all", "basic"):
            raise ValueError(f"counters must be 'all' or 'basic', not {self.counters!r}")
        if self.multiplier not in ("dsp", "lut"):
            raise ValueError(f"multiplier must be 'dsp' or 'lut', not {self.multiplier!r}")
        if (not isinstance(self.lut_lanes, int) or not 0 <= self.lut_lanes <= self.lanes
                or self.lut_lanes % 2 or (self.lut_lanes and self.multiplier != "dsp")):
            raise ValueError(f"lut_lanes must be an even number in 0..lanes ({self.lanes}) "
                             f"with multiplier='dsp', not {self.lut_lanes!r}")
        if self.pipeline not in ("deep", "lean"):
            raise ValueError(f"pipeline must be 'deep' or 'lean', not {self.pipeline!r}")
        for name in ("fixed_pi", "snapshots", "packed_entries", "windows", "act_host"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.packed_entries and self.drain_lanes != 1:
            raise ValueError(f"packed_entries needs drain_lanes=1, not {self.drain_lanes}")
        if self.requant not in ("parallel", "serial", "lut"):
            raise ValueError(f"requant must be 'parallel', 'serial' or 'lut', not "
                             f"{self.requant!r}")
        if self.requant == "lut" and (self.arith.shift_min < 15 or self.arith.mult_bits > 15
                                      or self.drain_lanes != 1):
            raise ValueError(f"requant='lut' needs shift_min >= 15, mult_bits <= 15 and "
                             f"drain_lanes=1, not {self.arith.shift_min}, "
                             f"{self.arith.mult_bits} and {self.drain_lanes}")
        if self.requant == "serial" and not self.arith.fits_serial_requant:
            raise ValueError(f"requant='serial' needs acc_bits <= 30 and mult_bits <= 15, not "
                             f"{self.arith.acc_bits} and {self.arith.mult_bits}")
        if not isinstance(self.dim_bits, int) or not 4 <= self.dim_bits <= 14:
            raise ValueError(f"dim_bits must be an integer in 4..14, not {self.dim_bits!r}")

    # Identification ROM: what `identify` reads back (Space.ID), little-endian. The last byte
    # is log2(act_lanes) + 1 (0 from gateware that predates act_lanes: act_lanes = lanes),
    # plus 0x80 for counters="basic", 0x40 for fixed_pi, 0x20 for no snapshots and 0x10 for
    # packed_entries. The 16-bit drain_lanes field holds drain_lanes in its low byte and
    # arith.shift_min in its high byte (0 on gateware that predates shift_min). Version 2
    # (streaming) appends in_bytes.
    _ID_FORMAT = "<4sHHHHIIIIHBBBBBB"
    _ID_FORMAT_V2 = "<IBB"      # in_bytes, flags (0x01: no windows, 0x02: no ACT access), ring_bits
    #: The most identification bytes any version has (the host reads this many: an older
    #: engine reads 0 beyond its ROM).
    ID_BYTES_MAX = struct.calcsize(_ID_FORMAT) + struct.calcsize(_ID_FORMAT_V2)

    @property
    def version(self) -> int:
        """The gateware version this spec describes: 2 with an IN memory (streaming)."""
        return 2 if self.in_bytes else 1

    def id_bytes(self) -> bytes:
        a = self.arith
        v1 = struct.pack(self._ID_FORMAT, b"DCSR", self.version, self.lanes,
                           self.max_layers, self.dim_bits, self.act_depth, self.weight_depth,
                           self.bias_depth, self.out_bytes, self.drain_lanes | a.shift_min << 8,
                           a.weight_bits, a.act_bits, a.acc_bits, a.mult_bits, a.shift_max,
                           self.act_lanes.bit_length() | (0x80 if self.counters == "basic" else 0)
                           | (0x40 if self.fixed_pi else 0) | (0 if self.snapshots else 0x20)
                           | (0x10 if self.packed_entries else 0))
        flags = (0 if self.windows else 1) | (0 if self.act_host else 2)
        return v1 + (struct.pack(self._ID_FORMAT_V2, self.in_bytes, flags, self.ring_bits)
                     if self.version > 1 else b"")

    #: The largest stride whose phases (``fy``, ``fx``) a packed entry holds.
    PACKED_STRIDE_MAX = 4

    def entry_widths(self) -> dict[str, int] | None:
        """With ``packed_entries``: the stored width of each :class:`BiasEntry
        <deconvsr.descriptor.BiasEntry>` field (``bias`` as a signed value, the others
        unsigned), in the field order; else None (all 128 bits stored)."""
        if not self.packed_entries:
            return None
        a = self.arith
        return {"bias": a.acc_bits, "mult": a.mult_bits, "shift": max(a.shift_max.bit_length(), 1),
                "lane": max((self.act_lanes - 1).bit_length(), 1),
                "fy": (self.PACKED_STRIDE_MAX - 1).bit_length(),
                "fx": (self.PACKED_STRIDE_MAX - 1).bit_length(),
                "off": (max(self.act_depth, self.out_bytes) - 1).bit_length()}

    @classmethod
    def from_id_bytes(cls, raw: bytes, name: str = "device") -> "EngineSpec":
        size = struct.calcsize(cls._ID_FORMAT)
        if len(raw) < size:
            raise ValueError(f"identification is {len(raw)} bytes, expected {size}")
        (magic, version, lanes, max_layers, dim_bits, act_depth, weight_depth, bias_depth,
         out_bytes, drain_lanes, wb, ab, accb, mb, sm, la) = struct.unpack(cls._ID_FORMAT, raw[:size])
        drain_lanes, smin = drain_lanes & 0xFF, drain_lanes >> 8
        if magic != b"DCSR":
            raise ValueError(f"identification magic is {magic!r}, expected b'DCSR'")
        if not 1 <= version <= GATEWARE_VERSION:
            raise ValueError(f"gateware version {version} is not supported (1..{GATEWARE_VERSION})")
        in_bytes, windows, act_host, ring_bits = 0, True, True, 0
        if version > 1:
            more = struct.calcsize(cls._ID_FORMAT_V2)
            if len(raw) < size + more:
                raise ValueError(f"identification is {len(raw)} bytes, version {version} has "
                                 f"{size + more}")
            in_bytes, flags, ring_bits = struct.unpack(cls._ID_FORMAT_V2, raw[size:size + more])
            windows, act_host = not flags & 1, not flags & 2
        counters = "basic" if la & 0x80 else "all"
        fixed_pi = bool(la & 0x40)
        snapshots = not la & 0x20
        packed = bool(la & 0x10)
        la &= 0x0F
        return cls(name=name, lanes=lanes, act_lanes=1 << (la - 1) if la else lanes,
                   counters=counters, fixed_pi=fixed_pi, snapshots=snapshots,
                   packed_entries=packed,
                   act_depth=act_depth, weight_depth=weight_depth,
                   bias_depth=bias_depth, out_bytes=out_bytes, in_bytes=in_bytes,
                   windows=windows, act_host=act_host, ring_bits=ring_bits,
                   max_layers=max_layers,
                   dim_bits=dim_bits, drain_lanes=max(drain_lanes, 1),
                   arith=ArithSpec(wb, ab, accb, mb, sm, smin))


# Named specs. Board sizes are refined by the board bring-up; "sim" is the default simulated
# device. Sizes must keep the memories within each FPGA's RAM.
SPECS = {
    "sim": EngineSpec(in_bytes=4096, ring_bits=11),
    # iCE40UP5K: 16 lanes over 4-activation ACT words; each ACT buffer is 16384 x 32 bit =
    # two SPRAMs (all four for the ping-pong pair); weights 512 x 128 bit (8 KB, 16 EBR),
    # entries packed to 64 bits (4 EBR), OUT 4 KB (8 EBR) and descriptors (1 EBR): with the
    # UART's receive FIFO all 30 EBR; no per-layer snapshots. The 8 SB_MAC16: 8 pairs of
    # lanes (8 x 8 mode); the requantiser in logic (one output every 8 cycles). Every layer
    # at Pi = 4 (fixed_pi: 4 accumulators behind a fixed adder tree). A 24-bit accumulator,
    # a 15-bit requantiser multiplier and shifts 15..31 (the edge networks need < 21 bits
    # and shifts 19..23), the basic counters, frames
    # and tiles up to 255 pixels a side (OUT's 4 KB keeps tiles far smaller; larger frames
    # are tiled). Runs edge-x2 (280 of the 512 weight words) and edge-x3 (352), not the
    # paper network's 58 KB of weights.
    "icebreaker": EngineSpec(name="icebreaker", lanes=16, act_lanes=4, act_depth=16384,
                             weight_depth=512, bias_depth=64, out_bytes=2048, in_bytes=1024,
                             windows=False, act_host=False, ring_bits=12,
                             max_layers=4,
                             act_ram="huge", counters="basic", requant="lut",
                             pipeline="lean", dim_bits=8, fixed_pi=True, snapshots=False,
                             packed_entries=True,
                             arith=ArithSpec(acc_bits=24, mult_bits=15, shift_max=31,
                                             shift_min=15)),
    # ECP5-85F (208 DP16KD): 64 lanes over 16-activation ACT words, ACT 2 x 4096 x 128 bit,
    # weights 1024 x 512 bit, entries, OUT 36 KB: 131 DP16KD placed (a 2048 x 512-bit ACT
    # needed 356). The paper network at P = 64 on 32 x 32-pixel tiles.
    "ulx3s-85f": EngineSpec(name="ulx3s-85f", lanes=64, act_lanes=16, act_depth=4096,
                            weight_depth=1024, bias_depth=256, out_bytes=32768, in_bytes=4096,
                            ring_bits=9,
                            max_layers=8,
                            drain_lanes=4, multiplier="lut"),
}
