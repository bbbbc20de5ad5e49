"""Rewrite the upsampling layers of an ONNX graph into deconvolutions (``ConvTranspose``).

Two families of patterns are found and replaced, using the exact kernel transforms of
:mod:`deconvsr.sw.model.transforms` (Colbert et al. 2021, §3-4):

* **sub-pixel convolution**: a ``Conv`` followed by any chain of layout operators that, taken
  together, is a pixel shuffle: ``DepthToSpace`` (``CRD`` or ``DCR``), the ``Reshape`` (6-D) ->
  ``Transpose`` -> ``Reshape`` of PyTorch's opset 9/10 export, its dynamic-shape form
  ``Unsqueeze``-``Reshape``-``Transpose``-``Reshape``-``Reshape``-``Squeeze``, hand-written
  ``view``/``permute`` shuffles with ``Shape``-computed targets, and tf2onnx's NHWC forms
  (``Transpose`` pairs around ``DepthToSpace``, or a 6-D NHWC shuffle). The chain is followed
  symbolically (:mod:`deconvsr.sw.model.onnx_shapes`): every ``Reshape`` target is evaluated
  and must regroup the conv output's ``(N, r^2 C, H, W)`` exactly, and the chain's end must be
  ``(N, C, r H, r W)`` (or ``(N, r H, r W, C)``, then a ``Transpose`` follows the replacement)
  with each output pixel taken from the channel a pixel shuffle takes it from; a channel order
  other than CRD is handled by reordering the conv's output channels. Becomes
  ``ConvTranspose(K_d = r K, S = r, P_d = r (K - 1 - P))``. When the ``r^2 C_out`` conv
  biases differ between phases, the periodic bias is added exactly and for any input size: the
  ``(1, C_out, r, r)`` bias block is ``Tile``\\ d ``(H_out / r, W_out / r)`` times (``H_out``
  read with ``Shape`` at run time; it is always a multiple of ``r`` here) and ``Add``\\ ed. A
  per-channel bias goes into ``ConvTranspose``'s ``B`` input.
* **nearest resize convolution**: ``Resize`` (``mode = nearest``) or the older ``Upsample``
  with equal integer scales on H and W, then (through ``Transpose``/``Identity`` only) a
  ``Conv``. The scale may be a constant, computed from ``Shape`` (``sizes = 2 * shape``,
  ``scales = sizes / shape``) or a static ``sizes``; it must be provably an integer. Becomes
  ``ConvTranspose(K_d = K + r - 1, S = r, P_d = K - 1 - P)`` with the per-channel bias in ``B``.
  The ``Resize`` coordinate mapping is checked to be exactly pixel replication.

Conv weights may be constants behind weight quantisers: ``DequantizeLinear`` (the QDQ form of
PyTorch, onnxruntime and Brevitas exports) and QONNX/FINN ``Quant`` are folded into float
weights.

Everything else is left as it is: other nodes, initializers still in use, graph inputs and
outputs (the replacement writes the pattern's original output tensor name), opset imports.
Nodes that only computed the shapes of a replaced pattern are removed with it. A pattern whose
intermediate tensor has another consumer (or is a graph output) is skipped and reported, not
rewritten; so is a chain whose shapes cannot be proven to be a pixel shuffle. A candidate that
cannot be rewritten exactly (bilinear resize, grouped / dilated / strided conv, non-integer or
non-uniform scale, non-square kernel, asymmetric padding, NaN/inf weights, non-constant
weights) raises :class:`~deconvsr.sw.model.transforms.TransformError` naming the node and the
reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_shapes import Poly, ShapeEval, const_of_node, shape_str
from .transforms import Deconv, TransformError, resize_to_deconv, subpixel_to_deconv

__all__ = ["Rewrite", "Skipped", "ConvertResult", "convert_model", "find_upsamplers", "MIN_OPSET",
           "QONNX_DOMAINS"]

#: Oldest default-domain opset handled (Upsample-7, Tile-6 with a repeats input, Div on int64).
MIN_OPSET = 7



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


#: Domains of the QONNX / FINN ``Quant`` operator.
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")


def _qonnx_quant(x, scale, zeropt, bits, a) -> np.ndarray:
    """QONNX ``Quant``: ``(clip(round(x / s + z), lo, hi) - z) * s`` (qonnx' reference)."""
    signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
    mode = a.get("rounding_mode", b"ROUND")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    bits = float(np.asarray(bits))
    if signed:
        lo, hi = -(2.0 ** (bits - 1)) + narrow, 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0 ** bits - 1 - narrow
    v = x / scale + zeropt
    rnd = {"ROUND": np.round, "ROUND_TO_ZERO": np.fix, "CEIL": np.ceil,
           "FLOOR": np.floor}.get(mode)
    if rnd is None:
        raise ValueError(f"rounding_mode {mode!r}")
    return ((np.clip(rnd(v), lo, hi) - zeropt) * scale).astype(np.asarray(x).dtype)


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
        self._consts = {}
        self.shapes = ShapeEval(model, self.producer, self.const)

    def sole_consumer(self, tensor):
        """The only consumer node of ``tensor``, or None (several, none, graph output, or
        used inside a subgraph)."""
        cons = self.consumers.get(tensor, [])
        if len(cons) != 1 or tensor in self.outputs or tensor in self.implicit:
            return None
        return cons[0]

    def const(self, name):
        """The value of a constant tensor, else None: an initializer, a ``Constant`` output, or
        a weight quantiser (``DequantizeLinear``, ``QuantizeLinear``, QONNX ``Quant``,
        ``Identity``, ``Cast``) applied to constants."""
        if not name:
            return None
        if name not in self._consts:
            self._consts[name] = None           # guards cycles in malformed graphs
            try:
                self._consts[name] = self._const(name)
            except (ValueError, TypeError, IndexError, KeyError):
                self._consts[name] = None
        return self._consts[name]

    def _const(self, name):
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None or name != node.output[0]:
            return None
        a = _attrs(node)
        if node.domain in QONNX_DOMAINS and node.op_type == "Quant":
            ins = [self.const(i) for i in node.input]
            if len(ins) != 4 or any(v is None for v in ins):
                return None
            return _qonnx_quant(*ins, a)
        if node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Constant":
            return const_of_node(node)
        ins = [self.const(i) if i else None for i in node.input]
        if not ins or ins[0] is None:
            return None
        if node.op_type == "Identity":
            return ins[0]
        if node.op_type == "Cast":
            return ins[0].astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
        if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            if len(ins) < 2 or ins[1] is None or (len(ins) > 2 and node.input[2]
                                                  and ins[2] is None):
                return None
            x, scale = ins[0], ins[1]
            zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), x.dtype
                                                                           if node.op_type ==
                                                                           "DequantizeLinear"
                                                                           else np.uint8)
            if a.get("block_size", 0):
                return None
            axis = a.get("axis", 1)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis % x.ndim] = scale.size
                scale, zp = scale.reshape(shape), np.asarray(zp).reshape(
                    shape if np.asarray(zp).size > 1 else ())
            if node.op_type == "DequantizeLinear":
                return ((x.astype(np.float64) - zp.astype(np.float64)) * scale).astype(
                    scale.dtype)
            info = np.iinfo(np.asarray(zp).dtype)
            q = np.rint(x.astype(np.float64) / scale) + np.asarray(zp, np.float64)
            return np.clip(q, info.min, info.max).astype(np.asarray(zp).dtype)
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
    if weight.dtype.kind != "f":
        raise TransformError(name, f"conv weight has element type {weight.dtype}, not float "
                                   "(an integer conv is not a float network)")
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
    in_perm: list = None   # Transpose applied to x before the ConvTranspose (None: none)
    out_perm: list = None  # Transpose applied after it (NHWC output)
    side: list = field(default_factory=list)   # shape-computing nodes removed with the pattern
    conv_weight: np.ndarray = None   # the conv as a sub-pixel (CRD order) / resize layer sees it
    conv_bias: np.ndarray = None
    r: int = 1


