"""A translator's file: its state dict, the two schemas, the fixed map's sources, the config and the fit's report, as
plain data (``torch.load(weights_only=True)`` reads it)."""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict

import torch

from sagepose.config.parse import build_dataclass
from sagepose.errors import SagePoseError
from sagepose.fileio import atomic_open
from sagepose.keypoint_maps import KeypointMap
from sagepose.keypoints import load_schema, schema_from_dict, schema_to_dict
from sagepose.translate.config import TranslatorConfig
from sagepose.translate.model import Translator

FILE_FORMAT = "sagepose-translator"
FILE_VERSION = 1


class TranslatorFileError(SagePoseError, ValueError):
    """A file that is not a sagepose translator (unreadable, another kind of torch file, or inconsistent)."""


def save_translator(path, model: Translator, cfg: TranslatorConfig, source_schema, target_schema,
                    report: dict) -> str:
    """Write the translator to ``path`` atomically, as plain data (``torch.load(weights_only=True)`` reads it):
    its state dict, the two schemas (``schema_to_dict``), the fixed map's sources, the config and the report."""
    source, target = load_schema(source_schema), load_schema(target_schema)
    if (source, target) != (model.kmap.source, model.kmap.target):
        raise ValueError(f"{path}: the schemas given ({source.name} -> {target.name}) are not the translator's "
                         f"({model.kmap.source.name} -> {model.kmap.target.name})")
    if (cfg.hidden, cfg.layers) != (model.hidden, model.layers):
        raise ValueError(f"{path}: config hidden={cfg.hidden}, layers={cfg.layers} is not the translator's")
    state = dict(format=FILE_FORMAT, version=FILE_VERSION,
                 state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                 source=schema_to_dict(source), target=schema_to_dict(target),
                 sources=[list(s) for s in model.kmap.sources], config=asdict(cfg),
                 report=json.loads(json.dumps(report)))  # plain numbers and strings only
    with atomic_open(path) as f:
        torch.save(state, f)
    return os.fspath(path)


def load_translator(path) -> Translator:
    """A translator written by :func:`save_translator` (eval mode, on the CPU); :class:`TranslatorFileError`
    naming the file for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: translator file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TranslatorFileError(f"{path}: not a sagepose translator file ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FILE_FORMAT:
        raise TranslatorFileError(f"{path}: not a sagepose translator file (no format={FILE_FORMAT!r} entry; "
                                  f"'sagepose translate fit' writes them)")
    if obj.get("version") != FILE_VERSION:
        raise TranslatorFileError(f"{path}: translator file version {obj.get('version')!r}, this sagepose reads "
                                  f"{FILE_VERSION}")
    try:
        source = schema_from_dict(obj["source"], where=f"{path}: source schema")
        target = schema_from_dict(obj["target"], where=f"{path}: target schema")
        kmap = KeypointMap(source, target, tuple(tuple(int(i) for i in s) for s in obj["sources"]))
        cfg = build_dataclass(TranslatorConfig, obj["config"], "config")
        model = Translator(kmap, cfg.hidden, cfg.layers, cfg.refine_covered)
        state = dict(obj["state_dict"])
        state.setdefault("base_weights", model.base_weights)  # files from before the affine base: none
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TranslatorFileError(f"{path}: inconsistent translator file ({first})") from None
    return model.eval()
