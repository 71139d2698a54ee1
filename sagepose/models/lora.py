"""Low-rank adapters (LoRA, Hu et al. 2021): fine-tune a transformer backbone through a few small matrices.

    y = base(x) + dropout(x) A^T B^T * alpha / rank        A: (rank, in), Kaiming-uniform; B: (out, rank), zeros

:func:`add_adapters` wraps the chosen linear layers of a backbone in :class:`LoRALinear` after the model is built
(``model.lora``), so the model files stay plain; B starts at zero, so the adapted model starts equal to the base.
The wrapper holds the base layer's ``weight`` / ``bias`` as its own, so state-dict names are unchanged and base
checkpoints load into an adapted model. The backbone is frozen except the adapters and the last ``train_blocks``
blocks (:func:`frozen_base` names that frozen part); the head trains. :func:`merge_adapters` folds ``B A * scale``
into each base weight and puts a plain ``nn.Linear`` back (what inference runs: the CPU kernels then apply).

Targets, per family: ``qkv`` -- the attention's input projections (ViT / Sapiens / HRFormer ``attn.qkv``, Sapiens2's
separate ``attn.q`` / ``attn.k`` / ``attn.v``), ``proj`` -- its output projection, ``mlp`` -- the feed-forward's two
linear layers (``mlp.fc1`` / ``mlp.fc2``; HRFormer's feed-forward is convolutional and gets none).
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from sagepose.models import sapiens2 as s2
from sagepose.models.checkpoint import CheckpointMismatchError, load_checkpoint
from sagepose.models.hrformer import HRFormerBlock, WindowAttention
from sagepose.models.vit import MLP, Attention, Block

TARGETS = ("qkv", "proj", "mlp")
# (module class, child Linear name) -> target name
_LAYERS: dict[type, dict[str, str]] = {
    Attention: {"qkv": "qkv", "proj": "proj"},
    MLP: {"fc1": "mlp", "fc2": "mlp"},
    s2.Attention: {"q": "qkv", "k": "qkv", "v": "qkv", "proj": "proj"},
    s2.SwiGLU: {"fc1": "mlp", "fc2": "mlp"},
    WindowAttention: {"qkv": "qkv", "proj": "proj"},
}
_BLOCKS = (Block, s2.Block, HRFormerBlock)


class LoRALinear(nn.Module):
    """``base`` (an ``nn.Linear``, whose ``weight`` / ``bias`` it holds as its own) plus a rank-``rank`` update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's init, as the paper's code and peft
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(self.dropout(x), self.lora_a),
                                                              self.lora_b) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same: W + B A * scale (in float32, cast back to W's dtype)."""
        w = self.weight.float() + (self.lora_b.float() @ self.lora_a.float()) * self.scale
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device,
                        dtype=self.weight.dtype)
        out.weight.copy_(w)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out


def blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's transformer blocks in module order (ViT / Sapiens2 ``blocks``; HRFormer's, branch by
    branch, stage by stage)."""
    return [m for m in backbone.modules() if isinstance(m, _BLOCKS)]


def _last_blocks(backbone: nn.Module, n: int) -> list[nn.Module]:
    """The last ``n`` of :func:`blocks` (all of them when there are fewer; none for n <= 0)."""
    found = blocks(backbone)
    return found[max(len(found) - n, 0):] if n > 0 else []


def add_adapters(model: nn.Module, rank: int, alpha: float = 32.0, targets=TARGETS, dropout: float = 0.0,
                 train_blocks: int = 0) -> int:
    """Wrap ``model.backbone``'s ``targets`` linear layers in :class:`LoRALinear`, in place, and freeze the rest of
    the backbone except the last ``train_blocks`` blocks (trained fully, no adapters there); the head is left as
    it is. Returns the number of layers wrapped."""
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        raise ValueError(f"model.lora.targets: {sorted(unknown) or 'empty'}; choose from {list(TARGETS)}")
    backbone = model.backbone
    trained = _last_blocks(backbone, train_blocks)
    skip = {id(m) for b in trained for m in b.modules()}
    backbone.requires_grad_(False)
    n = 0
    for module in list(backbone.modules()):
        names = next((v for cls, v in _LAYERS.items() if isinstance(module, cls)), {})
        if id(module) in skip:
            continue
        for child, target in names.items():
            layer = getattr(module, child)
            if target in targets and type(layer) is nn.Linear:
                setattr(module, child, LoRALinear(layer, rank, alpha, dropout))
                n += 1
    if n == 0:  # (frozen_base knows an adapted model by its adapters)
        backbone.requires_grad_(True)
        left = f" outside the last {train_blocks} blocks" if trained else ""
        raise ValueError(f"model.lora: {type(backbone).__name__} has no {'/'.join(targets)} linear layers{left} to "
                         "adapt (adapters fit the transformer backbones: ViTPose, Sapiens, Sapiens2, HRFormer)")
    for b in trained:
        b.requires_grad_(True)
    return n


def frozen_base(model: nn.Module, train_blocks: int = 0) -> dict[str, nn.Parameter]:
    """The adapted model's frozen base: the backbone's parameters other than the adapters and the last
    ``train_blocks`` blocks', by their names in ``model`` -- a structural answer, not ``requires_grad`` (which the
    freeze-backbone phase turns off for a while). Empty for a model without adapters."""
    if not any(isinstance(m, LoRALinear) for m in model.modules()):
        return {}
    trained = {id(p) for b in _last_blocks(model.backbone, train_blocks) for p in b.parameters()}
    return {f"backbone.{name}": p for name, p in model.backbone.named_parameters()
            if id(p) not in trained and not name.endswith((".lora_a", ".lora_b"))}


def weights_hash(params: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``params`` (sorted by name): which base an adapter
    checkpoint sits on."""
    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name].detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def adapter_meta(raw: dict) -> dict | None:
    """An adapter run's checkpoint's ``sagepose["lora"]`` -- ``{"base": its model.init_checkpoint, "base_hash",
    "model"}``: the file holds the adapters and the trained parts, not the frozen base -- or None."""
    meta = raw.get("sagepose") if isinstance(raw, dict) else None
    lora = meta.get("lora") if isinstance(meta, dict) else None
    return lora if isinstance(lora, dict) else None


def check_adapter_base(meta: dict, base_hash: str, source: str) -> None:
    """Refuse a base whose :func:`weights_hash` differs from the one an adapter checkpoint (``meta``: its
    ``sagepose["lora"]``) was trained on: its adapters mean nothing on other weights."""
    if meta.get("base_hash") != base_hash:
        raise CheckpointMismatchError(
            f"{source}: its adapters were trained on another base than {meta.get('base')} holds here (weights hash "
            f"{str(meta.get('base_hash'))[:12]}, found {base_hash[:12]}): give model.init_checkpoint the base "
            "it was trained on")


def load_adapters(model: nn.Module, raw: dict, source: str, train_blocks: int = 0) -> None:
    """An adapter checkpoint's adapters and trained parts (``raw``, see :func:`adapter_meta`) into ``model``, built as
    it was trained: its base loaded, adapters on (``train_blocks`` as trained). Refused on another base
    (:func:`check_adapter_base`) or any key that is neither in the file nor the frozen base."""
    base = frozen_base(model, train_blocks)
    if not base:
        raise CheckpointMismatchError(f"{source}: holds adapters (model.lora) and no base; build the model it was "
                                      "trained as: sagepose.load(CHECKPOINT) alone")
    check_adapter_base(adapter_meta(raw) or {}, weights_hash(base), source)
    missing, unexpected, shaped = load_checkpoint(model, raw, strict=False)
    stray = [k for k in missing if k not in base] + unexpected + shaped
    if stray:
        raise CheckpointMismatchError(f"{source}: does not match the adapted model: {', '.join(stray[:5])}")


def merge_adapters(model: nn.Module) -> int:
    """Fold every :class:`LoRALinear` of ``model`` into a plain ``nn.Linear`` (same predictions to float32
    rounding), in place; the merged layers keep the wrapper's ``requires_grad``. Returns how many merged."""
    n = 0
    for module in list(model.modules()):
        for child, layer in list(module.named_children()):
            if isinstance(layer, LoRALinear):
                plain = layer.merged()
                plain.requires_grad_(layer.weight.requires_grad)
                setattr(module, child, plain)
                n += 1
    return n
