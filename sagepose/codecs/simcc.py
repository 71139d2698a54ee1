"""SimCC: keypoints as two 1-D classifications, one over x and one over y (Li et al. 2022; RTMPose's codec).

Each input-crop axis is cut into ``split_ratio`` bins per pixel: ``Wx = w * split_ratio`` bins for x and
``Wy = h * split_ratio`` for y. A model predicts one logit vector per axis and keypoint; sagepose carries the two
side by side in one tensor, **x then y along the last axis**: ``(B, K, Wx + Wy)`` -- the RTMCC head's output, the
codec's targets and what the estimator flips and averages in place of heatmaps.

encode: keypoints (B, K, 2) input px, visible (B, K) -> labels (B, K, Wx + Wy) float32, weights (B, K).
decode: logits (B, K, Wx + Wy) -> keypoints (B, K, 2) input px, scores (B, K).

The numbers are MMPose 1.3.2's ``SimCCLabel`` (which runs one instance at a time in numpy), quirks included:
the bin of a keypoint is ``round(x * split_ratio)`` (half to even), so a bin centre sits at ``bin / split_ratio``
input px; the score is the smaller of the two axes' maximum logits (no softmax), and a keypoint whose score is
<= 0 decodes to bin -1 on both axes (-1 / split_ratio px).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from sagepose.codecs.decode import finite_or_zero


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.asarray(x)), True


def simcc_maximum(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, K, Wx), y (B, K, Wy) -> bins (B, K, 2) float32 (x, y) of each axis' first maximum, values (B, K): the
    smaller of the two maxima; where that is <= 0 both bins are -1 (MMPose's ``get_simcc_maximum``)."""
    vx, ix = x.max(dim=-1)
    vy, iy = y.max(dim=-1)
    vals = torch.where(vx > vy, vy, vx)
    locs = torch.stack([ix, iy], dim=-1).float()
    return torch.where((vals <= 0)[..., None], torch.full_like(locs, -1), locs), vals


