"""Supervised top-down training as a LightningModule: one training step from batch to loss.

    crops (uint8, CPU workers) -> [device] normalize, photometric aug, coarse dropout
      -> encode heatmap targets from keypoints (codec) -> model -> masked heatmap MSE

Validation decodes with flip test, maps keypoints back to the image and scores them once per
validation epoch: pycocotools OKS AP when the schema has OKS sigmas, and pixel metrics
(``val/pixel_error``, its median and p95, PCK; :func:`sagepose.eval.pixel_metrics`) against the
labels the val set carries in image pixels, for every schema (not with detection boxes: no pairing
with the labels). ``val/AP``, or ``val/pixel_error`` without sigmas, drives the best checkpoint. Under
DDP / FSDP each rank validates its shard; the predictions are gathered once, keyed by each
instance's dataset index, so every val instance is scored exactly once.

A step whose loss or gradient is not finite is skipped: its gradients are dropped before the
optimizer sees them (AdamW leaves a parameter without a gradient untouched: no update, no decay, no
moment change) and BatchNorm statistics are put back; ``trainer.max_nonfinite_steps`` such steps in
a row stop the run.
"""
from __future__ import annotations

import dataclasses
import math
import random
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from sagepose.config import Config, to_dict
from sagepose.data import batch_aug
from sagepose.data.multi import plan_datasets
from sagepose.eval import box_size, make_results, official_ap, pckh, pixel_metrics
from sagepose.fileio import write_json_atomic
from sagepose.geometry import crop_to_image
from sagepose.keypoints import KeypointSchema, schema_to_dict
from sagepose.models import build_model_from_config
from sagepose.models.fusion_head import FusionHead, to_heatmap_coords
from sagepose.models.heads import PerDatasetHeads, per_dataset_heads
from sagepose.train.fusion_loss import fusion_loss
from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse
from sagepose.train.optim import build_optimizer, build_scheduler
from sagepose.train.steps import describe_steps, schedule_steps


