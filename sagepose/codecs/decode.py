"""Heatmap decode steps (the decode side of :mod:`sagepose.codecs.heatmap`), batched torch on any device: the argmax,
MSRA's quarter-pixel shift, DARK's and UDP's Newton refinement on the blurred log-map, and the bounds.

The default (``decode_impl="batched"``) decode is bounded where MMPose's is not: the DARK / UDP Newton
step is taken only where the local model has a peak, and at most :data:`NEWTON_TRUST_RADIUS` (one) heatmap px
per axis; non-finite heatmap values count as 0; every keypoint is finite and at most one heatmap pixel
outside the map (:func:`bounded_locations`). On a peaked map (any trained model's confident joints) it
equals MMPose's; on a flat, noisy or saddle-shaped map, where the sub-pixel location is ill-posed, it
stays near the argmax instead of following a near-singular Hessian off the crop.
``decode_impl="mmpose"`` (:mod:`sagepose.codecs.reference`) keeps MMPose's unbounded arithmetic.

References: Zhang et al. 2020 (DARK), Huang et al. 2020 (UDP).
"""
from __future__ import annotations

import cv2
import torch


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """heatmaps (B, K, H, W) -> pixel (B, K, 2) int64 (x, y) of the first maximum in row-major order, values (B, K)."""
    w = heatmaps.shape[-1]
    vals, idx = heatmaps.flatten(-2).max(dim=-1)
    return torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1), vals


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