def blur_1d(vectors: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(..., W) -> each vector convolved with OpenCV's ``getGaussianKernel(kernel_size, 0)``, zero outside, then
    scaled back to its own peak (MMPose's ``gaussian_blur1d``, as one banded matrix product)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {kernel_size}")
    taps = torch.from_numpy(cv2.getGaussianKernel(kernel_size, 0, cv2.CV_32F).ravel()).to(vectors)
    i = torch.arange(vectors.shape[-1], device=vectors.device)
    tap = i[:, None] - i[None, :] + kernel_size // 2
    band = torch.where((tap >= 0) & (tap < kernel_size), taps[tap.clamp(0, kernel_size - 1)], taps.new_zeros(()))
    blurred = vectors @ band
    peak = blurred.amax(-1, keepdim=True)  # 0 only for an all-zero vector (MMPose divides by it: NaN), kept 0 here
    return blurred * (vectors.amax(-1, keepdim=True) / torch.where(peak == 0, torch.ones_like(peak), peak))


def refine_dark_1d(bins: torch.Tensor, vectors: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """bins (B, K) float, vectors (B, K, W) -> bins moved by one Newton step on the blurred log-vector (DARK in
    1-D, MMPose's ``refine_simcc_dark``: log clipped to [1e-3, 50], edge-padded by 2, a bin of -1 reads bin 0)."""
    b, k, w = vectors.shape
    logs = blur_1d(vectors.float(), kernel_size).clamp(1e-3, 50.0).log()
    logs = F.pad(logs.reshape(b * k, 1, w), (2, 2), mode="replicate").view(b, k, w + 4)
    at = (bins + 2.5).long().clamp(0, w + 3)[..., None]  # parity: truncation, as numpy's astype(int64)
    sample = lambda offset: logs.gather(-1, (at + offset).clamp(0, w + 3))[..., 0]
    dx = 0.5 * (sample(1) - sample(-1))
    dxx = 1e-9 + 0.25 * (sample(2) - 2 * sample(0) + sample(-2))
    return bins - dx / dxx


@dataclass(frozen=True)
class SimCCLabel:
    """SimCC labels with MMPose's ``SimCCLabel`` arguments (``input_size`` (w, h), ``sigma`` a number or (x, y)).

    ``smoothing_type="gaussian"``: each axis' label a Gaussian of ``sigma`` bins about the keypoint's bin (divided
    by ``sigma * sqrt(2 pi)`` where ``normalize``); ``"standard"``: one-hot, ``label_smooth_weight`` spread over the
    other bins. ``use_dark``: the decoded bins refined by a 1-D DARK step. ``decode_visibility`` /
    ``decode_beta``: :meth:`visibility`'s sharpening (MMPose returns it next to the scores; sagepose asks for it).
    """

    input_size: tuple[int, int] = (192, 256)
    sigma: float | tuple[float, float] = 6.0
    simcc_split_ratio: float = 2.0
    smoothing_type: str = "gaussian"
    label_smooth_weight: float = 0.0
    normalize: bool = True
    use_dark: bool = False
    decode_visibility: bool = False
    decode_beta: float = 150.0

    udp: ClassVar[bool] = False  # RTMPose crops with MMPose's plain TopdownAffine
    shift_heatmap_default: ClassVar[bool] = False  # no heatmap to shift: flip_back mirrors the x bins only

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        sigma = (self.sigma, self.sigma) if isinstance(self.sigma, (int, float)) else tuple(self.sigma)
        object.__setattr__(self, "sigma", tuple(float(s) for s in sigma))
        if len(self.sigma) != 2:
            raise ValueError(f"SimCCLabel: sigma is a number or (x, y), got {self.sigma}")
        if self.smoothing_type not in ("gaussian", "standard"):
            raise ValueError(f"SimCCLabel: smoothing_type must be 'gaussian' or 'standard', got "
                             f"{self.smoothing_type!r}")
        if self.smoothing_type == "gaussian" and self.label_smooth_weight > 0:
            raise ValueError("SimCCLabel: label_smooth_weight is for smoothing_type='standard' only")
        if not 0.0 <= self.label_smooth_weight <= 1.0:
            raise ValueError(f"SimCCLabel: label_smooth_weight must be in [0, 1], got {self.label_smooth_weight}")

    @property
    def simcc_size(self) -> tuple[int, int]:
        """(Wx, Wy): the bins of each axis."""
        w, h = self.input_size
        return round(w * self.simcc_split_ratio), round(h * self.simcc_split_ratio)

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, Wx + Wy) -> x (B, K, Wx), y (B, K, Wy)."""
        wx, wy = self.simcc_size
        if logits.ndim != 3 or logits.shape[-1] != wx + wy:
            raise ValueError(f"SimCCLabel: expected SimCC logits (B, K, {wx} + {wy}), got {tuple(logits.shape)}")
        return logits[..., :wx], logits[..., wx:]

    def encode(self, keypoints, visible=None):
        """keypoints (B, K, 2) input px, visible (B, K) -> labels (B, K, Wx + Wy) float32, weights (B, K) float32:
        a keypoint's weight is its visibility, 0 where it is visible but its label would be off both ends."""
        kp, to_numpy = _as_tensor(keypoints)
        if kp.ndim != 3 or kp.shape[-1] != 2:
            raise ValueError(f"SimCCLabel.encode: expected keypoints (B, K, 2), got {tuple(kp.shape)}")
        vis = torch.ones(kp.shape[:2]) if visible is None else _as_tensor(visible)[0].float()
        vis = vis.to(kp.device)
        size = torch.tensor(self.simcc_size, device=kp.device)
        mu = torch.round(kp * self.simcc_split_ratio).double()  # in the keypoints' dtype, half to even: np.around
        shown = vis >= 0.5
        if self.smoothing_type == "gaussian":
            radius = 3 * torch.tensor(self.sigma, dtype=torch.float64, device=kp.device)
            off = ((mu - radius >= size) | (mu + radius + 1 < 0)).any(-1)
        else:
            off = ((mu >= size) | (mu < 0)).any(-1)
        weights = torch.where(shown & off, torch.zeros_like(vis), vis)
        keep = (shown & ~off)[..., None]
        axes = []
        for a in range(2):
            bins = torch.arange(self.simcc_size[a], dtype=torch.float64, device=kp.device)
            if self.smoothing_type == "gaussian":  # float64 Gaussians stored in float32, as MMPose
                label = torch.exp(-(bins - mu[..., a, None]) ** 2 / (2 * self.sigma[a] ** 2)).float()
                if self.normalize:
                    label = (label.double() / (self.sigma[a] * math.sqrt(2 * math.pi))).float()
            else:
                rest = self.label_smooth_weight / (self.simcc_size[a] - 1) if self.label_smooth_weight > 0 else 0.0
                label = torch.where(bins == mu[..., a, None], 1.0 - self.label_smooth_weight, rest).float()
            axes.append(torch.where(keep, label, torch.zeros_like(label)))
        labels = torch.cat(axes, dim=-1)
        return (labels.numpy(), weights.numpy()) if to_numpy else (labels, weights)

    def decode(self, logits):
        """logits (B, K, Wx + Wy) -> keypoints (B, K, 2) input px (each axis' argmax bin / split ratio, DARK-refined
        where ``use_dark``), scores (B, K) = the smaller of the two axes' maximum logits. NaN and +-inf logits count
        as 0, as in the heatmap decodes (a diverged network: finite keypoints, score 0 where no logit is finite)."""
        lg, to_numpy = _as_tensor(logits)
        x, y = self.split(finite_or_zero(lg.float()))
        locs, scores = simcc_maximum(x, y)
        if self.use_dark:  # MMPose's blur sizes from sigma (its DARK targets' rule)
            sizes = [int((s * 20 - 7) // 3) for s in self.sigma]
            sizes = [k - (k % 2 == 0) for k in sizes]
            locs = torch.stack([refine_dark_1d(locs[..., 0], x, sizes[0]),
                                refine_dark_1d(locs[..., 1], y, sizes[1])], dim=-1)
        keypoints = locs / self.simcc_split_ratio
        return (keypoints.numpy(), scores.numpy()) if to_numpy else (keypoints, scores)

    def visibility(self, logits):
        """logits (B, K, Wx + Wy) -> (B, K): the smaller of the two axes' softmax maxima of the logits sharpened by
        ``decode_beta * sigma`` (MMPose's ``decode_visibility``)."""
        lg, to_numpy = _as_tensor(logits)
        x, y = self.split(lg.float())
        px = (x.double() * (self.decode_beta * self.sigma[0])).softmax(-1).amax(-1)
        py = (y.double() * (self.decode_beta * self.sigma[1])).softmax(-1).amax(-1)
        vis = torch.minimum(px, py).float()
        return vis.numpy() if to_numpy else vis

    def flip_back(self, logits, flip_indices: Sequence[int], shift_heatmap: bool = False):
        """logits (B, K, Wx + Wy) of the mirrored crops -> aligned with the plain crops': left / right keypoints
        swapped, the x bins reversed, the y bins as they are (MMPose's ``flip_vectors``; ``shift_heatmap`` is
        a heatmap notion and must be False)."""
        if shift_heatmap:
            raise ValueError("SimCCLabel.flip_back: shift_heatmap applies to heatmaps, not SimCC logits")
        lg, to_numpy = _as_tensor(logits)
        if len(flip_indices) != lg.shape[1]:
            raise ValueError(f"SimCCLabel.flip_back: {len(flip_indices)} flip indices for {lg.shape[1]} keypoints")
        x, y = self.split(lg[:, list(flip_indices)])
        out = torch.cat([x.flip(-1), y], dim=-1)
        return out.numpy() if to_numpy else out
