"""Heatmap codecs: MSRA Gaussians (optionally DARK), UDP Gaussians, and flip-test fusion.

Every function works on whole batches in torch: ``keypoints (B, K, 2)`` in input-crop
pixels <-> ``heatmaps (B, K, H, W)``. The numbers equal MMPose 1.3.2's codecs (which
run one instance at a time in numpy), quirks included; each kept quirk is marked
"parity". Sizes are ``(w, h)`` as in MMPose configs.

The default (``decode_impl="batched"``) decode is bounded where MMPose's is not: the DARK / UDP Newton
step is taken only where the local model has a peak, and at most :data:`NEWTON_TRUST_RADIUS` (one) heatmap px
per axis; non-finite heatmap values count as 0; every keypoint is finite and at most one heatmap pixel
outside the map (:func:`bounded_locations`). On a peaked map (any trained model's confident joints) it
equals MMPose's; on a flat, noisy or saddle-shaped map, where the sub-pixel location is ill-posed, it
stays near the argmax instead of following a near-singular Hessian off the crop.
``decode_impl="mmpose"`` (:mod:`sagepose.codecs.reference`) keeps MMPose's unbounded arithmetic.

References: Xiao et al. 2018 (MSRA heatmaps), Zhang et al. 2020 (DARK), Huang et al.
2020 (UDP).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import torch

from sagepose.codecs import reference


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    """A tensor view of ``x`` and whether it came in as numpy (to hand numpy back)."""
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.asarray(x)), True


def _float(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; everything else is computed in float32."""
    return x if x.dtype == torch.float64 else x.float()


def _pixel_grid(heatmap_size: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column (1, 1, 1, W) and row (1, 1, H, 1) pixel indices in ``like``'s dtype and device."""
    w, h = heatmap_size
    xs = torch.arange(w, dtype=like.dtype, device=like.device).view(1, 1, 1, w)
    ys = torch.arange(h, dtype=like.dtype, device=like.device).view(1, 1, h, 1)
    return xs, ys


# ----------------------------------------------------------------------------- encode


def window_gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor, heatmap_size: tuple[int, int],
                             sigma: float, subpixel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (B, K, 2) in heatmap pixels, visible (B, K) -> heatmaps (B, K, H, W), weights (B, K).

    A Gaussian of peak 1 cut to a ``(2 * 3 sigma + 1)``-wide window around the rounded
    keypoint. MSRA (``subpixel=False``) centres it on the rounded pixel; UDP
    (``subpixel=True``) on the exact keypoint. Keypoints with ``visible < 0.5`` get an
    all-zero map and keep ``visible`` as weight; those whose window misses the map get
    weight 0.
    """
    w, h = heatmap_size
    radius = 3 * sigma
    # parity: MMPose rounds with int(x + 0.5) and places the window with int(), both
    # truncating toward zero, so keypoints just left of / above the map still count
    # and fractional radii shift the window of keypoints near the top-left border.
    centre = torch.trunc(keypoints + 0.5)
    lo = torch.trunc(centre - radius)
    hi = torch.trunc(centre + radius + 1)
    labelled = visible >= 0.5
    missed = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
    drawn = labelled & ~missed
    weights = torch.where(labelled & missed, torch.zeros_like(visible), visible)

    # Offset of each pixel from the Gaussian's centre, measured inside its window
    # (whose centre cell is (2 * radius + 1) // 2, as in MMPose).
    mu = lo + (2 * radius + 1) // 2
    if subpixel:
        mu = mu + (keypoints - centre)
    xs, ys = _pixel_grid(heatmap_size, keypoints)
    dx = xs - mu[..., 0, None, None]
    dy = ys - mu[..., 1, None, None]
    inside = ((xs >= lo[..., 0, None, None]) & (xs < hi[..., 0, None, None])
              & (ys >= lo[..., 1, None, None]) & (ys < hi[..., 1, None, None]) & drawn[..., None, None])
    heatmaps = torch.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    return torch.where(inside, heatmaps, torch.zeros_like(heatmaps)), weights


def continuous_gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor,
                                 heatmap_size: tuple[int, int],
                                 sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints (B, K, 2) in heatmap pixels, visible (B, K) -> heatmaps (B, K, H, W), weights (B, K).

    DARK's unbiased target: an uncut Gaussian at the exact sub-pixel keypoint. Weights
    follow :func:`window_gaussian_heatmaps` (with an un-rounded window).
    """
    w, h = heatmap_size
    radius = 3 * sigma
    labelled = visible >= 0.5
    lo, hi = keypoints - radius, keypoints + radius + 1
    missed = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
    weights = torch.where(labelled & missed, torch.zeros_like(visible), visible)
    xs, ys = _pixel_grid(heatmap_size, keypoints)
    dx = xs - keypoints[..., 0, None, None]
    dy = ys - keypoints[..., 1, None, None]
    heatmaps = torch.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    drawn = (labelled & ~missed)[..., None, None]
    return torch.where(drawn, heatmaps, torch.zeros_like(heatmaps)), weights


# ----------------------------------------------------------------------------- decode


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """heatmaps (B, K, H, W) -> pixel (B, K, 2) int64 (x, y) of the first maximum in row-major order, values (B, K)."""
    w = heatmaps.shape[-1]
    vals, idx = heatmaps.flatten(-2).max(dim=-1)
    return torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1), vals