#: Operators that only move data (the pixel shuffle is made of them).
_LAYOUT_OPS = ("Reshape", "Transpose", "DepthToSpace", "Unsqueeze", "Squeeze", "Flatten",
               "Identity")


@dataclass(frozen=True, eq=False)
class _Atom:
    """A factor of a tensor's axes: ``n``, ``h``, ``w`` or a piece of the conv's channel axis
    (``c``) covering channel indices ``stride * (0..size-1)``."""

    kind: str
    size: Poly
    stride: int = 0


def _axis_size(axis) -> Poly:
    out = Poly.const(1)
    for atom in axis:
        out = out * atom.size
    return out


def _regroup(axes, dims):
    """The layout after a reshape of ``axes`` (lists of atoms, row-major) to ``dims``, or a
    reason string: every new dimension must be a run of whole atoms, a channel atom may be
    split where a dimension ends inside it."""
    flat = [a for axis in axes for a in axis]
    out, i = [], 0
    for d in dims:
        group, acc = [], Poly.const(1)
        while acc != d:
            if i >= len(flat):
                return f"cannot regroup into dimension {d}"
            a = flat[i]
            rest = d.div(acc)
            if rest is None:
                return f"dimension {d} is not a multiple of {acc}"
            q = rest.div(a.size)
            if q is not None and q.integral and not (q.is_const and q.value < 1):
                group.append(a)
                acc = acc * a.size
                i += 1
                continue
            # Split a channel atom: its outer part completes this dimension.
            rv, av = rest.int_value(), a.size.int_value()
            if a.kind != "c":
                return (f"dimension {d} does not match the conv output's {a.kind.upper()} "
                        f"({a.size})")
            if rv is None or av is None or rv < 1 or av % rv:
                return f"dimension {d} splits {a.size} channels unevenly"
            inner = av // rv
            outer_atom = _Atom("c", Poly.const(rv), a.stride * inner)
            flat[i] = _Atom("c", Poly.const(inner), a.stride)
            group.append(outer_atom)
            acc = acc * outer_atom.size
        out.append(group)
    if i != len(flat):
        return "the new shape does not hold every element"
    return out


