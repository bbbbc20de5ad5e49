"""``deconvsr bench engine``: run the paper's network (and the edge network) on the simulated RTL
and report, per layer and for the whole frame, the measured cycles, useful MACs, utilisation
``useful / (P x cycles)``, memory traffic and the simulation speed.

Also the quantised test networks used by the engine tests: random-but-valid int8 weights with
a requantisation calibrated on the input so that outputs spread over 0..255.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ...arith import ArithSpec
from ...sim import engine_sim
from ...sim.device import cache_dir
from ...spec import EngineSpec
from ..golden.intmodel import QLayer, layer_accumulators, run_layer, run_network
from ..host.program import compile_network, frame_programs, set_input
from ..model.quantize import quantize
from ..model.zoo import load_model

__all__ = ["random_qlayer", "calibrated_network", "PAPER_ARCH", "EDGE_ARCH", "camera_tile",
           "bench", "render", "frame_cycles", "zoo_network"]

#: (C_in, C_out, K_d, S, P_d) of each layer, as deconvolutions. Feature layers: a 'same'
#: convolution K, pad p is a stride-1 deconvolution K_d = K, P_d = K - 1 - p.
PAPER_ARCH = [(1, 64, 5, 1, 2), (64, 64, 3, 1, 1), (64, 32, 3, 1, 1), (32, 1, 9, 3, 3)]
#: The edge network: 1->16 5x5, 16->16 3x3, then 16->4 3x3 + shuffle 2 as its deconvolution.
EDGE_ARCH = [(1, 16, 5, 1, 2), (16, 16, 3, 1, 1), (16, 1, 6, 2, 2)]


def random_qlayer(rng, c_in, c_out, k, s, pd, *, periodic=True, x=None, name="layer",
                  target=96.0, wmax=127, arith: ArithSpec = ArithSpec()):
    """A layer with random int8 weights and bias; if ``x`` (a sample input) is given, mult and
    shift are chosen so that the accumulators' spread maps to about ``target``. Shifts stay in
    ``arith``'s range (an engine with a requantiser in logic takes them from 15)."""
    weight = rng.integers(-wmax - 1, wmax + 1, size=(c_in, c_out, k, k))
    bshape = (c_out, s, s) if periodic else (c_out, 1, 1)
    bias = np.broadcast_to(rng.integers(-2000, 2000, size=bshape), (c_out, s, s)).copy()
    mult = rng.integers(1 << 10, 1 << 15, size=c_out)
    shift = np.full(c_out, min(max(20, arith.shift_min), arith.shift_max))
    layer = QLayer(weight, bias, mult, shift, s, pd, name=name)
    if x is not None:
        acc = layer_accumulators(x, layer).astype(np.float64)
        spread = acc.reshape(c_out, -1).std(axis=1) + 1.0
        # (spread * mult) >> shift ~ target
        shift = np.clip(np.round(np.log2(spread * mult / target)), arith.shift_min,
                        arith.shift_max).astype(np.int64)
        bias = bias + np.round((spread * 0.5)[:, None, None]).astype(np.int64)
        layer = QLayer(weight, bias, mult, shift, s, pd, name=name)
    return layer


def calibrated_network(rng, arch, x, *, prefix="L", arith: ArithSpec = ArithSpec()):
    """Layers for ``arch`` calibrated layer by layer on input ``x`` (C, H, W), with shifts in
    ``arith``'s range."""
    layers = []
    for i, (ci, co, k, s, pd) in enumerate(arch):
        layer = random_qlayer(rng, ci, co, k, s, pd, x=x, name=f"{prefix}{i + 1}",
                              wmax=127 if ci * k * k < 4096 else 31, arith=arith)
        layers.append(layer)
        x = run_layer(x, layer)
    return layers


def camera_tile(size: int, offset=(120, 200)) -> np.ndarray:
    """A ``size`` x ``size`` crop of skimage's camera (uint8, (1, H, W)); a deterministic
    synthetic pattern if scikit-image is missing."""
    try:
        from skimage import data    # optional (the test extra)
        img = data.camera()
        y, x = offset
        return img[y:y + size, x:x + size][None].astype(np.uint8)
    except ImportError:  # pragma: no cover
        yy, xx = np.mgrid[:size, :size]
        return ((yy * 7 + xx * 13 + (yy * xx) % 31) % 256).astype(np.uint8)[None]


