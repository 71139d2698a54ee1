"""``validate``: before any work starts, a value no run can use is refused -- names that are not choices (with a
did-you-mean), numbers out of range, settings that do not work together, and the combinations training does not
support -- with a :class:`~sagepose.config.parse.ConfigError` naming the setting."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sagepose.config.parse import ConfigError, did_you_mean
from sagepose.config.sections import Config

# Lightning's precision and accelerator names; strategies beyond these are checked against its registry
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "bf16", "16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")
SCHEDULES = ("step", "cosine")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
HEATMAP_OUTPUTS = ("raw", "softmax")
SSL_MODES = ("off", "semi", "unsup_only")
UNION_MODES = ("merged", "concatenated", "convert")
DATASET_FORMATS = ("coco", "mpii")
HEAD_LAYOUTS = ("shared", "per_dataset")
CONSISTENCIES = ("js", "kl", "mse")
KEEP_START_RULES = ("clearly_worse", "worse")  # ssl.keep_start (sagepose.train.warm_start)


def _check(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {reason}", key=key, reason=reason)


def _check_fraction(value: float | None, key: str) -> None:
    _check(value is None or 0 <= value <= 1, key, value, "a fraction of the run's steps must be in [0, 1] (null: off)")


def _check_choice(value: Any, choices, key: str, what: str) -> None:
    _check(value in choices, key, value, f"unknown {what} {value!r}{did_you_mean(value, choices, 'choose from')}")


def _strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry  # deferred: seconds to import

    return ["auto", *StrategyRegistry.available_strategies()]


def validate(cfg: Config) -> Config:
    """Refuse, before any work starts, a value no run can use: names that are not choices (with a did-you-mean),
    numbers out of range, settings that do not work together. Raises :class:`ConfigError` naming the
    setting (``key``); returns ``cfg``."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.trainer
    _check_schema_spec(m.schema, "model.schema")
    _check_head_map(m.head_map, m.schema)
    _check_choice(m.heatmap_output, HEATMAP_OUTPUTS, "model.heatmap_output", "heatmap output")
    _check(m.input_size is None or min(m.input_size) > 0, "model.input_size", m.input_size, "must be positive")
    _check(len(m.test_scales) >= 1 and all(0 < float(v) <= 4 for v in m.test_scales), "model.test_scales",
           m.test_scales, "box scale factors, at least one, each in (0, 4]")
    _check(m.drop_path_rate is None or 0 <= m.drop_path_rate < 1, "model.drop_path_rate", m.drop_path_rate,
           "must be in [0, 1)")
    for name in ("batch_size", "val_batch_size"):
        _check(getattr(d, name) >= 1, f"data.{name}", getattr(d, name), "must be at least 1")
    _check(d.num_workers >= 0, "data.num_workers", d.num_workers, "must be >= 0 (0: load in the main process)")
    for name in ("flip_prob", "half_body_prob", "rotate_prob", "shift_prob", "photometric_prob",
                 "coarse_dropout_prob", "blur_prob", "noise_prob"):
        _check(0 <= getattr(d, name) <= 1, f"data.{name}", getattr(d, name), "a probability must be in [0, 1]")
    _check(0 < d.scale_factor[0] <= d.scale_factor[1], "data.scale_factor", d.scale_factor,
           "must be (low, high) with 0 < low <= high")
    for name in ("rotate_factor", "shift_factor"):
        _check(getattr(d, name) >= 0, f"data.{name}", getattr(d, name), "must be >= 0")
    _check(d.prefetch_factor >= 1, "data.prefetch_factor", d.prefetch_factor, "must be at least 1")
    _check(not (d.reduced_decode and d.cache_images), "data.reduced_decode", d.reduced_decode,
           "decodes each sample at the size its crop needs; data.cache_images keeps full images: choose one")
    _check(o.lr > 0, "optim.lr", o.lr, "must be positive")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", o.betas, "each must be in [0, 1)")
    _check(0 < o.layer_decay <= 1, "optim.layer_decay", o.layer_decay, "must be in (0, 1] (1.0 = off)")
    _check(o.warmup_iters >= 0, "optim.warmup_iters", o.warmup_iters, "must be >= 0")
    _check_fraction(o.warmup_fraction, "optim.warmup_fraction")
    _check(0 < o.warmup_ratio <= 1, "optim.warmup_ratio", o.warmup_ratio, "must be in (0, 1]")
    _check_choice(o.schedule, SCHEDULES, "optim.schedule", "schedule")
    _check(all(e >= 0 for e in o.milestones), "optim.milestones", o.milestones, "epochs must be >= 0")
    _check(o.gamma > 0, "optim.gamma", o.gamma, "must be positive")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", o.min_lr_ratio, "must be in [0, 1]")
    _check(0 <= o.cosine_start_fraction < 1, "optim.cosine_start_fraction", o.cosine_start_fraction,
           "a fraction of the run's steps in [0, 1)")
    _check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", o.grad_clip, "must be positive (null = off)")
    _check(0.0 <= o.ema_decay < 1.0, "optim.ema_decay", o.ema_decay, "must be in [0, 1) (0 = off)")
    _check(o.freeze_backbone_epochs >= 0, "optim.freeze_backbone_epochs", o.freeze_backbone_epochs, "must be >= 0")
    # Lightning reads max_epochs=-1 as "no epoch limit" and max_steps=-1 as "no step limit"; 0 trains nothing (and
    # leaves no checkpoint), and a run with neither limit never ends (its schedule has no length)
    _check(t.max_steps == -1 or t.max_steps >= 1, "trainer.max_steps", t.max_steps,
           "must be at least 1, or -1 (no step limit: trainer.max_epochs ends the run)")
    _check(t.max_epochs >= 1 or (t.max_epochs == -1 and t.max_steps >= 1), "trainer.max_epochs", t.max_epochs,
           "must be at least 1, or -1 with trainer.max_steps set (the run ends after that many optimizer steps)")
    _check(t.max_time_minutes is None or t.max_time_minutes > 0, "trainer.max_time_minutes", t.max_time_minutes,
           "must be positive (null: no limit)")
    _check_choice(t.precision, PRECISIONS, "trainer.precision", "precision")
    _check(t.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches", t.accumulate_grad_batches,
           "must be at least 1")
    _check_choice(t.accelerator, ACCELERATORS, "trainer.accelerator", "accelerator")
    _check(t.num_nodes >= 1, "trainer.num_nodes", t.num_nodes, "must be at least 1")
    if t.strategy not in ("auto", "ddp", "fsdp"):
        _check_choice(t.strategy, _strategies(), "trainer.strategy", "strategy")
    _check_choice(t.compile_mode, COMPILE_MODES, "trainer.compile_mode", "torch.compile mode")
    for name in ("val_every_epochs", "log_every_steps", "max_nonfinite_steps"):
        _check(getattr(t, name) >= 1, f"trainer.{name}", getattr(t, name), "must be at least 1")
    for name in ("checkpoint_every_steps", "keep_every_epochs", "val_every_steps"):
        _check(getattr(t, name) >= 0, f"trainer.{name}", getattr(t, name), "must be >= 0 (0 = off)")
    _check(t.checkpoint_every_minutes is None or t.checkpoint_every_minutes >= 0, "trainer.checkpoint_every_minutes",
           t.checkpoint_every_minutes, "must be >= 0 (0 or null = off)")
    for f in dataclasses.fields(t.fusion_loss):
        value = getattr(t.fusion_loss, f.name)
        _check(value >= 0, f"trainer.fusion_loss.{f.name}", value, "must be >= 0 (0 switches the term off)")
    _check(not (o.ema_decay > 0 and t.strategy == "fsdp"), "optim.ema_decay", o.ema_decay,
           "with trainer.strategy=fsdp: Lightning's weight averaging keeps a whole unsharded copy of the model; "
           "use ddp, or optim.ema_decay=0")
    _check(not t.fsdp_cpu_offload or t.strategy == "fsdp", "trainer.fsdp_cpu_offload", t.fsdp_cpu_offload,
           "needs trainer.strategy=fsdp")
    _validate_ssl(cfg)
    _validate_distill(cfg)
    _validate_datasets(cfg)
    from sagepose.models.zoo import MODELS  # deferred, and last: it imports torch

    _check_choice(m.name, MODELS, "model.name", "model")
    _validate_lora(m.lora)
    _check(not (m.lora.rank and o.ema_decay > 0), "optim.ema_decay", o.ema_decay,
           "with model.lora: Lightning's weight averaging keeps a second copy of the whole model, the frozen base "
           "included; use optim.ema_decay=0 (a semi-supervised run's teacher averages the adapters only)")
    _validate_training(cfg)
    return cfg


