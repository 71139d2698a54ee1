"""Batched device augmentation: normalize, photometric distortion, coarse dropout, per-sample keys."""
import cv2
import numpy as np
import pytest
import torch

from sagepose.data import batch_aug
from sagepose.data.batch_aug import (
    _GAMMA,
    CoarseDropoutConfig,
    PhotometricConfig,
    _bgr_to_hsv,
    _hsv_to_bgr,
    _mix,
    _uniform,
    coarse_dropout,
    photometric,
    sample_keys,
)
from sagepose.image import normalize


def _keys(b: int, seed: int = 0, epoch: int = 0) -> torch.Tensor:
    return sample_keys(seed, epoch, torch.arange(b))


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
    x = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255
    h, s, v = _bgr_to_hsv(x)
    ref = cv2.cvtColor(x.numpy().reshape(-1, 16, 3), cv2.COLOR_BGR2HSV).reshape(2, 16, 16, 3)
    np.testing.assert_allclose(h.numpy(), ref[..., 0], atol=0.02)
    np.testing.assert_allclose(s.numpy(), ref[..., 1], atol=1e-5)
    np.testing.assert_allclose(v.numpy(), ref[..., 2], atol=1e-4)
    np.testing.assert_allclose(_hsv_to_bgr(h, s, v).numpy(), x.numpy(), atol=1e-3)


def test_mixer_is_splitmix64():
    # the first outputs of splitmix64 seeded with 1234567, from its reference C code (Vigna), as uint64
    published = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                 16408922859458223821]
    ours = _mix(1234567 + torch.arange(1, 6) * _GAMMA)
    assert [v % 2**64 for v in ours.tolist()] == published


def test_keys_are_distinct_per_seed_epoch_and_index_and_draws_are_uniform():
    keys = torch.cat([sample_keys(seed, epoch, torch.arange(1000)) for seed in (0, 1) for epoch in (0, 1, 2)])
    assert len(set(keys.tolist())) == 6000
    u = _uniform(sample_keys(0, 0, torch.arange(100_000)), 1, 4)
    assert u.min() >= 0 and u.max() < 1
    counts = torch.histc(u.flatten(), bins=10, min=0, max=1)
    assert (counts - 40_000).abs().max() < 1000  # 5 standard deviations of a bin count
    corr = torch.corrcoef(u.T)
    assert (corr - torch.eye(4)).abs().max() < 0.02  # the draws of one key are uncorrelated


def test_each_sample_is_augmented_by_its_key_whatever_batch_it_is_in():
    # 1 process x batch 8 and 2 ranks x batch 4 (samples dealt round-robin), and a shuffled batch
    crops, index = _crops(b=8), torch.arange(8)
    photo, holes = PhotometricConfig(p=0.5), CoarseDropoutConfig(p=0.5, fill="noise")

    def augment(i):
        keys = sample_keys(3, 1, index[i])
        return coarse_dropout(photometric(crops[i], keys, photo), keys, holes)

    whole = augment(torch.arange(8))
    assert torch.equal(torch.cat([augment(torch.arange(0, 8, 2)), augment(torch.arange(1, 8, 2))]),
                       whole[torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])])
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    assert torch.equal(augment(perm), whole[perm])
    assert not torch.equal(whole, crops)
    later = coarse_dropout(photometric(crops, sample_keys(3, 2, index), photo), sample_keys(3, 2, index), holes)
    assert not torch.equal(later, whole)  # another epoch, other draws


def test_photometric_keeps_range_dtype_and_is_deterministic_per_key():
    crops = _crops(b=64)
    cfg = PhotometricConfig(p=1.0)
    a = photometric(crops, _keys(64, seed=1), cfg)
    b = photometric(crops, _keys(64, seed=1), cfg)
    c = photometric(crops, _keys(64, seed=2), cfg)
    assert a.dtype == torch.uint8 and a.shape == crops.shape
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, crops)
    f = photometric(crops.float() * 2 - 100, _keys(64, seed=1), cfg)  # out-of-range input
    assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 255