def get_heatmap_maximum(heatmaps):
    """heatmaps (B, K, H, W) -> locations (B, K, 2) as (x, y) heatmap pixels, values (B, K).

    The first maximum in row-major order (:func:`heatmap_argmax`); where the maximum is <= 0
    the location is (-1, -1), as MMPose marks it. Accepts torch tensors or numpy arrays.
    """
    hm, from_numpy = _as_tensor(heatmaps)
    locs, vals = heatmap_argmax(hm)
    locs = locs.to(_float(hm).dtype)
    locs = torch.where((vals <= 0)[..., None], torch.full_like(locs, -1), locs)
    return (locs.numpy(), vals.numpy()) if from_numpy else (locs, vals)


def refine_quarter_pixel(locs: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """locs (B, K, 2), heatmaps (B, K, H, W) -> locs moved 0.25 px toward the higher neighbour per axis."""
    b, k, h, w = heatmaps.shape
    x, y = locs[..., 0].long(), locs[..., 1].long()
    flat = heatmaps.reshape(b * k, h * w)
    at = (y * w + x).reshape(b * k, 1)
    sample = lambda offset: flat.gather(1, (at + offset).clamp(0, h * w - 1)).view(b, k)
    # parity: MMPose's bounds are 1 < x < W - 1 and 1 < y < H - 1 (column / row 1 is never refined).
    zero = torch.zeros_like(locs[..., 0])
    dx = torch.where((x > 1) & (x < w - 1) & (y > 0) & (y < h), sample(1) - sample(-1), zero)
    dy = torch.where((y > 1) & (y < h - 1) & (x > 0) & (x < w), sample(w) - sample(-w), zero)
    return locs + 0.25 * torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)


