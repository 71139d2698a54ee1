"""DARK and UDP-DARK refinement with MMPose 1.3.2's exact floating-point operations (numpy + OpenCV).

The batched torch decode in :mod:`sagepose.codecs.decode` equals MMPose's to ~1e-5 px wherever the
Newton step is well conditioned (every trained model's peaked heatmaps). On flat or noisy maps the
step divides by a near-singular Hessian, and MMPose's own output moves by up to ~0.1 px when its input
moves by one float32 ulp; there only the same operations in the same order and precision give the same
numbers. This module does that, one instance at a time as MMPose does:

* the blur is ``cv2.GaussianBlur`` of each map zero-padded by the kernel radius, rescaled to the map's
  original peak by a float32 factor;
* DARK: the log of the blurred map floored at 1e-10, float32 central differences at the argmax,
  ``np.linalg.inv`` of the float32 2x2 Hessian, skipped within 2 px of the border or when singular;
* UDP: the log clipped to [1e-3, 50], edge-padded by one pixel and indexed as one flat array (so an
  argmax of -1 reads the previous channel), the Hessian regularised by float32 eps in float64, the
  step applied in float64 and stored back in float32.

Select it with ``decode_impl="mmpose"`` on :class:`~sagepose.codecs.MSRAHeatmap` (``unbiased=True``)
or :class:`~sagepose.codecs.UDPHeatmap`. It is the reference for parity checks and for reproducing an
MMPose evaluation to the last digit, not the fast path: it runs on the CPU at about MMPose's speed.
"""
from __future__ import annotations

import cv2
import numpy as np


def blur_like_mmpose(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """(K, H, W) float32 -> a new array: each map Gaussian-blurred inside a zero border and scaled back
    to its own peak."""
    r = (kernel_size - 1) // 2
    k, h, w = heatmaps.shape
    out = np.empty_like(heatmaps)
    for c in range(k):
        canvas = np.zeros((h + 2 * r, w + 2 * r), np.float32)
        canvas[r:r + h, r:r + w] = heatmaps[c]
        out[c] = cv2.GaussianBlur(canvas, (kernel_size, kernel_size), 0)[r:r + h, r:r + w]
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero map gives NaN, as in MMPose
            out[c] *= heatmaps[c].max() / out[c].max()  # a float32 factor, as MMPose computes it
    return out


def refine_dark_mmpose(locs: np.ndarray, heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """locs (K, 2) float32 argmax positions, heatmaps (K, H, W) float32 -> refined locs (K, 2) float32."""
    _, h, w = heatmaps.shape
    logmap = blur_like_mmpose(heatmaps, kernel_size)
    np.log(np.maximum(logmap, np.float32(1e-10), out=logmap), out=logmap)
    out = locs.copy()
    for c, (x, y) in enumerate(locs.astype(int)):
        if not (1 < x < w - 2 and 1 < y < h - 2):
            continue
        m = logmap[c]
        centre = m[y, x]
        # float32 scalars throughout; python constants stay weak (NEP 50), as in MMPose
        gx = 0.5 * (m[y, x + 1] - m[y, x - 1])
        gy = 0.5 * (m[y + 1, x] - m[y - 1, x])
        hxx = 0.25 * (m[y, x + 2] - 2 * centre + m[y, x - 2])
        hxy = 0.25 * (m[y + 1, x + 1] - m[y - 1, x + 1] - m[y + 1, x - 1] + m[y - 1, x - 1])
        hyy = 0.25 * (m[y + 2, x] - 2 * centre + m[y - 2, x])
        if hxx * hyy - hxy**2 == 0:
            continue
        step = -np.linalg.inv(np.array([[hxx, hxy], [hxy, hyy]])) @ np.array([[gx], [gy]])
        out[c] += step[:, 0]
    return out


def refine_dark_udp_mmpose(locs: np.ndarray, heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """locs (K, 2) float32 argmax positions (-1 where the map has no positive value), heatmaps (K, H, W)
    float32 -> refined locs (K, 2) float32."""
    k, h, w = heatmaps.shape
    logmap = blur_like_mmpose(heatmaps, kernel_size)
    np.log(np.clip(logmap, 1e-3, 50.0, out=logmap), out=logmap)
    flat = np.pad(logmap, ((0, 0), (1, 1), (1, 1)), mode="edge").ravel()
    row = w + 2
    at = locs[:, 0] + 1 + (locs[:, 1] + 1) * row  # float32 positions in the padded maps ...
    at += row * (h + 2) * np.arange(k)  # ... of one flat array of K maps
    at = at.astype(int)[:, None]
    i, ix1, ix1_ = flat[at], flat[at + 1], flat[at - 1]
    iy1, iy1_ = flat[at + row], flat[at - row]
    ix1y1, ix1_y1_ = flat[at + row + 1], flat[at - row - 1]
    grad = np.concatenate([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], axis=1).reshape(k, 2, 1)
    hxx = ix1 - 2 * i + ix1_
    hyy = iy1 - 2 * i + iy1_
    hxy = 0.5 * (ix1y1 - ix1 - iy1 + i + i - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([hxx, hxy, hxy, hyy], axis=1).reshape(k, 2, 2)
    inverse = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))  # float64 from here
    out = locs.copy()
    out -= np.einsum("imn,ink->imk", inverse, grad).squeeze()
    return out
