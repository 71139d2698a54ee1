"""Bounded convergence checks: the demo recipe learns on synthetic people (the full run is `sagepose demo`), and a
shrunk RTMPose's training step (SimCC labels, KLDiscretLoss) fits a few of them.

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


# a shrunk RTMPose (CSPNeXt x0.25 wide, the head 64 wide) at 64x96 crops: 1.4M parameters, ~0.1 s a step on one core
RTMPOSE_SMALL = ["model.name=rtmpose-t", "model.input_size=[64, 96]",
                 "model.arch={'widen': 0.25, 'deepen': 0.33, 'hidden': 64, 's': 32}"]


@pytest.mark.slow
def test_rtmpose_training_step_fits_synthetic_people_far_below_the_mean_pose(tmp_path, one_thread):
    """The production step of a SimCC model -- codec labels, KLDiscretLoss, AdamW, warm-up + cosine -- fits 33
    synthetic people (12 images; no augmentation, so no flip test either) within 150 steps: their crops' keypoints
    decode far below the error of the per-joint mean pose (what a model that ignores its input would learn), and the
    production validation (SimCC decode, back to image px, COCO OKS) scores them."""
    torch.manual_seed(0)
    train_json = generate_dataset(tmp_path, 12, seed=3, split="train", workers=1)
    cfg = load_config(None, [*RTMPOSE_SMALL, "model.flip_test=false", f"data.train_json={train_json}",
                             f"data.val_json={train_json}", "data.num_workers=0", "data.batch_size=32",
                             "data.flip_prob=0", "data.half_body_prob=0", "data.rotate_prob=0", "data.shift_prob=0",
                             "data.scale_factor=[1.0, 1.0]", "optim.lr=1e-3", "optim.weight_decay=0.0",
                             "optim.warmup_iters=10", "optim.schedule=cosine", "optim.grad_clip=null",
                             f"trainer.out_dir={tmp_path / 'run'}", "trainer.max_steps=150", "trainer.max_epochs=-1",
                             "trainer.accelerator=cpu"])
    module = TopDownModule(cfg)
    loaders = build_loaders(cfg, module.model)
    record = _Losses()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=cfg.trainer.max_steps, max_epochs=-1,
                        use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
                        default_root_dir=str(tmp_path / "run"))
    trainer.fit(module, train_dataloaders=loaders["train"])
    assert len(record.losses) == trainer.global_step == 150 and module.skipped_steps == 0
    assert np.mean(record.losses[-10:]) < 0.2 * np.mean(record.losses[:5])  # measured: 0.07 / 1.20

    batch = next(iter(loaders["train"]))
    module.model.eval()
    with torch.no_grad():
        keypoints, _ = module.model.decode(module.model(module.model.normalize(batch["img"])))
    shown, truth = batch["visible"] > 0, batch["keypoints"]
    mean_pose = torch.where(shown[..., None], truth, torch.nan).nanmean(0)  # (K, 2) over the batch's people
    error = (keypoints - truth).norm(dim=-1)[shown].mean()
    baseline = (mean_pose - truth).norm(dim=-1)[shown].mean()
    assert error < 0.25 * baseline, (error, baseline)  # measured: 0.6 px / 12.2 px

    trainer.validate(module, dataloaders=loaders["val"], verbose=False)
    assert module.last_metrics["AP"] > 0.8, module.last_metrics  # measured: 0.97
