"""Image helpers shared by training and evaluation: colour conversion, the degradation model,
quality metrics.

Conventions (the ones super-resolution papers use, stated once here):

* **Colour**: BT.601 *studio range* YCbCr, as MATLAB's ``rgb2ycbcr``: for RGB in ``[0, 1]``,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (16..235). Pillow's ``convert("YCbCr")`` is full
  range and is not used. Networks see ``Y / 255``.
* **Degradation**: the high-resolution image is cropped (bottom/right) to a multiple of ``r``,
  its Y plane (8-bit, rounded) is downscaled by ``r`` with Pillow's bicubic filter on a float
  image (mode ``F``), then rounded to 8 bits. Every method upscales this same 8-bit LR plane.
* **Metrics**: PSNR and SSIM on the 8-bit Y plane, with ``r`` border pixels shaved on each side.
  SSIM is the Wang et al. (2004) Gaussian-window (sigma 1.5, 11x11) form on the 0..255 range.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "rgb_to_ycbcr", "ycbcr_to_rgb", "load_rgb", "crop_to_multiple",
           "bicubic_resize", "degrade", "psnr", "ssim", "shave", "skimage_photos",
           "SKIMAGE_PHOTOS", "IMAGE_EXTENSIONS", "list_images", "to_u8"]

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

log = logging.getLogger(__name__)

_RGB2YCC = np.array([[65.481, 128.553, 24.966],
                     [-37.797, -74.203, 112.0],
                     [112.0, -93.786, -18.214]]) / 255.0
_YCC_OFF = np.array([16.0, 128.0, 128.0])


class ImageError(ValueError):
    """An image that cannot be read or used."""


def to_u8(x) -> np.ndarray:
    """Round half up and saturate to 0..255."""
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def rgb_to_ycbcr(rgb) -> np.ndarray:
    """uint8 (or 0..255 float) RGB ``(H, W, 3)`` -> float YCbCr ``(H, W, 3)``, studio range."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an RGB image (H, W, 3), not shape {rgb.shape}")
    return rgb @ _RGB2YCC.T + _YCC_OFF


