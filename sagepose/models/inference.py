"""The CPU fast path: transforms applied to a built model that keep its outputs and make it faster.

sagepose's model files (:mod:`~sagepose.models.vit`, :mod:`~sagepose.models.hrformer`,
:mod:`~sagepose.models.sapiens2`) are plain PyTorch. A
:class:`~sagepose.models.estimator.TopDownEstimator` swaps their transformer modules for the subclasses here when it
is built (:func:`use_cpu_kernels`; the parameters and their names stay, so checkpoints load unchanged), as
``torch.nn.utils.parametrize`` swaps a module's class: same numbers to float32 rounding, other kernels
(:mod:`~sagepose.models.cpu_kernels`) --

* at CPU float32 inference oneDNN's matmuls, with the GELU and the residual adds fused into them, on weights
  packed in oneDNN's blocked layout where ``fuse_for_inference`` packed them (torch's default CPU matmul is MKL's
  sgemm, which on AMD CPUs runs generic kernels: ViTPose-B 1.5-2.5x slower);
* in CPU bf16 training, attention in float32 (torch's bf16 CPU attention backward is 3-4x slower).

Everywhere else (GPU, autograd, tracing, export, another dtype) they compute as the plain modules do.

Fusing for inference (:func:`fold_for_inference`) folds each eval-mode BatchNorm into the convolution before it
-- the conv's weight scaled per output channel by ``gamma / sqrt(var + eps)``, plus the bias
``beta - mean * that``; the BatchNorm becomes an ``nn.Identity`` -- and gives the model the memory layout oneDNN
runs fastest: channels-last for convolutional backbones (HRNet-W32 at batch 2 on 2 CPU cores: 198 -> 180 ms),
channels-last input from a ViT head's second deconv on. Pairs are found in ``nn.Sequential`` (a conv directly
followed by a BatchNorm) and in modules that name theirs in ``CONV_BN_PAIRS`` (e.g. HRNet's ``conv1`` / ``bn1``).
Folding changes the state dict (BatchNorm entries go, conv biases appear): a folded model predicts only.

:class:`InferenceMode` names the modes a model predicts in; ``TopDownEstimator.set_mode`` moves between them.
"""
from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sagepose.models import sapiens2 as s2
from sagepose.models.cpu_kernels import attention, linear
from sagepose.models.heads import ConvNormAct
from sagepose.models.hrformer import WindowAttention
from sagepose.models.vit import MLP, Attention, Block


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX (there
    oneDNN's bf16 convolutions and matmuls run ~1.4x faster than float32; elsewhere bf16 is emulated, slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # blocks up to this size come from the heap (glibc's own ceiling when it adapts it)
