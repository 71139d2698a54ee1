"""The recipe a checkpoint carries, and a checkpoint where a recipe is expected.

A ``.ckpt`` of ``sagepose train`` holds its whole run config (``hyper_parameters["config"]``) and its resolved
keypoint schema (``hyper_parameters["schema"]``); a file ``sagepose convert`` wrote keeps the model section and the
schema in its meta (``sagepose["model_config"]``, ``sagepose["schema"]``). From these come the model a checkpoint
was trained as (:func:`checkpoint_model_config`), what its outputs mean (:func:`checkpoint_schema`), a
multi-dataset checkpoint's plan (:func:`checkpoint_dataset_plan`), and its weights loaded strictly into a model
(:func:`load_weights`) -- read by ``sagepose.load`` (:mod:`sagepose.api`), ``convert`` (:mod:`sagepose.convert`),
the dataset views (:mod:`sagepose.dataset_view`) and by ``sagepose test`` (:mod:`sagepose.train.run`) alike.

Either kind of file is also a recipe (:func:`load_recipe`: ``sagepose test CKPT data.val_json=V``, ``sagepose train
CKPT ...``): the stored config, then the command line's ``key=value`` overrides, checked as a YAML recipe's are.
Testing takes the weights from the checkpoint; training fine-tunes: the checkpoint's model, initialised from its
weights (``model.init_checkpoint``), with a new optimizer and schedule.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from sagepose import config
from sagepose.config import Config, ConfigError, ModelConfig, apply_overrides, config_from_dict, validate
from sagepose.data.multi import DatasetPlan, plan_datasets
from sagepose.errors import ConfigMismatchWarning
from sagepose.keypoints import KeypointSchema
from sagepose.models.checkpoint import CheckpointMismatchError, convert_state_dict, load_checkpoint
from sagepose.models.checkpoint_files import is_torch_save_file, read_checkpoint
from sagepose.models.estimator import TopDownEstimator
from sagepose.models.head_transplant import stored_schema
from sagepose.models.lora import adapter_meta, load_adapters

# ModelConfig fields that decide the weights' meaning and the predictions; the rest (init_checkpoint,
# drop_path_rate, grad_checkpointing, channels_last) only matter to training or to speed
RECIPE_FIELDS = ("name", "schema", "input_size", "flip_test", "codec", "arch", "heatmap_output")


def checkpoint_model_config(raw: dict, source: str = "checkpoint"):
    """The :class:`sagepose.config.ModelConfig` a checkpoint was trained with, or None if it carries none.

    A Lightning ``.ckpt`` from ``sagepose train`` holds the run config in ``hyper_parameters["config"]``;
    a file ``sagepose convert`` wrote from one keeps its model section in ``sagepose["model_config"]``.
    ``init_checkpoint`` is dropped (the weights are here; an adapter checkpoint's base is kept:
    :func:`adapter_base`) and ``grad_checkpointing`` off (no training).
    """
    if not isinstance(raw, dict):
        return None
    meta = raw.get("sagepose") if isinstance(raw.get("sagepose"), dict) else {}
    hparams = raw.get("hyper_parameters") if isinstance(raw.get("hyper_parameters"), dict) else {}
    run_config = hparams.get("config") if isinstance(hparams.get("config"), dict) else {}
    model = meta.get("model_config") or run_config.get("model")
    if not isinstance(model, dict):
        return None
    try:
        cfg = config_from_dict({"model": model}).model
    except ConfigError as e:
        raise ConfigError(f"{source}: the model config it carries: {e}", key=e.key, reason=e.reason) from None
    return dataclasses.replace(cfg, init_checkpoint=adapter_base(raw), grad_checkpointing=False)


def adapter_base(raw: dict) -> str | None:
    """The ``model.init_checkpoint`` a model needs to take ``raw``'s weights: an adapter checkpoint's base (its
    weights are not in the file), else None."""
    meta = adapter_meta(raw)
    return meta["base"] if meta is not None else None


def checkpoint_schema(raw: dict, source: str = "checkpoint") -> KeypointSchema | None:
    """The keypoint schema a checkpoint was trained with, as it stores it (plain data: a training ``.ckpt``'s
    ``hyper_parameters["schema"]``, a converted file's ``sagepose["schema"]``), or None if it stores none.

    This is what the weights mean, so it is preferred to resolving ``model.schema`` again: a schema file (a COCO
    json, a YAML) need not exist where the checkpoint is loaded.
    """
    return stored_schema(raw, source)  # read where the models read an init checkpoint's, below this layer


def _head_keypoints(raw: dict, source: str) -> int | None:
    """The keypoint count a checkpoint's head predicts (its final heatmap layer's outputs), or None."""
    try:
        sd = convert_state_dict(raw, None, source)[0]
    except (ValueError, KeyError):
        return None
    for key in ("head.final_conv.weight", "head.heatmap.weight"):  # heatmap heads, the fusion head
        if key in sd:
            return int(sd[key].shape[0])
    return None


def model_config_differences(given, trained) -> list[str]:
    """``model.FIELD: checkpoint X, given Y`` for each :data:`RECIPE_FIELDS` entry in which a model config
    (:class:`ModelConfig` or a model-config dict; missing keys: the defaults) differs from a checkpoint's."""
    def recipe(cfg) -> dict:
        d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
        out = {f: d.get(f, getattr(ModelConfig(), f)) for f in RECIPE_FIELDS}
        out["input_size"] = tuple(out["input_size"]) if out["input_size"] is not None else None
        return out

    g, t = recipe(given), recipe(trained)
    return [f"model.{f}: checkpoint {t[f]!r}, given {g[f]!r}" for f in RECIPE_FIELDS if g[f] != t[f]]


