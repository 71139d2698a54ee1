"""Heatmap heads: NCHW features -> one heatmap per keypoint.

:class:`HeatmapHead` is MMPose's ``HeatmapHead`` (deconv stages, optional conv stages,
final conv), with the norm / activation of each stage chosen by name:

* ``"bn"`` + ``"relu"`` -- ViTPose, HRNet-style SimpleBaseline decoders (MMPose upstream);
* ``"in"`` + ``"silu"`` -- Sapiens (non-affine InstanceNorm2d, SiLU).

ViTPose's *simple* decoder is ``feature_upsample=4`` with no deconvs and a 3x3 final conv:
ReLU, bilinear x4 upsampling, conv (MMPose splits this into a FeatureMapProcessor neck
and a HeatmapHead; it has no parameters of its own, so it lives here).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The heads' normalisation: ``"bn"`` (BatchNorm) or ``"in"`` (InstanceNorm, no affine)."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"unknown norm {kind!r}; expected 'bn' or 'in'")


def activation(kind: str) -> nn.Module:
    """The heads' activation: ``"relu"`` or ``"silu"``."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {kind!r}; expected 'relu' or 'silu'")


class ConvNormAct(nn.Module):
    """One head stage: a conv (or transposed conv), a norm, an activation."""

    CONV_BN_PAIRS = (("conv", "norm"),)  # folded for inference (models.inference)

    def __init__(self, conv: nn.Module, norm: nn.Module, act: nn.Module):
        super().__init__()
        self.conv, self.norm, self.act = conv, norm, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class HeatmapHead(nn.Module):
    """(B, in_channels, h, w) -> (B, num_keypoints, h * s, w * s), s = 2**len(deconv) * feature_upsample.

    Each deconv stage is ConvTranspose2d(k4, s2, p1, no bias) + norm + act and doubles
    the resolution; each conv stage is Conv2d(k, same padding) + norm + act.
    """

    def __init__(self, in_channels: int, num_keypoints: int, deconv_channels: Sequence[int] = (256, 256),
                 conv_channels: Sequence[int] = (), conv_kernel_size: int = 1, final_kernel_size: int = 1,
                 norm: str = "bn", act: str = "relu", feature_upsample: int = 1):
        super().__init__()
        self.feature_upsample = feature_upsample
        stages, c = [], in_channels
        for out in deconv_channels:
            deconv = nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, output_padding=0, bias=False)
            stages.append(ConvNormAct(deconv, norm_layer(norm, out), activation(act)))
            c = out
        self.deconv_blocks = nn.ModuleList(stages)
        stages = []
        for out in conv_channels:
            conv = nn.Conv2d(c, out, conv_kernel_size, padding=(conv_kernel_size - 1) // 2)
            stages.append(ConvNormAct(conv, norm_layer(norm, out), activation(act)))
            c = out
        self.conv_blocks = nn.ModuleList(stages)
        self.final_conv = nn.Conv2d(c, num_keypoints, final_kernel_size, padding=(final_kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_upsample > 1:  # ViTPose's simple decoder
            x = F.interpolate(F.relu(x), scale_factor=float(self.feature_upsample), mode="bilinear",
                              align_corners=False)
        for stage in (*self.deconv_blocks, *self.conv_blocks):
            x = stage(x)
        return self.final_conv(x)


class SkipHeatmapHead(nn.Module):
    """A U-Net-style decoder for a backbone that returns ``[skip features..., coarsest map]`` (strides
    ascending by factors of 2, e.g. a hybrid ViT's stride-4 and stride-8 stem features and its tokens).

    Each stride-2 step upsamples with a deconv stage (ConvTranspose2d k4 s2 + BN + ReLU, as
    :class:`HeatmapHead`) and adds the matching skip through a 1x1 conv + BN, then ReLU; ``refine``
    3x3 conv stages follow at the finest stride, then a 1x1 conv to one heatmap per keypoint.
    Output stride is the finest skip's.
    """

    def __init__(self, in_channels: Sequence[int], num_keypoints: int, channels: int = 64, refine: int = 1):
        super().__init__()
        *skips, top = in_channels
        self.ups = nn.ModuleList()
        self.laterals = nn.ModuleList()
        c = top
        for skip in reversed(skips):
            self.ups.append(ConvNormAct(nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
            self.laterals.append(nn.Sequential(nn.Conv2d(skip, channels, 1, bias=False), nn.BatchNorm2d(channels)))
            c = channels
        self.refine = nn.ModuleList(
            ConvNormAct(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(refine))
        self.final_conv = nn.Conv2d(c, num_keypoints, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        *skips, x = feats
        for up, lateral, skip in zip(self.ups, self.laterals, reversed(skips)):
            x = F.relu(up(x) + lateral(skip))
        for stage in self.refine:
            x = stage(x)
        return self.final_conv(x)


class PerDatasetHeads(nn.Module):
    """ViTPose+'s layout for several datasets: one head per dataset on the shared backbone's features, each
    predicting its dataset's joints into their channels of the union's ``num_keypoints`` outputs.

    Which head predicts is the forward's ``dataset``: a (B,) tensor of dataset indices -- each sample its dataset's
    head (training; the other channels are 0); an int -- that dataset's head for the whole batch (validating or
    predicting that dataset); None -- every head, each union channel from the first dataset that has it (inference
    in the union schema).
    """

    def __init__(self, heads, indices, num_keypoints: int):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.indices = tuple(tuple(int(i) for i in idx) for idx in indices)
        self.num_keypoints = num_keypoints

    def _into(self, out: torch.Tensor | None, m: int, maps: torch.Tensor, rows=None, batch: int | None = None
              ) -> torch.Tensor:
        """Dataset ``m``'s maps into its channels of ``out`` (a new zero tensor of ``batch`` samples when None),
        at the samples ``rows`` (all when None)."""
        if out is None:
            out = maps.new_zeros((maps.shape[0] if rows is None else batch, self.num_keypoints, *maps.shape[2:]))
        idx = torch.as_tensor(self.indices[m], device=maps.device)
        if rows is None:
            out[:, idx] = maps
        else:
            out[rows[:, None], idx[None, :]] = maps
        return out

    def forward(self, feats, dataset: torch.Tensor | int | None = None) -> torch.Tensor:
        if isinstance(dataset, torch.Tensor):
            out = None
            for m in torch.unique(dataset).tolist():
                rows = torch.nonzero(dataset == m).flatten()
                sub = [f[rows] for f in feats] if isinstance(feats, (list, tuple)) else feats[rows]
                out = self._into(out, m, self.heads[m](sub), rows, batch=len(dataset))
            return out
        if dataset is not None:
            return self._into(None, dataset, self.heads[dataset](feats))
        out = None
        for m in reversed(range(len(self.heads))):  # the first dataset's head writes last: its channels win
            out = self._into(out, m, self.heads[m](feats))
        return out


def per_dataset_heads(head: nn.Module, union) -> PerDatasetHeads:
    """One copy of ``head`` (built for the union's outputs) per member of ``union``
    (:class:`sagepose.keypoint_maps.UnionSchema`), its last convolution cut to the member's joints (the union
    head's rows for them: every copy starts as the shared head would -- for the RTMCC head, whose joints attend to
    each other, from its weights, its joints then attending to their own dataset's only)."""
    import copy

    if union is None:
        raise ValueError("per-dataset heads need a merged or concatenated union of the datasets' schemas")
    if not isinstance(getattr(head, "final_conv", None), nn.Conv2d):
        raise ValueError(f"per-dataset heads: {type(head).__name__} has no final_conv to cut per dataset")
    heads = []
    for idx in union.indices:
        h = copy.deepcopy(head)
        old = head.final_conv
        new = nn.Conv2d(old.in_channels, len(idx), old.kernel_size, padding=old.padding, bias=old.bias is not None)
        with torch.no_grad():
            new.weight.copy_(old.weight[list(idx)])
            if old.bias is not None:
                new.bias.copy_(old.bias[list(idx)])
        h.final_conv = new
        heads.append(h)
    return PerDatasetHeads(heads, union.indices, union.schema.num_keypoints)
