"""Fusion heatmap head: heatmap, sub-pixel offset and log-variance maps from one shared trunk.

The head's decoder is the plain :class:`~sagepose.models.heads.HeatmapHead` ending in a 3x3 conv to
``trunk_channels`` (+ norm + act) instead of one map per keypoint; three convs on that shared trunk give

* ``heatmaps`` (B, K, h, w) -- regressed Gaussians, as a plain head's;
* ``offsets`` (B, K, 2, h, w) -- the quantisation correction in heatmap pixels: what the heatmap alone
  cannot say about where the keypoint is (MSRA targets sit on the rounded pixel; the offset holds the rest);
* ``log_var`` (B, K, h, w) -- the log of the expected squared error per axis, in heatmap pixels^2.

``forward`` returns them stacked in one tensor (B, 4K, h, w) -- heatmaps first, then (x, y) offsets per
keypoint, then log-variances -- so the estimator, flip test, export and training see one tensor as for
any head. :meth:`FusionHead.decode` reads it: argmax, a soft-argmax in a small window, one Newton step
on the log-heatmap from there (DARK's local Gaussian model), then the predicted offset. The codec's pieces
are reused: its argmax, blur, flip and its map between heatmap and input pixels. Its DARK step is not: that
one starts at the integer argmax, this one at the sub-pixel soft-argmax, with bilinearly sampled derivatives.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sagepose.codecs import flip_heatmaps
from sagepose.codecs.decode import bounded_locations, finite_or_zero, gaussian_blur, heatmap_argmax
from sagepose.models.heads import HeatmapHead, activation, norm_layer

LOG_EPS = 1e-10  # heatmap floor before the log in the Newton step
# The offset's bound, heatmap px per axis: its target is what the heatmap decode cannot say (the quantisation
# residual, within half a pixel for MSRA's rounded centres, ~0 for UDP's), so a trained head stays well inside
# it; an untrained or diverged one cannot push the keypoint farther than this.
MAX_OFFSET = 1.0


def split_outputs(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 4K, h, w) -> heatmaps (B, K, h, w), offsets (B, K, 2, h, w), log_var (B, K, h, w)."""
    b, c, h, w = outputs.shape
    if c % 4:
        raise ValueError(f"fusion outputs need 4 channels per keypoint, got {c}")
    k = c // 4
    return outputs[:, :k], outputs[:, k:3 * k].reshape(b, k, 2, h, w), outputs[:, 3 * k:]