def _validate_training(cfg: Config) -> None:
    """Combinations training does not support (checked with the rest, so a recipe fails when it is loaded)."""
    t, mode = cfg.trainer, cfg.ssl.mode
    if mode != "off" and cfg.model.name.endswith("-fusion"):
        raise ConfigError(f"ssl.mode={mode!r}: semi-supervised training takes heatmap models; "
                          f"{cfg.model.name} is a fusion-head model", key="ssl.mode")
    if mode != "off" and cfg.model.heads == "per_dataset":
        raise ConfigError(f"ssl.mode={mode!r} with model.heads=per_dataset: unlabeled images belong to no "
                          "dataset, so no head is theirs; use model.heads=shared", key="model.heads")
    if mode != "off" and t.strategy == "fsdp":
        raise ConfigError(f"ssl.mode={mode!r} with trainer.strategy=fsdp: the EMA teacher is not sharded yet "
                          "(it would be wrapped with the student's blocks); use ddp", key="trainer.strategy")
    if t.compile and t.strategy == "fsdp":
        raise ConfigError("trainer.compile with trainer.strategy=fsdp: the network is compiled in place after the "
                          "strategy wraps it, which FSDP's flat parameters do not support here; use ddp or one device",
                          key="trainer.compile")
    if str(t.precision) in ("16", "16-mixed"):
        raise ConfigError(f"trainer.precision={t.precision!r}: fp16 mixed precision brings a GradScaler that skips "
                          "steps on its own, around the non-finite guard; use 'bf16-mixed'", key="trainer.precision")


