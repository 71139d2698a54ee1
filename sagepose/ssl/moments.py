"""Keypoint distributions as moments: how a teacher of one kind teaches a student of another.

A top-down model's output for one joint is a distribution over its input crop: a heatmap (a 2-D map, made a
probability by its map kind) or SimCC (two 1-D distributions, ``softmax(beta * logits)`` per axis). Two models that
differ in output kind, input size or crop frame cannot compare maps bin for bin, but each distribution reduces to

* its **mean** and **covariance** in input pixels (of the dominant mode: the moments are taken in a window of
  :data:`WINDOW_SIGMAS` label sigmas about the distribution's maximum, so the background of a regressed heatmap and a
  second mode -- a left / right confusion -- do not pull the mean to where no joint is), and
* a **confidence** in [0, 1]: the probability mass inside that window (a sharp unimodal joint ~1; two equal modes
  ~0.5; a flat map ~ the window's share of the map),

and those move between frames exactly: an affine A maps the mean to A mean and the covariance to M cov M^T (M its
linear part), a mirror permutes joints, a schema translation copies joints or takes midpoints of two. The target a
student learns is the Gaussian of those moments rendered in its own output layout -- a heatmap or SimCC bins --
with its own label sigma as the floor of the spread (a teacher sharper than the student's bins would otherwise put
all its mass in one bin and lose the sub-bin position). What this does not carry is the shape beyond two moments:
a skewed or two-mode distribution becomes a Gaussian about its main mode, weighed by the confidence.

Used by semi-supervised SimCC training (:mod:`sagepose.train.ssl_module`: the EMA teacher's 1-D distributions into
the strong view) and by distillation (:mod:`sagepose.train.distill_module`: any teacher into any student).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sagepose import geometry
from sagepose.codecs import SimCCLabel
from sagepose.ssl.losses import consistency_loss, to_probabilities

SIMCC_BETA = 10.0  # RTMPose's KLDiscretLoss beta: a SimCC model's distribution is softmax(beta * logits) per axis
WINDOW_SIGMAS = 3.0  # the moments' window: +- this many label sigmas about the maximum (at least 2 bins / pixels)


class Moments(NamedTuple):
    """Per-joint distributions reduced to moments, in one crop's input pixels."""

    mean: torch.Tensor  # (B, K, 2) x, y
    cov: torch.Tensor  # (B, K, 2, 2)
    conf: torch.Tensor  # (B, K) in [0, 1]


def is_simcc(model) -> bool:
    return isinstance(model.codec, SimCCLabel)


