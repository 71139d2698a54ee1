"""Typed run configuration: frozen nested dataclasses <- YAML <- ``key=value`` overrides.

    cfg = load_config("configs/vitpose_b_coco_256x192.yaml", ["optim.lr=1e-4", "trainer.max_epochs=5"])

Values on the command line are parsed with ``ast.literal_eval`` (never ``eval``); strings
that are not Python literals stay strings. An unknown key fails with a "did you mean",
so a typo never silently does nothing.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sagepose.errors import SagePoseError


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit-tiny"  # a sagepose.models.zoo name
    schema: str = "coco"
    input_size: tuple[int, int] | None = None  # crop (w, h); heatmaps are input / 4. None: the zoo's
    init_checkpoint: str | None = None  # weights to start from (sagepose, MMPose, ViTPose format)
    flip_test: bool = True
    # multi-scale test: box scale factors; each scale's heatmaps (flip-tested) mapped into the base box's frame and
    # averaged before decoding, e.g. [0.75, 1.0, 1.25]. (1.0,): one scale
    test_scales: tuple[float, ...] = (1.0,)
    drop_path_rate: float | None = None  # None: the zoo's default
    grad_checkpointing: bool = False
    codec: dict = field(default_factory=dict)  # codec argument overrides, e.g. {"sigma": 3.0}
    arch: dict = field(default_factory=dict)  # backbone/head number overrides, e.g. {"depth": 4}
    # "raw": heatmaps regressed with MSE (MMPose's recipes); "softmax": a spatial softmax per joint
    # trained with cross-entropy to the normalised target Gaussian (converges far faster from scratch)
    heatmap_output: str = "raw"
    # convolution weights in channels-last (NHWC) memory: oneDNN's faster layout for CPU convolutions
    # (+11% training throughput for the demo model in bf16); crops already arrive channels-last
    channels_last: bool = False
    # multi-dataset runs (data.datasets): "shared" -- one head over the union's outputs; "per_dataset" -- ViTPose+'s
    # layout, one head per dataset on the shared backbone, each predicting its dataset's joints
    heads: str = "shared"


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset of a multi-dataset run (``data.datasets``): its annotations in its own keypoint schema."""

    name: str
    schema: str = "coco"  # a built-in schema name or a schema file, as model.schema
    train_json: str | None = None
    val_json: str | None = None  # scored in its own schema with its own metric (None: not scored)
    image_root: str | None = None  # default: the folder of each json
    # "coco": COCO-format keypoint jsons (AIC, CrowdPose and the synthetic sets too); "mpii": MPII in the json form
    # MMPose converts it to (sagepose.data.load_mpii: 1-based joints, scored by PCKh with head_boxes)
    format: str = "coco"
    head_boxes: str | None = None  # format mpii: mpii_gt_val.mat or a json of head boxes for val_json's records
    # how often its samples are drawn: a dataset's share of each epoch is weight x size over the sum of those
    # (1.0 everywhere: every sample once per epoch, as one concatenated dataset); epochs hold all datasets' samples
    weight: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    train_json: str | None = None
    val_json: str | None = None
    image_root: str | None = None  # default: the folder of each json
    det_json: str | None = None  # evaluate on detector boxes instead of ground-truth boxes
    batch_size: int = 32
    val_batch_size: int = 64
    num_workers: int = 2
    # keep decoded training images in RAM (each loader process its own copy): skips the JPEG decode, about
    # half of a small crop's loading cost; H x W x 3 bytes per image (the demo's 5000: 1.2 GB)
    cache_images: bool = False
    # decode each JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's scaled IDCT) when the crop is at least that many
    # times smaller than the person's box: less decode and warp work per sample, crops low-pass filtered by block
    # means instead of bilinear point samples (benchmarks/bench_dataloader.py states speed and pixel difference)
    reduced_decode: bool = False
    # per-sample geometric augmentation (MMPose's defaults; CropAugment's defaults are these, written once)
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    scale_factor: tuple[float, float] = (0.5, 1.5)
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    # batched on-device augmentation (sagepose.data.batch_aug): each step's per-sample probability, 0 = off
    photometric_prob: float = 0.0
    coarse_dropout_prob: float = 0.0
    blur_prob: float = 0.0  # camera degradation (batch_aug.degrade): Gaussian blur, sigma 0.3-2 px
    noise_prob: float = 0.0  # and sensor noise, std up to 12 grey levels
    # loader processes: batches in page-locked memory for a faster, asynchronous copy to the GPU (None: when
    # training on CUDA), and each worker's batches in flight
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    # several datasets with their own keypoint sets in one run (then train_json / val_json stay unset);
    # data.union: "merged" (joints they share are one output), "concatenated" (each dataset's joints its own
    # outputs) or "convert" (every dataset mapped into model.schema, MMPose's KeypointConverter; midpoints allowed)
    datasets: tuple[DatasetConfig, ...] = ()
    union: str = "merged"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 1.0  # ViT layer-wise lr decay rate; 1.0 = off
    warmup_iters: int = 500
    # the warmup as a fraction of the run's optimizer steps instead (then warmup_iters is not read), so it fits
    # a run of any length (sagepose.train.steps)
    warmup_fraction: float | None = None
    warmup_ratio: float = 0.001
    schedule: str = "step"  # "step" (MMPose: x0.1 at milestones) or "cosine"
    milestones: tuple[int, ...] = (170, 200)  # epochs
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_clip: float | None = 1.0
    fused: bool = False  # torch's fused AdamW kernel (one launch per step; GPU or CPU)
    # exponential moving average of the weights (Lightning's EMAWeightAveraging), 0 = off; when on,
    # validation and the checkpoints' "state_dict" use the averaged weights, e.g. 0.9999
    ema_decay: float = 0.0
    # two phases in one run: train with the backbone frozen for this many epochs, then everything
    freeze_backbone_epochs: int = 0


