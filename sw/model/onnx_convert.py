"""Rewrite the upsampling layers of an ONNX graph into deconvolutions (``ConvTranspose``).

Two families of patterns are found and replaced, using the exact kernel transforms of
:mod:`deconvsr.sw.model.transforms` (Colbert et al. 2021, §3-4):

* **sub-pixel convolution**: ``Conv`` -> ``DepthToSpace`` (``CRD`` or ``DCR``), or ``Conv`` ->
  ``Reshape`` (6-D) -> ``Transpose`` -> ``Reshape`` (4-D), the form older PyTorch exports give
  ``PixelShuffle``. Becomes ``ConvTranspose(K_d = r K, S = r, P_d = r (K - 1 - P))``. When the
  ``r^2 C_out`` conv biases differ between phases, the periodic bias is added exactly and for any
  input size: the ``(1, C_out, r, r)`` bias block is ``Tile``\\ d ``(H_out / r, W_out / r)`` times
  (``H_out`` read with ``Shape`` at run time; it is always a multiple of ``r`` here) and
  ``Add``\\ ed. A per-channel bias goes into ``ConvTranspose``'s ``B`` input.
* **nearest resize convolution**: ``Resize`` (``mode = nearest``) or the older ``Upsample``
  with equal integer scales on H and W, -> ``Conv``. Becomes
  ``ConvTranspose(K_d = K + r - 1, S = r, P_d = K - 1 - P)`` with the per-channel bias in ``B``.
  The ``Resize`` coordinate mapping is checked to be exactly pixel replication.

Everything else is left as it is: other nodes, initializers still in use, graph inputs and
outputs (the replacement writes the pattern's original output tensor name), opset imports. A
pattern whose intermediate tensor has another consumer (or is a graph output) is skipped and
reported, not rewritten. A candidate that cannot be rewritten exactly (bilinear resize,
grouped / dilated / strided conv, non-integer or non-uniform scale, non-square kernel,
asymmetric padding, NaN/inf weights, non-constant weights) raises
:class:`~deconvsr.sw.model.transforms.TransformError` naming the node and the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .transforms import Deconv, TransformError, resize_to_deconv, subpixel_to_deconv

__all__ = ["Rewrite", "Skipped", "ConvertResult", "convert_model", "MIN_OPSET"]

#: Oldest default-domain opset handled (Upsample-7, Tile-6 with a repeats input, Div on int64).
MIN_OPSET = 7

_CRD_PERM = [0, 1, 4, 2, 5, 3]     # (N, C, r, r, H, W) -> (N, C, H, r, W, r)
_DCR_PERM = [0, 3, 4, 1, 5, 2]     # (N, r, r, C, H, W) -> (N, C, H, r, W, r)


@dataclass(frozen=True)
class Rewrite:
    """One rewritten pattern."""

    kind: str              # "subpixel" or "resize"
    pattern: str           # e.g. "Conv+DepthToSpace(CRD)", "Resize(nearest)+Conv"
    nodes: tuple           # names of the replaced nodes, in graph order
    output: str            # the tensor the replacement writes (unchanged name)
    c_in: int
    c_out: int
    k: int                 # original conv kernel K
    k_d: int               # deconvolution kernel K_d
    stride: int
    padding: int           # deconvolution padding P_d
    conv_padding: int      # original conv padding P
    bias: str              # "none", "per-channel" or "periodic"
    new_nodes: tuple       # names of the inserted nodes

    def line(self) -> str:
        return (f"{self.pattern}: {' + '.join(self.nodes)} -> ConvTranspose "
                f"{self.c_in}->{self.c_out}, K {self.k} -> K_d {self.k_d}, stride {self.stride}, "
                f"padding {self.conv_padding} -> {self.padding}, bias {self.bias}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        d["new_nodes"] = list(self.new_nodes)
        return d


@dataclass(frozen=True)
class Skipped:
    """A pattern that was found but deliberately left alone."""

    pattern: str
    nodes: tuple
    reason: str

    def line(self) -> str:
        return f"{self.pattern}: {' + '.join(self.nodes)} left unchanged: {self.reason}"

    def as_dict(self) -> dict:
        return {"pattern": self.pattern, "nodes": list(self.nodes), "reason": self.reason}


@dataclass
class ConvertResult:
    model: onnx.ModelProto
    rewrites: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


# Graph helpers --------------------------------------------------------------------------------

def _label(node) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _subgraph_inputs(graph, acc: set) -> set:
    """Names used by nodes of ``graph`` and of any nested subgraph (implicit captures)."""
    for node in graph.node:
        acc.update(n for n in node.input if n)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _subgraph_inputs(a.g, acc)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    _subgraph_inputs(g, acc)
    return acc


def _opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


class _Graph:
    def __init__(self, model):
        self.graph = model.graph
        self.opset = _opset(model)
        self.nodes = list(self.graph.node)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.producer = {}
        self.consumers = {}
        for node in self.nodes:
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        # Implicit uses inside subgraphs count as consumers that cannot be rewired.
        self.implicit = set()
        for node in self.nodes:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    _subgraph_inputs(a.g, self.implicit)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        _subgraph_inputs(g, self.implicit)
        self.outputs = {o.name for o in self.graph.output}
        self.inits = {t.name: t for t in self.graph.initializer}
        self.names = set(self.producer) | set(self.inits) | {i.name for i in self.graph.input}
        self.names |= {n.name for n in self.nodes if n.name}

    def sole_consumer(self, tensor):
        """The only consumer node of ``tensor``, or None (several, none, graph output, or
        used inside a subgraph)."""
        cons = self.consumers.get(tensor, [])
        if len(cons) != 1 or tensor in self.outputs or tensor in self.implicit:
            return None
        return cons[0]

    def const(self, name):
        """The value of a constant tensor (initializer or ``Constant`` output), else None."""
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_int", "value_float"):
                    return np.array(helper.get_attribute_value(a))
                if a.name in ("value_ints", "value_floats"):
                    return np.array(helper.get_attribute_value(a))
        return None

    def unique(self, base: str) -> str:
        name, n = base, 1
        while name in self.names:
            name = f"{base}_{n}"
            n += 1
        self.names.add(name)
        return name


def _is(node, op_type) -> bool:
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


# Conv parameters ------------------------------------------------------------------------------

def _conv_params(g: _Graph, conv, name: str):
    """(weight, bias, padding) of a 2-D, stride-1, undilated, ungrouped, square conv."""
    attrs = _attrs(conv)
    weight = g.const(conv.input[1] if len(conv.input) > 1 else "")
    if weight is None:
        raise TransformError(name, "conv weight is not a constant initializer")
    if weight.ndim != 4:
        raise TransformError(name, f"only 2-D convolutions are supported (weight shape "
                                   f"{tuple(weight.shape)})")
    group = attrs.get("group", 1)
    if group != 1:
        raise TransformError(name, f"grouped convolution (group={group}) is not supported")
    dil = list(attrs.get("dilations", [1, 1]))
    if any(d != 1 for d in dil):
        raise TransformError(name, f"dilated convolution (dilations={dil}) is not supported")
    strides = list(attrs.get("strides", [1, 1]))
    if any(s != 1 for s in strides):
        raise TransformError(name, f"strided convolution (strides={strides}) is not supported")
    kh, kw = weight.shape[2:]
    if kh != kw:
        raise TransformError(name, f"non-square kernel {kh}x{kw} is not supported")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        pad = 0
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if (kh - 1) % 2:
            raise TransformError(name, f"auto_pad {auto_pad} with an even kernel ({kh}x{kw}) "
                                       "pads asymmetrically, which is not supported")
        pad = (kh - 1) // 2
    elif auto_pad == "NOTSET":
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(set(pads)) != 1:
            raise TransformError(name, f"asymmetric padding pads={pads} is not supported")
        pad = pads[0]
    else:
        raise TransformError(name, f"unknown auto_pad {auto_pad!r}")
    bias = None
    if len(conv.input) > 2 and conv.input[2]:
        bias = g.const(conv.input[2])
        if bias is None:
            raise TransformError(name, "conv bias is not a constant initializer")
    return weight, bias, pad


# Pattern matching -----------------------------------------------------------------------------

@dataclass
class _Match:
    kind: str
    pattern: str
    nodes: list            # pattern nodes (objects), first is the earliest
    x: str                 # input tensor of the replacement
    output: str            # output tensor the replacement must produce
    conv_pad: int
    k: int
    deconv: Deconv
    dtype: np.dtype


def _subpixel_matches(g: _Graph, used: set, matches: list, skipped: list):
    for node in g.nodes:
        if _is(node, "DepthToSpace"):
            conv = g.producer.get(node.input[0])
            if not _is(conv, "Conv"):
                continue
            attrs = _attrs(node)
            mode = attrs.get("mode", b"DCR")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            r = int(attrs["blocksize"])
            chain = [conv, node]
            pattern = f"Conv+DepthToSpace({mode})"
        elif _is(node, "Transpose"):
            perm = list(_attrs(node).get("perm", []))
            if perm not in (_CRD_PERM, _DCR_PERM):
                continue
            r1 = g.producer.get(node.input[0])
            if not _is(r1, "Reshape"):
                continue
            conv = g.producer.get(r1.input[0])
            r2 = g.sole_consumer(node.output[0])
            if not _is(conv, "Conv") or not _is(r2, "Reshape"):
                continue
            shape = g.const(r1.input[1])
            shape2 = g.const(r2.input[1])
            chain = [conv, r1, node, r2]
            pattern = "Conv+Reshape+Transpose+Reshape"
            if shape is None or shape.size != 6 or shape2 is None or shape2.size != 4:
                skipped.append(Skipped(pattern, tuple(map(_label, chain)),
                                       "reshape shapes are not 6-D / 4-D constants"))
                continue
            shape = [int(s) for s in shape]
            mode = "CRD" if perm == _CRD_PERM else "DCR"
            r = shape[2] if mode == "CRD" else shape[1]
            rr = shape[3] if mode == "CRD" else shape[2]
            if r != rr or r < 1:
                skipped.append(Skipped(pattern, tuple(map(_label, chain)),
                                       f"reshape {shape} is not a square pixel shuffle"))
                continue
            pattern = f"Conv+Reshape+Transpose+Reshape({mode})"
        else:
            continue
        names = tuple(map(_label, chain))
        inner = [t for n in chain[:-1] for t in n.output[:1]]
        if any(g.sole_consumer(t) is None for t in inner):
            skipped.append(Skipped(pattern, names, "an intermediate tensor has another "
                                                   "consumer or is a graph output"))
            continue
        name = " + ".join(names)
        weight, bias, pad = _conv_params(g, conv, name)
        if chain[-1].op_type == "Reshape":
            c_out = weight.shape[0] // (r * r) if r > 0 else 0
            s2 = [int(s) for s in shape2]
            if s2[1] not in (c_out, 0) or sum(s == -1 for s in s2) > 1:
                skipped.append(Skipped(pattern, names, f"final reshape {s2} is not (N, "
                                                       f"{c_out}, H r, W r)"))
                continue
        deconv = subpixel_to_deconv(weight, bias, r=r, padding=pad, mode=mode, name=name)
        matches.append(_Match("subpixel", pattern, chain, conv.input[0], chain[-1].output[0],
                              pad, weight.shape[2], deconv, weight.dtype))
        used.update(id(n) for n in chain)


def _nearest_index(ctm: str, nmode: str, xo: int, r: int, length: int) -> int:
    out_len = length * r
    if ctm in ("half_pixel", "half_pixel_symmetric"):
        xr = (xo + 0.5) / r - 0.5
    elif ctm == "pytorch_half_pixel":
        xr = (xo + 0.5) / r - 0.5 if out_len > 1 else 0.0
    elif ctm == "align_corners":
        xr = 0.0 if out_len == 1 else xo * (length - 1) / (out_len - 1)
    elif ctm == "asymmetric":
        xr = xo / r
    elif ctm == "tf_half_pixel_for_nearest":
        xr = (xo + 0.5) / r
    else:
        return -1
    frac = xr - math.floor(xr)
    if nmode == "floor":
        xi = math.floor(xr)
    elif nmode == "ceil":
        xi = math.ceil(xr)
    elif nmode == "round_prefer_ceil":
        xi = math.floor(xr) + (1 if frac >= 0.5 else 0)
    else:                                                   # round_prefer_floor (default)
        xi = math.floor(xr) + (1 if frac > 0.5 else 0)
    return min(max(xi, 0), length - 1)


def _is_replication(ctm: str, nmode: str, r: int) -> bool:
    """Whether nearest resize by integer ``r`` with these modes maps output x to input x // r
    (checked for input lengths 1..16; the mappings are affine, so that covers the pattern)."""
    return all(_nearest_index(ctm, nmode, xo, r, length) == xo // r
               for length in range(1, 17) for xo in range(length * r))


def _resize_scale(g: _Graph, up, name: str):
    attrs = _attrs(up)
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "nearest":
        raise TransformError(name, f"{up.op_type} mode {mode!r} is not exactly a deconvolution "
                                   "(only 'nearest' is)")
    ctm, nmode = "asymmetric", "floor"     # Upsample and Resize-10 semantics
    if up.op_type == "Upsample":
        scales = attrs.get("scales") if g.opset < 9 else g.const(up.input[1])
    elif g.opset < 11:
        scales = g.const(up.input[1])
    else:
        ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        nmode = attrs.get("nearest_mode", b"round_prefer_floor")
        nmode = nmode.decode() if isinstance(nmode, bytes) else nmode
        scales_name = up.input[2] if len(up.input) > 2 else ""
        sizes_name = up.input[3] if len(up.input) > 3 else ""
        scales = g.const(scales_name)
        if scales is not None and scales.size == 0:
            scales = None
        if scales is None and sizes_name:
            raise TransformError(name, "Resize to output sizes is not supported (needs constant "
                                       "integer scales)")
        axes = attrs.get("axes")
        if scales is not None and axes is not None:
            full = np.ones(4)
            for a, s in zip(axes, np.asarray(scales, dtype=np.float64)):
                full[a % 4] = s
            scales = full
    if scales is None:
        raise TransformError(name, f"{up.op_type} scales are not a constant")
    scales = np.asarray(scales, dtype=np.float64).ravel()
    if scales.size != 4:
        raise TransformError(name, f"{up.op_type} scales {scales.tolist()} are not 4-D (N, C, H, W)")
    if scales[0] != 1 or scales[1] != 1:
        raise TransformError(name, f"scales {scales.tolist()} resize the batch or channel axis")
    if scales[2] != scales[3]:
        raise TransformError(name, f"non-uniform scale {scales[2]:g} x {scales[3]:g} is not "
                                   "supported")
    s = scales[2]
    if not np.isfinite(s) or s < 1 or s != round(s):
        raise TransformError(name, f"non-integer scale {s:g} is not supported")
    r = int(s)
    if not _is_replication(ctm, nmode, r):
        raise TransformError(name, f"nearest resize with coordinate_transformation_mode {ctm!r} "
                                   f"and nearest_mode {nmode!r} is not pixel replication")
    return r


def _resize_matches(g: _Graph, used: set, matches: list, skipped: list):
    for conv in g.nodes:
        if not _is(conv, "Conv") or id(conv) in used:
            continue
        up = g.producer.get(conv.input[0])
        if not (_is(up, "Resize") or _is(up, "Upsample")):
            continue
        chain = [up, conv]
        names = tuple(map(_label, chain))
        pattern = f"{up.op_type}(nearest)+Conv"
        if g.sole_consumer(up.output[0]) is None:
            skipped.append(Skipped(pattern, names, "the resized tensor has another consumer or "
                                                   "is a graph output"))
            continue
        name = " + ".join(names)
        r = _resize_scale(g, up, name)
        weight, bias, pad = _conv_params(g, conv, name)
        deconv = resize_to_deconv(weight, bias, r=r, padding=pad, name=name)
        matches.append(_Match("resize", pattern, chain, up.input[0], conv.output[0], pad,
                              weight.shape[2], deconv, weight.dtype))
        used.update(id(n) for n in chain)


# Rewriting ------------------------------------------------------------------------------------

def _slice_hw(g: _Graph, shape_name: str, out: str, base: str, inits: list):
    """Nodes computing ``shape[2:4]`` (as int64) with the Slice form of the model's opset."""
    if g.opset < 10:
        return [helper.make_node("Slice", [shape_name], [out], name=g.unique(f"{base}_hw"),
                                 starts=[2], ends=[4], axes=[0])]
    starts, ends = g.unique(f"{base}_hw_starts"), g.unique(f"{base}_hw_ends")
    inits += [numpy_helper.from_array(np.array([2], np.int64), starts),
              numpy_helper.from_array(np.array([4], np.int64), ends)]
    return [helper.make_node("Slice", [shape_name, starts, ends], [out],
                             name=g.unique(f"{base}_hw"))]


