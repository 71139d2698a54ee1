"""Structural priors on predicted coordinates, from the schema's skeleton and the labeled set: any skeleton.

Three families of quantities, each with the range it takes on the labeled instances (quantiles, default 2 % and
98 %), and a loss that is zero inside the range and grows linearly outside it:

- bones: the length of each skeleton edge / the instance's scale;
- angles: for every joint j with two or more skeleton neighbours, each neighbour pair (a, b) gives the angle
  between j->a and j->b, UNSIGNED in [0, pi] (atan2(|cross|, dot)): invariant to rotation and to mirroring, so a
  flipped student view needs no sign bookkeeping (a signed angle changes sign in a mirror);
- topology: |(L X)_k| / scale with L = D - A the skeleton's Laplacian: joint k's offset from the mean of its
  neighbours, times its degree (translation-invariant as L's rows sum to 0).

All three are invariant to rotating and translating a pose and, with ``scale`` scaled alike, to zooming it.
``scale`` (B,) is the size of the instance's crop in the coordinates' frame (e.g. the crop diagonal): the
labeled statistics and the unlabeled losses must use the same definition. Lengths and topology cross their range
by a relative amount (the excess divided by the range's upper end), angles by radians. A schema without skeleton
gives empty priors whose losses are 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sagepose.ssl.losses import masked_mean

_TINY = 1e-12


def _edges(skeleton: Sequence[Sequence[int]], num_keypoints: int) -> list[tuple[int, int]]:
    """Skeleton pairs -> sorted unique undirected edges (a < b), self loops dropped; indices checked."""
    out = set()
    for pair in skeleton:
        a, b = (int(i) for i in pair)
        if not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
            raise ValueError(f"skeleton edge ({a}, {b}) out of range for {num_keypoints} keypoints")
        if a != b:
            out.add((min(a, b), max(a, b)))
    return sorted(out)


def _triplets(edges: list[tuple[int, int]], num_keypoints: int) -> list[tuple[int, int, int]]:
    """(a, j, b) for every joint j with >= 2 neighbours and every neighbour pair a < b."""
    nbrs: list[set[int]] = [set() for _ in range(num_keypoints)]
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    return [(a, j, b) for j in range(num_keypoints) for i, a in enumerate(sorted(nbrs[j]))
            for b in sorted(nbrs[j])[i + 1:]]


def _bone_lengths(coords: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    d = coords[:, edges[:, 0]] - coords[:, edges[:, 1]]
    return torch.sqrt(d.square().sum(-1) + _TINY)


def _angles(coords: torch.Tensor, triplets: torch.Tensor) -> torch.Tensor:
    """(B, K, 2), triplets (T, 3) -> (B, T) unsigned angles in [0, pi]; a degenerate triplet gives pi / 2 with a
    zero (never NaN) gradient."""
    j = coords[:, triplets[:, 1]]
    u, v = coords[:, triplets[:, 0]] - j, coords[:, triplets[:, 2]] - j
    cross = (u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]).abs()
    dot = (u * v).sum(-1)
    ok = cross.square() + dot.square() > _TINY
    return torch.atan2(torch.where(ok, cross, 1.0), torch.where(ok, dot, 0.0))


def _laplacian_norms(coords: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    lx = torch.einsum("kj,bjc->bkc", laplacian, coords)
    return torch.sqrt(lx.square().sum(-1) + _TINY)


def _range(values: torch.Tensor, valid: torch.Tensor, quantiles: tuple[float, float], upper: float) -> torch.Tensor:
    """(N, M) values, (N, M) valid -> (M, 2) [low, high] quantiles over valid rows; [0, upper] where none is valid."""
    x = torch.where(valid, values, math.nan)
    if x.shape[1] == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    q = torch.nanquantile(x, torch.tensor(quantiles, dtype=x.dtype), dim=0).T  # (M, 2)
    fallback = torch.tensor([0.0, upper], dtype=x.dtype).expand_as(q)
    return torch.where(torch.isnan(q), fallback, q)


def _excess(values: torch.Tensor, rng: torch.Tensor, relative: bool) -> torch.Tensor:
    """How far values (B, M) lie outside [low, high] (M, 2): 0 inside; / high where ``relative``."""
    lo, hi = rng[:, 0], rng[:, 1]
    out = torch.relu(lo - values) + torch.relu(values - hi)
    if relative:
        out = out / torch.where(torch.isfinite(hi) & (hi > 0), hi, 1.0)
    return out


class StructuralPriors(nn.Module):
    """Bone, angle and topology ranges of a skeleton (buffers: a checkpoint keeps them) and their losses.

    Build with :meth:`from_labeled`. Each loss takes coords (B, K, 2) (any frame), scale (B,) (the crop size in
    that frame, as in :meth:`from_labeled`) and weights (B, K) (the joints' mask), and returns ``(loss, logs)``:
    the weighted mean of the terms' excess, a term weighing the product (bones, angles) or minimum (topology:
    the joint and its neighbours) of its joints' weights. Logs: ``loss`` and ``outside`` (the weighted fraction
    of terms outside their range).
    """

    def __init__(self, num_keypoints: int, edges: torch.Tensor, bone_range: torch.Tensor, triplets: torch.Tensor,
                 angle_range: torch.Tensor, topology_range: torch.Tensor):
        super().__init__()
        self.num_keypoints = num_keypoints
        edges = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
        adjacency = torch.zeros(num_keypoints, num_keypoints)
        adjacency[edges[:, 0], edges[:, 1]] = 1.0
        adjacency[edges[:, 1], edges[:, 0]] = 1.0
        self.register_buffer("edges", edges)
        self.register_buffer("triplets", torch.as_tensor(triplets, dtype=torch.long).reshape(-1, 3))
        self.register_buffer("adjacency", adjacency)
        self.register_buffer("laplacian", torch.diag(adjacency.sum(1)) - adjacency)
        self.register_buffer("bone_range", torch.as_tensor(bone_range, dtype=torch.float32).reshape(-1, 2))
        self.register_buffer("angle_range", torch.as_tensor(angle_range, dtype=torch.float32).reshape(-1, 2))
        self.register_buffer("topology_range", torch.as_tensor(topology_range, dtype=torch.float32).reshape(-1, 2))

    @classmethod
    def from_labeled(cls, keypoints, visible, scale, skeleton: Sequence[Sequence[int]], num_keypoints: int,
                     quantiles: tuple[float, float] = (0.02, 0.98)) -> StructuralPriors:
        """keypoints (N, K, 2), visible (N, K), scale (N,) of labeled instances (any frame; ``scale`` the size of
        each instance's crop in it, e.g. the crop diagonal), the schema's skeleton pairs -> the priors.

        A quantity counts on the instances where all its joints are visible; one never seen gets the range
        [0, inf) ([0, pi] for angles), i.e. no constraint.
        """
        kp = torch.as_tensor(np.asarray(keypoints), dtype=torch.float64)
        vis = torch.as_tensor(np.asarray(visible)) > 0
        sc = torch.as_tensor(np.asarray(scale), dtype=torch.float64).reshape(-1)
        n = kp.shape[0] if kp.ndim == 3 else -1
        if n < 1 or kp.shape[1:] != (num_keypoints, 2) or vis.shape != kp.shape[:2] or sc.shape[0] != n:
            raise ValueError(f"StructuralPriors.from_labeled: expected keypoints (N >= 1, {num_keypoints}, 2), visible "
                             f"(N, {num_keypoints}), scale (N,), got {tuple(kp.shape)}, {tuple(vis.shape)}, "
                             f"{tuple(sc.shape)}")
        if not 0 <= quantiles[0] <= quantiles[1] <= 1:
            raise ValueError(f"StructuralPriors.from_labeled: quantiles must satisfy 0 <= lo <= hi <= 1, "
                             f"got {quantiles}")
        if not bool((sc > 0).all()) or not bool(torch.isfinite(sc).all()):
            raise ValueError("StructuralPriors.from_labeled: every scale must be finite and > 0")
        vis = vis & torch.isfinite(kp).all(-1)
        kp = torch.where(vis[..., None], kp, 0.0)
        edges = _edges(skeleton, num_keypoints)
        triplets = _triplets(edges, num_keypoints)
        e = torch.tensor(edges, dtype=torch.long).reshape(-1, 2)
        t = torch.tensor(triplets, dtype=torch.long).reshape(-1, 3)
        priors = cls(num_keypoints, e, torch.zeros(len(edges), 2), t, torch.zeros(len(triplets), 2),
                     torch.zeros(num_keypoints, 2))
        lap = priors.laplacian.double()
        bone_valid = vis[:, e[:, 0]] & vis[:, e[:, 1]]
        angle_valid = vis[:, t[:, 0]] & vis[:, t[:, 1]] & vis[:, t[:, 2]]
        has_nbrs = priors.adjacency.sum(1) > 0
        nbrs_visible = ((~vis[:, None, :]) & (priors.adjacency[None] > 0)).sum(-1) == 0  # (N, K)
        topo_valid = vis & nbrs_visible & has_nbrs
        priors.bone_range.copy_(_range(_bone_lengths(kp, e) / sc[:, None], bone_valid, quantiles, math.inf))
        priors.angle_range.copy_(_range(_angles(kp, t), angle_valid, quantiles, math.pi))
        priors.topology_range.copy_(_range(_laplacian_norms(kp, lap) / sc[:, None], topo_valid, quantiles, math.inf))
        return priors

    @property
    def is_empty(self) -> bool:
        """True for a schema without skeleton: every loss is 0."""
        return self.edges.shape[0] == 0

    def _check(self, coords: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor) -> None:
        b = coords.shape[0]
        if coords.shape[1:] != (self.num_keypoints, 2) or weights.shape != (b, self.num_keypoints) \
                or scale.reshape(-1).shape[0] != b:
            raise ValueError(f"StructuralPriors ({self.num_keypoints} keypoints): expected coords (B, K, 2), scale "
                             f"(B,), weights (B, K), got {tuple(coords.shape)}, {tuple(scale.shape)}, "
                             f"{tuple(weights.shape)}")

    @staticmethod
    def _result(excess: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weight = weight.detach().float()
        loss = masked_mean(excess, weight)
        return loss, {"loss": loss.detach(), "outside": masked_mean((excess > 0).float(), weight).detach()}

    def bone_loss(self, coords: torch.Tensor, scale: torch.Tensor,
                  weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Bone lengths / scale outside their labeled range, relative to the range's upper end."""
        self._check(coords, scale, weights)
        c, w, s = coords.float(), weights.float(), scale.float().reshape(-1, 1)
        lengths = _bone_lengths(c, self.edges) / s
        return self._result(_excess(lengths, self.bone_range, True), w[:, self.edges[:, 0]] * w[:, self.edges[:, 1]])

    def angle_loss(self, coords: torch.Tensor, scale: torch.Tensor,
                   weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Unsigned joint angles outside their labeled range, in radians (``scale`` only checked: angles have none)."""
        self._check(coords, scale, weights)
        c, w, t = coords.float(), weights.float(), self.triplets
        weight = w[:, t[:, 0]] * w[:, t[:, 1]] * w[:, t[:, 2]]
        return self._result(_excess(_angles(c, t), self.angle_range, False), weight)

    def topology_loss(self, coords: torch.Tensor, scale: torch.Tensor,
                      weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """|(L X)_k| / scale outside its labeled range, relative to the range's upper end; joints without
        neighbours weigh 0."""
        self._check(coords, scale, weights)
        c, w, s = coords.float(), weights.float(), scale.float().reshape(-1, 1)
        norms = _laplacian_norms(c, self.laplacian) / s
        nbr_min = torch.where(self.adjacency[None] > 0, w[:, None, :], math.inf).amin(-1)  # (B, K)
        weight = torch.where(self.adjacency.sum(1) > 0, w * nbr_min.clamp_max(1e30), 0.0)
        return self._result(_excess(norms, self.topology_range, True), weight)
