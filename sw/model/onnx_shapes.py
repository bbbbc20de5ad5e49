"""Symbolic shapes and shape arithmetic of an ONNX graph, so a pattern matcher can *prove* the
shapes it relies on instead of assuming them.

Exporters write the shapes of a pixel shuffle or a resize in many ways: constants (static
export), ``Shape``-``Gather``-``Mul``-``Concat`` arithmetic on the tensor itself (dynamic
export), ``0``/``-1`` entries in a ``Reshape`` target, ``Unsqueeze``/``Squeeze`` around the
shuffle. :class:`ShapeEval` evaluates all of them in one algebra:

* every dimension is a :class:`Poly`, a polynomial with rational coefficients in symbols (the
  graph input's named or unknown dimensions, e.g. ``N``, ``H``, ``W``); a static dimension is a
  constant polynomial;
* tensor shapes are propagated from the graph inputs through the operators a super-resolution
  graph uses (``Conv`` with any padding and stride 1, activations, ``Reshape``, ``Transpose``,
  ``DepthToSpace``, ``Resize``, ...). Where an operator is not known, the shape that
  ``onnx.shape_inference`` gives is used, with a fresh symbol for every dimension it does not
  know (sound, only less useful: nothing equals a fresh symbol but itself);
* small integer and float tensors (shape vectors, scales) are evaluated as arrays of
  :class:`Poly`: ``Shape``, ``Gather``, ``Slice``, ``Concat``, ``Unsqueeze``, ``Squeeze``,
  ``Reshape``, ``Cast``, ``Add``/``Sub``/``Mul``/``Div``, ``Floor``/``Ceil``, constants.

A result that cannot be proven is ``None``, never a guess: integer division is kept only where
it is exact for every value of the symbols (``(2 H) / H = 2``; ``H / 2`` is unknown).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx     # heavy (about 1 s): imported with the converter only
from onnx import helper, numpy_helper

__all__ = ["Poly", "ShapeEval", "attrs", "is_op", "ELEMENTWISE_UNARY"]

#: Operators whose output has the shape of their first input.
ELEMENTWISE_UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Elu",
    "Selu", "Softplus", "Identity", "Dropout", "Cast", "Neg", "Abs", "Exp", "Sqrt", "Erf",
    "Gelu", "Mish", "Round", "Floor", "Ceil", "QuantizeLinear", "DequantizeLinear",
    "BatchNormalization", "InstanceNormalization", "LpNormalization", "Quant", "BipolarQuant",
    "Trunc", "IntQuant"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"})
_MAX_VALUE = 64      # larger constant tensors are weights, not shape arithmetic


def attrs(node) -> dict:
    """Attributes of ``node``, strings decoded."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def is_op(node, *op_types) -> bool:
    """Whether ``node`` is one of ``op_types`` in the default domain."""
    return node is not None and node.op_type in op_types and node.domain in ("", "ai.onnx")


