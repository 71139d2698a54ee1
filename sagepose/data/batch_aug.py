"""Batched pixel augmentation on the device (torch only).

Order in a train step: (``style_mix``, semi-supervised runs only) -> ``photometric`` -> ``degrade`` ->
``coarse_dropout`` -> :func:`sagepose.image.normalize`. All but the last take and return (B, H, W, 3) BGR batches
on the 0-255 scale (uint8 or float, dtype kept); ``normalize`` turns them into the model's (B, 3, H, W) float RGB.

Randomness is per sample: ``keys`` (B,) holds one int64 per sample (:func:`sample_keys` of the
run seed, the epoch and the sample's dataset index), and every random number of sample ``b`` is a
counter-based hash of ``keys[b]`` (splitmix64's mixer in wrapping int64 arithmetic, batched). A
sample is augmented the same way whatever batch, rank or device it lands on, as its CPU
augmentation is (``TopDownDataset``), so 2 processes x batch 4 see the crops 1 process x batch 8 sees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# splitmix64's increment and multipliers (Steele, Lea & Flood 2014), as signed int64
_GAMMA = 0x9E3779B97F4A7C15 - (1 << 64)
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)
_PHOTOMETRIC, _DROPOUT, _NOISE, _DEGRADE, _SENSOR, _STYLE = 1, 2, 3, 4, 5, 6  # the draw streams of a sample key


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function on int64 bits (the products wrap modulo 2^64)."""
    x = (x ^ _shr(x, 30)) * _MUL1
    x = (x ^ _shr(x, 27)) * _MUL2
    return x ^ _shr(x, 31)


