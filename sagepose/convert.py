"""``convert``: any supported checkpoint file -> a sagepose checkpoint that names its model (``sagepose convert``),
and ``match_model``, the zoo model whose parameters a state dict fills. Re-exported by :mod:`sagepose.api`."""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import torch

from sagepose.config import LoraConfig
from sagepose.keypoints import schema_to_dict
from sagepose.models.checkpoint import (
    BACKBONE_ONLY,
    convert_state_dict,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from sagepose.models.lora import adapter_meta, merge_adapters
from sagepose.models.zoo import MODELS, build_model, build_model_from_config
from sagepose.recipe import checkpoint_model_config, checkpoint_schema, load_weights


@functools.cache
def _zoo_shapes(name: str, num_keypoints: int) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """A zoo model's parameter shapes and its definition-only buffer names (built on the meta device)."""
    with torch.device("meta"):
        net = build_model(name, num_keypoints=num_keypoints)
    own = {n: tuple(v.shape) for n, v in net.state_dict().items()}
    return own, frozenset(n for n, _ in net.named_buffers()) - set(own)  # mean / std: only traced files hold them


def match_model(sd: dict, backbone_only: bool = False, fmt: str | None = None) -> tuple[str, int]:
    """The zoo model (name, keypoint count) whose parameters a sagepose-named state dict fills exactly.

    Built on the meta device, so trying every zoo entry costs no memory. A position table of
    another grid still matches (it is resized on load); among several matches the one whose grid
    is the checkpoint's wins, then the family the source format suggests (Sapiens pretraining ->
    ``sapiens-*``, MAE -> ``vitpose-*``: their backbones share ViT-L/H numbers).
    """
    final = sd.get("head.final_conv.weight")
    k = int(final.shape[0]) if final is not None else 17
    family = {"sapiens-pretrain": "sapiens", "mae": "vitpose"}.get(fmt or "", "")
    found = []
    for name in MODELS:
        try:
            own, definition = _zoo_shapes(name, k)
        except (ValueError, KeyError):  # a builder that cannot take this keypoint count
            continue
        want = {n for n in own if not (backbone_only and n.startswith("head."))}
        if want != set(sd) - definition:
            continue
        resized = [n for n in want if own[n] != tuple(sd[n].shape)]
        if set(resized) - {"backbone.pos_embed"}:
            continue
        found.append((not resized, name.startswith(family), name))
    if not found:
        raise ValueError("no zoo model has exactly these parameters; name one (--model NAME). "
                         f"Zoo: {', '.join(sorted(MODELS))}")
    exact, hinted, _ = max(found, key=lambda f: f[:2])
    return next(name for e, h, name in found if (e, h) == (exact, hinted)), k


def convert(src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None,
            fmt: str | None = None, merge: bool = False) -> dict:
    """Any supported checkpoint file -> a sagepose checkpoint (``sagepose.load(dst)``).

    The weights are renamed, checked strictly against the zoo model (``model``, or the one they
    fit: :func:`match_model`), position embeddings resized to its grid, and written atomically with
    their provenance. A training checkpoint's model config (:func:`checkpoint_model_config`) decides the
    model instead and is kept in the output's meta (``model_config``), so the file rebuilds the model it
    was trained as. An adapter run's checkpoint (``model.lora``: adapters and trained parts only) needs ``merge``:
    its base (``model.init_checkpoint``, hash-checked) is rebuilt, the adapters folded into it
    (:func:`sagepose.models.lora.merge_adapters`) and the whole model written, plain. Returns a summary (model,
    keypoints, source format, tensor count, backbone only).
    """
    raw = read_checkpoint(src)
    adapters = adapter_meta(raw) is not None
    if adapters and not merge:
        raise ValueError(f"{src} holds adapters (model.lora) and the trained parts, not its base: pass --merge to "
                         "fold them into the base and write the whole model")
    sd, fmt, backbone_only = convert_state_dict(raw, fmt, str(src))
    trained = checkpoint_model_config(raw, str(src))
    if trained is not None:  # a training checkpoint: its recipe's model (overrides and all), carried along
        if model is not None and model != trained.name:
            raise ValueError(f"{src} was trained as {trained.name!r}, not {model!r}: drop --model or pass "
                             f"--model {trained.name}")
        model, net = trained.name, build_model_from_config(trained, schema=checkpoint_schema(raw, str(src)))
        k = net.schema.num_keypoints
    else:
        k = None
        if model is None:
            model, k = match_model(sd, backbone_only, fmt)
        if model not in MODELS:
            raise KeyError(f"unknown model {model!r}; known: {sorted(MODELS)}")
        final = sd.get("head.final_conv.weight")
        k = k or (int(final.shape[0]) if final is not None else 17)
        net = build_model(model, num_keypoints=k)
    if adapters:
        load_weights(net, raw, str(src))  # onto its base, refused if the base's hash differs
        merge_adapters(net)
        trained = dataclasses.replace(trained, init_checkpoint=None, lora=LoraConfig())  # a plain model now
    else:
        load_checkpoint(net, raw, strict=True, fmt=fmt)  # raises with the full report on any mismatch
    own = net.state_dict()
    keep = own if adapters else {n: own[n] for n in sd if n in own}  # as loaded: pos_embed resized to the grid
    recipe = ({"model_config": dataclasses.asdict(trained), "schema": schema_to_dict(net.schema)}
              if trained is not None else {})
    save_checkpoint(dst, keep, model=model, num_keypoints=k, source=Path(src).name, source_format=fmt,
                    backbone_only=backbone_only, **recipe)
    return dict(model=model, num_keypoints=k, source_format=fmt, tensors=len(keep),
                backbone_only=backbone_only or fmt in BACKBONE_ONLY, output=str(dst))