def _skips_on_device(optimizer) -> bool:
    """Whether the optimizer skips a step itself on a ``found_inf`` flag (torch's fused Adam / AdamW)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


# metric entries that are counts, not scores: kept in last_metrics, not logged
_COUNTS = ("num_predictions", "num_joints", "num_nonfinite")


class TopDownModule(L.LightningModule):
    def __init__(self, cfg: Config, val_gt_json: str | None = None, schema: KeypointSchema | None = None):
        """``schema``: the keypoint schema to build the model with instead of resolving ``cfg.model.schema`` (a
        checkpoint's stored one, :func:`sagepose.recipe.checkpoint_schema`). The resolved schema is saved in the
        hyper-parameters (``schema``, plain data), so a checkpoint rebuilds it without the schema file.

        With ``data.datasets`` the model's outputs are the run's plan (:func:`sagepose.data.multi.plan_datasets`:
        the union, or model.schema in convert mode), and each dataset's val set is scored in its own schema."""
        super().__init__()
        self.cfg = cfg
        self.val_gt_json = val_gt_json
        self.plan = None
        if cfg.data.datasets:
            self.plan = plan_datasets(cfg, schema)
            schema = self.plan.schema
        self.model = build_model_from_config(cfg.model, schema=schema)
        if self.plan is not None and cfg.model.heads == "per_dataset":
            self.model.head = per_dataset_heads(self.model.head, self.plan.union)
        self.save_hyperparameters({"config": to_dict(cfg), "val_gt_json": val_gt_json,
                                   "schema": schema_to_dict(self.model.schema)})
        self.register_buffer("joint_weights", torch.tensor(self.model.schema.joint_weights), persistent=False)
        self._val_outputs: list[dict] = []
        self.total_steps = max(cfg.trainer.max_steps, 0)  # the run's optimizer steps, set by configure_optimizers
        self._told_no_pckh: set[str] = set()  # MPII val sets scored without PCKh, said once each
        self.last_predictions: list[dict] = []
        self.last_instances = np.zeros(0, np.int64)  # val dataset indices behind last_predictions, sorted
        self.last_metrics: dict = {}
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite loss or gradient, in all
        self.skipped_in_row = 0
        self._guard: torch.Tensor | None = None  # the fused path's device counters (_read_guard)
        self._step_bad: torch.Tensor | None = None  # any non-finite loss in this step's micro-batches
        self._stats_before: list[torch.Tensor] = []
        self._backbone_frozen = False
        self._loader_state: dict | None = None  # a resumed run's position in its epoch, until training starts
        self._ndims = {name: p.ndim for name, p in self.model.named_parameters()}  # before any FSDP flattening

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
        """-> heatmap targets (B, K, H, W) and the loss's joint weights (B, K): labelled joints inside the
        heatmap (the codec's), times the schema's joint weights when ``trainer.use_joint_weights``."""
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
            self._step_bad = torch.zeros((), dtype=torch.bool, device=self.device)
            self._stats_before = [b.clone() for b in self._running_stats()]

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
        else:
            loss_fn = heatmap_cross_entropy if self.model.heatmap_output == "softmax" else heatmap_mse
            loss, logs = loss_fn(self.model(x, dataset), targets, weights)
        # Not acted on here: every DDP rank must run backward; on_before_optimizer_step skips the step.
        self._step_bad |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=x.shape[0])
        return loss

    def _freeze_backbone(self, frozen: bool) -> None:
        """Stop (or resume) training the backbone. Its parameters stay in the optimizer: without a gradient
        AdamW leaves them as they are, and no activations are kept for their backward."""
        if frozen != self._backbone_frozen:
            self.model.backbone.requires_grad_(not frozen)
            self._backbone_frozen = frozen

    def _running_stats(self) -> list[torch.Tensor]:
        """Persistent buffers (BatchNorm running statistics and counters): a forward pass over a bad batch
        writes them before any loss is seen."""
        return [b for m in self.model.modules() for name, b in m.named_buffers(recurse=False)
                if name not in m._non_persistent_buffers_set]

    # ---- non-finite guard --------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer):
        """Skip the step (no weight, moment or BatchNorm-statistics update) if its loss or gradient is not finite on
        any rank; stop the run after ``trainer.max_nonfinite_steps`` such steps in a row.

        With a fused AdamW (``optim.fused``) the decision stays on the device: the optimizer's ``found_inf`` makes
        its kernel skip the update, as under a GradScaler, and the counters are device tensors read every
        ``trainer.log_every_steps`` steps (so a run of bad steps stops at the next such read). Otherwise the
        decision is read on the host each step and the gradients are dropped."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        bad = self._step_bad.clone()
        if grads:  # the norm of all gradients overflows or turns NaN iff some gradient is not finite
            norms = torch._foreach_norm(grads)
            total = torch.linalg.vector_norm(torch.stack([n.float().to(bad.device) for n in norms]))
            bad |= ~torch.isfinite(total)
        # every rank must take the same decision (their gradients may be sharded): one small reduction a step
        bad = self.trainer.strategy.reduce(bad.float(), reduce_op="max") > 0
        if _skips_on_device(optimizer):
            optimizer.found_inf = bad.float()
            for buf, before in zip(self._running_stats(), self._stats_before):
                buf.copy_(torch.where(bad, before, buf))
            if self._guard is None:
                # skipped since the last read, in a row now, most in a row since the last read
                self._guard = torch.tensor([0, self.skipped_in_row, self.skipped_in_row], device=bad.device)
            in_row = (self._guard[1] + 1) * bad
            self._guard = torch.stack([self._guard[0] + bad, in_row, torch.maximum(self._guard[2], in_row)])
            if (self.global_step + 1) % self.cfg.trainer.log_every_steps == 0:
                self._read_guard()
            return
        if not bad.item():
            self.skipped_in_row = 0
            return
        for p in self.parameters():
            p.grad = None
        for buf, before in zip(self._running_stats(), self._stats_before):
            buf.copy_(before)
        self.skipped_steps += 1
        self.skipped_in_row += 1
        self.log("train/skipped_steps", float(self.skipped_steps))
        self._check_in_row(self.skipped_in_row)

    def _read_guard(self, log: bool = True) -> None:
        """The device counters of the fused path into ``skipped_steps`` / ``skipped_in_row`` (one host read)."""
        if self._guard is None:
            return
        skipped, in_row, most = (int(v) for v in self._guard.tolist())
        self._guard = torch.tensor([0, in_row, in_row], dtype=torch.int64, device=self._guard.device)
        self.skipped_steps += skipped
        if skipped and log:
            self.log("train/skipped_steps", float(self.skipped_steps))
        self.skipped_in_row = in_row
        self._check_in_row(most)

    def _check_in_row(self, in_row: int) -> None:
        limit = self.cfg.trainer.max_nonfinite_steps
        if in_row >= limit:
            raise FloatingPointError(
                f"stopping: {in_row} optimizer steps in a row (the last at step {self.global_step} or before) "
                f"had a non-finite loss or gradient; they were skipped without updating the weights. Lower "
                f"optim.lr, check the data, or raise trainer.max_nonfinite_steps (now {limit}); the last complete "
                f"checkpoint is in {self.cfg.trainer.out_dir}/checkpoints/.")

    def on_train_end(self) -> None:
        self._read_guard(log=False)

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

    # ---- checkpoint extras -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning restores model, optimizer, scheduler, loops and callbacks (EMA); the global RNGs (drop
        # path), the guard's counters and the train loader's position (see on_train_start) are ours. RNGs
        # are rank 0's in a DDP run; stored as tensors and tuples (Lightning loads with weights_only=True).
        self._read_guard(log=False)
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        loader = self.trainer.train_dataloader
        checkpoint["sagepose"] = {"rng": rng, "skipped_steps": self.skipped_steps,
                                  "skipped_in_row": self.skipped_in_row,
                                  "train_loader": loader.state_dict() if hasattr(loader, "state_dict") else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("sagepose")
        if state is None:
            return
        self.skipped_steps, self.skipped_in_row = state["skipped_steps"], state["skipped_in_row"]
        self._loader_state = state.get("train_loader")
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def on_train_start(self):
        # Where a resumed epoch picks up. Lightning saves the loader's state_dict too, but when
        # configure_optimizers asks for estimated_stepping_batches it builds the train loader before the
        # checkpoint is restored and never hands that state back; so the position travels here as well.
        loader = self.trainer.train_dataloader
        if self._loader_state is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self._loader_state)
        self._loader_state = None

    # ---- validation ------------------------------------------------------------------------
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
        out = {"image_id": batch["image_id"].cpu().numpy(), "keypoints": kpts.float().cpu().numpy(),
               "scores": scores.float().cpu().numpy(), "bbox_score": batch["bbox_score"].cpu().numpy(),
               "area": batch["scale"].prod(-1).cpu().numpy(), "index": batch["index"].cpu().numpy()}
        if "gt_keypoints" in batch and not self.cfg.data.det_json:  # detections carry no labels to pair with
            out.update({k: batch[k].float().cpu().numpy() for k in ("gt_keypoints", "gt_visible", "bbox")})
        if "head_size" in batch:
            out["head_size"] = batch["head_size"].float().cpu().numpy()
        self._val_outputs.append((dataloader_idx, out))

    def on_validation_epoch_end(self):
        outs, self._val_outputs = self._val_outputs, []
        if self.plan is None:
            if self.val_gt_json is None:
                return
            scored = self._score([o for _, o in outs], self.model.schema, self.val_gt_json)
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
        logged = {f"val/{k}": float(v) for k, v in _flat(metrics, self.plan is not None).items()
                  if k.rsplit("/", 1)[-1] not in _COUNTS and isinstance(v, (int, float)) and v is not None}
        n = len(self.last_instances) if self.plan is None else sum(len(v) for v in self.last_instances.values())
        self.log_dict({**logged, "val/instances": float(n)})
        if self.trainer.state.fn == TrainerFn.FITTING:  # `sagepose test` prints its metrics as JSON itself
            # rank 0 only, above the progress bar when there is one
            line = f"epoch {self.current_epoch} step {self.global_step}: val"
            for name, m in ([("", metrics)] if self.plan is None else
                            [(f" {k}", v) for k, v in metrics.items() if isinstance(v, dict)]):
                line += name
                if "AP" in m:
                    line += f" AP {m['AP']:.3f} AP50 {m['AP50']:.3f} AR {m['AR']:.3f}"
                if m.get("PCKh") is not None:
                    line += f" PCKh {m['PCKh']:.2f}"
                if m.get("pixel_error") is not None:
                    line += f" pixel_error {m['pixel_error']:.2f} px"
                    if "AP" not in m:
                        line += f" (median {m['pixel_error_median']:.2f}, PCK@0.1box {m['PCK@0.1box']:.3f})"
            self.print(line)

    def _score(self, outs: list[dict], schema: KeypointSchema, gt_json: str, coco_format: bool = True):
        """One val set's outputs (this rank's) -> (metrics, COCO results, instance indices), the same on every rank;
        None when no rank had any. ``coco_format=False`` (MMPose's MPII json): no OKS AP (pycocotools reads COCO
        files), and its 1-based labels get PCKh's +1 on the predictions."""
        cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else None
        if self.trainer.world_size > 1:  # every rank takes part, also one whose shard was empty
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, cat)
            gathered = [g for g in gathered if g is not None]
            cat = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]} if gathered else None
        if cat is None:
            return None
        cat = dedupe_instances(cat)
        # OKS-NMS needs sigmas; without them every instance is kept (GT boxes: one per labeled animal)
        sigmas = schema.sigmas_array() if schema.has_sigmas else ()
        results = make_results(cat["image_id"], cat["keypoints"], cat["scores"], cat["bbox_score"],
                               cat["area"], sigmas, nms_thr=0.9 if schema.has_sigmas else None)
        # pycocotools once, on rank 0; every rank logs the same numbers (the best checkpoint reads them)
        metrics = None
        if self.trainer.is_global_zero:
            metrics = {}
            if schema.has_sigmas and coco_format:
                metrics.update(official_ap(schema.name, gt_json, results, sigmas))
            if "gt_keypoints" in cat:
                metrics.update(pixel_metrics(cat["keypoints"], cat["gt_keypoints"], cat["gt_visible"],
                                             box_size(cat["bbox"]), schema.keypoints))
                heads = cat.get("head_size")
                if schema.name == "mpii" and heads is not None and np.isfinite(heads).all() and (heads > 0).all():
                    # MPII's own metric; COCO-format labels are 0-based (no +1 on the predictions), MPII's 1-based
                    metrics.update(pckh(cat["keypoints"], cat["gt_keypoints"], cat["gt_visible"], heads,
                                        pred_offset=0.0 if coco_format else 1.0))
                elif schema.name == "mpii" and gt_json not in self._told_no_pckh:
                    self._told_no_pckh.add(gt_json)
                    # stderr: a test's stdout is its metrics' JSON
                    self.print(no_pckh_message(gt_json, heads, len(cat["keypoints"]), coco_format), file=sys.stderr)
        metrics = self.trainer.strategy.broadcast(metrics, src=0)
        return metrics, results, cat["index"]

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


