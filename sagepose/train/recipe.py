"""A checkpoint where a recipe is expected: ``sagepose test CKPT data.val_json=V`` and ``sagepose train CKPT ...``.

A ``.ckpt`` of ``sagepose train`` carries its whole run config (``hyper_parameters["config"]``) and its keypoint
schema; a file ``sagepose convert`` wrote carries its model section (``sagepose["model_config"]``). Either is a
recipe: the stored config, then the command line's ``key=value`` overrides, checked as a YAML recipe's are.
Testing takes the weights from the checkpoint; training fine-tunes: the checkpoint's model, initialised from its
weights (``model.init_checkpoint``), with a new optimizer and schedule.
"""
from __future__ import annotations

from pathlib import Path

from sagepose import config
from sagepose.config import Config, ConfigError, apply_overrides, config_from_dict, validate


def load_recipe(path: str, overrides: list[str], purpose: str) -> tuple[Config, str | None]:
    """``sagepose train`` / ``test``'s CONFIG -> ``(config, checkpoint)``: a YAML recipe or bundled name gives
    ``(load_config(path, overrides), None)``; a sagepose checkpoint gives its stored config with ``overrides`` on
    top and its path. ``purpose``: ``"test"`` (weights from the checkpoint, no ``init_checkpoint``) or
    ``"train"`` (fine-tuning: ``model.init_checkpoint`` is the checkpoint)."""
    from sagepose.models.checkpoint_files import is_torch_save_file, read_checkpoint

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
    model["init_checkpoint"] = str(Path(path).resolve()) if purpose == "train" else None
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
