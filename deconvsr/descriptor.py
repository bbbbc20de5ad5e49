"""The layer descriptor and the per-virtual-output requantisation entry: the two records the
host program compiler (:mod:`deconvsr.sw.host.program`) writes and the engine
(:mod:`deconvsr.hw.engine`) reads. Both sides take their layout from the ``data.Struct`` classes
below, so a field is defined exactly once.

Vocabulary (see ``docs/engine.md``):

* **block** ``q = (qy, qx)``: output pixel ``y = S*qy + fy - P_d`` with phase ``fy`` in
  ``0..S-1``; all ``S*S`` phases of a block read the same input window, rows ``qy - ky`` for
  ``ky = 0..T-1`` (``T = ceil(K_d / S)``), tap ``a = fy + ky*S``.
* **virtual output** ``v = (fy*S + fx)*C_out + o``: one output channel at one phase.
  ``V = C_out*S*S`` per layer.
* **lanes**: ``P = Pv * Pi``; lane ``l = g*Pi + j`` multiplies input channel ``cg*Pi + j`` with
  the weight of virtual output ``vg*Pv + g``. ``lvl = log2(Pi)``; ``Pi <= A``, the spec's
  ``act_lanes`` (activations per ACT word, ``A <= P``).

Host byte addressing of the bus spaces (``deconvsr.bus.Space``):

* ``DESC``: ``layer * DESC_BYTES + byte`` (little-endian image of :class:`LayerDescriptor`);
* ``WEIGHT``: ``word * P + lane`` (int8 two's complement);
* ``BIAS``: ``entry * ENTRY_BYTES + byte`` (little-endian image of :class:`BiasEntry`; the
  memory word holds ``drain_lanes`` entries);
* ``ACT``: ``buffer * act_depth * A + word * A + lane``; a feature map of ``C`` channels,
  ``H x W``, at word ``base`` keeps channel ``c`` of pixel ``(y, x)`` in word
  ``base + (c // A)*H*W + y*W + x``, lane ``c % A`` (``A`` = ``act_lanes``);
* ``OUT``: byte ``base + o*H*W + y*W + x``;
* ``COUNT``: ``4 * index + byte`` of the 32-bit counters named in :data:`COUNTERS`, and the
  per-layer snapshots from :data:`SNAP_BASE`.
"""


from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

__all__ = ["LayerDescriptor", "BiasEntry", "DESC_BYTES", "ENTRY_BYTES", "COUNTERS",
           "BASIC_COUNTERS", "SNAP_BASE", "BAND_FIELDS", "BAND_BYTES", "STREAM_FIELDS", "next_band",
           "canonical_entries", "entry_fits", "pack", "unpack", "decode_counters"]

DESC_BYTES = 64
ENTRY_BYTES = 16

#: Performance counters readable in ``Space.COUNT`` (index = position), 32 bits each, cleared
#: by start and by soft reset. ``mac_used`` counts lane-cycles that multiply a real input
#: channel (inside the frame) with a real virtual output; ``mac_idle`` the other lane-cycles
#: of busy cycles. Memory counters count engine accesses (not host accesses) in words (ACT,
#: WEIGHT), entries (BIAS) or bytes (OUT, and ACT writes, which are byte-lane writes).
COUNTERS = ("cycles_busy", "cycles_stalled", "mac_used", "mac_idle",
            "act0_reads", "act0_writes", "act1_reads", "act1_writes",
            "weight_reads", "bias_reads", "out_writes", "desc_reads", "layers_done")

#: The counters an engine built with ``EngineSpec(counters="basic")`` keeps (a small FPGA: each
#: 32-bit counter costs ~100 logic cells); the others read 0 there. (``mac_used`` follows
#: from the descriptors: ``Program.useful_macs``.)
BASIC_COUNTERS = ("cycles_busy", "layers_done")

#: ``COUNT`` offset of the per-layer snapshots: layer ``i`` at ``SNAP_BASE + 8*i``, two 32-bit
#: little-endian values taken at the end of the layer: ``cycles_busy`` and ``mac_used``
#: (cumulative since start; the host takes differences).
SNAP_BASE = 256

DIM = 15      # width of sizes and block coordinates (dim_bits <= 14, signed)
ADDR = 24     # width of memory addresses