def gaussian_blur(heatmaps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """heatmaps (B, K, H, W) -> the same Gaussian-blurred, zero outside the map (DARK's modulation).

    The kernel is OpenCV's ``getGaussianKernel(kernel_size, 0)`` (sigma = 0.3 * ((ks - 1)
    / 2 - 1) + 0.8, fixed tables up to 7), as MMPose blurs with ``cv2.GaussianBlur``. The
    separable filter runs as two banded matrix products, which CPUs and GPUs do far
    faster than a single-channel convolution.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {kernel_size}")
    taps = torch.from_numpy(cv2.getGaussianKernel(kernel_size, 0, cv2.CV_32F).ravel())
    taps = taps.to(dtype=heatmaps.dtype, device=heatmaps.device)

    def band(n: int) -> torch.Tensor:  # (n, n): column i holds the taps centred on row i
        i = torch.arange(n, device=heatmaps.device)
        tap = i[:, None] - i[None, :] + kernel_size // 2
        inside = (tap >= 0) & (tap < kernel_size)
        return torch.where(inside, taps[tap.clamp(0, kernel_size - 1)], torch.zeros_like(taps[0]))

    h, w = heatmaps.shape[-2:]
    return band(h).T @ (heatmaps @ band(w))


def _modulation_scale(heatmaps: torch.Tensor, blurred: torch.Tensor) -> torch.Tensor:
    """(B, K): the factor that brings each blurred map back to its original peak, as DARK does."""
    return heatmaps.amax(dim=(-2, -1)) / blurred.amax(dim=(-2, -1))


# The Newton step's trust region, in heatmap px per axis. A peak sampled on pixels has its maximum within half a
# pixel of its argmax, so a well-posed sub-pixel step is at most ~0.5 px (MMPose's on any trained model's confident
# joints); a step past one pixel says the local quadratic at the argmax does not describe the map there (a flat,
# noisy or saddle-shaped map: a near-singular Hessian sends MMPose's keypoint thousands of px away). So no keypoint
# moves more than one heatmap pixel from its argmax. The cost, measured on MMPose's own decodes of the noisy-peak
# goldens (tests/test_codecs.py, sigma 2, heavy noise): 4 of 49 keypoints where MMPose steps 1.0-1.63 px are
# clamped to 1 px.
NEWTON_TRUST_RADIUS = 1.0


def negative_definite(hxx: torch.Tensor, hyy: torch.Tensor, hxy: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: the 2x2 Hessian [[hxx, hxy], [hxy, hyy]] is negative definite (det > 0 and trace < 0), so
    the second-order model of log(heatmap) has a maximum. False on a saddle or ridge (det <= 0), at a minimum
    (trace >= 0), on a flat map (det = 0) and wherever a value is not finite: there the maximum's sub-pixel
    location is ill-posed, and a Newton step goes nowhere meaningful."""
    return (hxx * hyy - hxy * hxy > 0) & (hxx < 0)  # det > 0 makes hxx and hyy share a sign


def newton_step(gx: torch.Tensor, gy: torch.Tensor, hxx: torch.Tensor, hyy: torch.Tensor, hxy: torch.Tensor,
                take: torch.Tensor, radius: float) -> torch.Tensor:
    """Gradient and Hessian of log(heatmap) at the argmax, each (B, K), where to step (B, K) bool -> step (B, K, 2).

    The Newton step -H^-1 g where ``take`` (and the Hessian is invertible and the step finite), each axis
    clamped to ``radius`` (:data:`NEWTON_TRUST_RADIUS`); zero elsewhere, so the argmax stays. Bit-equal to MMPose's
    step wherever that is taken and within the trust region.
    """
    det = hxx * hyy - hxy * hxy
    take = take & (det != 0)
    safe = torch.where(take, det, torch.ones_like(det))
    step = torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=-1) / -safe[..., None]
    step = step.clamp(-radius, radius)
    take = take[..., None] & torch.isfinite(step).all(-1, keepdim=True)
    return torch.where(take, step, torch.zeros_like(step))


def dark_derivatives(locs: torch.Tensor, heatmaps: torch.Tensor, blur_kernel_size: int) -> tuple[torch.Tensor, ...]:
    """locs (B, K, 2), heatmaps (B, K, H, W) -> gx, gy, hxx, hyy, hxy (B, K) of DARK's blurred log-heatmap, and
    where MMPose steps (B, K): more than 2 px inside the border (parity).

    Zhang et al. 2020: a second-order Taylor expansion of log(heatmap) at the argmax,
    with central differences of step 1 (gradient) and 2 (Hessian diagonal). The log is
    taken only at the 13 samples each step needs.
    """
    b, k, h, w = heatmaps.shape
    blurred = gaussian_blur(heatmaps, blur_kernel_size)
    scale = _modulation_scale(heatmaps, blurred).reshape(b * k, 1)
    x, y = locs[..., 0].long(), locs[..., 1].long()
    flat = blurred.reshape(b * k, h * w)
    at = (y * w + x).reshape(b * k, 1)

    def sample(ox: int, oy: int) -> torch.Tensor:
        value = flat.gather(1, (at + ox + oy * w).clamp(0, h * w - 1)) * scale
        return value.clamp_min(1e-10).log().view(b, k)

    centre = sample(0, 0)
    dx = 0.5 * (sample(1, 0) - sample(-1, 0))
    dy = 0.5 * (sample(0, 1) - sample(0, -1))
    dxx = 0.25 * (sample(2, 0) - 2 * centre + sample(-2, 0))
    dxy = 0.25 * (sample(1, 1) - sample(1, -1) - sample(-1, 1) + sample(-1, -1))
    dyy = 0.25 * (sample(0, 2) - 2 * centre + sample(0, -2))
    # parity: MMPose skips keypoints within 2 px of the border (and singular Hessians).
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    return dx, dy, dxx, dyy, dxy, inside


