"""Plain ViT backbone of the ViTPose / Sapiens family, and its named sizes.

Pre-LN transformer blocks over non-overlapping patches, learned position embeddings
without a cls token, a final LayerNorm, and the patch tokens returned as an NCHW
feature map for a heatmap head. Numerically this is mmpretrain's ``VisionTransformer``
as MMPose configures it for ViTPose (``with_cls_token=False``, ``out_type='featmap'``,
patch padding 2); :mod:`sagepose.models.checkpoint` maps MMPose's key names onto ours.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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


def _onednn_linear_ok(x: torch.Tensor) -> bool:
    """Whether :func:`linear` may take the oneDNN path: CPU float32 inference outside autocast, tracing, export."""
    return (_ONEDNN and not _MMPOSE_ARITHMETIC.get() and not torch.is_grad_enabled() and type(x) is torch.Tensor
            and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, layer: nn.Linear, gelu: bool = False, residual: torch.Tensor | None = None):
    """``residual + gelu?(layer(x))``. At CPU float32 inference the matmul goes through oneDNN, with the GELU or
    the residual add fused into it: torch's default CPU matmul is MKL's sgemm, which on AMD CPUs runs generic
    kernels (about 1.5-2.5x slower here at ViTPose's 192 tokens). Same numbers to ~1e-6 relative; elsewhere
    (training, autograd, tracing, export, GPU) it is plain ``F.linear``."""
    global _ONEDNN
    if _onednn_linear_ok(x):
        weight = _packed_weight(layer)
        try:
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, layer.bias, "add")
            return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, *(
                ("gelu", [], "none") if gelu else ("none", [], "")))
        except (RuntimeError, AttributeError, NotImplementedError):  # a torch build without these kernels
            _ONEDNN = False
    y = F.gelu(layer(x)) if gelu else layer(x)
    return y if residual is None else residual + y


# nn.Linear -> (its weight, that weight's version, the packed copy), see `pack_linear_weights`. Kept outside the
# modules, so that copying or pickling a model never meets oneDNN's opaque tensors (a copy runs unpacked).
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed_weight(layer: nn.Linear) -> torch.Tensor:
    """The weight in oneDNN's blocked layout if :func:`pack_linear_weights` packed it and it has not changed
    since (same tensor, same version), else the weight as it is (oneDNN then reorders it on every call)."""
    packed = _PACKED.get(layer)
    if packed is not None and packed[0] is layer.weight and packed[1] == layer.weight._version:
        return packed[2]
    return layer.weight


@torch.no_grad()
def pack_linear_weights(model: nn.Module) -> int:
    """Keep a copy of each float32 CPU ``nn.Linear`` weight of ``model`` in oneDNN's blocked layout, for
    :func:`linear`'s inference path: oneDNN otherwise reorders every weight on every call. Same results
    bit for bit; ViTPose-B forward on 2 CPU cores: batch 1 198 -> 187 ms, batch 8 1461 -> 1423 ms. Costs
    one more copy of those weights in memory (ViTPose-B +340 MB, ViTPose-H +2.5 GB: for the largest models
    on small machines use ``fuse_for_inference(pack_weights=False)``). A weight changed or replaced
    afterwards is used as it is. Returns the number of weights packed."""
    can_pack = _ONEDNN and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    n = 0
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        _PACKED.pop(layer, None)  # a former packing (say, before a change of dtype) goes
        if can_pack and layer.weight.device.type == "cpu" and layer.weight.dtype == torch.float32:
            w = layer.weight
            _PACKED[layer] = (w, w._version, torch.ops.mkldnn._reorder_linear_weight(w.detach()))
            n += 1
    return n


def packing_fits_in_memory(model: nn.Module, fraction: float = 0.125) -> bool:
    """Whether a packed copy of ``model``'s linear weights (:func:`pack_linear_weights`) stays within
    ``fraction`` of this machine's physical memory: ViTPose-B's 0.34 GB from 2.7 GB of RAM, ViTPose-H's
    2.5 GB from 20 GB, Sapiens-2B's 8.5 GB from 68 GB. True where the memory size is unknown."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return True
    size = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, nn.Linear))
    return size <= fraction * ram


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None):
    """``F.scaled_dot_product_attention``; a CPU bf16 call that autograd will differentiate runs in float32:
    torch's CPU flash-attention backward is 3-4x slower in bf16 than in float32 at short sequences (a 48-token
    demo ViT: 9.0 vs 2.9 ms per fwd+bwd of (32, 4, 48, 32), casts included; no slower at ViTPose's 192).
    A floating ``attn_mask`` (an additive bias) is cast to the dtype the kernel runs in."""
    in_float32 = q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.requires_grad and torch.is_grad_enabled()
    dtype = torch.float32 if in_float32 else q.dtype
    if attn_mask is not None and attn_mask.is_floating_point():  # an additive bias: in the kernel's dtype
        attn_mask = attn_mask.to(dtype)
    if not in_float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    with torch.autocast("cpu", enabled=False):  # CPU autocast would cast the inputs back to bf16
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)


