"""Checkpoint import: reading foreign files, and one pure ``state_dict -> state_dict`` function per format.

Our modules keep readable names (``backbone.blocks.3.mlp.fc1``); foreign key names are
mapped here and nowhere else:

* :func:`from_mmpose` -- MMPose 1.x / mmpretrain ViT (ViTPose configs, Sapiens pose checkpoints, RTMPose);
* :func:`from_vitpose` -- MMPose 0.x names: the official ViTPose repository (``keypoint_head``,
  ``last_norm``) and MMPose 0.x HRNet / HRFormer files;
* :func:`from_sapiens_pretrain` -- Sapiens' MAE pretraining files (backbone only, with or
  without the ``backbone.`` prefix; the MAE decoder is dropped);
* :func:`from_mae` -- timm-named MAE ViT weights (``blocks.N``, ``patch_embed.proj``), backbone only;
* :func:`from_lightning` -- a sagepose Lightning ``.ckpt`` (keys prefixed ``model.``);
* :func:`from_sapiens2` -- the official Sapiens2 pose files (``backbone.`` + ``decode_head.``) and its
  pretraining backbones (format ``sapiens2-pretrain``).

:func:`read_checkpoint` (:mod:`sagepose.models.checkpoint_files`) reads any supported *file*
(``torch.save``, TorchScript, ``torch.export``) weights-only, never running code from it.
:func:`load_checkpoint` detects the format, converts, resizes ``pos_embed``
to the model's token grid when needed, and loads -- strictly by default, with a readable report.
:func:`save_checkpoint` writes sagepose's own format atomically.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from sagepose.errors import SagePoseError
from sagepose.models.checkpoint_files import CheckpointReadError, read_checkpoint  # noqa: F401 (public here too)
from sagepose.models.vit import interpolate_pos_embed

# (pattern, replacement) pairs applied in order with re.sub; anchored on full key names.
_MMPOSE_RULES = [
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed."),
    (r"^backbone\.layers\.(\d+)\.ln1\.", r"backbone.blocks.\1.norm1."),
    (r"^backbone\.layers\.(\d+)\.ln2\.", r"backbone.blocks.\1.norm2."),
    (r"^backbone\.layers\.(\d+)\.attn\.", r"backbone.blocks.\1.attn."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"backbone.blocks.\1.mlp.fc1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"backbone.blocks.\1.mlp.fc2."),
    (r"^backbone\.ln1\.", "backbone.norm."),
    (r"^head\.final_layer\.", "head.final_conv."),
    # RTMPose's RTMCC head (sagepose.models.rtmcc_head); its CSPNeXt backbone keeps mmdet's names
    (r"^head\.mlp\.0\.", "head.mlp.norm."),
    (r"^head\.mlp\.1\.", "head.mlp.fc."),
    (r"^head\.gau\.ln\.", "head.gau.norm."),
    (r"^head\.gau\.res_scale\.scale$", "head.gau.res_scale"),
]

_VITPOSE_RULES = [
    (r"^backbone\.patch_embed\.proj\.", "backbone.patch_embed."),
    (r"^backbone\.last_norm\.", "backbone.norm."),
    (r"^keypoint_head\.final_layer\.", "head.final_conv."),
    (r"^keypoint_head\.", "head."),
]

_MAE_RULES = [  # timm / MAE repository names, no prefix
    (r"^patch_embed\.proj\.", "backbone.patch_embed."),
    (r"^norm\.", "backbone.norm."),
    (r"^(blocks|pos_embed)", r"backbone.\1"),
]

_SAPIENS2_RULES = [
    (r"^decode_head\.conv_pose\.", "head.final_conv."),
    (r"^decode_head\.", "head."),
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed."),
    (r"^backbone\.rope_embed\.", "backbone.rope."),
    (r"^backbone\.tokenizer\.local_pos_embed$", "backbone.tokenizer.pos_embed"),  # the 4K tokenizer's
    (r"^backbone\.tokenizer\.w_cls$", "backbone.tokenizer.cls_token"),
    # the blocks, and the tokenizer's blocks (no gamma there)
    (r"^backbone\.((?:tokenizer\.)?blocks\.\d+)\.ln1\.", r"backbone.\1.norm1."),
    (r"^backbone\.((?:tokenizer\.)?blocks\.\d+)\.ln2\.", r"backbone.\1.norm2."),
    (r"^backbone\.((?:tokenizer\.)?blocks\.\d+)\.attn\.w([qkv])\.", r"backbone.\1.attn.\2."),
    (r"^backbone\.blocks\.(\d+)\.attn\.gamma\.weight$", r"backbone.blocks.\1.layer_scale"),
    (r"^backbone\.((?:tokenizer\.)?blocks\.\d+)\.ffn\.w12\.", r"backbone.\1.mlp.fc1."),
    (r"^backbone\.((?:tokenizer\.)?blocks\.\d+)\.ffn\.w3\.", r"backbone.\1.mlp.fc2."),
    (r"^backbone\.ln1\.", "backbone.norm."),
]

# Formats that carry a backbone only: their files initialise fine-tuning, so a strict load
# accepts a missing head (it keeps its initialisation) and reports it.
BACKBONE_ONLY = ("sapiens-pretrain", "mae", "sapiens2-pretrain")


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _head_stage(key: str) -> str:
    """``head.{deconv,conv}_layers.{3i + j}`` (Sequential of conv, norm, act per stage) -> readable names."""
    m = re.match(r"^head\.(deconv|conv)_layers\.(\d+)\.(.+)$", key)
    if not m:
        return key
    kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
    part = {0: "conv", 1: "norm"}.get(idx % 3)
    if part is None:
        raise ValueError(f"{key}: activation layers hold no parameters; unexpected key")
    return f"head.{kind}_blocks.{idx // 3}.{part}.{rest}"


def unwrap(checkpoint: dict) -> dict:
    """A raw state dict, or one wrapped under ``state_dict`` / ``model`` (MMEngine, Lightning, MAE, ours)."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def from_mmpose(sd: dict) -> dict:
    """MMPose 1.x top-down state dict (raw or wrapped in ``state_dict``) -> sagepose names.

    ``backbone.layers.N.{ln1,attn.qkv,attn.proj,ln2,ffn.layers.0.0,ffn.layers.1}`` ->
    ``backbone.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
    ``head.deconv_layers.{0,1,3,4}`` -> ``head.deconv_blocks.{0,1}.{conv,norm}``, RTMPose's
    ``head.{final_layer,mlp.0,mlp.1,gau.ln,gau.res_scale.scale}`` -> ``head.{final_conv,mlp.norm,mlp.fc,gau.norm,
    gau.res_scale}``, etc.
    The data preprocessor's mean/std buffers and an MAE cls token are dropped. HRNet / HRFormer
    keys are ours already; HRFormer's ``relative_position_index`` buffers (constants of the window
    size, rebuilt by the model) are dropped.
    """
    out = {}
    for key, value in unwrap(sd).items():
        if key.startswith("data_preprocessor.") or key == "backbone.cls_token":
            continue  # ViTPose / Sapiens use no cls token (MAE checkpoints carry one)
        if key.endswith(".relative_position_index"):
            continue
        out[_head_stage(_rename(key, _MMPOSE_RULES))] = value
    return out


