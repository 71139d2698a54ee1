"""Plain data <-> a typed :class:`~sagepose.config.sections.Config`: ``config_from_dict`` checks each value against
its field's type and refuses an unknown key with a "did you mean"; ``key=value`` overrides are parsed with
``ast.literal_eval`` (never ``eval``) and set into the nested dict; ``to_dict`` / ``dump_config`` / ``replace`` go
back. :class:`ConfigError` is every config error."""
from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing
from typing import Any

import yaml

from sagepose.config.sections import Config
from sagepose.errors import SagePoseError


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


def did_you_mean(key: str, options, what: str = "valid keys") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, else ``"; {what}: ..."`` listing them all."""
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
        return build_dataclass(tp, value, where)
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


def build_dataclass(cls, data: dict, where: str):
    """A dataclass ``cls`` from plain ``data``, its values coerced to the field types (nested dataclasses from
    mappings); an unknown key or a wrong type is a :class:`ConfigError` naming ``where`` (its dotted place)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _error(where, f"unknown key {key!r}{did_you_mean(key, names)}")
        tp = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise _error(sub, f"expected a mapping, got {value!r}")
            kwargs[key] = build_dataclass(tp, value, sub)
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
    return build_dataclass(Config, data or {}, "")


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
        changes[name] = build_dataclass(type(section), {**dataclasses.asdict(section), **fields_}, name)
    return dataclasses.replace(cfg, **changes)
