"""``deconvsr costmodel [--json] [--plot PATH] [--roofline]``: the analytic cost model of
:mod:`deconvsr.sw.golden.costmodel` applied to the paper's evaluation network (§7), compared
with the paper's headline estimates (:func:`~deconvsr.sw.golden.costmodel.paper_comparison`)."""

from __future__ import annotations

import json

from ..golden.costmodel import paper_comparison
from .main import EXIT_INPUT, CLIError

__all__ = ["register", "run", "plot"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "costmodel", help="counted and modelled cost of upsampling operators (paper §6)",
        description="Per-operator counts (MAC slots, weights, activation and rearrangement "
                    "traffic) and modelled energy (45 nm constants) and latency (GTX 680 "
                    "roofline) of sub-pixel conv, resize conv and their deconvolutions "
                    "(STDD, STRD, REVD, REVD2, TDC) in the paper's network.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of latency / energy per operator")
    p.add_argument("--roofline", action="store_true",
                   help="also show roofline energy (GTX 680 pJ/flop, pJ/byte, static power), "
                        "arithmetic intensity and the bound")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="operand width for energy and bytes (default fp32)")
    p.add_argument("-r", "--scale", type=int, default=3, help="upscale factor r (default 3)")
    p.add_argument("--size", type=int, nargs=2, default=(321, 481), metavar=("H", "W"),
                   help="low-resolution input size (default 321 481, BSD300)")
    p.set_defaults(func=run)


def plot(result: dict, path: str) -> None:
    """Stacked bars: modelled energy and latency per operator, body layers + upsampling layer."""
    import matplotlib   # heavy (about 1 s): only with --plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(result["operators"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    colors = ["#d62728" if o.startswith("C-") else
              "#1f77b4" if o.endswith("REVD2") else "#7fa7cc" for o in ops]
    x = list(range(len(ops)))
    for col, key, unit in ((0, "latency_ms", "latency, ms (modelled: GTX 680 roofline)"),
                           (1, "energy_uj", "energy, µJ (modelled: 45 nm constants)")):
        up = [result["operators"][o]["modelled"]["layer"][key] for o in ops]
        total = [result["operators"][o]["modelled"]["network"][key] for o in ops]
        body = [t - u for t, u in zip(total, up)]
        ax = axes[0][col]
        ax.bar(x, up, color=colors)
        ax.set_yscale("log")
        ax.set_title(f"upsampling layer alone: {unit}", fontsize=10)
        ax = axes[1][col]
        ax.bar(x, body, color="#bbbbbb", label="layers 1-3 (same for every operator)")
        ax.bar(x, up, bottom=body, color=colors, label="upsampling layer")
        ax.set_title(f"whole network: {unit}", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xticks(x, ops, rotation=60, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3, which="both")
    net = result["network"]
    fig.suptitle(f"Paper network (§7), x{net['r']}, {net['h']}x{net['w']} LR input, "
                 f"{net['precision']}: cost per image by upsampling operator")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_ms(v):
    return f"{v:10.3f}"


def run(args) -> int:
    h, w = args.size
    for name, v in (("--scale", args.scale), ("--size H", h), ("--size W", w)):
        if v < 1:
            raise CLIError(f"{name} must be >= 1, not {v}", EXIT_INPUT)
    result = paper_comparison(args.scale, h, w, args.precision)
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as e:
            raise CLIError(f"{args.plot}: cannot write: {e.strerror or e}", EXIT_INPUT) from e
        result["plot"] = args.plot
    if args.json:
        print(json.dumps(result, indent=1))
        return 0

    net = result["network"]
    e = result["constants"]["energy"]
    print(f"Paper network: convs {net['body']} + upsampling {net['upsampling'][0]}->"
          f"{net['upsampling'][1]} K={net['upsampling'][2]}, r={net['r']}, "
          f"LR {net['h']}x{net['w']}, {net['precision']}")
    print(f"modelled energy: {e['mac_pj']:.2f} pJ/MAC slot, {e['word_pj']:.0f} pJ/word "
          f"({e['word_bytes']} B); latency: GTX 680 roofline (max of compute, memory)")
    head = (f"{'operator':<12}{'MAC slots':>15}{'useful MACs':>15}{'weights':>10}"
            f"{'A words':>13}{'P words':>13} | {'E layer uJ':>11}{'t layer ms':>11}"
            f"{'E net uJ':>11}{'t net ms':>10}")
    if args.roofline:
        head += f"{'bound':>9}{'flop/B':>8}{'E_roof uJ':>11}"
    print("\nupsampling layer: counted | modelled (layer alone, whole network)")
    print(head)
    for op, row in result["operators"].items():
        c, m = row["counted"]["layer"], row["modelled"]
        line = (f"{op:<12}{c['mac_slots']:>15,}{c['useful_macs']:>15,}{c['weights']:>10,}"
                f"{c['activations']:>13,}{c['rearrange']:>13,} | "
                f"{m['layer']['energy_uj']:>11.1f}{m['layer']['latency_ms']:>11.3f}"
                f"{m['network']['energy_uj']:>11.1f}{m['network']['latency_ms']:>10.3f}")
        if args.roofline:
            line += (f"{m['layer']['bound']:>9}{m['layer']['intensity_flop_per_byte']:>8.1f}"
                     f"{m['layer']['roofline_energy_uj']:>11.1f}")
        print(line)
    print(f"\nheadline: deconvolution (REVD2) saving, modelled; memory-bound formula "
          f"(1+3r^2)/(1+r^2) = {result['memory_bound_formula']:.2f}")
    print(f"{'metric':<9}{'vs':<6}{'paper':>7}{'layer':>8}{'network':>9}"
          f"{'C_in=C_out':>12}{'mem-bound layer':>17}{'mem-bound C_in=C_out':>22}")
    for hl in result["headline"]:
        mb = (f"{hl['layer_memory_bound']:>17.2f}{hl['layer_cin_eq_cout_memory_bound']:>22.2f}"
              if "layer_memory_bound" in hl else "")
        print(f"{hl['metric']:<9}{hl['vs']:<6}{hl['paper']:>7.1f}{hl['layer']:>8.2f}"
              f"{hl['network']:>9.2f}{hl['layer_cin_eq_cout']:>12.2f}{mb}")
    c = next(iter(result["cin_eq_cout"].values()))["c"]
    print(f"(C_in=C_out: the upsampling layer with {c} input and {c} output channels, the "
          "paper's simplification; layer/network: the real 32->1 layer)")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0
