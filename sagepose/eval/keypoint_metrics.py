"""Keypoint metrics on coordinates, equal to MMPose 1.3.2's: PCK, AUC, EPE and MPII's PCKh.

    r = pck(pred, gt, mask, thr=0.2, norm_factor=box_sizes)   # r.per_joint (K,), r.mean, r.count
    auc(pred, gt, mask, norm_factor=30.0)                      # mean PCK over 20 thresholds 0, 0.05, ..., 0.95
    epe(pred, gt, mask)                                        # mean end-point error in pixels
    table = pckh(pred, gt, visible, mpii_head_size(headboxes)) # table["PCKh"], table["Wrist"], table["per_joint"]

Every function takes ``pred`` and ``gt`` as (N, K, 2) pixel coordinates and ``mask`` as (N, K) (true or > 0: the
joint is labeled and scored). The conventions are MMPose's (``mmpose.evaluation.functional.keypoint_eval`` and
``MpiiPCKAccuracy``), so a model scores here what it scores there:

- a joint is correct when its normalised distance is strictly below the threshold (``<``, not ``<=``);
- the distance is divided by the norm factor per axis before taking the Euclidean norm;
- an instance whose norm factor is 0 on either axis is left out entirely (its joints count nowhere);
- normalised distances are rounded to float32 before the comparison and the means, as MMPose stores them;
- a non-finite prediction of a scored joint is a miss for PCK and makes the EPE NaN (as in MMPose).

Where MMPose reports a placeholder (accuracy -1 for a joint with no scored sample, 0 for a mean over nothing),
these functions return NaN, so an absent joint cannot pass for a number.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sagepose.keypoints import MPII16

# MPII-16 joint indices of the PCKh table (sagepose.keypoints.MPII16's order, MMPose's order).
MPII_TABLE = {"Head": (9,), "Shoulder": (13, 12), "Elbow": (14, 11), "Wrist": (15, 10), "Hip": (3, 2),
              "Knee": (4, 1), "Ankle": (5, 0)}
MPII_EXCLUDED = (6, 7)  # pelvis and thorax: scored per joint, left out of the PCKh mean
MPII_NAMES = MPII16.keypoints


class PCKResult(NamedTuple):
    """``per_joint`` (K,) fraction correct (NaN: no scored sample), ``mean`` over the joints that have one
    (NaN when none has), ``count`` of those joints."""
    per_joint: np.ndarray
    mean: float
    count: int


def _check(pred, gt, mask, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt, mask = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(mask)
    if pred.ndim != 3 or pred.shape[-1] != 2 or gt.shape != pred.shape:
        raise ValueError(f"{who}: pred {pred.shape} and gt {gt.shape} must both be (N, K, 2)")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"{who}: mask {mask.shape} must be {pred.shape[:2]} (N, K)")
    return pred, gt, mask > 0 if mask.dtype != bool else mask


def _norm_factors(norm_factor, n: int, who: str) -> np.ndarray:
    """A scalar, (N,) or (N, 2) norm factor -> (N, 2) float64; negative or non-finite values refused."""
    f = np.asarray(norm_factor, np.float64)
    if f.ndim == 1 and f.shape == (n,):
        f = f[:, None]
    try:
        f = np.broadcast_to(f, (n, 2))
    except ValueError:
        raise ValueError(f"{who}: norm_factor {f.shape} must be a scalar, ({n},) or ({n}, 2)") from None
    if not np.isfinite(f).all() or (f < 0).any():
        raise ValueError(f"{who}: norm_factor must be finite and >= 0 (0 leaves an instance out)")
    return f


def _normalised_distances(pred, gt, mask, norm) -> tuple[np.ndarray, np.ndarray]:
    """-> (N, K) distances / norm per axis (float32-rounded, as MMPose stores them) and the (N, K) scored mask."""
    scored = mask & (norm > 0).all(axis=1)[:, None]
    safe = np.where(norm > 0, norm, 1.0)
    dist = np.linalg.norm((pred - gt) / safe[:, None, :], axis=-1)
    return dist.astype(np.float32).astype(np.float64), scored


def _pck_from_distances(dist, scored, thr: float) -> PCKResult:
    num = scored.sum(axis=0)
    hits = ((dist < thr) & scored).sum(axis=0)
    per_joint = np.full(dist.shape[1], np.nan)
    np.divide(hits, num, out=per_joint, where=num > 0)
    count = int((num > 0).sum())
    mean = float(per_joint[num > 0].mean()) if count else float("nan")
    return PCKResult(per_joint, mean, count)


def pck(pred, gt, mask, thr: float, norm_factor) -> PCKResult:
    """pred (N, K, 2), gt (N, K, 2), mask (N, K), thr, norm_factor (scalar, (N,) or (N, 2) per axis) -> PCKResult.

    A joint is correct when ``|| (pred - gt) / norm_factor || < thr``. MMPose's ``keypoint_pck_accuracy``: the
    same per-joint accuracy, mean and count, except NaN where MMPose reports -1 (per joint) or 0 (mean).
    """
    pred, gt, mask = _check(pred, gt, mask, "pck")
    dist, scored = _normalised_distances(pred, gt, mask, _norm_factors(norm_factor, len(pred), "pck"))
    return _pck_from_distances(dist, scored, float(thr))


def auc(pred, gt, mask, norm_factor: float, num_thrs: int = 20) -> float:
    """pred (N, K, 2), gt (N, K, 2), mask (N, K), norm_factor (scalar px), num_thrs -> area under the PCK curve.

    MMPose's ``keypoint_auc``: the mean of ``pck(...).mean`` over the thresholds ``i / num_thrs`` for
    ``i = 0 .. num_thrs - 1`` (0, 0.05, ..., 0.95 with 20: 1.0 itself is not one of them), one norm factor for
    both axes and every instance. NaN when no joint is scored (MMPose: 0).
    """
    if int(num_thrs) != num_thrs or num_thrs < 1:
        raise ValueError(f"auc: num_thrs must be a positive integer, got {num_thrs!r}")
    if np.ndim(norm_factor) != 0:
        raise ValueError(f"auc: norm_factor must be a scalar, got shape {np.shape(norm_factor)}")
    pred, gt, mask = _check(pred, gt, mask, "auc")
    dist, scored = _normalised_distances(pred, gt, mask, _norm_factors(norm_factor, len(pred), "auc"))
    means = [_pck_from_distances(dist, scored, i / num_thrs).mean for i in range(int(num_thrs))]
    return float(np.mean(means))


def epe(pred, gt, mask) -> float:
    """pred (N, K, 2), gt (N, K, 2), mask (N, K) -> mean Euclidean distance in pixels over the masked-in joints.

    MMPose's ``keypoint_epe`` to the bit: it sums the float32 distances joint by joint in float32 and divides in
    float32 (so the result carries float32's ~1e-7 relative error); kept so reported EPEs reproduce.
    NaN when no joint is scored (MMPose: 0).
    """
    pred, gt, mask = _check(pred, gt, mask, "epe")
    dist, scored = _normalised_distances(pred, gt, mask, np.ones((len(pred), 2)))
    if not scored.any():
        return float("nan")
    d32 = dist.T[scored.T].astype(np.float32)  # joint-major, MMPose's order of summation
    return float(d32.sum(dtype=np.float32) / np.float32(d32.size))


def pckh(pred, gt, visible, head_sizes, thr: float = 0.5, pred_offset: float = 1.0) -> dict:
    """MPII PCKh as MMPose's ``MpiiPCKAccuracy`` reports it, in percent.

    pred (N, 16, 2) predictions in sagepose's 0-based pixel coordinates; gt (N, 16, 2) MPII's annotated joints,
    which are 1-based (MATLAB: the centre of the top-left pixel is (1, 1)), as MPII's json / mat files store them;
    visible (N, 16) (true or > 0: labeled); head_sizes (N,) px, 0.6 x the head box diagonal (``mpii_head_size``).
    ``pred_offset`` (1.0) is added to every prediction before the comparison, to bring it into the 1-based frame
    of the labels: MMPose's ``MpiiDataset`` keeps the json's 1-based joints as they are (it moves only the box
    centre by -1 for the crop) and ``MpiiPCKAccuracy.compute_metrics`` adds 1.0 to the predictions. Pass 0.0 when
    gt is already 0-based.

    -> ``Head`` (head top), ``Shoulder``, ``Elbow``, ``Wrist``, ``Hip``, ``Knee``, ``Ankle`` (the mean of the left
    and right joint), ``PCKh`` (the mean over all joints but pelvis and thorax, each weighted by how many
    instances label it), ``PCKh@0.1`` (the same at threshold 0.1, MMPose's float32 curve value), ``per_joint``
    {MPII-16 name: percent at ``thr``}. A joint no instance labels is None in ``per_joint`` and drops out of its
    group's mean (MMPose puts -100 there); a group with no labeled joint is None.
    """
    pred, gt, visible = _check(pred, gt, visible, "pckh")
    if pred.shape[1] != 16:
        raise ValueError(f"pckh: MPII has 16 joints, got {pred.shape[1]}")
    head_sizes = np.asarray(head_sizes, np.float64).reshape(-1)
    if head_sizes.shape != (len(pred),):
        raise ValueError(f"pckh: head_sizes {head_sizes.shape} must be ({len(pred)},)")
    if not np.isfinite(head_sizes).all() or (head_sizes <= 0).any():
        bad = int(np.flatnonzero(~(np.isfinite(head_sizes) & (head_sizes > 0)))[0])
        raise ValueError(f"pckh: head size of instance {bad} is {head_sizes[bad]!r}; it must be finite and > 0")
    norm = np.repeat(head_sizes[:, None], 2, axis=1)
    dist, scored = _normalised_distances(pred + float(pred_offset), gt, visible, norm)
    at_thr = 100.0 * _pck_from_distances(dist, scored, float(thr)).per_joint
    # MMPose keeps its threshold curve (0..0.5 step 0.01) in float32; PCKh@0.1 is its row 0.1.
    at_01 = (100.0 * _pck_from_distances(dist, scored, 0.1).per_joint).astype(np.float32).astype(np.float64)
    counts = visible.sum(axis=0).astype(np.float64)
    counts[list(MPII_EXCLUDED)] = 0.0
    weights = counts / counts.sum() if counts.sum() > 0 else counts
    labeled = counts > 0
    out: dict = {}
    for name, joints in MPII_TABLE.items():
        vals = [at_thr[j] for j in joints if not np.isnan(at_thr[j])]
        out[name] = float(np.mean(vals)) if vals else None
    out["PCKh"] = float(np.sum(at_thr[labeled] * weights[labeled])) if labeled.any() else None
    out["PCKh@0.1"] = float(np.sum(at_01[labeled] * weights[labeled])) if labeled.any() else None
    out["per_joint"] = {name: (None if np.isnan(v) else float(v)) for name, v in zip(MPII_NAMES, at_thr)}
    return out
