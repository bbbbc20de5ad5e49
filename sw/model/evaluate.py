"""Quality of a network (``deconvsr eval``): against bicubic, before/after transform and after
quantisation.

Per image: crop (bottom/right) to a multiple of ``r``, take the 8-bit BT.601 studio-range Y
plane, downscale it with Pillow bicubic and round to 8 bits (:func:`~deconvsr.sw.host.imaging.
degrade`); then upscale that LR plane with every method and measure PSNR/SSIM on Y against the
HR plane, ``r`` border pixels shaved. Outputs are rounded to 8 bits before measuring.

Methods are *upscale functions* ``f(lr_u8 (H, W)) -> float (rH, rW) in 0..255``; :func:`evaluate`
takes any mapping of them, so another backend (e.g. a device) plugs in as one more entry.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..host.imaging import (ImageError, bicubic_resize, crop_to_multiple, degrade, list_images,
                            load_rgb, psnr, rgb_to_ycbcr, skimage_photos, ssim, to_u8)
from .network import Network
from .quantize import calibrate, run_quantized

__all__ = ["standard_upscalers", "self_ensemble", "evaluate", "load_images", "calibrated_on",
           "Upscaler"]

Upscaler = Callable[[np.ndarray], np.ndarray]


def standard_upscalers(network, qlayers=None) -> dict[str, Upscaler]:
    """bicubic, float (trained form), deconv (transformed float) and int8 (if ``qlayers``)."""
    r = network.scale
    dnet = network.to_deconv()
    ups = {
        "bicubic": lambda lr: bicubic_resize(lr, (lr.shape[1] * r, lr.shape[0] * r)),
        "float": lambda lr: network.forward(lr / 255.0) * 255.0,
        "deconv": lambda lr: dnet.forward(lr / 255.0) * 255.0,
    }
    if qlayers is not None:
        ups["int8"] = lambda lr: run_quantized(qlayers, lr).astype(np.float64)
    return ups


def self_ensemble(f: Upscaler) -> Upscaler:
    """``f`` averaged over the 8 flips/rotations of its input (each output turned back)."""
    def g(lr):
        acc = 0.0
        for k in range(4):
            for flip in (False, True):
                x = np.rot90(lr, k)
                x = x[:, ::-1] if flip else x
                y = np.asarray(f(np.ascontiguousarray(x)), dtype=np.float64)
                acc = acc + np.rot90(y[:, ::-1] if flip else y, -k)
        return acc / 8
    return g


def load_images(data, limit=None) -> list[tuple[str, np.ndarray]]:
    """``[(name, uint8 RGB)]`` from ``--data`` arguments."""
    out = []
    for item in data:
        if item == "skimage":
            out.extend(skimage_photos())
        else:
            out.extend((p.name, load_rgb(p)) for p in list_images(item))
        if limit is not None and len(out) >= limit:
            break
    return out[:limit] if limit is not None else out


def evaluate(images, r: int, upscalers: dict[str, Upscaler], *, min_lr: int = 1,
             compare=(("float", "deconv"),)) -> dict:
    """Evaluate every upscaler on every image.

    Returns ``{"images": [{name, hr_size, lr_size, psnr: {m: dB}, ssim: {m: v},
    max_abs_diff: {"a-b": v}}], "mean": {"psnr": {...}, "ssim": {...}}}``. ``max_abs_diff``
    compares unrounded outputs on the ``[0, 1]`` scale for each pair in ``compare``.

    Raises
    ------
    ImageError
        for an image whose LR plane is smaller than ``min_lr`` (the receptive field).
    """
    rows = []
    for name, rgb in images:
        hr = to_u8(rgb_to_ycbcr(crop_to_multiple(rgb, r))[..., 0])
        lr_h, lr_w = hr.shape[0] // r, hr.shape[1] // r
        if min(lr_h, lr_w) < max(min_lr, 1) or min(hr.shape) - 2 * r < 11:
            need = max(min_lr, 1, -(-(11 + 2 * r) // r))
            raise ImageError(f"{name}: {rgb.shape[1]}x{rgb.shape[0]} is too small: its "
                             f"x{r} downscale {lr_w}x{lr_h} must be at least {need}x{need} "
                             "(the network's receptive field and the SSIM window)")
        lr = degrade(hr, r)
        outs = {m: np.asarray(f(lr), dtype=np.float64) for m, f in upscalers.items()}
        row = {"name": name, "hr_size": [hr.shape[1], hr.shape[0]], "lr_size": [lr_w, lr_h],
               "psnr": {}, "ssim": {}, "max_abs_diff": {}}
        for m, y in outs.items():
            if y.shape != hr.shape:
                raise ImageError(f"{name}: method {m} returned {y.shape}, expected {hr.shape}")
            y8 = to_u8(y)
            row["psnr"][m] = psnr(hr, y8, border=r)
            row["ssim"][m] = ssim(hr, y8, border=r)
        for a, b in compare:
            if a in outs and b in outs:
                row["max_abs_diff"][f"{a}-{b}"] = float(np.abs(outs[a] - outs[b]).max() / 255)
        rows.append(row)
    methods = list(upscalers)
    mean = {k: {m: float(np.mean([row[k][m] for row in rows])) for m in methods}
            for k in ("psnr", "ssim")}
    return {"images": rows, "mean": mean, "scale": r, "methods": methods}


def calibrated_on(network: Network, images) -> Network | None:
    """``network`` with its activation ranges calibrated on the LR planes of ``images``
    (``[(name, uint8 RGB)]``, degraded as :func:`evaluate` does), or None when no image is
    as large as the network's receptive field. For a model file without calibration (an
    imported one)."""
    r = network.scale
    planes = [degrade(to_u8(rgb_to_ycbcr(crop_to_multiple(rgb, r))[..., 0]), r) / 255.0
              for _, rgb in images]
    planes = [p for p in planes if min(p.shape) >= network.receptive_field]
    if not planes:
        return None
    return Network(network.layers, network.name,
                   {**network.meta, "calibration": calibrate(network, planes)})
