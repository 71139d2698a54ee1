"""AdamW with ViT layer-wise lr decay, and the warmup + step/cosine schedule of the published recipes.

Layer decay follows MMPose's / ViTPose's LayerDecayOptimWrapperConstructor: ``depth + 2``
groups -- patch embedding, position embedding, the class / storage tokens (and Sapiens2's tokenizer) in group 0,
block ``i`` in group ``i + 1``, everything else (final norm, head) in the last group -- each scaled by
``rate ** (depth + 1 - group)``. No weight decay on 1-D parameters, biases or pos_embed.
"""
from __future__ import annotations

import math
import re

import torch

from sagepose.config import OptimConfig

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
# storage tokens and the (4K) tokenizer: Sapiens2's, the tokenizer's blocks in group 0 as in its runner
_EMBED = re.compile(r"(?:^|\.)(patch_embed|pos_embed|cls_token|storage_tokens|tokenizer)(?:\.|$)")


def layer_group(name: str, depth: int) -> int:
    """Layer-decay group of a parameter of a ViT-backed model (0 .. depth + 1)."""
    if name.startswith("backbone."):
        if _EMBED.search(name):
            return 0
        m = _BLOCK.search(name)
        if m:
            return int(m.group(1)) + 1
    return depth + 1


def param_groups(model: torch.nn.Module, cfg: OptimConfig, ndims: dict[str, int] | None = None) -> list[dict]:
    """Parameter groups with per-group ``lr`` (layer decay) and ``weight_decay`` (none on 1-D / bias / pos_embed).

    ``ndims``: each parameter's true number of dimensions by name, for a model whose parameters are now
    flat shards (FSDP hands the optimizer 1-D views).
    """
    depth = int(getattr(getattr(model, "backbone", None), "depth", 0) or 0)
    use_decay = cfg.layer_decay != 1.0 and depth > 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")  # FSDP wraps
        no_wd = (ndims or {}).get(name, p.ndim) == 1 or name.endswith(".bias") or "pos_embed" in name
        g = layer_group(name, depth) if use_decay else 0
        scale = cfg.layer_decay ** (depth + 1 - g) if use_decay else 1.0
        key = (g, no_wd)
        if key not in groups:
            groups[key] = {"params": [], "lr": cfg.lr * scale, "lr_scale": scale,
                           "weight_decay": 0.0 if no_wd else cfg.weight_decay, "names": []}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    ndims: dict[str, int] | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, ndims)
    for g in groups:
        g.pop("names")
    # fused: one kernel for the whole update instead of a few per parameter group (torch >= 2.4 on GPU and CPU)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                             fused=True if cfg.fused else None)


def lr_factor(step: int, cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier on each group's base lr at optimizer step ``step`` (0-based).

    Linear warmup from ``warmup_ratio`` over ``warmup_iters`` steps (MMPose's LinearLR, by
    iteration), times either a step decay by epoch milestones or a cosine to ``min_lr_ratio`` -- from the step
    ``cosine_start_fraction`` of the way through the run, flat before it (MMPose's CosineAnnealingLR with ``begin``,
    by iteration).
    """
    warm = 1.0
    if cfg.warmup_iters > 0 and step < cfg.warmup_iters:
        warm = cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / cfg.warmup_iters
    if cfg.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        main = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    elif cfg.schedule == "cosine":
        start = cfg.cosine_start_fraction * total_steps
        t = min(max(step - start, 0.0) / max(total_steps - start, 1), 1.0)
        main = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise ValueError(f"optim.schedule: unknown schedule {cfg.schedule!r}; use 'step' or 'cosine'")
    return warm * main


def build_scheduler(optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg, steps_per_epoch, total_steps))