class LayerDescriptor(data.Struct):
    """One layer, as the engine's sequencer runs it. All derived values are computed by the
    host, so the datapath needs no division, modulo or multiplication by a runtime value.

    Members
    -------
    to_out : 1 = write the OUT memory (bytes, layout (o, y, x)); 0 = the other ACT buffer
    in_buf : ACT buffer read by this layer (0/1); the output buffer is ``1 - in_buf``
    wide : drain ``spec.drain_lanes`` outputs per cycle (ACT output only; needs C_out and Pv
        multiples of R and ``b_base`` aligned to R)
    lvl : log2(Pi)
    t : taps per dimension and phase, ``T = ceil(K_d / S)``
    stride : S
    cw : input channel words per pixel (``ceil(C_in / A)`` if ``Pi == A``, else 1)
    n_vg : virtual output groups ``ceil(V / Pv)``
    pv_last : virtual outputs in the last group (1..Pv)
    h_in, w_in, hw_in : input size and plane size in words
    in_base, w_base, b_base : first input word, first weight word, first bias entry
    qy0, qy1, qx0, qx1 : first and last block (``P_d // S`` .. ``(H_out - 1 + P_d) // S``)
    row0 : ``qy0 * w_in``
    by0, bx0 : output row/col of phase 0 of the first block, ``S*q0 - P_d``
    h_out, w_out : output size
    obase0 : ``out_base + by0*w_out + bx0`` (word or byte address of phase 0 of block q0)
    orow : ``S * w_out``
    vy0, vy1, vx0, vx1 : valid window: outputs outside ``[vy0, vy1) x [vx0, vx1)`` (but
        inside the output) are written as 0 (tiling; the full window by default)
    useful : lanes doing useful work per cycle, indexed ``[cg is last][vg is last]``
    in_src : 0 = read the ACT buffer ``in_buf``; 1 = read the byte-wide ``IN`` memory (the
        packed input frame: one activation a pixel, channel 0; the other lanes read 0)
    banded : the descriptor is a cursor over the layer's block rows: each start runs one band
        (below) and moves the cursor to the next
    band_lg : rows per band ``B = 2**band_lg``
    qy_last : a banded layer's last block row
    A banded layer works on rings (``EngineSpec.ring_bits``): an ACT address's low
        ``ring_bits`` bits wrap, the plane's bits above (``(plane & ~M) | ((plane + row + ix)
        & M)`` for reads, ``plane = in_base + cg*hw_in``; ``(off & ~M) | ((obase + off) & M)``
        for writes, the plane in the entry's ``off``); IN and OUT addresses wrap at their
        memories' sizes.

    Bands: a banded descriptor runs block rows ``qy0 .. qy1`` (the current band) and then
    writes the next band's fields back into its first :data:`BAND_BYTES` bytes (the band
    fields, :data:`BAND_FIELDS`): ``qy0 = qy1 + 1``, ``qy1 = min(qy1 + B, qy_last)``, and
    ``row0``, ``by0`` and ``obase0`` advanced by the rows it ran (``w_in``, ``stride`` and
    ``orow`` a row). So the host loads the descriptors once per frame and then only starts
    layers (``CTRL`` START); it never starts a banded layer whose band is past
    ``qy_last``.
    """

    row0: ADDR
    obase0: signed(ADDR + 2)
    qy0: DIM
    qy1: DIM
    by0: signed(DIM)
    _band_pad: 1
    to_out: 1
    in_buf: 1
    wide: 1
    lvl: 4
    t: 4
    stride: 4
    cw: 9
    n_vg: DIM
    pv_last: 9
    h_in: DIM
    w_in: DIM
    hw_in: ADDR
    in_base: ADDR
    w_base: ADDR
    b_base: ADDR
    qx0: DIM
    qx1: DIM
    bx0: signed(DIM)
    h_out: DIM
    w_out: DIM
    orow: ADDR
    vy0: DIM
    vy1: DIM
    vx0: DIM
    vx1: DIM
    useful: data.ArrayLayout(data.ArrayLayout(unsigned(9), 2), 2)
    in_src: 1
    banded: 1
    band_lg: 4
    qy_last: DIM


class BiasEntry(data.Struct):
    """Requantisation entry of one virtual output ``v = (o, fy, fx)`` of a layer.

    Members
    -------
    bias : ``bias[o, (fy - P_d) mod S, (fx - P_d) mod S]``
    mult, shift : requantisation of channel ``o``
    lane : ``o % A`` (byte lane of the ACT word, ``A`` = ``act_lanes``)
    fy, fx : the phase
    off : ``plane(o) + fy*w_out + fx`` where plane(o) is ``(o // A)*H*W`` words (ACT) or
        ``o*H*W`` bytes (OUT)
    """

    bias: signed(32)
    mult: unsigned(16)
    shift: unsigned(8)
    lane: unsigned(8)
    fy: unsigned(8)
    fx: unsigned(8)
    off: unsigned(32)
    pad: unsigned(16)


#: The descriptor fields a banded layer's band changes (see :class:`LayerDescriptor`): the
#: first BAND_BYTES bytes of its image, which the engine writes back after each band.
BAND_FIELDS = ("row0", "obase0", "qy0", "qy1", "by0")
BAND_BYTES = 12

#: Descriptor fields added with gateware version 2 (streaming); 0 keeps version 1's meaning.
STREAM_FIELDS = {"in_src": 0, "banded": 0, "band_lg": 0, "qy_last": 0}


def next_band(d: dict) -> dict:
    """A banded descriptor's fields after it has run its current band (what the engine
    writes back)."""
    rows = d["qy1"] - d["qy0"] + 1
    return {**d, "qy0": d["qy1"] + 1, "qy1": min(d["qy1"] + (1 << d["band_lg"]), d["qy_last"]),
            "row0": d["row0"] + rows * d["w_in"], "by0": d["by0"] + rows * d["stride"],
            "obase0": d["obase0"] + rows * d["orow"]}