def sample_keys(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """Dataset indices (B,) -> (B,) int64 keys: one random stream per (seed, epoch, index)."""
    x = _mix(torch.full_like(index, seed, dtype=torch.int64) + _GAMMA)
    x = _mix(x + epoch + _GAMMA)
    return _mix(x + index.long() + _GAMMA)


def _bits(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """keys (B,) -> (B, n) random int64: the first n splitmix64 outputs of stream ``stream`` of each key."""
    start = _mix(keys + torch.tensor(stream, dtype=torch.int64, device=keys.device) * _GAMMA)
    step = torch.arange(1, n + 1, dtype=torch.int64, device=keys.device) * _GAMMA
    return _mix(start[:, None] + step)


def _uniform(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """keys (B,) -> (B, n) float32 uniform in [0, 1), on multiples of 2^-24."""
    return _shr(_bits(keys, stream, n), 40).float() * 2.0**-24


def uniform(keys: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """keys (B,) -> (B, n) float32 uniform in [0, 1): the per-sample draws, public for the other device-side
    augmentations (:mod:`sagepose.ssl.views`); they pick ``stream`` numbers other than this module's 1-3."""
    return _uniform(keys, stream, n)


@dataclass(frozen=True)
class PhotometricConfig:
    """MMPose's PhotometricDistortion: each step applied per sample with probability ``p``.

    ``p`` has no default here: a run's is ``data.photometric_prob`` (MMPose's recipes use 0.5).
    ``hue_delta`` is in OpenCV 8-bit hue units (half-degrees), as there.
    """

    p: float
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18


def photometric(crops: torch.Tensor, keys: torch.Tensor, cfg: PhotometricConfig) -> torch.Tensor:
    """(B, H, W, 3) BGR 0-255, keys (B,) -> same shape and dtype, per-sample photometric distortion.

    Brightness, contrast (before or after the HSV steps, at even odds), saturation and
    hue in HSV, then a random channel permutation -- each with probability ``p``,
    clipped to 0-255 after every step. (MMPose's copy tests ``contrast_mode == 1`` at
    both places, so it applies contrast twice or never; we apply it once, as its
    docstring and mmdet's original describe.)
    """
    b = crops.shape[0]
    u = _uniform(keys.to(crops.device), _PHOTOMETRIC, 13)
    on = u[:, :5] < cfg.p  # brightness, contrast, saturation, hue, channel swap
    view = lambda t: t.view(b, 1, 1, 1)  # noqa: E731
    lerp = lambda lo, hi, t: lo + (hi - lo) * t  # noqa: E731
    beta = torch.where(on[:, 0], lerp(-cfg.brightness_delta, cfg.brightness_delta, u[:, 5]), 0.0)
    alpha = torch.where(on[:, 1], lerp(*cfg.contrast_range, u[:, 6]), 1.0)
    contrast_last = u[:, 7] < 0.5
    sat = torch.where(on[:, 2], lerp(*cfg.saturation_range, u[:, 8]), 1.0)
    hue_steps = (u[:, 9] * (2 * cfg.hue_delta)).floor() - cfg.hue_delta  # -delta .. delta - 1, as randint
    hue = torch.where(on[:, 3], hue_steps * 2.0, 0.0)  # OpenCV hue unit = 2 degrees
    perm = torch.argsort(u[:, 10:13], dim=1)

    x = crops.float()
    x = (x + view(beta)).clamp(0, 255)
    x = (x * view(torch.where(contrast_last, 1.0, alpha))).clamp(0, 255)
    h, s, v = _bgr_to_hsv(x)
    x = _hsv_to_bgr((h + hue.view(b, 1, 1)) % 360.0, (s * sat.view(b, 1, 1)).clamp(0, 1), v)
    x = (x * view(torch.where(contrast_last, alpha, 1.0))).clamp(0, 255)
    perm = torch.where(on[:, 4, None], perm, torch.arange(3, device=crops.device))
    x = torch.gather(x, 3, perm.view(b, 1, 1, 3).expand_as(x))
    return x.to(crops.dtype) if crops.dtype.is_floating_point else x.round().to(crops.dtype)


def _bgr_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3) BGR -> hue in degrees [0, 360), saturation [0, 1], value (same scale as x)."""
    b, g, r = x.unbind(-1)
    v, arg = x.max(-1)
    c = v - x.min(-1).values
    safe_c = c.clamp_min(1e-8)
    h = torch.where(arg == 2, ((g - b) / safe_c) % 6.0,
                    torch.where(arg == 1, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0))
    h = torch.where(c > 0, h * 60.0, 0.0)
    s = torch.where(v > 0, c / v.clamp_min(1e-8), 0.0)
    return h, s, v


def _hsv_to_bgr(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_bgr_to_hsv` (the standard f(n) = v - v s clamp(min(k, 4 - k), 0, 1) form)."""
    n = torch.tensor([1.0, 3.0, 5.0], device=h.device)  # B, G, R
    k = (n + h[..., None] / 60.0) % 6.0
    return v[..., None] - (v * s)[..., None] * torch.minimum(k, 4.0 - k).clamp(0, 1)


@dataclass(frozen=True)
class CoarseDropoutConfig:
    """Albumentations' CoarseDropout: ``min_holes..max_holes`` rectangles per sample with probability ``p``.

    ``p`` has no default here: a run's is ``data.coarse_dropout_prob``. Hole sides are fractions of
    the crop side; ``fill`` is ``"zero"`` or ``"noise"`` (uniform 0-255 per pixel and channel).
    """

    p: float
    min_holes: int = 1
    max_holes: int = 8
    min_height: float = 0.05
    max_height: float = 0.2
    min_width: float = 0.05
    max_width: float = 0.2
    fill: str = "zero"

    def __post_init__(self):
        if self.fill not in ("zero", "noise"):
            raise ValueError(f"CoarseDropoutConfig.fill must be 'zero' or 'noise', got {self.fill!r}")
        if not 1 <= self.min_holes <= self.max_holes:
            raise ValueError(f"CoarseDropoutConfig: need 1 <= min_holes <= max_holes, "
                             f"got {self.min_holes}, {self.max_holes}")


def dropout_mask(keys: torch.Tensor, size: tuple[int, int], cfg: CoarseDropoutConfig) -> torch.Tensor:
    """keys (B,), size (H, W) -> (B, H, W) bool on the keys' device, True inside the holes; holes lie
    fully inside the crop."""
    b, (hgt, wid) = keys.shape[0], size
    ys = torch.arange(hgt, device=keys.device).view(1, hgt, 1)
    xs = torch.arange(wid, device=keys.device).view(1, 1, wid)
    u = _uniform(keys, _DROPOUT, 2 + 4 * cfg.max_holes)
    num = cfg.min_holes + (u[:, 0] * (cfg.max_holes - cfg.min_holes + 1)).floor()
    num = torch.where(u[:, 1] < cfg.p, num, 0)
    mask = torch.zeros(b, hgt, wid, dtype=torch.bool, device=keys.device)
    for j in range(cfg.max_holes):  # a few holes, each vectorised over the batch
        uh, uw, uy, ux = u[:, 2 + 4 * j: 6 + 4 * j].unbind(1)
        hh = ((cfg.min_height + (cfg.max_height - cfg.min_height) * uh) * hgt).round().clamp(1, hgt)
        ww = ((cfg.min_width + (cfg.max_width - cfg.min_width) * uw) * wid).round().clamp(1, wid)
        y0 = (uy * (hgt - hh + 1)).floor()
        x0 = (ux * (wid - ww + 1)).floor()
        hole = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + hh).view(b, 1, 1))
                & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ww).view(b, 1, 1)))
        mask |= hole & (j < num).view(b, 1, 1)
    return mask


