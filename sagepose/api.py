"""User-facing entry points: ``sagepose.load(name_or_config, checkpoint, device)``; and, from their own modules,
:func:`convert` / :func:`match_model` (:mod:`sagepose.convert`) and :func:`dataset_view`
(:mod:`sagepose.dataset_view`)."""
from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from pathlib import Path

import torch

from sagepose.convert import convert, match_model
from sagepose.dataset_view import DatasetView, dataset_view
from sagepose.errors import SagePoseError
from sagepose.models.checkpoint import read_checkpoint
from sagepose.models.estimator import TopDownEstimator, check_device
from sagepose.models.lora import merge_adapters
from sagepose.models.zoo import MODELS, build_model, build_model_from_config
from sagepose.recipe import (  # what a checkpoint carries: its model config, schema, dataset plan
    checkpoint_dataset_plan,
    checkpoint_model_config,
    checkpoint_schema,
    load_weights,
    warn_if_not_trained_as,
)

__all__ = ["CHECKPOINT_SUFFIXES", "DatasetView", "NoWeightsError", "RandomWeightsWarning", "convert", "dataset_view",
           "load", "match_model"]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pt2", ".ckpt", ".bin")


class RandomWeightsWarning(UserWarning):
    """A model built without weights (a zoo name or recipe and no checkpoint): its predictions are random."""


class NoWeightsError(SagePoseError, ValueError):
    """A model without weights where weights are required (``sagepose infer`` / ``export`` without
    ``--random-weights``)."""


_WARNED_RANDOM: set[str] = set()  # the names load() has warned about, once each


def _no_weights(name: str, random_weights: bool | None) -> None:
    """``random_weights``: None warns once per name, True accepts quietly, False refuses (the CLI's default)."""
    from sagepose import hub  # deferred: only named weights need it

    if random_weights:
        return
    named = [k for k, w in hub.WEIGHTS.items() if w.model == name]
    hint = f" (or name published weights in its place: {', '.join(named)})" if named else ""
    if random_weights is False:
        raise NoWeightsError(f"{name}: no weights given, so its predictions would be random: pass --checkpoint "
                             f"FILE{hint}, or --random-weights to run it anyway")
    if name not in _WARNED_RANDOM:
        _WARNED_RANDOM.add(name)
        warnings.warn(f"sagepose.load({name!r}) without a checkpoint: random weights, meaningless predictions; "
                      f"pass checkpoint=FILE{hint}", RandomWeightsWarning, stacklevel=4)