if data.Layout.cast(LayerDescriptor).size > DESC_BYTES * 8:  # pragma: no cover (layout edit)
    raise ImportError(f"LayerDescriptor does not fit in {DESC_BYTES} bytes")
if data.Layout.cast(LayerDescriptor)["_band_pad"].offset + 1 != BAND_BYTES * 8:  # pragma: no cover
    raise ImportError(f"the band fields are not the descriptor's first {BAND_BYTES} bytes")
if data.Layout.cast(BiasEntry).size != ENTRY_BYTES * 8:  # pragma: no cover (layout edit)
    raise ImportError(f"BiasEntry is not {ENTRY_BYTES} bytes")


def _flatten(layout, value, offset, out):
    if isinstance(layout, data.ArrayLayout):
        elem_width = Shape.cast(layout.elem_shape).width
        if len(value) != layout.length:
            raise ValueError(f"array field needs {layout.length} items, not {len(value)}")
        for i, item in enumerate(value):
            _flatten(layout.elem_shape, item, offset + i * elem_width, out)
        return
    if isinstance(layout, data.StructLayout):
        for name, field in layout:
            if name == "pad" or name.startswith("_"):
                continue
            _flatten(field.shape, value[name], offset + field.offset, out)
        return
    shape = Shape.cast(layout)
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"descriptor field value {v} does not fit {shape} ({lo}..{hi})")
    out.append((offset, shape.width, v & ((1 << shape.width) - 1)))


def pack(struct, values: dict, nbytes: int) -> bytes:
    """Little-endian bytes of ``values`` (a dict, nested lists for array fields) in the layout
    of ``struct``. Raises ``ValueError`` naming a value that does not fit its field, and
    ``KeyError`` for a missing field."""
    fields = []
    _flatten(data.Layout.cast(struct), values, 0, fields)
    word = 0
    for offset, _, v in fields:
        word |= v << offset
    return word.to_bytes(nbytes, "little")


def unpack(struct, raw: bytes) -> dict:
    """Inverse of :func:`pack` for the top-level scalar fields (for debugging and tests)."""
    word = int.from_bytes(raw, "little")
    out = {}
    for name, field in data.Layout.cast(struct):
        if name.startswith("_") or isinstance(field.shape, data.Layout):
            continue
        shape = Shape.cast(field.shape)
        v = (word >> field.offset) & ((1 << shape.width) - 1)
        if shape.signed and v >> (shape.width - 1):
            v -= 1 << shape.width
        out[name] = v
    return out


def canonical_entries(raw: bytes, widths: dict | None) -> bytes:
    """What an engine built with ``EngineSpec.packed_entries`` reads back from ``BIAS`` after
    the entry images ``raw`` (whole entries, ``ENTRY_BYTES`` each) were written: each field's
    low ``widths[name]`` bits (``EngineSpec.entry_widths()``), sign-extended (``bias``) or
    zero-extended to the field, the rest (``pad``) 0. ``widths=None``: ``raw`` unchanged.
    An entry whose fields fit (:func:`entry_fits`) reads back as written."""
    if widths is None:
        return bytes(raw)
    if len(raw) % ENTRY_BYTES:
        raise ValueError(f"{len(raw)} bytes are not whole {ENTRY_BYTES}-byte entries")
    layout = data.Layout.cast(BiasEntry)
    out = bytearray()
    for i in range(0, len(raw), ENTRY_BYTES):
        word = int.from_bytes(raw[i:i + ENTRY_BYTES], "little")
        new = 0
        for name, field in layout:
            w = widths.get(name)
            if not w:
                continue
            full = Shape.cast(field.shape).width
            v = (word >> field.offset) & ((1 << w) - 1)
            if Shape.cast(field.shape).signed and v >> (w - 1):
                v -= 1 << w
            new |= (v & ((1 << full) - 1)) << field.offset
        out += new.to_bytes(ENTRY_BYTES, "little")
    return bytes(out)


def entry_fits(entry: dict, widths: dict | None) -> str | None:
    """None if every field of ``entry`` (a :class:`BiasEntry` dict) fits the stored widths
    (``widths=None``: always), else the first field that does not, as ``"name=value"``."""
    if widths is None:
        return None
    layout = data.Layout.cast(BiasEntry)
    for name, w in widths.items():
        v = int(entry[name])
        signed_ = Shape.cast(layout[name].shape).signed
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed_ else (0, (1 << w) - 1)
        if not lo <= v <= hi:
            return f"{name}={v}"
    return None


def decode_counters(raw: bytes) -> dict:
    """The COUNT space (``4 * len(COUNTERS)`` bytes) as a dict of ints."""
    return {name: int.from_bytes(raw[4 * i:4 * i + 4], "little") for i, name in enumerate(COUNTERS)}