# ---- deconvsr bench engine ----------------------------------------------------------------

NETWORKS = {"paper": PAPER_ARCH, "edge": EDGE_ARCH}
#: The trained models of the zoo with these architectures (``deconvsr.sw.model.zoo``).
ZOO_MODELS = {"paper": "espcn-paper-x3", "edge": "edge-x2"}


def zoo_network(name: str):
    """The quantised trained model for network ``name`` (``paper``/``edge``), or a model name or
    file (an imported package)."""
    return quantize(load_model(ZOO_MODELS.get(name, name)))


#: The gateware sources that decide cycle counts (a package: all its modules).
CYCLE_SOURCES = ("deconvsr.hw.engine", "deconvsr.hw.requant", "deconvsr.hw.ice40_mac",
                 "deconvsr.descriptor")


def _engine_source_hash() -> str:
    """Hash of the gateware sources that decide cycle counts (engine, requant, multipliers,
    descriptor layout): a cached cycle count is reused only for the same engine. The files
    are found without importing them (no Amaranth elaboration on the host's path)."""
    h = hashlib.sha256()
    for name in CYCLE_SOURCES:
        found = importlib.util.find_spec(name)
        if found.submodule_search_locations:
            files = sorted(f for d in found.submodule_search_locations
                           for f in Path(d).rglob("*.py"))
        else:
            files = [Path(found.origin)]
        for f in files:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def frame_cycles(network, spec: EngineSpec, h: int, w: int, *, simulator="verilator") -> int:
    """Engine cycles (start to done, summed over the tiles) for one ``h`` x ``w`` frame of
    ``network`` (a float :class:`~deconvsr.sw.model.network.Network`, quantised here with the spec's
    arithmetic), measured on the simulated RTL with the engine's own cycle counter. Cycle counts
    do not depend on pixel values, so the frame is a camera crop; results are cached in
    ``$DECONVSR_CACHE/frame_cycles.json`` by spec, network shape, size and gateware source.

    Raises
    ------
    deconvsr.sw.host.program.ProgramError
        if the network does not fit ``spec``.
    """
    layers = quantize(network, spec=spec.arith)
    shape = [(q.c_in, q.c_out, q.k, q.stride, q.padding) for q in layers]
    key = json.dumps([repr(spec), shape, h, w, _engine_source_hash()])
    path = cache_dir() / "frame_cycles.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return int(cache[key])
    x = camera_tile(max(h, w))[:, :h, :w]
    progs = [prog for _, prog in frame_programs(layers, x, spec)[0]]
    with _stdout_to_stderr(), engine_sim.cached_build_dir(spec, simulator) as bd:
        results = engine_sim.run_programs(progs, spec, backend="rtl", build_dir=bd,
                                          simulator=simulator)
    cycles = sum(r["cycles"] for r in results)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache[key] = cycles
    path.write_text(json.dumps(cache, indent=1))
    return cycles


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def bench(spec: EngineSpec, *, size: int = 64, nets=("paper", "edge"), simulator="verilator",
          seed: int = 0, build_dir=None, weights: str = "zoo") -> dict:
    """Run each network on a ``size`` x ``size`` camera crop on the simulated RTL; return the
    measured figures (see the module docstring) and whether the output is bit-exact and the
    utilisation goals (>= 90% per layer with K_d >= 3, >= 80% per frame) are met."""
    rng = np.random.default_rng(seed)
    x = camera_tile(size).astype(np.int64)
    progs, refs, nets_layers = [], [], []
    for name in nets:
        if weights == "zoo":
            layers = [dataclasses.replace(layer, name=f"{name}.L{i + 1}")
                      for i, layer in enumerate(zoo_network(name))]
        else:
            layers = calibrated_network(rng, NETWORKS[name], x, prefix=f"{name}.L")
        nets_layers.append((name, layers))
        progs.append(set_input(compile_network(layers, x.shape, spec), x.astype(np.uint8)))
        refs.append(run_network(x, layers))
    t0 = time.perf_counter()
    with _stdout_to_stderr():   # the simulator's log must not mix with --json output
        if build_dir is None:
            with engine_sim.cached_build_dir(spec, simulator) as bd:
                results = engine_sim.run_programs(progs, spec, backend="rtl", build_dir=bd,
                                       simulator=simulator)
        else:
            results = engine_sim.run_programs(progs, spec, backend="rtl", build_dir=build_dir,
                                   simulator=simulator)
    total_wall = time.perf_counter() - t0
    p = spec.lanes
    report = {"spec": spec.name, "lanes": p, "frame": [size, size], "simulator": simulator,
              "weights": weights,
              "networks": [], "ok": True, "wall_s": round(total_wall, 2)}
    for (name, layers), prog, ref, res in zip(nets_layers, progs, refs, results):
        exact = bool(np.array_equal(res["out"], ref))
        rows = []
        # (useful MACs from the host's count where the engine does not keep mac_used, the
        # iCE40 spec; per-layer rows where it keeps snapshots)
        useful = prog.useful_macs()
        for layer, plan, lr, used in zip(layers, prog.plans, res["layers"], useful):
            util = used / (p * lr["cycles"])
            rows.append({"layer": layer.name, "shape": [layer.c_in, layer.c_out, layer.k,
                                                        layer.stride, layer.padding],
                         "pi": plan.pi, "pv": plan.pv, "cycles": lr["cycles"],
                         "useful_macs": used, "utilisation": round(util, 4),
                         "goal_met": bool(util >= 0.9 or layer.k < 3)})
        c = res["counters"]
        util = sum(useful) / (p * res["cycles"])
        traffic = {k: v for k, v in c.items() if k.endswith(("_reads", "_writes"))}
        net = {"network": name, "bit_exact": exact, "layers": rows, "cycles": res["cycles"],
               "useful_macs": sum(useful), "utilisation": round(util, 4),
               "stalled_cycles": c["cycles_stalled"], "traffic": traffic,
               "sim_cycles_per_s": round(res["cycles"] / res["wall"]) if res["wall"] else None,
               "goal_met": bool(util >= 0.8 and all(r["goal_met"] for r in rows))}
        report["networks"].append(net)
        # The utilisation goals are stated for the paper network; others are reported.
        report["ok"] = report["ok"] and exact and (net["goal_met"] or name != "paper")
    return report