def _shuffle_of(axes, k_total: int):
    """If ``axes`` is a pixel shuffle of the conv output: ``(layout, r, index)`` with layout
    ``"NCHW"`` or ``"NHWC"`` and ``index[c, y, x]`` the conv channel that output channel ``c``
    takes at phase ``(y, x)``; else None."""
    if len(axes) != 4:
        return None
    for layout, (n_ax, c_ax, h_ax, w_ax) in (("NCHW", (0, 1, 2, 3)), ("NHWC", (0, 3, 1, 2))):
        nn, cc, hh, ww = axes[n_ax], axes[c_ax], axes[h_ax], axes[w_ax]
        if any(a.kind != "n" for a in nn) or any(a.kind != "c" for a in cc):
            continue
        if len(hh) != 2 or len(ww) != 2 or hh[0].kind != "h" or ww[0].kind != "w":
            continue
        py, px = hh[1], ww[1]
        if py.kind != "c" or px.kind != "c" or py.size != px.size:
            continue
        r = py.size.int_value()
        if r is None or r < 2:
            continue
        idx = np.zeros((1,), np.int64)
        for a in cc:
            idx = (idx[:, None] + a.stride * np.arange(a.size.int_value())[None]).ravel()
        index = (idx[:, None, None] + py.stride * np.arange(r)[None, :, None]
                 + px.stride * np.arange(r)[None, None, :])
        if sorted(index.ravel().tolist()) != list(range(k_total)):
            continue
        return layout, r, index
    return None


def _mode_name(index) -> str:
    c, r = index.shape[0], index.shape[1]
    ii = np.arange(r)
    crd = (np.arange(c)[:, None, None] * r * r + ii[None, :, None] * r + ii[None, None, :])
    dcr = ((ii[None, :, None] * r + ii[None, None, :]) * c + np.arange(c)[:, None, None])
    if np.array_equal(index, crd):
        return "CRD"
    if np.array_equal(index, dcr):
        return "DCR"
    return "permuted"


def _side_nodes(g: _Graph, tensor, chain_ids: set):
    """Nodes besides the chain that read ``tensor``: allowed only if they are ``Shape`` nodes
    whose results feed nothing but shape inputs of the chain's nodes. Returns those nodes
    (with everything computed from them), or None."""
    side, seen = [], set()
    stack = [n for n in g.consumers.get(tensor, []) if id(n) not in chain_ids]
    if any(not _is(n, "Shape") for n in stack):
        return None
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        side.append(node)
        for o in node.output:
            if o in g.outputs or o in g.implicit:
                return None
            for c in g.consumers.get(o, []):
                if id(c) in chain_ids:
                    if c.input[0] == o:          # a data input of the chain: not a side use
                        return None
                else:
                    stack.append(c)
    return side