def test_photometric_with_p0_is_identity_and_brightness_shifts_the_mean():
    crops = _crops()
    assert torch.equal(photometric(crops, _keys(6), PhotometricConfig(p=0.0)), crops)
    gray = torch.full((400, 4, 4, 3), 100, dtype=torch.uint8)
    only_brightness = PhotometricConfig(p=1.0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=1)
    out = photometric(gray, _keys(400), only_brightness).float()
    per_sample = out.mean(dim=(1, 2, 3)) - 100  # uniform in [-32, 32]; hue is void on gray
    assert per_sample.abs().max() <= 32.5 and per_sample.std() > 15


def test_photometric_saturation_scales_hsv_saturation():
    x = torch.tensor([[[[40.0, 120.0, 200.0]]]])  # one BGR pixel
    cfg = PhotometricConfig(p=1.0, brightness_delta=0, contrast_range=(1, 1), saturation_range=(0.5, 0.5),
                            hue_delta=1)
    out = photometric(x, _keys(1, seed=3), cfg)
    _, s0, v0 = _bgr_to_hsv(x)
    _, s1, v1 = _bgr_to_hsv(out)
    # S and V do not depend on channel order, so the random channel swap cannot hide the check
    torch.testing.assert_close(s1, s0 * 0.5)
    torch.testing.assert_close(v1, v0)


def test_coarse_dropout_fills_the_expected_fraction():
    crops = torch.full((16, 40, 20, 3), 200, dtype=torch.uint8)
    one_hole = CoarseDropoutConfig(p=1.0, min_holes=1, max_holes=1, min_height=0.25, max_height=0.25,
                                   min_width=0.5, max_width=0.5)
    out = coarse_dropout(crops, _keys(16), one_hole)
    zeros = (out == 0).all(-1).sum(dim=(1, 2))
    assert zeros.tolist() == [10 * 10] * 16  # 0.25 * 40 by 0.5 * 20, always inside the crop
    assert ((out == 0) | (out == 200)).all()


def test_coarse_dropout_probability_holes_and_noise_fill():
    crops = torch.full((2000, 16, 16, 3), 200, dtype=torch.uint8)
    cfg = CoarseDropoutConfig(p=0.5)
    out = coarse_dropout(crops, _keys(2000), cfg)
    hit = (out == 0).any(-1).flatten(1).any(1).float().mean()
    assert 0.45 < hit < 0.55
    again = coarse_dropout(crops, _keys(2000), cfg)
    assert torch.equal(out, again)
    noisy = coarse_dropout(crops, _keys(2000), CoarseDropoutConfig(p=1.0, fill="noise"))
    changed = (noisy != 200).any(-1)
    assert changed.flatten(1).any(1).all() and noisy[changed].float().std() > 50


def test_coarse_dropout_rejects_bad_config():
    with pytest.raises(ValueError, match="fill"):
        CoarseDropoutConfig(p=0.5, fill="mean")


def test_gaussian_blur_of_a_point_is_the_sampled_normalised_gaussian_and_keeps_constants():
    from sagepose.data.batch_aug import gaussian_blur

    point = torch.zeros(2, 21, 21, 3)
    point[:, 10, 10] = 255.0
    out = gaussian_blur(point, torch.tensor([1.5, 0.0]), radius=6)
    t = np.arange(-6, 7, dtype=np.float64)
    g = np.exp(-0.5 * (t / 1.5) ** 2)
    g /= g.sum()
    expect = 255.0 * np.outer(g, g)
    np.testing.assert_allclose(out[0, 4:17, 4:17, 1].numpy(), expect, atol=1e-3)
    assert float(out[0].sum()) == pytest.approx(3 * 255.0, rel=1e-5)  # the mass stays in the image
    assert torch.equal(out[1], point[1])  # sigma 0: unchanged
    flat = torch.full((1, 16, 12, 3), 77.0)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([2.0]), radius=6), flat)


