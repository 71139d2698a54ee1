"""Bounded convergence check: the demo recipe learns on synthetic people (the full run is `sagepose demo`).

The steps are production's: a Lightning fit of :class:`sagepose.train.module.TopDownModule` (its device
augmentation, target encoding, loss, optimizer, warm-up + cosine schedule and gradient clipping), only shortened."""
from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sagepose.config import load_config
from sagepose.configs import resolve_config
from sagepose.data.synth import generate_dataset
from sagepose.train.loaders import build_loaders
from sagepose.train.module import TopDownModule

STEPS = 120


class _Losses(Callback):
    """Each optimizer step's training loss, as ``training_step`` returned it."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
def test_demo_recipe_loss_falls_well_below_chance_within_120_steps(tmp_path):
    torch.manual_seed(0)
    train_json = generate_dataset(tmp_path, 120, seed=3, split="train", workers=1)
    cfg = load_config(resolve_config("demo_tiny_vit"), [
        f"data.train_json={train_json}", "data.num_workers=0", f"trainer.out_dir={tmp_path / 'run'}",
        f"trainer.max_steps={STEPS}", "trainer.max_epochs=-1", "trainer.accelerator=cpu"])
    module = TopDownModule(cfg)
    loader = build_loaders(cfg, module.model)["train"]
    record = _Losses()
    t = cfg.trainer
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=t.max_steps, max_epochs=t.max_epochs,
                        precision=t.precision, gradient_clip_val=cfg.optim.grad_clip, use_distributed_sampler=False,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[record], default_root_dir=str(tmp_path / "run"))
    trainer.fit(module, train_dataloaders=loader)
    losses = record.losses
    assert len(losses) == trainer.global_step == STEPS and module.skipped_steps == 0
    chance = math.log(np.prod(module.model.codec.heatmap_size))  # cross-entropy of a uniform map
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert first > 0.95 * chance
    assert last < 0.8 * chance, (first, last, chance)