def ycbcr_to_rgb(ycc) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (float, 0..255, not rounded)."""
    ycc = np.asarray(ycc, dtype=np.float64)
    return (ycc - _YCC_OFF) @ np.linalg.inv(_RGB2YCC).T


#: Pillow modes read as 16-bit unsigned samples (scaled to 8 bits: v / 257, rounded).
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def _tiff_bits(im) -> int | None:
    try:
        bits = im.tag_v2.get(258)          # BitsPerSample
    except AttributeError:
        return None
    return bits[0] if isinstance(bits, tuple) else bits


def _grey_u8(path, im) -> np.ndarray:
    """The 8-bit grey plane of a 16-bit, 32-bit integer or float image, scaled (not clipped)."""
    a = np.asarray(im)
    if im.mode in _MODES_16 or (im.mode == "I" and (im.format == "PNG" or
                                                    _tiff_bits(im) == 16)):
        # (a 16-bit PNG is mode I on some Pillow versions; its samples are 0..65535)
        if a.min() < 0 or a.max() > 65535:
            raise ImageError(f"{path}: 16-bit image with samples outside 0..65535")
        return to_u8(a.astype(np.float64) / 257.0)
    if im.mode == "F":
        if not np.isfinite(a).all():
            raise ImageError(f"{path}: floating-point image with NaN or infinite samples")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise ImageError(f"{path}: floating-point image with samples in {lo:g}..{hi:g}; "
                             "expected 0..1 (convert it to 8 or 16 bits)")
        return to_u8(a.astype(np.float64) * 255.0)
    raise ImageError(f"{path}: {im.mode} image ({_tiff_bits(im) or 32}-bit integer samples "
                     "of no defined range): convert it to 8 or 16 bits")


def load_rgb(path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)``.

    Every Pillow mode is converted without loss of meaning or refused: grey is replicated,
    16-bit samples scaled (``v / 257``), floating-point samples scaled from 0..1, the EXIF
    orientation applied; transparency is composited over white (with a warning); only the
    first frame of a multi-frame file is read (with a warning). ``max_pixels``: larger images
    are refused from their header, before anything is decoded.

    Raises
    ------
    ImageError
        if the file is missing, not a readable image, too large or of a kind refused above.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # (the size is checked below, from the header; Pillow's own bomb check is larger)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(f"{path}: {w}x{h} is too large (at most {max_pixels:,} "
                                 "pixels)")
            if w == 0 or h == 0:
                raise ImageError(f"{path}: the image is empty ({w}x{h})")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                log.warning("%s: %d frames; only the first is used", path, frames)
            im = ImageOps.exif_transpose(im)
            if im.mode in (*_MODES_16, "I", "F"):
                return np.repeat(_grey_u8(path, im)[..., None], 3, axis=2)
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            if im.mode in ("LA", "La", "PA", "RGBa"):
                im = im.convert("RGBA")
            if im.mode == "RGBA":
                alpha = np.asarray(im.getchannel("A"))
                if alpha.min() < 255:
                    log.warning("%s: %d%% of the pixels are transparent or translucent: "
                                "composited over white", path,
                                round(100 * np.count_nonzero(alpha < 255) / alpha.size))
                    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, im)
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too large to decode") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (an unknown format, or a damaged or empty "
                         "file)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{path}: not a readable image ({e})") from None
    return rgb


def crop_to_multiple(img: np.ndarray, r: int) -> np.ndarray:
    """Drop bottom rows and right columns so both sides are multiples of ``r``."""
    h, w = img.shape[:2]
    return img[:h - h % r, :w - w % r]


def bicubic_resize(plane, size) -> np.ndarray:
    """Pillow bicubic resize of a float plane ``(H, W)`` to ``size = (W', H')``, float64."""
    im = Image.fromarray(np.asarray(plane, dtype=np.float32), mode="F")
    return np.asarray(im.resize(tuple(int(s) for s in size), Image.Resampling.BICUBIC),
                      dtype=np.float64)


def degrade(y_hr_u8, r: int) -> np.ndarray:
    """The 8-bit LR Y plane of an 8-bit HR Y plane whose sides are multiples of ``r``."""
    h, w = y_hr_u8.shape
    if h % r or w % r:
        raise ImageError(f"image {w}x{h} is not a multiple of the scale {r}: crop first")
    return to_u8(bicubic_resize(y_hr_u8, (w // r, h // r)))


def shave(x, border: int):
    return x[border:-border, border:-border] if border > 0 else x


def psnr(ref, test, *, border: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB of ``test`` against ``ref`` (same shape, 0..255), ``border`` pixels shaved."""
    ref = shave(np.asarray(ref, dtype=np.float64), border)
    test = shave(np.asarray(test, dtype=np.float64), border)
    if ref.shape != test.shape:
        raise ImageError(f"shapes differ: {ref.shape} vs {test.shape}")
    mse = np.mean((ref - test) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))


def _gaussian_filter(x, sigma=1.5, radius=5):
    t = np.arange(-radius, radius + 1)
    g = np.exp(-t * t / (2 * sigma * sigma))
    g /= g.sum()
    # 'valid' separable filtering, as the reference MATLAB ssim_index.
    x = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 0, x)
    return np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 1, x)


def ssim(ref, test, *, border: int = 0, peak: float = 255.0) -> float:
    """Mean SSIM (Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03)."""
    a = shave(np.asarray(ref, dtype=np.float64), border)
    b = shave(np.asarray(test, dtype=np.float64), border)
    if a.shape != b.shape:
        raise ImageError(f"shapes differ: {a.shape} vs {b.shape}")
    if min(a.shape) < 11:
        raise ImageError(f"image {a.shape[1]}x{a.shape[0]} is too small for SSIM (11x11 window)")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    saa = _gaussian_filter(a * a) - mu_a ** 2
    sbb = _gaussian_filter(b * b) - mu_b ** 2
    sab = _gaussian_filter(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(m.mean())


def skimage_photos() -> list[tuple[str, np.ndarray]]:
    """The CC0 photographs shipped inside scikit-image (no download), as uint8 RGB.

    Raises
    ------
    ImageError
        if scikit-image is not installed.
    """
    try:
        from skimage import data    # optional (the test extra ships the photographs)
    except ImportError:
        raise ImageError("--data skimage needs scikit-image (pip install scikit-image)") from None
    return [(n, np.asarray(getattr(data, n)())[..., :3]) for n in SKIMAGE_PHOTOS]


def list_images(path) -> list[Path]:
    """Image files in a directory (sorted), or the file itself.

    Raises
    ------
    ImageError
        if the path does not exist or a directory holds no images.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ImageError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    if path.is_file():
        return [path]
    raise ImageError(f"{path}: no such file or directory")
