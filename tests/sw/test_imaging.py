"""Colour conversion, degradation and metrics."""

import numpy as np
import pytest
from PIL import Image

from deconvsr.sw.host.imaging import (ImageError, bicubic_resize, crop_to_multiple, degrade,
                                 list_images, load_rgb, psnr, rgb_to_ycbcr, ssim, to_u8,
                                 ycbcr_to_rgb)


def test_ycbcr_is_bt601_studio_range(rng):
    ycc = rgb_to_ycbcr(np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8))
    assert ycc[0, 0] == pytest.approx([16, 128, 128])
    assert ycc[0, 1] == pytest.approx([235, 128, 128])
    assert ycc[0, 2] == pytest.approx([16 + 65.481, 128 - 37.797, 240])   # MATLAB rgb2ycbcr
    rgb = rng.integers(0, 256, (5, 7, 3))
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb)


def test_ycbcr_rejects_non_rgb():
    with pytest.raises(ImageError, match=r"expected an RGB image \(H, W, 3\), not shape \(4, 4\)"):
        rgb_to_ycbcr(np.zeros((4, 4)))


def test_to_u8_rounds_half_up_and_saturates():
    assert to_u8([-3, 0.5, 1.49, 254.5, 300]).tolist() == [0, 1, 1, 255, 255]


def test_psnr(rng):
    a = rng.integers(0, 256, (20, 30)).astype(float)
    b = a.copy()
    assert psnr(a, b) == float("inf")
    b[5:15, 5:25] += 2.0                       # MSE 4 inside the shaved window
    assert psnr(a, b, border=5) == pytest.approx(10 * np.log10(255 ** 2 / 4))
    b[0, 0] += 100                             # shaved away
    assert psnr(a, b, border=5) == pytest.approx(10 * np.log10(255 ** 2 / 4))
    with pytest.raises(ImageError, match="shapes differ"):
        psnr(a, b[1:])


def test_ssim_matches_scikit_image(rng):
    metrics = pytest.importorskip("skimage.metrics")
    a = rng.integers(0, 256, (40, 50)).astype(float)
    b = np.clip(a + rng.normal(0, 60, a.shape), 0, 255)
    ref = metrics.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref, abs=2e-3)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) < 0.9
    with pytest.raises(ImageError, match="too small for SSIM"):
        ssim(a[:10], b[:10])


def test_degrade_is_pillow_bicubic_rounded():
    yy, xx = np.mgrid[:30, :36]
    y = to_u8(128 + 60 * np.sin(xx / 4.0) * np.cos(yy / 6.0))
    lr = degrade(y, 3)
    assert lr.shape == (10, 12) and lr.dtype == np.uint8
    ref = np.asarray(Image.fromarray(y.astype(np.float32), "F").resize(
        (12, 10), Image.Resampling.BICUBIC))
    assert np.array_equal(lr, to_u8(ref))
    assert np.array_equal(degrade(np.full((6, 6), 77, np.uint8), 2), np.full((3, 3), 77))
    with pytest.raises(ImageError, match="image 31x30 is not a multiple of the scale 3"):
        degrade(np.zeros((30, 31), np.uint8), 3)


def test_bicubic_and_crop():
    assert crop_to_multiple(np.zeros((31, 29, 3)), 3).shape == (30, 27, 3)
    up = bicubic_resize(np.full((4, 5), 9.0), (15, 12))
    assert up.shape == (12, 15) and np.allclose(up, 9.0)


def test_load_and_list_images(tmp_path):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    files = list_images(tmp_path)
    assert [p.name for p in files] == ["a.png", "b.png", "broken.jpg"]
    assert np.array_equal(load_rgb(files[0]), rgb)
    assert load_rgb(files[1]).shape == (8, 9, 3)
    with pytest.raises(ImageError, match="broken.jpg: not an image"):
        load_rgb(files[2])
    with pytest.raises(ImageError, match="nothere.png: no such file"):
        load_rgb(tmp_path / "nothere.png")
    with pytest.raises(ImageError, match="no such file or directory"):
        list_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="empty: no image files"):
        list_images(empty)
