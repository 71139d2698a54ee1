"""HRFormer backbone (Yuan et al. 2021) and its named sizes.

HRNet's multi-resolution layout (:class:`sagepose.models.hrnet.HRNet`: the same stem,
transitions and fuse-and-sum modules) with transformer blocks on every branch: multi-head
self-attention inside non-overlapping 7x7 windows with a learned relative position bias,
then a feed-forward network whose hidden layer passes through a depthwise 3x3 conv (the
only exchange between windows inside a branch). HRFormer's fuse layers differ from HRNet's
in two details: coarser branches come up bilinearly, and each stride-2 step from a finer
branch is a depthwise 3x3 conv + BN followed by a pointwise 1x1 conv + BN.

Module and parameter names are MMPose's (``backbone.stage3.0.branches.1.0.attn.attn.qkv``);
the ``relative_position_index`` buffer that MMPose checkpoints carry is a constant of the
window size, rebuilt here and not saved. Plain PyTorch: the CPU fast path (:mod:`sagepose.models.inference`)
and MMPose's explicit-softmax attention (:mod:`sagepose.models.mmpose_exact`) swap in subclasses after building.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sagepose.models.hrnet import HRNet
from sagepose.models.vit import drop_path

# One row per named size (MMPose's td-hm_hrformer-{small,base} configs); both have 7x7 windows,
# FFN ratio 4, two blocks per branch and (1, 4, 2) modules in stages 2-4.
HRFORMER_SIZES: dict[str, dict] = {
    "hrformer-s": dict(widths=(32, 64, 128, 256), num_heads=(1, 2, 4, 8)),
    "hrformer-b": dict(widths=(78, 156, 312, 624), num_heads=(2, 4, 8, 16)),
}


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) long: entry [p, q] indexes the (2w - 1)^2 bias table by the offset (dy, dx) of p from q."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, w*w)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, w*w, w*w), each in [0, 2w - 2]
    return rel[0] * (2 * window - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of each window, plus a relative position bias per head."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, w*w, w*w): the learned bias of each query-key offset, added to the attention logits."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B * windows, w*w, C) -> (B * windows, w*w, C)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias().unsqueeze(0).to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LocalWindowAttention(nn.Module):
    """Splits a (B, H*W, C) token map into w x w windows (zero-padding H, W up to multiples of w, split
    evenly with the odd row / column at the bottom / right), attends within each, and stitches back."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        w = self.window
        ph, pw = -H % w, -W % w
        # Padded tokens are zeros before the qkv projection (they attend and are attended to), as MMPose.
        x = F.pad(x.view(B, H, W, C), (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        nh, nw = (H + ph) // w, (W + pw) // w
        x = x.view(B, nh, w, nw, w, C).transpose(2, 3).reshape(B * nh * nw, w * w, C)
        x = self.attn(x)
        x = x.view(B, nh, nw, w, w, C).transpose(2, 3).reshape(B, H + ph, W + pw, C)
        return x[:, ph // 2: ph // 2 + H, pw // 2: pw // 2 + W].reshape(B, N, C)


class ConvFFN(nn.Module):
    """1x1 conv -> depthwise 3x3 conv -> 1x1 conv, each followed by BN and GELU (MMPose's ``CrossFFN``)."""

    CONV_BN_PAIRS = (("fc1", "norm1"), ("dw3x3", "norm2"), ("fc2", "norm3"))  # folded for inference (models.inference)

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.norm1 = nn.BatchNorm2d(hidden_dim)
        self.dw3x3 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.norm2 = nn.BatchNorm2d(hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.norm3 = nn.BatchNorm2d(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, H*W, C) -> (B, H*W, C)."""
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.norm2(self.dw3x3(x)))
        x = self.act(self.norm3(self.fc2(x)))
        return x.flatten(2).transpose(1, 2)


class HRFormerBlock(nn.Module):
    """Pre-LN block on a (B, C, H, W) map: x + attn(norm(x)), then x + ffn(norm(x)), each drop-pathed."""

    def __init__(self, dim: int, num_heads: int, window: int = 7, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LocalWindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + drop_path(self.attn(self.norm1(x), H, W), self.drop_path, self.training)
        x = x + drop_path(self.ffn(self.norm2(x), H, W), self.drop_path, self.training)
        return x.transpose(1, 2).reshape(B, C, H, W)


class HRFormer(HRNet):
    """HRFormer: (B, 3, H, W) -> (B, widths[0], H / 4, W / 4); HRNet with :class:`HRFormerBlock` branches.

    ``num_heads`` per branch; stochastic depth grows linearly over the blocks of stages 2-4
    (block k of each branch in a module shares one rate).
    """

    upsample = dict(mode="bilinear", align_corners=False)

    def __init__(self, widths: Sequence[int] = (78, 156, 312, 624), num_heads: Sequence[int] = (2, 4, 8, 16),
                 num_modules: Sequence[int] = (1, 4, 2), num_blocks: int = 2, stem_blocks: int = 2,
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, in_channels: int = 3,
                 grad_checkpointing: bool = False):
        # Read by make_branch while HRNet.__init__ builds the stages.
        self.num_heads, self.window_size, self.mlp_ratio = tuple(num_heads), window_size, mlp_ratio
        n = num_blocks * sum(num_modules)
        self.drop_path_rates = [drop_path_rate * k / max(n - 1, 1) for k in range(n)]
        super().__init__(widths, num_modules, num_blocks, stem_blocks, in_channels, grad_checkpointing)

    def make_branch(self, channels: int, branch: int, block_ids: list[int]) -> nn.Module:
        return nn.Sequential(*(HRFormerBlock(channels, self.num_heads[branch], self.window_size, self.mlp_ratio,
                                             self.drop_path_rates[k]) for k in block_ids))

    def downsample_step(self, c_in: int, c_out: int, relu: bool) -> nn.Module:
        layers = [nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                  nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def hrformer(size: str, **overrides) -> HRFormer:
    """A named HRFormer size from :data:`HRFORMER_SIZES`, any constructor argument overridable."""
    if size not in HRFORMER_SIZES:
        raise KeyError(f"unknown HRFormer size {size!r}; known: {sorted(HRFORMER_SIZES)}")
    return HRFormer(**{**HRFORMER_SIZES[size], **overrides})
