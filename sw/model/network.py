"""The float network description: what a trained super-resolution network is, before and after
the kernel transforms.

A :class:`Network` is a sequence of :class:`Layer`; each is one of

* ``conv``: a stride-1 convolution, square ``K``, ``padding`` P, optional ReLU;
* ``subpixel``: a convolution with ``r^2 C_out`` outputs followed by a pixel shuffle ``r``
  (``CRD`` as PyTorch's ``PixelShuffle``, or ``DCR``);
* ``resize``: a nearest-neighbour upsample ``r`` followed by a convolution.

Weights are in ``Conv2d`` layout ``(C_out, C_in, K, K)`` (for ``subpixel``: ``r^2 C_out``
outputs), biases ``(C_out,)``, float64.

Supported networks (:meth:`Network.validate`): one input channel (the Y plane in ``[0, 1]``),
"same" convolutions (odd ``K``, ``P = (K - 1) / 2``), a ReLU after every hidden layer, only the
last layer upsamples and it has no activation (its output is an image, clamped to ``[0, 1]``).
Anything else raises :class:`NetworkError` naming the layer.

:meth:`Network.to_deconv` gives the transformed network: every layer a
:class:`~deconvsr.sw.model.transforms.Deconv` (a conv becomes a stride-1 deconvolution with the
rotated, channel-transposed kernel ``W_d = W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)``,
``P_d = K - 1 - P``; the last layer goes through the weight shuffle or the weight convolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..golden.reference import conv2d, deconv2d, nearest_upsample, pixel_shuffle
from .transforms import Deconv, TransformError, resize_to_deconv, subpixel_to_deconv

__all__ = ["NetworkError", "Layer", "Network", "DeconvLayer", "DeconvNetwork", "KINDS", "ARCHS",
           "ACTS", "activate", "arch_layers"]

KINDS = ("conv", "subpixel", "resize")
#: Activations a layer may have (the float model computes each; the engine runs ``relu`` only
#: for now, see :meth:`Network.engine_check`): name -> name as printed.
ACTS = {"none": "none", "relu": "ReLU", "leakyrelu": "LeakyReLU", "prelu": "PReLU",
        "tanh": "Tanh", "sigmoid": "Sigmoid", "clip": "Clip"}


def activate(y: np.ndarray, act: str, param=None) -> np.ndarray:
    """``y`` ``(C, H, W)`` through activation ``act`` (see :data:`ACTS`)."""
    if act == "none":
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "leakyrelu":
        return np.where(y >= 0, y, y * float(param))
    if act == "prelu":
        slope = np.asarray(param, np.float64).reshape(-1, 1, 1)
        return np.where(y >= 0, y, y * slope)
    if act == "tanh":
        return np.tanh(y)
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if act == "clip":
        return np.clip(y, param[0], param[1])
    raise ValueError(f"unknown activation {act!r}")


class NetworkError(ValueError):
    """A network that is malformed or outside the supported family; the message names the
    layer."""


@dataclass(frozen=True, eq=False)
class Layer:
    """One float layer. See the module docstring for ``kind``."""

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    padding: int
    relu: bool
    r: int = 1
    mode: str = "CRD"
    name: str = "layer"
    #: activation (a key of :data:`ACTS`); empty: ``relu`` if ``relu`` else ``none``
    act: str = ""
    #: its parameters: LeakyReLU slope (scalar), PReLU slopes (one per output channel, or
    #: one), Clip bounds (lo, hi); None for the others
    act_param: object = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise NetworkError(f"{self.name}: kind must be one of {', '.join(KINDS)}, "
                               f"not {self.kind!r}")
        w = np.asarray(self.weight, dtype=np.float64)
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise NetworkError(f"{self.name}: weight must have shape (C_out, C_in, K, K), "
                               f"not {w.shape}")
        b = np.zeros(w.shape[0]) if self.bias is None else np.asarray(self.bias, np.float64)
        if b.shape != (w.shape[0],):
            raise NetworkError(f"{self.name}: bias must have shape ({w.shape[0]},), "
                               f"not {b.shape}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise NetworkError(f"{self.name}: weights contain NaN or infinity")
        for f, lo in (("padding", 0), ("r", 1)):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise NetworkError(f"{self.name}: {f} must be an integer >= {lo}, not {v!r}")
        if self.kind == "conv" and self.r != 1:
            raise NetworkError(f"{self.name}: a conv layer has r = 1, not {self.r}")
        if self.kind == "subpixel":
            if self.mode not in ("CRD", "DCR"):
                raise NetworkError(f"{self.name}: pixel shuffle mode must be 'CRD' or 'DCR', "
                                   f"not {self.mode!r}")
            if w.shape[0] % (self.r * self.r):
                raise NetworkError(f"{self.name}: {w.shape[0]} output channels are not a "
                                   f"multiple of r^2 = {self.r ** 2}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "padding", int(self.padding))
        object.__setattr__(self, "r", int(self.r))
        act = (self.act or ("relu" if self.relu else "none")).lower()
        if act not in ACTS:
            raise NetworkError(f"{self.name}: activation must be one of {', '.join(ACTS)}, "
                               f"not {self.act!r}")
        param = None
        if act in ("leakyrelu", "prelu", "clip"):
            if self.act_param is None and act != "leakyrelu":
                raise NetworkError(f"{self.name}: {ACTS[act]} needs its parameters")
            param = np.asarray(0.01 if self.act_param is None else self.act_param, np.float64)
            want = {"leakyrelu": ((), (1,)), "clip": ((2,),),
                    "prelu": ((), (1,), (self.c_out,))}[act]
            if param.shape not in want or not np.all(np.isfinite(param)):
                raise NetworkError(f"{self.name}: {ACTS[act]} parameters must have shape "
                                   f"{' or '.join(map(str, want))}, not {param.shape}")
            param = param.reshape(-1) if act == "prelu" else param
        object.__setattr__(self, "act", act)
        object.__setattr__(self, "act_param", param)
        object.__setattr__(self, "relu", act == "relu")

    @property
    def k(self) -> int:
        return self.weight.shape[2]

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def c_out(self) -> int:
        """Channels after the layer (after the pixel shuffle)."""
        return self.weight.shape[0] // (self.r * self.r if self.kind == "subpixel" else 1)

    @property
    def macs_per_lr_pixel(self) -> int:
        """Multiply-accumulates per low-resolution input pixel, as trained (before transform)."""
        per = self.weight.shape[0] * self.c_in * self.k * self.k
        return per * (self.r * self.r if self.kind == "resize" else 1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float forward pass of this layer, ``(C_in, H, W)`` -> ``(C_out, H', W')``."""
        if self.kind == "resize":
            x = nearest_upsample(x, self.r)
        y = conv2d(x, self.weight, self.padding, self.bias)
        if self.kind == "subpixel":
            y = pixel_shuffle(y, self.r, self.mode)
        return activate(y, self.act, self.act_param)

    @property
    def act_name(self) -> str:
        """The activation as printed (``LeakyReLU(0.2)``, ``PReLU``, ``Tanh``...)."""
        name = ACTS[self.act]
        if self.act == "leakyrelu":
            return f"{name}({float(self.act_param):g})"
        if self.act == "clip":
            return f"{name}({self.act_param[0]:g}, {self.act_param[1]:g})"
        return name

    def describe(self) -> str:
        act = "" if self.act == "none" else f" {self.act_name}"
        if self.kind == "conv":
            return f"conv {self.c_in}->{self.c_out} {self.k}x{self.k}{act}"
        if self.kind == "subpixel":
            return (f"conv {self.c_in}->{self.weight.shape[0]} {self.k}x{self.k} + "
                    f"shuffle x{self.r} ({self.mode}){act}")
        return f"nearest x{self.r} + conv {self.c_in}->{self.c_out} {self.k}x{self.k}{act}"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "c_in": self.c_in, "c_out": self.c_out, "k": self.k,
             "padding": self.padding, "relu": self.relu, "name": self.name}
        if self.act not in ("none", "relu"):
            d["act"] = self.act
        if self.kind != "conv":
            d["r"] = self.r
        if self.kind == "subpixel":
            d["mode"] = self.mode
        return d