def render(report: dict) -> str:
    lines = [f"engine bench: spec {report['spec']}, P = {report['lanes']} lanes, frame "
             f"{report['frame'][0]}x{report['frame'][1]}, {report['weights']} weights, "
             f"{report['simulator']} "
             f"(total wall {report['wall_s']} s)"]
    for net in report["networks"]:
        lines.append(f"\n{net['network']} network: bit-exact {net['bit_exact']}")
        lines.append(f"  {'layer':<10} {'Cin,Cout,Kd,S,Pd':<18} {'Pi x Pv':<8} {'cycles':>10} "
                     f"{'useful MACs':>12} {'util':>7}")
        for r in net["layers"]:
            lines.append(f"  {r['layer']:<10} {','.join(map(str, r['shape'])):<18} "
                         f"{str(r['pi']) + 'x' + str(r['pv']):<8} {r['cycles']:>10} "
                         f"{r['useful_macs']:>12} {100 * r['utilisation']:>6.1f}%")
        lines.append(f"  {'frame':<10} {'':<18} {'':<8} {net['cycles']:>10} "
                     f"{net['useful_macs']:>12} {100 * net['utilisation']:>6.1f}%")
        lines.append(f"  stalled cycles {net['stalled_cycles']}; traffic " +
                     ", ".join(f"{k} {v}" for k, v in net["traffic"].items()))
        lines.append(f"  simulation speed {net['sim_cycles_per_s']} cycles/s (Verilator, wall)")
    lines.append("\ngoals (bit-exact; paper network >= 90% per layer K_d >= 3, >= 80% frame): " +
                 ("met" if report["ok"] else "NOT met"))
    return "\n".join(lines)
