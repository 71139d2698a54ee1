"""Heatmap losses: MMPose's weighted MSE and the spatial cross-entropy, on analytic cases."""
from __future__ import annotations

import math

import torch

from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse


def test_mse_is_weighted_mean_over_all_pixels():
    pred = torch.zeros(2, 3, 4, 5)
    target = torch.ones(2, 3, 4, 5)
    weights = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    loss, logs = heatmap_mse(pred, target, weights)
    assert math.isclose(loss.item(), weights.sum().item() * 20 / (2 * 3 * 20), rel_tol=1e-6)
    assert "loss/heatmap_mse" in logs


def test_cross_entropy_of_uniform_logits_is_log_area_and_kl_of_ideal_logits_is_zero():
    target = torch.rand(1, 2, 6, 8, generator=torch.Generator().manual_seed(0)) + 0.1
    weights = torch.ones(1, 2)
    loss, _ = heatmap_cross_entropy(torch.zeros(1, 2, 6, 8), target, weights)
    assert math.isclose(loss.item(), math.log(48), rel_tol=1e-6)
    _, logs = heatmap_cross_entropy(target.log(), target, weights)
    assert abs(logs["loss/heatmap_kl"].item()) < 1e-5


def test_cross_entropy_ignores_zero_weight_joints():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 2, 6, 8, generator=g)
    logits = torch.randn(1, 2, 6, 8, generator=g)
    both, _ = heatmap_cross_entropy(logits, target, torch.tensor([[1.0, 0.0]]))
    first, _ = heatmap_cross_entropy(logits[:, :1], target[:, :1], torch.ones(1, 1))
    assert math.isclose(both.item(), first.item(), rel_tol=1e-6)