# oneDNN matmuls for inference (see `linear`); SAGEPOSE_ONEDNN=0 turns them off, `mmpose_arithmetic()` for a block.
_ONEDNN = os.environ.get("SAGEPOSE_ONEDNN", "1") != "0" and torch.backends.mkldnn.is_available()
_MMPOSE_ARITHMETIC = contextvars.ContextVar("sagepose_mmpose_arithmetic", default=False)


@contextlib.contextmanager
def mmpose_arithmetic():
    """Within this block the transformer layers compute as MMPose's own modules do, operation for operation
    (``TopDownEstimator.set_exact``): :func:`linear` is ``F.linear`` (torch's default CPU matmul, as
    mmpretrain's ViT) and HRFormer's window attention is MMPose's explicit softmax(q k^T + bias) v."""
    token = _MMPOSE_ARITHMETIC.set(True)
    try:
        yield
    finally:
        _MMPOSE_ARITHMETIC.reset(token)


def in_mmpose_arithmetic() -> bool:
    """Whether this code runs inside :func:`mmpose_arithmetic`."""
    return _MMPOSE_ARITHMETIC.get()


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C), plus ``residual`` if given."""
        B, N, C = x.shape
        qkv = linear(x, self.qkv).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(*qkv)  # (B, heads, N, C / heads)
        return linear(x.transpose(1, 2).reshape(B, N, C), self.proj, residual=residual)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(GELU(fc1(x))) (exact erf GELU), plus ``residual`` if given."""
        return linear(linear(x, self.fc1, gelu=True), self.fc2, residual=residual)


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
        if self.training and self.drop_path > 0:
            x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
            return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        x = self.attn(self.norm1(x), residual=x)  # the residual adds fuse into the output projections
        return self.mlp(self.norm2(x), residual=x)


class VisionTransformer(nn.Module):
    """ViT backbone: (B, 3, H, W) image -> (B, embed_dim, Hp, Wp) feature map.

    ``img_size`` is (h, w); the token grid is ``(img + 2 * padding - patch) // patch + 1``
    per side (16x12 for ViTPose at 256x192). ``pos_embed`` is (1, Hp * Wp, C), no cls slot.

    Hybrid form (ours, for small models trained from scratch): ``stem_channels`` replaces the
    patch projection by a conv stem (:class:`ConvStem`, ``stem_blocks`` residual blocks per stage);
    with ``skip_strides`` the forward returns ``[stem features at those strides..., token map]``
    (``out_channels`` lists their channels) for a head that merges them (:class:`SkipHeatmapHead`).
    """

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

    def resize_pos_embed(self, new_img_size: tuple[int, int]) -> None:
        """Set a new input size (h, w); the position embeddings are resized bicubically to its grid."""
        grid = self._grid(tuple(new_img_size))
        with torch.no_grad():
            pos = interpolate_pos_embed(self.pos_embed.data, self.grid_size, grid)
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.img_size, self.grid_size = tuple(new_img_size), grid

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


class ResBlock(nn.Module):
    """Basic residual block: relu(x + BN(conv3x3(relu(BN(conv3x3(x))))))."""

    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))  # folded for inference (models.fuse)

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ConvStem(nn.Module):
    """A convolutional patch embedding: per entry of ``channels`` a stride-2 3x3 conv + BN + ReLU and
    ``blocks[i]`` residual blocks, then a 1x1 projection to the embedding.

    Xiao et al. 2021 ("Early convolutions help transformers see better"): it makes small
    ViTs trained from scratch converge much faster at negligible cost. The residual blocks and
    the features it hands to the head at ``skip_strides`` (a U-Net-style hybrid) are ours: they
    give the CPU demo model local detail at stride 4 that 16-pixel tokens lack.
    Forward: the stride-``patch_size`` map, or ``[features at skip_strides..., that map]``.
    """

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
                                        nn.ReLU(inplace=True), *(ResBlock(c) for _ in range(n))))
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
