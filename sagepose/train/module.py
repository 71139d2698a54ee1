"""Supervised top-down training as a LightningModule: one training step from batch to loss.

    crops (uint8, CPU workers) -> [device] normalize, photometric aug, coarse dropout
      -> encode heatmap targets from keypoints (codec) -> model -> masked heatmap MSE

Validation decodes with flip test, maps keypoints back to the image and scores them
with pycocotools once per validation epoch (``val/AP`` drives the best checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch

from sagepose.config import Config, to_dict
from sagepose.data import batch_aug
from sagepose.eval import evaluate_coco, make_results
from sagepose.geometry import crop_to_image
from sagepose.models import build_model_from_config
from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse
from sagepose.train.optim import build_optimizer, build_scheduler


class TopDownModule(L.LightningModule):
    def __init__(self, cfg: Config, val_gt_json: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.val_gt_json = val_gt_json
        self.model = build_model_from_config(cfg.model)
        self.save_hyperparameters({"config": to_dict(cfg), "val_gt_json": val_gt_json})
        self.register_buffer("joint_weights", torch.tensor(self.model.schema.joint_weights), persistent=False)
        self._val_outputs: list[dict] = []
        self.last_predictions: list[dict] = []

    # ---- training -------------------------------------------------------------------------
    def _augment(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 BGR crops (B, H, W, 3) -> normalized float (B, 3, H, W), augmented on the device."""
        d = self.cfg.data
        gen = torch.Generator(device=crops.device)
        gen.manual_seed(self.cfg.trainer.seed * 1_000_003 + self.global_step)
        if d.photometric_prob > 0:
            crops = batch_aug.photometric(crops, gen, batch_aug.PhotometricConfig(p=d.photometric_prob))
        if d.coarse_dropout_prob > 0:
            crops = batch_aug.coarse_dropout(crops, gen, batch_aug.CoarseDropoutConfig(p=d.coarse_dropout_prob))
        return self.model.normalize(crops)

    def on_train_epoch_start(self):
        # per-sample randomness is a function of (seed, epoch, index): tell the dataset the epoch
        self.trainer.train_dataloader.dataset.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        x = self._augment(batch["img"])
        targets, weights = self.model.codec.encode(batch["keypoints"], batch["visible"])
        if self.cfg.trainer.use_joint_weights:
            weights = weights * self.joint_weights
        loss_fn = heatmap_cross_entropy if self.model.heatmap_output == "softmax" else heatmap_mse
        loss, logs = loss_fn(self.model(x), targets, weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=x.shape[0])
        return loss

    # ---- validation ------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        x = self.model.normalize(batch["img"])
        heatmaps = self.model.predict_heatmaps(x)
        kpts, scores = self.model.decode(heatmaps)
        kpts = crop_to_image(kpts, self.model.input_size, batch["center"], batch["scale"])
        self._val_outputs.append({
            "image_id": batch["image_id"].cpu().numpy(), "keypoints": kpts.float().cpu().numpy(),
            "scores": scores.float().cpu().numpy(), "bbox_score": batch["bbox_score"].cpu().numpy(),
            "area": batch["scale"].prod(-1).cpu().numpy()})

    def on_validation_epoch_end(self):
        outs, self._val_outputs = self._val_outputs, []
        if not outs or self.val_gt_json is None:
            return
        cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, cat)
            cat = {k: np.concatenate([g[k] for g in gathered]) for k in cat}
        results = make_results(cat["image_id"], cat["keypoints"], cat["scores"], cat["bbox_score"],
                               cat["area"], self.model.schema.sigmas_array())
        self.last_predictions = results
        metrics = evaluate_coco(self.val_gt_json, results, sigmas=self.model.schema.sigmas_array())
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.as_dict().items() if k != "num_predictions"},
                      rank_zero_only=True, sync_dist=False)

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.cfg.optim)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        scheduler = build_scheduler(optimizer, self.cfg.optim, per_epoch, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def save_predictions(results: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(path)
