"""Analytic cost model of convolution-based upsampling layers (Colbert et al. 2021, §6).

Two kinds of figure, always labelled apart:

* **counted** (exact, from formulas tested against instrumented loop nests): MAC slots, useful
  MACs, weights, activation reads/writes, rearrangement traffic, per layer;
* **modelled** (counts times constants of :data:`ENERGY_TABLES` / :data:`GTX680`): energy and
  latency. No measured figure is produced here.

Operators for one upsampling layer with ``C_in`` input channels, ``C_out`` output channels,
conv kernel ``K``, factor ``r``, low-resolution input ``H x W`` and "same" padding (output
``rH x rW``):

=========  =====================================================================
``C-SP``   sub-pixel conv: conv ``C_in -> r^2 C_out`` on ``H x W``, then pixel shuffle
``C-NN``   resize conv: nearest upsample by ``r``, then conv ``C_in -> C_out`` on ``rH x rW``
``D-SP/*`` deconvolution from the sub-pixel layer: ``K_d = rK``, ``S = r``
``D-NN/*`` deconvolution from the resize layer: ``K_d = K + r - 1``, ``S = r``
=========  =====================================================================

with ``*`` one of the loop orders STDD, STRD, REVD, REVD2, TDC. Conventions (the authors'):
every activation is read once from and written once to main memory per layer, each weight is
read once; a rearrangement pass (shuffle, resize) reads and writes its whole map. With
``C_in = C_out`` the counts reduce to the paper's table (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["LayerCost", "EnergyTable", "Machine", "ENERGY_TABLES", "GTX680", "ALGORITHMS",
           "OPERATORS", "conv_cost", "upsampling_cost", "useful_macs_1d", "energy_pj",
           "roofline", "Network", "PAPER_NETWORK", "network_costs", "total", "paper_comparison",
           "PAPER_HEADLINE"]

ALGORITHMS = ("STDD", "STRD", "REVD", "REVD2", "TDC")
OPERATORS = ("C-SP", "C-NN") + tuple(f"D-SP/{a}" for a in ALGORITHMS) + tuple(
    f"D-NN/{a}" for a in ALGORITHMS)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")
    return value


@dataclass(frozen=True)
class LayerCost:
    """Counted costs of one layer (numbers of operations / words, not energies).

    ``mac_slots``: multiply-accumulates the loop order executes (the paper's M), including
    those on inserted zeros (STRD) or zero-padded taps (REVD2/TDC when ``K_d mod S != 0``).
    ``useful_macs``: products of a real weight with a real input (borders not subtracted).
    ``weights``: weights stored and read once. ``act_reads``/``act_writes``: feature-map words
    read / written by the layer (A = reads + writes). ``rearrange``: words read + written by
    a separate shuffle/resize pass (P).
    """

    name: str
    mac_slots: int
    useful_macs: int
    weights: int
    act_reads: int
    act_writes: int
    rearrange: int = 0

    @property
    def activations(self) -> int:
        return self.act_reads + self.act_writes

    @property
    def words(self) -> int:
        """Every word moved to or from main memory: weights + A + P."""
        return self.weights + self.activations + self.rearrange

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(f"{self.name}+{other.name}", *(
            getattr(self, f) + getattr(other, f) for f in
            ("mac_slots", "useful_macs", "weights", "act_reads", "act_writes", "rearrange")))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["activations"] = self.activations
        d["words"] = self.words
        return d


def conv_cost(c_in: int, c_out: int, k: int, h: int, w: int, name: str = "conv") -> LayerCost:
    """A stride-1 "same" convolution on ``H x W`` (the non-upsampling layers)."""
    for n, v in (("c_in", c_in), ("c_out", c_out), ("k", k), ("h", h), ("w", w)):
        _check(n, v)
    m = k * k * c_in * c_out * h * w
    return LayerCost(name, m, m, k * k * c_in * c_out, c_in * h * w, c_out * h * w)


def deconv_params(op: str, k: int, r: int) -> tuple[int, int]:
    """``(K_d, S)`` of the deconvolution equivalent to ``D-SP`` or ``D-NN``."""
    if op == "D-SP":
        return r * k, r
    if op == "D-NN":
        return k + r - 1, r
    raise ValueError(f"op must be 'D-SP' or 'D-NN', not {op!r}")


def upsampling_cost(operator: str, c_in: int, c_out: int, k: int, r: int, h: int,
                    w: int) -> LayerCost:
    """Counted costs of one upsampling ``operator`` (one of :data:`OPERATORS`).

    Raises
    ------
    ValueError
        for an unknown operator or a non-positive size.
    """
    for n, v in (("c_in", c_in), ("c_out", c_out), ("k", k), ("r", r), ("h", h), ("w", w)):
        _check(n, v)
    hw, rr = h * w, r * r
    out_words = rr * c_out * hw                   # the r H x r W x C_out output, written once
    if operator == "C-SP":
        m = rr * k * k * c_in * c_out * hw
        return LayerCost(operator, m, m, rr * k * k * c_in * c_out, c_in * hw, out_words,
                         2 * out_words)
    if operator == "C-NN":
        m = rr * k * k * c_in * c_out * hw
        return LayerCost(operator, m, m, k * k * c_in * c_out, rr * c_in * hw, out_words,
                         (1 + rr) * c_in * hw)
    op, _, algo = operator.partition("/")
    if op not in ("D-SP", "D-NN") or algo not in ALGORITHMS:
        raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
    kd, s = deconv_params(op, k, r)
    useful = kd * kd * c_in * c_out * hw
    reads = c_in * hw
    weights = kd * kd * c_in * c_out
    if algo in ("STDD", "REVD"):
        slots = useful
    elif algo == "STRD":
        slots = kd * kd * c_in * c_out * rr * hw  # stride-1 conv over the r H x r W output
        reads = (h + (h - 1) * (s - 1)) * (w + (w - 1) * (s - 1)) * c_in   # zero-inserted map
    else:                                         # REVD2, TDC: ceil(K_d / S)^2 taps per output
        slots = _ceil_div(kd, s) ** 2 * s * s * c_in * c_out * hw
        if algo == "TDC":
            weights = _ceil_div(kd, s) ** 2 * s * s * c_in * c_out    # zero-padded sub-kernels
    return LayerCost(operator, slots, useful, weights, reads, out_words, 0)


def useful_macs_1d(size: int, k_d: int, stride: int, padding: int, size_out: int) -> int:
    """Along one axis: the (input, tap) pairs of a deconvolution that land inside the output,
    ``#{(h, a): 0 <= S h + a - P_d < size_out}``. The product of the two axes times
    ``C_in C_out`` is the exact number of products a border-aware loop nest executes."""
    return sum(1 for h in range(size) for a in range(k_d)
               if 0 <= stride * h + a - padding < size_out)


# Constants -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energies (pJ) of the 45 nm model. ``mac_pj`` per MAC slot, ``word_pj``
    per word moved to/from DRAM, ``word_bytes`` the word size (for the roofline)."""

    name: str
    mac_pj: float
    word_pj: float
    word_bytes: int
    source: str


ENERGY_TABLES = {
    "fp32": EnergyTable(
        "fp32", 3.7 + 0.9, 640.0, 4,
        "Horowitz, ISSCC 2014, 45 nm: fp32 multiply 3.7 pJ + fp32 add 0.9 pJ; DRAM 640 pJ "
        "per 32-bit word (1.3-2.6 nJ per 64-bit access)"),
    "int8": EnergyTable(
        "int8", 0.2 + 0.1, 160.0, 1,
        "Horowitz, ISSCC 2014, 45 nm: 8-bit multiply 0.2 pJ + 32-bit accumulate add 0.1 pJ; "
        "DRAM 640 pJ per 32-bit word / 4 = 160 pJ per byte"),
}


@dataclass(frozen=True)
class Machine:
    """Roofline constants: peak FLOP/s, DRAM bytes/s, pJ per flop / per byte, static W."""

    name: str
    peak_flops: float
    bandwidth: float
    flop_pj: float
    byte_pj: float
    static_w: float
    source: str


GTX680 = Machine("GTX 680", 3532.8e9, 192.2e9, 43.2, 437.5, 66.37,
                 "the authors' earlier roofline draft (paper notes §6): 3532.8 GFLOP/s, "
                 "192.2 GB/s, 43.2 pJ/flop, 437.5 pJ/byte, 66.37 W static")


def energy_pj(cost: LayerCost, table: EnergyTable) -> float:
    """Modelled energy: every MAC slot + every word of weights, activations, rearrangement."""
    return cost.mac_slots * table.mac_pj + cost.words * table.word_pj


def roofline(cost: LayerCost, word_bytes: int, machine: Machine = GTX680) -> dict:
    """Modelled latency (s) and energy (pJ) on a roofline: 2 flops per MAC slot, ``word_bytes``
    per word; time = max(compute, memory); energy includes static power times time."""
    flops = 2 * cost.mac_slots
    nbytes = cost.words * word_bytes
    t_compute = flops / machine.peak_flops
    t_memory = nbytes / machine.bandwidth
    t = max(t_compute, t_memory)
    return {
        "flops": flops, "bytes": nbytes, "intensity": flops / nbytes if nbytes else float("inf"),
        "t_compute_s": t_compute, "t_memory_s": t_memory, "latency_s": t,
        "bound": "compute" if t_compute >= t_memory else "memory",
        "energy_pj": flops * machine.flop_pj + nbytes * machine.byte_pj
        + machine.static_w * t * 1e12,
    }


# The evaluation network ----------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """Stride-1 conv layers ``(C_in, C_out, K)`` then one upsampling layer ``(C_in, C_out, K)``
    by ``r`` on an ``H x W`` low-resolution input."""

    body: tuple
    up: tuple
    r: int
    h: int
    w: int


#: §7: 1->64 5x5, 64->64 3x3, 64->32 3x3, 32->r^2 3x3 + shuffle (1 output channel), r = 3,
#: BSD300 size 321 x 481.
PAPER_NETWORK = Network(body=((1, 64, 5), (64, 64, 3), (64, 32, 3)), up=(32, 1, 3), r=3,
                        h=321, w=481)


def network_costs(net: Network = PAPER_NETWORK) -> dict:
    """``{operator: (body layers [LayerCost], upsampling LayerCost)}`` for every operator."""
    body = [conv_cost(ci, co, k, net.h, net.w, f"conv{i + 1}")
            for i, (ci, co, k) in enumerate(net.body)]
    return {op: (body, upsampling_cost(op, *net.up[:2], net.up[2], net.r, net.h, net.w))
            for op in OPERATORS}


def total(layers) -> LayerCost:
    """The sum of the counts of ``layers``."""
    acc = LayerCost("total", 0, 0, 0, 0, 0)
    for layer in layers:
        acc = acc + layer
    return LayerCost("total", *(getattr(acc, f) for f in (
        "mac_slots", "useful_macs", "weights", "act_reads", "act_writes", "rearrange")))


# The paper's network against the paper's headline -------------------------------------------

#: The paper's headline (model estimates, abstract / §1): deconvolution (REVD2) vs ...
PAPER_HEADLINE = {"latency": {"C-SP": 2.1, "C-NN": 2.8}, "energy": {"C-SP": 2.1, "C-NN": 2.7}}
#: Which deconvolution each original operator is compared with.
PAIRS = {"C-SP": "D-SP/REVD2", "C-NN": "D-NN/REVD2"}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def paper_comparison(r: int = 3, h: int = 321, w: int = 481,
                     precision: str = "fp32") -> dict:
    """Every figure ``deconvsr costmodel`` prints, as plain data: per operator the counted cost
    and the modelled energy and latency of the paper's network (§7) with the upsampling layer
    at ``r``, ``h`` x ``w`` LR input, and the deconvolution's saving against the paper's
    headline."""
    table = ENERGY_TABLES[precision]
    net = Network(PAPER_NETWORK.body, (PAPER_NETWORK.up[0], 1, PAPER_NETWORK.up[2]), r, h, w)
    rows = {}
    for op, (body, up) in network_costs(net).items():
        row = {"operator": op, "counted": {}, "modelled": {}}
        for scope, layers in (("layer", [up]), ("network", body + [up])):
            # Layer by layer: the network's latency is the sum of per-layer roofline times.
            rls = [roofline(c, table.word_bytes, GTX680) for c in layers]
            cost = total(layers)
            row["counted"][scope] = cost.as_dict()
            row["modelled"][scope] = {
                "energy_uj": energy_pj(cost, table) / 1e6,
                "latency_ms": sum(rl["latency_s"] for rl in rls) * 1e3,
                "latency_memory_ms": sum(rl["t_memory_s"] for rl in rls) * 1e3,
                "latency_compute_ms": sum(rl["t_compute_s"] for rl in rls) * 1e3,
                "bound": rls[-1]["bound"],
                "intensity_flop_per_byte": rls[-1]["intensity"],
                "roofline_energy_uj": sum(rl["energy_pj"] for rl in rls) / 1e6,
            }
        rows[op] = row

    # The paper's simplification C_in = C_out = C (here C = the upsampling layer's C_in):
    # counted traffic ratio without weights, = (1 + 3 r^2) / (1 + r^2).
    c = net.up[0]
    simple = {}
    for orig, deconv in PAIRS.items():
        a = upsampling_cost(orig, c, c, net.up[2], r, h, w)
        b = upsampling_cost(deconv, c, c, net.up[2], r, h, w)
        ra, rb = roofline(a, table.word_bytes), roofline(b, table.word_bytes)
        simple[orig] = {
            "c": c, "traffic_ratio_no_weights": _ratio(a.activations + a.rearrange,
                                                       b.activations + b.rearrange),
            "mac_slot_ratio": _ratio(a.mac_slots, b.mac_slots),
            "latency_ratio": _ratio(ra["latency_s"], rb["latency_s"]),
            "energy_ratio": _ratio(energy_pj(a, table), energy_pj(b, table)),
        }

    headline = []
    for metric in ("latency", "energy"):
        key = "latency_ms" if metric == "latency" else "energy_uj"
        for orig, deconv in PAIRS.items():
            m0, m1 = rows[orig]["modelled"], rows[deconv]["modelled"]
            entry = {
                "metric": metric, "vs": orig, "deconv": deconv,
                "paper": PAPER_HEADLINE[metric][orig],
                "layer": _ratio(m0["layer"][key], m1["layer"][key]),
                "network": _ratio(m0["network"][key], m1["network"][key]),
                "layer_cin_eq_cout": simple[orig][f"{metric}_ratio"],
            }
            if metric == "latency":
                entry["layer_memory_bound"] = _ratio(m0["layer"]["latency_memory_ms"],
                                                     m1["layer"]["latency_memory_ms"])
                entry["layer_cin_eq_cout_memory_bound"] = simple[orig]["traffic_ratio_no_weights"]
            headline.append(entry)
    return {
        "network": {"body": [list(x) for x in net.body], "upsampling": list(net.up), "r": r,
                    "h": h, "w": w, "precision": precision},
        "constants": {"energy": vars(table), "roofline": vars(GTX680)},
        "labels": {"counted": "exact counts from the formulas (tested against loop nests)",
                   "modelled": "counts x constants; not measured"},
        "operators": rows,
        "cin_eq_cout": simple,
        "headline": headline,
        "memory_bound_formula": (1 + 3 * r * r) / (1 + r * r),
    }
