"""Training of the super-resolution networks (needs the optional ``torch`` extra).

Data: any folder of photographs. Each is converted to its 8-bit BT.601 studio-range Y plane,
cropped to a multiple of ``r`` and degraded exactly as :mod:`deconvsr.sw.host.imaging` does for
evaluation (Pillow bicubic, rounded to 8 bits). Training samples random aligned LR/HR patch
pairs with the 8 flips/rotations, L1 (or MSE) loss, Adam with a cosine learning-rate decay over
a wall-clock budget. After training, activation ranges are calibrated on training images and
stored in the model file so that quantising at load time needs no images.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..host.imaging import (bicubic_resize, crop_to_multiple, degrade, list_images, load_rgb,
                            rgb_to_ycbcr, to_u8)
from .network import Network, arch_layers
from .quantize import calibrate, round_keep_sums

__all__ = ["TrainError", "load_pairs", "train", "build_torch_model", "recalibrate",
           "calibrate_on_pairs", "receptive_margin",
           "fake_quant_forward"]


class TrainError(ValueError):
    """Bad training input (missing torch, no images, ...)."""


def _torch():
    try:
        import torch    # optional (the train extra)
    except ImportError:
        raise TrainError("training needs PyTorch: pip install torch==2.13.0 (the 'train' "
                         "extra)") from None
    return torch


def load_pairs(data_dir, r: int, *, min_lr: int = 24, hr_scales=(1.0,)):
    """``[(lr, hr), ...]`` float32 planes in ``[0, 1]`` (LR ``(h, w)``, HR ``(r h, r w)``).

    ``hr_scales`` below 1 add bicubic-downscaled copies of each photograph as further HR
    images (multi-scale augmentation: cleaner, denser detail than full-size JPEGs)."""
    pairs = []
    for path in list_images(data_dir):
        y0 = to_u8(rgb_to_ycbcr(load_rgb(path))[..., 0])
        for s in hr_scales:
            if not 0 < s <= 1:
                raise TrainError(f"HR scales must be in (0, 1], not {s}")
            y = y0 if s == 1 else to_u8(bicubic_resize(
                y0, (round(y0.shape[1] * s), round(y0.shape[0] * s))))
            y = crop_to_multiple(y, r)
            if min(y.shape) < r * min_lr:
                continue
            lr = degrade(y, r)
            pairs.append((lr.astype(np.float32) / 255, y.astype(np.float32) / 255))
    if not pairs:
        raise TrainError(f"{data_dir}: no image large enough ({r * min_lr} pixels a side)")
    return pairs


def _interp_taps(r: int, k: int, kind: str) -> np.ndarray:
    """``(r*r, k, k)`` last-layer kernels (one per output phase, CRD order) that make the
    output the bilinear interpolation of the input for a sub-pixel layer, or a box filter
    (bilinear at r = 3) for a resize layer (then a single ``(1, k, k)`` kernel)."""
    if kind == "resize":
        return np.ones((1, k, k)) / (k * k)
    c = k // 2
    taps = np.zeros((r, k))
    for i in range(r):
        # HR pixel r*h + i sits at LR coordinate h + (2 i + 1 - r) / (2 r) (centre-aligned,
        # as Pillow's resize).
        u = (2 * i + 1 - r) / (2 * r)
        lo = int(np.floor(u))
        taps[i, c + lo] += 1 - (u - lo)
        taps[i, c + lo + 1] += u - lo
    return np.einsum("ia,jb->ijab", taps, taps).reshape(r * r, k, k)


def build_torch_model(layers, init: str = "interp"):
    """A ``torch.nn.Sequential`` for layer descriptions (see :func:`arch_layers`).

    ``init="interp"`` (default) starts from a network that already interpolates: channel 0 of
    every hidden layer copies the input (the image is >= 0, so ReLU passes it unchanged) and
    the last layer applies bilinear interpolation to that channel; the other channels are
    Kaiming-initialised and the last layer's weights on them start small. Training then learns
    the residual over interpolation, which converges much faster on a CPU budget.
    ``init="kaiming"`` is the plain initialisation.
    """
    torch = _torch()
    nn = torch.nn
    if init not in ("interp", "kaiming"):
        raise TrainError(f"init must be 'interp' or 'kaiming', not {init!r}")
    mods = []
    for d in layers:
        rows = d["c_out"] * (d["r"] ** 2 if d["kind"] == "subpixel" else 1)
        k = d["k"]
        if d["kind"] == "resize":
            mods.append(nn.Upsample(scale_factor=d["r"], mode="nearest"))
        conv = nn.Conv2d(d["c_in"], rows, k, padding=d["padding"])
        with torch.no_grad():
            if d["relu"]:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                if init == "interp":
                    conv.weight[0].zero_()
                    conv.weight[0, 0, k // 2, k // 2] = 1.0
            else:
                std = (0.001 if init == "interp" else 0.1) / math.sqrt(d["c_in"] * k * k)
                nn.init.normal_(conv.weight, std=std)
                if init == "interp" and d["c_out"] == 1:
                    taps = _interp_taps(d["r"], k, d["kind"])
                    conv.weight[:, 0] = torch.from_numpy(taps).float()
                    nn.init.zeros_(conv.bias)
                else:
                    nn.init.constant_(conv.bias, 0.45)
        mods.append(conv)
        if d["kind"] == "subpixel":
            mods.append(nn.PixelShuffle(d["r"]))
        if d["relu"]:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def torch_to_network(model, layers, name) -> Network:
    convs = [m for m in model if m.__class__.__name__ == "Conv2d"]
    arrays = {}
    for i, conv in enumerate(convs):
        arrays[f"L{i}.weight"] = conv.weight.detach().double().numpy()
        arrays[f"L{i}.bias"] = conv.bias.detach().double().numpy()
    return Network.from_arrays(layers, arrays, name=name)


def _load_weights(torch, model, layers, net: Network) -> None:
    """Continue from ``net`` (same architecture and scale)."""
    def strip(ds):
        return [{k: v for k, v in d.items() if k != "name"} for d in ds]

    if strip(net.layer_dicts()) != strip(layers):
        raise TrainError(f"--init-from {net.name}: its layers {net.describe()} differ from "
                         "the requested architecture")
    convs = [m for m in model if m.__class__.__name__ == "Conv2d"]
    with torch.no_grad():
        for conv, layer in zip(convs, net.layers):
            conv.weight.copy_(torch.from_numpy(layer.weight).float())
            conv.bias.copy_(torch.from_numpy(layer.bias).float())


def receptive_margin(layers) -> int:
    """LR pixels on each side that reach an output pixel through the layers' padding
    (convolutions before a resize count in LR pixels, after it in HR pixels, rounded up)."""
    lr_pad = hr_pad = 0
    upsampled = False
    for d in layers:
        upsampled = upsampled or d["kind"] == "resize"
        if upsampled:
            hr_pad += d["padding"]
        else:
            lr_pad += d["padding"]
    r = layers[-1]["r"]
    return lr_pad + -(-hr_pad // r)


def _batch(pairs, rng, r, batch, patch, margin=0):
    """``(xs, ys, masks)``: LR inputs of side ``patch + 2 margin``, their HR targets and
    loss masks (``None`` when ``margin`` is 0).

    With a margin the loss covers only the central ``patch`` (the target window, uniform over
    the image) and the network sees the real image around it: the crop is moved inside the
    image, so where the window meets the photograph's edge the zero padding is the image's
    own, as in whole-image inference. The loss then sees exactly what inference computes,
    not patch borders padded with zeros that no image has."""
    side = patch + 2 * margin
    xs = np.empty((batch, 1, side, side), np.float32)
    ys = np.empty((batch, 1, side * r, side * r), np.float32)
    masks = np.zeros((batch, 1, side * r, side * r), np.float32) if margin else None
    for b in range(batch):
        lr, hr = pairs[rng.integers(len(pairs))]
        i = int(rng.integers(lr.shape[0] - patch + 1))
        j = int(rng.integers(lr.shape[1] - patch + 1))
        ci = min(max(i - margin, 0), lr.shape[0] - side)
        cj = min(max(j - margin, 0), lr.shape[1] - side)
        x = lr[ci:ci + side, cj:cj + side]
        y = hr[r * ci:r * (ci + side), r * cj:r * (cj + side)]
        planes = [x, y]
        if margin:
            mk = np.zeros((side * r, side * r), np.float32)
            mk[r * (i - ci):r * (i - ci + patch), r * (j - cj):r * (j - cj + patch)] = 1
            planes.append(mk)
        t = rng.integers(8)
        if t & 1:
            planes = [p[::-1] for p in planes]
        if t & 2:
            planes = [p[:, ::-1] for p in planes]
        if t & 4:
            planes = [p.T for p in planes]
        xs[b, 0], ys[b, 0] = planes[:2]
        if margin:
            masks[b, 0] = planes[2]
    return xs, ys, masks


def fake_quant_forward(torch, model, layers, calibration, x, *, weight_max: int = 127,
                       act_max: int = 255):
    """``model(x)`` with the integer model's rounding simulated (quantisation-aware training;
    straight-through gradients), as :func:`deconvsr.sw.model.quantize.quantize` rounds:

    * each hidden activation to 8 bits of its channel's fixed range
      (``calibration["act_ranges"][i][c] / act_max``, clipped there);
    * each kernel, with its input scales folded in, to ``weight_max`` steps per output channel
      of the transformed deconvolution (a sub-pixel layer's ``r*r`` phase rows share one),
      keeping every (input channel, output phase) tap sum (a conv row's taps are one phase)
      and with the bias corrected for the rounding's mean error
      (``calibration["input_means"]``). A resize layer's kernel is summed by its transform,
      so its weights are left unrounded."""
    F = torch.nn.functional
    s_x = np.full(1, 1.0 / 255)
    li = ai = 0
    for mod in model:
        kind = mod.__class__.__name__
        if kind == "Conv2d":
            d = layers[li]
            li += 1
            w, b = mod.weight, mod.bias
            if d["kind"] != "resize":
                wp = w.detach().double().numpy() * s_x[None, :, None, None]
                g = d["r"] ** 2 if d["kind"] == "subpixel" else 1
                mx = np.abs(wp).reshape(-1, g * wp[0].size).max(axis=1)
                s_w = np.repeat(np.maximum(mx / weight_max, 1e-12), g)[:, None, None, None]
                q = round_keep_sums((wp / s_w).transpose(1, 0, 2, 3), 1, 0)
                q = np.clip(q.transpose(1, 0, 2, 3), -weight_max - 1, weight_max)
                wq = q * s_w / s_x[None, :, None, None]
                means = np.asarray(calibration["input_means"][li - 1], np.float64)
                err = wq - w.detach().double().numpy()
                bq = b.detach().double().numpy() - np.einsum("oiab,i->o", err, means)
                w = w + (torch.from_numpy(wq).to(w.dtype) - w).detach()
                b = b + (torch.from_numpy(bq).to(b.dtype) - b).detach()
            x = F.conv2d(x, w, b, padding=mod.padding)
        elif kind == "ReLU":
            rng = np.asarray(calibration["act_ranges"][ai], np.float64)
            ai += 1
            s_y = torch.from_numpy(rng / act_max).to(x.dtype)[None, :, None, None]
            xc = torch.minimum(torch.relu(x), s_y * act_max)
            x = xc + (torch.round(xc / s_y) * s_y - xc).detach()
            s_x = rng / act_max
        else:
            x = mod(x)
    return x


def calibrate_on_pairs(network: Network, pairs, n: int = 8) -> dict:
    """Calibrate on ``n`` evenly spaced training images (whole LR planes); deterministic."""
    idx = np.linspace(0, len(pairs) - 1, min(n, len(pairs))).astype(int)
    calib = calibrate(network, [pairs[i][0] for i in idx])
    calib["images"] = f"{len(idx)} training images (LR Y planes)"
    return calib


def recalibrate(network: Network, data_dir, n: int = 8) -> Network:
    """The same network with its calibration recomputed on ``data_dir`` (numpy only)."""
    calib = calibrate_on_pairs(network, load_pairs(data_dir, network.scale), n)
    return Network(network.layers, network.name, {**network.meta, "calibration": calib})


def train(data_dir, arch: str, r: int, *, minutes: float = 5.0, batch: int = 32,
          patch: int = 24, lr: float = 1e-3, loss: str = "l1", threads: int = 2,
          seed: int = 0, name: str = "model", command: str = "", progress: bool = True,
          calibrate_images: int = 8, init: str = "interp",
          max_steps: int | None = None, init_from: Network | None = None,
          hr_scales=(1.0,), context: bool = False, qat: bool = False) -> Network:
    """Train ``arch`` at upscale ``r`` for ``minutes`` of wall-clock time; returns the float
    network with ``meta`` (arch, training record, calibration) filled in.

    ``context=True`` computes the loss on each patch's centre only, with the image around it
    as input (see :func:`_batch`); otherwise on whole zero-padded patches.

    ``qat=True`` (needs ``init_from`` with its calibration) trains through the integer
    model's rounding (:func:`fake_quant_forward`) at ``init_from``'s activation ranges, which
    the result keeps as its calibration.

    Raises
    ------
    TrainError
        without torch, or for unusable data/parameters.
    """
    torch = _torch()

    if loss not in ("l1", "mse"):
        raise TrainError(f"loss must be 'l1' or 'mse', not {loss!r}")
    if not minutes > 0:
        raise TrainError(f"--minutes must be > 0, not {minutes}")
    layers = arch_layers(arch, r)
    qat_calib = None
    if qat:
        qat_calib = None if init_from is None else init_from.meta.get("calibration")
        if not qat_calib or "act_ranges" not in qat_calib or "input_means" not in qat_calib:
            raise TrainError("quantisation-aware training needs --init-from a calibrated "
                             "model (its activation ranges are kept)")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    margin = receptive_margin(layers) if context else 0
    pairs = load_pairs(data_dir, r, min_lr=patch + 2 * margin, hr_scales=hr_scales)
    model = build_torch_model(layers, init)
    if init_from is not None:
        _load_weights(torch, model, layers, init_from)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    crit = torch.nn.L1Loss() if loss == "l1" else torch.nn.MSELoss()

    def masked(out, ys, masks):
        d = out - ys
        d = d.abs() if loss == "l1" else d * d
        return (d * masks).sum() / masks.sum()
    budget = minutes * 60.0
    t0 = time.monotonic()
    step, recent = 0, []
    bar = tqdm(total=int(budget), unit="s", disable=not progress, desc=f"train {name}",
               mininterval=2.0)
    shown = 0
    while True:
        frac = (time.monotonic() - t0) / budget
        if max_steps is not None:
            frac = max(frac, step / max_steps)
        if frac >= 1:
            break
        cur_lr = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        xs, ys, masks = _batch(pairs, rng, r, batch, patch, margin)
        out = (model(torch.from_numpy(xs)) if qat_calib is None else
               fake_quant_forward(torch, model, layers, qat_calib, torch.from_numpy(xs)))
        err = (crit(out, torch.from_numpy(ys)) if masks is None
               else masked(out, torch.from_numpy(ys), torch.from_numpy(masks)))
        opt.zero_grad()
        err.backward()
        opt.step()
        step += 1
        recent.append(err.item())
        recent = recent[-200:]
        el = int(time.monotonic() - t0)
        if el > shown:
            bar.update(min(el, int(budget)) - shown)
            shown = min(el, int(budget))
            bar.set_postfix(step=step, loss=f"{np.mean(recent):.5f}", lr=f"{cur_lr:.1e}")
    bar.close()
    seconds = time.monotonic() - t0
    final = float(np.mean(recent))
    net = torch_to_network(model.eval(), layers, name)
    calib = calibrate_on_pairs(net, pairs, calibrate_images)
    if qat_calib is not None:       # the ranges it was trained for (means and maxima: new)
        calib = {**calib, "act_ranges": qat_calib["act_ranges"],
                 "method": "ranges kept from the model trained from (quantisation-aware)"}
    meta = {
        "arch": arch,
        "training": {
            "command": command, "dataset": Path(data_dir).name, "images": len(pairs),
            "minutes": minutes, "seconds": round(seconds, 1), "steps": step, "batch": batch,
            "lr_patch": patch, "loss": loss, "final_loss": round(final, 6), "adam_lr": lr,
            "seed": seed, "threads": threads, "init": init,
            "max_steps": max_steps, "hr_scales": list(hr_scales), "context": context,
            "qat": qat,
            "init_from": (None if init_from is None else {
                "name": init_from.name,
                "training": init_from.meta.get("training")}),
            "torch": torch.__version__, "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
        },
        "calibration": calib,
    }
    return Network(net.layers, name, meta)
