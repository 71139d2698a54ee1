"""The unlabeled-data losses: heatmaps as spatial distributions, the teacher's target from its views, consistency,
the dynamic keypoint mask, soft-argmax coordinates, the temporal term and the ramp-up of the unlabeled weight.

Every loss returns ``(loss, logs)``: a scalar float32 tensor with a graph, and a dict of detached float tensors.
All arithmetic is float32 whatever the inputs' dtype or the autocast. Maps are (B, K, h, w) and are never looped
over in Python.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOG_FLOOR = 1e-8  # a regressed heatmap's value below this counts as this before the log (probability ~1e-16)
_TINY = 1e-12


def _scores(maps: torch.Tensor, tau: float, kind: str) -> torch.Tensor:
    """(B, K, h, w) -> (B, K, h*w) float32 log-domain scores whose spatial softmax is the map's distribution."""
    if tau <= 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    x = maps.float().flatten(2)
    if kind == "logits":
        return x / tau
    if kind == "heatmap":
        return torch.log(x.clamp_min(_LOG_FLOOR)) / tau
    raise ValueError(f"map kind must be 'logits' or 'heatmap', got {kind!r}")


def to_probabilities(maps: torch.Tensor, tau: float, kind: str = "logits") -> torch.Tensor:
    """(B, K, h, w) -> (B, K, h, w) float32 probabilities, each map summing to 1.

    ``kind="logits"`` (a ``heatmap_output="softmax"`` model): softmax(maps / tau) over the map. ``kind="heatmap"``
    (regressed peak-1 Gaussians, values ~[0, 1]): max(maps, 0) ** (1 / tau), normalised -- a softmax of values
    in [0, 1] would be nearly flat (e^2 / e^0 ~ 7 between the peak and the background at tau 0.5, over thousands
    of background pixels), while the power keeps the background at ~0. An all-zero map becomes uniform.
    """
    return torch.softmax(_scores(maps, tau, kind), dim=-1).view(maps.shape)


def log_probabilities(maps: torch.Tensor, tau: float, kind: str = "logits") -> torch.Tensor:
    """The log of :func:`to_probabilities`, computed stably (a log-softmax), differentiable: the student's side."""
    return torch.log_softmax(_scores(maps, tau, kind), dim=-1).view(maps.shape)


