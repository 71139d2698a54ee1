"""Sapiens2 backbone (facebookresearch/sapiens2, ICLR 2026) and its named sizes.

A pre-norm transformer over 16x16 patches with no position table: rotary position embedding (RoPE) over
the patch grid rotates queries and keys instead. In front of the patch tokens sit one class token and 8
storage (register) tokens, which RoPE leaves unrotated and the feature map drops. Each block is

    x = x + layer_scale * attn(rmsnorm(x))      attention: QK-RMSNorm per head, RoPE, SDPA
    x = x + swiglu(rmsnorm(x))                  fc2(silu(a) * b), (a, b) = fc1(x) split in two

with grouped-query attention (half as many key / value heads) in every block but the first and last 8.
A final RMSNorm, then the patch tokens as an NCHW map for the heatmap head (:class:`~sagepose.models.heads.
HeatmapHead` with non-affine InstanceNorm and SiLU, two stride-2 deconvs and three 1x1 convs, as the
official ``PoseHeatmapHead``). Numerically this is the official ``sapiens/backbones/standalone/sapiens2.py``
as its pose configs build it, including its rotary embedding's bfloat16 arithmetic (``rope_dtype``): the
official module computes the angles, their sines and cosines and the rotation of queries and keys in
bfloat16 by default, so the queries and keys are rounded to bfloat16 once, whatever the model's dtype.
:func:`sagepose.models.checkpoint.from_sapiens2` maps the official key names onto ours.

``use_tokenizer`` switches on the official windowed tokenizer (:class:`WindowTokenizer`), which the 4K backbone
(``sapiens2-1b-4k``, pretrained at 4096x3072; released as a backbone only, no pose model) puts between the patch
embedding and the blocks: each ``window_size`` x ``window_size`` window of patches becomes one token, so the
blocks see a 1024x768 model's grid and the feature map has stride 16 * ``window_size`` (64).
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sagepose.models.vit import drop_path

# One row of numbers per named size: the official ``arch_zoo``. ``mlp_dim`` is the SwiGLU hidden width
# (fc1 maps to twice that: gate and value); ``num_tokenizer_layers`` the depth of the tokenizer, used only with
# ``use_tokenizer=True``. 0.1b and 1b-4k (1b with the tokenizer) are released as pretraining backbones only.
SAPIENS2_SIZES: dict[str, dict] = {
    "sapiens2-0.1b": dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072, num_tokenizer_layers=2),
    "sapiens2-0.4b": dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096, num_tokenizer_layers=2),
    "sapiens2-0.8b": dict(embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120, num_tokenizer_layers=3),
    "sapiens2-1b": dict(embed_dim=1536, depth=40, num_heads=24, mlp_dim=6144, num_tokenizer_layers=4),
    "sapiens2-5b": dict(embed_dim=2432, depth=56, num_heads=32, mlp_dim=9728, num_tokenizer_layers=6),
}
SAPIENS2_SIZES["sapiens2-1b-4k"] = dict(SAPIENS2_SIZES["sapiens2-1b"], use_tokenizer=True, img_size=(4096, 3072))
ROPE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class GridRope(nn.Module):
    """Rotary embedding over an (H, W) patch grid: (sin, cos), each (H * W, head_dim).

    Patch centres are normalised to [-1, 1] separately along each axis, so every input size spans the
    same range. A quarter of the head's channels turns with the row coordinate, a quarter with the
    column, at periods ``base ** (2 i / (head_dim / 2))``; the other half repeats them (the rotation
    pairs channel j with j + head_dim / 2). All of it in ``dtype`` (bfloat16 in the released models).
    ``periods`` is a persistent buffer, as in the official module (its checkpoints carry it). A cast of the
    whole model (``.float()``, ``.to(torch.bfloat16)``) changes the buffer's dtype but not this arithmetic; the
    official module's angles would then follow the buffer (after ``.float()``: as ``dtype=torch.float32`` here).
    """

    def __init__(self, head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE over a 2-D grid needs a head dim divisible by 4, got {head_dim}")
        self.dtype = dtype
        self.register_buffer("periods", base ** (2 * torch.arange(head_dim // 4, dtype=dtype) / (head_dim // 2)))

    def forward(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        kw = dict(device=self.periods.device, dtype=self.dtype)
        rows = torch.arange(0.5, H, **kw) / H
        cols = torch.arange(0.5, W, **kw) / W
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1)  # (HW, 2)
        coords = 2.0 * coords - 1.0
        # evaluated left to right as the official code does: (2 pi) * coords, then / periods, each rounded
        angles = 2 * math.pi * coords[:, :, None] / self.periods.to(self.dtype)[None, None, :]
        angles = angles.flatten(1).tile(2)  # (HW, head_dim): [row angles, col angles] twice
        return torch.sin(angles), torch.cos(angles)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, N, d) queries or keys whose last ``sin.shape[0]`` tokens are the patch grid; the
    prefix tokens (class, storage) pass unrotated. Computed in the dtype of ``sin`` (the whole tensor is cast
    to it and back, prefix included, as the official module does). Under ``torch.export`` (ONNX) a bfloat16
    rotation is :func:`apply_rope_rounded`: the same numbers in operations every runtime has."""
    if sin.dtype == torch.bfloat16 and torch.compiler.is_exporting():
        return apply_rope_rounded(x, sin, cos)
    dtype = x.dtype
    x = x.to(sin.dtype)
    prefix, grid = x.split([x.shape[-2] - sin.shape[-2], sin.shape[-2]], dim=-2)
    first, second = grid.chunk(2, dim=-1)
    grid = (grid * cos) + (torch.cat([-second, first], dim=-1) * sin)
    return torch.cat([prefix, grid], dim=-2).to(dtype)


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def apply_rope_rounded(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` in bfloat16 written as float32 operations, each result rounded to bfloat16: torch's
    bfloat16 kernels compute in float32 and round the same way, so the outputs are equal (tested), and an ONNX
    graph of it needs only float32 arithmetic and casts (onnxruntime's CPU provider has no bfloat16 Mul)."""
    dtype = x.dtype
    prefix, grid = _bf16(x).split([x.shape[-2] - sin.shape[-2], sin.shape[-2]], dim=-2)
    first, second = grid.chunk(2, dim=-1)
    grid = _bf16(_bf16(grid * cos.float()) + _bf16(torch.cat([-second, first], dim=-1) * sin.float()))
    return torch.cat([prefix, grid], dim=-2).to(dtype)


class Attention(nn.Module):
    """Multi-head attention with ``num_kv_heads`` key / value heads (grouped-query when fewer than
    ``num_heads``: each serves ``num_heads // num_kv_heads`` consecutive query heads), RMSNorm on each
    head's queries and keys (eps 1e-6; not in the tokenizer, ``qk_norm=False``), then RoPE (when given)."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, qk_norm: bool = True):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads or num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads {self.num_kv_heads} must divide num_heads {num_heads}")
        self.head_dim = dim // num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, kv_dim)
        self.v = nn.Linear(dim, kv_dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor | None, cos: torch.Tensor | None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C); ``sin`` None: no rotary embedding (the tokenizer's windows)."""
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if sin is not None:
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        if self.num_kv_heads != self.num_heads:
            group = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(silu(a) * b), (a, b) the two halves of fc1(x)."""
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


class Block(nn.Module):
    """Pre-norm block: x + layer_scale * attn(norm1(x)), then x + mlp(norm2(x)); only the attention
    branch is scaled (the official FFN has no layer scale; ``layer_scale_init=0``: none at all, as in the
    tokenizer). Each branch drop-pathed (0 in the release)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, num_kv_heads: int | None = None,
                 layer_scale_init: float = 1e-4, drop_path: float = 0.0, qk_norm: bool = True):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, num_kv_heads, qk_norm)
        self.layer_scale = nn.Parameter(torch.full((dim,), layer_scale_init)) if layer_scale_init else None
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, mlp_dim)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, sin: torch.Tensor | None = None, cos: torch.Tensor | None = None
                ) -> torch.Tensor:
        branch = self.attn(self.norm1(x), sin, cos)
        if self.layer_scale is not None:
            branch = branch * self.layer_scale
        x = x + drop_path(branch, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class WindowTokenizer(nn.Module):
    """The official 4K tokenizer: (B, H * W, C) patch tokens -> (B, H / ws * W / ws, C), one token per
    ``ws`` x ``ws`` window of patches (``ws = window_size``), windows and tokens in row-major order.

    Each window's ``ws ** 2`` patch tokens, behind a learned class token and plus a learned position table over
    those ``1 + ws ** 2`` slots, go through ``depth`` pre-norm blocks of their own (full multi-head attention with
    no QK-norm, no RoPE and no layer scale, SwiGLU of width 4 C); the class token's output is the window's token.
    Windows go through ``chunk_size`` at a time, as in the official module (1024: a 4096x3072 image has 3072), to
    bound the activation memory. The windows are independent, so the chunking changes the arithmetic only in the
    float32 last bits (the matmuls' blocking follows their row count; measured ~1e-7 of the peak), the same chunk
    size giving the official values bit for bit.
    """

    def __init__(self, dim: int, num_heads: int, depth: int, window_size: int = 4, chunk_size: int = 1024):
        super().__init__()
        self.window_size, self.chunk_size = window_size, chunk_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + window_size ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, 4 * dim, layer_scale_init=0.0, qk_norm=False)
                                    for _ in range(depth))

    def pool(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, ws * ws, C) windows -> (n, C): the class token after the blocks."""
        x = torch.cat([self.cls_token.expand(len(windows), -1, -1), windows], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, 0]

    def forward(self, x: torch.Tensor, H: int, W: int, checkpointed: bool = False
                ) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, H * W, C) over an (H, W) patch grid -> (B, h * w, C) and the new grid (h, w) = (H / ws, W / ws).
        ``checkpointed``: each chunk's activations recomputed in the backward pass."""
        ws = self.window_size
        if H % ws or W % ws:
            raise ValueError(f"the Sapiens2 tokenizer needs a patch grid divisible by its window {ws}, got {H}x{W} "
                             f"patches (input size a multiple of {ws} x the patch size)")
        B, _, C = x.shape
        h, w = H // ws, W // ws
        windows = x.reshape(B, h, ws, w, ws, C).transpose(2, 3).reshape(B * h * w, ws * ws, C)
        pool = partial(checkpoint, self.pool, use_reentrant=False) if checkpointed else self.pool
        tokens = torch.cat([pool(chunk) for chunk in windows.split(self.chunk_size)])
        # cast as the official module, which writes the tokens into a buffer of the patch tokens' dtype (bfloat16
        # under autocast, where the blocks' residual stream is float32)
        return tokens.to(x.dtype).view(B, h * w, C), (h, w)


class Sapiens2(nn.Module):
    """Sapiens2 backbone: (B, 3, H, W) image -> (B, embed_dim, H / 16, W / 16) feature map (H / 64, W / 64
    with the 4K tokenizer: ``use_tokenizer``, its ``window_size`` 4 and ``num_tokenizer_layers`` blocks).

    ``img_size`` is (h, w), for the record only: RoPE is computed for whatever grid the input gives, so
    :meth:`set_input_size` has nothing to resize. Blocks ``mha_ends`` from either end use full multi-head
    attention, the ones between grouped-query attention with ``num_heads // 2`` key / value heads (the
    official split is 8 and 8; 0.1b's 12 blocks are then all full). ``rope_dtype``: "bf16" (the official
    default, which the released weights were trained with) or "fp32". ``grad_checkpointing`` checkpoints
    each block and each of the tokenizer's chunks (the official module checkpoints those whenever training);
    ``tokenizer_chunk_size`` windows go through the tokenizer at a time (memory only).
    """

    prefers_channels_last = False  # its time is in matmuls, as the ViT's
    block_type = Block  # FSDP's unit (sagepose.models.zoo.block_type)

    def __init__(self, img_size: tuple[int, int] = (1024, 768), patch_size: int = 16, embed_dim: int = 1536,
                 depth: int = 40, num_heads: int = 24, mlp_dim: int = 6144, num_storage_tokens: int = 8,
                 mha_ends: int = 8, layer_scale_init: float = 1e-4, rope_base: float = 100.0,
                 rope_dtype: str = "bf16", drop_path_rate: float = 0.0, grad_checkpointing: bool = False,
                 use_tokenizer: bool = False, window_size: int = 4, num_tokenizer_layers: int = 4,
                 tokenizer_chunk_size: int = 1024):
        super().__init__()
        if rope_dtype not in ROPE_DTYPES:
            raise ValueError(f"rope_dtype must be one of {sorted(ROPE_DTYPES)}, got {rope_dtype!r}")
        self.patch_size, self.embed_dim, self.depth = patch_size, embed_dim, depth
        self.out_channels = embed_dim
        self.stride = patch_size * (window_size if use_tokenizer else 1)  # of the feature map
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.tokenizer = (WindowTokenizer(embed_dim, num_heads, num_tokenizer_layers, window_size, tokenizer_chunk_size)
                          if use_tokenizer else None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, num_storage_tokens, embed_dim))
        self.num_prefix_tokens = 1 + num_storage_tokens
        self.rope = GridRope(embed_dim // num_heads, rope_base, ROPE_DTYPES[rope_dtype])
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_dim, None if i < mha_ends or i >= depth - mha_ends else num_heads // 2,
                  layer_scale_init, rates[i])
            for i in range(depth))
        self.norm = nn.RMSNorm(embed_dim, eps=1e-6)
        self.set_input_size(img_size)
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: truncated normal (std 0.02) for tokens (the tokenizer's class token and
        position table too), linear and conv weights, zero biases, unit norms (layer scales keep
        ``layer_scale_init``)."""
        for name, p in self.named_parameters():
            if name.rpartition(".")[2] in ("cls_token", "storage_tokens", "pos_embed"):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        """Take (h, w) inputs from now on (multiples of :attr:`stride`); nothing to resize."""
        self.img_size = tuple(img_size)
        self.grid_size = tuple(s // self.stride for s in self.img_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H / stride, W / stride): the normed patch tokens (one per window with the
        tokenizer), class and storage tokens dropped."""
        B = x.shape[0]
        x = self.patch_embed(x)
        Hp, Wp = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.tokenizer is not None:
            x, (Hp, Wp) = self.tokenizer(x, Hp, Wp, checkpointed=self.grad_checkpointing and torch.is_grad_enabled())
        prefix = [self.cls_token.expand(B, -1, -1), self.storage_tokens.expand(B, -1, -1)]
        x = torch.cat([*prefix, x], dim=1)
        sin, cos = self.rope(Hp, Wp)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, sin, cos, use_reentrant=False)
            else:
                x = block(x, sin, cos)
        x = self.norm(x)[:, self.num_prefix_tokens:]
        return x.reshape(B, Hp, Wp, -1).permute(0, 3, 1, 2)  # a channels-last view, as the official hands on


def sapiens2(size: str, **overrides) -> Sapiens2:
    """A named Sapiens2 size from :data:`SAPIENS2_SIZES`, any constructor argument overridable."""
    if size not in SAPIENS2_SIZES:
        raise KeyError(f"unknown Sapiens2 size {size!r}; known: {sorted(SAPIENS2_SIZES)}")
    return Sapiens2(**{**SAPIENS2_SIZES[size], **overrides})