@dataclass(frozen=True, eq=False)
class DeconvLayer:
    """One transformed layer: a :class:`Deconv` and whether ReLU follows (or another
    activation, ``act`` with ``act_param``, as :class:`Layer`)."""

    deconv: Deconv
    relu: bool
    name: str = "layer"
    act: str = ""
    act_param: object = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        d = self.deconv
        y = deconv2d(x, d.weight, d.stride, d.padding, d.bias)
        return activate(y, self.act or ("relu" if self.relu else "none"), self.act_param)


@dataclass(frozen=True, eq=False)
class DeconvNetwork:
    """The transformed network: every layer a deconvolution."""

    layers: tuple

    def forward(self, y_lr: np.ndarray, *, clamp: bool = True) -> np.ndarray:
        """``y_lr`` ``(H, W)`` in ``[0, 1]`` -> ``(r H, r W)``, clamped to ``[0, 1]``."""
        x = np.asarray(y_lr, dtype=np.float64)[None]
        for layer in self.layers:
            x = layer.forward(x)
        return np.clip(x[0], 0.0, 1.0) if clamp else x[0]


@dataclass(frozen=True, eq=False)
class Network:
    """A float super-resolution network. ``meta`` holds free-form metadata (training record,
    calibrated activation scales, ...)."""

    layers: tuple
    name: str = "network"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))

    # Structure ------------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return self.layers[-1].r if self.layers else 1

    @property
    def macs_per_lr_pixel(self) -> int:
        return sum(layer.macs_per_lr_pixel for layer in self.layers)

    @property
    def weight_count(self) -> int:
        return sum(layer.weight.size + layer.bias.size for layer in self.layers)

    @property
    def max_channels(self) -> int:
        return max(max(layer.c_in, layer.weight.shape[0]) for layer in self.layers)

    @property
    def receptive_field(self) -> int:
        """Receptive field in low-resolution pixels (``1 + sum(K - 1)``)."""
        return 1 + sum(layer.k - 1 for layer in self.layers)

    def describe(self) -> list[str]:
        return [layer.describe() for layer in self.layers]

    def validate(self) -> "Network":
        """Check the network is in the supported family.

        Raises
        ------
        NetworkError
            naming the first offending layer and the reason.
        """
        if not self.layers:
            raise NetworkError(f"{self.name}: the network has no layers")
        c = 1
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            where = f"{self.name}: layer {i} ({layer.name})"
            if layer.c_in != c:
                what = "the Y channel (1 channel)" if i == 0 else f"{c} channels"
                raise NetworkError(f"{where}: takes {layer.c_in} input channels, but gets {what}")
            if layer.k % 2 == 0 or layer.padding != (layer.k - 1) // 2:
                raise NetworkError(f"{where}: only 'same' convolutions are supported (odd K, "
                                   f"padding (K-1)/2), not K={layer.k} padding={layer.padding}")
            if i < last:
                if layer.kind != "conv":
                    raise NetworkError(f"{where}: only the last layer may upsample "
                                       f"({layer.kind} found earlier)")
                if layer.act == "none":
                    raise NetworkError(f"{where}: hidden layers must be followed by an "
                                       "activation (ReLU, ...)")
            else:
                if layer.kind == "conv":
                    raise NetworkError(f"{where}: the last layer must upsample (sub-pixel or "
                                       "resize convolution), not a plain conv")
                if layer.act != "none":
                    raise NetworkError(f"{where}: the output layer must have no activation "
                                       f"(it has {layer.act_name})")
                if layer.c_out != 1:
                    raise NetworkError(f"{where}: the output must be 1 channel (Y), "
                                       f"not {layer.c_out}")
            c = layer.c_out
        return self

    def engine_check(self) -> "Network":
        """Check that the engine can run the network's activations: hidden layers followed by
        ReLU (the arithmetic contract's unsigned activations, :mod:`deconvsr.arith`). Other
        activations are kept in the model (a later gateware may run them).

        Raises
        ------
        NetworkError
            naming the first layer with another activation.
        """
        for i, layer in enumerate(self.layers[:-1]):
            if layer.act != "relu":
                raise NetworkError(f"{self.name}: layer {i} ({layer.name}): activation "
                                   f"{layer.act_name}: the engine runs ReLU only for now")
        return self

    # Forward passes -------------------------------------------------------------------------
    def _check_input(self, y_lr):
        y = np.asarray(y_lr, dtype=np.float64)
        if y.ndim != 2:
            raise NetworkError(f"{self.name}: input must be a Y plane (H, W), not {y.shape}")
        rf = self.receptive_field
        if min(y.shape) < rf:
            raise NetworkError(f"{self.name}: input {y.shape[1]}x{y.shape[0]} is smaller than "
                               f"the network's receptive field {rf}x{rf}")
        return y

    def forward(self, y_lr: np.ndarray, *, clamp: bool = True) -> np.ndarray:
        """The trained form in float64: ``(H, W)`` in ``[0, 1]`` -> ``(r H, r W)``."""
        x = self._check_input(y_lr)[None]
        for layer in self.layers:
            x = layer.forward(x)
        return np.clip(x[0], 0.0, 1.0) if clamp else x[0]

    def activations(self, y_lr: np.ndarray) -> list[np.ndarray]:
        """Every layer's float output (after its activation), for calibration."""
        x = self._check_input(y_lr)[None]
        outs = []
        for layer in self.layers:
            x = layer.forward(x)
            outs.append(x)
        return outs

    def to_deconv(self) -> DeconvNetwork:
        """The transformed float deconvolution network.

        Raises
        ------
        NetworkError
            if the network is unsupported or a transform does not apply (message names the
            layer).
        """
        self.validate()
        out = []
        for i, layer in enumerate(self.layers):
            name = f"layer {i} ({layer.name})"
            try:
                if layer.kind == "conv":
                    wd = np.ascontiguousarray(layer.weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
                    d = Deconv(wd, layer.bias[:, None, None].copy(), 1, layer.k - 1 - layer.padding)
                elif layer.kind == "subpixel":
                    d = subpixel_to_deconv(layer.weight, layer.bias, r=layer.r,
                                           padding=layer.padding, mode=layer.mode, name=name)
                else:
                    d = resize_to_deconv(layer.weight, layer.bias, r=layer.r,
                                         padding=layer.padding, name=name)
            except TransformError as e:
                raise NetworkError(f"{self.name}: {e}") from None
            out.append(DeconvLayer(d, layer.relu, name, layer.act, layer.act_param))
        return DeconvNetwork(tuple(out))

    # Serialisation --------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Weights as a flat dict for ``np.savez`` (``L<i>.weight``, ``L<i>.bias``, float32;
        ``L<i>.act``: activation parameters, float64)."""
        d = {}
        for i, layer in enumerate(self.layers):
            d[f"L{i}.weight"] = layer.weight.astype(np.float32)
            d[f"L{i}.bias"] = layer.bias.astype(np.float32)
            if layer.act_param is not None:
                d[f"L{i}.act"] = np.asarray(layer.act_param, np.float64)
        return d

    def layer_dicts(self) -> list[dict]:
        return [layer.to_dict() for layer in self.layers]

    @classmethod
    def from_arrays(cls, layer_dicts, arrays, *, name="network", meta=None) -> "Network":
        """Rebuild from :meth:`layer_dicts` and :meth:`arrays`.

        Raises
        ------
        NetworkError
            for a missing array or a shape that disagrees with the description.
        """
        layers = []
        for i, d in enumerate(layer_dicts):
            lname = d.get("name", f"layer{i}")
            act = d.get("act", "")
            param = arrays.get(f"L{i}.act")
            try:
                w = np.asarray(arrays[f"L{i}.weight"])
                b = np.asarray(arrays[f"L{i}.bias"])
            except KeyError as e:
                raise NetworkError(f"{name}: layer {i} ({lname}): weight file has no array "
                                   f"{e.args[0]}") from None
            kind = d["kind"]
            r = int(d.get("r", 1))
            rows = d["c_out"] * (r * r if kind == "subpixel" else 1)
            expect = (rows, d["c_in"], d["k"], d["k"])
            if w.shape != expect:
                raise NetworkError(f"{name}: layer {i} ({lname}): weight shape {w.shape} does "
                                   f"not match the description {expect}")
            if b.shape != (rows,):
                raise NetworkError(f"{name}: layer {i} ({lname}): bias shape {b.shape} does "
                                   f"not match the description ({rows},)")
            layers.append(Layer(kind, w, b, int(d["padding"]), bool(d["relu"]), r,
                                d.get("mode", "CRD"), lname, act, param))
        return cls(tuple(layers), name, dict(meta or {}))


# Architectures that `deconvsr train` builds -------------------------------------------------
def _arch_layers(spec, r, last):
    """``spec`` = [(c_out, k), ...] for the hidden convs then the last layer's kernel size."""
    layers, c = [], 1
    for i, (c_out, k) in enumerate(spec[:-1]):
        layers.append({"kind": "conv", "c_in": c, "c_out": c_out, "k": k, "padding": k // 2,
                       "relu": True, "name": f"conv{i + 1}"})
        c = c_out
    k = spec[-1]
    d = {"kind": last, "c_in": c, "c_out": 1, "k": k, "padding": k // 2, "relu": False,
         "r": r, "name": f"conv{len(spec)}"}
    if last == "subpixel":
        d["mode"] = "CRD"
    layers.append(d)
    return layers


ARCHS = {
    # The paper's evaluation network (§7): PyTorch examples super-resolution model.
    "espcn-paper": lambda r: _arch_layers([(64, 5), (64, 3), (32, 3), 3], r, "subpixel"),
    # Same body, nearest-resize-convolution output layer.
    "resize-paper": lambda r: _arch_layers([(64, 5), (64, 3), (32, 3), 3], r, "resize"),
    # Edge-sized for the iCE40UP5K engine: a few KB of int8 weights.
    "edge": lambda r: _arch_layers([(16, 5), (16, 3), 3], r, "subpixel"),
}


def arch_layers(arch: str, r: int) -> list[dict]:
    """Layer descriptions (no weights) of a named architecture at upscale ``r``.

    Raises
    ------
    NetworkError
        for an unknown architecture or a bad ``r``.
    """
    if arch not in ARCHS:
        raise NetworkError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    if isinstance(r, bool) or not isinstance(r, int) or not 2 <= r <= 8:
        raise NetworkError(f"scale must be an integer in 2..8, not {r!r}")
    return ARCHS[arch](r)