def coarse_dropout(crops: torch.Tensor, keys: torch.Tensor, cfg: CoarseDropoutConfig) -> torch.Tensor:
    """(B, H, W, C) 0-255 batch, keys (B,) -> same, with random rectangles filled by zeros or noise."""
    b, hgt, wid, c = crops.shape
    keys = keys.to(crops.device)
    mask = dropout_mask(keys, (hgt, wid), cfg)[..., None]
    if cfg.fill == "zero":
        return crops.masked_fill(mask, 0)
    noise = _shr(_bits(keys, _NOISE, hgt * wid * c), 56).view(crops.shape)  # 8 random bits a value
    return torch.where(mask, noise.to(crops.dtype), crops)


@dataclass(frozen=True)
class DegradeConfig:
    """Camera degradation: a Gaussian blur of sigma uniform in ``blur_sigma`` px with probability ``blur_prob``,
    then additive Gaussian sensor noise of std uniform in ``(0, noise_std)`` grey levels with probability
    ``noise_prob`` -- the blurred, noisy, low-resolution look of far-away people (surveillance footage)."""

    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 2.0)
    noise_prob: float = 0.5
    noise_std: float = 12.0

    def __post_init__(self):
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"DegradeConfig.blur_sigma must be 0 < low <= high, got {self.blur_sigma}")
        if self.noise_std < 0:
            raise ValueError(f"DegradeConfig.noise_std must be >= 0, got {self.noise_std}")


def gaussian_blur(crops: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, H, W, C) float, sigma (B,) px -> the same, each sample blurred by its own separable Gaussian of taps
    -radius..radius (one grouped convolution per axis, reflected borders); sigma <= 0 leaves a sample unchanged.
    ``radius`` is fixed by the caller, not by the batch, so a sample's result does not depend on its batch."""
    b, hgt, wid, c = crops.shape
    t = torch.arange(-radius, radius + 1, device=crops.device, dtype=torch.float32)
    safe = sigma.float().clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / safe) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).float())
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, 2r+1)
    x = crops.float().permute(0, 3, 1, 2).reshape(1, b * c, hgt, wid)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect" if min(hgt, wid) > radius else "replicate")
    x = F.conv2d(x, k[:, None, :, None], groups=b * c)
    x = F.conv2d(x, k[:, None, None, :], groups=b * c)
    return x.reshape(b, c, hgt, wid).permute(0, 2, 3, 1)


def degrade(crops: torch.Tensor, keys: torch.Tensor, cfg: DegradeConfig) -> torch.Tensor:
    """(B, H, W, 3) BGR 0-255, keys (B,) -> same shape and dtype: per-sample blur, then sensor noise, clipped."""
    b, hgt, wid, c = crops.shape
    keys = keys.to(crops.device)
    u = _uniform(keys, _DEGRADE, 4)
    lo, hi = cfg.blur_sigma
    sigma = torch.where(u[:, 0] < cfg.blur_prob, lo + (hi - lo) * u[:, 1], 0.0)
    std = torch.where(u[:, 2] < cfg.noise_prob, cfg.noise_std * u[:, 3], 0.0)
    radius = max(int(math.ceil(3.0 * hi)), 1)
    x = gaussian_blur(crops, sigma, radius) if bool((sigma > 0).any()) else crops.float()
    if bool((std > 0).any()):
        n = hgt * wid * c
        v = _uniform(keys, _SENSOR, 2 * n).clamp_min(2.0**-25)  # Box-Muller: two uniforms -> one normal
        normal = torch.sqrt(-2.0 * torch.log(v[:, :n])) * torch.cos(2.0 * math.pi * v[:, n:])
        x = x + normal.view(b, hgt, wid, c) * std.view(b, 1, 1, 1)
    x = x.clamp(0, 255)
    return x.to(crops.dtype) if crops.dtype.is_floating_point else x.round().to(crops.dtype)


