"""Losses as small functions returning ``(loss, logs)``, the per-joint weights applied inside each."""
from __future__ import annotations

import torch


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """MMPose's KeypointMSELoss with target weights: mean over (B, K, H, W) of w_k * (pred - target)^2.

    pred, target (B, K, H, W); weights (B, K) -- zero for joints a sample does not label.
    """
    per_pixel = (pred.float() - target.float()) ** 2 * weights.float()[:, :, None, None]
    loss = per_pixel.mean()
    return loss, {"loss/heatmap_mse": loss.detach()}


def heatmap_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Spatial softmax cross-entropy: -sum_p t_p log softmax(logits)_p per joint, t = target / sum(target).

    logits, target (B, K, H, W); weights (B, K). Averaged over joints by their weights; joints
    whose target is empty (outside the map) must have weight 0. Minus the target's entropy this is
    KL(t || softmax(logits)), which is logged.
    """
    t = target.float().flatten(2)
    t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(logits.float().flatten(2), dim=-1)
    ce = -(t * logp).sum(-1)
    kl = ce + (t * t.clamp_min(1e-12).log()).sum(-1)
    w = weights.float()
    denom = w.sum().clamp_min(1e-6)
    loss = (ce * w).sum() / denom
    return loss, {"loss/heatmap_ce": loss.detach(), "loss/heatmap_kl": ((kl * w).sum() / denom).detach()}