def _subpixel_chain(g: _Graph, conv, k_total: int):
    """Follow the layout operators after ``conv``. Returns ``(chain, layout, r, index,
    side)`` for the pattern's end, or ``(chain_so_far, reason)`` when it is not a shuffle
    (``chain_so_far`` empty: not a candidate at all)."""
    shape = g.shapes.shape(conv.output[0])
    chain, axes = [conv], None
    first = {}
    reason = "no step of the chain has a pixel shuffle's layout"
    if shape is not None and len(shape) == 4 and shape[1] == k_total:
        axes = []
        for kind, d in zip("nchw", shape):
            if kind == "c":
                axes.append([_Atom("c", d, 1)])
            else:
                axes.append([] if d == 1 else [_Atom(kind, d)])
    else:
        reason = (f"cannot determine the conv output's shape "
                  f"({'unknown' if shape is None else shape_str(shape)})")
    t = conv.output[0]
    while True:
        # Other readers of an intermediate tensor are checked at the end (_side_nodes): only
        # Shape nodes feeding this chain are allowed; anything else makes it a skip.
        layout = [c for c in g.consumers.get(t, []) if any(_is(c, op) for op in _LAYOUT_OPS)
                  and c.input[0] == t]
        if len(layout) != 1:
            break
        nxt = layout[0]
        chain.append(nxt)
        t = nxt.output[0]
        if axes is None:
            continue
        a = _attrs(nxt)
        if _is(nxt, "Transpose"):
            perm = list(a["perm"]) if "perm" in a else list(range(len(axes)))[::-1]
            if sorted(perm) != list(range(len(axes))):
                axes, reason = None, f"{_label(nxt)}: permutation {perm} of a {len(axes)}-D tensor"
                continue
            axes = [axes[p] for p in perm]
        elif _is(nxt, "DepthToSpace"):
            b = int(a["blocksize"])
            mode = a.get("mode", b"DCR")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if len(axes) != 4:
                axes, reason = None, f"{_label(nxt)}: input is not 4-D"
                continue
            n, c, h, w = (_axis_size(x) for x in axes)
            cb = c.floordiv(b * b)
            if cb is None:
                axes, reason = None, f"{_label(nxt)}: {c} channels are not a multiple of {b * b}"
                continue
            bb = Poly.const(b)
            if mode == "CRD":
                step = _regroup(axes, [n, cb, bb, bb, h, w])
                perm = [0, 1, 4, 2, 5, 3]
            else:
                step = _regroup(axes, [n, bb, bb, cb, h, w])
                perm = [0, 3, 4, 1, 5, 2]
            if isinstance(step, str):
                axes, reason = None, f"{_label(nxt)}: {step}"
                continue
            step = [step[p] for p in perm]
            axes = _regroup(step, [n, cb, h * b, w * b])
        else:
            dims = g.shapes.shape(t)
            if dims is None:
                axes, reason = None, f"{_label(nxt)}: cannot evaluate its output shape"
                continue
            axes = _regroup(axes, dims)
        if isinstance(axes, str):
            axes, reason = None, f"{_label(nxt)}: {axes}"
            continue
        found = _shuffle_of(axes, k_total)
        if found is not None and found[0] not in first:
            first[found[0]] = (len(chain), found)
    if len(chain) == 1:
        return [], None
    if not first:
        final = g.shapes.shape(chain[-1].output[0])
        return chain, (f"not a pixel shuffle ({reason}): output shape "
                       f"{shape_str(final) if final else 'unknown'} from conv output "
                       f"{shape_str(shape) if shape else 'unknown'}")
    end, (layout, r, index) = first.get("NCHW") or first["NHWC"]
    chain = chain[:end]
    ids = {id(n) for n in chain}
    side = []
    for n in chain[:-1]:
        extra = _side_nodes(g, n.output[0], ids)
        if extra is None or n.output[0] in g.outputs:
            return chain, ("an intermediate tensor has another consumer or is a graph output")
        side += extra
    return chain, layout, r, index, side