def from_vitpose(sd: dict) -> dict:
    """MMPose 0.x names (the official ViTPose repository, MMPose 0.x HRNet files) -> sagepose names.

    The ViTPose repository's ``pos_embed`` is (1, 1 + Hp * Wp, C) and its forward adds
    ``pos[:, 1:] + pos[:, :1]``: the cls slot is folded into every token here, so the
    conversion is exact (mmpretrain's loader drops the slot instead).
    """
    out = {}
    for key, value in unwrap(sd).items():
        key = _head_stage(_rename(key, _VITPOSE_RULES))
        if key == "backbone.pos_embed":
            value = value[:, 1:] + value[:, :1]
        out[key] = value
    return out


def from_sapiens_pretrain(sd: dict) -> dict:
    """Sapiens MAE pretraining file -> sagepose backbone names (no head).

    The ``*_clean.pth`` files hold the bare mmpretrain ViT (``patch_embed.projection``,
    ``layers.N``, ``ln1``, ``pos_embed`` with a cls slot, ``cls_token``); the full ones
    prefix it with ``backbone.`` and add the MAE decoder (``neck.*``), which is dropped. The
    (1, 1 + 64 * 64, C) position table keeps its cls slot here; :func:`adapt_pos_embed` drops
    it and resizes the square 1024x1024 grid to the model's.
    """
    sd = unwrap(sd)
    if not any(k.startswith("backbone.") for k in sd):
        sd = {f"backbone.{k}": v for k, v in sd.items()}
    return from_mmpose({k: v for k, v in sd.items() if k.startswith("backbone.")})


def from_mae(sd: dict) -> dict:
    """timm-named MAE ViT weights (ViTPose's initialisation) -> sagepose backbone names (no head).

    The cls token and MAE's decoder / pixel-prediction weights are dropped; ``pos_embed``
    keeps its cls slot for :func:`adapt_pos_embed`, which drops it and resizes the grid.
    """
    out = {}
    for key, value in unwrap(sd).items():
        if key.startswith(("patch_embed.", "blocks.", "norm.", "pos_embed")):
            out[_rename(key, _MAE_RULES)] = value
    return out