def _replacement(g: _Graph, m: _Match):
    d = m.deconv
    base = _label(m.nodes[0]).replace("/", "_").strip("_") or "upsample"
    base = g.unique(f"{base}_deconv")
    inits, nodes = [], []
    w_name = g.unique(f"{base}_weight")
    inits.append(numpy_helper.from_array(np.asarray(d.weight, dtype=m.dtype), w_name))
    inputs = [m.x, w_name]
    periodic = d.bias_is_periodic
    has_bias = any(_is(n, "Conv") and len(n.input) > 2 and n.input[2] for n in m.nodes)
    if periodic:
        bias_kind = "periodic"
    elif has_bias:
        bias_kind = "per-channel"
        b_name = g.unique(f"{base}_bias")
        inits.append(numpy_helper.from_array(np.asarray(d.bias[:, 0, 0], dtype=m.dtype), b_name))
        inputs.append(b_name)
    else:
        bias_kind = "none"
    y = g.unique(f"{base}_out") if periodic else m.output
    nodes.append(helper.make_node(
        "ConvTranspose", inputs, [y], name=base, kernel_shape=[d.k, d.k],
        strides=[d.stride, d.stride], pads=[d.padding] * 4))
    if periodic:
        # H_out = r * H_conv: the (1, C, r, r) block tiled (H_out / r, W_out / r) times is exact.
        block = g.unique(f"{base}_bias_block")
        inits.append(numpy_helper.from_array(np.asarray(d.bias[None], dtype=m.dtype), block))
        shape, hw, reps_hw, reps, bmap = (g.unique(f"{base}_{s}") for s in
                                          ("shape", "hw", "reps_hw", "reps", "bias_map"))
        r_name, ones = g.unique(f"{base}_stride"), g.unique(f"{base}_ones")
        inits += [numpy_helper.from_array(np.array([d.stride], np.int64), r_name),
                  numpy_helper.from_array(np.array([1, 1], np.int64), ones)]
        nodes.append(helper.make_node("Shape", [y], [shape], name=g.unique(f"{base}_shape")))
        nodes += _slice_hw(g, shape, hw, base, inits)
        nodes.append(helper.make_node("Div", [hw, r_name], [reps_hw],
                                      name=g.unique(f"{base}_div")))
        nodes.append(helper.make_node("Concat", [ones, reps_hw], [reps], axis=0,
                                      name=g.unique(f"{base}_concat")))
        nodes.append(helper.make_node("Tile", [block, reps], [bmap],
                                      name=g.unique(f"{base}_tile")))
        nodes.append(helper.make_node("Add", [y, bmap], [m.output],
                                      name=g.unique(f"{base}_add_bias")))
    rewrite = Rewrite(
        kind=m.kind, pattern=m.pattern, nodes=tuple(map(_label, m.nodes)), output=m.output,
        c_in=d.c_in, c_out=d.c_out, k=m.k, k_d=d.k, stride=d.stride, padding=d.padding,
        conv_padding=m.conv_pad, bias=bias_kind, new_nodes=tuple(n.name for n in nodes))
    return nodes, inits, rewrite


