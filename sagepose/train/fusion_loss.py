"""The fusion head's loss: six terms on heatmaps, offsets and log-variances, weighted in one place.

Every term is a number per joint, averaged over the joints by their weights (a joint a sample does
not label has weight 0 and adds nothing); ``FusionLossWeights`` scales each, 0 switches a term off
(it is then not computed); a run sets them as ``trainer.fusion_loss.<term>``. Each term is logged
unweighted as ``loss/fusion_<term>``.

* ``heatmap``  -- squared error of the map, summed over its pixels (MSE x h*w: the same size whatever
  the heatmap resolution, and on the scale of the other terms);
* ``offset``   -- SmoothL1 between the offset map and the quantisation left by the heatmap: the keypoint
  minus where the heatmap-only decode puts the *target* map (MSRA: the rounded pixel; UDP / DARK: ~0),
  over the target Gaussian's support only;
* ``peak``     -- (target peak - predicted heatmap at the target's peak pixel)^2: 1 for MSRA's Gaussians,
  which sit on a pixel; a sub-pixel (UDP) Gaussian's highest pixel is a little below 1;
* ``variance`` -- Gaussian NLL of the realised error under the predicted variance, minus its minimum
  (v*/v - log(v*/v) - 1, v* = the decoded keypoint's squared error per axis + ``min_var``, at most ``MAX_VAR``),
  over the support: its minimum over v is at the mean realised error, so the predicted std is calibrated;
* ``overlap``  -- 1 - Dice overlap of predicted and target maps, 2<p, t> / (|p|^2 + |t|^2);
* ``shape``    -- KL(target || prediction) between the maps made distributions (negative values clamped,
  ``SHAPE_EPS`` added to every pixel of both).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sagepose.config import FusionLossWeights  # the weights are part of the run config (trainer.fusion_loss)
from sagepose.models.fusion_head import decode_heatmaps, fusion_decode, split_outputs

SUPPORT_LEVEL = 0.01  # the target Gaussian's support: where it exceeds 1 % of a unit peak (~3 sigma)
SHAPE_EPS = 0.01  # added to every pixel before normalising, so an all-zero prediction has a finite KL
MIN_VAR = 0.01  # heatmap px^2: the realised variance's floor (a perfect decode still has some spread)
MAX_VAR = 16.0  # heatmap px^2: its cap -- an error past 4 px is a missed joint, not spread; uncapped, the
# early misses' huge v*/v would swamp the other terms' gradients (and the clipped gradient norm)


DEFAULT_WEIGHTS = FusionLossWeights()


def _joint_mean(per_joint: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_joint * weights).sum() / weights.sum().clamp_min(1e-6)


def _support_mean(per_pixel: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) values, (B, K, H, W) bool -> (B, K): mean over the support (0 where it is empty)."""
    return (per_pixel * support).sum((-2, -1)) / support.sum((-2, -1)).clamp_min(1)


def fusion_loss(outputs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, keypoints: torch.Tensor,
                loss_weights: FusionLossWeights = DEFAULT_WEIGHTS, radius: int = 2, blur_kernel_size: int = 0,
                min_var: float = MIN_VAR) -> tuple[torch.Tensor, dict]:
    """outputs (B, 4K, H, W) of a :class:`FusionHead`; target (B, K, H, W) and weights (B, K) from the codec;
    keypoints (B, K, 2) in heatmap pixels (:func:`~sagepose.models.fusion_head.to_heatmap_coords`).
    ``radius`` and ``blur_kernel_size`` are the head's decode settings (for the offset and variance targets).

    Returns the weighted sum and the unweighted terms (detached) under ``loss/fusion_<term>``.
    """
    heatmaps, offsets, log_var = split_outputs(outputs.float())
    t, w, kp = target.float(), weights.float(), keypoints.float()
    support = t > SUPPORT_LEVEL
    lw = loss_weights
    terms: dict[str, torch.Tensor] = {}
    if lw.heatmap:
        terms["heatmap"] = (heatmaps - t).square().sum((-2, -1))
    if lw.offset:
        with torch.no_grad():
            quantisation = kp - decode_heatmaps(t, radius, blur_kernel_size)[0]  # (B, K, 2)
        per_pixel = F.smooth_l1_loss(offsets, quantisation[..., None, None].expand_as(offsets), reduction="none")
        terms["offset"] = _support_mean(per_pixel.sum(2), support)
    if lw.peak:
        peak_value, peak_index = t.flatten(2).max(-1)
        predicted = heatmaps.flatten(2).gather(-1, peak_index[..., None])[..., 0]
        terms["peak"] = (peak_value - predicted).square()
    if lw.variance:
        with torch.no_grad():
            locs = fusion_decode(outputs.detach().float(), radius, blur_kernel_size)[0]
            realised = ((locs - kp).square().sum(-1) / 2 + min_var).clamp_max(MAX_VAR).log()  # (B, K): log v*
        d = (realised[..., None, None] - log_var.clamp(-20, 20))  # log(v* / v)
        terms["variance"] = _support_mean(d.exp() - d - 1, support)
    if lw.overlap:
        dot = (heatmaps * t).sum((-2, -1))
        terms["overlap"] = 1 - 2 * dot / (heatmaps.square().sum((-2, -1)) + t.square().sum((-2, -1))).clamp_min(1e-6)
    if lw.shape:
        p = heatmaps.clamp_min(0).flatten(2) + SHAPE_EPS
        q = t.flatten(2) + SHAPE_EPS
        p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
        terms["shape"] = (q * (q.log() - p.log())).sum(-1)
    means = {name: _joint_mean(value, w) for name, value in terms.items()}
    loss = sum(getattr(lw, name) * value for name, value in means.items())
    if not means:
        loss = outputs.sum() * 0.0
    return loss, {f"loss/fusion_{name}": value.detach() for name, value in means.items()}
