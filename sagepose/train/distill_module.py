"""Distillation as a LightningModule: a frozen teacher of any kind teaches a student of any kind (``sagepose distill``).

    crops of the unlabeled sources (and the labeled images), cut at the larger of the two models' resolutions
      weak view -> the teacher (frozen, eval, bf16 where native; its own input size and normalisation)
        -> per-joint moments (sagepose.ssl.moments: mean, covariance, confidence) in its view's input px
        -> the student's schema (a copy / midpoint translation) -> the crop's px (cached per crop when the view
           is fixed: the teacher runs once per crop, not once per epoch)
      strong view -> the student; the moments carried into that view, rendered as its heatmap or SimCC bins
      loss = supervised (labeled batch) + distill.weight * KL(teacher || student) on the joints the dynamic mask
             keeps, each weighed by the teacher's confidence

The supervised half is :class:`~sagepose.train.module.TopDownModule`'s own step; validation, the non-finite guard,
checkpoints and optimizers are inherited. The teacher is not a submodule: checkpoints hold the student alone (and
the mask statistics), a resume reloads the teacher from ``distill.teacher``. The views' random streams are the
semi-supervised step's (:mod:`sagepose.ssl.views`).
"""
from __future__ import annotations

import torch

from sagepose import geometry
from sagepose.config import Config, ConfigError
from sagepose.config.validation import teacher_view_fixed
from sagepose.data import batch_aug
from sagepose.data.preflight import require_unlabeled
from sagepose.models.inference import native_bf16
from sagepose.ssl import losses, moments, views
from sagepose.ssl.views import STUDENT_STREAM, TEACHER_STREAM, UNLABELED_SEED_OFFSET
from sagepose.train.module import TopDownModule


def load_teacher(cfg: Config):
    """``distill.teacher`` as a frozen model in eval mode (:func:`sagepose.api.load`; ``distill.teacher_model``
    names the model of a file that does not). A fusion-head teacher is refused."""
    from pathlib import Path

    from sagepose.api import load
    from sagepose.models.fusion_head import FusionHead

    d = cfg.distill
    spec = d.teacher
    if Path(spec).is_file():
        teacher = load(d.teacher_model, checkpoint=spec, fuse=False)
    else:
        teacher = load(spec, fuse=False, random_weights=False)
    if isinstance(teacher.head, FusionHead):
        raise ConfigError(f"distill.teacher={spec}: a fusion-head model's outputs are not one distribution per joint; "
                          "distil from a heatmap or SimCC model", key="distill.teacher")
    teacher.requires_grad_(False)
    return teacher.eval()


def base_crop_size(teacher_size, student_size) -> tuple[int, int]:
    """The crop the loader cuts: the student's aspect, at least the teacher's resolution on both axes (a teacher of
    1024x768 sees its own resolution, not a student's 256x192 upsampled)."""
    (ws, hs), (wt, ht) = student_size, teacher_size
    f = max(1.0, wt / ws, ht / hs)
    return round(ws * f), round(hs * f)


