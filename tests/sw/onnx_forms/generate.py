"""Write the ONNX export forms that tests/sw/test_onnx_forms.py converts: small sub-pixel and
resize networks exported by PyTorch 2.13 with the TorchScript exporter (opsets 9-17, static
and dynamic H/W, constant folding on/off, initializers as inputs) and the dynamo exporter
(opsets 17 and 18, static and dynamic). Random weights (seeded); a few KB each.

    .venv/bin/python tests/sw/onnx_forms/generate.py        # needs torch==2.13.0, onnxscript

The files are committed so that the test needs neither torch nor onnxscript; `MANIFEST.json`
lists each file with how it was made.
"""

import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).parent
SIZE = (12, 10)      # H, W of the example input (static exports are fixed to it)


class SubPixel(nn.Module):
    """conv 1->4 5x5, ReLU, conv 4->9 3x3, PixelShuffle(3)."""

    scale = 3

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5, padding=2)
        self.c2 = nn.Conv2d(4, 9, 3, padding=1)
        self.ps = nn.PixelShuffle(3)

    def forward(self, x):
        return self.ps(self.c2(torch.relu(self.c1(x))))


class ViewShuffle(SubPixel):
    """The pixel shuffle written by hand with view/permute/reshape on computed sizes."""

    def forward(self, x):
        y = self.c2(torch.relu(self.c1(x)))
        n, c, h, w = y.shape
        r = 3
        y = y.view(n, c // (r * r), r, r, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (r * r), h * r, w * r)


class Resize(nn.Module):
    """conv 1->4 5x5, ReLU, nn.Upsample(x2, nearest), conv 4->1 3x3."""

    scale = 2

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5, padding=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.c2(self.up(torch.relu(self.c1(x))))


class ResizeToSize(Resize):
    """F.interpolate to the size 2 H x 2 W computed from the tensor's shape."""

    def forward(self, x):
        y = torch.relu(self.c1(x))
        return self.c2(F.interpolate(y, size=(y.shape[2] * 2, y.shape[3] * 2), mode="nearest"))


NETS = {"sub": SubPixel, "view": ViewShuffle, "resize": Resize, "size": ResizeToSize}


def forms():
    for opset in (9, 10, 11, 13, 17):
        for dyn in (False, True):
            for net in ("sub", "resize", "size"):
                yield net, "torchscript", opset, dyn, {}
    for opset in (9, 17):
        for net in ("sub", "resize", "size"):
            yield net, "torchscript", opset, True, {"do_constant_folding": False}
    for net in ("sub", "resize"):
        yield net, "torchscript", 9, False, {"keep_initializers_as_inputs": True}
    for opset, dyn in ((9, True), (17, True), (17, False)):
        yield "view", "torchscript", opset, dyn, {}
    for opset in (17, 18):
        for dyn in (False, True):
            for net in ("sub", "view", "resize", "size"):
                yield net, "dynamo", opset, dyn, {}


def export(net, exporter, opset, dyn, extra, path):
    torch.manual_seed(sum(map(ord, path.name)))
    model = NETS[net]().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)
    x = torch.rand(1, 1, *SIZE)
    kw = dict(extra)
    if exporter == "dynamo":
        kw["external_data"] = False
    if dyn and exporter == "dynamo":
        d = torch.export.Dim
        kw["dynamic_shapes"] = {"x": {0: d("N", max=64), 2: d("H", min=8, max=512),
                                      3: d("W", min=8, max=512)}}
    elif dyn:
        kw["dynamic_axes"] = {"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N", 2: "Hy", 3: "Wy"}}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (x,), str(path), opset_version=opset,
                          dynamo=exporter == "dynamo", input_names=["x"], output_names=["y"],
                          **kw)


def main():
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    manifest = []
    for net, exporter, opset, dyn, extra in forms():
        tag = "".join(f"-{k.split('_')[0]}" for k in extra)
        name = f"{net}-{'ts' if exporter == 'torchscript' else 'dynamo'}{opset}-" \
               f"{'dynamic' if dyn else 'static'}{tag}.onnx"
        export(net, exporter, opset, dyn, extra, HERE / name)
        manifest.append({"file": name, "net": net, "scale": NETS[net].scale,
                         "kind": "subpixel" if net in ("sub", "view") else "resize",
                         "exporter": exporter, "opset": opset, "dynamic": dyn,
                         "options": extra, "input": [1, 1, *SIZE]})
        print(name, file=sys.stderr)
    (HERE / "MANIFEST.json").write_text(json.dumps(
        {"torch": torch.__version__, "forms": manifest}, indent=1) + "\n")


if __name__ == "__main__":
    main()
