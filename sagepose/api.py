"""User-facing entry points: ``sagepose.load(name_or_config, checkpoint, device)`` and :func:`convert`."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from sagepose.models.checkpoint import (
    BACKBONE_ONLY,
    adapt_pos_embed,
    convert_state_dict,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from sagepose.models.estimator import TopDownEstimator
from sagepose.models.zoo import MODELS, build_model, build_model_from_config

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pt2", ".ckpt", ".bin")


def load(name_or_config, checkpoint: str | os.PathLike | dict | None = None,
         device: str = "cpu", fuse: bool = True, exact: bool = False,
         dtype: torch.dtype | str = torch.float32) -> TopDownEstimator:
    """A ready-to-predict model in eval mode, with optional weights loaded strictly.

    ``name_or_config``: a named checkpoint (``"vitpose-b-coco"``, see :data:`sagepose.hub.WEIGHTS`:
    downloaded once into the cache), a zoo name (``"vitpose-b"``), a YAML config path, a loaded
    :class:`sagepose.config.Config`, a model-config dict (see ``build_model_from_config``), or a
    checkpoint written by ``sagepose convert`` (it names its model).
    ``checkpoint``: any file :func:`sagepose.models.checkpoint.read_checkpoint` reads -- a sagepose
    checkpoint, MMPose 1.x / 0.x, the ViTPose repository's, Sapiens' (pretrain, pose, TorchScript,
    ``.pt2``); the format is detected from its content. A backbone-only file (pretraining) leaves
    the head at its initialisation.
    ``fuse``: :meth:`TopDownEstimator.fuse_for_inference` (BatchNorms folded into convolutions, same outputs
    to float32 rounding, faster); ``fuse=False`` keeps the trainable module with its original state dict.
    ``exact``: :meth:`TopDownEstimator.set_exact` on the unfused model: MMPose 1.x's arithmetic operation for
    operation, its heatmaps and keypoints bit for bit on the same torch build, CPU and thread count; slower.
    ``dtype``: :meth:`TopDownEstimator.set_dtype` -- ``"bfloat16"`` (CPUs with native bf16, GPUs) or
    ``"float16"`` (GPUs) for faster prediction at about 1e-2 relative difference in the heatmaps.
    """
    from sagepose import hub  # deferred: only named weights need it

    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    meta = raw.get("sagepose", {}) if isinstance(raw, dict) and isinstance(raw.get("sagepose"), dict) else {}
    if hasattr(name_or_config, "model"):  # a loaded Config
        model = build_model_from_config(name_or_config.model)
    elif isinstance(name_or_config, dict):
        model = build_model_from_config(name_or_config)
    elif str(name_or_config) in hub.WEIGHTS:
        weights = hub.WEIGHTS[str(name_or_config)]
        model = build_model(weights.model, num_keypoints=weights.num_keypoints)
        if raw is None:
            raw = read_checkpoint(hub.fetch(str(name_or_config)))
    elif str(name_or_config) in MODELS:
        model = build_model(str(name_or_config), num_keypoints=meta.get("num_keypoints"))
    elif Path(name_or_config).suffix in (".yaml", ".yml"):
        from sagepose.config import load_config  # deferred: only config users need it

        model = build_model_from_config(load_config(name_or_config).model)
    elif Path(name_or_config).suffix in CHECKPOINT_SUFFIXES and raw is None:
        raw = read_checkpoint(name_or_config)
        meta = raw.get("sagepose") if isinstance(raw.get("sagepose"), dict) else {}
        if meta.get("model") not in MODELS:
            raise ValueError(f"{name_or_config}: names no zoo model (write it with `sagepose convert IN OUT "
                             "--model NAME`), or pass the model name: sagepose.load(NAME, checkpoint=FILE)")
        model = build_model(meta["model"], num_keypoints=meta.get("num_keypoints"))
    else:
        raise ValueError(f"{name_or_config!r} is neither a named checkpoint ({', '.join(sorted(hub.WEIGHTS))}), "
                         f"a zoo model ({', '.join(sorted(MODELS))}), a .yaml config nor a checkpoint file")
    if raw is not None:
        load_checkpoint(model, raw, strict=True)
    model = model.to(device).eval()
    if exact:
        return model.set_exact().set_dtype(dtype)
    model = model.fuse_for_inference() if fuse else model
    return model.set_dtype(dtype)


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
            fmt: str | None = None) -> dict:
    """Any supported checkpoint file -> a sagepose checkpoint (``sagepose.load(model, checkpoint=dst)``).

    The weights are renamed, checked strictly against the zoo model (``model``, or the one they
    fit: :func:`match_model`), position embeddings resized to its grid, and written atomically with
    their provenance. Returns a summary (model, keypoints, source format, tensor count, backbone only).
    """
    raw = read_checkpoint(src)
    sd, fmt, backbone_only = convert_state_dict(raw, fmt, str(src))
    k = None
    if model is None:
        model, k = match_model(sd, backbone_only, fmt)
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; known: {sorted(MODELS)}")
    final = sd.get("head.final_conv.weight")
    k = k or (int(final.shape[0]) if final is not None else 17)
    net = build_model(model, num_keypoints=k)
    load_checkpoint(net, raw, strict=True, fmt=fmt)  # raises with the full report on any mismatch
    own = net.state_dict()
    keep = {n: own[n] for n in adapt_pos_embed(sd, net) if n in own}
    save_checkpoint(dst, keep, model=model, num_keypoints=k, source=Path(src).name, source_format=fmt,
                    backbone_only=backbone_only)
    return dict(model=model, num_keypoints=k, source_format=fmt, tensors=len(keep),
                backbone_only=backbone_only or fmt in BACKBONE_ONLY, output=str(dst))
