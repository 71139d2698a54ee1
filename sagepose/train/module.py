"""Supervised top-down training as a LightningModule: one training step from batch to loss.

    crops (uint8, CPU workers) -> [device] normalize, photometric aug, coarse dropout
      -> encode heatmap targets from keypoints (codec) -> model -> masked heatmap MSE
         (a SimCC codec, RTMPose's: x and y labels -> MMPose's KLDiscretLoss on the x and y logits)

Validation decodes with flip test, maps keypoints back to the image and scores each val set once per validation
epoch (:mod:`sagepose.train.validation`); ``val/AP``, or ``val/pixel_error`` without sigmas, drives the best
checkpoint. A step whose loss or gradient is not finite is skipped (:mod:`sagepose.train.guards`); a checkpoint
carries the global RNGs and the train loader's position besides what Lightning saves
(:mod:`sagepose.train.resume_state`), so a resumed run goes on as if never stopped.
"""
from __future__ import annotations

import dataclasses
import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from sagepose.codecs import SimCCLabel
from sagepose.config import Config, to_dict
from sagepose.data import batch_aug
from sagepose.data.multi import plan_datasets
from sagepose.geometry import crop_to_image
from sagepose.keypoints import KeypointSchema, schema_to_dict
from sagepose.models import build_model_from_config
from sagepose.models.fusion_head import FusionHead, to_heatmap_coords
from sagepose.models.heads import PerDatasetHeads, per_dataset_heads
from sagepose.models.lora import check_adapter_base, frozen_base, weights_hash
from sagepose.train.fusion_loss import fusion_loss
from sagepose.train.guards import NonFiniteGuard, running_stats
from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse, simcc_kl
from sagepose.train.optim import build_optimizer, build_scheduler
from sagepose.train.resume_state import global_rng_state, loader_state, restore_global_rng_state, restore_loader_state
from sagepose.train.steps import describe_steps, schedule_steps
from sagepose.train.validation import headline_score, logged_metrics, score_val_set, val_line, val_outputs


