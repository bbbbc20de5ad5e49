"""The model zoo: the networks shipped with the package (``sw/model/models/``, package data read
through :mod:`importlib.resources`) and loading any model file.

A model file is a pair ``NAME.npz`` (float32 weights ``L<i>.weight``, ``L<i>.bias`` in
``Conv2d`` layout) + ``NAME.json`` (metadata: ``format``, ``arch``, ``scale``, ``layers``,
``training`` record, ``calibration`` with the activation ranges used by the quantiser).
:func:`load_model` also accepts ONNX (``.onnx``) and PyTorch ``state_dict`` (``.pt``/``.pth``)
files through :mod:`deconvsr.sw.model.importers`.
"""

from __future__ import annotations

import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from ...spec import SPECS
from ..host.program import ProgramError
from ..host.stream import compile_frame
from .evaluate import calibrated_on
from .importers import ImportError_, import_onnx, import_state_dict, load_state_dict
from .network import Network, NetworkError
from .quantize import quantize

__all__ = ["ModelError", "MODELS_DIR", "FORMAT", "shipped_names", "load_model", "load_quantized",
           "save_model", "model_info", "fits_budget", "engine_budgets", "deconv_weight_bytes", "fitting_specs"]

#: The shipped networks (package data; a :class:`~importlib.resources.abc.Traversable`, in
#: practice the directory on disk).
MODELS_DIR = resources.files(__package__) / "models"
FORMAT = "deconvsr-model/1"


class ModelError(ValueError):
    """A model that cannot be found or loaded. ``not_found`` tells the CLI which exit code."""

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


def shipped_names() -> list[str]:
    """Names of the shipped models (sorted)."""
    names = {p.name for p in MODELS_DIR.iterdir() if p.is_file()}
    return sorted(n[:-5] for n in names if n.endswith(".json") and n[:-5] + ".npz" in names)


def save_model(network: Network, path) -> tuple[Path, Path]:
    """Write ``path.npz`` + ``path.json`` (a ``.npz``/``.json`` suffix on ``path`` is dropped).

    ``network.meta`` is written into the JSON next to ``format``, ``name``, ``scale``, ``layers``.
    """
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    npz, js = path.with_name(path.name + ".npz"), path.with_name(path.name + ".json")
    meta = {"format": FORMAT, "name": path.name, "scale": network.scale,
            "layers": network.layer_dicts(), **{k: v for k, v in network.meta.items()
                                                 if k not in ("format", "name", "layers")}}
    # Both files written whole to temporary names first, then renamed: an interrupted save
    # leaves no half file (at worst a new .npz beside the old .json for an instant).
    parts = [p.with_name(f".{p.name}.{os.getpid()}.part") for p in (npz, js)]
    try:
        with open(parts[0], "wb") as f:
            np.savez_compressed(f, **network.arrays())
        parts[1].write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(parts[0], npz)
        os.replace(parts[1], js)
    finally:
        for p in parts:
            p.unlink(missing_ok=True)
    return npz, js