def _drop_init(cfg):
    """A model config without ``init_checkpoint``: weights that come from a checkpoint need no other file."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, init_checkpoint=None)
    return {k: v for k, v in dict(cfg).items() if k != "init_checkpoint"}


def _config_field(cfg, name: str):
    """A field of a model config (a ModelConfig or a dict; None for no config or an absent key)."""
    return getattr(cfg, name, None) if dataclasses.is_dataclass(cfg) else dict(cfg or {}).get(name)


def _schema_spec(cfg):
    """``model.schema`` of a model config (a ModelConfig or a dict; the default when absent)."""
    from sagepose.config import ModelConfig

    return cfg.schema if dataclasses.is_dataclass(cfg) else dict(cfg).get("schema", ModelConfig().schema)


def _explicit_config(name_or_config):
    """The model config a Config, model-config dict, YAML path or bundled recipe name gives, else None."""
    from sagepose.config import load_config  # deferred: only config users need it
    from sagepose.configs import resolve_config

    if hasattr(name_or_config, "model"):  # a loaded Config
        return name_or_config.model
    if isinstance(name_or_config, dict):
        return name_or_config
    if Path(name_or_config).suffix in (".yaml", ".yml"):
        return load_config(name_or_config).model
    if not Path(name_or_config).suffix:
        try:
            recipe = resolve_config(name_or_config)
        except FileNotFoundError:
            return None
        return load_config(recipe).model
    return None


def _with_dataset_heads(model: TopDownEstimator, raw: dict, stored, trained) -> TopDownEstimator:
    """``model`` with one head per dataset when the checkpoint was trained so (``model.heads=per_dataset``)."""
    if trained is None or trained.heads != "per_dataset" or stored is None:
        return model
    from sagepose.models.heads import per_dataset_heads

    model.head = per_dataset_heads(model.head, checkpoint_dataset_plan(raw).union)
    return model


def load(name_or_config=None, checkpoint: str | os.PathLike | dict | None = None,
         device: str = "cpu", fuse: bool = True, exact: bool = False,
         dtype: torch.dtype | str = torch.float32, detector=None,
         random_weights: bool | None = None) -> TopDownEstimator:
    """A ready-to-predict model in eval mode, with optional weights loaded strictly.

    ``name_or_config``: a named checkpoint (``"vitpose-b-coco"``, see :data:`sagepose.hub.WEIGHTS`:
    downloaded once into the cache), a zoo name (``"vitpose-b"``), a YAML config path or bundled recipe name
    (``"demo_tiny_vit"``), a loaded :class:`sagepose.config.Config`, a model-config dict (see
    ``build_model_from_config``), or a checkpoint file that names its model (``sagepose train``'s
    ``.ckpt``, a file ``sagepose convert`` wrote); None with ``checkpoint`` set: that checkpoint's model.
    ``checkpoint``: any file :func:`sagepose.models.checkpoint.read_checkpoint` reads -- a sagepose
    checkpoint, MMPose 1.x / 0.x, the ViTPose repository's, Sapiens' (pretrain, pose, TorchScript,
    ``.pt2``); the format is detected from its content. A backbone-only file (pretraining) leaves
    the head at its initialisation.

    A checkpoint that carries the model config it was trained with (:func:`checkpoint_model_config`:
    heatmap output, codec and architecture overrides) rebuilds exactly that model, alone or with its zoo
    name; another zoo name is an error, and an explicit config that differs from it a
    :class:`~sagepose.errors.ConfigMismatchWarning` naming the fields (the config's model is built).
    ``fuse``: :meth:`TopDownEstimator.fuse_for_inference` (BatchNorms folded into convolutions, same outputs
    to float32 rounding, faster); ``fuse=False`` keeps the trainable module with its original state dict.
    ``exact``: :meth:`TopDownEstimator.set_exact` on the unfused model: MMPose 1.x's arithmetic operation for
    operation, its heatmaps and scores bit for bit (keypoints to float32 rounding) on the same torch build, CPU
    and thread count; slower.
    ``detector``: an ONNX person detector file (or a :class:`sagepose.detect.Detector`) attached to the model:
    ``predict(image)`` without boxes then predicts on the people it finds.
    A ``.onnx`` file that ``sagepose export`` wrote gives an :class:`sagepose.onnx_model.OnnxEstimator` instead:
    the same ``predict``, the network run by onnxruntime on ``device`` (``"cpu"``, ``"cuda[:N]"``,
    ``"tensorrt[:N]"``).
    ``dtype``: :meth:`TopDownEstimator.set_dtype` -- ``"bfloat16"`` (CPUs with native bf16, GPUs) or
    ``"float16"`` (GPUs) for faster prediction at about 1e-2 relative difference in the heatmaps.
    ``device``: a torch device this build can use (:func:`~sagepose.models.estimator.check_device`: ``"cuda"`` on
    a CPU-only torch is a one-line :class:`~sagepose.models.estimator.DeviceError`).
    ``random_weights``: a zoo name or recipe without any checkpoint builds a model of random weights: None (the
    default) warns once per name (:class:`RandomWeightsWarning`), True accepts it quietly (tests, benchmarks),
    False refuses it with a :class:`NoWeightsError` (``sagepose infer`` / ``export`` without ``--random-weights``).
    A name that is both a zoo row and named weights (``"sapiens2-1b"``) fetches the weights unless True.
    """
    model = _load(name_or_config, checkpoint, device, fuse, exact, dtype, random_weights)
    if detector is not None:
        from sagepose.detect import Detector

        model.detector = detector if callable(detector) else Detector(detector, device=str(device))
    return model


def _load(name_or_config, checkpoint, device, fuse, exact, dtype, random_weights=None):
    from sagepose import hub  # deferred: only named weights need it

    if isinstance(name_or_config, (str, os.PathLike)) and Path(name_or_config).suffix == ".onnx":
        if checkpoint is not None:
            raise ValueError(f"{name_or_config}: an ONNX file holds its weights; drop the checkpoint")
        if exact or dtype not in (torch.float32, "float32"):
            raise ValueError(f"{name_or_config}: exact mode and set_dtype are for torch models; an ONNX file runs "
                             "in the precision it was exported in (sagepose export --fp16)")
        from sagepose.onnx_model import OnnxEstimator

        return OnnxEstimator(name_or_config, device=device)
    device = check_device(device)
    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    key = str(name_or_config) if isinstance(name_or_config, (str, os.PathLike)) else None
    if (key is not None and key not in hub.WEIGHTS and key not in MODELS and raw is None
            and Path(key).suffix in CHECKPOINT_SUFFIXES):  # the checkpoint alone
        source, raw, name_or_config, key = key, read_checkpoint(key), None, None
    meta = raw.get("sagepose", {}) if isinstance(raw, dict) and isinstance(raw.get("sagepose"), dict) else {}
    trained = checkpoint_model_config(raw, source) if raw is not None else None
    stored = checkpoint_schema(raw, source) if raw is not None else None
    explicit = _explicit_config(name_or_config) if name_or_config is not None and key not in MODELS else None
    if name_or_config is None:
        if raw is None:
            raise ValueError("sagepose.load: give a model (zoo name, config) or a checkpoint")
        if trained is not None:
            model = build_model_from_config(trained, schema=stored)
        elif meta.get("model") in MODELS:
            model = build_model(meta["model"], num_keypoints=meta.get("num_keypoints"))
        else:
            raise ValueError(f"{source}: names no zoo model (write it with `sagepose convert IN OUT "
                             "--model NAME`), or pass the model name: sagepose.load(NAME, checkpoint=FILE)")
    elif key in hub.WEIGHTS or key in MODELS:
        zoo_name = hub.WEIGHTS[key].model if key in hub.WEIGHTS else key
        if trained is not None and trained.name != zoo_name:
            raise ValueError(f"{source} was trained as {trained.name!r}, not {key!r}: pass {trained.name!r} "
                             "or the checkpoint alone")
        if trained is not None:
            model = build_model_from_config(trained, schema=stored)
        elif key in hub.WEIGHTS:
            model = build_model(zoo_name, num_keypoints=hub.WEIGHTS[key].num_keypoints)
        else:
            model = build_model(zoo_name, num_keypoints=meta.get("num_keypoints"))
        if raw is None and key in hub.WEIGHTS and not (random_weights and key in MODELS):  # sapiens2-1b: both
            raw = read_checkpoint(hub.fetch(key))
    elif explicit is not None:
        warn_if_not_trained_as(explicit, trained, source)
        # the same model.schema as the checkpoint's: its stored schema (the file need not be here)
        same = stored if trained is not None and _schema_spec(explicit) == trained.schema else None
        model = build_model_from_config(_drop_init(explicit) if raw is not None else explicit, schema=same)
    else:
        from sagepose.configs import CONFIG_DIR

        names = [*hub.WEIGHTS, *MODELS, *(q.stem for q in CONFIG_DIR.glob("*.yaml"))]
        close = difflib.get_close_matches(str(name_or_config), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"zoo models: {', '.join(sorted(MODELS))}"
        raise ValueError(f"{name_or_config!r} is neither a named checkpoint, a zoo model, a bundled recipe, a .yaml "
                         f"config nor a checkpoint file; {hint}")
    if raw is not None:
        model = _with_dataset_heads(model, raw, stored, trained)
        load_weights(model, raw, source if checkpoint is not None or name_or_config is None else str(key))
        merge_adapters(model)  # an adapter checkpoint's adapters folded in: a plain model, the fast path whole
    elif _config_field(explicit, "init_checkpoint") is None:  # no weights from anywhere
        _no_weights(key or _config_field(explicit, "name") or "this model", random_weights)
    model = model.to(device).eval()
    if exact:
        return model.set_exact().set_dtype(dtype)
    model = model.fuse_for_inference() if fuse else model
    return model.set_dtype(dtype)