def _windowed(p: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D distributions (N, W) -> (the distribution within +-radius of its maximum, renormalised; the mass kept)."""
    idx = torch.arange(p.shape[-1], device=p.device)
    centre = p.argmax(-1, keepdim=True)
    w = p * ((idx - centre).abs() <= radius)
    mass = w.sum(-1, keepdim=True)
    return w / mass.clamp_min(1e-12), mass.squeeze(-1)


def _axis_moments(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., W) distributions -> mean, variance in bins."""
    idx = torch.arange(p.shape[-1], device=p.device, dtype=p.dtype)
    mean = (p * idx).sum(-1)
    return mean, (p * (idx - mean[..., None]).square()).sum(-1)


def _window_radius(sigma: float) -> int:
    return max(2, math.ceil(WINDOW_SIGMAS * sigma))


def simcc_moments(logits: torch.Tensor, codec: SimCCLabel, tau: float = 1.0) -> Moments:
    """SimCC logits (B, K, Wx + Wy) -> :class:`Moments` in input px: each axis' ``softmax(beta * logits / tau)``
    windowed about its maximum; the axes independent (a diagonal covariance); confidence the smaller axis' mass."""
    ratio = codec.simcc_split_ratio
    means, variances, masses = [], [], []
    for axis, sigma in zip(codec.split(logits.float()), codec.sigma):
        p = torch.softmax(axis * (SIMCC_BETA / tau), dim=-1)
        p, mass = _windowed(p, _window_radius(sigma))
        mean, var = _axis_moments(p)
        means.append(mean / ratio)
        variances.append(var / ratio ** 2)
        masses.append(mass)
    cov = torch.diag_embed(torch.stack(variances, -1))
    return Moments(torch.stack(means, -1), cov, torch.minimum(*masses))


def heatmap_moments(maps: torch.Tensor, model, tau: float = 1.0) -> Moments:
    """Raw head output (B, K, h, w) of a heatmap model -> :class:`Moments` in input px: the map's probabilities
    (:func:`sagepose.ssl.losses.to_probabilities`, by the model's ``heatmap_output``) in a square window about the
    maximum, mean and full covariance there; confidence the window's mass."""
    kind = "logits" if model.heatmap_output == "softmax" else "heatmap"
    p = to_probabilities(maps, tau, kind)
    b, k, h, w = p.shape
    r = _window_radius(float(model.codec.sigma))
    flat = p.flatten(2).argmax(-1)
    cy, cx = (flat // w)[..., None, None], (flat % w)[..., None, None]
    ys = torch.arange(h, device=p.device)[:, None]
    xs = torch.arange(w, device=p.device)[None, :]
    p = p * (((ys - cy).abs() <= r) & ((xs - cx).abs() <= r))
    mass = p.sum((2, 3))
    p = p / mass.clamp_min(1e-12)[..., None, None]
    mx, vx = _axis_moments(p.sum(2))
    my, vy = _axis_moments(p.sum(3))
    cxy = (p * (xs - mx[..., None, None]) * (ys - my[..., None, None])).sum((2, 3))
    scale = model.codec.heatmap_scale.to(p.device).float()  # heatmap px per input px, (sx, sy)
    mean = torch.stack([mx, my], -1) / scale
    cov = torch.stack([torch.stack([vx, cxy], -1), torch.stack([cxy, vy], -1)], -2)
    cov = cov / (scale[:, None] * scale[None, :])
    return Moments(mean, cov, mass)


def output_moments(out: torch.Tensor, model, tau: float = 1.0) -> Moments:
    """A model's raw output -> :class:`Moments` in its input px (float32, no graph needed: a teacher's)."""
    with torch.autocast(out.device.type, enabled=False):
        return simcc_moments(out, model.codec, tau) if is_simcc(model) else heatmap_moments(out.float(), model, tau)


def translate(m: Moments, keypoint_map) -> Moments:
    """Moments of ``keypoint_map.source``'s joints -> ``keypoint_map.target``'s
    (:class:`sagepose.keypoint_maps.KeypointMap`): a copied joint keeps its moments, a midpoint of two (taken as
    independent) has the mean of the means and a quarter of the summed covariances; its confidence is the smaller
    one; a joint the map does not give has confidence 0."""
    first, second = (torch.as_tensor(a, device=m.mean.device) for a in keypoint_map.ends())
    same = (first == second)[:, None, None]
    covered = torch.as_tensor(keypoint_map.covered, device=m.mean.device)
    mean = 0.5 * (m.mean[:, first] + m.mean[:, second])
    cov = torch.where(same, m.cov[:, first], 0.25 * (m.cov[:, first] + m.cov[:, second]))
    conf = torch.minimum(m.conf[:, first], m.conf[:, second]) * covered
    return Moments(mean, cov, conf)


def transform(m: Moments, A: torch.Tensor, flipped: torch.Tensor | None = None, flip_indices=None) -> Moments:
    """Moments in one frame, affines (B, 2, 3) to another -> moments there; where ``flipped`` (B,) the frame is
    mirrored relative to the first, so joint k's moments become joint ``flip_indices[k]``'s."""
    A = A.float().to(m.mean.device)
    M = A[:, None, :, :2]
    mean = geometry.apply_affine_torch(m.mean, A)
    cov = M @ m.cov @ M.transpose(-1, -2)
    out = Moments(mean, cov, m.conf)
    if flipped is None:
        return out
    source_of = torch.argsort(torch.as_tensor(flip_indices, dtype=torch.long, device=mean.device))
    f = flipped.to(mean.device)
    return Moments(*(torch.where(f.view(-1, *([1] * (t.ndim - 1))), t[:, source_of], t) for t in out))


def fuse(a: Moments, b: Moments, confidence_tau: float = 1.0) -> Moments:
    """Two views' moments of the same joints, in one frame -> one: the mixture weighing each view by
    ``softmax(conf / confidence_tau)`` (the surer view counts more), its covariance including the spread of the two
    means; confidence the weighted mean."""
    w = torch.softmax(torch.stack([a.conf, b.conf]) / confidence_tau, dim=0)
    mean = w[0, ..., None] * a.mean + w[1, ..., None] * b.mean
    cov = 0.0
    for wi, mi in zip(w, (a, b)):
        d = (mi.mean - mean)[..., :, None]
        cov = cov + wi[..., None, None] * (mi.cov + d @ d.transpose(-1, -2))
    return Moments(mean, cov, w[0] * a.conf + w[1] * b.conf)


def into_view(per_view: list[Moments], t_views, s_view, flip_indices, confidence_tau: float = 1.0) -> Moments:
    """Teacher moments of one or two views (:class:`sagepose.ssl.views.Views`, each in its view's input px) ->
    moments in student view ``s_view``'s input px (the relative affine, the mirror between the views), two views
    fused (:func:`fuse`)."""
    moved = [transform(m, geometry.relative_affine_torch(t.affine, s_view.affine), t.flipped ^ s_view.flipped,
                       flip_indices) for m, t in zip(per_view, t_views)]
    return moved[0] if len(moved) == 1 else fuse(moved[0], moved[1], confidence_tau)


def in_view(m: Moments, input_size: tuple[int, int]) -> torch.Tensor:
    """(B, K) float: 1 where the mean lies inside a crop of ``input_size`` (w, h) px."""
    w, h = input_size
    x, y = m.mean.unbind(-1)
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).float()


def _simcc_label(mean: torch.Tensor, var: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K) bins -> (B, K, n): softmax over bins 0..n-1 of beta times a peak-1 Gaussian (SimCC's label, softmax-ed
    as its loss does)."""
    idx = torch.arange(n, device=mean.device, dtype=torch.float32)
    gauss = torch.exp(-(idx - mean[..., None]).square() / (2 * var[..., None]))
    return torch.softmax(SIMCC_BETA * gauss, dim=-1)


def render(m: Moments, model) -> torch.Tensor:
    """Moments in ``model``'s input px -> its target probabilities, in the family of its own supervised targets, each
    axis' variance at least its label sigma squared (in its bins / heatmap px):

    * SimCC (B, K, Wx + Wy): per axis ``softmax(beta * exp(-(b - mean)^2 / (2 var)))`` over the bins b -- RTMPose's
      supervised target (KLDiscretLoss on softmax-ed Gaussian labels) moved to the teacher's mean and, where the
      teacher is less sure than the label, widened;
    * a heatmap model (B, K, h, w): a normalised 2-D Gaussian (full covariance) over the map's pixels.
    """
    codec = model.codec
    mean, cov = m.mean.float(), m.cov.float()
    if is_simcc(model):
        r, (wx, wy) = codec.simcc_split_ratio, codec.simcc_size
        sx, sy = codec.sigma
        vx = (cov[..., 0, 0] * r * r).clamp_min(sx * sx)
        vy = (cov[..., 1, 1] * r * r).clamp_min(sy * sy)
        return torch.cat([_simcc_label(mean[..., 0] * r, vx, wx), _simcc_label(mean[..., 1] * r, vy, wy)], -1)
    scale = codec.heatmap_scale.to(mean.device).float()
    w, h = codec.heatmap_size
    mu = mean * scale
    c = cov * (scale[:, None] * scale[None, :])
    floor = torch.clamp_min(float(codec.sigma) ** 2 - torch.diagonal(c, dim1=-2, dim2=-1), 0.0)
    c = c + torch.diag_embed(floor)
    inv = torch.linalg.inv(c)
    xs = torch.arange(w, device=mean.device, dtype=torch.float32) - mu[..., 0, None]  # (B, K, w)
    ys = torch.arange(h, device=mean.device, dtype=torch.float32) - mu[..., 1, None]  # (B, K, h)
    q = (inv[..., 0, 0, None, None] * xs[..., None, :].square() + inv[..., 1, 1, None, None] * ys[..., :, None].square()
         + 2 * inv[..., 0, 1, None, None] * xs[..., None, :] * ys[..., :, None])
    return torch.softmax(-0.5 * q.flatten(2), dim=-1).view(*mean.shape[:2], h, w)


def distribution_loss(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, model, kind: str = "kl",
                      tau: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's raw output against target probabilities (:func:`render`'s layout) -> (loss, logs):
    :func:`sagepose.ssl.losses.consistency_loss` (``kind`` kl / js / mse, joints weighted by ``weights`` (B, K)) on
    the heatmap, or on each SimCC axis as a 1-row map of ``softmax(beta * logits / tau)``, the two axes summed.

    SimCC's is put on the scale of the supervised loss it joins (:func:`sagepose.train.losses.simcc_kl`, MMPose's
    KLDiscretLoss: a joint's divergence averaged over its bins, summed over the batch): each axis' mean over joints
    times B / bins. A heatmap model's supervised losses are means over joints like this one, so ``ssl.lambda_u`` and
    ``distill.weight`` weigh the unlabeled term alike for both kinds."""
    if not is_simcc(model):
        kind_map = "logits" if model.heatmap_output == "softmax" else "heatmap"
        return consistency_loss(out, target, weights, kind=kind, tau=tau, map_kind=kind_map)
    wx = model.codec.simcc_size[0]
    loss, logs = 0.0, {}
    for o, t in zip(out.tensor_split([wx], -1), target.tensor_split([wx], -1)):
        loss_a, logs = consistency_loss(o[:, :, None], t[:, :, None], weights, kind=kind, tau=tau / SIMCC_BETA,
                                        map_kind="logits")
        loss = loss + loss_a * (out.shape[0] / o.shape[-1])
    return loss, {"loss": loss.detach(), "kept": logs["kept"]}


def simcc_coords(out: torch.Tensor, model, tau: float = 1.0) -> torch.Tensor:
    """A SimCC student's raw output -> (B, K, 2) expected coordinates in input px, differentiable (each axis' whole
    ``softmax(beta * logits / tau)``, no window: the priors' and the temporal term's coordinates)."""
    axes = [torch.softmax(a.float() * (SIMCC_BETA / tau), -1) for a in model.codec.split(out)]
    return torch.stack([_axis_moments(p)[0] for p in axes], -1) / model.codec.simcc_split_ratio
