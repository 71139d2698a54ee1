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


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit-tiny"  # a sagepose.models.zoo name
    schema: str = "coco"
    input_size: tuple[int, int] | None = None  # crop (w, h); heatmaps are input / 4. None: the zoo's
    init_checkpoint: str | None = None  # weights to start from (sagepose, MMPose, ViTPose format)
    flip_test: bool = True
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
    # per-sample geometric augmentation (MMPose's defaults)
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    scale_factor: tuple[float, float] = (0.5, 1.5)
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    # batched on-device augmentation
    photometric_prob: float = 0.0
    coarse_dropout_prob: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 1.0  # ViT layer-wise lr decay rate; 1.0 = off
    warmup_iters: int = 500
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
    log_every_steps: int = 20
    progress_bar: bool = True
    use_joint_weights: bool = False  # weight the loss by the schema's joint weights
    fusion_loss: FusionLossWeights = field(default_factory=FusionLossWeights)  # a fusion head's loss terms
    # checkpoints/last.ckpt is written at every epoch end and, when > 0, every this many optimizer steps
    # (a mid-epoch resume point); checkpoints/best.ckpt by val AP; epoch-EEE.ckpt kept every N epochs (0: none)
    checkpoint_every_steps: int = 0
    keep_every_epochs: int = 0
    # a step whose loss or gradient is not finite is skipped (no weight update); this many in a row stop the run
    max_nonfinite_steps: int = 10


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class ConfigError(ValueError):
    pass


def _did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


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
        raise ConfigError(f"{where}: {value!r} is not a valid {tp}")
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key, names)}")
        tp = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{sub}: expected a mapping")
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
            raise ConfigError(f"override {item!r}: expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = parse_value(text)
    return data


def config_from_dict(data: dict) -> Config:
    return _build(Config, data or {}, "")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """YAML file (or None for defaults) + ``key=value`` overrides -> a frozen :class:`Config`."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


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