def renormalize(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, h, w) non-negative maps -> (the maps divided by their sum, kept mass (B, K)).

    After a warp some probability leaves the view: the kept mass tells the caller which joints left it (mask
    those with mass < 0.5, say). It is the kept fraction when the warp conserved mass
    (``warp_heatmaps(..., mass_preserving=True)``). A map with no mass left stays all zeros (mass 0).
    """
    p = probs.float().clamp_min(0)
    mass = p.sum(dim=(2, 3))
    safe = torch.where(mass > 0, mass, 1.0)
    return p / safe[:, :, None, None], mass


def _sharpen(p: torch.Tensor, tau: float) -> torch.Tensor:
    """p ** (1 / tau) renormalised; each map divided by its maximum first, so the peak never underflows."""
    peak = p.amax(dim=(2, 3), keepdim=True)
    x = (p / torch.where(peak > 0, peak, 1.0)).pow(1.0 / tau)
    total = x.sum(dim=(2, 3), keepdim=True)
    return x / torch.where(total > 0, total, 1.0)


def teacher_target(p_a: torch.Tensor, p_b: torch.Tensor | None = None, confidence_tau: float = 1.0,
                   spatial_tau: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher probability maps of one or two views, in one frame (B, K, h, w) -> the student's target
    (B, K, h, w), its confidence (B, K).

    Two views are averaged per keypoint, view v weighing softmax_v(conf_v / confidence_tau) with conf_v the maximum
    of its map: the view that is surer of a joint counts more (confidence_tau -> 0: the surer view alone; -> inf:
    the plain mean; the config's ``ssl.fusion_temperature``). ``spatial_tau < 1`` sharpens the target,
    p ** (1 / spatial_tau) renormalised. The confidence returned is the maximum of the final map. ``p_b=None``
    uses ``p_a`` alone (one teacher view; sharpening still applies).
    """
    if confidence_tau <= 0:
        raise ValueError(f"confidence_tau (ssl.fusion_temperature) must be > 0, got {confidence_tau}")
    p = p_a.float()
    if p_b is not None:
        conf = torch.stack([p.amax(dim=(2, 3)), p_b.float().amax(dim=(2, 3))])  # (2, B, K)
        w = torch.softmax(conf / confidence_tau, dim=0)
        p = w[0, :, :, None, None] * p + w[1, :, :, None, None] * p_b.float()
    if spatial_tau is not None and spatial_tau < 1:
        p = _sharpen(p, spatial_tau)
    return p, p.amax(dim=(2, 3))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(mask * values) / sum(mask) for non-negative weights; exactly 0 (with a graph) for an all-zero mask."""
    total = mask.sum()
    return (values * mask).sum() / torch.where(total > 0, total, 1.0)


def consistency_loss(student_maps: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
                     kind: str = "js", tau: float = 0.5, map_kind: str = "logits",
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """student maps (B, K, h, w) raw, teacher probabilities (B, K, h, w), mask (B, K) -> (loss, logs).

    The student's maps become probabilities q with :func:`to_probabilities` (``tau``, ``map_kind``); the teacher's
    p are taken as given (detached). ``kind``: "kl" = KL(p || q); "js" = Jensen-Shannon, in [0, log 2];
    "mse" = sum over pixels of (q - p)^2, i.e. the per-pixel mean squared error scaled by h*w, in [0, 2], so it
    does not shrink with the map size as the mean of 1/(h*w)-sized values would. Each joint's divergence is
    clamped at >= 0 (float error only); the loss is the mask-weighted mean over joints, normalised by the mask
    sum, so masked joints do not dilute it. Logs: ``loss`` and ``kept`` (the mask's mean).
    """
    mask = mask.float().detach()
    p = teacher_probs.detach().float().flatten(2)
    log_q = log_probabilities(student_maps, tau, map_kind).flatten(2)
    if kind == "kl":
        per_joint = (torch.xlogy(p, p) - p * log_q).sum(-1)
    elif kind == "js":
        q = log_q.exp()
        log_m = torch.logaddexp(torch.log(p), log_q) - math.log(2.0)
        per_joint = 0.5 * ((torch.xlogy(p, p) - p * log_m).sum(-1) + (q * (log_q - log_m)).sum(-1))
    elif kind == "mse":
        per_joint = (log_q.exp() - p).square().sum(-1)
    else:
        raise ValueError(f"consistency kind must be 'js', 'kl' or 'mse', got {kind!r}")
    loss = masked_mean(per_joint.clamp_min(0), mask)
    return loss, {"loss": loss.detach(), "kept": mask.mean()}


class KeypointMask(nn.Module):
    """The dynamic keypoint mask: which joints of which unlabeled samples the consistency loss uses.

    forward(conf (B, K), step) -> mask (B, K) float in {0, 1}; conf is the teacher target's maximum.

    1. Statistics: each call folds the batch's confidences (``stats_conf`` if given: the caller's confidences
       gathered over ranks, so every rank keeps the same numbers) into a per-keypoint exponential moving mean and
       variance with weight ``1 - momentum`` for the batch -- the exact mean and variance of the mixture "old
       statistics (weight momentum) + this batch"; the first batch sets them. Buffers, so a checkpoint keeps them.
    2. Before ``warmup_iters`` the mask is all ones.
    3. After: keep conf >= mean_k - beta * std_k. Then the percentile fallback over the batch: if that kept no
       joint at all, keep the ``fallback_percentile`` % most confident entries of the batch instead; if it kept
       every joint, drop the ``fallback_percentile`` % least confident among the entries not protected by step 4
       (at least one in either case). Finally each sample keeps at least its ceil(min_keep_ratio * K) most
       confident joints. So the mask is never all zeros (min_keep_ratio > 0 or the fallback) and never all ones
       (as long as ceil(min_keep_ratio * K) < K: with min_keep_ratio 0.3 any K >= 2).
    No host sync: every branch is a ``torch.where``.
    """

    def __init__(self, num_keypoints: int, beta: float = 2.0, momentum: float = 0.99, warmup_iters: int = 1000,
                 min_keep_ratio: float = 0.3, fallback_percentile: float = 10.0):
        super().__init__()
        if not 0 <= momentum < 1:
            raise ValueError(f"KeypointMask: momentum must be in [0, 1), got {momentum}")
        if not 0 <= min_keep_ratio <= 1 or not 0 < fallback_percentile < 100:
            raise ValueError(f"KeypointMask: need 0 <= min_keep_ratio <= 1 and 0 < fallback_percentile < 100, "
                             f"got {min_keep_ratio}, {fallback_percentile}")
        self.num_keypoints = num_keypoints
        self.beta, self.momentum, self.warmup_iters = beta, momentum, warmup_iters
        self.min_keep = math.ceil(min_keep_ratio * num_keypoints)
        self.fallback = fallback_percentile / 100.0
        self.register_buffer("mean", torch.zeros(num_keypoints))
        self.register_buffer("var", torch.zeros(num_keypoints))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, conf: torch.Tensor) -> None:
        """Fold confidences (N, K) into the per-keypoint moving mean and variance."""
        conf = conf.detach().float()
        m_b, v_b = conf.mean(0), conf.var(0, unbiased=False)
        a = torch.where(self.initialized, 1.0 - self.momentum, 1.0)  # the first batch sets the statistics
        delta = m_b - self.mean
        self.var.copy_((1 - a) * self.var + a * v_b + (1 - a) * a * delta.square())
        self.mean.add_(a * delta)
        self.initialized.fill_(True)

    def thresholds(self) -> torch.Tensor:
        """(K,) the current thresholds mean - beta * std."""
        return self.mean - self.beta * self.var.clamp_min(0).sqrt()

    @torch.no_grad()
    def forward(self, conf: torch.Tensor, step: int, stats_conf: torch.Tensor | None = None) -> torch.Tensor:
        conf = conf.detach().float()
        b, k = conf.shape
        if k != self.num_keypoints:
            raise ValueError(f"KeypointMask built for {self.num_keypoints} keypoints, got confidences of shape "
                             f"{tuple(conf.shape)}")
        self.update(conf if stats_conf is None else stats_conf)
        if step < self.warmup_iters:
            return torch.ones_like(conf)
        raw = conf >= self.thresholds() - 1e-6  # a joint as confident as its steady mean stays (float rounding)
        protected = torch.zeros_like(raw)
        if self.min_keep > 0:
            protected.scatter_(1, conf.topk(min(self.min_keep, k), dim=1).indices, True)
        flat = conf.flatten()
        n_keep = max(1, int(self.fallback * b * k))
        keep_top = torch.zeros_like(flat, dtype=torch.bool).scatter_(0, flat.topk(n_keep).indices, True)
        n_free = b * (k - min(self.min_keep, k))  # entries outside every sample's protected top joints
        drop_low = torch.zeros_like(flat, dtype=torch.bool)
        if n_free > 0:
            n_drop = max(1, int(self.fallback * n_free))
            candidates = torch.where(protected.flatten(), math.inf, flat)
            drop_low.scatter_(0, candidates.topk(n_drop, largest=False).indices, True)
        keep_top, drop_low = keep_top.view(b, k), drop_low.view(b, k)
        mask = torch.where(~raw.any(), keep_top, torch.where(raw.all(), raw & ~drop_low, raw))
        return (mask | protected).float()


def soft_argmax(probs: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) non-negative maps -> (B, K, 2) expected (x, y) in heatmap pixels (each map normalised first)."""
    p = probs.float()
    b, k, h, w = p.shape
    mass = p.sum(dim=(2, 3)).clamp_min(_TINY)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    x = (p.sum(2) * xs).sum(-1) / mass
    y = (p.sum(3) * ys).sum(-1) / mass
    return torch.stack([x, y], dim=-1)


def temporal_loss(coords_t: torch.Tensor, coords_next: torch.Tensor, valid: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Coordinates (B, K, 2) of a frame and the next, valid (B, K) -> (loss, logs), lightning-pose's temporal loss.

    Epsilon-insensitive: mean over valid joints of max(0, ||delta|| - eps), ``eps`` in the coordinates' units
    (motion up to eps is free). Logs: ``loss`` and ``motion`` (mean ||delta|| over valid joints).
    """
    valid = valid.float().detach()
    delta = coords_next.float() - coords_t.float()
    dist = torch.sqrt(delta.square().sum(-1) + _TINY)  # + tiny: a finite gradient at zero motion
    loss = masked_mean(F.relu(dist - eps), valid)
    return loss, {"loss": loss.detach(), "motion": masked_mean(dist, valid).detach()}


def rampup(step: int, length: int) -> float:
    """The unlabeled weight's ramp: exp(-5 (1 - t)^2) with t = step / length (Laine & Aila's sigmoid ramp), 0 at
    step <= 0 (the teacher is the student then: nothing to learn from it) and 1 from ``length`` on; length 0 -> 1."""
    if length <= 0:
        return 1.0
    if step <= 0:
        return 0.0
    t = min(step / length, 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
