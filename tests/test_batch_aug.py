"""Batched device augmentation: normalize, photometric distortion, coarse dropout."""
import cv2
import numpy as np
import pytest
import torch

from sagepose.data.batch_aug import (
    CoarseDropoutConfig,
    PhotometricConfig,
    _bgr_to_hsv,
    _hsv_to_bgr,
    coarse_dropout,
    normalize,
    photometric,
)


def _crops(b=6, h=32, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=g)


def test_normalize_equals_numpy_bgr_to_rgb_mean_std():
    crops = _crops()
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    ref = (crops.numpy()[..., ::-1].astype(np.float64) - mean) / std
    out = normalize(crops)
    assert out.shape == (6, 3, 32, 24) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.transpose(0, 3, 1, 2), atol=1e-5)


def test_hsv_conversion_matches_opencv():
    x = torch.rand(2, 16, 16, 3) * 255
    h, s, v = _bgr_to_hsv(x)
    ref = cv2.cvtColor(x.numpy().reshape(-1, 16, 3), cv2.COLOR_BGR2HSV).reshape(2, 16, 16, 3)
    np.testing.assert_allclose(h.numpy(), ref[..., 0], atol=0.02)
    np.testing.assert_allclose(s.numpy(), ref[..., 1], atol=1e-5)
    np.testing.assert_allclose(v.numpy(), ref[..., 2], atol=1e-4)
    np.testing.assert_allclose(_hsv_to_bgr(h, s, v).numpy(), x.numpy(), atol=1e-3)


def test_photometric_keeps_range_dtype_and_is_deterministic_per_generator():
    crops = _crops(b=64)
    cfg = PhotometricConfig(p=1.0)
    a = photometric(crops, torch.Generator().manual_seed(1), cfg)
    b = photometric(crops, torch.Generator().manual_seed(1), cfg)
    c = photometric(crops, torch.Generator().manual_seed(2), cfg)
    assert a.dtype == torch.uint8 and a.shape == crops.shape
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, crops)
    f = photometric(crops.float() * 2 - 100, torch.Generator().manual_seed(1), cfg)  # out-of-range input
    assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 255


def test_photometric_with_p0_is_identity_and_brightness_shifts_the_mean():
    crops = _crops()
    assert torch.equal(photometric(crops, torch.Generator().manual_seed(0), PhotometricConfig(p=0.0)), crops)
    gray = torch.full((400, 4, 4, 3), 100, dtype=torch.uint8)
    only_brightness = PhotometricConfig(p=1.0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=1)
    out = photometric(gray, torch.Generator().manual_seed(0), only_brightness).float()
    per_sample = out.mean(dim=(1, 2, 3)) - 100  # uniform in [-32, 32]; hue is void on gray
    assert per_sample.abs().max() <= 32.5 and per_sample.std() > 15


def test_photometric_saturation_scales_hsv_saturation():
    x = torch.tensor([[[[40.0, 120.0, 200.0]]]])  # one BGR pixel
    cfg = PhotometricConfig(p=1.0, brightness_delta=0, contrast_range=(1, 1), saturation_range=(0.5, 0.5),
                            hue_delta=1)
    g = torch.Generator().manual_seed(3)
    out = photometric(x, g, cfg)
    _, s0, v0 = _bgr_to_hsv(x)
    _, s1, v1 = _bgr_to_hsv(out)
    # S and V do not depend on channel order, so the random channel swap cannot hide the check
    torch.testing.assert_close(s1, s0 * 0.5)
    torch.testing.assert_close(v1, v0)


def test_coarse_dropout_fills_the_expected_fraction():
    crops = torch.full((16, 40, 20, 3), 200, dtype=torch.uint8)
    one_hole = CoarseDropoutConfig(p=1.0, min_holes=1, max_holes=1, min_height=0.25, max_height=0.25,
                                   min_width=0.5, max_width=0.5)
    out = coarse_dropout(crops, torch.Generator().manual_seed(0), one_hole)
    zeros = (out == 0).all(-1).sum(dim=(1, 2))
    assert zeros.tolist() == [10 * 10] * 16  # 0.25 * 40 by 0.5 * 20, always inside the crop
    assert ((out == 0) | (out == 200)).all()


def test_coarse_dropout_probability_holes_and_noise_fill():
    crops = torch.full((2000, 16, 16, 3), 200, dtype=torch.uint8)
    cfg = CoarseDropoutConfig(p=0.5)
    out = coarse_dropout(crops, torch.Generator().manual_seed(0), cfg)
    hit = (out == 0).any(-1).flatten(1).any(1).float().mean()
    assert 0.45 < hit < 0.55
    again = coarse_dropout(crops, torch.Generator().manual_seed(0), cfg)
    assert torch.equal(out, again)
    noisy = coarse_dropout(crops, torch.Generator().manual_seed(0), CoarseDropoutConfig(p=1.0, fill="noise"))
    changed = (noisy != 200).any(-1)
    assert changed.flatten(1).any(1).all() and noisy[changed].float().std() > 50


def test_coarse_dropout_rejects_bad_config():
    with pytest.raises(ValueError, match="fill"):
        CoarseDropoutConfig(fill="mean")