def from_lightning(sd: dict, prefix: str = "model.") -> dict:
    """A sagepose Lightning checkpoint: keep the ``model.`` sub-module's keys (an EMA teacher is left out)."""
    return {k[len(prefix):]: v for k, v in unwrap(sd).items() if k.startswith(prefix)}


def from_sapiens2(sd: dict) -> dict:
    """Official Sapiens2 state dict -> sagepose names (:mod:`sagepose.models.sapiens2`).

    ``backbone.blocks.N.{ln1,attn.{wq,wk,wv,q_norm,k_norm,proj,gamma.weight},ln2,ffn.{w12,w3}}`` ->
    ``backbone.blocks.N.{norm1,attn.{q,k,v,q_norm,k_norm,proj},layer_scale,norm2,mlp.{fc1,fc2}}``,
    ``backbone.{patch_embed.projection,rope_embed.periods,ln1}`` -> ``backbone.{patch_embed,rope.periods,norm}``,
    the 4K tokenizer's ``backbone.tokenizer.{local_pos_embed,w_cls}`` -> ``backbone.tokenizer.{pos_embed,cls_token}``
    and its ``blocks.N`` renamed as the blocks',
    ``decode_head.{deconv,conv}_layers.{3i}`` -> ``head.{deconv,conv}_blocks.{i}.conv``, ``decode_head.conv_pose``
    -> ``head.final_conv``. A pretraining file's bare backbone keys get the ``backbone.`` prefix; anything
    else in it (no pose head) is dropped.
    """
    sd = unwrap(sd)
    if not any(k.startswith("backbone.") for k in sd):
        sd = {f"backbone.{k}": v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k.startswith(("backbone.", "decode_head."))}
    return {_head_stage(_rename(k, _SAPIENS2_RULES)): v for k, v in sd.items()}


def detect_format(sd: dict) -> str:
    """The format of an unwrapped state dict, from its key names (one of :data:`CONVERTERS`)."""
    keys = list(sd)
    if any(k.startswith("model.backbone.") for k in keys):
        return "lightning"
    if any(k.startswith("keypoint_head.") or k.startswith("backbone.last_norm.") for k in keys):
        return "vitpose"
    if any(k.endswith("rope_embed.periods") or ".attn.wq." in k for k in keys):  # Sapiens2's own names
        return "sapiens2" if any(k.startswith("decode_head.") for k in keys) else "sapiens2-pretrain"
    if any(k.startswith("neck.decoder") or k == "neck.mask_token" for k in keys):
        return "sapiens-pretrain"  # the MAE decoder sits in mmpretrain's neck
    if any(k.startswith("layers.") for k in keys) and any(k.startswith("patch_embed.projection.") for k in keys):
        return "sapiens-pretrain"  # the *_clean.pth files: a bare mmpretrain ViT
    if any(k.startswith("blocks.") for k in keys) and any(k.startswith("patch_embed.proj.") for k in keys):
        return "mae"
    if any(k.startswith("backbone.layers.") or ".final_layer." in k or "_layers." in k for k in keys):
        return "mmpose"
    return "sagepose"


CONVERTERS = {"sagepose": lambda sd: dict(sd), "lightning": from_lightning, "mmpose": from_mmpose,
              "vitpose": from_vitpose, "sapiens-pretrain": from_sapiens_pretrain, "mae": from_mae,
              "sapiens2": from_sapiens2, "sapiens2-pretrain": from_sapiens2}


def _strip_wrapper_prefix(sd: dict) -> dict:
    """Drop a prefix every key shares in front of ``backbone.`` (a traced / exported wrapper module)."""
    keys = list(sd)
    if not keys or any(k.startswith(("backbone.", "model.backbone.")) for k in keys):
        return sd
    first = next((k for k in keys if ".backbone." in k), None)
    if first is None:
        return sd
    prefix = first[: first.index(".backbone.") + 1]
    if all(k.startswith(prefix) for k in keys):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# ---------------------------------------------------------------------------------------------
# Converting and loading


