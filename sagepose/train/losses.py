"""Losses as small functions returning ``(loss, logs)``; weights are applied by the caller once."""
from __future__ import annotations

import torch


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """MMPose's KeypointMSELoss with target weights: mean over (B, K, H, W) of w_k * (pred - target)^2.

    pred, target (B, K, H, W); weights (B, K) -- zero for joints a sample does not label.
    """
    per_pixel = (pred.float() - target.float()) ** 2 * weights.float()[:, :, None, None]
    loss = per_pixel.mean()
    return loss, {"loss/heatmap_mse": loss.detach()}