def refine_dark(locs: torch.Tensor, heatmaps: torch.Tensor, blur_kernel_size: int,
                radius: float = NEWTON_TRUST_RADIUS) -> torch.Tensor:
    """locs (B, K, 2), heatmaps (B, K, H, W) -> locs + DARK's Newton step on the blurred log-heatmap
    (:func:`dark_derivatives`), :func:`newton_step`'s: only toward a peak (a negative definite Hessian), at
    most ``radius`` px per axis."""
    dx, dy, dxx, dyy, dxy, inside = dark_derivatives(locs, heatmaps, blur_kernel_size)
    return locs + newton_step(dx, dy, dxx, dyy, dxy, inside & negative_definite(dxx, dyy, dxy), radius)


def udp_derivatives(locs: torch.Tensor, heatmaps: torch.Tensor, blur_kernel_size: int) -> tuple[torch.Tensor, ...]:
    """locs (B, K, 2), heatmaps (B, K, H, W) -> gx, gy, hxx, hyy, hxy (B, K) of UDP's blurred log-heatmap (log
    clipped to [1e-3, 50]; the Hessian's diagonal + float32 eps, as MMPose), and where to step even without a
    peak (B, K): an argmax on the map's edge.

    Huang et al. 2020. MMPose edge-pads the log-maps by one pixel, so every argmax has its 3x3 neighbourhood;
    here that padding is a clamp of the sampled coordinates. At an argmax on the edge the padding makes the
    outward axis's samples symmetric about the edge, so its model's vertex -- a maximum or a minimum alike --
    is the edge itself, half a pixel out (a keypoint at or past the crop's border): MMPose's answer, kept. A
    map with no positive value (argmax marked (-1, -1)) has no peak and keeps the mark (MMPose steps it with
    the previous channel's pixels, its K padded maps read as one flat array; ``decode_impl="mmpose"`` does).
    """
    b, k, h, w = heatmaps.shape
    blurred = gaussian_blur(heatmaps, blur_kernel_size)
    scale = _modulation_scale(heatmaps, blurred).reshape(b * k, 1)
    x, y = locs[..., 0].long(), locs[..., 1].long()
    flat = blurred.reshape(b * k, h * w)

    def sample(ox: int, oy: int) -> torch.Tensor:
        at = (y + oy).clamp(0, h - 1) * w + (x + ox).clamp(0, w - 1)
        value = flat.gather(1, at.reshape(b * k, 1)) * scale
        return value.clamp(1e-3, 50.0).log().view(b, k)

    i = sample(0, 0)
    ix1, ix1_ = sample(1, 0), sample(-1, 0)
    iy1, iy1_ = sample(0, 1), sample(0, -1)
    ix1y1, ix1_y1_ = sample(1, 1), sample(-1, -1)
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i + ix1_
    dyy = iy1 - 2 * i + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i + i - ix1_ - iy1_ + ix1_y1_)
    # MMPose regularises the Hessian with float32 eps on the diagonal (it adds it in float64).
    eps = torch.finfo(torch.float32).eps
    edge = ((x == 0) | (x == w - 1) | (y == 0) | (y == h - 1)) & (x >= 0)
    return dx, dy, dxx + eps, dyy + eps, dxy, edge


def refine_dark_udp(locs: torch.Tensor, heatmaps: torch.Tensor, blur_kernel_size: int,
                    radius: float = NEWTON_TRUST_RADIUS) -> torch.Tensor:
    """locs (B, K, 2), heatmaps (B, K, H, W) -> locs + UDP's DARK step (:func:`udp_derivatives`),
    :func:`newton_step`'s: toward a peak (a negative definite Hessian) or from the map's edge, at most
    ``radius`` px per axis; a map with no positive value keeps its (-1, -1) mark."""
    dx, dy, dxx, dyy, dxy, edge = udp_derivatives(locs, heatmaps, blur_kernel_size)
    take = (locs[..., 0] >= 0) & (negative_definite(dxx, dyy, dxy) | edge)
    return locs + newton_step(dx, dy, dxx, dyy, dxy, take, radius)


def step_within(gx: torch.Tensor, gy: torch.Tensor, hxx: torch.Tensor, hyy: torch.Tensor, hxy: torch.Tensor,
                radius: float) -> torch.Tensor:
    """(B, K) bool: the unclamped Newton step -H^-1 g is finite and at most ``radius`` px on each axis."""
    det = hxx * hyy - hxy * hxy
    step = torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=-1) / -det[..., None]
    return (step.abs() <= radius).all(-1)


