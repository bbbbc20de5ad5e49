"""``deconvsr bench engine`` and the synthesis check."""

import json

import pytest

from deconvsr.sw.cli.main import main


def test_bench_engine_rejects_bad_size(capsys):
    assert main(["bench", "engine", "--size", "2"]) == 2
    assert "--size must be in 4..512, not 2" in capsys.readouterr().err


def test_bench_engine_frame_too_large(capsys):
    assert main(["bench", "engine", "--spec", "ulx3s-85f", "--size", "64", "--net", "paper"]) == 2
    assert "act_depth is 4096 (spec ulx3s-85f: try a smaller --size)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.long
def test_bench_engine_json(capsys):
    code = main(["bench", "engine", "--json", "--size", "12", "--net", "edge"])
    report = json.loads(capsys.readouterr().out)
    net = report["networks"][0]
    assert net["bit_exact"] is True
    assert sum(r["cycles"] for r in net["layers"]) == net["cycles"]
    assert sum(r["useful_macs"] for r in net["layers"]) == net["useful_macs"]
    assert 0 < net["utilisation"] <= 1
    # 12x12 frames lose more to the borders than 64x64 ones but stay above the frame goal.
    assert code == (0 if report["ok"] else 1)


@pytest.mark.slow
@pytest.mark.synth
def test_synthesis_fits_ice40():
    from deconvsr.hw.synth import synthesize
    from deconvsr.spec import SPECS
    r = synthesize(SPECS["icebreaker"], "ice40up5k")
    assert r["counts"]["SPRAM"] == 4       # the two ACT buffers
    spec = SPECS["icebreaker"]
    # 16 lanes: 8 SB_MAC16 lane pairs (the requantiser in logic); or 7 pairs + 2 lanes in
    # logic with the eighth the serial requantiser's.
    dsp_requant = 1 if spec.requant == "serial" else 0
    assert spec.lanes >= 16
    assert r["counts"]["DSP"] == 8 == (spec.lanes - spec.lut_lanes) // 2 + dsp_requant
    assert r["fits"], r["fits_by"]


def test_synth_stat_parser():
    from deconvsr.hw.synth import drop_zero_init, _parse_stat
    log = ("3. Printing statistics.\n\n=== top ===\n     9116 cells\n     5039   SB_LUT4\n"
           "        6   SB_MAC16\n      281   SB_RAM40_4K\n\nEnd of script.\n")
    assert _parse_stat(log) == {"SB_LUT4": 5039, "SB_MAC16": 6, "SB_RAM40_4K": 281}
    il = ("  cell $meminit_v2 $1\n    connect \\DATA 8'00000000\n  end\n"
          "  cell $meminit_v2 $2\n    connect \\DATA 8'00000001\n  end\n")
    assert drop_zero_init(il) == "  cell $meminit_v2 $2\n    connect \\DATA 8'00000001\n  end\n"


@pytest.mark.slow
@pytest.mark.synth
def test_synthesis_fits_ecp5():
    from deconvsr.hw.synth import synthesize
    from deconvsr.spec import SPECS
    spec = SPECS["ulx3s-85f"]
    r = synthesize(spec, "ecp5-85f")
    if spec.multiplier == "dsp":
        assert r["counts"]["DSP"] >= spec.lanes // 2
    else:       # the lanes' products in logic: only the requantisers use DSPs
        assert r["counts"]["DSP"] <= 4 * spec.drain_lanes
    assert r["fits"], r["fits_by"]


def test_frame_cycles_rtl(tmp_path, monkeypatch):
    """The report's cycles: measured on the RTL (tiles summed), at least the ideal MACs / P,
    cached per spec/network/size/gateware so a second report does not simulate again."""
    import math

    from deconvsr.sim import engine_sim
    from deconvsr.sim.harness import available_simulators
    from deconvsr.spec import EngineSpec
    from deconvsr.sw.bench.engine import frame_cycles
    from deconvsr.sw.model.zoo import load_model

    if "verilator" not in available_simulators():
        pytest.skip("verilator not installed")
    monkeypatch.setenv("DECONVSR_CACHE", str(tmp_path))
    net = load_model("edge-x2")
    spec = EngineSpec(name="quick", lanes=8, act_depth=512, weight_depth=1024, bias_depth=128,
                      out_bytes=4096, max_layers=4, drain_lanes=2)
    untiled = frame_cycles(net, spec, 12, 12)
    ideal = math.ceil(net.macs_per_lr_pixel * 12 * 12 / spec.lanes)
    assert ideal <= untiled < 1.3 * ideal
    # 512-word buffers hold 16 channels of at most 256 pixels: 24x24 runs in tiles, whose
    # halos cost extra cycles.
    tiled = frame_cycles(net, spec, 24, 24)
    assert tiled > 4 * untiled
    cache = json.loads((tmp_path / "frame_cycles.json").read_text())
    assert sorted(cache.values()) == sorted([untiled, tiled])

    def no_sim(*args, **kwargs):
        raise AssertionError("simulated again")
    monkeypatch.setattr(engine_sim, "run_programs", no_sim)
    assert frame_cycles(net, spec, 12, 12) == untiled


