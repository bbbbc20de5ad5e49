"""Import trained networks from ONNX files and PyTorch ``state_dict`` files into the float
network description of :mod:`deconvsr.sw.model.network`.

ONNX: a sequential graph of ``Conv`` (stride 1, no groups/dilation, symmetric padding), ``Relu``,
and one upsampling step: ``DepthToSpace`` (CRD or DCR), the ``Reshape`` (6-D) -> ``Transpose``
-> ``Reshape`` form of a pixel shuffle that older exporters write, or ``Resize``/``Upsample``
(nearest, equal integer scales) in front of the last ``Conv``. ``Identity`` and ``Constant``
nodes are allowed. Anything else is refused naming the node.

PyTorch: a ``state_dict`` saved with ``torch.save(model.state_dict(), path)``, loaded with
``torch.load(weights_only=True)`` (so needs torch). The keys are read in order as conv layers;
hidden layers are "same" convs followed by ReLU; the last layer is a sub-pixel conv (PyTorch
``PixelShuffle`` = CRD) with ``r = sqrt(C_out)``, or, with ``last="resize"`` and ``r``, a
nearest-resize conv.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .network import Layer, Network, NetworkError

__all__ = ["ImportError_", "import_onnx", "import_onnx_model", "import_state_dict",
           "network_from_state_dict"]

_CRD_PERM = [0, 1, 4, 2, 5, 3]     # (N, C, r, r, H, W) -> (N, C, H, r, W, r)
_DCR_PERM = [0, 3, 4, 1, 5, 2]     # (N, r, r, C, H, W) -> (N, C, H, r, W, r)


class ImportError_(ValueError):
    """A model file that cannot be imported; the message names the file and node/key."""


# ONNX ------------------------------------------------------------------------------------------
def _nearest_is_replication(ctm: str, nmode: str, r: int) -> bool:
    """Whether Resize(nearest, integer scale r) maps output x to input x // r."""
    for xo in range(4 * r):
        if ctm == "asymmetric":
            x = xo / r
        elif ctm in ("half_pixel", "pytorch_half_pixel"):
            x = (xo + 0.5) / r - 0.5
        elif ctm == "align_corners":
            return False
        else:
            return False
        if nmode == "floor":
            xi = math.floor(x)
        elif nmode == "ceil":
            xi = math.ceil(x)
        elif nmode == "round_prefer_floor":
            xi = math.ceil(x - 0.5)
        elif nmode == "round_prefer_ceil":
            xi = math.floor(x + 0.5)
        else:
            return False
        if max(xi, 0) != xo // r:
            return False
    return True


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
    try:
        return import_onnx_model(model, name=path.stem)
    except NetworkError as e:
        raise ImportError_(f"{path}: {e}") from None


