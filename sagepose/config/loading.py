"""``load_config``: a YAML file (a path or a bundled recipe name) + ``key=value`` overrides -> a frozen, validated
:class:`~sagepose.config.sections.Config`, each error naming the file or the override it came from."""
from __future__ import annotations

from pathlib import Path

import yaml

from sagepose.config.parse import ConfigError, apply_overrides, config_from_dict
from sagepose.config.sections import Config
from sagepose.config.validation import validate


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
