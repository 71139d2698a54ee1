"""HRNet backbone (Sun et al. 2019) and its named widths.

A stride-4 stem (two 3x3 stride-2 convs, then Bottlenecks), then three stages of
:class:`HRModule`: every module runs a few residual blocks on each resolution branch
(stride 4, 8, 16, 32) and then fuses the branches into each other -- a 1x1 conv + BN and
an upsample from coarser branches, a chain of stride-2 3x3 convs from finer ones, summed
and ReLU'd. Each stage adds one branch through a *transition*. The top-down pose model uses
only the stride-4 branch of the last module, so that module fuses into branch 0 alone.

Module and parameter names are MMPose's (``backbone.stage3.2.fuse_layers.1.0.0.0``), so an
MMPose checkpoint loads with no renaming; entries MMPose leaves empty (``None``) are
:class:`nn.Identity` here, which hold no parameters and keep the indices.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# One row per named size: the branch widths of stages 2-4 (MMPose's td-hm_hrnet-w{32,48} configs).
HRNET_SIZES: dict[str, dict] = {
    "hrnet-w32": dict(widths=(32, 64, 128, 256)),
    "hrnet-w48": dict(widths=(48, 96, 192, 384)),
}


def conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
            relu: bool = False) -> nn.Sequential:
    """Conv (no bias, same padding) + BatchNorm (+ ReLU): indices 0, 1 (, 2) as MMPose's Sequentials."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, identity (or 1x1 projection) shortcut, ReLU after the sum."""

    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))  # folded for inference (models.inference)

    expansion = 1

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 -> 1x1 (width c_out / 4), identity (or 1x1 projection) shortcut."""

    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))  # folded for inference (models.inference)

    expansion = 4

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // self.expansion
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class HRModule(nn.Module):
    """Parallel branches, then exchange: output i = ReLU(sum_j fuse_layers[i][j](branch_j(x_j))).

    ``fuse_layers[i][i]`` is the identity; ``[i][j]`` upsamples (j > i) or downsamples (j < i).
    """

    def __init__(self, branches: Sequence[nn.Module], fuse_layers: Sequence[Sequence[nn.Module]]):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.fuse_layers = nn.ModuleList(nn.ModuleList(row) for row in fuse_layers)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        return [self.relu(sum(f(x) for f, x in zip(row, xs))) for row in self.fuse_layers]


class HRNet(nn.Module):
    """HRNet: (B, 3, H, W) -> (B, widths[0], H / 4, W / 4), the highest-resolution branch.

    ``widths`` are the four branch widths, ``num_modules`` the HRModules of stages 2, 3, 4,
    ``num_blocks`` the residual blocks per branch in each module, ``stem_blocks`` the
    Bottlenecks (64 -> 256 channels) of stage 1. H and W must be multiples of 32.
    """

    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))  # folded for inference (models.inference)
    prefers_channels_last = True  # oneDNN's convolutions run faster on channels-last tensors

    upsample = dict(mode="nearest")  # how coarser branches are brought up in the fuse layers

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), num_modules: Sequence[int] = (1, 4, 3),
                 num_blocks: int = 4, stem_blocks: int = 4, in_channels: int = 3, grad_checkpointing: bool = False):
        super().__init__()
        if len(widths) != 4 or len(num_modules) != 3:
            raise ValueError(f"HRNet: expected 4 widths and 3 module counts, got {widths}, {num_modules}")
        self.widths, self.grad_checkpointing = tuple(widths), grad_checkpointing
        self.out_channels = widths[0]
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        stem_out = 64 * Bottleneck.expansion
        self.layer1 = nn.Sequential(*(Bottleneck(64 if i == 0 else stem_out, stem_out) for i in range(stem_blocks)))
        previous, block_index = [stem_out], 0
        for stage, modules in enumerate(num_modules, start=2):
            current = list(widths[:stage])
            setattr(self, f"transition{stage - 1}", self.make_transition(previous, current))
            hr_modules = []
            for m in range(modules):
                last = stage == 4 and m == modules - 1  # the model reads branch 0 only: fuse into it alone
                branches = [self.make_branch(c, i, [block_index + m * num_blocks + b for b in range(num_blocks)])
                            for i, c in enumerate(current)]
                hr_modules.append(HRModule(branches, self.make_fuse_layers(current, 1 if last else stage)))
            setattr(self, f"stage{stage}", nn.Sequential(*hr_modules))
            previous, block_index = current, block_index + modules * num_blocks

    def make_branch(self, channels: int, branch: int, block_ids: list[int]) -> nn.Module:
        """The blocks of one branch in one module (``block_ids`` number them across stages 2-4)."""
        return nn.Sequential(*(BasicBlock(channels, channels) for _ in block_ids))

    def downsample_step(self, c_in: int, c_out: int, relu: bool) -> nn.Module:
        """One stride-2 step of a fuse path from a finer branch to a coarser one."""
        return conv_bn(c_in, c_out, 3, stride=2, relu=relu)

    def make_fuse_layers(self, channels: list[int], num_outputs: int) -> list[list[nn.Module]]:
        rows = []
        for i in range(num_outputs):
            row = []
            for j, c in enumerate(channels):
                if j > i:  # coarser: 1x1 conv to this width, then upsample
                    row.append(nn.Sequential(*conv_bn(c, channels[i], 1),
                                             nn.Upsample(scale_factor=2 ** (j - i), **self.upsample)))
                elif j == i:
                    row.append(nn.Identity())
                else:  # finer: i - j stride-2 steps; the last one changes width and has no ReLU
                    steps = [self.downsample_step(c, c, relu=True) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, self.downsample_step(c, channels[i], relu=False)))
            rows.append(row)
        return rows

    @staticmethod
    def make_transition(previous: list[int], current: list[int]) -> nn.ModuleList:
        """Into the next stage: kept branches change width by a 3x3 conv if needed; the new branch is a
        chain of stride-2 3x3 convs from the coarsest previous branch."""
        layers = []
        for i, c in enumerate(current):
            if i < len(previous):
                layers.append(conv_bn(previous[i], c, 3, relu=True) if previous[i] != c else nn.Identity())
            else:
                steps = [conv_bn(previous[-1], previous[-1], 3, stride=2, relu=True)
                         for _ in range(i - len(previous))]
                layers.append(nn.Sequential(*steps, conv_bn(previous[-1], c, 3, stride=2, relu=True)))
        return nn.ModuleList(layers)

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        """Take (h, w) inputs from now on: any multiple of 32 fits the same weights."""
        if any(s % 32 for s in img_size):
            raise ValueError(f"{type(self).__name__}: input size {tuple(img_size)} must be multiples of 32")

    def _run_stage(self, stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            if self.grad_checkpointing and torch.is_grad_enabled():
                xs = checkpoint(module, xs, use_reentrant=False)
            else:
                xs = module(xs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, widths[0], H / 4, W / 4)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for t, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                         (self.transition3, self.stage4)):
            xs = [layer(xs[min(i, len(xs) - 1)]) for i, layer in enumerate(t)]  # a new branch reads the coarsest
            xs = self._run_stage(stage, xs)
        return xs[0]


def hrnet(size: str, **overrides) -> HRNet:
    """A named HRNet width from :data:`HRNET_SIZES`, any constructor argument overridable."""
    if size not in HRNET_SIZES:
        raise KeyError(f"unknown HRNet size {size!r}; known: {sorted(HRNET_SIZES)}")
    return HRNet(**{**HRNET_SIZES[size], **overrides})