def import_onnx_model(model, name: str = "onnx") -> Network:
    """Import an in-memory ``onnx.ModelProto``. See the module docstring for the graph form."""
    from onnx import numpy_helper   # heavy: see import_onnx

    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    real_inputs = [i.name for i in g.input if i.name not in consts]
    if len(real_inputs) != 1:
        raise ImportError_(f"{name}: expected one graph input (the Y plane), found "
                           f"{len(real_inputs)}: {', '.join(real_inputs)}")

    def attrs(node):
        from onnx import helper     # heavy: see import_onnx
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def label(node):
        return f"node {node.name or '?'} ({node.op_type})"

    def const(node, idx, what):
        if idx >= len(node.input) or node.input[idx] == "":
            return None
        t = node.input[idx]
        if t not in consts:
            raise ImportError_(f"{name}: {label(node)}: {what} must be a constant, not a "
                               "computed tensor")
        return consts[t]

    layers: list[dict] = []
    pending_resize = None      # r of a nearest upsample waiting for its conv
    pending_reshape = None     # (node, shape) of the first Reshape of a pixel shuffle
    pending_transpose = None   # (r, mode)
    current = real_inputs[0]
    for node in g.node:
        op = node.op_type
        if op == "Constant":
            continue
        if not node.input or node.input[0] != current:
            raise ImportError_(f"{name}: {label(node)}: the graph is not a simple chain "
                               f"(it reads {node.input[0] if node.input else 'nothing'}, "
                               f"not {current})")
        a = attrs(node)
        if pending_reshape is not None and op not in ("Transpose",):
            raise ImportError_(f"{name}: {label(node)}: a 6-D Reshape must be followed by the "
                               "Transpose of a pixel shuffle")
        if pending_transpose is not None and op != "Reshape":
            raise ImportError_(f"{name}: {label(node)}: the pixel shuffle Transpose must be "
                               "followed by a Reshape")
        if op == "Identity":
            pass
        elif op == "Conv":
            w = const(node, 1, "weight")
            b = const(node, 2, "bias")
            if w is None or w.ndim != 4:
                raise ImportError_(f"{name}: {label(node)}: needs a 4-D constant weight")
            k = w.shape[2]
            if w.shape[3] != k or list(a.get("kernel_shape", [k, k])) != [k, k]:
                raise ImportError_(f"{name}: {label(node)}: non-square kernel "
                                   f"{w.shape[2]}x{w.shape[3]} is not supported")
            if a.get("group", 1) != 1:
                raise ImportError_(f"{name}: {label(node)}: grouped convolution "
                                   f"(group={a['group']}) is not supported")
            if any(v != 1 for v in a.get("strides", [1, 1])) or any(
                    v != 1 for v in a.get("dilations", [1, 1])):
                raise ImportError_(f"{name}: {label(node)}: only stride 1, dilation 1 "
                                   "convolutions are supported")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise ImportError_(f"{name}: {label(node)}: auto_pad is not supported; "
                                   "export with explicit pads")
            if len(set(pads)) != 1:
                raise ImportError_(f"{name}: {label(node)}: asymmetric padding {pads} is not "
                                   "supported")
            d = {"kind": "conv", "weight": w, "bias": b, "padding": int(pads[0]),
                 "relu": False, "r": 1, "name": node.name or f"conv{len(layers)}"}
            if pending_resize is not None:
                d["kind"], d["r"] = "resize", pending_resize
                pending_resize = None
            layers.append(d)
        elif op == "Relu":
            if not layers or layers[-1]["relu"]:
                raise ImportError_(f"{name}: {label(node)}: ReLU must follow a convolution")
            layers[-1]["relu"] = True
        elif op == "DepthToSpace":
            if not layers or layers[-1]["kind"] != "conv" or layers[-1]["relu"]:
                raise ImportError_(f"{name}: {label(node)}: DepthToSpace must directly follow "
                                   "a convolution")
            mode = a.get("mode", b"DCR")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            layers[-1].update(kind="subpixel", r=int(a["blocksize"]), mode=mode)
        elif op == "Reshape" and pending_transpose is None:
            shape = const(node, 1, "shape")
            if shape is None or shape.size != 6:
                raise ImportError_(f"{name}: {label(node)}: only the 6-D Reshape of a pixel "
                                   "shuffle is supported")
            if not layers or layers[-1]["kind"] != "conv" or layers[-1]["relu"]:
                raise ImportError_(f"{name}: {label(node)}: a pixel shuffle must directly "
                                   "follow a convolution")
            pending_reshape = (node, [int(v) for v in shape])
        elif op == "Transpose":
            if pending_reshape is None:
                raise ImportError_(f"{name}: {label(node)}: Transpose outside a pixel shuffle "
                                   "is not supported")
            perm = list(a.get("perm", []))
            shape = pending_reshape[1]
            if perm == _CRD_PERM and shape[2] == shape[3]:
                pending_transpose = (shape[2], "CRD")
            elif perm == _DCR_PERM and shape[1] == shape[2]:
                pending_transpose = (shape[1], "DCR")
            else:
                raise ImportError_(f"{name}: {label(node)}: permutation {perm} of shape "
                                   f"{shape} is not a pixel shuffle")
            pending_reshape = None
        elif op == "Reshape":
            shape = const(node, 1, "shape")
            if shape is None or shape.size != 4:
                raise ImportError_(f"{name}: {label(node)}: a pixel shuffle must end with a "
                                   "4-D Reshape")
            r, mode = pending_transpose
            layers[-1].update(kind="subpixel", r=r, mode=mode)
            pending_transpose = None
        elif op in ("Resize", "Upsample"):
            mode = a.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode != "nearest":
                raise ImportError_(f"{name}: {label(node)}: resize mode {mode!r} is not "
                                   "supported (only 'nearest' is exactly a deconvolution)")
            if op == "Resize":
                scales = const(node, 2, "scales")
                if scales is None or scales.size == 0:
                    raise ImportError_(f"{name}: {label(node)}: give 'scales', not 'sizes'")
                ctm = a.get("coordinate_transformation_mode", b"half_pixel")
                nm = a.get("nearest_mode", b"round_prefer_floor")
                ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
                nm = nm.decode() if isinstance(nm, bytes) else nm
            else:
                scales = const(node, 1, "scales") if len(node.input) > 1 else np.asarray(
                    a.get("scales", []))
                ctm, nm = "asymmetric", "floor"
            scales = np.asarray(scales, np.float64).ravel()
            if scales.size != 4 or scales[0] != 1 or scales[1] != 1 or scales[2] != scales[3] \
                    or scales[2] != round(scales[2]) or scales[2] < 2:
                raise ImportError_(f"{name}: {label(node)}: scales {scales.tolist()} are not "
                                   "an equal integer upscale of H and W")
            r = int(scales[2])
            if not _nearest_is_replication(ctm, nm, r):
                raise ImportError_(f"{name}: {label(node)}: coordinate mode {ctm!r} with "
                                   f"nearest_mode {nm!r} is not pixel replication")
            if pending_resize is not None:
                raise ImportError_(f"{name}: {label(node)}: two resizes in a row")
            pending_resize = r
        else:
            raise ImportError_(f"{name}: {label(node)}: operator {op} is not supported "
                               "(Conv, Relu, DepthToSpace, Reshape-Transpose-Reshape, "
                               "Resize nearest)")
        current = node.output[0]
    if pending_resize is not None or pending_reshape is not None or pending_transpose is not None:
        raise ImportError_(f"{name}: the graph ends inside an upsampling pattern")
    outs = [o.name for o in g.output]
    if outs != [current]:
        raise ImportError_(f"{name}: the graph output {outs} is not the end of the chain "
                           f"({current})")
    return _build(layers, name, {"source": "onnx"})