def _validate_lora(lora) -> None:
    """``model.lora``: a rank >= 0 (0 / null: off), the other numbers in range, targets from the adapters' list."""
    from sagepose.models.lora import TARGETS  # deferred with the zoo: it imports torch

    _check(lora.rank is None or lora.rank >= 0, "model.lora.rank", lora.rank, "must be >= 0 (0 or null: off)")
    _check(lora.alpha > 0, "model.lora.alpha", lora.alpha, "must be > 0")
    _check(0 <= lora.dropout < 1, "model.lora.dropout", lora.dropout, "must be in [0, 1)")
    _check(lora.train_blocks >= 0, "model.lora.train_blocks", lora.train_blocks, "must be >= 0")
    _check(len(lora.targets) > 0 and set(lora.targets) <= set(TARGETS), "model.lora.targets", lora.targets,
           f"choose one or more of {list(TARGETS)}")


def _check_head_map(head_map, spec: str) -> None:
    """``model.head_map``: ``{joint of model.schema: checkpoint joint}``, names (the checkpoint's are checked when
    it is read: :func:`sagepose.models.head_transplant.channel_sources`)."""
    from sagepose.keypoints import load_schema

    _check(isinstance(head_map, dict), "model.head_map", head_map, "a mapping {model joint: checkpoint joint}")
    joints = load_schema(spec).keypoints
    for new, old in head_map.items():
        _check(isinstance(new, str) and isinstance(old, str), "model.head_map", {new: old},
               "joint names map to joint names")
        _check(new in joints, "model.head_map", {new: old}, f"{new!r} is not a keypoint of model.schema "
               f"{spec}{did_you_mean(new, joints, 'its keypoints include')}")


def _check_schema_spec(spec: str, key: str) -> None:
    from sagepose.keypoints import SCHEMAS, SchemaError, load_schema

    if not Path(spec).suffix:  # a built-in name
        _check_choice(spec, SCHEMAS, key, "keypoint schema")
        return
    try:  # a COCO json or a YAML schema file: read now, so a bad one fails before any work
        load_schema(spec)
    except SchemaError as e:
        raise ConfigError(f"{key}={spec!r}: {e}", key=key, reason=str(e)) from None


def _validate_datasets(cfg: Config) -> None:
    d, m = cfg.data, cfg.model
    _check_choice(m.heads, HEAD_LAYOUTS, "model.heads", "head layout")
    _check_choice(d.union, UNION_MODES, "data.union", "union mode")
    if not d.datasets:
        _check(m.heads == "shared", "model.heads", m.heads, "one head per dataset needs data.datasets")
        return
    names = [ds.name for ds in d.datasets]
    _check(len(set(names)) == len(names), "data.datasets", names, "dataset names must be distinct")
    _check(not (d.train_json or d.val_json), "data.train_json", d.train_json or d.val_json,
           "a multi-dataset run takes its jsons from data.datasets; leave data.train_json / val_json unset")
    _check(not d.det_json, "data.det_json", d.det_json, "detection boxes are not supported with data.datasets")
    _check(not (m.heads == "per_dataset" and d.union == "convert"), "model.heads", m.heads,
           "with data.union=convert every dataset shares model.schema's outputs: one head")
    for i, ds in enumerate(d.datasets):
        _check(bool(ds.name), f"data.datasets[{i}].name", ds.name, "must be set")
        _check_schema_spec(ds.schema, f"data.datasets[{i}].schema")
        _check_choice(ds.format, DATASET_FORMATS, f"data.datasets[{i}].format", "dataset format")
        _check(ds.format != "mpii" or ds.schema == "mpii", f"data.datasets[{i}].schema", ds.schema,
               "format mpii holds MPII-16 keypoints: schema mpii")
        _check(ds.weight > 0, f"data.datasets[{i}].weight", ds.weight, "must be positive")