def augment(crops: torch.Tensor, keys: torch.Tensor, photometric_prob: float = 0.0, blur_prob: float = 0.0,
            noise_prob: float = 0.0, coarse_dropout_prob: float = 0.0) -> torch.Tensor:
    """A training batch's device augmentation, in training's order: photometric, camera degradation, coarse
    dropout (each skipped at probability 0). crops (B, H, W, 3) BGR 0-255, keys (B,) -> crops of the same shape."""
    if photometric_prob > 0:
        crops = photometric(crops, keys, PhotometricConfig(p=photometric_prob))
    if blur_prob > 0 or noise_prob > 0:
        crops = degrade(crops, keys, DegradeConfig(blur_prob=blur_prob, noise_prob=noise_prob))
    if coarse_dropout_prob > 0:
        crops = coarse_dropout(crops, keys, CoarseDropoutConfig(p=coarse_dropout_prob))
    return crops


@dataclass(frozen=True)
class StyleMixConfig:
    """Appearance transfer by Fourier amplitude mixing: with probability ``p`` a crop keeps its phase spectrum (where
    things are) and takes ``ratio`` -- uniform in ``ratio_range`` -- of the amplitude spectrum (how the picture looks:
    colour, contrast, blur, noise) of a reference crop, at spatial frequencies up to ``band`` x Nyquist per axis
    (1 = all of them: blur and sensor noise travel too; FDA's low-frequency swap is a small band with ratio 1)."""

    p: float
    ratio_range: tuple[float, float] = (0.0, 1.0)
    band: float = 1.0

    def __post_init__(self):
        lo, hi = self.ratio_range
        if not (0 <= self.p <= 1 and 0 <= lo <= hi <= 1 and 0 < self.band <= 1):
            raise ValueError(f"StyleMixConfig: need 0 <= p <= 1, 0 <= low <= high <= 1 and 0 < band <= 1, got {self}")


def style_mix(crops: torch.Tensor, refs: torch.Tensor, keys: torch.Tensor, cfg: StyleMixConfig) -> torch.Tensor:
    """(B, H, W, 3) BGR 0-255 crops, (N, H, W, 3) reference crops, keys (B,) -> the crops (same shape and dtype), each
    given the look of one reference (drawn by its key) as :class:`StyleMixConfig` says -- Yang & Soatto's FDA (CVPR
    2020) and Xu et al.'s amplitude mix (FACT, CVPR 2021). The phase is kept, so keypoints stay where they are.

    Per channel: ``A' = A + ratio * band_mask * (A_ref - A)``, image = irfft2(A' e^(i phase)), clipped to 0-255.
    A sample that is not drawn, or a ratio of 0, returns its crop unchanged (up to float rounding)."""
    b, hgt, wid, _ = crops.shape
    if refs.shape[1:] != crops.shape[1:]:
        raise ValueError(f"style_mix: reference crops {tuple(refs.shape[1:])} differ from crops "
                         f"{tuple(crops.shape[1:])}")
    keys = keys.to(crops.device)
    u = _uniform(keys, _STYLE, 3)
    lo, hi = cfg.ratio_range
    ratio = torch.where(u[:, 0] < cfg.p, lo + (hi - lo) * u[:, 1], 0.0)
    pick = (u[:, 2] * refs.shape[0]).long().clamp_max(refs.shape[0] - 1)
    with torch.autocast(crops.device.type, enabled=False):
        x = crops.float().permute(0, 3, 1, 2)
        spec = torch.fft.rfft2(x)
        ref_amp = torch.fft.rfft2(refs[pick].to(crops.device).float().permute(0, 3, 1, 2)).abs()
        fy = torch.fft.fftfreq(hgt, device=crops.device).abs()
        fx = torch.fft.rfftfreq(wid, device=crops.device)
        band = ((fy[:, None] <= 0.5 * cfg.band) & (fx[None, :] <= 0.5 * cfg.band)).float()
        amp = spec.abs()
        mixed = amp + ratio.view(b, 1, 1, 1) * band * (ref_amp - amp)
        out = torch.fft.irfft2(torch.polar(mixed, spec.angle()), s=(hgt, wid))
        out = out.permute(0, 2, 3, 1).clamp(0, 255)
    return out.to(crops.dtype) if crops.dtype.is_floating_point else out.round().to(crops.dtype)
