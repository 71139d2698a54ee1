"""The convolutional patch embedding of the hybrid ViT (the CPU demo model ``vit-tiny``).

Xiao et al. 2021 ("Early convolutions help transformers see better"): a stack of stride-2 3x3 convs instead
of one 16x16 patch projection makes small ViTs trained from scratch converge much faster at negligible cost.
The residual blocks between them and the features handed to the head at ``skip_strides`` (a U-Net-style
hybrid, read by :class:`~sagepose.models.heads.SkipHeatmapHead`) are ours: they give the CPU demo model local
detail at stride 4 that 16-pixel tokens lack.
"""
from __future__ import annotations

import torch
from torch import nn

from sagepose.models.hrnet import BasicBlock


class ConvStem(nn.Module):
    """(B, 3, H, W) -> (B, embed_dim, H / patch_size, W / patch_size), or ``[features at skip_strides..., that
    map]``: per entry of ``channels`` a stride-2 3x3 conv + BN + ReLU and ``blocks[i]`` residual blocks
    (ResNet basic blocks), then a 1x1 projection to the embedding."""

    def __init__(self, channels: tuple[int, ...], embed_dim: int, patch_size: int, blocks: tuple[int, ...] = (),
                 skip_strides: tuple[int, ...] = ()):
        super().__init__()
        if 2 ** len(channels) != patch_size:
            raise ValueError(f"conv stem: {len(channels)} stride-2 convs give stride {2 ** len(channels)}, "
                             f"patch_size is {patch_size}")
        blocks = tuple(blocks) or (0,) * len(channels)
        if len(blocks) != len(channels):
            raise ValueError(f"conv stem: stem_blocks {blocks} needs one count per stage of {channels}")
        strides = [2 ** (i + 1) for i in range(len(channels) - 1)]  # of the stages before the last
        bad = [s for s in skip_strides if s not in strides]
        if bad:
            raise ValueError(f"conv stem: skip_strides {bad} are not strides of its stages before the last ({strides})")
        self.skip_stages = [strides.index(s) for s in skip_strides]
        self.skip_channels = [channels[i] for i in self.skip_stages]
        stages, c_in = [], 3
        for c, n in zip(channels, blocks):
            stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                                        nn.ReLU(inplace=True), *(BasicBlock(c, c) for _ in range(n))))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.proj = nn.Conv2d(c_in, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.skip_stages:
                skips.append(x)
        x = self.proj(x)
        return [*skips, x] if self.skip_stages else x
