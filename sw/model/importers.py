"""Import trained networks from ONNX files and PyTorch ``state_dict`` files into the float
network description of :mod:`deconvsr.sw.model.network`.

ONNX: a chain of ``Conv`` (stride 1, no groups/dilation, symmetric padding) with activations
(``Relu``, ``LeakyRelu``, ``PRelu``, ``Tanh``, ``Sigmoid``, ``Clip``) and one upsampler in any
form :mod:`deconvsr.sw.model.onnx_convert` recognises (``DepthToSpace``, the Reshape-Transpose
forms of PyTorch's exports, tf2onnx's NHWC forms, ``Resize``/``Upsample`` nearest with a proven
integer scale). Shape arithmetic, ``Identity``, ``Dropout`` and NHWC ``Transpose`` pairs are
allowed. Anything else is refused naming the node.

PyTorch: a ``state_dict`` saved with ``torch.save(model.state_dict(), path)``, loaded with
``torch.load(weights_only=True)`` (so needs torch). The keys are read in order as conv layers
(and PReLU slopes); a state_dict does not say which activation follows each conv nor how each
conv pads, so both are options (``act``, ``padding``) and nothing is guessed. The last layer is
a sub-pixel conv (PyTorch ``PixelShuffle`` = CRD) with ``r = sqrt(C_out)``, or, with
``last="resize"`` and ``r``, a nearest-resize conv.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import numpy as np

from .network import Layer, Network, NetworkError

__all__ = ["ImportError_", "import_onnx", "import_onnx_model", "import_state_dict",
           "load_state_dict", "network_from_state_dict", "parse_acts", "parse_padding",
           "ACT_CHOICES"]



class ImportError_(ValueError):
    """A model file that cannot be imported; the message names the file and node/key."""


# ONNX ------------------------------------------------------------------------------------------
def import_onnx(path) -> Network:
    """Import an ONNX file. Raises :class:`ImportError_` (unreadable file or unsupported
    graph) naming the file and node."""
    import onnx     # heavy (about 1 s): only when an ONNX file is imported

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise ImportError_(f"{path}: no such file") from None
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ImportError_(f"{path}: corrupted ONNX file ({type(e).__name__})") from None
    if model.ir_version == 0 or not model.HasField("graph"):
        raise ImportError_(f"{path}: corrupted ONNX file (no IR version or graph)")
    try:
        return import_onnx_model(model, name=path.stem)
    except NetworkError as e:
        raise ImportError_(f"{path}: {e}") from None


#: Activations read from ONNX nodes (besides Relu); Clip(0, inf) is a ReLU.
_ONNX_ACTS = {"Relu": "relu", "LeakyRelu": "leakyrelu", "PRelu": "prelu", "Tanh": "tanh",
              "Sigmoid": "sigmoid", "Clip": "clip"}
_PASS_OPS = ("Identity", "Dropout")


def import_onnx_model(model, name: str = "onnx") -> Network:
    """Import an in-memory ``onnx.ModelProto``: a chain of ``Conv`` layers with activations
    (``Relu``, ``LeakyRelu``, ``PRelu``, ``Tanh``, ``Sigmoid``, ``Clip``), ending in one
    upsampler in any form that :mod:`deconvsr.sw.model.onnx_convert` recognises (so every
    PyTorch, tf2onnx and QDQ/QONNX-weight export form). NHWC graphs (tf2onnx) are followed
    through their ``Transpose`` nodes. Nodes that only compute shapes are ignored.

    Raises
    ------
    ImportError_
        naming the node and the reason.
    """
    from .onnx_convert import _conv_params, _label, find_upsamplers   # heavy: onnx
    from .transforms import TransformError

    try:
        g, matches, skipped = find_upsamplers(model)
    except TransformError as e:
        raise ImportError_(f"{name}: {e}") from None
    inits = {t.name for t in model.graph.initializer}
    real_inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(real_inputs) != 1:
        raise ImportError_(f"{name}: expected one graph input (the Y plane), found "
                           f"{len(real_inputs)}: {', '.join(real_inputs)}")
    starts = {id(m.nodes[0]): m for m in matches}
    in_skipped = {n: s for s in skipped for n in s.nodes}

    def label(node):
        return f"node {node.name or '?'} ({node.op_type})"

    def fail(node, why):
        raise ImportError_(f"{name}: {label(node)}: {why}")

    layers: list[dict] = []
    current = real_inputs[0]
    layout = "NCHW"
    x_shape = g.shapes.shape(current)
    if x_shape is not None and len(x_shape) == 4 and x_shape[3] == 1 and x_shape[1] != 1:
        layout = "NHWC"                           # tf2onnx: (N, H, W, 1)
    outputs = {o.name for o in model.graph.output}
    while current not in outputs:
        cons = [c for c in g.consumers.get(current, []) if c.op_type != "Shape"]
        if len(cons) != 1:
            what = ", ".join(_label(c) for c in cons) or "nothing"
            raise ImportError_(f"{name}: tensor {current} is read by {what}: only a chain of "
                               "layers is supported")
        node = cons[0]
        if node.input[0] != current:
            fail(node, f"reads {current} as a parameter, not as its data input")
        op = node.op_type
        m = starts.get(id(node))
        if m is not None:
            if m.in_perm is not None and not (layout == "NHWC" and m.in_perm == [0, 3, 1, 2]):
                fail(node, "the upsampler's input layout is not NCHW")
            if m.in_perm is None and layout != "NCHW":
                fail(node, "the upsampler reads an NHWC tensor")
            d = {"kind": m.kind, "weight": m.conv_weight, "bias": m.conv_bias,
                 "padding": m.conv_pad, "act": "none", "act_param": None, "r": m.r,
                 "mode": "CRD", "name": _label([n for n in m.nodes if n.op_type == "Conv"][0])}
            layers.append(d)
            layout = "NHWC" if m.out_perm is not None else "NCHW"
            current = m.output
            continue
        if node.domain not in ("", "ai.onnx"):
            fail(node, f"operator {node.domain}.{op} is not supported")
        a = {k: v for k, v in _attrs(node).items()}
        if op in _PASS_OPS:
            pass
        elif op == "Transpose":
            perm = list(a.get("perm", []))
            if layout == "NCHW" and perm == [0, 2, 3, 1]:
                layout = "NHWC"
            elif layout == "NHWC" and perm == [0, 3, 1, 2]:
                layout = "NCHW"
            else:
                fail(node, f"permutation {perm} of an {layout} tensor is not a layout change")
        elif op == "Conv":
            if layout != "NCHW":
                fail(node, "the convolution reads an NHWC tensor")
            try:
                w, b, pad = _conv_params(g, node, label(node))
            except TransformError as e:
                raise ImportError_(f"{name}: {e}") from None
            layers.append({"kind": "conv", "weight": w, "bias": b, "padding": pad,
                           "act": "none", "act_param": None, "r": 1,
                           "name": node.name or f"conv{len(layers)}"})
        elif op in _ONNX_ACTS:
            if not layers or layers[-1]["act"] != "none":
                fail(node, "an activation must follow a convolution")
            act, param = _onnx_act(g, node, a, fail)
            if act == "prelu" and layout == "NHWC":
                fail(node, "PRelu on an NHWC tensor is not supported")
            layers[-1].update(act=act, act_param=param)
        elif op == "ConvTranspose":
            fail(node, "native ConvTranspose layers are not imported yet (FSRCNN-style "
                       "networks: the engine's native deconvolution layers are planned)")
        else:
            s = in_skipped.get(_label(node))
            fail(node, f"operator {op} is not supported"
                       + (f" ({s.reason})" if s else " (Conv, activations, one sub-pixel or "
                                                      "nearest-resize upsampler)"))
        current = node.output[0]
    if [o.name for o in model.graph.output] != [current]:
        raise ImportError_(f"{name}: the graph outputs {[o.name for o in model.graph.output]} "
                           f"are not the end of the chain ({current})")
    if layout == "NHWC" and (not layers or layers[-1]["kind"] == "conv"
                             or layers[-1]["weight"].shape[0] // max(1, layers[-1]["r"]) ** 2
                             != 1):
        raise ImportError_(f"{name}: the graph output is NHWC with more than one channel")
    if not layers:
        raise ImportError_(f"{name}: the graph has no convolution")
    return _build(layers, name, {"source": "onnx"})


def _attrs(node) -> dict:
    from onnx import helper     # heavy: see import_onnx
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _onnx_act(g, node, a, fail):
    """(activation, parameters) of an ONNX activation node."""
    op = node.op_type
    if op == "LeakyRelu":
        return "leakyrelu", float(a.get("alpha", 0.01))
    if op == "PRelu":
        slope = g.const(node.input[1]) if len(node.input) > 1 else None
        if slope is None:
            fail(node, "the PRelu slope is not a constant")
        return "prelu", np.asarray(slope, np.float64).reshape(-1)
    if op == "Clip":
        if "min" in a or "max" in a:                    # Clip-6: attributes
            lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        else:
            vals = [g.const(i) if i else None for i in list(node.input[1:3])]
            if any(i and v is None for i, v in zip(node.input[1:3], vals)):
                fail(node, "Clip bounds are not constants")
            vals += [None] * (2 - len(vals))
            lo = -np.inf if vals[0] is None else float(vals[0])
            hi = np.inf if vals[1] is None else float(vals[1])
        if lo == 0 and hi == np.inf:
            return "relu", None
        if not (np.isfinite(lo) and np.isfinite(hi)):
            fail(node, f"Clip({lo:g}, {hi:g}) with an infinite bound is not supported")
        return "clip", np.array([lo, hi])
    return _ONNX_ACTS[op], None


def _build(layers, name, meta) -> Network:
    built = []
    for d in layers:
        w = np.asarray(d["weight"], np.float64)
        b = None if d["bias"] is None else np.asarray(d["bias"], np.float64)
        built.append(Layer(d["kind"], w, b, d["padding"], False, d["r"],
                           d.get("mode", "CRD"), d["name"], d["act"], d.get("act_param")))
    return Network(tuple(built), name, meta).validate()


# PyTorch ---------------------------------------------------------------------------------------
_RESAVE = ("save the weights only: torch.save(model.state_dict(), path), then import that "
           "file")
#: What ``--act`` accepts (one for every hidden layer, or one per hidden layer, comma-separated).
ACT_CHOICES = "relu, tanh, sigmoid, prelu, leakyrelu[:SLOPE]"


def parse_acts(spec: str, n_hidden: int) -> list[tuple]:
    """``[(act, param)]`` for ``n_hidden`` layers from ``--act`` text (``tanh``,
    ``relu,relu,tanh``, ``leakyrelu:0.2``; ``prelu`` takes its slopes from the state_dict).

    Raises
    ------
    ImportError_
        naming the field and the reason.
    """
    items = [t.strip().lower() for t in str(spec).split(",")]
    if len(items) == 1:
        items *= n_hidden
    if len(items) != n_hidden:
        raise ImportError_(f"--act: {len(items)} activations for {n_hidden} hidden layers "
                           "(give one, or one per hidden layer)")
    out = []
    for t in items:
        name, _, arg = t.partition(":")
        name = {"leaky_relu": "leakyrelu", "leaky": "leakyrelu"}.get(name, name)
        if name not in ("relu", "tanh", "sigmoid", "prelu", "leakyrelu") or (
                arg and name != "leakyrelu"):
            raise ImportError_(f"--act: {t!r} is not one of {ACT_CHOICES}")
        param = None
        if name == "leakyrelu":
            try:
                param = float(arg) if arg else 0.01
            except ValueError:
                raise ImportError_(f"--act: slope {arg!r} of {t!r} is not a number") from None
        out.append((name, param))
    return out


def parse_padding(spec, kernels: list[int]) -> list[int]:
    """Padding of each conv from ``--padding`` text: ``same`` (``K // 2``, odd K), one
    integer, or one per conv (comma-separated).

    Raises
    ------
    ImportError_
        naming the field and the reason.
    """
    text = str(spec).strip().lower()
    if text == "same":
        even = [k for k in kernels if k % 2 == 0]
        if even:
            raise ImportError_(f"--padding same: a {even[0]}x{even[0]} kernel has no "
                               "symmetric 'same' padding")
        return [k // 2 for k in kernels]
    items = [t.strip() for t in text.split(",")]
    if len(items) == 1:
        items *= len(kernels)
    if len(items) != len(kernels) or not all(re.fullmatch(r"\d+", t) for t in items):
        raise ImportError_(f"--padding: {spec!r} is not 'same', one integer or one integer "
                           f"per conv ({len(kernels)})")
    return [int(t) for t in items]


def load_state_dict(path) -> dict:
    """``{key: float64 array}`` of a PyTorch ``state_dict`` file (needs torch).

    Raises
    ------
    ImportError_
        without torch, for a corrupted file, a pickled whole module or other objects (with how
        to re-save it), or a file that is not a dict of tensors.
    """
    path = Path(path)
    try:
        import torch    # optional (the train extra)
    except ImportError:
        raise ImportError_(f"{path}: reading PyTorch files needs torch (pip install "
                           "torch==2.13.0), or export the model to ONNX") from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ImportError_(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportError_(f"{path}: is a directory, not a PyTorch file") from None
    except pickle.UnpicklingError as e:
        # Every message of the weights-only unpickler mentions weights_only; only an
        # "Unsupported global" means the pickle is sound but refers to a class (a module).
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise ImportError_(f"{path}: holds a whole pickled model or other Python objects "
                               f"({found.group(1)}), not a state_dict; {_RESAVE}") from None
        raise ImportError_(f"{path}: corrupted PyTorch file (the pickle cannot be read)") \
            from None
    except Exception as e:      # noqa: BLE001 -- torch.load raises anything on a damaged file
        raise ImportError_(f"{path}: corrupted PyTorch file ({type(e).__name__})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(hasattr(v, "detach") for v in sd.values()):
        raise ImportError_(f"{path}: not a state_dict (a dict of tensors); {_RESAVE}")
    return {k: v.detach().cpu().double().numpy() for k, v in sd.items()}


def import_state_dict(path, *, act=None, padding=None, last: str = "subpixel",
                      r: int | None = None) -> Network:
    """Import a PyTorch ``state_dict`` file (needs torch). A state_dict holds weights only:
    the activation after each hidden conv (``act``, see :func:`parse_acts`) and the convs'
    padding (``padding``, see :func:`parse_padding`) must be given; nothing is guessed.

    Raises
    ------
    ImportError_
        without torch, for a corrupted file, a pickled whole module, parameters that are not a
        chain of convolutions (and PReLU slopes), or a missing/bad ``act`` or ``padding``.
    """
    path = Path(path)
    arrays = load_state_dict(path)
    try:
        return network_from_state_dict(arrays, name=path.stem, act=act, padding=padding,
                                       last=last, r=r)
    except (ImportError_, NetworkError) as e:
        raise ImportError_(f"{path}: {e}") from None


def network_from_state_dict(arrays: dict, *, name: str = "state_dict", act=None, padding=None,
                            last: str = "subpixel", r: int | None = None) -> Network:
    """Build a network from ``{key: array}`` in module order: 4-D ``*.weight`` (+ ``*.bias``)
    are the convs, a 1-D ``*.weight`` after a hidden conv is its PReLU's slopes (with
    ``act=prelu``). The last conv upsamples: sub-pixel (PyTorch ``PixelShuffle`` = CRD) with
    ``r = sqrt(C_out)``, or with ``last="resize"`` and ``r``, nearest resize."""
    if act is None:
        raise ImportError_("a state_dict does not say which activation follows each conv: "
                           f"give --act ({ACT_CHOICES})")
    if padding is None:
        raise ImportError_("a state_dict does not say how each conv pads: give --padding "
                           "(same, or the padding of each conv)")
    keys = list(arrays)
    convs, slopes = [], {}
    for key in keys:
        a = np.asarray(arrays[key])
        base = key[:-len("weight")] if key.endswith("weight") else None
        if base is not None and a.ndim == 4:
            convs.append((base.rstrip("."), a, arrays.get(base + "bias")))
        elif key.endswith("bias") and np.asarray(
                arrays.get(key[:-len("bias")] + "weight", np.zeros(0))).ndim == 4:
            continue
        elif base is not None and a.ndim == 1 and convs and str(act).startswith("prelu"):
            slopes[len(convs) - 1] = (key, a)
        else:
            hint = " (a PReLU? give --act prelu)" if a.ndim == 1 and key.endswith(
                "weight") else ""
            raise ImportError_(f"parameter {key!r} (shape {a.shape}) is not a convolution{hint}; "
                               "only chains of Conv2d (with activations) are supported")
    if not convs:
        raise ImportError_("no convolution weights found")
    acts = parse_acts(act, len(convs) - 1)
    pads = parse_padding(padding, [w.shape[2] for _, w, _ in convs])
    layers = []
    for i, (prefix, w, b) in enumerate(convs):
        d = {"kind": "conv", "weight": w, "bias": b, "padding": pads[i], "act": "none",
             "act_param": None, "r": 1, "name": prefix}
        if i < len(convs) - 1:
            a_name, a_param = acts[i]
            if a_name == "prelu":
                if i not in slopes:
                    raise ImportError_(f"{prefix}: --act prelu, but no PReLU slopes follow this "
                                       "conv in the state_dict")
                a_param = slopes.pop(i)[1]
            d.update(act=a_name, act_param=a_param)
        else:
            if last == "subpixel":
                rr = r or int(round(math.sqrt(w.shape[0])))
                if rr * rr != w.shape[0]:
                    raise ImportError_(f"{prefix}: last conv has {w.shape[0]} output channels, "
                                       "not r^2 for a 1-channel sub-pixel output")
                d.update(kind="subpixel", r=rr, mode="CRD")
            elif last == "resize":
                if r is None:
                    raise ImportError_("a resize-convolution network needs the scale r")
                d.update(kind="resize", r=r)
            else:
                raise ImportError_(f"last must be 'subpixel' or 'resize', not {last!r}")
        layers.append(d)
    if slopes:
        key, a = next(iter(slopes.values()))
        raise ImportError_(f"parameter {key!r} (shape {a.shape}) follows the last conv: not a "
                           "hidden layer's PReLU")
    return _build(layers, name, {"source": "pytorch state_dict",
                                 "options": {"act": str(act), "padding": str(padding)}})
