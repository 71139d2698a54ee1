"""CSPNeXt backbone (Lyu et al. 2022, RTMDet; RTMPose's backbone) and its named sizes.

A stride-2 stem of three 3x3 convs, then four stages, each a stride-2 3x3 conv followed by a cross-stage-partial
layer (:class:`CSPLayer`): half the channels go through a stack of :class:`CSPNeXtBlock` (a 3x3 conv, then a
depthwise 5x5 and a pointwise conv), the other half skip it, the two are concatenated, reweighted per channel
(:class:`ChannelAttention`) and mixed by a 1x1 conv. The last stage pools at three scales first (:class:`SPP`) and
has no residual in its blocks. Every conv is conv (no bias) + BatchNorm + SiLU (:class:`ConvBNAct`). RTMPose keeps
only the stride-32 map (mmdet's ``out_indices=(4,)``).

A size is a row of two factors on mmdet's P5 widths / depths (RTMPose's configs): channels x ``widen``, blocks
per stage ``max(round(n x deepen), 1)``. RTMPose builds it with ``SyncBN`` at torch's defaults (eps 1e-5, momentum
0.1), not mmdet's BN default (eps 1e-3, momentum 0.03, RTMDet's): the defaults here are RTMPose's.

Module and parameter names are mmdet's (``backbone.stage2.1.blocks.0.conv2.depthwise_conv.bn``), so an MMPose
RTMPose checkpoint's backbone loads with no renaming.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# mmdet's CSPNeXt arch 'P5': per stage (in, out, blocks, residual in the blocks, SPP first)
P5_STAGES = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
             (512, 1024, 3, False, True))
# One row per named size: RTMPose's configs/body_2d_keypoint/rtmpose/coco/rtmpose-{t,s,m,l}_*
CSPNEXT_SIZES: dict[str, dict] = {
    "cspnext-t": dict(deepen=0.167, widen=0.375),
    "cspnext-s": dict(deepen=0.33, widen=0.5),
    "cspnext-m": dict(deepen=0.67, widen=0.75),
    "cspnext-l": dict(deepen=1.0, widen=1.0),
}


class ConvBNAct(nn.Module):
    """Conv (no bias, same padding) + BatchNorm + SiLU: mmcv's ``ConvModule`` as CSPNeXt configures it."""

    CONV_BN_PAIRS = (("conv", "bn"),)  # folded for inference (models.inference)

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=eps, momentum=momentum)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """A depthwise k x k conv then a pointwise 1x1 conv, each with BatchNorm + SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, **bn):
        super().__init__()
        self.depthwise_conv = ConvBNAct(c_in, c_in, kernel_size, groups=c_in, **bn)
        self.pointwise_conv = ConvBNAct(c_in, c_out, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 conv, then the large-kernel (5x5) depthwise separable conv; plus the input where ``residual``."""

    def __init__(self, channels: int, residual: bool, kernel_size: int = 5, **bn):
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, **bn)
        self.conv2 = DepthwiseSeparable(channels, channels, kernel_size, **bn)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.residual else out


class ChannelAttention(nn.Module):
    """Each channel scaled by hardsigmoid(1x1 conv(its global average)) -- a squeeze-excite without the squeeze."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class CSPLayer(nn.Module):
    """Cross-stage partial layer: ``final_conv(attention([blocks(main_conv(x)), short_conv(x)]))``."""

    def __init__(self, c_in: int, c_out: int, num_blocks: int, residual: bool, expand_ratio: float = 0.5,
                 channel_attention: bool = True, **bn):
        super().__init__()
        mid = int(c_out * expand_ratio)
        self.main_conv = ConvBNAct(c_in, mid, 1, **bn)
        self.short_conv = ConvBNAct(c_in, mid, 1, **bn)
        self.final_conv = ConvBNAct(2 * mid, c_out, 1, **bn)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, residual, **bn) for _ in range(num_blocks)))
        self.attention = ChannelAttention(2 * mid) if channel_attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        return self.final_conv(self.attention(both))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP; mmdet's ``SPPBottleneck``): halve the channels, concatenate the map with
    its stride-1 max-pools of each kernel size (in parallel, not chained as SPPF), mix back with a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel_sizes=(5, 9, 13), **bn):
        super().__init__()
        mid = c_in // 2
        self.conv1 = ConvBNAct(c_in, mid, 1, **bn)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), c_out, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.poolings)], dim=1))


class CSPNeXt(nn.Module):
    """CSPNeXt (mmdet 3.3, arch P5) returning its stride-32 map: (B, 3, H, W) -> (B, out_channels, H/32, W/32).

    ``deepen`` / ``widen``: the size's depth and width factors (:data:`CSPNEXT_SIZES`); ``eps`` / ``momentum``: the
    BatchNorms'. Any input size that is a multiple of 32 works as it is.
    """

    prefers_channels_last = True  # oneDNN's faster layout for convolutions (models.inference)

    def __init__(self, deepen: float = 1.0, widen: float = 1.0, expand_ratio: float = 0.5,
                 channel_attention: bool = True, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        bn = dict(eps=eps, momentum=momentum)
        stem = int(P5_STAGES[0][0] * widen)
        self.stem = nn.Sequential(ConvBNAct(3, stem // 2, 3, 2, **bn), ConvBNAct(stem // 2, stem // 2, 3, **bn),
                                  ConvBNAct(stem // 2, stem, 3, **bn))
        for i, (c_in, c_out, blocks, residual, spp) in enumerate(P5_STAGES):
            c_in, c_out = int(c_in * widen), int(c_out * widen)
            layers = [ConvBNAct(c_in, c_out, 3, 2, **bn), *([SPP(c_out, c_out, **bn)] if spp else []),
                      CSPLayer(c_out, c_out, max(round(blocks * deepen), 1), residual, expand_ratio,
                               channel_attention, **bn)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            x = stage(x)
        return x

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        """Convolutions only: any multiple of 32 runs as it is (the RTMCC head, sized for one input, does not)."""
        h, w = img_size
        if h % 32 or w % 32:
            raise ValueError(f"CSPNeXt: input size (h, w) = {img_size} must be multiples of 32")


def cspnext(size: str, **overrides) -> CSPNeXt:
    """A named size (:data:`CSPNEXT_SIZES`), ``overrides`` replacing its numbers."""
    if size not in CSPNEXT_SIZES:
        raise KeyError(f"unknown CSPNeXt size {size!r}; known: {sorted(CSPNEXT_SIZES)}")
    return CSPNeXt(**{**CSPNEXT_SIZES[size], **overrides})