def convert_model(model: onnx.ModelProto) -> ConvertResult:
    """Rewrite every sub-pixel and nearest-resize convolution of ``model`` (not modified) into
    ``ConvTranspose``. Returns the new model with what was rewritten and what was skipped.

    Raises
    ------
    TransformError
        for a candidate pattern that cannot be rewritten exactly (the message names the nodes
        and the reason), or an opset older than :data:`MIN_OPSET`.
    """
    model_out = onnx.ModelProto()
    model_out.CopyFrom(model)
    g = _Graph(model_out)
    used, matches, skipped = set(), [], []
    _subpixel_matches(g, used, matches, skipped)
    _resize_matches(g, used, matches, skipped)
    result = ConvertResult(model_out, [], skipped)
    if not matches:
        return result
    if g.opset < MIN_OPSET:
        raise TransformError("model", f"opset {g.opset} is older than the oldest supported "
                                      f"({MIN_OPSET})")

    first = {}
    removed = set()
    for m in sorted(matches, key=lambda m: min(g.index[id(n)] for n in m.nodes)):
        nodes, inits, rewrite = _replacement(g, m)
        first[min(g.index[id(n)] for n in m.nodes)] = nodes
        removed.update(id(n) for n in m.nodes)
        model_out.graph.initializer.extend(inits)
        result.rewrites.append(rewrite)
    new_nodes = []
    for i, node in enumerate(g.nodes):
        new_nodes.extend(first.get(i, []))
        if id(node) not in removed:
            new_nodes.append(node)
    # Tensors that only lived inside the replaced patterns.
    dead = {o for m in matches for n in m.nodes for o in n.output if o != m.output}
    del model_out.graph.node[:]
    model_out.graph.node.extend(new_nodes)
    _prune(model_out.graph, dead, {i for m in matches for n in m.nodes for i in n.input})
    return result


def _prune(graph, dead: set, candidates: set):
    """Drop initializers / Constant nodes among ``candidates`` that nothing uses any more, and
    ``value_info`` of ``dead`` tensors."""
    while True:
        in_use = _subgraph_inputs(graph, set()) | {o.name for o in graph.output}
        orphans = [n for n in graph.node if n.op_type == "Constant" and n.output[0] in candidates
                   and n.output[0] not in in_use]
        if not orphans:
            break
        for n in orphans:
            graph.node.remove(n)
            dead.add(n.output[0])
    in_use = _subgraph_inputs(graph, set()) | {o.name for o in graph.output}
    gone = {t.name for t in graph.initializer if t.name in candidates and t.name not in in_use}
    keep = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    keep_in = [i for i in graph.input if i.name not in gone]     # IR < 4 lists initializers
    del graph.input[:]
    graph.input.extend(keep_in)
    keep_vi = [v for v in graph.value_info if v.name not in dead and v.name not in gone]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