class DistillModule(TopDownModule):
    def __init__(self, cfg: Config, teacher=None, schema=None):
        """``cfg``'s student taught by ``distill.teacher`` (or the model ``teacher``, e.g. in tests); ``schema`` as
        :class:`~sagepose.train.module.TopDownModule`'s."""
        s, d = cfg.ssl, cfg.distill
        require_unlabeled(s)
        if s.mode == "semi" and not cfg.data.train_json:
            raise ConfigError("ssl.mode='semi' distils beside the labeled data: set data.train_json (or use "
                              "ssl.mode=unsup_only)", key="data.train_json")
        super().__init__(cfg, schema)
        student = self.model
        teacher = load_teacher(cfg) if teacher is None else teacher.eval().requires_grad_(False)
        self._teacher = [teacher]  # a list: not a submodule, so not in the student's checkpoints or optimizer
        if teacher.schema.keypoints == student.schema.keypoints:
            self.translation = None
        else:
            from sagepose.keypoint_maps import keypoint_map

            self.translation = keypoint_map(teacher.schema, student.schema, midpoints=True)
        self.keypoint_mask = losses.KeypointMask(student.schema.num_keypoints, beta=s.mask_beta,
                                                 momentum=s.mask_momentum, warmup_iters=s.mask_warmup_iters,
                                                 min_keep_ratio=s.min_keep_ratio)
        self.weak, self.strong = views.weak_view(s.weak), views.strong_view(s.strong)
        self.crop_size = base_crop_size(teacher.input_size, student.input_size)
        fixed = teacher_view_fixed(s)
        self.cache_teacher = d.cache_teacher == "always" or (d.cache_teacher == "auto" and fixed)
        self._cache: dict[int, moments.Moments] = {}  # crop index -> the teacher's moments in crop px (CPU)
        self.teacher_passes = 0  # crops the teacher has seen (logged: with the cache, each crop once)

    @property
    def teacher(self):
        return self._teacher[0]

    def on_fit_start(self):
        super().on_fit_start()
        self.teacher.to(self.device)

    # ---- the teacher's moments in crop px ---------------------------------------------------------------
    def _run_teacher(self, crops: torch.Tensor, keys: torch.Tensor) -> moments.Moments:
        s, d, teacher = self.cfg.ssl, self.cfg.distill, self.teacher
        udp = self.model.codec.udp
        n = 2 if s.fusion else 1
        t_views = [views.make_views(crops, keys, self.weak, stream=TEACHER_STREAM + v, out_size=teacher.input_size,
                                    udp=udp) for v in range(n)]
        x = teacher.normalize(torch.cat([v.images for v in t_views]).clamp(0, 255))
        dtype = torch.bfloat16 if d.teacher_bf16 and native_bf16(self.device) else None
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = teacher(x).float()
        self.teacher_passes += crops.shape[0]
        flips = self.model.schema.flip_indices
        per_view = []
        for o, v in zip(out.chunk(n), t_views):
            m = moments.output_moments(o, teacher, d.teacher_tau)
            if self.translation is not None:
                m = moments.translate(m, self.translation)
            per_view.append(moments.transform(m, geometry.invert_affine_torch(v.affine), v.flipped, flips))
        return per_view[0] if n == 1 else moments.fuse(*per_view, confidence_tau=s.fusion_temperature)

    def teacher_moments(self, crops: torch.Tensor, keys: torch.Tensor, index: torch.Tensor) -> moments.Moments:
        """The teacher's moments of each crop in crop px: from the cache where it holds the crop (the view fixed),
        else a teacher pass (stored when caching)."""
        if not self.cache_teacher:
            return self._run_teacher(crops, keys)
        ids = [int(i) for i in index]
        missing = [j for j, i in enumerate(ids) if i not in self._cache]
        if missing:
            sel = torch.as_tensor(missing, device=crops.device)
            fresh = self._run_teacher(crops[sel], keys[sel])
            for row, j in enumerate(missing):
                self._cache[ids[j]] = moments.Moments(*(t[row].detach().cpu() for t in fresh))
        return moments.Moments(*(torch.stack([self._cache[i][f] for i in ids]).to(crops.device) for f in range(3)))

    # ---- the step ----------------------------------------------------------------------------------------
    def distill_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s, d, model = self.cfg.ssl, self.cfg.distill, self.model
        crops = batch["img"]
        keys = batch_aug.sample_keys(self.cfg.trainer.seed + UNLABELED_SEED_OFFSET, self.current_epoch,
                                     batch["index"]).to(crops.device)
        base = self.teacher_moments(crops, keys, batch["index"])
        s_views = [views.make_views(crops, keys, self.strong, stream=STUDENT_STREAM + m, out_size=model.input_size,
                                    udp=model.codec.udp) for m in range(s.num_strong_views)]
        s_out = model(model.normalize(torch.cat([v.images for v in s_views]).clamp(0, 255))).chunk(len(s_views))
        total, logs = 0.0, {}
        for m, (out, view) in enumerate(zip(s_out, s_views)):
            tm = moments.transform(base, view.affine, view.flipped, model.schema.flip_indices)
            if m == 0:
                mask = self.keypoint_mask(tm.conf, self.global_step) if s.mask else torch.ones_like(tm.conf)
                logs["teacher_conf_mean"] = tm.conf.mean()
            weights = mask * moments.in_view(tm, model.input_size) * (tm.conf if d.confidence_weight else 1.0)
            weights = weights * (tm.conf > 0)  # joints the translation does not give
            loss_m, logs_m = moments.distribution_loss(out, moments.render(tm, model), weights, model, kind=d.kind)
            total = total + loss_m / len(s_views)
            if m == 0:
                logs["mask_kept"] = logs_m["kept"]
        logs["distill"] = total.detach()
        return total, logs

    def training_step(self, batch, batch_idx):
        s, d = self.cfg.ssl, self.cfg.distill
        unlabeled = batch["unlabeled"] if "unlabeled" in batch else batch
        sup = super().training_step(batch["labeled"], batch_idx) if s.mode == "semi" else None
        dist, logs = self.distill_loss(unlabeled)
        loss = d.weight * dist if sup is None else sup + d.weight * dist
        self.guard.mark(loss)
        n = unlabeled["img"].shape[0]
        self.log("train/total", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("distill/mask_kept", logs.pop("mask_kept"), prog_bar=True, batch_size=n)
        self.log_dict({f"distill/{k}": v.float() for k, v in logs.items()}, batch_size=n)
        self.log("distill/teacher_passes", float(self.teacher_passes), batch_size=n)
        return loss

    def configure_optimizers(self):
        from sagepose.train.steps import schedule_steps

        optimizers = super().configure_optimizers()  # sets total_steps: the mask warm-up may be a fraction of it
        s = self.cfg.ssl
        self.keypoint_mask.warmup_iters = schedule_steps(s.mask_warmup_iters, s.mask_warmup_fraction,
                                                         self.total_steps)
        return optimizers