def test_degrade_noise_has_the_drawn_std_and_every_sample_follows_its_key():
    from sagepose.data.batch_aug import _DEGRADE, DegradeConfig, degrade

    grey = torch.full((8, 64, 48, 3), 128.0)
    noisy = degrade(grey, _keys(8), DegradeConfig(blur_prob=0.0, noise_prob=1.0, noise_std=10.0))
    u = _uniform(_keys(8), _DEGRADE, 4)  # the sample's draws: noise std = noise_std * u[:, 3]
    np.testing.assert_allclose((noisy - 128).flatten(1).std(1).numpy(), 10.0 * u[:, 3].numpy(), rtol=0.05, atol=0.05)
    assert abs(float((noisy - 128).mean())) < 0.1
    crops = _crops(b=8)
    cfg = DegradeConfig(blur_prob=0.5, noise_prob=0.5)
    whole = degrade(crops, _keys(8), cfg)
    assert whole.dtype == torch.uint8 and not torch.equal(whole, crops)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    assert torch.equal(degrade(crops[perm], _keys(8)[perm], cfg), whole[perm])
    assert torch.equal(degrade(crops, _keys(8), DegradeConfig(blur_prob=0.0, noise_prob=0.0)), crops)
    with pytest.raises(ValueError, match="blur_sigma"):
        DegradeConfig(blur_sigma=(0.0, 1.0))


# ---- style_mix: Fourier amplitude mixing, checked on spectra known in closed form ------------------------------
def _image(seed: int, size=(24, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, *size, 3, generator=g) * 200 + 20).double()


def _style(crop, ref, ratio, band=1.0):
    cfg = batch_aug.StyleMixConfig(p=1.0, ratio_range=(ratio, ratio), band=band)
    return batch_aug.style_mix(crop, ref, torch.tensor([7]), cfg).double()


def test_style_mix_keeps_the_phase_a_shifted_copy_changes_nothing():
    x = _image(0)
    shifted = torch.roll(x, shifts=(5, 7), dims=(1, 2))  # same amplitude spectrum, other phase
    torch.testing.assert_close(_style(x.float(), shifted.float(), 1.0), x, atol=1e-3, rtol=0)


def test_style_mix_with_a_flat_reference_interpolates_towards_its_grey():
    x, c = _image(1), 90.0
    flat = torch.full_like(x, c)
    # a flat image's spectrum is its DC term alone: ratio r scales every other amplitude by (1 - r)
    for r in (0.0, 0.5, 1.0):
        torch.testing.assert_close(_style(x.float(), flat.float(), r), (1 - r) * x + r * c, atol=1e-3, rtol=0)


def test_style_mix_band_limits_the_frequencies_mixed():
    x, c = _image(2), 60.0
    flat = torch.full_like(x, c)
    # a band below the lowest non-zero frequency mixes the DC term only: the mean moves, the rest stays
    out = _style(x.float(), flat.float(), 1.0, band=1e-3)
    expected = (x - x.mean(dim=(1, 2), keepdim=True) + c).clamp(0, 255)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)


def test_style_mix_probability_dtype_and_reference_choice():
    crops = torch.randint(0, 256, (16, 12, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    refs = torch.full((3, 12, 10, 3), 128, dtype=torch.uint8)
    keys = batch_aug.sample_keys(0, 0, torch.arange(16))
    off = batch_aug.style_mix(crops, refs, keys, batch_aug.StyleMixConfig(p=0.0))
    assert off.dtype == torch.uint8 and torch.equal(off, crops)
    on = batch_aug.style_mix(crops, refs, keys, batch_aug.StyleMixConfig(p=0.5, ratio_range=(1.0, 1.0)))
    flat = (on == 128).flatten(1).all(1)
    unchanged = (on == crops).flatten(1).all(1)
    assert bool((flat | unchanged).all()) and 0 < int(flat.sum()) < 16  # each sample either fully mixed or not
    # a sample's result depends on its key, not on the batch it came in
    torch.testing.assert_close(batch_aug.style_mix(crops[3:5], refs, keys[3:5],
                                                   batch_aug.StyleMixConfig(p=0.5, ratio_range=(1.0, 1.0))), on[3:5])
    with pytest.raises(ValueError, match="reference crops"):
        batch_aug.style_mix(crops, refs[:, :6], keys, batch_aug.StyleMixConfig(p=1.0))
    with pytest.raises(ValueError, match="StyleMixConfig"):
        batch_aug.StyleMixConfig(p=1.0, band=0.0)
