"""The float network description: forward passes before/after the transform, validation."""

import numpy as np
import pytest

from deconvsr.sw.model.network import ARCHS, Layer, Network, NetworkError, arch_layers
from deconvsr.sw.golden.reference import conv2d, pixel_shuffle


def random_network(rng, kind="subpixel", r=3, widths=(8, 6), k_first=5, mode="CRD",
                   name="rand"):
    """A small random network of the supported family (weights scaled like a trained one)."""
    layers, c = [], 1
    for i, cw in enumerate(widths):
        k = k_first if i == 0 else 3
        w = rng.normal(0, np.sqrt(2 / (c * k * k)), (cw, c, k, k))
        layers.append(Layer("conv", w, rng.normal(0, 0.05, cw), k // 2, True, name=f"c{i}"))
        c = cw
    rows = r * r if kind == "subpixel" else 1
    w = rng.normal(0, 0.5 / np.sqrt(c * 9), (rows, c, 3, 3))
    layers.append(Layer(kind, w, rng.normal(0.4, 0.05, rows), 1, False, r, mode, "last"))
    return Network(tuple(layers), name).validate()


def real_plane(h=40, w=44):
    """A [0, 1] Y-like plane from a real photograph (scikit-image's camera), or a smooth
    synthetic one when scikit-image is missing."""
    try:
        from skimage import data
        return data.camera()[200:200 + h, 220:220 + w] / 255.0
    except ImportError:  # pragma: no cover
        yy, xx = np.mgrid[:h, :w]
        return 0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 5.0)


@pytest.mark.parametrize("kind,mode,r", [("subpixel", "CRD", 3), ("subpixel", "DCR", 2),
                                         ("resize", "CRD", 3), ("resize", "CRD", 2)])
def test_deconv_network_matches_trained_form(rng, kind, mode, r):
    net = random_network(rng, kind, r, mode=mode)
    x = real_plane()
    y = net.forward(x, clamp=False)
    yd = net.to_deconv().forward(x, clamp=False)
    assert y.shape == (x.shape[0] * r, x.shape[1] * r)
    assert np.abs(y - yd).max() <= 1e-10
    # The output is not trivially constant and clamping happens in both forms.
    assert y.std() > 1e-3
    assert np.array_equal(net.forward(x), np.clip(y, 0, 1))


def test_forward_is_the_textbook_composition(rng):
    net = random_network(rng, "subpixel", 2, widths=(4,))
    x = real_plane(16, 18)
    h = np.maximum(conv2d(x[None], net.layers[0].weight, 2, net.layers[0].bias), 0)
    y = pixel_shuffle(conv2d(h, net.layers[1].weight, 1, net.layers[1].bias), 2)[0]
    assert np.allclose(net.forward(x, clamp=False), y)


def test_structure_numbers():
    layers = arch_layers("espcn-paper", 3)
    arrays = {}
    for i, d in enumerate(layers):
        rows = d["c_out"] * (d["r"] ** 2 if d["kind"] == "subpixel" else 1)
        arrays[f"L{i}.weight"] = np.zeros((rows, d["c_in"], d["k"], d["k"]))
        arrays[f"L{i}.bias"] = np.zeros(rows)
    net = Network.from_arrays(layers, arrays).validate()
    assert net.macs_per_lr_pixel == 59_488          # paper §7
    assert net.scale == 3
    assert net.receptive_field == 11
    assert set(ARCHS) >= {"espcn-paper", "resize-paper", "edge"}


def _layers(rng, **over):
    base = [dict(kind="conv", c_in=1, c_out=4, k=3, padding=1, relu=True),
            dict(kind="subpixel", c_in=4, c_out=9, k=3, padding=1, relu=False, r=3)]
    for i, kw in over.items():
        base[int(i[1:])].update(kw)
    return [Layer(d["kind"], rng.normal(size=(d["c_out"], d["c_in"], d["k"], d["k"])),
                  np.zeros(d["c_out"]), d["padding"], d["relu"], d.get("r", 1),
                  name=f"n{j}") for j, d in enumerate(base)]


@pytest.mark.parametrize("over,message", [
    (dict(l0=dict(c_in=3)), "layer 0 (n0): takes 3 input channels, but gets the Y channel"),
    (dict(l0=dict(relu=False)), "layer 0 (n0): hidden layers must be followed by an "
                                "activation"),
    (dict(l1=dict(relu=True)), "layer 1 (n1): the output layer must have no activation "
                               "(it has ReLU)"),
    (dict(l1=dict(kind="conv", r=1, c_out=1)), "layer 1 (n1): the last layer must upsample"),
    (dict(l0=dict(padding=0)), "layer 0 (n0): only 'same' convolutions are supported"),
    (dict(l0=dict(k=4, padding=1)), "layer 0 (n0): only 'same' convolutions"),
    (dict(l1=dict(c_out=18)), "layer 1 (n1): the output must be 1 channel (Y), not 2"),
    (dict(l1=dict(c_in=5)), "layer 1 (n1): takes 5 input channels, but gets 4 channels"),
])
def test_unsupported_networks_refused_naming_the_layer(rng, over, message):
    net = Network(tuple(_layers(rng, **over)), "bad")
    with pytest.raises(NetworkError) as e:
        net.to_deconv()
    assert message in str(e.value)
    assert str(e.value).startswith("bad: ")


def test_upsampling_in_the_middle_refused(rng):
    layers = _layers(rng)
    mid = Layer("resize", rng.normal(size=(4, 4, 3, 3)), None, 1, True, 2, name="mid")
    with pytest.raises(NetworkError, match=r"layer 1 \(mid\): only the last layer may upsample"):
        Network((layers[0], mid, layers[1]), "bad").validate()


def test_input_smaller_than_receptive_field(rng):
    net = random_network(rng, widths=(4,))
    assert net.receptive_field == 7
    net.forward(np.zeros((7, 9)))
    with pytest.raises(NetworkError, match="input 9x6 is smaller than the network's receptive "
                                           "field 7x7"):
        net.forward(np.zeros((6, 9)))


@pytest.mark.parametrize("field,value,message", [
    ("weight", np.zeros((2, 1, 3)), r"weight must have shape \(C_out, C_in, K, K\)"),
    ("bias", np.zeros(3), r"bias must have shape \(2,\), not \(3,\)"),
    ("weight", np.full((2, 1, 3, 3), np.nan), "NaN or infinity"),
    ("kind", "pool", "kind must be one of conv, subpixel, resize, not 'pool'"),
    ("padding", -1, "padding must be an integer >= 0, not -1"),
])
def test_layer_validation(field, value, message):
    kw = dict(kind="conv", weight=np.zeros((2, 1, 3, 3)), bias=np.zeros(2), padding=1,
              relu=True, name="L")
    kw[field] = value
    with pytest.raises(NetworkError, match=message):
        Layer(**kw)


def test_from_arrays_shape_mismatch():
    layers = arch_layers("edge", 2)
    arrays = {"L0.weight": np.zeros((16, 1, 5, 5)), "L0.bias": np.zeros(16),
              "L1.weight": np.zeros((16, 16, 3, 3)), "L1.bias": np.zeros(16),
              "L2.weight": np.zeros((9, 16, 3, 3)), "L2.bias": np.zeros(9)}
    with pytest.raises(NetworkError, match=r"layer 2 \(conv3\): weight shape \(9, 16, 3, 3\) "
                                           r"does not match the description \(4, 16, 3, 3\)"):
        Network.from_arrays(layers, arrays, name="m")
    del arrays["L1.bias"]
    with pytest.raises(NetworkError, match="weight file has no array L1.bias"):
        Network.from_arrays(layers, arrays, name="m")


def test_arch_layers_errors():
    with pytest.raises(NetworkError, match="unknown architecture 'vdsr'"):
        arch_layers("vdsr", 2)
    with pytest.raises(NetworkError, match="scale must be an integer in 2..8, not 1"):
        arch_layers("edge", 1)