def warn_if_not_trained_as(given, trained, source: str) -> None:
    """A loud warning naming each field in which ``given`` (an explicit model config) differs from the model
    the checkpoint ``source`` was trained as (``trained``, see :func:`checkpoint_model_config`)."""
    diff = model_config_differences(given, trained) if trained is not None else []
    if diff:
        warnings.warn(f"{source} was trained as another model than the config given builds ({'; '.join(diff)}); "
                      "building the config's model. Pass the checkpoint alone (sagepose.load(CKPT)) or its zoo "
                      "name to rebuild the model it was trained as", ConfigMismatchWarning, stacklevel=3)


def load_weights(model: TopDownEstimator, raw: dict, source: str) -> None:
    """:func:`load_checkpoint` (strict) of what the file ``source`` holds; a mismatch report names the file, and a
    head for another keypoint count than the model's schema is one line naming both counts.

    An adapter checkpoint (:func:`adapter_meta`) loads into the model built from its config -- the base from its
    ``init_checkpoint``, adapters on -- refused when that base's weights hash differs from the one it trained on."""
    if adapter_meta(raw) is not None:
        trained = checkpoint_model_config(raw, source)
        load_adapters(model, raw, source, trained.lora.train_blocks if trained is not None else 0)
        return
    try:
        load_checkpoint(model, raw, strict=True)
    except CheckpointMismatchError as e:
        k, schema = _head_keypoints(raw, source), model.schema
        if k is not None and k != schema.num_keypoints:
            raise CheckpointMismatchError(
                f"{source}: its head predicts {k} keypoints, schema {schema.name} has {schema.num_keypoints}: give "
                "the schema it was trained with (model.schema), or start a new head from it with "
                "model.init_checkpoint") from None
        raise CheckpointMismatchError(f"{source}: {e}") from None


def checkpoint_dataset_plan(raw: dict, source: str = "checkpoint") -> DatasetPlan | None:
    """A multi-dataset checkpoint's :class:`sagepose.data.multi.DatasetPlan` (its datasets, their schemas and how
    they map onto its outputs), rebuilt from the run config it carries; None for a single-dataset checkpoint."""
    hparams = raw.get("hyper_parameters") if isinstance(raw, dict) else None
    run_config = hparams.get("config") if isinstance(hparams, dict) else None
    if not isinstance(run_config, dict) or not (run_config.get("data") or {}).get("datasets"):
        return None
    try:
        cfg = config_from_dict(run_config)
    except ConfigError as e:
        raise ConfigError(f"{source}: the run config it carries: {e}", key=e.key, reason=e.reason) from None
    return plan_datasets(cfg, checkpoint_schema(raw, source))


def load_recipe(path: str, overrides: list[str], purpose: str) -> tuple[Config, str | None]:
    """``sagepose train`` / ``test``'s CONFIG -> ``(config, checkpoint)``: a YAML recipe or bundled name gives
    ``(load_config(path, overrides), None)``; a sagepose checkpoint gives its stored config with ``overrides`` on
    top and its path. ``purpose``: ``"test"`` (weights from the checkpoint, no ``init_checkpoint``) or
    ``"train"`` (fine-tuning: ``model.init_checkpoint`` is the checkpoint)."""
    if not is_torch_save_file(path):
        if Path(path).is_file() and not _is_text(path):
            raise ConfigError(f"{path}: neither a YAML recipe nor a checkpoint (a binary file torch.save did not "
                              "write)")
        return config.load_config(path, overrides), None
    raw = read_checkpoint(path)
    data = stored_config(raw)
    if data is None:
        how = ("give a recipe and --checkpoint " + path if purpose == "test" else
               f"give a recipe (YAML) with model.init_checkpoint={path}")
        raise ConfigError(f"{path}: a checkpoint without a sagepose run config (not written by sagepose train or "
                          f"convert), so it is no recipe: {how}")
    model = dict(data.get("model") or {})
    model["init_checkpoint"] = str(Path(path).resolve()) if purpose == "train" else adapter_base(raw)
    data = {**data, "model": model}
    for item in overrides:  # one at a time, so a bad one is named (as load_config does)
        try:
            config_from_dict(apply_overrides(data, [item]))
        except ConfigError as e:
            raise ConfigError(f"override {item}: {e.reason}", key=e.key, reason=e.reason) from None
    data = apply_overrides(data, list(overrides))
    try:
        cfg = validate(config_from_dict(data))
    except ConfigError as e:
        by = [item for item in overrides if item.split("=", 1)[0].strip() == e.key]
        where = f"override {by[-1]}" if by else f"{path}: its stored run config"
        raise ConfigError(f"{where}: {e.reason or e}", key=e.key, reason=e.reason) from None
    return cfg, path


def stored_config(raw: dict) -> dict | None:
    """The run config a checkpoint stores (a training ``.ckpt``'s whole config; a converted file's model section
    as ``{"model": ...}``), as plain data; None if it stores none."""
    hparams = raw.get("hyper_parameters") if isinstance(raw.get("hyper_parameters"), dict) else {}
    if isinstance(hparams.get("config"), dict):
        return dict(hparams["config"])
    meta = raw.get("sagepose") if isinstance(raw.get("sagepose"), dict) else {}
    if isinstance(meta.get("model_config"), dict):
        return {"model": dict(meta["model_config"])}
    return None


def _is_text(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a character cut at the end of the sample
    return b"\0" not in head
