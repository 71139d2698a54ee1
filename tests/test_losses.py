"""Losses: MMPose's weighted heatmap MSE and the spatial cross-entropy on analytic cases; SimCC's KL (MMPose's
KLDiscretLoss) against MMPose's on the same tensors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse, simcc_kl

GOLDENS = Path(__file__).parent / "goldens" / "rtmpose"


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


MMPOSE_DEFAULTS = dict(beta=1.0, label_softmax=False, label_beta=10.0)  # KLDiscretLoss's argument defaults


@pytest.mark.parametrize("setting", ["rtmpose", "defaults", "unweighted", "label_beta"])
def test_simcc_kl_matches_mmposes_kl_discret_loss(setting):
    """tests/goldens/rtmpose/loss.npz: MMPose 1.3.2's KLDiscretLoss on seeded logits and its codec's labels
    (tools/make_rtmpose_goldens.py loss); ``use_target_weight=False`` is weights of ones here."""
    g = dict(np.load(GOLDENS / "loss.npz"))
    args = {**MMPOSE_DEFAULTS, **json.loads(str(g["settings"]))[setting]}
    weights = torch.from_numpy(g["weights"])
    if not args.pop("use_target_weight", True):
        weights = torch.ones_like(weights)
    assert (weights == 0).sum() == (2 if setting != "unweighted" else 0)  # the invisible and the off-crop joint
    loss, logs = simcc_kl(torch.from_numpy(g["logits"]), torch.from_numpy(g["labels"]), weights, int(g["x_bins"]),
                          **args)
    assert loss.item() == pytest.approx(float(g[f"{setting}_loss"]), rel=1e-6)
    assert logs["loss/simcc_kl"] == loss


def test_simcc_kl_is_zero_at_the_labels_sums_over_the_batch_and_skips_zero_weight_joints():
    g = torch.Generator().manual_seed(2)
    labels, logits = torch.rand(2, 3, 10, generator=g), torch.randn(2, 3, 10, generator=g)
    ones = torch.ones(2, 3)
    assert simcc_kl(labels, labels, ones, x_bins=4)[0].item() == pytest.approx(0.0, abs=1e-6)  # beta = label_beta
    one, _ = simcc_kl(logits[:1], labels[:1], ones[:1], x_bins=4)
    two, _ = simcc_kl(torch.cat([logits[:1]] * 2), torch.cat([labels[:1]] * 2), ones, x_bins=4)
    assert two.item() == pytest.approx(2 * one.item(), rel=1e-6)  # MMPose's: summed over samples, over K joints
    masked, _ = simcc_kl(logits, labels, torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), x_bins=4)
    kept, _ = simcc_kl(logits[:1, [0, 2]], labels[:1, [0, 2]], torch.ones(1, 2), x_bins=4)
    rest, _ = simcc_kl(logits[1:], labels[1:], torch.ones(1, 3), x_bins=4)
    assert masked.item() == pytest.approx((2 * kept.item() + 3 * rest.item()) / 3, rel=1e-6)