@dataclass(frozen=True)
class FusionLossWeights:
    """The fusion head's six loss terms' weights (:mod:`sagepose.train.fusion_loss`); 0 switches a term off."""

    heatmap: float = 1.0
    offset: float = 1.0
    peak: float = 1.0
    variance: float = 0.1
    overlap: float = 1.0
    shape: float = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    out_dir: str = "runs/train"
    max_epochs: int = 210
    max_steps: int = -1
    max_time_minutes: float | None = None  # stop training after this wall time
    precision: str = "32-true"  # or "bf16-mixed"
    accumulate_grad_batches: int = 1
    accelerator: str = "auto"
    devices: Any = "auto"  # per node; under torchrun / SLURM it must match the processes per node
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp", "fsdp" or any Lightning strategy name
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (DDP)
    fsdp_cpu_offload: bool = False  # FSDP keeps parameters, gradients and optimizer state in CPU memory
    seed: int = 0
    val_every_epochs: int = 10
    # validate every this many optimizer steps instead of by epochs (0: by val_every_epochs); for runs bounded by
    # trainer.max_steps, whose epochs can be one step long (30 labeled frames at batch 16)
    val_every_steps: int = 0
    log_every_steps: int = 20
    progress_bar: bool = True
    use_joint_weights: bool = False  # weight the loss by the schema's joint weights
    fusion_loss: FusionLossWeights = field(default_factory=FusionLossWeights)  # a fusion head's loss terms
    # checkpoints/last.ckpt is written at every epoch end and, when > 0, every this many optimizer steps
    # (a mid-epoch resume point; epoch ends closer than this to the previous save are then skipped, so one-step
    # epochs do not write a file a step); checkpoints/best.ckpt by val AP; epoch-EEE.ckpt kept every N epochs
    checkpoint_every_steps: int = 0
    # checkpoints/last.ckpt also every this many minutes of training, mid-epoch (0 or null: off), so a crash loses
    # at most this much; SIGINT / SIGTERM write it too, then stop (sagepose.train.interrupt)
    checkpoint_every_minutes: float | None = 10.0
    keep_every_epochs: int = 0
    # a step whose loss or gradient is not finite is skipped (no weight update); this many in a row stop the run
    max_nonfinite_steps: int = 10
    # torch.compile of the network (training and validation forward; checkpoints keep plain names). mode and
    # backend are torch.compile's ("default", "reduce-overhead", "max-autotune"...; "inductor", "aot_eager"...)
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"


@dataclass(frozen=True)
class ViewConfig:
    """One kind of view of an unlabeled crop, drawn on the device (:mod:`sagepose.ssl.views`): a random affine about
    the crop centre, then photometric distortion and coarse dropout with these per-sample probabilities."""

    rotate: float = 10.0  # max |degrees|
    scale: tuple[float, float] = (0.9, 1.1)  # zoom range
    shift: float = 0.05  # max shift, as a fraction of the crop side
    flip_prob: float = 0.0
    photometric_prob: float = 0.5
    coarse_dropout_prob: float = 0.0
    blur_prob: float = 0.0  # camera degradation (sagepose.data.batch_aug.degrade): Gaussian blur, sigma 0.3-2 px
    noise_prob: float = 0.0  # and sensor noise, std up to 12 grey levels


