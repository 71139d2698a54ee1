"""Heatmap targets (the encode side of :mod:`sagepose.codecs.heatmap`): Gaussians drawn for whole batches in torch,
``keypoints (B, K, 2)`` in heatmap pixels -> ``heatmaps (B, K, H, W)``, equal to MMPose 1.3.2's MSRA, UDP and DARK
targets, quirks included (each kept quirk is marked "parity"). Sizes are ``(w, h)`` as in MMPose configs."""
from __future__ import annotations

import torch


def _pixel_grid(heatmap_size: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column (1, 1, 1, W) and row (1, 1, H, 1) pixel indices in ``like``'s dtype and device."""
    w, h = heatmap_size
    xs = torch.arange(w, dtype=like.dtype, device=like.device).view(1, 1, 1, w)
    ys = torch.arange(h, dtype=like.dtype, device=like.device).view(1, 1, h, 1)
    return xs, ys


def window_gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor, heatmap_size: tuple[int, int],
                             sigma: float, subpixel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (B, K, 2) in heatmap pixels, visible (B, K) -> heatmaps (B, K, H, W), weights (B, K).

    A Gaussian of peak 1 cut to a ``(2 * 3 sigma + 1)``-wide window around the rounded
    keypoint. MSRA (``subpixel=False``) centres it on the rounded pixel; UDP
    (``subpixel=True``) on the exact keypoint. Keypoints with ``visible < 0.5`` get an
    all-zero map and keep ``visible`` as weight; those whose window misses the map get
    weight 0.
    """
    w, h = heatmap_size
    radius = 3 * sigma
    # parity: MMPose rounds with int(x + 0.5) and places the window with int(), both
    # truncating toward zero, so keypoints just left of / above the map still count
    # and fractional radii shift the window of keypoints near the top-left border.
    centre = torch.trunc(keypoints + 0.5)
    lo = torch.trunc(centre - radius)
    hi = torch.trunc(centre + radius + 1)
    labelled = visible >= 0.5
    missed = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
    drawn = labelled & ~missed
    weights = torch.where(labelled & missed, torch.zeros_like(visible), visible)

    # Offset of each pixel from the Gaussian's centre, measured inside its window
    # (whose centre cell is (2 * radius + 1) // 2, as in MMPose).
    mu = lo + (2 * radius + 1) // 2
    if subpixel:
        mu = mu + (keypoints - centre)
    xs, ys = _pixel_grid(heatmap_size, keypoints)
    dx = xs - mu[..., 0, None, None]
    dy = ys - mu[..., 1, None, None]
    inside = ((xs >= lo[..., 0, None, None]) & (xs < hi[..., 0, None, None])
              & (ys >= lo[..., 1, None, None]) & (ys < hi[..., 1, None, None]) & drawn[..., None, None])
    heatmaps = torch.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    return torch.where(inside, heatmaps, torch.zeros_like(heatmaps)), weights


def continuous_gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor,
                                 heatmap_size: tuple[int, int],
                                 sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (B, K, 2) in heatmap pixels, visible (B, K) -> heatmaps (B, K, H, W), weights (B, K).

    DARK's unbiased target: an uncut Gaussian at the exact sub-pixel keypoint. Weights
    follow :func:`window_gaussian_heatmaps` (with an un-rounded window).
    """
    w, h = heatmap_size
    radius = 3 * sigma
    labelled = visible >= 0.5
    lo, hi = keypoints - radius, keypoints + radius + 1
    missed = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
    weights = torch.where(labelled & missed, torch.zeros_like(visible), visible)
    xs, ys = _pixel_grid(heatmap_size, keypoints)
    dx = xs - keypoints[..., 0, None, None]
    dy = ys - keypoints[..., 1, None, None]
    heatmaps = torch.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    drawn = (labelled & ~missed)[..., None, None]
    return torch.where(drawn, heatmaps, torch.zeros_like(heatmaps)), weights