class TopDownModule(L.LightningModule):
    def __init__(self, cfg: Config, schema: KeypointSchema | None = None):
        """``schema``: the keypoint schema to build the model with instead of resolving ``cfg.model.schema`` (a
        checkpoint's stored one, :func:`sagepose.recipe.checkpoint_schema`). The resolved schema is saved in the
        hyper-parameters (``schema``, plain data), so a checkpoint rebuilds it without the schema file. Validation
        scores against ``cfg.data.val_json``.

        With ``data.datasets`` the model's outputs are the run's plan (:func:`sagepose.data.multi.plan_datasets`:
        the union, or model.schema in convert mode), and each dataset's val set is scored in its own schema."""
        super().__init__()
        self.cfg = cfg
        self.plan = None
        if cfg.data.datasets:
            self.plan = plan_datasets(cfg, schema)
            schema = self.plan.schema
        self.model = build_model_from_config(cfg.model, schema=schema)
        if self.plan is not None and cfg.model.heads == "per_dataset":
            self.model.head = per_dataset_heads(self.model.head, self.plan.union)
        self.save_hyperparameters({"config": to_dict(cfg), "schema": schema_to_dict(self.model.schema)})
        self.register_buffer("joint_weights", torch.tensor(self.model.schema.joint_weights), persistent=False)
        self._val_outputs: list[dict] = []
        self.total_steps = max(cfg.trainer.max_steps, 0)  # the run's optimizer steps, set by configure_optimizers
        self._told_no_pckh: set[str] = set()  # MPII val sets scored without PCKh, said once each
        self.last_predictions: list[dict] = []
        self.last_instances = np.zeros(0, np.int64)  # val dataset indices behind last_predictions, sorted
        self.last_metrics: dict = {}
        self.guard = NonFiniteGuard(cfg.trainer.max_nonfinite_steps, cfg.trainer.out_dir)
        self._backbone_frozen = False
        self._loader_state: dict | None = None  # a resumed run's position in its epoch, until training starts
        self._ndims = {name: p.ndim for name, p in self.model.named_parameters()}  # before any FSDP flattening
        # model.lora: the adapters' frozen base (by name in self.model), never trained, shared with an EMA teacher
        # and left out of checkpoints (rebuilt from model.init_checkpoint, checked by its hash)
        self.frozen_base = frozen_base(self.model, cfg.model.lora.train_blocks)
        # hashed here, whole, before any device move or FSDP sharding (seconds for a billion parameters)
        self.base_hash = weights_hash(self.frozen_base) if self.frozen_base else None

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped for a non-finite loss or gradient, in all."""
        return self.guard.skipped_steps

    # ---- training -------------------------------------------------------------------------
    def _augment(self, batch: dict) -> torch.Tensor:
        """uint8 BGR crops (B, H, W, 3) -> normalized float (B, 3, H, W), augmented on the device.

        Each sample's draws depend only on (seed, epoch, its dataset index), as its CPU augmentation
        does: the same crops however the global batch is split over ranks, and on resume.
        """
        d = self.cfg.data
        keys = batch_aug.sample_keys(self.cfg.trainer.seed, self.current_epoch, batch["index"])
        crops = batch_aug.augment(batch["img"], keys, photometric_prob=d.photometric_prob, blur_prob=d.blur_prob,
                                  noise_prob=d.noise_prob, coarse_dropout_prob=d.coarse_dropout_prob)
        return self.model.normalize(crops)

    def _targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> heatmap targets (B, K, H, W) (a SimCC codec's x and y labels, (B, K, Wx + Wy)) and the loss's joint
        weights (B, K): labelled joints inside the heatmap (the codec's), times the schema's joint weights when
        ``trainer.use_joint_weights``."""
        targets, weights = self.model.codec.encode(batch["keypoints"], batch["visible"])
        if "labeled" in batch:  # several datasets: each sample's loss covers the outputs its dataset labels
            weights = weights * batch["labeled"].to(weights.dtype)
        if self.cfg.trainer.use_joint_weights:
            weights = weights * self.joint_weights
        return targets, weights

    def on_fit_start(self):
        t = self.cfg.trainer
        if t.compile and getattr(self.model, "_compiled_call_impl", None) is None:
            # in place (nn.Module.compile): the forward is compiled, parameters and state-dict names stay as they
            # are, so checkpoints load uncompiled; static shapes (a last short batch compiles once more)
            kwargs = {"mode": t.compile_mode} if t.compile_backend == "inductor" else {}
            self.model.compile(backend=t.compile_backend, dynamic=False, **kwargs)

    def on_train_batch_start(self, batch, batch_idx):
        # phase one of a fine-tuning recipe: the head learns on a frozen backbone (checked every batch, so
        # a run resumed mid-epoch is in the right phase too)
        self._freeze_backbone(self.current_epoch < self.cfg.optim.freeze_backbone_epochs)
        if batch_idx % self.trainer.accumulate_grad_batches == 0:  # the first micro-batch of an optimizer step
            self.guard.start_step(self.device, running_stats(self.model))

    def training_step(self, batch, batch_idx):
        x = self._augment(batch)
        targets, weights = self._targets(batch)
        # several datasets with a head each: each sample through its dataset's
        dataset = batch["member"] if isinstance(self.model.head, PerDatasetHeads) else None
        if isinstance(self.model.head, FusionHead):  # heatmap + offset + variance maps, six loss terms
            keypoints = to_heatmap_coords(batch["keypoints"], self.model.codec)
            head = self.model.head
            loss, logs = fusion_loss(self.model(x), targets, weights, keypoints, self.cfg.trainer.fusion_loss,
                                     radius=head.radius, blur_kernel_size=head.blur_kernel_size)
        elif isinstance(self.model.codec, SimCCLabel):  # x and y logits side by side: MMPose's KLDiscretLoss
            loss, logs = simcc_kl(self.model(x, dataset), targets, weights, x_bins=self.model.codec.simcc_size[0])
        else:
            loss_fn = heatmap_cross_entropy if self.model.heatmap_output == "softmax" else heatmap_mse
            loss, logs = loss_fn(self.model(x, dataset), targets, weights)
        self.guard.mark(loss)  # acted on in on_before_optimizer_step: every DDP rank must run backward first
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=x.shape[0])
        return loss

    def _freeze_backbone(self, frozen: bool) -> None:
        """Stop (or resume) training the backbone. Its parameters stay in the optimizer: without a gradient
        AdamW leaves them as they are, and no activations are kept for their backward."""
        if frozen != self._backbone_frozen:
            base = {id(p) for p in self.frozen_base.values()}  # an adapter run's base stays frozen
            for p in self.model.backbone.parameters():
                if id(p) not in base:
                    p.requires_grad_(not frozen)
            self._backbone_frozen = frozen

    # ---- the non-finite guard (sagepose.train.guards) -------------------------------------------
    def on_before_optimizer_step(self, optimizer):
        read_now = (self.global_step + 1) % self.cfg.trainer.log_every_steps == 0
        self.guard.before_optimizer_step(optimizer, list(self.parameters()), running_stats(self.model),
                                         self.trainer.strategy, self.global_step, read_now, self._log_skipped)

    def _log_skipped(self, skipped: float) -> None:
        self.log("train/skipped_steps", skipped)

    def on_train_end(self) -> None:
        self.guard.read(self.global_step)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val and self.trainer.strategy.__class__.__name__ == "FSDPStrategy":
            # the norm of sharded gradients needs FSDP's own all-reduce (Lightning leaves this to the module)
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        elif gradient_clip_val:
            # by hand: no GradScaler runs here (fp16 is refused), so there is nothing to unscale first; Lightning's
            # bf16 plugin refuses to clip for an optimizer that could unscale itself (fused AdamW), though none will
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # ---- checkpoint extras (sagepose.train.resume_state) ----------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning restores model, optimizer, scheduler, loops and callbacks (EMA); the global RNGs (drop path),
        # the guard's counters and the train loader's position (restored in on_train_start) are ours
        self.guard.read(self.global_step)
        checkpoint["sagepose"] = {"rng": global_rng_state(), **self.guard.state_dict(),
                                  "train_loader": loader_state(self.trainer.train_dataloader)}
        if self.frozen_base and self.cfg.model.init_checkpoint:  # an adapter run: not its frozen base
            for key in self._base_keys():  # nor in the raw weights beside an EMA callback's average
                for part in ("state_dict", "current_model_state"):
                    checkpoint.get(part, {}).pop(key, None)
            checkpoint["sagepose"]["lora"] = {"base": str(self.cfg.model.init_checkpoint), "model": self.cfg.model.name,
                                              "base_hash": self.base_hash}

    def _base_keys(self) -> list[str]:
        """The frozen base's keys in this module's state dict (the student's, and a teacher's sharing them)."""
        own = self.state_dict(keep_vars=True)
        return [k for prefix in ("model.", "teacher.model.") for n in self.frozen_base if (k := prefix + n) in own]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("sagepose")
        if state is None:
            return
        if "lora" in state:  # an adapter run's checkpoint: its frozen base is this module's, if the hash says so
            check_adapter_base(state["lora"], self.base_hash or "", "checkpoint")
            own = self.state_dict()
            for part in ("state_dict", "current_model_state"):
                if part in checkpoint:
                    for key in self._base_keys():
                        checkpoint[part].setdefault(key, own[key])
        self.guard.load_state_dict(state)
        self._loader_state = state.get("train_loader")
        restore_global_rng_state(state["rng"])

    def on_train_start(self):
        restore_loader_state(self.trainer.train_dataloader, self._loader_state)
        self._loader_state = None

    # ---- validation (sagepose.train.validation) ------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x = self.model.normalize(batch["img"])
        # several datasets with a head each: this val set's dataset's
        dataset = self.plan.scored()[dataloader_idx] if isinstance(self.model.head, PerDatasetHeads) else None
        if "img_scales" in batch:  # the multi-scale test, as predict runs it: averaged in the unscaled box's frame
            extra = [f for f in self.model.test_scales if f != 1.0]
            heatmaps = sum(self.model.scale_heatmaps(x if f == 1.0 else
                                                     self.model.normalize(batch["img_scales"][:, extra.index(f)]),
                                                     f, dataset)
                           for f in self.model.test_scales) / len(self.model.test_scales)
        else:
            heatmaps = self.model.predict_heatmaps(x, dataset)
        kpts, scores = self.model.decode(heatmaps)
        kpts = crop_to_image(kpts, self.model.input_size, batch["center"], batch["scale"])
        if self.plan is not None:  # the outputs back to the dataset's own joints
            member = self.plan.members[self.plan.scored()[dataloader_idx]]
            kpts, scores = member.from_model.apply_torch(kpts, scores)
        with_labels = not self.cfg.data.det_json  # detections carry no labels to pair with
        self._val_outputs.append((dataloader_idx, val_outputs(batch, kpts, scores, with_labels)))

    def on_validation_epoch_end(self):
        outs, self._val_outputs = self._val_outputs, []
        if self.plan is None:
            if self.cfg.data.val_json is None:
                return
            scored = self._score([o for _, o in outs], self.model.schema, self.cfg.data.val_json)
            if scored is None:
                return
            metrics, self.last_predictions, self.last_instances = scored
        else:
            metrics, self.last_predictions, self.last_instances = {}, {}, {}
            headline = []
            for k, m in enumerate(self.plan.scored()):
                member = self.plan.members[m]
                scored = self._score([o for i, o in outs if i == k], member.schema, member.config.val_json,
                                     coco_format=member.config.format == "coco")
                if scored is None:
                    continue
                got, self.last_predictions[member.name], self.last_instances[member.name] = scored
                metrics[member.name] = got
                headline.append(headline_score(got))
            headline = [h for h in headline if h is not None]
            metrics["score"] = float(np.mean(headline)) if headline else None
        self.last_metrics = metrics
        multi = self.plan is not None
        n = sum(len(v) for v in self.last_instances.values()) if multi else len(self.last_instances)
        self.log_dict({**logged_metrics(metrics, multi), "val/instances": float(n)})
        if self.trainer.state.fn == TrainerFn.FITTING:  # `sagepose test` prints its metrics as JSON itself
            self.print(val_line(self.current_epoch, self.global_step, metrics, multi))  # rank 0, above the bar

    def _score(self, outs: list[dict], schema: KeypointSchema, gt_json: str, coco_format: bool = True):
        return score_val_set(outs, schema, gt_json, self.trainer, coco_format, self._told_no_pckh, say=self.print)

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.cfg.optim, self._ndims)
        total = self.total_steps = int(self.trainer.estimated_stepping_batches)
        t = self.cfg.trainer
        if not math.isfinite(self.trainer.num_training_batches):  # a max_steps bound: Lightning has not looked yet
            self.trainer.fit_loop.setup_data()
        batches = self.trainer.num_training_batches
        per_epoch = max(int(batches) // t.accumulate_grad_batches, 1) if math.isfinite(batches) else total
        if self.trainer.is_global_zero:  # not self.print: before the first epoch no progress bar would show it
            print(describe_steps(t, total, per_epoch, self.cfg.data.batch_size), flush=True)
        o = self.cfg.optim
        o = dataclasses.replace(o, warmup_iters=schedule_steps(o.warmup_iters, o.warmup_fraction, total))
        scheduler = build_scheduler(optimizer, o, per_epoch, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