def finite_or_zero(heatmaps: torch.Tensor) -> torch.Tensor:
    """heatmaps -> the same with NaN and +-inf set to 0 ("no evidence"): a map's finite values decide its
    argmax and score; a map with none decodes as an all-zero one (score 0, no location)."""
    return torch.where(torch.isfinite(heatmaps), heatmaps, torch.zeros_like(heatmaps))


def bounded_locations(locs: torch.Tensor, heatmap_size: tuple[int, int]) -> torch.Tensor:
    """locations (B, K, 2) in heatmap pixels -> clamped to [-1, W] x [-1, H]: at most one heatmap pixel outside
    the map (a keypoint just past the crop's edge, or MMPose's (-1, -1) for a map with no positive value)."""
    w, h = heatmap_size
    upper = torch.tensor([w, h], dtype=locs.dtype, device=locs.device)
    return torch.minimum(locs.clamp_min(-1.0), upper)


# ----------------------------------------------------------------------------- codecs


def _check_heatmaps(hm: torch.Tensor, heatmap_size: tuple[int, int], codec: str) -> None:
    if hm.ndim != 4 or tuple(hm.shape[-2:]) != (heatmap_size[1], heatmap_size[0]):
        raise ValueError(f"{codec}.decode: expected heatmaps (B, K, {heatmap_size[1]}, {heatmap_size[0]}), "
                         f"got {tuple(hm.shape)}")


def _encode_inputs(keypoints, visible, codec: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    kp, from_numpy = _as_tensor(keypoints)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"{codec}.encode: expected keypoints (B, K, 2), got {tuple(kp.shape)}")
    if visible is None:
        vis = torch.ones(kp.shape[:2], dtype=torch.float32, device=kp.device)
    else:
        vis = _as_tensor(visible)[0].to(device=kp.device, dtype=torch.float32)
        if vis.shape != kp.shape[:2]:
            raise ValueError(f"{codec}.encode: visible {tuple(vis.shape)} does not match keypoints "
                             f"{tuple(kp.shape)}")
    return _float(kp), vis, from_numpy


def _encode_outputs(heatmaps: torch.Tensor, weights: torch.Tensor, to_numpy: bool):
    heatmaps, weights = heatmaps.float(), weights.float()
    return (heatmaps.numpy(), weights.numpy()) if to_numpy else (heatmaps, weights)


def _check_decode_impl(impl: str, codec: str) -> None:
    if impl not in ("batched", "mmpose"):
        raise ValueError(f"{codec}: decode_impl must be 'batched' (torch, any device) or 'mmpose' (numpy + "
                         f"OpenCV with MMPose's exact float operations), got {impl!r}")


