"""Bounded convergence check: the demo recipe learns on synthetic people (the full run is `sagepose demo`)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sagepose.config import load_config
from sagepose.configs import resolve_config
from sagepose.data.synth import generate_dataset
from sagepose.models import build_model_from_config
from sagepose.train.loaders import build_loaders
from sagepose.train.losses import heatmap_cross_entropy
from sagepose.train.optim import build_optimizer


@pytest.mark.slow
def test_demo_recipe_loss_falls_well_below_chance_within_120_steps(tmp_path):
    torch.manual_seed(0)
    train_json = generate_dataset(tmp_path, 120, seed=3, split="train", workers=1)
    cfg = load_config(resolve_config("demo_tiny_vit"), [f"data.train_json={train_json}", "data.num_workers=0"])
    model = build_model_from_config(cfg.model).train()
    loader = build_loaders(cfg, model)["train"]
    opt = build_optimizer(model, cfg.optim)
    losses = []
    while len(losses) < 120:
        for batch in loader:
            hm, w = model.codec.encode(batch["keypoints"], batch["visible"])
            loss, _ = heatmap_cross_entropy(model(model.normalize(batch["img"])), hm, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == 120:
                break
    chance = math.log(np.prod(model.codec.heatmap_size))  # cross-entropy of a uniform map
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first > 0.95 * chance
    assert last < 0.8 * chance, (first, last, chance)
