"""Semi-supervised top-down training (SAGE-Pose) as a LightningModule: the supervised step plus an unlabeled one.

    unlabeled crops (uint8, plain crops of their boxes) -> [device]
      two weak views -> EMA teacher (no grad, bf16 where native) -> probabilities -> warped into each strong view
        (the relative affine, flip with pair swap) -> averaged by confidence, sharpened -> target, confidence
      M strong views -> student -> probabilities -> KL / JS / MSE to the target, on the joints the dynamic mask keeps
      the last strong view's soft-argmax coordinates -> structural priors (bones, angles, skeleton Laplacian)
      video sources: the next frame in the same strong view -> temporal term (epsilon-insensitive, image px)
    loss = supervised + ramp(step) * (lambda_u * consistency + priors + temporal)

The supervised half is :class:`~sagepose.train.module.TopDownModule`'s own step, unchanged (``mode="semi"``);
validation, the non-finite guard, checkpoints (both loaders' positions among them) and optimizers are inherited. The
teacher (``self.teacher``) and the mask statistics (``self.keypoint_mask``) are submodules, so checkpoints carry them
and a resume restores them; the priors (``self.priors``) are measured on the labeled set (``data.train_json``) when
the module is built, also carried. The teacher is updated after every optimizer step. Each rank draws its own shard
of the unlabeled data; the mask statistics are taken over all ranks. The views' random streams are named in
:mod:`sagepose.ssl.views`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from sagepose import geometry
from sagepose.config import Config, ConfigError
from sagepose.data import batch_aug, load_coco
from sagepose.data.preflight import require_unlabeled
from sagepose.models.inference import native_bf16
from sagepose.ssl import losses, moments, views
from sagepose.ssl.priors import StructuralPriors
from sagepose.ssl.teacher import EMATeacher
from sagepose.ssl.views import STUDENT_STREAM, TEACHER_STREAM, UNLABELED_SEED_OFFSET
from sagepose.ssl.warp import warp_heatmaps
from sagepose.train.module import TopDownModule
from sagepose.train.steps import schedule_steps

MIN_KEPT_MASS = 0.5  # a joint whose warped teacher probability kept less than this left the student's view


def labeled_priors(records, schema, input_size: tuple[int, int], udp: bool) -> StructuralPriors | None:
    """Structural priors from labeled records, measured in their plain crops (the frame the student predicts in),
    with the crop diagonal as the scale; None for a schema without skeleton."""
    if not schema.skeleton or not records:
        return None
    w, h = input_size
    keypoints = []
    for r in records:
        center, scale = geometry.box_to_center_scale(geometry.xywh_to_xyxy(r.bbox_xywh))
        matrix = geometry.crop_matrix(center, geometry.fix_aspect_ratio(scale, w / h), 0.0, input_size, udp)
        keypoints.append(geometry.apply_affine(r.keypoints, matrix))
    visible = np.stack([r.visible for r in records])
    return StructuralPriors.from_labeled(np.stack(keypoints), visible, np.full(len(records), math.hypot(w, h)),
                                         schema.skeleton, schema.num_keypoints)


class SemiSupervisedModule(TopDownModule):
    def __init__(self, cfg: Config):
        """``cfg.ssl``'s method on ``cfg``'s model; its structural priors measured on ``data.train_json`` (with
        ``ssl.priors``). Refuses a run without unlabeled sources, and ``ssl.mode=semi`` without labeled data."""
        s = cfg.ssl
        require_unlabeled(s)  # on every rank (the pre-flight check runs on rank 0)
        if s.mode == "semi" and not cfg.data.train_json:
            raise ConfigError("ssl.mode='semi' trains on labeled and unlabeled batches: set data.train_json (or use "
                              "ssl.mode=unsup_only)", key="data.train_json")
        super().__init__(cfg)
        k = self.model.schema.num_keypoints
        self.teacher = EMATeacher(self.model, decay=s.teacher_ema, shared=self.frozen_base.values())
        self.keypoint_mask = losses.KeypointMask(k, beta=s.mask_beta, momentum=s.mask_momentum,
                                                 warmup_iters=s.mask_warmup_iters, min_keep_ratio=s.min_keep_ratio)
        self.priors = self._labeled_priors() if s.priors else None
        self.map_kind = "logits" if self.model.heatmap_output == "softmax" else "heatmap"
        self.weak, self.strong = views.weak_view(s.weak), views.strong_view(s.strong)
        self.style_mix = batch_aug.StyleMixConfig(p=s.style_mix_prob, ratio_range=s.style_mix_ratio,
                                                  band=s.style_mix_band) if s.style_mix_prob > 0 else None
        self._teacher_step = 0  # optimizer steps the teacher has followed

    def _labeled_priors(self) -> StructuralPriors | None:
        """:func:`labeled_priors` of ``data.train_json``; None (with a warning) without one."""
        d, model = self.cfg.data, self.model
        if not d.train_json:
            rank_zero_warn("ssl.priors: no data.train_json to measure the skeleton's ranges on; training without "
                           "priors")
            return None
        records = load_coco(d.train_json, schema=model.schema, image_root=d.image_root, mode="train")
        return labeled_priors(records, model.schema, tuple(model.input_size), model.codec.udp)

    # ---- the unlabeled half ------------------------------------------------------------------
    def _teacher_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.cfg.ssl.teacher_bf16 and native_bf16(self.device) else None

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) on every rank -> (world * B, ...): the mask's statistics are the whole global batch's."""
        if self.trainer.world_size <= 1:
            return x
        return self.all_gather(x).flatten(0, 1)

    def unlabeled_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One unlabeled batch -> (the unweighted-by-ramp sum of the unlabeled terms, logs)."""
        s, model = self.cfg.ssl, self.model
        crops = batch["img"]
        keys = batch_aug.sample_keys(self.cfg.trainer.seed + UNLABELED_SEED_OFFSET, self.current_epoch,
                                     batch["index"]).to(crops.device)
        hm_scale = None if moments.is_simcc(model) else model.codec.heatmap_scale.to(crops.device)

        # teacher: one weak view, or two (ssl.fusion) whose maps are averaged by confidence; their probability maps
        n_teacher = 2 if s.fusion else 1
        t_views = [views.make_views(crops, keys, self.weak, stream=TEACHER_STREAM + v) for v in range(n_teacher)]
        t_in = model.normalize(torch.cat([v.images for v in t_views]).clamp(0, 255))
        t_out = self.teacher(t_in, autocast_dtype=self._teacher_dtype())
        t_outs = t_out.chunk(n_teacher)

        # student: M strong views
        s_views = [views.make_views(crops, keys, self.strong, stream=STUDENT_STREAM + m)
                   for m in range(s.num_strong_views)]
        s_in = model.normalize(torch.cat([v.images for v in s_views]).clamp(0, 255))
        s_out = model(s_in).chunk(s.num_strong_views)

        cons, logs, mask = 0.0, {}, None
        for m, s_view in enumerate(s_views):
            target, conf, in_view = self._view_target(t_outs, t_views, s_view, hm_scale)
            if m == 0:  # the mask statistics advance once a step
                mask = self.keypoint_mask(conf, self.global_step, stats_conf=self._gather(conf)) if s.mask \
                    else torch.ones_like(conf)
                logs["teacher_conf_mean"], logs["teacher_conf_max"] = conf.mean(), conf.max()
            joint_mask = mask * in_view
            loss_m, logs_m = moments.distribution_loss(s_out[m], target, joint_mask, model, kind=s.consistency,
                                                       tau=s.prob_tau)
            cons = cons + loss_m / s.num_strong_views
            if m == 0:
                logs["mask_kept"] = logs_m["kept"]
        total = s.lambda_u * cons
        logs["consistency"] = cons.detach()

        last_out, zoom_last = s_out[-1], s_views[-1].zoom
        if self.priors is not None and not self.priors.is_empty and (s.lambda_topo or s.lambda_bone or s.lambda_angle):
            coords = self._input_coords(last_out, hm_scale)
            scale = zoom_last * math.hypot(*model.input_size)
            weights = joint_mask.detach()
            for name, fn, lam in (("topology", self.priors.topology_loss, s.lambda_topo),
                                  ("bone", self.priors.bone_loss, s.lambda_bone),
                                  ("angle", self.priors.angle_loss, s.lambda_angle)):
                if lam > 0:
                    loss_p, logs_p = fn(coords, scale, weights)
                    total = total + lam * loss_p
                    logs[name] = logs_p["loss"]

        has_next = batch["has_next"].to(crops.device)
        if s.lambda_temporal > 0 and bool(has_next.any()):
            total = total + s.lambda_temporal * self._temporal(batch, keys, s_out[0], s_views[0], has_next,
                                                               hm_scale, logs)
        logs["unlabeled"] = total.detach()
        return total, logs

    def _view_target(self, t_outs, t_views, s_view: views.Views, hm_scale: torch.Tensor):
        """The teacher's raw outputs of its weak views -> the target in student view ``s_view``'s output layout,
        its confidence (B, K) and which joints stayed in the view (B, K).

        Heatmaps: each view's probability maps warped into the student's heatmap frame (mass-preserving: a joint
        that kept under :data:`MIN_KEPT_MASS` left the view), fused and sharpened by
        :func:`~sagepose.ssl.losses.teacher_target`. SimCC: each view's 1-D distributions as moments
        (:mod:`sagepose.ssl.moments`) carried into the student view, fused, rendered as the student's bins (a joint
        whose mean left the view is out)."""
        s, model = self.cfg.ssl, self.model
        flip_indices = model.schema.flip_indices
        if moments.is_simcc(model):
            per_view = [moments.output_moments(o, model, s.teacher_tau) for o in t_outs]
            tm = moments.into_view(per_view, t_views, s_view, flip_indices, s.fusion_temperature)
            return moments.render(tm, model), tm.conf, moments.in_view(tm, model.input_size)
        warped, masses = [], []
        for o, t_view in zip(t_outs, t_views):  # each teacher view's maps into this student view's frame
            A_rel = geometry.relative_affine_torch(t_view.affine, s_view.affine)
            w = warp_heatmaps(losses.to_probabilities(o, 1.0, self.map_kind), A_rel, t_view.flipped ^ s_view.flipped,
                              flip_indices, hm_scale, mass_preserving=True)
            w, mass = losses.renormalize(w)
            warped.append(w)
            masses.append(mass)
        target, conf = losses.teacher_target(warped[0], warped[1] if s.fusion else None,
                                             confidence_tau=s.fusion_temperature, spatial_tau=s.teacher_tau)
        return target, conf, (torch.stack(masses).amin(0) >= MIN_KEPT_MASS).float()

    def _input_coords(self, out: torch.Tensor, hm_scale: torch.Tensor) -> torch.Tensor:
        """Raw student output -> soft-argmax coordinates (B, K, 2) in its view's input pixels."""
        if moments.is_simcc(self.model):
            return moments.simcc_coords(out, self.model, self.cfg.ssl.prob_tau)
        probs = losses.to_probabilities(out, self.cfg.ssl.prob_tau, self.map_kind)
        return losses.soft_argmax(probs) / hm_scale

    def _temporal(self, batch, keys, out_t, view_t: views.Views, has_next, hm_scale, logs) -> torch.Tensor:
        """The next frame through the same strong view (the first one's, ``view_t``); both soft-argmaxes mapped back
        to image pixels."""
        s, model = self.cfg.ssl, self.model
        nxt = views.make_views(batch["img_next"], keys, self.strong, stream=STUDENT_STREAM)  # view_t's stream
        out_next = model(model.normalize(nxt.images.clamp(0, 255)))
        inv = geometry.invert_affine_torch(view_t.affine)
        px = batch["scale"].to(out_t.device).float() / torch.tensor(model.input_size, device=out_t.device)
        coords = [geometry.apply_affine_torch(self._input_coords(o, hm_scale), inv) * px[:, None, :]
                  for o in (out_t, out_next)]
        # a mirrored view's channels are mirrored joints in both frames alike: the comparison is unaffected
        valid = has_next[:, None].expand(-1, coords[0].shape[1])
        loss, logs_t = losses.temporal_loss(coords[0], coords[1], valid, s.temporal_eps_px)
        logs["temporal"], logs["motion_px"] = logs_t["loss"], logs_t["motion"]
        return loss

    # ---- the step --------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        s = self.cfg.ssl
        unlabeled = batch["unlabeled"] if "unlabeled" in batch else batch
        if s.mode == "semi":
            labeled = batch["labeled"]
            if self.style_mix is not None:  # labeled crops in the unlabeled crops' look, before their augmentation
                keys = batch_aug.sample_keys(self.cfg.trainer.seed, self.current_epoch, labeled["index"])
                labeled = {**labeled, "img": batch_aug.style_mix(labeled["img"], unlabeled["img"], keys,
                                                                 self.style_mix)}
            sup = super().training_step(labeled, batch_idx)  # logs train/loss (the supervised loss)
        else:
            sup = None
        u_loss, logs = self.unlabeled_loss(unlabeled)
        ramp = losses.rampup(self.global_step, schedule_steps(s.rampup_iters, s.rampup_fraction, self.total_steps))
        loss = u_loss * ramp if sup is None else sup + ramp * u_loss
        self.guard.mark(loss)
        n = unlabeled["img"].shape[0]
        self.log("train/total", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("ssl/ramp", ramp, batch_size=n)
        kept = logs.pop("mask_kept")
        self.log("ssl/mask_kept", kept, prog_bar=True, batch_size=n)
        self.log_dict({f"ssl/{k}": v.float() for k, v in logs.items()}, batch_size=n)
        return loss

    def optimizer_step(self, *args, **kwargs):
        # the teacher follows every optimizer step, before any checkpoint of that step is written
        super().optimizer_step(*args, **kwargs)
        self._teacher_step += 1
        self.teacher.update(self.model, self._teacher_step)

    # ---- checkpoint extras: the teacher's step count -----------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["sagepose"]["teacher_step"] = self._teacher_step

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._teacher_step = int(checkpoint.get("sagepose", {}).get("teacher_step", 0))

    def configure_optimizers(self):
        optimizers = super().configure_optimizers()  # sets total_steps: the schedules given as fractions of it
        s = self.cfg.ssl
        self.keypoint_mask.warmup_iters = schedule_steps(s.mask_warmup_iters, s.mask_warmup_fraction,
                                                         self.total_steps)
        return optimizers
