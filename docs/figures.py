#!/usr/bin/env python3
"""The figures in README.md and docs/*.md that a command produces: which command, and where
each figure stands in the text. Run the commands and compare (``check``) or write their
figures into the docs (``update``):

    python docs/figures.py list
    python docs/figures.py check eval models          # a few seconds each
    python docs/figures.py update bench-engine        # ~5 min (the engine under Verilator)
    python docs/figures.py check build-ulx3s-85f --result build/ulx3s-85f/build.json

A *figure set* is one command (its JSON output) and the places it fills: a regular expression
on one file whose named groups are figures, each group's text compared with (or replaced by)
the value formatted as the doc writes it. Figure sets of builds take the ``build.json`` a
``deconvsr build`` wrote (CI's bitstream tests check theirs). The tests check that every place
still matches its doc exactly once (``tests/test_figures.py``) and, in the slow suite, that the
quick commands still print what the docs say.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("espcn-paper-x3", "resize-paper-x3", "edge-x2", "edge-x3")
NUM = r"[-+]?[\d,]*\.?\d+"


@dataclass
class Place:
    path: str
    pattern: str                   #: a regex with named groups, matching once in the file


@dataclass
class FigureSet:
    name: str
    command: list[str]             #: argv (``deconvsr ...`` runs this interpreter's CLI)
    values: Callable[[dict], dict[str, str]]
    places: list[Place]
    seconds: str = "a few"         #: how long the command takes here, for `list`
    result_file: str | None = None  #: the command writes its JSON there (else: stdout)

    def run(self) -> dict:
        argv = self.command
        if argv[0] == "deconvsr":
            argv = [sys.executable, "-m", "deconvsr.sw.cli", *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if out.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(self.command)} failed:\n{out.stderr[-2000:]}")
        if self.result_file:
            return json.loads((ROOT / self.result_file).read_text())
        return json.loads(out.stdout)


def _f(x, digits=2, sign=False):
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _eval_values(model):
    def values(d):
        m, s = d["mean"]["psnr"], d["summary"]
        v = {"bicubic": _f(m["bicubic"]), "float": _f(m["float"]), "int8": _f(m["int8"]),
             "gain": _f(s["int8_gain_vs_bicubic_db"], sign=True),
             "fgain": _f(s["gain_vs_bicubic_db"], sign=True),
             "loss": _f(s["int8_loss_db"], 3)}
        ss = d["mean"]["ssim"]
        v.update(ssim_bicubic=_f(ss["bicubic"], 4), ssim_float=_f(ss["float"], 4),
                 ssim_int8=_f(ss["int8"], 4), deconv=_f(d["mean"]["psnr"]["deconv"]))
        for im in d["images"]:
            v[f"g_{im['name']}"] = _f(im["psnr"]["float"] - im["psnr"]["bicubic"], sign=True)
        return v
    return values


def _eval_places(model):
    label = re.escape(f"`{model}`")
    readme = (rf"\| {label} [^|\n]*\| {NUM} \| (?P<bicubic>{NUM}) \| (?P<float>{NUM}) \| "
              rf"(?P<int8>{NUM}) \| (?P<gain>{NUM}) dB \|")
    models = (rf"\| {label} \| (?P<bicubic>{NUM}) / (?P<ssim_bicubic>{NUM}) \| (?P<float>{NUM})"
              rf" / (?P<ssim_float>{NUM}) \| (?P<deconv>{NUM}) \| (?P<int8>{NUM}) / "
              rf"(?P<ssim_int8>{NUM}) \| (?P<fgain>{NUM}) \| (?P<gain>{NUM}) \| (?P<loss>{NUM})"
              rf" \| [^|\n]* \| astronaut (?P<g_astronaut>{NUM}), chelsea (?P<g_chelsea>{NUM}), "
              rf"coffee (?P<g_coffee>{NUM}), rocket (?P<g_rocket>{NUM}) \|")
    places = [Place("README.md", readme), Place("docs/models.md", models)]
    if model == "espcn-paper-x3":
        places.append(Place("docs/models.md", rf"astronaut, the most detailed photograph here, "
                            rf"already gains (?P<g_astronaut>{NUM}) dB\n  \(float, the table "
                            rf"above\), while chelsea and rocket \(soft, defocused areas\) gain "
                            rf"(?P<g_chelsea>{NUM}) and\n  (?P<g_rocket>{NUM})\."))
    return places


def _models_values(d):
    return {f"macs_{m['name'].replace('-', '_')}": f"{m['macs_per_lr_pixel']:,}" for m in d}


def _models_places():
    return [Place("README.md", rf"\| `{re.escape(m)}` [^|\n]*\| "
                  rf"(?P<macs_{m.replace('-', '_')}>{NUM}) \|") for m in MODELS]


def _engine_values(d):
    net = d["networks"][0]
    v = {}
    for i, r in enumerate(net["layers"], 1):
        v[f"c{i}"] = f"{r['cycles']:,}"
        v[f"m{i}"] = f"{r['useful_macs']:,}"
        v[f"u{i}"] = f"{100 * r['utilisation']:.1f}"
    v.update(c="{:,}".format(net["cycles"]), m="{:,}".format(net["useful_macs"]),
             u=f"{100 * net['utilisation']:.1f}")
    edge = next((n for n in d["networks"] if n["network"] == "edge"), None)
    if edge:
        v.update(ue=f"{100 * edge['utilisation']:.1f}", ce=f"{edge['cycles']:,}")
    return v


def _engine_places():
    readme = "".join(rf"\|[^|\n]*\|[^|\n]*\| (?P<c{i}>{NUM}) \| (?P<m{i}>{NUM}) \| "
                     rf"(?P<u{i}>{NUM})% \|\n" for i in range(1, 5))
    readme += rf"\| whole frame \| \| (?P<c>{NUM}) \| (?P<m>{NUM}) \| (?P<u>{NUM})% \|"
    engine = "".join(rf"\| L{i} \|[^|\n]*\|[^|\n]*\| (?P<c{i}>{NUM}) \| (?P<m{i}>{NUM}) \| "
                     rf"(?P<u{i}>{NUM})% \|\n" for i in range(1, 5))
    engine += rf"\| frame \| \| \| (?P<c>{NUM}) \| (?P<m>{NUM}) \| (?P<u>{NUM})% \|"
    return [Place("README.md", readme), Place("docs/engine.md", engine),
            Place("README.md", rf"the edge network `edge-x2` runs at (?P<ue>{NUM})% for the "
                  rf"whole frame"),
            Place("docs/engine.md", rf"frame\n(?P<ue>{NUM})%, (?P<ce>{NUM}) cycles")]


def _engine_ulx3s_values(d):
    net = next(n for n in d["networks"] if n["network"] == "paper")
    return {"u4": f"{100 * net['layers'][-1]['utilisation']:.1f}",
            "u": f"{100 * net['utilisation']:.1f}"}


def _synth_values(d):
    c = d[0]["counts"]
    return {"lut": str(c["LUT4"]), "ff": str(c["FF"]), "dsp": str(c["DSP"]),
            "bram": str(c["BRAM"]), "spram": str(c["SPRAM"])}


def _build_values(d):
    u = d["utilisation"]
    v = {"fmax": f"{d['fmax_mhz']:.1f}", "dsp": str(u["DSP"]["used"]),
         "bram": str(u["EBR"]["used"])}
    if d["board"] == "icebreaker":         # logic cells; LUT4 and FF from yosys' statistics
        v.update(lc=str(u["LC"]["used"]), lut=str(d["lut"]), ff=str(d["ff"]))
    else:
        v.update(lut=str(u["LUT"]["used"]), ff=str(u["FF"]["used"]),
                 outregs=str(d["bram_outregs"]))
    return v


def _build_places(board):
    if board == "icebreaker":
        return [Place("README.md", rf"\| iCEBreaker board, [^|\n]*\| `deconvsr build --board "
                      rf"icebreaker`[^|\n]*\| (?P<lc>{NUM}) LC / 5280 \((?P<lut>{NUM}) LUT4\) "
                      rf"\| (?P<ff>{NUM}) \| (?P<dsp>{NUM}) / 8 \| (?P<bram>{NUM}) / 30 "
                      rf"[^|\n]*\| \*\*(?P<fmax>{NUM}) MHz")]
    return [Place("README.md", rf"\| ULX3S board, [^|\n]*\| `deconvsr build --board ulx3s-85f`"
                  rf"[^|\n]*\| (?P<lut>{NUM}) / 83640 \| (?P<ff>{NUM}) \| (?P<dsp>{NUM}) / 156"
                  rf" \| (?P<bram>{NUM}) / 208 \| \*\*(?P<fmax>{NUM}) MHz"),
            Place("docs/boards.md", rf"All (?P<bram>{NUM}) blocks of the `ulx3s-85f` engine "
                  rf"take it\n\((?P<outregs>{NUM}) read ports")]


FIGURES = {
    **{f"eval-{m}": FigureSet(f"eval-{m}", ["deconvsr", "eval", "--data", "skimage", "--model",
                                             m, "--json"], _eval_values(m), _eval_places(m),
                              "5-20")
       for m in MODELS},
    "models": FigureSet("models", ["deconvsr", "models", "--json"], _models_values,
                        _models_places(), "2"),
    "bench-engine": FigureSet("bench-engine", ["deconvsr", "bench", "engine", "--json"],
                              _engine_values, _engine_places(), "300"),
    "bench-engine-ulx3s": FigureSet(
        "bench-engine-ulx3s", ["deconvsr", "bench", "engine", "--spec", "ulx3s-85f", "--size",
                               "32", "--json"], _engine_ulx3s_values,
        [Place("README.md", rf"`deconvsr bench engine --spec ulx3s-85f --size 32`\) the last "
               rf"layer takes Pi = 16 x Pv = 4 \(its\n9 virtual outputs in 3 groups of 4: at most "
               rf"75%\) and runs at (?P<u4>{NUM})%, the frame at (?P<u>{NUM})%\."),
         Place("docs/engine.md", rf"`deconvsr bench engine --spec ulx3s-85f --size 32` \(P = 64, "
               rf"R = 4, 16-activation words\): the\npaper network's last layer takes Pi = 16 x "
               rf"Pv = 4 \(9 virtual outputs in 3 groups of 4: at most\n75%\) and runs at "
               rf"(?P<u4>{NUM})%, the frame at (?P<u>{NUM})%\.")], "150"),
    "synth-icebreaker": FigureSet(
        "synth-icebreaker", ["python", "-m", "deconvsr.hw.synth", "--spec", "icebreaker",
                             "--json"], _synth_values,
        [Place("README.md", rf"\| `icebreaker` engine alone \(P = 16\) \| `python -m "
               rf"deconvsr.hw.synth --spec icebreaker` \| (?P<lut>{NUM}) / 5280 \| (?P<ff>{NUM})"
               rf" \| (?P<dsp>{NUM}) / 8 \| (?P<bram>{NUM}) / 30 \(\+ (?P<spram>{NUM}) / 4 SPRAM"),
         Place("docs/engine.md", rf"\| icebreaker \(P = 16 [^|\n]*\| iCE40UP5K \| (?P<lut>{NUM})"
               rf" / 5280 \| (?P<ff>{NUM}) \| (?P<dsp>{NUM}) / 8 SB_MAC16 \| (?P<bram>{NUM}) / 30"
               rf" \| (?P<spram>{NUM}) / 4 \|")], "200-400"),
    **{f"build-{b}": FigureSet(f"build-{b}", ["deconvsr", "build", "--board", b],
                               _build_values, _build_places(b), "500-700",
                               result_file=f"build/{b}/build.json")
       for b in ("icebreaker", "ulx3s-85f")},
}
#: Groups of figure sets by a short name.
GROUPS = {"eval": [f"eval-{m}" for m in MODELS], "quick": [f"eval-{m}" for m in MODELS]
          + ["models"]}


def find(place: Place) -> re.Match:
    text = (ROOT / place.path).read_text()
    hits = list(re.finditer(place.pattern, text))
    if len(hits) != 1:
        raise LookupError(f"{place.path}: the pattern matches {len(hits)} times, not once: "
                          f"{place.pattern[:80]}...")
    return hits[0]


def compare(fs: FigureSet, result: dict) -> list[str]:
    """Differences between the docs and ``result`` (the command's JSON): one line each."""
    values = fs.values(result)
    out = []
    for place in fs.places:
        m = find(place)
        for key, doc in m.groupdict().items():
            if key in values and values[key] != doc:
                out.append(f"{place.path}: {fs.name} {key}: the doc says {doc}, "
                           f"`{' '.join(fs.command)}` gives {values[key]}")
    return out


def update(fs: FigureSet, result: dict) -> int:
    """Write ``result``'s figures into the docs; returns how many changed."""
    values = fs.values(result)
    changed = 0
    for place in fs.places:
        path = ROOT / place.path
        text = path.read_text()
        m = find(place)
        spans = sorted((m.span(k), values[k]) for k in m.groupdict() if k in values)
        for (a, b), v in reversed(spans):
            if text[a:b] != v:
                changed += 1
                text = text[:a] + v + text[b:]
        path.write_text(text)
    return changed


def _names(items):
    names = []
    for item in items or list(FIGURES):
        names += GROUPS.get(item, [item])
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"unknown figure set(s) {', '.join(unknown)}: see `list`")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python docs/figures.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["list", "check", "update"])
    ap.add_argument("names", nargs="*", help="figure sets or groups (eval, quick); default all")
    ap.add_argument("--result", help="the command's JSON (e.g. a build.json) instead of running")
    args = ap.parse_args(argv)
    names = _names(args.names)
    if args.action == "list":
        for n in names:
            fs = FIGURES[n]
            print(f"{n:<24} {' '.join(fs.command)}  (~{fs.seconds} s; "
                  f"{', '.join(sorted({p.path for p in fs.places}))})")
        return 0
    bad = 0
    for n in names:
        fs = FIGURES[n]
        result = json.loads(Path(args.result).read_text()) if args.result else fs.run()
        if args.action == "check":
            diffs = compare(fs, result)
            bad += len(diffs)
            print("\n".join(diffs) if diffs else f"{n}: the docs agree")
        else:
            print(f"{n}: {update(fs, result)} figure(s) changed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
