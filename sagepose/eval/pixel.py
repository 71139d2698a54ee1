"""Pixel metrics for any keypoint schema: errors in image pixels and PCK, no OKS sigmas needed.

    m = pixel_metrics(pred, gt, visible, box_sizes, schema.keypoints)
    m["pixel_error"], m["PCK@5px"], m["PCK@0.1box"], m["per_keypoint"]["nose"]

The error of a joint is the Euclidean distance between prediction and label in image pixels; only labeled joints
(``visible > 0``) count. The box size that the ``PCK@{f}box`` thresholds scale with is ``sqrt(w * h)`` of the
instance's annotation box (the geometric mean of its sides: a whole-image box for single-animal DeepLabCut
imports, the padded labels' extent for multi-animal ones); callers pass it in.
"""
from __future__ import annotations

import numpy as np

PX_THRESHOLDS = (2, 5, 10, 20)
BOX_FRACTIONS = (0.05, 0.1, 0.2)


def box_size(bbox_xywh) -> np.ndarray:
    """(..., 4) xywh boxes -> (...,) their size ``sqrt(w * h)``, the scale of the ``PCK@{f}box`` thresholds."""
    b = np.asarray(bbox_xywh, np.float64)
    return np.sqrt(np.clip(b[..., 2], 0, None) * np.clip(b[..., 3], 0, None))


def pixel_metrics(pred, gt, visible, box_sizes, names, px_thresholds=PX_THRESHOLDS,
                  box_fractions=BOX_FRACTIONS) -> dict:
    """pred (N, K, 2), gt (N, K, 2) image px, visible (N, K) (> 0: labeled), box_sizes (N,) px, names (K,) ->

    ``pixel_error`` (mean Euclidean error over labeled joints), ``pixel_error_median``, ``pixel_error_p95``
    (numpy's linear-interpolation percentile), ``PCK@{t}px`` (fraction of labeled joints with error <= t px),
    ``PCK@{f}box`` (error <= f x the instance's box size), ``per_keypoint`` {name: mean error, None where the
    joint is never labeled}, ``num_joints`` (labeled joints scored) and ``num_nonfinite`` (labeled joints whose
    prediction is NaN / inf: misses for every PCK, left out of the error statistics). Thresholds are keyed with
    ``%g`` (``PCK@5px``, ``PCK@0.1box``). With no labeled joint every statistic is None.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible, box_sizes = np.asarray(visible), np.asarray(box_sizes, np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2 or gt.shape != pred.shape:
        raise ValueError(f"pixel_metrics: pred {pred.shape} and gt {gt.shape} must both be (N, K, 2)")
    n, k = pred.shape[:2]
    if visible.shape != (n, k) or box_sizes.shape != (n,) or len(names) != k:
        raise ValueError(f"pixel_metrics: visible {visible.shape} must be ({n}, {k}), box_sizes {box_sizes.shape} "
                         f"({n},), names {len(names)} entries ({k})")
    labeled = (visible > 0) & np.isfinite(gt).all(-1)
    err = np.linalg.norm(pred - gt, axis=-1)  # NaN where the prediction is not finite
    finite = labeled & np.isfinite(err)
    out: dict = {}
    e = err[finite]
    num = int(labeled.sum())
    out["pixel_error"] = float(e.mean()) if e.size else None
    out["pixel_error_median"] = float(np.median(e)) if e.size else None
    out["pixel_error_p95"] = float(np.percentile(e, 95)) if e.size else None
    hit_err = np.where(finite, err, np.inf)  # a non-finite prediction misses every threshold
    for t in px_thresholds:
        out[f"PCK@{t:g}px"] = float((hit_err[labeled] <= t).mean()) if num else None
    for f in box_fractions:
        thr = np.broadcast_to(f * box_sizes[:, None], (n, k))
        out[f"PCK@{f:g}box"] = float((hit_err[labeled] <= thr[labeled]).mean()) if num else None
    out["per_keypoint"] = {str(name): (float(err[finite[:, j], j].mean()) if finite[:, j].any() else None)
                           for j, name in enumerate(names)}
    out["num_joints"] = num
    out["num_nonfinite"] = int((labeled & ~np.isfinite(err)).sum())
    return out
