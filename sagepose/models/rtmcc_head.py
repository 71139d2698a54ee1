"""RTMPose's RTMCC head (Jiang et al. 2023): a stride-32 feature map -> SimCC logits, x and y, per keypoint.

A large-kernel (7x7) conv maps the features to one channel per keypoint; each keypoint's flattened map becomes a
token, normalised (:class:`ScaleNorm`) and projected to the hidden width; one gated attention unit
(:class:`GatedAttentionUnit`, Hua et al. 2022) lets the keypoint tokens attend to each other; two linear
classifiers read each token out as logits over the x bins and over the y bins. The output is the two side by side,
``(B, K, Wx + Wy)``, x first -- :mod:`sagepose.codecs.simcc`'s layout.

Parameter names are MMPose's (``head.gau.uv``, ``head.cls_x``) except ``final_conv`` (MMPose's ``final_layer``),
``mlp.norm`` / ``mlp.fc`` (``mlp.0`` / ``mlp.1``), ``gau.norm`` (``gau.ln``) and ``gau.res_scale`` (a parameter,
MMPose's ``gau.res_scale.scale``): :func:`sagepose.models.checkpoint.from_mmpose` renames them.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from sagepose.models.vit import drop_path


class ScaleNorm(nn.Module):
    """x / max(||x|| / sqrt(dim), eps) * g, one learnt scalar g (Nguyen & Salazar 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale, self.eps = dim ** -0.5, eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


def rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding over axis 1 (the tokens) of x (B, N, ..., D): each half-pair of features rotated
    by position x frequency. Parity: MMPose's frequencies are 10000 ** (i / (D/2)), growing with i (RoFormer's
    shrink); kept so its checkpoints compute the same."""
    n, half = x.shape[1], x.shape[-1] // 2
    freq = 10000 ** (torch.arange(half, device=x.device) / float(half))
    angle = torch.arange(n, device=x.device).view(n, *([1] * (x.ndim - 3)), 1) * freq
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)


class GatedAttentionUnit(nn.Module):
    """MMPose's ``RTMCCBlock`` in its self-attention form: (B, N, dim) -> (B, N, dim).

    ``u, v, base = act(uv(norm(x)))`` (widths e = dim x expansion, e, s); the queries and keys are ``base`` under
    two per-feature affines (``gamma``, ``beta``; rotary where ``pos_enc``); the attention is ``relu(q k^T /
    sqrt(s))^2`` (plus a learnt bias per token offset, ``w``, where ``rel_bias``); out ``o(u * (attention @ v))``
    added to the input scaled per feature (``res_scale``).
    """

    def __init__(self, num_tokens: int, dim: int, s: int = 128, expansion: int = 2, dropout: float = 0.0,
                 drop_path_rate: float = 0.0, act: str = "silu", rel_bias: bool = False, pos_enc: bool = False,
                 eps: float = 1e-5):
        super().__init__()
        if act not in ("silu", "relu"):
            raise ValueError(f"GatedAttentionUnit: act must be 'silu' or 'relu', got {act!r}")
        self.e, self.s, self.act = int(dim * expansion), s, act
        self.pos_enc, self.drop_path_rate = pos_enc, drop_path_rate
        self.norm = ScaleNorm(dim, eps)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.w = nn.Parameter(torch.rand(2 * num_tokens - 1)) if rel_bias else None
        self.dropout = nn.Dropout(dropout)
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = nn.Parameter(torch.ones(dim))

    def relative_bias(self, n: int) -> torch.Tensor:
        """(n, n): entry (i, j) the learnt bias of offset j - i."""
        i = torch.arange(n, device=self.w.device)
        return self.w[i[None, :] - i[:, None] + n - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        uv = self.uv(self.norm(x))
        u, v, base = (F.silu(uv) if self.act == "silu" else F.relu(uv)).split([self.e, self.e, self.s], dim=-1)
        base = base.unsqueeze(2) * self.gamma + self.beta  # (B, N, 2, s): queries and keys
        q, k = (rope(base) if self.pos_enc else base).unbind(2)
        qk = torch.bmm(q, k.transpose(1, 2))
        if self.w is not None:
            qk = qk + self.relative_bias(q.shape[1])
        attention = self.dropout(F.relu(qk / math.sqrt(self.s)).square())
        out = self.o(u * torch.bmm(attention, v))
        return x * self.res_scale + drop_path(out, self.drop_path_rate, self.training)


class RTMCCHead(nn.Module):
    """(B, in_channels, h, w) stride-32 features -> SimCC logits (B, num_keypoints, Wx + Wy).

    ``feature_size`` (w, h) of the map (the flattened token is w x h long), ``simcc_size`` (Wx, Wy) the bins;
    ``hidden`` the token width, ``s`` / ``expansion`` / ``act`` / ``rel_bias`` / ``pos_enc`` the attention unit's.

    Its keypoints attend to each other, so a keypoint's logits depend on the whole keypoint set -- and on the tokens'
    order where the attention has a positional term (``rel_bias``, ``pos_enc``): what
    :mod:`sagepose.models.head_transplant` asks (``joints_attend``, :attr:`joint_order_matters`) before it copies
    a checkpoint's keypoint rows.
    """

    joints_attend = True

    def __init__(self, in_channels: int, num_keypoints: int, feature_size: tuple[int, int],
                 simcc_size: tuple[int, int], final_kernel_size: int = 7, hidden: int = 256, s: int = 128,
                 expansion: int = 2, dropout: float = 0.0, drop_path_rate: float = 0.0, act: str = "silu",
                 rel_bias: bool = False, pos_enc: bool = False):
        super().__init__()
        self.feature_size, self.simcc_size = tuple(feature_size), tuple(simcc_size)
        tokens_in = self.feature_size[0] * self.feature_size[1]
        self.final_conv = nn.Conv2d(in_channels, num_keypoints, final_kernel_size, padding=final_kernel_size // 2)
        self.mlp = nn.Sequential(OrderedDict(norm=ScaleNorm(tokens_in), fc=nn.Linear(tokens_in, hidden, bias=False)))
        self.gau = GatedAttentionUnit(num_keypoints, hidden, s, expansion, dropout, drop_path_rate, act, rel_bias,
                                      pos_enc)
        self.cls_x = nn.Linear(hidden, self.simcc_size[0], bias=False)
        self.cls_y = nn.Linear(hidden, self.simcc_size[1], bias=False)
        # MMPose's initialisation of this head: convs N(0, 0.001), linear layers N(0, 0.01), zero biases
        nn.init.normal_(self.final_conv.weight, std=0.001)
        nn.init.zeros_(self.final_conv.bias)
        for fc in (self.mlp.fc, self.gau.uv, self.gau.o, self.cls_x, self.cls_y):
            nn.init.normal_(fc.weight, std=0.01)

    @property
    def joint_order_matters(self) -> bool:
        """Whether reordering the keypoints changes their logits (the attention's relative bias or rotary encoding)."""
        return self.gau.w is not None or self.gau.pos_enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.feature_size[::-1]:
            raise ValueError(f"RTMCCHead: built for a {self.feature_size[1]}x{self.feature_size[0]} feature map "
                             f"(h x w), got {tuple(x.shape[-2:])}: the head fixes the input size")
        tokens = self.gau(self.mlp(self.final_conv(x).flatten(2)))  # (B, K, hidden)
        return torch.cat([self.cls_x(tokens), self.cls_y(tokens)], dim=-1)
