"""One spec, one truth: the host compiles against the spec it reads from the device's ID ROM
(``EngineSpec.from_id_bytes``), the gateware is built from the board's full spec. Every field
the ROM leaves out (``EngineSpec.GATEWARE_ONLY_FIELDS``) must not change a compiled program: shown here
for every named spec and every shipped network that fits it, with each gateware-only field
set to each of its values."""

import dataclasses

import numpy as np
import pytest

from deconvsr.arith import ArithSpec
from deconvsr.spec import SPECS, EngineSpec
from deconvsr.sw.host.program import ProgramError, frame_programs
from deconvsr.sw.host.stream import plan_stream
from deconvsr.sw.model.quantize import quantize
from deconvsr.sw.model.zoo import load_model, shipped_names

GATEWARE_ONLY_FIELDS = EngineSpec.GATEWARE_ONLY_FIELDS

#: The values each gateware-only field can take (``lut_lanes``: any even count; 2 and 4 here).
GATEWARE_VALUES = {"act_ram": ("auto", "block", "huge"), "multiplier": ("dsp", "lut"),
                   "requant": ("parallel", "serial", "lut"), "lut_lanes": (0, 2, 4),
                   "pipeline": ("deep", "lean")}

#: For every field the ROM does hold: a value other than the default spec's (valid with it,
#: or with the extra changes given), to show that the ROM carries it.
ROM_VALUES = {"lanes": (32, {}), "act_lanes": (4, {}), "act_depth": (4096, {}),
              "weight_depth": (512, {}), "bias_depth": (64, {}), "out_bytes": (4096, {}),
              "max_layers": (4, {}), "dim_bits": (8, {}), "drain_lanes": (4, {}),
              "counters": ("basic", {}), "fixed_pi": (True, {}), "snapshots": (False, {}),
              "packed_entries": (True, {}), "in_bytes": (4096, {"ring_bits": 9}),
              "windows": (False, {"in_bytes": 4096, "ring_bits": 9}),
              "act_host": (False, {"in_bytes": 4096, "ring_bits": 9}),
              "ring_bits": (10, {"in_bytes": 4096}),
              "arith": (ArithSpec(acc_bits=24, mult_bits=15, shift_max=31, shift_min=15), {})}


def rom_spec(spec: EngineSpec) -> EngineSpec:
    """What the host reads back from a device built from ``spec``."""
    return EngineSpec.from_id_bytes(spec.id_bytes(), name=spec.name)


def test_every_field_is_in_the_rom_or_gateware_only():
    """A new EngineSpec field must be classified: carried by the ROM, or gateware-only (and
    then covered by the program test below)."""
    names = {f.name for f in dataclasses.fields(EngineSpec)} - {"name"}
    assert set(GATEWARE_ONLY_FIELDS) == set(GATEWARE_VALUES)
    assert names == set(ROM_VALUES) | set(GATEWARE_ONLY_FIELDS)
    assert not set(ROM_VALUES) & set(GATEWARE_ONLY_FIELDS)
    base = EngineSpec(name="x")
    for field, (value, extra) in ROM_VALUES.items():
        spec = dataclasses.replace(base, **{field: value, **extra})
        assert getattr(spec, field) != getattr(base, field)
        assert rom_spec(spec) == spec, field


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rom_differs_only_in_gateware_only_fields(name):
    spec = SPECS[name]
    rom = rom_spec(spec)
    differ = {f.name for f in dataclasses.fields(EngineSpec)
              if getattr(rom, f.name) != getattr(spec, f.name)}
    assert differ <= set(GATEWARE_ONLY_FIELDS)
    assert dataclasses.replace(rom, **{f: getattr(spec, f) for f in GATEWARE_ONLY_FIELDS}) == spec


def gateware_variants(spec: EngineSpec):
    """``spec`` with each gateware-only field at each of its values (where the combination is
    valid), and with all of them changed at once."""
    seen = [spec]
    for field, values in GATEWARE_VALUES.items():
        for value in values:
            changes = {field: value}
            if field == "lut_lanes" and value:
                changes["multiplier"] = "dsp"
            try:
                seen.append(dataclasses.replace(spec, **changes))
            except ValueError:
                continue
    flipped = {"act_ram": "block" if spec.act_ram != "block" else "huge",
               "multiplier": "lut" if spec.multiplier == "dsp" else "dsp", "lut_lanes": 0,
               "pipeline": "lean" if spec.pipeline == "deep" else "deep"}
    for requant in [r for r in GATEWARE_VALUES["requant"] if r != spec.requant] + [spec.requant]:
        try:
            seen.append(dataclasses.replace(spec, **flipped, requant=requant))
            break
        except ValueError:
            continue
    return [s for i, s in enumerate(seen) if s not in seen[:i]]


def test_variants_cover_every_value():
    """Over the named specs, the variants compared below take every value of every
    gateware-only field (a requantiser kind is only valid with some arithmetic: ``serial`` and
    ``lut`` with the iCE40 spec's)."""
    taken = {f: set() for f in GATEWARE_VALUES}
    for spec in SPECS.values():
        for v in gateware_variants(spec):
            for f in GATEWARE_VALUES:
                taken[f].add(getattr(v, f))
    assert taken == {f: set(values) for f, values in GATEWARE_VALUES.items()}


def program_image(progs):
    """Everything a compiled frame sends, plans and counts, without the spec it was compiled
    against: the tiles, and per program its setup and input writes, layer count, output
    window, plans (Pi, Pv: the mapping and its cycles), drain widths, descriptors and useful
    MACs."""
    return [(tile, [(s.value, a, bytes(d)) for s, a, d in p.setup],
             [(s.value, a, bytes(d)) for s, a, d in p.inputs], p.n_layers, p.out_addr,
             p.out_shape, p.plans, p.wide, p.descriptors, p.useful_macs())
            for tile, p in progs]


def stream_image(plan):
    """Everything a streamed frame sends and plans (see :func:`program_image`)."""
    return (plan.frame, plan.out_frame, plan.band_lg, plan.useful,
            [((st.c0, st.c1, st.x0, st.x1), [(s.value, a, bytes(d)) for s, a, d in st.setup],
              [(s.value, a, bytes(d)) for s, a, d in st.rewind], st.descriptors, st.requests)
             for st in plan.stripes])


def frame_image(layers, frame, spec):
    """What the host sends for ``frame``: streamed on a streaming engine, else programs."""
    if spec.in_bytes:
        return stream_image(plan_stream(layers, frame.shape[1:], spec))
    progs, ext = frame_programs(layers, frame, spec)
    return ext, program_image(progs)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_programs_from_the_rom_equal_programs_from_the_build(name, rng):
    spec = SPECS[name]
    rom = rom_spec(spec)
    variants = gateware_variants(spec)
    compared = 0
    for model in shipped_names():
        layers = quantize(load_model(model), spec=rom.arith)
        frame = rng.integers(0, 256, size=(1, 64, 64), dtype=np.uint8)
        try:
            want = frame_image(layers, frame, rom)
        except ProgramError:
            continue                   # does not fit this engine
        for built in variants:
            assert frame_image(layers, frame, built) == want, (model, built)
            compared += 1
    assert compared >= len(variants)   # at least one shipped network fits every named spec
