"""MMPose's arithmetic, operation for operation (``TopDownEstimator.set_exact``).

On the same torch build, CPU and thread count, a model in exact mode gives MMPose 1.x's heatmaps bit for bit.
What that takes of the network, beyond MMPose's weights, is here; :func:`set_exact` swaps it in and out:

* the plain transformer modules (``F.linear``: torch's default CPU matmul, as mmpretrain's ViT), not the fast
  path's oneDNN kernels (:func:`sagepose.models.inference.use_cpu_kernels`);
* HRFormer's window attention as MMPose's explicit ``softmax(q k^T / sqrt(d) + bias) v``
  (:class:`MMPoseWindowAttention`);
* a ViT's feature map handed to the head in mmpretrain's layout (:class:`MMPoseVisionTransformer`);
* the input contiguous NCHW, as MMPose's data preprocessor hands it over (:func:`forward`).

The rest of MMPose's pipeline -- the mirrored crops in a pass of their own, the codec's numpy / OpenCV decode,
the map back to image pixels in float64 -- is the estimator's, in its ``exact`` branches.
"""
from __future__ import annotations

import torch
from torch import nn

from sagepose.models.hrformer import WindowAttention
from sagepose.models.inference import swap_classes, use_cpu_kernels
from sagepose.models.vit import VisionTransformer


class MMPoseWindowAttention(WindowAttention):
    """MMPose's ``WindowMSA``: the attention weights spelled out, the bias added before the softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B * windows, w*w, C) -> (B * windows, w*w, C)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias().contiguous().unsqueeze(0)
        x = ((q * (C // self.num_heads) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class MMPoseVisionTransformer(VisionTransformer):
    """The ViT handing its token map over as mmpretrain does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        feats = super().forward(x)
        if not isinstance(feats, torch.Tensor):  # the hybrid's skips: no mmpretrain counterpart
            return feats
        # mmpretrain returns its (B, Hp, Wp, C) tokens permuted to NCHW without a copy; oneDNN picks the head's
        # convolution kernels by those exact strides (even a batch of 1's leading one)
        return feats.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)


EXACT = {WindowAttention: MMPoseWindowAttention, VisionTransformer: MMPoseVisionTransformer}


def set_exact(model: nn.Module, enabled: bool) -> nn.Module:
    """Swap MMPose's arithmetic into ``model`` (``enabled=False``: back to the fast path). Returns ``model``."""
    if enabled:
        use_cpu_kernels(model, False)
        swap_classes(model, EXACT)
    else:
        swap_classes(model, {exact: plain for plain, exact in EXACT.items()})
        use_cpu_kernels(model, True)
    return model


def forward(model: nn.Module, x: torch.Tensor, dataset=None) -> torch.Tensor:
    """``model``'s forward (a backbone and a head; ``dataset`` routes per-dataset heads) as MMPose runs it: the
    input contiguous NCHW."""
    return model(x.contiguous(), dataset)