class Poly:
    """A polynomial with :class:`~fractions.Fraction` coefficients in named symbols.

    ``terms`` maps a monomial (sorted tuple of ``(symbol, power)``) to its coefficient; the
    empty tuple is the constant term. Immutable and hashable.
    """

    __slots__ = ("terms",)

    def __init__(self, terms=None):
        self.terms = {m: Fraction(c) for m, c in (terms or {}).items() if c != 0}

    @classmethod
    def const(cls, value) -> "Poly":
        return cls({(): Fraction(value)})

    @classmethod
    def sym(cls, name: str) -> "Poly":
        return cls({((name, 1),): Fraction(1)})

    # Queries ---------------------------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    @property
    def value(self) -> Fraction:
        """The constant's value (raises ``ValueError`` for a non-constant)."""
        if not self.is_const:
            raise ValueError(f"{self} is not a constant")
        return self.terms.get((), Fraction(0))

    @property
    def integral(self) -> bool:
        """Integer-valued for every integer value of the symbols (integer coefficients)."""
        return all(c.denominator == 1 for c in self.terms.values())

    def int_value(self):
        """The value as an ``int`` if constant and integral, else ``None``."""
        if self.is_const and self.value.denominator == 1:
            return int(self.value)
        return None

    # Arithmetic ------------------------------------------------------------------------------
    @staticmethod
    def _of(x) -> "Poly":
        return x if isinstance(x, Poly) else Poly.const(x)

    def __add__(self, other):
        other = Poly._of(other)
        t = dict(self.terms)
        for m, c in other.terms.items():
            t[m] = t.get(m, 0) + c
        return Poly(t)

    __radd__ = __add__

    def __neg__(self):
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other):
        return self + (-Poly._of(other))

    def __rsub__(self, other):
        return Poly._of(other) - self

    def __mul__(self, other):
        other = Poly._of(other)
        t = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                powers = dict(m1)
                for s, p in m2:
                    powers[s] = powers.get(s, 0) + p
                m = tuple(sorted(powers.items()))
                t[m] = t.get(m, 0) + c1 * c2
        return Poly(t)

    __rmul__ = __mul__

    def div(self, other):
        """``self / other`` when it is a polynomial (exact rational division), else ``None``."""
        other = Poly._of(other)
        if not other.terms:
            return None
        if other.is_const:
            return Poly({m: c / other.value for m, c in self.terms.items()})
        if len(other.terms) == 1:                       # a monomial: subtract powers
            (om, oc), = other.terms.items()
            t = {}
            for m, c in self.terms.items():
                powers = dict(m)
                for s, p in om:
                    if powers.get(s, 0) < p:
                        return None
                    powers[s] -= p
                t[tuple(sorted((s, p) for s, p in powers.items() if p))] = c / oc
            return Poly(t)
        # A constant multiple of a polynomial: (2 H + 4) / (H + 2) = 2.
        m0 = next(iter(other.terms))
        k = self.terms.get(m0, Fraction(0)) / other.terms[m0]
        return Poly.const(k) if self == other * k else None

    def floordiv(self, other):
        """Integer division that is exact for every symbol value, else ``None`` (for constants:
        floor division)."""
        other = Poly._of(other)
        if self.is_const and other.is_const and other.value != 0:
            return Poly.const(self.value // other.value)
        q = self.div(other)
        return q if q is not None and q.integral else None

    def __eq__(self, other):
        if isinstance(other, (int, Fraction, np.integer)):
            other = Poly.const(other)
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self):
        return hash(frozenset(self.terms.items()))

    def __repr__(self):
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            sym = "*".join(s if p == 1 else f"{s}^{p}" for s, p in m)
            if not sym:
                parts.append(str(c))
            elif c == 1:
                parts.append(sym)
            else:
                parts.append(f"{c}*{sym}")
        return " + ".join(parts)


def shape_str(shape) -> str:
    """``(N, 9, H, W)`` for a list of :class:`Poly`."""
    return "(" + ", ".join(map(str, shape)) + ")"


def _prod(items) -> Poly:
    out = Poly.const(1)
    for x in items:
        out = out * x
    return out


