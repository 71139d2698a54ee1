"""Plain ViT backbone of the ViTPose / Sapiens family, and its named sizes.

Pre-LN transformer blocks over non-overlapping patches, learned position embeddings
without a cls token, a final LayerNorm, and the patch tokens returned as an NCHW
feature map for a heatmap head. Numerically this is mmpretrain's ``VisionTransformer``
as MMPose configures it for ViTPose (``with_cls_token=False``, ``out_type='featmap'``,
patch padding 2); :mod:`sagepose.models.checkpoint` maps MMPose's key names onto ours.
Plain PyTorch: the CPU fast path (:mod:`sagepose.models.inference`) and MMPose's arithmetic
(:mod:`sagepose.models.mmpose_exact`) swap in subclasses of these modules after building. The hybrid demo
model's conv stem is :mod:`sagepose.models.conv_stem`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sagepose.models.conv_stem import ConvStem

# One row of numbers per named size. ViTPose-S uses 12 heads (not DeiT-S's 6), as the
# official repo and MMPose's configs do. Sapiens: img 1024x768, no drop path.
VIT_SIZES: dict[str, dict] = {
    "vitpose-s": dict(img_size=(256, 192), patch_size=16, patch_padding=2,
                      embed_dim=384, depth=12, num_heads=12, mlp_dim=1536),
    "vitpose-b": dict(img_size=(256, 192), patch_size=16, patch_padding=2,
                      embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vitpose-l": dict(img_size=(256, 192), patch_size=16, patch_padding=2,
                      embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vitpose-h": dict(img_size=(256, 192), patch_size=16, patch_padding=2,
                      embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
    "sapiens-0.3b": dict(img_size=(1024, 768), patch_size=16, patch_padding=2,
                         embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "sapiens-0.6b": dict(img_size=(1024, 768), patch_size=16, patch_padding=2,
                         embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
    "sapiens-1b": dict(img_size=(1024, 768), patch_size=16, patch_padding=2,
                       embed_dim=1536, depth=40, num_heads=24, mlp_dim=6144),
    "sapiens-2b": dict(img_size=(1024, 768), patch_size=16, patch_padding=2,
                       embed_dim=1920, depth=48, num_heads=32, mlp_dim=7680),
    # CPU demo size: 128x96 input, a 4-stage conv stem (a residual block at strides 4 and 8) to
    # stride 16 -> 8x6 tokens; the stride-4 and stride-8 stem features also go to the head (skips).
    "vit-tiny": dict(img_size=(128, 96), patch_size=16, stem_channels=(24, 48, 96, 128), stem_blocks=(0, 1, 1, 0),
                     skip_strides=(4, 8), embed_dim=128, depth=4, num_heads=4, mlp_dim=512),
}


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability p, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C / heads)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(GELU(fc1(x))), the exact erf GELU."""
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm(x)), then x + mlp(norm(x)), each branch drop-pathed."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True,
                 drop_path: float = 0.0, ln_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = MLP(dim, mlp_dim)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class VisionTransformer(nn.Module):
    """ViT backbone: (B, 3, H, W) image -> (B, embed_dim, Hp, Wp) feature map.

    ``img_size`` is (h, w); the token grid is ``(img + 2 * padding - patch) // patch + 1``
    per side (16x12 for ViTPose at 256x192). ``pos_embed`` is (1, Hp * Wp, C), no cls slot.

    Hybrid form (ours, for small models trained from scratch): ``stem_channels`` replaces the
    patch projection by a conv stem (:class:`ConvStem`, ``stem_blocks`` residual blocks per stage); with
    ``skip_strides`` the forward returns ``[stem features at those strides..., token map]``
    (``out_channels`` lists their channels) for a head that merges them (:class:`SkipHeatmapHead`).
    """

    prefers_channels_last = False  # its time is in matmuls: its few convs gain nothing from channels-last
    block_type = Block  # FSDP's unit (sagepose.models.zoo.block_type)

    def __init__(self, img_size: tuple[int, int] = (256, 192), patch_size: int = 16, patch_padding: int = 2,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, ln_eps: float = 1e-6,
                 grad_checkpointing: bool = False, stem_channels: tuple[int, ...] = (),
                 stem_blocks: tuple[int, ...] = (), skip_strides: tuple[int, ...] = ()):
        super().__init__()
        self.patch_size, self.patch_padding = patch_size, patch_padding
        self.embed_dim, self.depth = embed_dim, depth
        self.grad_checkpointing = grad_checkpointing
        self.stem_channels = tuple(stem_channels)
        self.skip_strides = tuple(skip_strides) if self.stem_channels else ()
        if self.stem_channels:
            self.patch_embed = ConvStem(self.stem_channels, embed_dim, patch_size, stem_blocks, self.skip_strides)
        else:
            self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size, padding=patch_padding)
        self.out_channels = [*self.patch_embed.skip_channels, embed_dim] if self.skip_strides else embed_dim
        self.img_size = tuple(img_size)
        self.grid_size = self._grid(self.img_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # Stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_dim, qkv_bias, r, ln_eps) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)

    def _grid(self, img_size: tuple[int, int]) -> tuple[int, int]:
        if self.stem_channels:  # k3 s2 p1 convs: each halves the side, rounding up
            return tuple(-(-s // self.patch_size) for s in img_size)
        p, pad = self.patch_size, self.patch_padding
        return tuple((s + 2 * pad - p) // p + 1 for s in img_size)

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        """Take (h, w) inputs from now on: the position embeddings are resized bicubically to their grid."""
        grid = self._grid(tuple(img_size))
        with torch.no_grad():
            pos = interpolate_pos_embed(self.pos_embed.data, self.grid_size, grid)
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.img_size, self.grid_size = tuple(img_size), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, 3, H, W) -> (B, C, Hp, Wp), or ``[skips..., (B, C, Hp, Wp)]`` with ``skip_strides``."""
        if self.skip_strides:
            *skips, x = self.patch_embed(x)
            return [*skips, self._tokens(x)]
        return self._tokens(self.patch_embed(x))

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        B, C, Hp, Wp = x.shape
        x = x.flatten(2).transpose(1, 2) + interpolate_pos_embed(self.pos_embed, self.grid_size, (Hp, Wp))
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x).transpose(1, 2).reshape(B, C, Hp, Wp)


def interpolate_pos_embed(pos: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]):
    """(1, Hs * Ws, C) -> (1, Hd * Wd, C): bicubic over the token grid, align_corners=False, as mmpretrain."""
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    C = pos.shape[-1]
    grid = pos.reshape(1, *src_grid, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(dst_grid), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(pos.dtype)


def vit(size: str, **overrides) -> VisionTransformer:
    """A named ViT size from :data:`VIT_SIZES`, any constructor argument overridable."""
    if size not in VIT_SIZES:
        raise KeyError(f"unknown ViT size {size!r}; known: {sorted(VIT_SIZES)}")
    return VisionTransformer(**{**VIT_SIZES[size], **overrides})
