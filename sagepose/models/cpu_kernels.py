"""The CPU kernels of the fast path (:mod:`sagepose.models.inference`): what its transformer modules call where
the plain ones (:mod:`sagepose.models.vit`, :mod:`sagepose.models.hrformer`) call ``F.linear`` and
``F.scaled_dot_product_attention``. The numbers are the same (to float32 rounding), only the kernels differ:

* CPU float32 inference: :func:`linear` runs oneDNN's matmul with the GELU or the residual add fused into it,
  on a copy of the weight in oneDNN's blocked layout where :func:`pack_linear_weights` made one. Whether this
  torch build has those kernels is probed once, on tiny tensors (:func:`onednn_available`);
  ``SAGEPOSE_ONEDNN=0`` turns them off. Everywhere else (training, autograd, tracing, export, GPU, another
  dtype) :func:`linear` is ``F.linear``.
* CPU bf16 training: :func:`attention` runs in float32 (torch's bf16 CPU backward is slower).
"""
from __future__ import annotations

import functools
import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def onednn_available() -> bool:
    """Whether :func:`linear` may use oneDNN's fused matmuls: not turned off by ``SAGEPOSE_ONEDNN=0``, torch
    built with oneDNN, and its kernels (weight packing; plain, GELU and residual-add matmuls) run on tiny
    tensors. Probed once per process, on the first call."""
    if os.environ.get("SAGEPOSE_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return False
    mkldnn = torch.ops.mkldnn
    x, weight, bias = torch.ones(1, 2, 4), torch.ones(3, 4), torch.zeros(3)
    try:
        with torch.no_grad():
            packed = mkldnn._reorder_linear_weight(weight)
            mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
            mkldnn._linear_pointwise(x, packed, bias, "gelu", [], "none")
            mkldnn._linear_pointwise.binary(x, torch.ones(1, 2, 3), packed, bias, "add")
    except (RuntimeError, AttributeError, NotImplementedError):  # a torch build without these kernels
        return False
    return True


def _onednn_linear_ok(x: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path: CPU float32 inference outside autocast, tracing, export."""
    return (not torch.compiler.is_compiling() and not torch.is_grad_enabled()
            and type(x) is torch.Tensor and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing() and onednn_available())


def linear(x: torch.Tensor, layer: nn.Linear, gelu: bool = False, residual: torch.Tensor | None = None):
    """``residual + gelu?(layer(x))``. At CPU float32 inference the matmul goes through oneDNN, with the GELU or
    the residual add fused into it: torch's default CPU matmul is MKL's sgemm, which on AMD CPUs runs generic
    kernels (about 1.5-2.5x slower here at ViTPose's 192 tokens). Same numbers to ~1e-6 relative; elsewhere
    (training, autograd, tracing, export, GPU) it is plain ``F.linear``. A wrapped layer (an adapter,
    :mod:`sagepose.models.lora`) runs its own forward."""
    if type(layer) is nn.Linear and _onednn_linear_ok(x):
        weight = _packed_weight(layer)
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, layer.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, *(
            ("gelu", [], "none") if gelu else ("none", [], "")))
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


def unpack_linear_weights(model: nn.Module) -> None:
    """Drop the packed copies :func:`pack_linear_weights` keeps for ``model``'s linear layers."""
    for layer in model.modules():
        _PACKED.pop(layer, None)


@torch.no_grad()
def pack_linear_weights(model: nn.Module) -> int:
    """Keep a copy of each float32 CPU ``nn.Linear`` weight of ``model`` in oneDNN's blocked layout, for
    :func:`linear`'s inference path: oneDNN otherwise reorders every weight on every call. Same results
    bit for bit; ViTPose-B forward on 2 CPU cores: batch 1 198 -> 187 ms, batch 8 1461 -> 1423 ms. Costs
    one more copy of those weights in memory (ViTPose-B +340 MB, ViTPose-H +2.5 GB: for the largest models
    on small machines use ``fuse_for_inference(pack_weights=False)``). A weight changed or replaced
    afterwards is used as it is; a former packing (say, before a change of dtype) is dropped first.
    Returns the number of weights packed."""
    unpack_linear_weights(model)
    if not onednn_available():
        return 0
    n = 0
    for layer in model.modules():
        if isinstance(layer, nn.Linear) and layer.weight.device.type == "cpu" and layer.weight.dtype == torch.float32:
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