def no_pckh_message(gt_json: str, heads: np.ndarray | None, n: int, coco_format: bool) -> str:
    """Why an MPII val set of ``n`` instances is scored by pixel error, not PCKh: how many lack a head size
    (``heads`` (n,) px, NaN where none; None: none at all) and where one comes from."""
    missing = n if heads is None else int((~np.isfinite(heads) | (heads <= 0)).sum())
    where = ("a head_box [x1, y1, x2, y2] on each annotation" if coco_format else
             "data.datasets[...].head_boxes (mpii_gt_val.mat or a json of head boxes)")
    return (f"{gt_json}: MPII keypoints scored by pixel error, not PCKh: {missing} of {n} instances have no head "
            f"size (PCKh's unit); give {where}")


def headline_score(metrics: dict) -> float | None:
    """A val set's one number in [0, 1], its dataset's own metric: PCKh / 100 where it was computed (MPII), else
    OKS AP."""
    if metrics.get("PCKh") is not None:
        return float(metrics["PCKh"]) / 100.0
    if metrics.get("AP") is not None:
        return float(metrics["AP"])
    return None


def _flat(metrics: dict, members: bool) -> dict:
    """The scalar entries of ``metrics``; ``members``: one level down too, as ``{dataset}/{metric}``."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            if members:
                out.update({f"{k}/{kk}": vv for kk, vv in v.items() if not isinstance(vv, dict)})
        else:
            out[k] = v
    return out


def dedupe_instances(cat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gathered per-instance arrays -> one row per dataset ``index``, sorted by it.

    A distributed sampler that pads uneven shards (Lightning's DistributedSampler does) repeats some
    instances; the first copy is kept. Sorting makes the result independent of the number of ranks.
    """
    _, first = np.unique(cat["index"], return_index=True)
    return {k: v[first] for k, v in cat.items()}


def save_predictions(results: list[dict], path: str | Path) -> None:
    write_json_atomic(path, results)