class ShapeEval:
    """Shapes and small values of the tensors of ``model`` (see the module docstring).

    ``const(name)`` gives a constant tensor as a NumPy array (initializers, ``Constant`` and
    the constant folding of weight quantisers), ``shape(name)`` a list of :class:`Poly` or
    ``None``, ``value(name)`` an object array of :class:`Poly` or ``None``.
    """

    def __init__(self, model: onnx.ModelProto, producer: dict, const_fn):
        self.graph = model.graph
        self.producer = producer
        self.const = const_fn
        self._shapes: dict = {}
        self._values: dict = {}
        self._busy: set = set()
        self._inferred = None
        self._model = model
        self.input_shapes = {}
        inits = {t.name for t in self.graph.initializer}
        for vi in self.graph.input:
            if vi.name not in inits:
                self.input_shapes[vi.name] = self._dims(vi, vi.name)

    # Fallbacks --------------------------------------------------------------------------------
    @staticmethod
    def _dims(vi, name):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return None
        dims = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(Poly.const(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(Poly.sym(d.dim_param))
            else:
                dims.append(Poly.sym(f"{name}[{i}]"))
        return dims

    def _inferred_shape(self, name):
        if self._inferred is None:
            try:
                m = onnx.shape_inference.infer_shapes(self._model, strict_mode=False)
                infos = list(m.graph.value_info) + list(m.graph.output)
            except Exception:       # shape inference is only a fallback: any failure = unknown
                infos = []
            self._inferred = {vi.name: vi for vi in infos}
        vi = self._inferred.get(name)
        return None if vi is None else self._dims(vi, name)

    # Shapes -----------------------------------------------------------------------------------
    def shape(self, name):
        """The shape of tensor ``name`` as a list of :class:`Poly`, or ``None``."""
        if name in self._shapes:
            return self._shapes[name]
        if name in self._busy:
            return None
        self._busy.add(name)
        try:
            s = self._shape(name)
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError):
            s = None
        self._busy.discard(name)
        if s is None:
            s = self._inferred_shape(name)
        self._shapes[name] = s
        return s

    def _shape(self, name):
        if name in self.input_shapes:
            return self.input_shapes[name]
        c = self.const(name)
        if c is not None:
            return [Poly.const(d) for d in c.shape]
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") and node.op_type not in (
                "Quant", "BipolarQuant", "IntQuant"):
            return None
        op, a = node.op_type, attrs(node)
        if op in ELEMENTWISE_UNARY:
            if op == "Dropout" and name != node.output[0]:
                return None
            return self.shape(node.input[0])
        if op in _BINARY:
            return self._broadcast([self.shape(i) for i in node.input])
        x = self.shape(node.input[0])
        if x is None:
            return None
        if op == "Conv":
            return self._conv(node, a, x)
        if op == "ConvTranspose":
            return self._conv_transpose(node, a, x)
        if op == "DepthToSpace":
            b = a["blocksize"]
            return [x[0], x[1].floordiv(b * b), x[2] * b, x[3] * b]
        if op == "SpaceToDepth":
            b = a["blocksize"]
            return [x[0], x[1] * (b * b), x[2].floordiv(b), x[3].floordiv(b)]
        if op == "Transpose":
            perm = a.get("perm", list(range(len(x)))[::-1])
            return [x[p] for p in perm]
        if op == "Reshape":
            return self._reshape(node, a, x)
        if op in ("Unsqueeze", "Squeeze"):
            axes = self._axes(node, a)
            if op == "Unsqueeze":
                if axes is None:
                    return None
                out = list(x)
                rank = len(x) + len(axes)
                for ax in sorted(ax % rank for ax in axes):
                    out.insert(ax, Poly.const(1))
                return out
            if axes is None:
                if not all(d.is_const for d in x):
                    return None
                return [d for d in x if d != 1]
            axes = {ax % len(x) for ax in axes}
            if any(x[ax] != 1 for ax in axes):
                return None
            return [d for i, d in enumerate(x) if i not in axes]
        if op == "Flatten":
            axis = a.get("axis", 1) % (len(x) + 1)
            return [_prod(x[:axis]), _prod(x[axis:])]
        if op in ("Resize", "Upsample"):
            return self._resize(node, a, x)
        if op == "Concat":
            parts = [self.shape(i) for i in node.input]
            if any(p is None or len(p) != len(x) for p in parts):
                return None
            axis = a["axis"] % len(x)
            out = list(x)
            out[axis] = sum((p[axis] for p in parts), Poly.const(0))
            return out
        if op == "Shape":
            return [Poly.const(len(x))]
        return None

    @staticmethod
    def _broadcast(shapes):
        if any(s is None for s in shapes):
            return None
        rank = max(len(s) for s in shapes)
        out = []
        for i in range(rank):
            dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0}
            dims.discard(Poly.const(1))
            if len(dims) > 1:
                return None
            out.append(dims.pop() if dims else Poly.const(1))
        return out

    def _conv(self, node, a, x):
        w = self.const(node.input[1]) if len(node.input) > 1 else None
        wshape = self.shape(node.input[1])
        if wshape is None or len(wshape) != len(x):
            return None
        k = [d.int_value() for d in wshape[2:]]
        if any(v is None for v in k):
            return None
        n = len(k)
        strides = a.get("strides", [1] * n)
        dil = a.get("dilations", [1] * n)
        pads = a.get("pads", [0] * 2 * n)
        auto = a.get("auto_pad", "NOTSET")
        out = [x[0], wshape[0] if w is None else Poly.const(w.shape[0])]
        for i in range(n):
            ext = dil[i] * (k[i] - 1) + 1
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                o = x[2 + i].floordiv(strides[i]) if strides[i] == 1 else None
            elif auto == "VALID":
                o = (x[2 + i] - ext).floordiv(strides[i])
                o = None if o is None else o + 1
            else:
                o = (x[2 + i] + pads[i] + pads[i + n] - ext).floordiv(strides[i])
                o = None if o is None else o + 1
            if o is None:
                return None
            out.append(o)
        return out

    def _conv_transpose(self, node, a, x):
        wshape = self.shape(node.input[1])
        if wshape is None or len(wshape) != len(x):
            return None
        k = [d.int_value() for d in wshape[2:]]
        n = len(k)
        if "output_shape" in a or any(v is None for v in k):
            return None
        s = a.get("strides", [1] * n)
        dil = a.get("dilations", [1] * n)
        pads = a.get("pads", [0] * 2 * n)
        op = a.get("output_padding", [0] * n)
        if a.get("auto_pad", "NOTSET") != "NOTSET":
            return None
        out = [x[0], wshape[1] * a.get("group", 1)]
        for i in range(n):
            out.append(x[2 + i] * s[i] - s[i] + op[i] + dil[i] * (k[i] - 1) + 1
                       - pads[i] - pads[i + n])
        return out

    def _reshape(self, node, a, x):
        target = self.value(node.input[1])
        if target is None or target.ndim != 1:
            return None
        allowzero = a.get("allowzero", 0)
        out, infer = [], None
        for i, d in enumerate(target):
            v = d.int_value() if d.is_const else None
            if v == 0 and not allowzero:
                if i >= len(x):
                    return None
                out.append(x[i])
            elif v == -1:
                if infer is not None:
                    return None
                infer = i
                out.append(None)
            elif d.is_const and (v is None or v < 0):
                return None
            else:
                out.append(d)
        if infer is not None:
            rest = _prod(d for d in out if d is not None)
            q = _prod(x).floordiv(rest)
            if q is None:
                return None
            out[infer] = q
        return out

    def _axes(self, node, a):
        if "axes" in a:
            return list(a["axes"])
        if len(node.input) > 1 and node.input[1]:
            v = self.value(node.input[1])
            if v is None:
                return None
            vals = [d.int_value() for d in np.ravel(v)]
            return None if any(d is None for d in vals) else vals
        return None

    def _resize(self, node, a, x):
        factors = self.resize_factors(node)
        if factors is None:
            return None
        kind, f = factors
        if kind == "sizes":
            return list(f)
        out = []
        for d, s in zip(x, f):
            o = d * s
            if not o.integral:
                return None
            out.append(o)
        return out

    def resize_factors(self, node):
        """``("scales", [Poly])`` or ``("sizes", [Poly])`` of a ``Resize``/``Upsample`` (a full
        list, one per axis of the input), or ``None`` if not evaluable."""
        a = attrs(node)
        opset_scales_attr = node.op_type == "Upsample" and "scales" in a
        x = self.shape(node.input[0]) if node.input else None
        if opset_scales_attr:
            return "scales", [Poly.const(s) for s in a["scales"]]
        if node.op_type == "Upsample" or len(node.input) == 2:     # Upsample, Resize-10
            v = self.value(node.input[1]) if len(node.input) > 1 else None
            return None if v is None else ("scales", list(np.ravel(v)))
        scales = self.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = self.value(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if scales is not None and scales.size == 0:
            scales = None
        if sizes is not None and sizes.size == 0:
            sizes = None
        kind, vals = ("scales", scales) if scales is not None else ("sizes", sizes)
        if vals is None:
            return None
        vals = list(np.ravel(vals))
        axes = a.get("axes")
        if axes is not None:
            if x is None:
                return None
            full = [Poly.const(1) if kind == "scales" else d for d in x]
            for ax, v in zip(axes, vals):
                full[ax % len(x)] = v
            vals = full
        return kind, vals

    # Values -----------------------------------------------------------------------------------
    def value(self, name):
        """An object array (0-D or 1-D) of :class:`Poly` for a small shape/scale tensor."""
        if not name:
            return None
        if name in self._values:
            return self._values[name]
        if name in self._busy:
            return None
        self._busy.add(name)
        try:
            v = self._value(name)
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError):
            v = None
        self._busy.discard(name)
        if v is not None and (v.ndim > 1 or v.size > _MAX_VALUE):
            v = None
        self._values[name] = v
        return v

    @staticmethod
    def _wrap(arr):
        arr = np.asarray(arr)
        if arr.size > _MAX_VALUE or arr.dtype.kind not in "iufb":
            return None
        out = np.empty(arr.shape, dtype=object)
        for idx, v in np.ndenumerate(arr):
            if arr.dtype.kind == "f" and not np.isfinite(v):
                return None
            out[idx] = Poly.const(Fraction(float(v)) if arr.dtype.kind == "f" else int(v))
        return out

    def _value(self, name):
        c = self.const(name)
        if c is not None:
            return self._wrap(c)
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        op, a = node.op_type, attrs(node)
        if op == "Shape":
            s = self.shape(node.input[0])
            if s is None:
                return None
            start, end = a.get("start", 0), a.get("end", len(s))
            out = np.empty(len(s[start:end]), dtype=object)
            out[:] = s[start:end]
            return out
        if op == "Identity":
            return self.value(node.input[0])
        v = self.value(node.input[0])
        if v is None:
            return None
        if op == "Cast":
            to = a["to"]
            floaty = to in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                            onnx.TensorProto.FLOAT16)
            if floaty:
                return v
            if all(p.integral for p in v.flat):
                return v
            if all(p.is_const for p in v.flat):     # float -> int truncates
                return _map(v, lambda p: Poly.const(int(p.value)))
            return None
        if op in ("Floor", "Ceil"):
            if all(p.integral for p in v.flat):
                return v
            if all(p.is_const for p in v.flat):
                import math
                fn = math.floor if op == "Floor" else math.ceil
                return _map(v, lambda p: Poly.const(fn(p.value)))
            return None
        if op == "Gather":
            idx = self.value(node.input[1])
            if idx is None or a.get("axis", 0) != 0 or v.ndim != 1:
                return None
            ii = [p.int_value() for p in np.ravel(idx)]
            if any(i is None for i in ii):
                return None
            picked = [v[i] for i in ii]
            out = np.empty(np.shape(idx), dtype=object)
            if out.ndim == 0:
                out[()] = picked[0]
            else:
                out[:] = picked
            return out
        if op == "Slice":
            if v.ndim != 1:
                return None
            if "starts" in a:                        # Slice-1
                starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes", [0]), [1]
            else:
                parts = [self.value(i) if i else None for i in
                         list(node.input[1:]) + [""] * (5 - len(node.input))]
                if parts[0] is None or parts[1] is None:
                    return None
                conv = [None if p is None else [q.int_value() for q in np.ravel(p)]
                        for p in parts[:4]]
                if any(c is not None and None in c for c in conv):
                    return None
                starts, ends = conv[0], conv[1]
                axes = conv[2] or [0]
                steps = conv[3] or [1]
            if list(axes) not in ([0], [-1]) or len(starts) != 1:
                return None
            return v[slice(starts[0], ends[0], steps[0])]
        if op == "Concat":
            parts = [self.value(i) for i in node.input]
            if any(p is None for p in parts):
                return None
            return np.concatenate([np.atleast_1d(p) for p in parts])
        if op == "Unsqueeze":
            return np.atleast_1d(v) if v.ndim == 0 else None
        if op == "Squeeze":
            return v.reshape(()) if v.size == 1 else None
        if op == "Reshape":
            shape = self.value(node.input[1])
            if shape is None:
                return None
            dims = [p.int_value() for p in np.ravel(shape)]
            if any(d is None for d in dims):
                return None
            return v.reshape([d if d != 0 else v.shape[i] for i, d in enumerate(dims)])
        if op in ("Add", "Sub", "Mul", "Div"):
            w = self.value(node.input[1])
            if w is None:
                return None
            if op == "Div":
                integer = self._is_int(node.input[0])
                fn = (lambda p, q: p.floordiv(q)) if integer else (lambda p, q: p.div(q))
            else:
                fn = {"Add": lambda p, q: p + q, "Sub": lambda p, q: p - q,
                      "Mul": lambda p, q: p * q}[op]
            out = np.frompyfunc(fn, 2, 1)(v, w)
            out = np.asarray(out, dtype=object)
            if any(p is None for p in out.flat):
                return None
            return out
        return None

    def _is_int(self, name) -> bool:
        """Whether tensor ``name`` has an integer element type (shape arithmetic is int64)."""
        c = self.const(name)
        if c is not None:
            return c.dtype.kind in "iu"
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Shape":
            return True
        if node.op_type == "Cast":
            return attrs(node)["to"] in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
        if node.op_type in ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape",
                            "Identity", "Add", "Sub", "Mul", "Div"):
            return self._is_int(node.input[0])
        return False


def _map(arr, fn):
    out = np.empty(arr.shape, dtype=object)
    for idx, p in np.ndenumerate(arr):
        out[idx] = fn(p)
    return out


def const_of_node(node):
    """The value of a ``Constant`` node as a NumPy array, or ``None``."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_int", "value_float", "value_ints", "value_floats"):
            return np.array(helper.get_attribute_value(a))
    return None