def _yosys_cells(tmp_path, design, ports, script, after_read):
    """Cell counts of ``design`` through ``script`` (yosys from YoWASP)."""
    import subprocess
    from amaranth.back import rtlil
    from deconvsr.hw.synth import _parse_stat, _yosys
    (tmp_path / "t.il").write_text(rtlil.convert(design, ports=ports, name="t"))
    proc = subprocess.run([*_yosys(), "-q", "-l", "y.log", "-p",
                           f"read_rtlil t.il; {after_read} {script}; stat"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _parse_stat((tmp_path / "y.log").read_text())


@pytest.mark.slow
@pytest.mark.synth
def test_flow_keeps_replicas_and_skips_collision_emulation(tmp_path):
    """The yosys steps the flows run after reading a design (deconvsr.hw.synth.AFTER_READ): on
    ECP5, registers named ``*__rep`` stay separate flip-flops (also one driving a memory
    address); on iCE40 they merge, and a memory marked ``no_rw_check`` maps to block RAM
    without a flip-flop and a multiplexer per output bit."""
    from amaranth import Cat, Elaboratable, Module, Signal
    from amaranth.lib.memory import Memory
    from deconvsr.hw.synth import AFTER_READ, KEEP_REPLICAS

    class Design(Elaboratable):
        def __init__(self):
            self.a, self.b, self.o = Signal(8), Signal(8), Signal(24)
            self.we = Signal()

        def elaborate(self, platform):
            m = Module()
            mem = Memory(shape=16, depth=256, init=[], attrs={"no_rw_check": 1})
            m.submodules.mem = mem
            rd, wr = mem.read_port(), mem.write_port()
            outs = []
            for g in range(4):      # four copies of one register, each feeding its own logic
                r = Signal(8, name=f"r{g}__rep")
                m.d.sync += r.eq(self.a)
                x = Signal(2, name=f"x{g}")
                m.d.sync += x.eq(Cat((r ^ self.b).any(), (r + self.b)[7]))
                outs.append(x)
            pa = Signal(8, name="pa__rep")      # an address register
            m.d.sync += pa.eq(self.b)
            m.d.comb += [rd.addr.eq(pa), wr.addr.eq(pa), wr.data.eq(Cat(self.a, self.b)),
                         wr.en.eq(self.we), self.o.eq(Cat(*outs, rd.data))]
            return m

    d = Design()
    ports = [d.a, d.b, d.we, d.o]
    ecp5 = "synth_ecp5 -top t"
    kept = _yosys_cells(tmp_path, d, ports, ecp5, f"{AFTER_READ['ecp5']};")
    merged = _yosys_cells(tmp_path, d, ports, ecp5, "")
    # 4 x 8 copies + 8 address + 4 x 2 outputs; merged: one copy, whose 4 outputs are
    # then identical and merge too
    assert kept["TRELLIS_FF"] == 4 * 8 + 8 + 4 * 2
    assert merged["TRELLIS_FF"] <= 8 + 8 + 2
    ice = "synth_ice40 -top t"
    lean = _yosys_cells(tmp_path, d, ports, ice, f"{AFTER_READ['ice40']};")
    emulated = _yosys_cells(tmp_path, d, ports, ice, f"proc; {KEEP_REPLICAS};")
    assert lean["SB_RAM40_4K"] == emulated["SB_RAM40_4K"] == 1
    ffs = lambda c: sum(v for k, v in c.items() if k.startswith("SB_DFF"))     # noqa: E731
    assert ffs(emulated) - ffs(lean) >= 16      # one per RAM output bit, at least
    assert ffs(lean) <= 8 + 8 + 2               # the copies merged


def _fake_yosys(tmp_path, monkeypatch, body):
    """Replace yosys with a script that writes ``body(script)``'s log and exit code."""
    import sys
    fake = tmp_path / "fake_yosys.py"
    fake.write_text("import sys\nargs = sys.argv[1:]\nlog, script = args[args.index('-l') + 1], "
                    "args[args.index('-p') + 1]\n" + body)
    monkeypatch.setattr("deconvsr.hw.synth._yosys", lambda: [sys.executable, str(fake)])
    return tmp_path / "calls"


def test_yosys_failure_is_one_error_with_the_log(tmp_path, monkeypatch):
    """A failing yosys run raises with the log's tail; an abc9 assertion (ECP5) is retried
    once with the classic LUT mapper and reported as such."""
    from deconvsr.hw.synth import _run_yosys
    calls = _fake_yosys(tmp_path, monkeypatch, (
        "open(log, 'w').write('ERROR: Parser error in line 1' if 'bad' in script else "
        "'ABC9: ... ERROR: Assert `x' if 'map_luts' not in script else 'ok')\n"
        "open('calls', 'a').write(script + '\\n')\n"
        "sys.exit(1 if 'bad' in script or 'map_luts' not in script else 0)\n"))
    kw = dict(top="eng", then="stat", log="t.log", timeout=60)
    with pytest.raises(RuntimeError, match="yosys failed for testcase:\nERROR: Parser error"):
        _run_yosys(tmp_path, tmp_path / "x.il", "ice40", "bad", what="testcase", **kw)
    log, mapper = _run_yosys(tmp_path, tmp_path / "x.il", "ecp5", "synth_ecp5 -top {top}",
                             what="ecp5", **kw)
    assert mapper == "abc (abc9 asserted)" and log == "ok"
    first, retry = calls.read_text().splitlines()[1:]
    assert first.endswith("synth_ecp5 -top eng; stat")
    assert "synth_ecp5 -top eng -run :map_luts; techmap" in retry
    assert retry.endswith("synth_ecp5 -top eng -run map_cells:; stat")
    # no fallback for a family without one: the assertion is the error
    with pytest.raises(RuntimeError, match="ERROR: Assert"):
        _run_yosys(tmp_path, tmp_path / "x.il", "ice40", "synth_ice40 -top {top}", what="i",
                   **kw)