def _validate_ssl(cfg: Config) -> None:
    s = cfg.ssl
    _check_choice(s.mode, SSL_MODES, "ssl.mode", "mode")
    _check_choice(s.consistency, CONSISTENCIES, "ssl.consistency", "consistency")
    for name in ("every_n", "batch_size", "num_strong_views"):
        _check(getattr(s, name) >= 1, f"ssl.{name}", getattr(s, name), "must be at least 1")
    for name in ("rampup_iters", "mask_warmup_iters"):
        _check(getattr(s, name) >= 0, f"ssl.{name}", getattr(s, name), "must be >= 0")
    for name in ("rampup_fraction", "mask_warmup_fraction"):
        _check_fraction(getattr(s, name), f"ssl.{name}")
    _check(s.warm_start is None or bool(str(s.warm_start).strip()), "ssl.warm_start", s.warm_start,
           "a checkpoint file or a recipe name (null: no warm start)")
    _check_choice(s.keep_start, KEEP_START_RULES, "ssl.keep_start", "rule")
    _check(0 <= s.teacher_ema < 1, "ssl.teacher_ema", s.teacher_ema, "must be in [0, 1)")
    _check(0 < s.mask_momentum < 1, "ssl.mask_momentum", s.mask_momentum, "must be in (0, 1)")
    _check(0 <= s.det_score_thr <= 1, "ssl.det_score_thr", s.det_score_thr, "must be in [0, 1]")
    _check(0 <= s.min_keep_ratio <= 1, "ssl.min_keep_ratio", s.min_keep_ratio, "must be in [0, 1]")
    for name in ("prob_tau", "teacher_tau", "fusion_temperature"):
        _check(getattr(s, name) > 0, f"ssl.{name}", getattr(s, name), "must be positive")
    for name in ("lambda_u", "lambda_topo", "lambda_bone", "lambda_angle", "lambda_temporal", "temporal_eps_px",
                 "mask_beta"):
        _check(getattr(s, name) >= 0, f"ssl.{name}", getattr(s, name), "must be >= 0 (0 switches the term off)")
    _check(0 <= s.style_mix_prob <= 1, "ssl.style_mix_prob", s.style_mix_prob, "a probability must be in [0, 1]")
    _check(0 <= s.style_mix_ratio[0] <= s.style_mix_ratio[1] <= 1, "ssl.style_mix_ratio", s.style_mix_ratio,
           "must be (low, high) with 0 <= low <= high <= 1")
    _check(0 < s.style_mix_band <= 1, "ssl.style_mix_band", s.style_mix_band, "must be in (0, 1]")
    for view in ("weak", "strong"):
        v = getattr(s, view)
        _check(0 < v.scale[0] <= v.scale[1], f"ssl.{view}.scale", v.scale, "must be (low, high) with 0 < low <= high")
        for name in ("rotate", "shift"):
            _check(getattr(v, name) >= 0, f"ssl.{view}.{name}", getattr(v, name), "must be >= 0")
        for name in ("flip_prob", "photometric_prob", "coarse_dropout_prob", "blur_prob", "noise_prob"):
            _check(0 <= getattr(v, name) <= 1, f"ssl.{view}.{name}", getattr(v, name),
                   "a probability must be in [0, 1]")


CACHE_TEACHER = ("auto", "always", "never")


def _validate_distill(cfg: Config) -> None:
    d, s = cfg.distill, cfg.ssl
    if not d.teacher:
        return
    _check_choice(d.kind, CONSISTENCIES, "distill.kind", "kind")
    _check_choice(d.cache_teacher, CACHE_TEACHER, "distill.cache_teacher", "setting")
    _check(d.weight >= 0, "distill.weight", d.weight, "must be >= 0")
    _check(d.teacher_tau > 0, "distill.teacher_tau", d.teacher_tau, "must be positive")
    _check(s.mode != "off", "ssl.mode", s.mode, "distillation reads its unlabeled crops through ssl: use semi (labels "
           "and unlabeled crops) or unsup_only (`sagepose distill` picks one)")
    if cfg.data.datasets:
        raise ConfigError("distill.teacher with data.datasets: distillation into a multi-dataset student is not "
                          "supported; distil into one schema", key="distill.teacher")
    if d.cache_teacher == "always" and not teacher_view_fixed(s):
        raise ConfigError("distill.cache_teacher=always: the teacher's view must be fixed (ssl.weak: rotate 0, "
                          "scale [1, 1], shift 0, flip_prob 0, photometric_prob 0; ssl.fusion false)",
                          key="distill.cache_teacher")


def teacher_view_fixed(s) -> bool:
    """Whether ``ssl``'s teacher view is the plain crop every time (no fusion, no random weak view)."""
    w = s.weak
    return (not s.fusion and w.rotate == 0 and tuple(w.scale) == (1.0, 1.0) and w.shift == 0 and w.flip_prob == 0
            and w.photometric_prob == 0)