def _subpixel_matches(g: _Graph, used: set, matches: list, skipped: list):
    for conv in g.nodes:
        if not _is(conv, "Conv") or id(conv) in used:
            continue
        weight = g.const(conv.input[1]) if len(conv.input) > 1 else None
        k_total = int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None
        if k_total is None:
            wshape = g.shapes.shape(conv.input[1]) if len(conv.input) > 1 else None
            k_total = wshape[0].int_value() if wshape else None
        if k_total is None:
            continue
        found = _subpixel_chain(g, conv, k_total)
        chain = found[0]
        if not chain:
            continue
        names = tuple(map(_label, chain))
        ops = "+".join(n.op_type for n in chain)
        if len(found) == 2:
            # Only chains that shuffle (a DepthToSpace or a Transpose) are candidates.
            if any(_is(n, "DepthToSpace") or _is(n, "Transpose") for n in chain):
                skipped.append(Skipped(ops, names, found[1]))
            continue
        _, layout, r, index, side = found
        name = " + ".join(names)
        weight, bias, pad = _conv_params(g, conv, name)
        order = index.ravel()
        weight = weight[order]
        bias = None if bias is None else np.asarray(bias)[order]
        mode = _mode_name(index)
        pattern = f"{ops}({mode}{', NHWC' if layout == 'NHWC' else ''})"
        deconv = subpixel_to_deconv(weight, bias, r=r, padding=pad, mode="CRD", name=name)
        matches.append(_Match("subpixel", pattern, chain, conv.input[0], chain[-1].output[0],
                              pad, weight.shape[2], deconv, weight.dtype,
                              out_perm=[0, 2, 3, 1] if layout == "NHWC" else None, side=side,
                              conv_weight=weight, conv_bias=bias, r=r))
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


def _resize_scales(g: _Graph, up, name: str):
    """The per-axis integer scales of a nearest ``Resize``/``Upsample`` (proven), and its
    coordinate modes."""
    attrs = _attrs(up)
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "nearest":
        raise TransformError(name, f"{up.op_type} mode {mode!r} is not exactly a deconvolution "
                                   "(only 'nearest' is)")
    ctm, nmode = "asymmetric", "floor"     # Upsample and Resize-10 semantics
    if up.op_type == "Resize" and g.opset >= 11:
        ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        nmode = attrs.get("nearest_mode", b"round_prefer_floor")
        nmode = nmode.decode() if isinstance(nmode, bytes) else nmode
    factors = g.shapes.resize_factors(up)
    if factors is None:
        raise TransformError(name, f"{up.op_type} scales are not a constant nor computed from "
                                   "the input's shape")
    kind, vals = factors
    if kind == "sizes":
        x = g.shapes.shape(up.input[0])
        if x is None or len(x) != len(vals):
            raise TransformError(name, f"{up.op_type} to output sizes of an input whose shape "
                                       "is not known: cannot prove an integer scale")
        scales = []
        for d, s in zip(x, vals):
            q = s.div(d)
            if q is None or not q.is_const:
                raise TransformError(name, f"{up.op_type} output size {s} is not a constant "
                                           f"multiple of the input size {d}")
            scales.append(q)
    else:
        if not all(v.is_const for v in vals):
            raise TransformError(name, f"{up.op_type} scales {vals} are not constants")
        scales = vals
    scales = [float(s.value) for s in scales]
    if len(scales) != 4:
        raise TransformError(name, f"{up.op_type} scales {scales} are not 4-D (N, C, H, W)")
    return scales, ctm, nmode