def _strong_view() -> ViewConfig:
    return ViewConfig(rotate=30.0, scale=(0.75, 1.25), shift=0.1, flip_prob=0.5, photometric_prob=0.8,
                      coarse_dropout_prob=0.5)


@dataclass(frozen=True)
class SSLConfig:
    """Semi-supervised fine-tuning (:mod:`sagepose.train.ssl_module`); the defaults are the SAGE-Pose notes'.

    ``mode``: "off" (supervised), "semi" (a labeled and an unlabeled batch every step) or "unsup_only" (unlabeled
    batches only, from a supervised checkpoint in ``model.init_checkpoint``). ``unlabeled``: one source or a list --
    an image folder, a video file, a detections json (COCO results), a COCO json with boxes, or a dict
    ``{path, kind, every_n, score_thr, images, root}`` (:func:`sagepose.data.unlabeled_sources.load_unlabeled`).
    """

    mode: str = "off"
    unlabeled: str | tuple[Any, ...] = ()
    # start from a supervised model (SAGE-Pose's stage 0): a checkpoint file, or a recipe name (e.g.
    # custom_tiny_vit) trained first in OUT/warm_start with this run's data, model and trainer settings (and that
    # recipe's steps and optimizer), reused when it finished there before. The start is scored on data.val_json
    # and stays best.ckpt unless the fine-tuning beats it (sagepose.train.warm_start). None: no warm start
    warm_start: str | None = None
    # when the start stays best.ckpt: "clearly_worse" -- the fine-tuning is worse on the val frames beyond chance
    # (paired sign-flip test, p < 0.05; pixel_error); "worse" -- any worse val score (AP, score: always this)
    keep_start: str = "clearly_worse"
    unlabeled_root: str | None = None  # where detections' images are found as {image_id:012d}.jpg
    cache_dir: str | None = None  # where video frames are cached (None: OUT/unlabeled_cache); runs may share one
    every_n: int = 10  # video sources: every n-th frame
    det_score_thr: float = 0.3  # detections below it are not used
    batch_size: int = 32  # unlabeled crops per step (per process)
    num_strong_views: int = 1  # M strong student views per unlabeled crop
    teacher_ema: float = 0.999  # EMA decay of the teacher, updated every optimizer step
    teacher_bf16: bool = True  # the teacher's forward in bf16 autocast where the device computes bf16 natively
    lambda_u: float = 5.0  # weight of the consistency term (ramped up over rampup_iters)
    rampup_iters: int = 1000
    rampup_fraction: float | None = None  # the ramp as a fraction of the run's steps instead (rampup_iters unread)
    consistency: str = "js"  # "js", "kl" or "mse"
    prob_tau: float = 0.5  # temperature of the probabilities compared (<= 1 sharpens)
    teacher_tau: float = 0.5  # spatial sharpening of the fused teacher map (<= 1 sharpens; 1 = off)
    fusion: bool = True  # fuse two weak teacher views by confidence (False: one teacher view)
    fusion_temperature: float = 1.0
    mask: bool = True  # the dynamic keypoint mask (False: every joint that stays in view counts)
    mask_beta: float = 2.0  # threshold mean - beta * std of each keypoint's confidence
    mask_momentum: float = 0.99
    mask_warmup_iters: int = 1000  # all-ones mask before this step
    mask_warmup_fraction: float | None = None  # as a fraction of the run's steps instead (mask_warmup_iters unread)
    min_keep_ratio: float = 0.3
    priors: bool = True  # structural priors from the skeleton and the labeled set
    lambda_topo: float = 0.02
    lambda_bone: float = 0.02
    lambda_angle: float = 0.01
    # video sources: consecutive frames' coordinates, in image px (0 = off); lightning-pose weighs its temporal
    # loss 1 / (2 e^5) ~ 0.0034 by default: a loss in pixels must weigh little beside probability divergences
    lambda_temporal: float = 0.005
    temporal_eps_px: float = 20.0  # image pixels of motion a frame that cost nothing (lightning-pose's)
    # appearance transfer (sagepose.data.batch_aug.style_mix): a labeled crop takes, with this probability, part of
    # the Fourier amplitude spectrum of an unlabeled crop of the same step -- the supervised loss then also sees the
    # unlabeled domain's look (colour, contrast, blur, noise) on labeled poses; 0 = off (the SAGE-Pose notes' method)
    style_mix_prob: float = 0.0
    style_mix_ratio: tuple[float, float] = (0.0, 1.0)  # the share of the unlabeled crop's amplitude, uniform in it
    style_mix_band: float = 1.0  # frequencies mixed, as a fraction of Nyquist per axis (1 = all)
    weak: ViewConfig = field(default_factory=ViewConfig)
    strong: ViewConfig = field(default_factory=_strong_view)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)