TRIM_THRESHOLD = 256 << 20  # freed memory kept at the top of the heap before any goes back to the OS
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed activations for the next call instead of handing them back to the OS: blocks
    up to :data:`MMAP_THRESHOLD` from the heap, up to :data:`TRIM_THRESHOLD` of it kept when freed. Left to glibc's
    own adaptive thresholds, each forward pass may page-fault its activations in afresh, more or less depending on
    what the process ran before (HRFormer-B, ``predict`` of 2 boxes with flip on 2 cores: 234,000 minor faults and
    828 ms a call, or 46,000 and 568 ms after a bf16 model had run; with these settings ~1,000 and ~540 ms either
    way; ViTPose and HRNet gain less). Process-wide, once; called when a CPU model is put in an inference mode. Not
    done where ``SAGEPOSE_MALLOC=0``, where the user tuned malloc themselves (``MALLOC_*_`` or ``GLIBC_TUNABLES``),
    or off glibc (False there; an allocator preloaded in glibc's place ignores it)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        user_tuned = any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ) or \
            "malloc" in os.environ.get("GLIBC_TUNABLES", "")
        if os.environ.get("SAGEPOSE_MALLOC", "1") != "0" and not user_tuned and sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
                _malloc_tuned = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
                    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                pass
    return _malloc_tuned


@dataclass(frozen=True)
class InferenceMode:
    """How a :class:`~sagepose.models.estimator.TopDownEstimator` predicts. Every combination of the four either
    passes :meth:`check` or is refused there; ``TopDownEstimator.set_mode`` moves a model from one to another.

    * ``fused``: BatchNorms folded into the convolutions, channels-last weights for convolutional backbones
      (``TopDownEstimator.fuse_for_inference``). Cannot be undone; a fused model does not train.
    * ``exact``: MMPose's float32 arithmetic operation for operation (``TopDownEstimator.set_exact``):
      needs the BatchNorms, so not fused, and float32.
    * ``dtype``: the backbone's and head's weights and compute (``TopDownEstimator.set_dtype``): float32,
      or bfloat16 / float16 for prediction only.
    * ``packed``: a fused model's float32 CPU linear weights also kept in oneDNN's blocked layout
      (:func:`~sagepose.models.cpu_kernels.pack_linear_weights`). In bfloat16 / float16 no weight is float32
      and nothing is packed; back in float32 the weights are packed again.
    """

    fused: bool = False
    exact: bool = False
    dtype: torch.dtype = torch.float32
    packed: bool = False

    DTYPES: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)

    def check(self) -> None:
        """Refuse an invalid combination, with the error that says why it is one."""
        if self.dtype not in self.DTYPES:
            raise ValueError(f"set_dtype: {self.dtype} is not float32, bfloat16 or float16")
        if self.exact and self.dtype != torch.float32:
            raise RuntimeError(f"exact mode reproduces MMPose's float32 arithmetic: it cannot run in {self.dtype} "
                               "(set_dtype)")
        if self.exact and self.fused:
            raise RuntimeError("exact mode needs the unfused model (BatchNorms not folded): load it with "
                               "sagepose.load(..., exact=True) or sagepose.load(..., fuse=False), or call "
                               "set_exact(False) before fuse_for_inference")
        if self.packed and not self.fused:
            raise ValueError("packed linear weights are part of fusing: InferenceMode(packed=True) needs fused=True")

    def check_trainable(self) -> None:
        """Refuse a mode a model cannot train in (``TopDownEstimator.train``)."""
        if self.fused:
            raise RuntimeError("this model was fused for inference (fuse_for_inference: BatchNorms folded into "
                               "convolutions) and cannot train; load it with sagepose.load(..., fuse=False)")
        if self.dtype != torch.float32:
            raise RuntimeError(f"{self.dtype} weights (set_dtype) are for prediction, in eval mode; train float32 "
                               "weights with mixed precision (trainer.precision=bf16-mixed): set_dtype('float32')")


def swap_classes(model: nn.Module, table: dict[type, type]) -> int:
    """Give each module of ``model`` whose class is a key of ``table`` the class it maps to, in place: a subclass
    (or sibling) with the same parameters, buffers and names and another ``forward``, so state dicts, hooks and
    references stay as they are (as ``torch.nn.utils.parametrize`` swaps a module's class). Returns how many
    modules changed."""
    n = 0
    for module in model.modules():
        new = table.get(type(module))
        if new is not None:
            module.__class__ = new
            n += 1
    return n


class FastAttention(Attention):
    """:class:`~sagepose.models.vit.Attention` through :func:`~sagepose.models.cpu_kernels.linear` and
    :func:`~sagepose.models.cpu_kernels.attention`, the residual add fused into the output projection."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C), plus ``residual`` if given."""
        B, N, C = x.shape
        qkv = linear(x, self.qkv).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(*qkv)  # (B, heads, N, C / heads)
        return linear(x.transpose(1, 2).reshape(B, N, C), self.proj, residual=residual)


class FastMLP(MLP):
    """:class:`~sagepose.models.vit.MLP` with the GELU and the residual add fused into its matmuls."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(GELU(fc1(x))) (exact erf GELU), plus ``residual`` if given."""
        return linear(linear(x, self.fc1, gelu=True), self.fc2, residual=residual)


class FastBlock(Block):
    """:class:`~sagepose.models.vit.Block` handing its residuals to :class:`FastAttention` / :class:`FastMLP`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_path > 0:  # stochastic depth: no residual to fuse
            return super().forward(x)
        x = self.attn(self.norm1(x), residual=x)  # the residual adds fuse into the output projections
        return self.mlp(self.norm2(x), residual=x)


class FastWindowAttention(WindowAttention):
    """HRFormer's :class:`~sagepose.models.hrformer.WindowAttention` through the CPU kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B * windows, w*w, C) -> (B * windows, w*w, C)."""
        B, N, C = x.shape
        q, k, v = linear(x, self.qkv).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(q, k, v, attn_mask=self.position_bias().unsqueeze(0))
        return linear(x.transpose(1, 2).reshape(B, N, C), self.proj)