def _grid_for(n_tokens: int, aspect: float) -> tuple[int, int]:
    """The (h, w) factorisation of a token count closest to an aspect ratio h / w (square for MAE)."""
    pairs = [(h, n_tokens // h) for h in range(1, n_tokens + 1) if n_tokens % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1]) - math.log(aspect)))


def adapt_pos_embed(sd: dict, model: nn.Module, key: str = "backbone.pos_embed") -> dict:
    """Fit a checkpoint's (1, L, C) pos_embed to the model's token grid: drop a cls slot, resize (bicubic)."""
    if key not in sd or not hasattr(model, "backbone") or not hasattr(model.backbone, "grid_size"):
        return sd
    pos, grid = sd[key], tuple(model.backbone.grid_size)
    n = grid[0] * grid[1]
    if pos.ndim != 3 or pos.shape[1] == n:
        return sd
    length = pos.shape[1]
    if length == n + 1 or (math.isqrt(length - 1) ** 2 == length - 1 and math.isqrt(length) ** 2 != length):
        pos = pos[:, 1:]  # a cls slot (MAE pretraining: 14x14 + 1); we have no cls token
    src = _grid_for(pos.shape[1], grid[0] / grid[1])
    return {**sd, key: interpolate_pos_embed(pos, src, grid)}


class CheckpointMismatchError(SagePoseError, RuntimeError):
    pass


def mismatch_report(model: nn.Module, sd: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) key descriptions of ``sd`` against the model's state dict."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shaped = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shaped


def _drop_definition_buffers(sd: dict, model: nn.Module) -> dict:
    """Drop the model's non-persistent buffers (normalisation mean / std) that traced or exported files
    carry, when their values are the model's own; different values stay in and are reported."""
    own, persistent = dict(model.named_buffers()), model.state_dict()
    same = {k for k, v in sd.items() if k in own and k not in persistent
            and own[k].shape == v.shape and torch.equal(own[k].to(v.dtype), v)}
    return {k: v for k, v in sd.items() if k not in same}


def convert_state_dict(raw: dict, fmt: str | None = None, name: str = "state dict") -> tuple[dict, str, bool]:
    """Anything :func:`read_checkpoint` returns -> (sagepose-named tensors, format, backbone only)."""
    meta = raw.get("sagepose") if isinstance(raw.get("sagepose"), dict) else {}
    sd = _strip_wrapper_prefix(unwrap(raw))
    fmt = fmt or detect_format(sd)
    if fmt not in CONVERTERS:
        raise ValueError(f"{name}: unknown checkpoint format {fmt!r}; known: {sorted(CONVERTERS)}")
    sd = {k: v for k, v in CONVERTERS[fmt](sd).items() if isinstance(v, torch.Tensor)}
    return sd, fmt, fmt in BACKBONE_ONLY or bool(meta.get("backbone_only"))


def load_checkpoint(model: nn.Module, path_or_sd: str | os.PathLike | dict, strict: bool = True,
                    fmt: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """Load any supported checkpoint into ``model``; returns (missing, unexpected, mis-shaped).

    ``path_or_sd``: a file (see :func:`read_checkpoint`) or what one holds. ``fmt`` forces a
    format (see :data:`CONVERTERS`); by default it is detected from the keys. With ``strict`` any
    mismatch raises :class:`CheckpointMismatchError` listing every key -- except a missing head
    for backbone-only files (pretraining weights), which keeps its initialisation; otherwise the
    matching keys load and the lists are returned for the caller to report.
    """
    name = str(path_or_sd) if not isinstance(path_or_sd, dict) else "state dict"
    raw = path_or_sd if isinstance(path_or_sd, dict) else read_checkpoint(path_or_sd)
    sd, fmt, backbone_only = convert_state_dict(raw, fmt, name)
    sd = adapt_pos_embed(_drop_definition_buffers(sd, model), model)
    missing, unexpected, shaped = mismatch_report(model, sd)
    fatal_missing = [k for k in missing if not (backbone_only and k.startswith("head."))]
    if strict and (fatal_missing or unexpected or shaped):
        kind = f"{fmt} format" + (", backbone only" if backbone_only else "")
        lines = [f"{name} ({kind}) does not match {type(model).__name__}:"]
        for title, items in (("missing", fatal_missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines += [f"    {item}" for item in items]
        raise CheckpointMismatchError("\n".join(lines))
    bad = {k.split(":")[0] for k in shaped}
    model.load_state_dict({k: v for k, v in sd.items() if k not in bad}, strict=False)
    return missing, unexpected, shaped


def save_checkpoint(path: str | os.PathLike, state_dict: dict, **meta) -> Path:
    """Write a sagepose checkpoint ``{"state_dict": ..., "sagepose": meta}`` atomically (tmp + rename)."""
    from sagepose.fileio import atomic_open

    with atomic_open(path) as f:
        torch.save({"state_dict": {k: v.detach().contiguous() for k, v in state_dict.items()},
                    "sagepose": {"format_version": 1, **meta}}, f)
    return Path(path)