class ConfigError(SagePoseError, ValueError):
    """A setting that is unknown, of the wrong type or out of range.

    ``key``: the dotted setting to blame (``"optim.lr"``), when there is one; ``reason``: the message
    without the location, so :func:`load_config` can name the YAML file or the override that set it.
    """

    def __init__(self, message: str, key: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.key, self.reason = key, reason or message


def _error(where: str, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {reason}" if where else reason, key=where or None, reason=reason)


def _did_you_mean(key: str, options, what: str = "valid keys") -> str:
    close = difflib.get_close_matches(str(key), [str(o) for o in options], n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; {what}: {', '.join(sorted(map(str, options)))}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML or command-line value to the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise _error(where, f"{value!r} is not a valid {tp}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _error(where, f"expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _error(where, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise _error(where, f"expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _error(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _error(where, f"expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _error(where, f"expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _error(where, f"expected true/false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _error(where, f"expected a string, got {value!r}")
    return value


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _error(where, f"unknown key {key!r}{_did_you_mean(key, names)}")
        tp = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise _error(sub, f"expected a mapping, got {value!r}")
            kwargs[key] = _build(tp, value, sub)
        else:
            kwargs[key] = _coerce(value, tp, sub)
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        if text.lower() in ("null", "none"):
            return None
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted ``section.key=value`` pairs into a nested dict (in place; returned)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item}: expected key=value", reason="expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item}: {p} is not a section", reason=f"{p} is not a section")
        node[parts[-1]] = parse_value(text)
    return data


def config_from_dict(data: dict) -> Config:
    return _build(Config, data or {}, "")


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
    _check(value in choices, key, value, f"unknown {what} {value!r}{_did_you_mean(value, choices, 'choose from')}")


def _strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry  # deferred: seconds to import

    return ["auto", *StrategyRegistry.available_strategies()]


def validate(cfg: Config) -> Config:
    """Refuse, before any work starts, a value no run can use: names that are not choices (with a did-you-mean),
    numbers out of range, settings that do not work together. Raises :class:`ConfigError` naming the
    setting (``key``); returns ``cfg``."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.trainer
    _check_schema_spec(m.schema, "model.schema")
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
    _validate_datasets(cfg)
    from sagepose.models.zoo import MODELS  # deferred, and last: it imports torch

    _check_choice(m.name, MODELS, "model.name", "model")
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


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """YAML file (a path or a bundled recipe name, or None for defaults) + ``key=value`` overrides -> a frozen,
    validated (:func:`validate`) :class:`Config`.

    Errors name their source: the YAML file for its own keys, ``override KEY=VALUE`` for a command-line one.
    """
    from sagepose.configs import resolve_config

    data: dict = {}
    if path is not None:
        try:
            path = resolve_config(path)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        data = _read_yaml(path)
        try:
            config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}", key=e.key, reason=e.reason) from None
    overrides = list(overrides or [])
    for item in overrides:  # one at a time, so a bad one is named
        try:
            config_from_dict(apply_overrides(data, [item]))
        except ConfigError as e:
            raise ConfigError(f"override {item}: {e.reason}", key=e.key, reason=e.reason) from None
    cfg = config_from_dict(data)
    try:
        return validate(cfg)
    except ConfigError as e:
        by = [item for item in overrides if item.split("=", 1)[0].strip() == e.key]
        if by:
            raise ConfigError(f"override {by[-1]}: {e.reason}", key=e.key, reason=e.reason) from None
        raise ConfigError(f"{path}: {e}" if path else str(e), key=e.key, reason=e.reason) from None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The fully resolved config as YAML (printed at the start of a run and saved beside it)."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)


def replace(cfg: Config, **sections: dict) -> Config:
    """Copy of ``cfg`` with some fields of some sections changed: ``replace(cfg, trainer={"max_epochs": 1})``."""
    changes = {}
    for name, fields_ in sections.items():
        section = getattr(cfg, name)
        changes[name] = _build(type(section), {**dataclasses.asdict(section), **fields_}, name)
    return dataclasses.replace(cfg, **changes)