def join_outputs(heatmaps: torch.Tensor, offsets: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`split_outputs`."""
    b, k, h, w = heatmaps.shape
    return torch.cat([heatmaps, offsets.reshape(b, 2 * k, h, w), log_var], dim=1)


# ----------------------------------------------------------------------------- coordinates


def to_heatmap_coords(keypoints: torch.Tensor, codec) -> torch.Tensor:
    """keypoints (B, K, 2) in input pixels -> float32 heatmap pixels, where ``codec.encode`` centres its Gaussians."""
    return codec.to_heatmap(keypoints.float())


def to_input_pixels(locs: torch.Tensor, std: torch.Tensor, codec) -> tuple[torch.Tensor, torch.Tensor]:
    """locations (B, K, 2), std (B, K) in heatmap pixels -> input pixels, by ``codec``'s decode map (a scaling
    per axis; the std scaled by its mean)."""
    return codec.to_input(locs), std * codec.to_input(std.new_ones(2)).mean()


# ----------------------------------------------------------------------------- decode


def _gather(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """maps (B, K, C, H, W), integer pixel indices x, y (B, K, ...) clamped into the map -> (B, K, C, ...)."""
    b, k, c, h, w = maps.shape
    idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).reshape(b, k, 1, -1).expand(b, k, c, -1)
    return maps.reshape(b, k, c, h * w).gather(-1, idx).reshape(b, k, c, *x.shape[2:])


def sample_bilinear(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """maps (B, K, C, H, W), points (B, K, 2) in pixels (x, y) -> (B, K, C), bilinear, edges clamped."""
    h, w = maps.shape[-2:]
    x = points[..., 0].clamp(0, w - 1)
    y = points[..., 1].clamp(0, h - 1)
    x0, y0 = x.floor().clamp(max=w - 2).long(), y.floor().clamp(max=h - 2).long()
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    corner = lambda dx, dy: _gather(maps, (x0 + dx)[..., None], (y0 + dy)[..., None])[..., 0]
    return ((1 - fy) * ((1 - fx) * corner(0, 0) + fx * corner(1, 0))
            + fy * ((1 - fx) * corner(0, 1) + fx * corner(1, 1)))


def soft_argmax_window(heatmaps: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """heatmaps (B, K, H, W) -> argmax (B, K, 2) pixel, max (B, K), soft-argmax (B, K, 2) in heatmap pixels.

    The soft-argmax is the centroid of the positive heatmap values in the (2 radius + 1)^2 window around the
    argmax (pixels outside the map left out); a window with no positive value keeps the argmax.
    """
    b, k, h, w = heatmaps.shape
    peak, scores = heatmap_argmax(heatmaps)
    d = torch.arange(-radius, radius + 1, device=heatmaps.device)
    xs = (peak[..., 0, None, None] + d.view(1, 1, 1, -1)).expand(b, k, len(d), len(d))
    ys = (peak[..., 1, None, None] + d.view(1, 1, -1, 1)).expand(b, k, len(d), len(d))
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    v = _gather(heatmaps[:, :, None], xs, ys)[:, :, 0].float().clamp_min(0) * inside
    mass = v.sum((-2, -1))
    centroid = torch.stack([(v * xs).sum((-2, -1)), (v * ys).sum((-2, -1))], dim=-1) / mass.clamp_min(1e-12)[..., None]
    soft = torch.where((mass > 0)[..., None], centroid, peak.float())
    return peak, scores, soft


def log_derivatives(heatmaps: torch.Tensor) -> torch.Tensor:
    """heatmaps (B, K, H, W) -> (B, K, 5, H, W): d/dx, d/dy, d2/dx2, d2/dy2, d2/dxdy of log(heatmap), by
    central differences (step 1) with edge replication -- exact where log(heatmap) is a quadratic (a Gaussian)."""
    lg = heatmaps.float().clamp_min(LOG_EPS).log()
    p = torch.nn.functional.pad(lg, (1, 1, 1, 1), mode="replicate")
    c, left, right = p[..., 1:-1, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]
    up, down = p[..., :-2, 1:-1], p[..., 2:, 1:-1]
    dxy = (p[..., 2:, 2:] - p[..., :-2, 2:] - p[..., 2:, :-2] + p[..., :-2, :-2]) / 4
    return torch.stack([(right - left) / 2, (down - up) / 2, right - 2 * c + left, down - 2 * c + up, dxy], dim=2)


def refine_gaussian(heatmaps: torch.Tensor, start: torch.Tensor, max_step: float = 1.0,
                    blur_kernel_size: int = 0) -> torch.Tensor:
    """heatmaps (B, K, H, W), start (B, K, 2) -> start + one Newton step on log(heatmap) (DARK's local Gaussian).

    Gradient and Hessian are sampled bilinearly at ``start``, on the map blurred first when ``blur_kernel_size``
    (DARK's modulation, for noisy predictions). Where the local model is no peak (Hessian not negative
    definite) or the step exceeds ``max_step`` pixels on an axis, ``start`` is kept.
    """
    if blur_kernel_size:
        heatmaps = gaussian_blur(heatmaps.float(), blur_kernel_size)
    gx, gy, hxx, hyy, hxy = sample_bilinear(log_derivatives(heatmaps), start).unbind(-1)
    det = hxx * hyy - hxy * hxy
    safe = torch.where(det > 0, det, torch.ones_like(det))
    step = -torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=-1) / safe[..., None]
    ok = (hxx < 0) & (det > 0) & (step.abs() <= max_step).all(-1)
    return torch.where(ok[..., None], start + step, start)


def decode_heatmaps(heatmaps: torch.Tensor, radius: int = 2,
                    blur_kernel_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """heatmaps (B, K, H, W) -> locations (B, K, 2) in heatmap pixels, scores (B, K): soft-argmax + Newton step.
    Non-finite heatmap values count as 0 (the codec's rule): the location stays within ``radius`` + 1 px of
    the argmax."""
    _, scores, soft = soft_argmax_window(finite_or_zero(heatmaps), radius)
    return refine_gaussian(heatmaps, soft, blur_kernel_size=blur_kernel_size), scores


def fusion_decode(outputs: torch.Tensor, radius: int = 2,
                  blur_kernel_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fusion outputs (B, 4K, H, W) -> locations (B, K, 2) and std (B, K) in heatmap pixels, scores (B, K).

    The location is :func:`decode_heatmaps`'s plus the offset map read (bilinearly) there, at most
    :data:`MAX_OFFSET` per axis, and at most one pixel outside the map; the std per axis is exp(log_var / 2)
    read at the same point; the score is the heatmap maximum. Non-finite outputs count as 0.
    """
    heatmaps, offsets, log_var = split_outputs(finite_or_zero(outputs.float()))
    locs, scores = decode_heatmaps(heatmaps, radius, blur_kernel_size)
    maps = torch.cat([offsets, log_var[:, :, None]], dim=2)
    sampled = sample_bilinear(maps, locs)
    w, h = heatmaps.shape[-1], heatmaps.shape[-2]
    locs = bounded_locations(locs + sampled[..., :2].clamp(-MAX_OFFSET, MAX_OFFSET), (w, h))
    return locs, scores, (0.5 * sampled[..., 2]).exp()


# ----------------------------------------------------------------------------- head


class FusionHead(nn.Module):
    """(B, in_channels, h, w) -> (B, 4 * num_keypoints, h * s, w * s): heatmaps, offsets (x, y), log-variances.

    The upsampling arguments are :class:`HeatmapHead`'s (the same decoder runs first); ``final_kernel_size``
    is the heatmap branch's kernel, the offset and log-variance branches are 1x1. ``trunk_channels`` defaults
    to half the decoder's last width, at least 32: the 3x3 trunk runs at full heatmap resolution, and on a small
    backbone (vit-tiny) a full-width one would cost 60 % more than the whole plain model. ``radius`` (the
    soft-argmax window's half-width) and ``blur_kernel_size`` (DARK's / MMPose's 11 by default; 0: no blur
    before the Newton step) are :meth:`decode`'s.
    """

    def __init__(self, in_channels: int, num_keypoints: int, deconv_channels: Sequence[int] = (256, 256),
                 conv_channels: Sequence[int] = (), conv_kernel_size: int = 1, final_kernel_size: int = 1,
                 norm: str = "bn", act: str = "relu", feature_upsample: int = 1, trunk_channels: int | None = None,
                 radius: int = 2, blur_kernel_size: int = 11):
        super().__init__()
        widths = (*deconv_channels, *conv_channels)
        trunk = trunk_channels or max((widths[-1] if widths else in_channels) // 2, 32)
        # the plain decoder whose final conv is the shared 3x3 trunk conv (followed by its norm and activation)
        self.decoder = HeatmapHead(in_channels, trunk, deconv_channels, conv_channels, conv_kernel_size,
                                   final_kernel_size=3, norm=norm, act=act, feature_upsample=feature_upsample)
        self.trunk_norm, self.trunk_act = norm_layer(norm, trunk), activation(act)
        self.heatmap = nn.Conv2d(trunk, num_keypoints, final_kernel_size, padding=(final_kernel_size - 1) // 2)
        self.offset = nn.Conv2d(trunk, 2 * num_keypoints, 1)
        self.log_var = nn.Conv2d(trunk, num_keypoints, 1)
        self.num_keypoints, self.radius, self.blur_kernel_size = num_keypoints, radius, blur_kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk_act(self.trunk_norm(self.decoder(x)))
        return torch.cat([self.heatmap(f), self.offset(f), self.log_var(f)], dim=1)

    def flip_back(self, outputs: torch.Tensor, flip_indices: Sequence[int], shift: bool) -> torch.Tensor:
        """Outputs of the mirrored input (B, 4K, h, w) -> aligned with the plain input's: every map mirrored,
        left / right keypoints swapped (MMPose's heatmap flip, ``shift`` moving maps right one pixel), and
        the x offsets negated."""
        heatmaps, offsets, log_var = split_outputs(outputs)
        b, k, h, w = heatmaps.shape
        flip = lambda maps: flip_heatmaps(maps, flip_indices, shift)
        sign = offsets.new_tensor([-1.0, 1.0]).view(1, 1, 2, 1, 1)
        offsets = flip(offsets.reshape(b, k, 2 * h, w)).reshape(b, k, 2, h, w) * sign  # x and y maps in one call
        return join_outputs(flip(heatmaps), offsets, flip(log_var))

    def decode(self, outputs: torch.Tensor, codec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4K, h, w) -> keypoints (B, K, 2) in input pixels (``codec``'s heatmap-to-input map), scores (B, K)
        = heatmap maxima, std (B, K) in input pixels (the mean of the x and y scales)."""
        locs, scores, std = fusion_decode(outputs, self.radius, self.blur_kernel_size)
        keypoints, std = to_input_pixels(locs, std, codec)
        return keypoints, scores, std
