"""A comparison figure for people: bicubic | accelerator | difference, labelled and enlarged.

    figure = labelled_comparison(rgb_lr, rgb_out, diff_gain=4, enlarge=2)   # (H, W, 3) uint8

Each panel is the output size times ``enlarge`` (nearest neighbour: the pixels stay visible),
with its label above it in Pillow's default font: ``bicubic`` (the low-resolution input
upscaled by Pillow-equivalent bicubic interpolation, :func:`~deconvsr.sw.host.imaging.
bicubic_resize`), ``accelerator`` (the device's output) and ``|accelerator - bicubic| x GAIN``
(the difference, amplified so it can be seen, with its scale in the label).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .imaging import bicubic_resize, to_u8

__all__ = ["labelled_comparison", "viewing_scale"]

_GAP = 8            # pixels between panels (white)
_LABEL_PT = 16      # label text size


def viewing_scale(side: int, target: int = 384) -> int:
    """The integer enlargement that brings a ``side``-pixel panel to about ``target`` pixels
    (at least 1)."""
    return max(1, round(target / max(side, 1)))


def labelled_comparison(rgb_in: np.ndarray, out: np.ndarray, *, diff_gain: int = 4,
                        enlarge: int = 1) -> np.ndarray:
    """The figure (uint8 RGB) for low-resolution ``rgb_in`` and the device's ``out``.

    Raises ValueError if ``diff_gain`` or ``enlarge`` is not a positive integer."""
    for name, v in (("diff_gain", diff_gain), ("enlarge", enlarge)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    out = np.asarray(out, dtype=np.uint8)
    h, w = out.shape[:2]
    bic = np.stack([bicubic_resize(rgb_in[..., c].astype(np.float64), (w, h))
                    for c in range(3)], axis=-1)
    diff = to_u8(np.abs(out.astype(np.float64) - bic) * diff_gain)
    panels = [(to_u8(bic), "bicubic"), (out, "accelerator"),
              (diff, f"|accelerator - bicubic| x {diff_gain}")]
    try:
        font = ImageFont.load_default(size=_LABEL_PT)
    except TypeError:       # (an older Pillow: its bitmap font)
        font = ImageFont.load_default()
    pw, ph = w * enlarge, h * enlarge
    label_h = _LABEL_PT + 10
    fig = Image.new("RGB", (3 * pw + 2 * _GAP, ph + label_h), "white")
    draw = ImageDraw.Draw(fig)
    for k, (img, label) in enumerate(panels):
        x = k * (pw + _GAP)
        fig.paste(Image.fromarray(img).resize((pw, ph), Image.Resampling.NEAREST), (x, label_h))
        draw.text((x + 4, 4), label, fill="black", font=font)
    return np.asarray(fig)