def _build(layers, name, meta) -> Network:
    built = []
    for d in layers:
        w = np.asarray(d["weight"], np.float64)
        b = None if d["bias"] is None else np.asarray(d["bias"], np.float64)
        built.append(Layer(d["kind"], w, b, d["padding"], d["relu"], d["r"],
                           d.get("mode", "CRD"), d["name"]))
    return Network(tuple(built), name, meta).validate()


# PyTorch ---------------------------------------------------------------------------------------
_RESAVE = ("save the weights only: torch.save(model.state_dict(), path), then import that "
           "file")


def import_state_dict(path, *, last: str = "subpixel", r: int | None = None) -> Network:
    """Import a PyTorch ``state_dict`` file (needs torch).

    Raises
    ------
    ImportError_
        without torch, for a corrupted file, a pickled whole module (with how to re-save it),
        or parameters that are not a chain of convolutions.
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
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ImportError_(f"{path}: holds a whole pickled model, not a state_dict; "
                               f"{_RESAVE}") from None
        raise ImportError_(f"{path}: corrupted PyTorch file ({type(e).__name__})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise ImportError_(f"{path}: corrupted PyTorch file ({type(e).__name__})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(hasattr(v, "detach") for v in sd.values()):
        raise ImportError_(f"{path}: not a state_dict (a dict of tensors); {_RESAVE}")
    arrays = {k: v.detach().cpu().double().numpy() for k, v in sd.items()}
    try:
        return network_from_state_dict(arrays, name=path.stem, last=last, r=r)
    except ImportError_ as e:
        raise ImportError_(f"{path}: {e}") from None
    except NetworkError as e:
        raise ImportError_(f"{path}: {e}") from None


def network_from_state_dict(arrays: dict, *, name: str = "state_dict", last: str = "subpixel",
                            r: int | None = None) -> Network:
    """Build a network from ``{key: array}`` in module order (see the module docstring)."""
    keys = list(arrays)
    convs = []
    for key in keys:
        a = np.asarray(arrays[key])
        if key.endswith(".weight") and a.ndim == 4:
            prefix = key[:-len("weight")]
            convs.append((prefix.rstrip("."), a, arrays.get(prefix + "bias")))
        elif key.endswith(".bias") and (key[:-len("bias")] + "weight") in arrays \
                and np.asarray(arrays[key[:-len("bias")] + "weight"]).ndim == 4:
            continue
        else:
            raise ImportError_(f"parameter {key!r} (shape {a.shape}) is not a convolution; "
                               "only chains of Conv2d are supported")
    if not convs:
        raise ImportError_("no convolution weights found")
    layers = []
    for i, (prefix, w, b) in enumerate(convs):
        k = w.shape[2]
        d = {"kind": "conv", "weight": w, "bias": b, "padding": k // 2, "relu": True, "r": 1,
             "name": prefix}
        if i == len(convs) - 1:
            d["relu"] = False
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
    return _build(layers, name, {"source": "pytorch state_dict"})