def _check_resize(scales, ctm, nmode, name, op_type):
    if scales[0] != 1 or scales[1] != 1:
        raise TransformError(name, f"scales {scales} resize the batch or channel axis")
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
        # Back from the conv through Transposes / Identities to a Resize.
        between, t = [], conv.input[0]
        up = g.producer.get(t)
        while _is(up, "Transpose") or _is(up, "Identity"):
            between.append(up)
            up = g.producer.get(up.input[0])
        if not (_is(up, "Resize") or _is(up, "Upsample")):
            continue
        chain = [up] + between[::-1] + [conv]
        names = tuple(map(_label, chain))
        pattern = "+".join([f"{up.op_type}(nearest)"] + [n.op_type for n in chain[1:]])
        if any(g.sole_consumer(n.output[0]) is None for n in chain[:-1]):
            skipped.append(Skipped(pattern, names, "the resized tensor has another consumer or "
                                                   "is a graph output"))
            continue
        name = " + ".join(names)
        scales, ctm, nmode = _resize_scales(g, up, name)
        perm = list(range(4))
        for n in chain[1:-1]:
            if _is(n, "Transpose"):
                p = list(_attrs(n).get("perm", [3, 2, 1, 0]))
                if sorted(p) != [0, 1, 2, 3]:
                    raise TransformError(name, f"{_label(n)}: permutation {p} of a 4-D tensor")
                perm = [perm[i] for i in p]
        r = _check_resize([scales[p] for p in perm], ctm, nmode, name, up.op_type)
        weight, bias, pad = _conv_params(g, conv, name)
        deconv = resize_to_deconv(weight, bias, r=r, padding=pad, name=name)
        matches.append(_Match("resize", pattern, chain, up.input[0], conv.output[0], pad,
                              weight.shape[2], deconv, weight.dtype,
                              in_perm=None if perm == [0, 1, 2, 3] else perm,
                              conv_weight=weight, conv_bias=bias, r=r))
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
    x = m.x
    if m.in_perm is not None:
        x = g.unique(f"{base}_in")
        nodes.append(helper.make_node("Transpose", [m.x], [x], name=g.unique(f"{base}_to_nchw"),
                                      perm=list(m.in_perm)))
    w_name = g.unique(f"{base}_weight")
    inits.append(numpy_helper.from_array(np.asarray(d.weight, dtype=m.dtype), w_name))
    inputs = [x, w_name]
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
    final = g.unique(f"{base}_nchw") if m.out_perm is not None else m.output
    y = g.unique(f"{base}_out") if periodic else final
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
        nodes.append(helper.make_node("Add", [y, bmap], [final],
                                      name=g.unique(f"{base}_add_bias")))
    if m.out_perm is not None:
        nodes.append(helper.make_node("Transpose", [final], [m.output],
                                      name=g.unique(f"{base}_to_nhwc"), perm=list(m.out_perm)))
    rewrite = Rewrite(
        kind=m.kind, pattern=m.pattern, nodes=tuple(map(_label, m.nodes)), output=m.output,
        c_in=d.c_in, c_out=d.c_out, k=m.k, k_d=d.k, stride=d.stride, padding=d.padding,
        conv_padding=m.conv_pad, bias=bias_kind, new_nodes=tuple(n.name for n in nodes))
    return nodes, inits, rewrite


def find_upsamplers(model: onnx.ModelProto):
    """The upsampling patterns of ``model`` (not modified): ``(matches, skipped)``.

    Raises
    ------
    TransformError
        as :func:`convert_model`.
    """
    g = _Graph(model)
    used, matches, skipped = set(), [], []
    _subpixel_matches(g, used, matches, skipped)
    _resize_matches(g, used, matches, skipped)
    return g, matches, skipped


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
    g, matches, skipped = find_upsamplers(model_out)
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
        removed.update(id(n) for n in m.nodes + m.side)
        model_out.graph.initializer.extend(inits)
        result.rewrites.append(rewrite)
    new_nodes = []
    for i, node in enumerate(g.nodes):
        new_nodes.extend(first.get(i, []))
        if id(node) not in removed:
            new_nodes.append(node)
    # Tensors that only lived inside the replaced patterns.
    dead = {o for m in matches for n in m.nodes + m.side for o in n.output if o != m.output}
    del model_out.graph.node[:]
    model_out.graph.node.extend(new_nodes)
    _prune(model_out.graph, dead, {i for m in matches for n in m.nodes + m.side
                                   for i in n.input})
    return result


def _prune(graph, dead: set, candidates: set):
    """Drop the nodes that computed only inputs of the replaced patterns (shape arithmetic,
    ``Constant``, weight quantisers) and nothing else any more, initializers among
    ``candidates`` that nothing uses, and ``value_info`` of ``dead`` tensors."""
    candidates = set(candidates)
    while True:
        in_use = _subgraph_inputs(graph, set()) | {o.name for o in graph.output}
        orphans = [n for n in graph.node
                   if any(o in candidates for o in n.output)
                   and not any(o in in_use for o in n.output if o)]
        if not orphans:
            break
        for n in orphans:
            graph.node.remove(n)
            dead.update(o for o in n.output if o)
            candidates.update(i for i in n.input if i)
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
