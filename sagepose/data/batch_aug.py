"""Batched pixel augmentation and normalisation on the device (torch only).

Order in a train step: ``photometric`` -> ``coarse_dropout`` -> ``normalize``. The
first two take and return (B, H, W, 3) BGR batches on the 0-255 scale (uint8 or
float, dtype kept); ``normalize`` turns them into the model's (B, 3, H, W) float RGB.
Every random number comes from the given ``torch.Generator``; per-sample parameters
are drawn on the generator's device and moved, dense noise is drawn there too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)  # MMPose's PoseDataPreprocessor, 0-255 scale
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def normalize(crops: torch.Tensor, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) RGB ``(x - mean) / std``; mean / std are RGB, 0-255."""
    x = crops.flip(-1).permute(0, 3, 1, 2).to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # channels-last strides, from the free permute


@dataclass(frozen=True)
class PhotometricConfig:
    """MMPose's PhotometricDistortion: each step applied per sample with probability ``p``.

    ``hue_delta`` is in OpenCV 8-bit hue units (half-degrees), as there.
    """

    p: float = 0.5
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18


def _rand(n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _uniform(lo: float, hi: float, n: int, generator, device) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


def photometric(crops: torch.Tensor, generator: torch.Generator,
                cfg: PhotometricConfig = PhotometricConfig()) -> torch.Tensor:
    """(B, H, W, 3) BGR 0-255 -> same shape and dtype, per-sample photometric distortion.

    Brightness, contrast (before or after the HSV steps, at random), saturation and
    hue in HSV, then a random channel permutation -- each with probability ``p``,
    clipped to 0-255 after every step. (MMPose's copy tests ``contrast_mode == 1`` at
    both places, so it applies contrast twice or never; we apply it once, as its
    docstring and mmdet's original describe.)
    """
    b, dev = crops.shape[0], crops.device
    x = crops.float()
    on = lambda: _rand(b, generator, dev) < cfg.p  # noqa: E731
    view = lambda t: t.view(b, 1, 1, 1)  # noqa: E731
    beta = torch.where(on(), _uniform(-cfg.brightness_delta, cfg.brightness_delta, b, generator, dev), 0.0)
    alpha = torch.where(on(), _uniform(*cfg.contrast_range, b, generator, dev), 1.0)
    contrast_last = on()
    sat = torch.where(on(), _uniform(*cfg.saturation_range, b, generator, dev), 1.0)
    hue_steps = torch.randint(-cfg.hue_delta, cfg.hue_delta, (b,), generator=generator,
                              device=generator.device).to(dev)
    hue = torch.where(on(), hue_steps.float() * 2.0, 0.0)  # OpenCV hue unit = 2 degrees
    swap = on()
    perm = torch.argsort(torch.rand(b, 3, generator=generator, device=generator.device), dim=1).to(dev)

    x = (x + view(beta)).clamp(0, 255)
    x = (x * view(torch.where(contrast_last, 1.0, alpha))).clamp(0, 255)
    h, s, v = _bgr_to_hsv(x)
    x = _hsv_to_bgr((h + hue.view(b, 1, 1)) % 360.0, (s * sat.view(b, 1, 1)).clamp(0, 1), v)
    x = (x * view(torch.where(contrast_last, alpha, 1.0))).clamp(0, 255)
    perm = torch.where(swap[:, None], perm, torch.arange(3, device=dev))
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

    Hole sides are fractions of the crop side; ``fill`` is ``"zero"`` or ``"noise"``
    (uniform 0-255 per pixel and channel).
    """

    p: float = 0.5
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


def dropout_mask(shape: tuple[int, int, int], generator: torch.Generator, device,
                 cfg: CoarseDropoutConfig = CoarseDropoutConfig()) -> torch.Tensor:
    """-> (B, H, W) bool, True inside the holes; holes lie fully inside the crop."""
    b, hgt, wid = shape
    ys = torch.arange(hgt, device=device).view(1, hgt, 1)
    xs = torch.arange(wid, device=device).view(1, 1, wid)
    num = torch.randint(cfg.min_holes, cfg.max_holes + 1, (b,), generator=generator,
                        device=generator.device).to(device)
    num = torch.where(_rand(b, generator, device) < cfg.p, num, 0)
    mask = torch.zeros(b, hgt, wid, dtype=torch.bool, device=device)
    for j in range(cfg.max_holes):  # a few holes, each vectorised over the batch
        hh = (_uniform(cfg.min_height, cfg.max_height, b, generator, device) * hgt).round().clamp(1, hgt)
        ww = (_uniform(cfg.min_width, cfg.max_width, b, generator, device) * wid).round().clamp(1, wid)
        y0 = (_rand(b, generator, device) * (hgt - hh + 1)).floor()
        x0 = (_rand(b, generator, device) * (wid - ww + 1)).floor()
        hole = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + hh).view(b, 1, 1))
                & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ww).view(b, 1, 1)))
        mask |= hole & (j < num).view(b, 1, 1)
    return mask


def coarse_dropout(crops: torch.Tensor, generator: torch.Generator,
                   cfg: CoarseDropoutConfig = CoarseDropoutConfig()) -> torch.Tensor:
    """(B, H, W, C) 0-255 batch -> same, with random rectangles filled by zeros or noise."""
    b, hgt, wid, c = crops.shape
    mask = dropout_mask((b, hgt, wid), generator, crops.device, cfg)[..., None]
    if cfg.fill == "zero":
        return crops.masked_fill(mask, 0)
    noise = torch.randint(0, 256, crops.shape, generator=generator, device=generator.device)
    return torch.where(mask, noise.to(crops.device, crops.dtype), crops)