class FastSapiens2Attention(s2.Attention):
    """Sapiens2's :class:`~sagepose.models.sapiens2.Attention` through the CPU kernels (its q / k / v / output
    projections; QK-norm, RoPE and the grouped heads as there)."""

    def forward(self, x: torch.Tensor, sin: torch.Tensor | None, cos: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        q = linear(x, self.q).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = linear(x, self.k).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = linear(x, self.v).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if sin is not None:
            q, k = s2.apply_rope(q, sin, cos), s2.apply_rope(k, sin, cos)
        if self.num_kv_heads != self.num_heads:
            group = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return linear(attention(q, k, v).transpose(1, 2).reshape(B, N, C), self.proj)


class FastSwiGLU(s2.SwiGLU):
    """Sapiens2's SwiGLU feed-forward through the CPU kernels, the residual add fused into its second matmul."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        gate, value = linear(x, self.fc1).chunk(2, dim=-1)
        return linear(torch.nn.functional.silu(gate) * value, self.fc2, residual=residual)


class FastSapiens2Block(s2.Block):
    """Sapiens2's :class:`~sagepose.models.sapiens2.Block` handing the feed-forward its residual (the attention
    branch's layer scale comes between its projection and the add: that one is not fused)."""

    def forward(self, x: torch.Tensor, sin: torch.Tensor | None = None, cos: torch.Tensor | None = None
                ) -> torch.Tensor:
        if self.training and self.drop_path > 0:  # stochastic depth: no residual to fuse
            return super().forward(x, sin, cos)
        branch = self.attn(self.norm1(x), sin, cos)
        x = x + (branch if self.layer_scale is None else branch * self.layer_scale)
        return self.mlp(self.norm2(x), residual=x)


FAST = {Attention: FastAttention, MLP: FastMLP, Block: FastBlock, WindowAttention: FastWindowAttention,
        s2.Attention: FastSapiens2Attention, s2.SwiGLU: FastSwiGLU, s2.Block: FastSapiens2Block}


def use_cpu_kernels(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap ``model``'s plain transformer modules for the fast ones (``enabled=False``: back). Returns ``model``."""
    swap_classes(model, FAST if enabled else {fast: plain for plain, fast in FAST.items()})
    return model


# ---------------------------------------------------------------------------------------------
# Fusing for inference: BatchNorms folded, oneDNN's fastest layout

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def fold_pair(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError("fold_pair: the BatchNorm has no running statistics to fold")
    if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
        raise ValueError("fold_pair: grouped transposed convolutions are not supported")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0  # ConvTranspose2d weights are (in, out, kh, kw)
    shape = [1] * conv.weight.ndim
    shape[out_dim] = -1
    conv.weight.mul_(scale.view(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = (bias - bn.running_mean) * scale
    if bn.affine:
        shift = shift + bn.bias
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)


def _conv_bn_pairs(model: nn.Module):
    """(parent, conv, bn name in parent) for every conv directly followed by a BatchNorm: consecutive children
    of an ``nn.Sequential``, or a module's own ``CONV_BN_PAIRS``."""
    for module in model.modules():
        names = list(module._modules)
        pairs = zip(names, names[1:]) if isinstance(module, nn.Sequential) else getattr(module, "CONV_BN_PAIRS", ())
        for conv_name, bn_name in pairs:
            conv, bn = module._modules[conv_name], module._modules[bn_name]
            if isinstance(conv, _CONVS) and type(bn) is nn.BatchNorm2d:
                yield module, conv, bn_name


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every conv -> BatchNorm pair of ``model`` (in eval mode) in place; returns how many."""
    if model.training:
        raise RuntimeError("fold_batchnorm: put the model in eval mode first (folding uses running statistics)")
    pairs = list(_conv_bn_pairs(model))  # found first: folding replaces modules
    for parent, conv, bn_name in pairs:
        fold_pair(conv, parent._modules[bn_name])
        parent._modules[bn_name] = nn.Identity()
    return len(pairs)


class ChannelsLastInputStage(ConvNormAct):
    """A head stage whose input is made channels-last on the CPU: oneDNN runs ViTPose's second deconv faster on
    it (the head at batch 1 / 4 / 8: 16.7 / 70 / 138 -> 15.3 / 55 / 108 ms); the stages after it keep the layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Fold ``model``'s BatchNorms (:func:`fold_batchnorm`; ``model`` in eval mode) and give it oneDNN's fastest
    layout: channels-last weights where the backbone prefers them (its ``prefers_channels_last``: convolutional
    backbones), else channels-last input from the head's second deconv on. ``model`` has a ``backbone`` and a
    ``head``; returns it."""
    fold_batchnorm(model)
    if model.backbone.prefers_channels_last:
        model.to(memory_format=torch.channels_last)
    elif len(getattr(model.head, "deconv_blocks", ())) >= 2:  # ViTPose's classic head
        swap_classes(model.head.deconv_blocks[1], {ConvNormAct: ChannelsLastInputStage})
    return model
