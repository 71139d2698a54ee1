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


def simcc_kl(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, x_bins: int, beta: float = 10.0,
             label_softmax: bool = True, label_beta: float = 10.0) -> tuple[torch.Tensor, dict]:
    """MMPose's KLDiscretLoss on SimCC logits; the defaults are RTMPose's configs' (beta 10, softmax labels).

    logits, labels (B, K, Wx + Wy), x's ``x_bins`` bins first (:mod:`sagepose.codecs.simcc`); weights (B, K) -- 0
    for joints a sample does not label (MMPose's ``use_target_weight=False`` is weights of ones). Per axis and joint:
    KL(t || softmax(beta * logits)) averaged over the axis' bins, t the label, or softmax(label_beta * label) where
    ``label_softmax``; times the joint's weight, summed over the two axes, the joints and the batch, over K.
    Parity: summed over the batch, not averaged, as MMPose -- the loss grows with the batch, AdamW's step does not.
    """
    loss = logits.new_zeros((), dtype=torch.float32)
    w = weights.float()
    axes = lambda t: t.float().tensor_split([x_bins], dim=-1)  # (x, y)
    for pred, target in zip(axes(logits), axes(labels)):
        logp = torch.log_softmax(pred * beta, dim=-1)
        t = torch.softmax(target * label_beta, dim=-1) if label_softmax else target
        kl = torch.nn.functional.kl_div(logp, t, reduction="none").mean(-1)  # (B, K); t log t is 0 where t is 0
        loss = loss + (kl * w).sum()
    loss = loss / logits.shape[1]
    return loss, {"loss/simcc_kl": loss.detach()}