def _load_npz(npz, js) -> Network:
    """``npz``, ``js``: paths or package-data traversables."""
    name = npz.name.rsplit(".", 1)[0]
    if not js.is_file():
        raise ModelError(f"{npz}: the metadata file {js.name} is missing next to it")
    try:
        meta = json.loads(js.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{js}: corrupted metadata (not JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(
            meta.get("layers"), list):
        raise ModelError(f"{js}: not a deconvsr model description (format {FORMAT!r} with "
                         "'layers' expected)")
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is corrupted.
        with npz.open("rb") as fh:
            f = np.load(fh, allow_pickle=False)
            if not hasattr(f, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            with f:
                arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise ModelError(f"{npz}: no such file", not_found=True) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ModelError(f"{npz}: corrupted weight file ({type(e).__name__}: {e})") from None
    bad = [i for i, d in enumerate(meta["layers"]) if not isinstance(d, dict)]
    if bad:
        raise ModelError(f"{js}: layer {bad[0]} is not an object")
    for i, d in enumerate(meta["layers"]):
        for key in ("c_in", "c_out", "k", "padding", "r"):
            if key in d and not (isinstance(d[key], int) and not isinstance(d[key], bool)):
                raise ModelError(f"{js}: layer {i}: {key} must be an integer, not {d[key]!r}")
    scale = meta.get("scale")
    if scale is not None and not (isinstance(scale, int) and not isinstance(scale, bool)):
        raise ModelError(f"{js}: scale must be an integer, not {scale!r}")
    try:
        net = Network.from_arrays(meta["layers"], arrays, name=name, meta=meta)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        if isinstance(e, NetworkError):
            raise ModelError(str(e)) from None
        raise ModelError(f"{js}: layer description lacks or mistypes field {e}") from None
    if scale is not None and scale != net.scale:
        raise ModelError(f"{js}: says scale {meta['scale']} but its layers upscale by "
                         f"{net.scale}")
    return net


def load_model(name_or_path, *, options: dict | None = None) -> Network:
    """A shipped model by name, or a file: ``.npz`` (+ ``.json``), ``.onnx``, ``.pt``/``.pth``.

    ``options`` are the state_dict import options (``act``, ``padding``, ``last``, ``r``:
    :func:`~deconvsr.sw.model.importers.import_state_dict`); a state_dict without them is
    refused (it does not say its activations nor padding). The network is validated
    (supported family). Raises :class:`ModelError` with one clear line for an unknown name, a
    missing/corrupted file, shape mismatches or an unsupported layer.
    """
    s = str(name_or_path)
    path = Path(s)
    try:
        if path.suffix.lower() in (".npz", ".json"):
            base = path.with_suffix("")
            npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
            if not npz.exists():
                raise ModelError(f"{npz}: no such file", not_found=True)
            net = _load_npz(npz, js)
        elif path.suffix.lower() in (".onnx", ".pt", ".pth"):
            if not path.exists():
                raise ModelError(f"{path}: no such file", not_found=True)
            if path.is_dir():
                raise ModelError(f"{path}: is a directory, not a model file")
            pt = path.suffix.lower() != ".onnx"
            if pt and not (options or {}).get("act") and not (options or {}).get("padding"):
                try:    # a corrupted file, a whole pickled model: said first
                    load_state_dict(path)
                except ImportError_ as e:
                    raise ModelError(str(e)) from None
                raise ModelError(f"{path}: a state_dict holds weights only, not its "
                                 "activations nor padding: import it with `deconvsr import "
                                 f"{path} -o NAME.npz --act ... --padding ...`")
            try:
                net = (import_state_dict(path, **(options or {})) if pt else import_onnx(path))
            except ImportError_ as e:
                raise ModelError(str(e)) from None
        elif (MODELS_DIR / f"{s}.json").is_file():
            net = _load_npz(MODELS_DIR / f"{s}.npz", MODELS_DIR / f"{s}.json")
        else:
            known = ", ".join(shipped_names()) or "none"
            if path.exists():
                raise ModelError(f"{s}: unknown model file type {path.suffix!r} (use .npz, "
                                 ".onnx, .pt or .pth)")
            raise ModelError(f"unknown model {s!r}: not a shipped model ({known}) nor an "
                             "existing file", not_found=True)
        return net.validate()
    except NetworkError as e:
        raise ModelError(str(e)) from None


def load_quantized(name_or_path, *, calibrate_on=None, spec=None) -> tuple[Network, list]:
    """``(network, quantised layers)`` of a model name or file, quantised with the arithmetic
    ``spec`` (an :class:`~deconvsr.arith.ArithSpec`; default the default arithmetic, see
    :func:`~deconvsr.sw.model.quantize.quantize`). A model without calibration
    (an ONNX file) is calibrated on ``calibrate_on`` (``[(name, uint8 RGB)]`` images, see
    :func:`~deconvsr.sw.model.evaluate.calibrated_on`) when given.

    Raises
    ------
    ModelError
        if the model cannot be found or loaded (:func:`load_model`).
    deconvsr.sw.model.quantize.QuantizeError
        if it cannot be quantised.
    """
    net = load_model(name_or_path)
    if calibrate_on is not None and not net.meta.get("calibration"):
        calibrated = calibrated_on(net, calibrate_on)
        if calibrated is None:
            raise ModelError(f"{net.name}: no calibration image is as large as the network's "
                             f"receptive field ({net.receptive_field} LR pixels)")
        net = calibrated
    return net, (quantize(net) if spec is None else quantize(net, spec=spec))


def fits_budget(network: Network, *, max_channels: int | None = None,
                weight_bytes: int | None = None, max_layers: int | None = None,
                bias_entries: int | None = None) -> bool:
    """Whether an engine with at most ``max_channels`` channels per layer, ``weight_bytes``
    of int8 weight storage (after the transform), ``max_layers`` layer descriptors and
    ``bias_entries`` bias/requantisation entries (one per output channel and phase) can hold
    ``network``.

    This is the hook for engine specs: the engine code passes its board's budget.
    """
    if max_channels is not None and network.max_channels > max_channels:
        return False
    if max_layers is not None and len(network.layers) > max_layers:
        return False
    if weight_bytes is not None and deconv_weight_bytes(network) > weight_bytes:
        return False
    if bias_entries is not None and sum(
            d.deconv.c_out * d.deconv.stride ** 2
            for d in network.to_deconv().layers) > bias_entries:
        return False
    return True


def deconv_weight_bytes(network: Network) -> int:
    """Bytes of int8 weights after the transform (what the engine stores)."""
    return int(sum(layer.deconv.weight.size for layer in network.to_deconv().layers))


def engine_budgets() -> dict[str, dict]:
    """Budgets of the named engine specs (:data:`deconvsr.spec.SPECS`): weight memory
    ``lanes * weight_depth`` bytes, ``max_layers`` and ``bias_depth`` entries. A first-order
    check: the engine's program compiler has the final word (packing, activation buffers,
    frame size)."""
    return {name: {"weight_bytes": spec.lanes * spec.weight_depth,
                   "max_layers": spec.max_layers, "bias_entries": spec.bias_depth}
            for name, spec in SPECS.items()}


def fitting_specs(network: Network, frame: int = 64) -> list[str]:
    """The named engine specs that run ``network`` on a ``frame`` x ``frame`` input (tiled
    if need be): the budgets above as a quick filter, then the program compiler, which packs
    the weights as the engine reads them (a spec with 256 weight words of 16 lanes holds
    4,096 weight bytes but not every 4,000-byte network: packing leaves lanes idle)."""
    out = []
    for name, budget in engine_budgets().items():
        if not fits_budget(network, **budget):
            continue
        spec = SPECS[name]
        try:
            compile_frame(quantize(network, spec=spec.arith), (frame, frame), spec)
        except ProgramError:
            continue
        out.append(name)
    return out


def model_info(network: Network, *, fits: bool = True) -> dict:
    """Summary for ``deconvsr models`` (``fits=False``: skip the engine specs it fits)."""
    meta = network.meta
    train = meta.get("training", {})
    return {
        "name": network.name,
        "scale": network.scale,
        "arch": meta.get("arch"),
        "layers": network.describe(),
        "macs_per_lr_pixel": network.macs_per_lr_pixel,
        "weight_bytes": deconv_weight_bytes(network),
        "params": network.weight_count,
        "max_channels": network.max_channels,
        "fits": fitting_specs(network) if fits else [],
        "activations": sorted({la.act_name for la in network.layers[:-1]}),
        "trained": _training_summary(train) if train else None,
    }


def _training_summary(train: dict) -> dict:
    """The last run's record plus totals over the runs it continued (``init_from``)."""
    out = {k: train.get(k) for k in ("dataset", "minutes", "steps", "final_loss", "loss",
                                     "command")}
    runs, t = 0, train
    total_min, total_steps = 0.0, 0
    while t:
        runs += 1
        total_min += float(t.get("minutes") or 0)
        total_steps += int(t.get("steps") or 0)
        t = (t.get("init_from") or {}).get("training")
    out.update(runs=runs, total_minutes=total_min, total_steps=total_steps)
    return out