def _per_instance(refine, locs: torch.Tensor, heatmaps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Run a :mod:`sagepose.codecs.reference` refinement on each instance's float32 maps, on the CPU."""
    hm = heatmaps.detach().float().cpu().numpy()
    pos = locs.detach().float().cpu().numpy()
    out = np.stack([refine(pos[b], hm[b], kernel_size) for b in range(len(hm))]) if len(hm) else pos
    return torch.from_numpy(out).to(locs.device)


def _sizes(size: Sequence[int]) -> tuple[int, int]:
    w, h = (int(s) for s in size)
    return w, h


@dataclass(frozen=True)
class MSRAHeatmap:
    """Gaussian heatmaps of Xiao et al. 2018; ``unbiased=True`` switches to DARK encode + decode.

    encode: keypoints (B, K, 2) input pixels, visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K).
    decode: heatmaps (B, K, H, W) -> keypoints (B, K, 2) input pixels, scores (B, K).
    """

    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    unbiased: bool = False
    blur_kernel_size: int = 11
    decode_impl: str = "batched"  # or "mmpose": DARK with MMPose's exact float ops (sagepose.codecs.reference)

    udp: ClassVar[bool] = False
    shift_heatmap_default: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "input_size", _sizes(self.input_size))
        object.__setattr__(self, "heatmap_size", _sizes(self.heatmap_size))
        _check_decode_impl(self.decode_impl, "MSRAHeatmap")

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        # MMPose keeps input / heatmap as a float32 array.
        ratio = np.float32(np.array(self.input_size) / np.array(self.heatmap_size))
        return torch.from_numpy(ratio).to(dtype=like.dtype, device=like.device)

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints (..., 2) in input pixels -> heatmap pixels, as :meth:`encode` places them."""
        return keypoints / self._scale(keypoints)

    def to_input(self, locs: torch.Tensor) -> torch.Tensor:
        """locations (..., 2) in heatmap pixels -> input pixels, as :meth:`decode` maps them."""
        return locs * self._scale(locs)

    def encode(self, keypoints, visible=None):
        """keypoints (B, K, 2), visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K) float32."""
        kp, vis, to_numpy = _encode_inputs(keypoints, visible, "MSRAHeatmap")
        kp = self.to_heatmap(kp)
        if self.unbiased:
            heatmaps, weights = continuous_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma)
        else:
            heatmaps, weights = window_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma,
                                                         subpixel=False)
        return _encode_outputs(heatmaps, weights, to_numpy)

    def well_posed(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """heatmaps (B, K, H, W) -> (B, K) bool: where the sub-pixel location is well-posed, so the default decode
        equals MMPose's. DARK: MMPose's Newton step goes to a peak of the local model and stays inside the trust
        region (or MMPose takes none, within 2 px of the border); elsewhere -- a flat, noisy or saddle-shaped map
        -- the default decode keeps the argmax or clamps the step. The plain decode (argmax and quarter pixel) is
        well-posed everywhere."""
        hm = finite_or_zero(_float(_as_tensor(heatmaps)[0]))
        locs, _ = get_heatmap_maximum(hm)
        if not self.unbiased:
            return torch.ones(locs.shape[:2], dtype=torch.bool, device=locs.device)
        gx, gy, hxx, hyy, hxy, inside = dark_derivatives(locs, hm, self.blur_kernel_size)
        peak = negative_definite(hxx, hyy, hxy) & step_within(gx, gy, hxx, hyy, hxy, NEWTON_TRUST_RADIUS)
        return ~inside | peak

    def decode(self, heatmaps):
        """heatmaps (B, K, H, W) -> keypoints (B, K, 2) in input pixels, scores (B, K) = heatmap maxima."""
        hm, to_numpy = _as_tensor(heatmaps)
        _check_heatmaps(hm, self.heatmap_size, "MSRAHeatmap")
        exact = self.decode_impl == "mmpose"
        hm = _float(hm) if exact else finite_or_zero(_float(hm))
        locs, scores = get_heatmap_maximum(hm)
        if self.unbiased and exact:
            locs = _per_instance(reference.refine_dark_mmpose, locs, hm, self.blur_kernel_size)
        elif self.unbiased:
            locs = refine_dark(locs, hm, self.blur_kernel_size, NEWTON_TRUST_RADIUS)
            locs = bounded_locations(locs, self.heatmap_size)
        else:
            locs = refine_quarter_pixel(locs, hm)
        keypoints = self.to_input(locs)
        return (keypoints.numpy(), scores.numpy()) if to_numpy else (keypoints, scores)


@dataclass(frozen=True)
class UDPHeatmap:
    """Unbiased Data Processing heatmaps (Huang et al. 2020): pixel centres map with (size - 1).

    encode: keypoints (B, K, 2) input pixels, visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K).
    decode: heatmaps (B, K, H, W) -> keypoints (B, K, 2) input pixels, scores (B, K).
    ``decode_scale="mmpose"`` maps heatmap to input pixels with input / (hm - 1), as
    MMPose does -- kept as the default so published APs reproduce; ``"unbiased"`` uses
    (input - 1) / (hm - 1), the exact inverse of encode.
    """

    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    blur_kernel_size: int = 11
    decode_scale: str = "mmpose"
    decode_impl: str = "batched"  # or "mmpose": MMPose's exact float ops (sagepose.codecs.reference)

    udp: ClassVar[bool] = True
    shift_heatmap_default: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "input_size", _sizes(self.input_size))
        object.__setattr__(self, "heatmap_size", _sizes(self.heatmap_size))
        if self.decode_scale not in ("mmpose", "unbiased"):
            raise ValueError(f"UDPHeatmap: decode_scale must be 'mmpose' or 'unbiased', "
                             f"got {self.decode_scale!r}")
        _check_decode_impl(self.decode_impl, "UDPHeatmap")
        frac = (3 * self.sigma) % 1.0
        if 1e-6 < frac < 0.5 - 1e-6:
            warnings.warn(f"UDPHeatmap(sigma={self.sigma}): MMPose's UDP encoder, reproduced here, centres "
                          f"the Gaussian 1 heatmap px up-left of the keypoint when 3*sigma has a fractional "
                          f"part in (0, 0.5) (here {frac:.2f}); pick e.g. sigma 0.5, 1, 1.5, 2, 3", stacklevel=3)

    def _encode_scale(self, like: torch.Tensor) -> torch.Tensor:
        # MMPose keeps (input - 1) / (heatmap - 1) as a float32 array.
        ratio = np.float32((np.array(self.input_size) - 1) / (np.array(self.heatmap_size) - 1))
        return torch.from_numpy(ratio).to(dtype=like.dtype, device=like.device)

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints (..., 2) in input pixels -> heatmap pixels, as :meth:`encode` places them."""
        return keypoints / self._encode_scale(keypoints)

    def to_input(self, locs: torch.Tensor) -> torch.Tensor:
        """locations (..., 2) in heatmap pixels -> input pixels, as :meth:`decode` maps them (``decode_scale``)."""
        if self.decode_scale == "unbiased":
            return locs * self._encode_scale(locs)
        w, h = self.heatmap_size
        return locs / torch.tensor([w - 1, h - 1], dtype=locs.dtype, device=locs.device) \
            * torch.tensor(self.input_size, dtype=locs.dtype, device=locs.device)

    def encode(self, keypoints, visible=None):
        """keypoints (B, K, 2), visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K) float32."""
        kp, vis, to_numpy = _encode_inputs(keypoints, visible, "UDPHeatmap")
        kp = self.to_heatmap(kp)
        heatmaps, weights = window_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma, subpixel=True)
        return _encode_outputs(heatmaps, weights, to_numpy)

    def well_posed(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """heatmaps (B, K, H, W) -> (B, K) bool: where the sub-pixel location is well-posed, so the default decode
        equals MMPose's: the map has a positive value and MMPose's Newton step goes to a peak of the local model
        (or from the map's edge) and stays inside the trust region. Elsewhere -- a flat, noisy or saddle-shaped
        map -- the default decode keeps the argmax or clamps the step."""
        hm = finite_or_zero(_float(_as_tensor(heatmaps)[0]))
        locs, _ = get_heatmap_maximum(hm)
        gx, gy, hxx, hyy, hxy, edge = udp_derivatives(locs, hm, self.blur_kernel_size)
        within = step_within(gx, gy, hxx, hyy, hxy, NEWTON_TRUST_RADIUS)
        return (locs[..., 0] >= 0) & (negative_definite(hxx, hyy, hxy) | edge) & within

    def decode(self, heatmaps):
        """heatmaps (B, K, H, W) -> keypoints (B, K, 2) in input pixels, scores (B, K) = heatmap maxima."""
        hm, to_numpy = _as_tensor(heatmaps)
        _check_heatmaps(hm, self.heatmap_size, "UDPHeatmap")
        exact = self.decode_impl == "mmpose"
        hm = _float(hm) if exact else finite_or_zero(_float(hm))
        locs, scores = get_heatmap_maximum(hm)
        if exact:  # the step and the scaling in float64, as MMPose
            locs = _per_instance(reference.refine_dark_udp_mmpose, locs, hm, self.blur_kernel_size).double()
        else:
            locs = refine_dark_udp(locs, hm, self.blur_kernel_size, NEWTON_TRUST_RADIUS)
            locs = bounded_locations(locs, self.heatmap_size)
        keypoints = self.to_input(locs).to(hm.dtype)
        return (keypoints.numpy(), scores.numpy()) if to_numpy else (keypoints, scores)


def flip_heatmaps(heatmaps, flip_indices: Sequence[int], shift_heatmap: bool):
    """heatmaps (B, K, H, W) of the mirrored input -> (B, K, H, W) aligned with the plain input's heatmaps.

    Mirrors along W, swaps left / right channels, and with ``shift_heatmap`` moves the
    maps right by one pixel (column 0 kept), MMPose's ``flip_mode='heatmap'``; MSRA
    crops need the shift, UDP crops do not. The caller averages the result with the
    plain heatmaps.
    """
    hm, from_numpy = _as_tensor(heatmaps)
    if len(flip_indices) != hm.shape[1]:
        raise ValueError(f"flip_heatmaps: {len(flip_indices)} flip indices for {hm.shape[1]} channels")
    out = hm.flip(-1)[:, list(flip_indices)]
    if shift_heatmap:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out.numpy() if from_numpy else out
