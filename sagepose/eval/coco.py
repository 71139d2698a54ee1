"""COCO keypoint evaluation: OKS AP/AR through pycocotools, never re-implemented.

Results follow MMPose's CocoMetric so numbers match it on the same predictions:
instance score = box score x mean of the keypoint scores above ``keypoint_score_thr``
(``score_mode='bbox_keypoint'``), then OKS-NMS per image (threshold 0.9), then
pycocotools' ``COCOeval(iouType='keypoints')`` with the schema's sigmas. Ground truth without
``area`` or ``iscrowd`` (AI Challenger, CrowdPose) gets the reader's values for them
(:func:`sagepose.data.coco.read_ground_truth`), so it scores instead of a KeyError in pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass(frozen=True)
class CocoKeypointMetrics:
    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    AR50: float
    AR75: float
    ARm: float
    ARl: float
    num_predictions: int

    def as_dict(self) -> dict:
        return asdict(self)


def oks(kpts: np.ndarray, ref: np.ndarray, areas: np.ndarray, ref_area: float, sigmas: np.ndarray) -> np.ndarray:
    """OKS of (N, K, 2) keypoints (areas (N,)) against one (K, 2) reference -> (N,).

    Used only for NMS between predictions, with the mean of the two areas as MMPose's oks_iou;
    the metric itself is pycocotools'.
    """
    var = (2 * sigmas) ** 2
    d2 = ((kpts - ref[None]) ** 2).sum(-1)
    e = d2 / var[None] / ((ref_area + areas[:, None]) / 2 + np.spacing(1)) / 2
    return np.exp(-e).mean(-1)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
            thr: float = 0.9) -> list[int]:
    """Greedy OKS non-maximum suppression -> indices kept, highest score first.

    kpts (N, K, 2), scores (N,), areas (N,) of the instances of ONE image.
    """
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        overlap = oks(kpts[order[1:]], kpts[i], areas[order[1:]], float(areas[i]), sigmas)
        order = order[1:][overlap <= thr]
    return keep


def instance_scores(keypoint_scores, bbox_scores, keypoint_score_thr: float = 0.2) -> np.ndarray:
    """MMPose's ``bbox_keypoint`` instance score: box score x mean of the keypoint scores above the threshold.

    keypoint_scores (N, K), bbox_scores (N,) -> (N,); 0 for an instance with no keypoint above it (or
    only non-finite scores). The one rescoring, for evaluation results and ``sagepose infer`` alike.
    """
    keypoint_scores = np.asarray(keypoint_scores, np.float64)
    with np.errstate(invalid="ignore"):
        above = np.isfinite(keypoint_scores) & (keypoint_scores > keypoint_score_thr)
    kp_mean = np.where(above.any(1), np.where(above, keypoint_scores, 0.0).sum(1) / np.maximum(above.sum(1), 1), 0.0)
    return np.asarray(bbox_scores, np.float64) * kp_mean


def make_results(image_ids, keypoints, keypoint_scores, bbox_scores, areas, sigmas,
                 keypoint_score_thr: float = 0.2, nms_thr: float | None = 0.9,
                 category_id: int = 1) -> list[dict]:
    """Per-instance predictions -> COCO results list (MMPose's CocoMetric rescoring + OKS-NMS).

    image_ids (N,), keypoints (N, K, 2) image px, keypoint_scores (N, K), bbox_scores (N,),
    areas (N,) crop areas (the product of each instance's padded crop scale, as MMPose uses for NMS).
    """
    image_ids = np.asarray(image_ids)
    keypoints = np.asarray(keypoints, np.float64)
    keypoint_scores = np.asarray(keypoint_scores, np.float64)
    bbox_scores = np.asarray(bbox_scores, np.float64)
    areas = np.asarray(areas, np.float64)
    sigmas = np.asarray(sigmas, np.float64)
    # A joint the decoder could not place (NaN / inf from a flat or empty heatmap) gets score 0 at (0, 0),
    # so one such joint cannot poison OKS-NMS or the results file.
    bad = ~np.isfinite(keypoints).all(-1) | ~np.isfinite(keypoint_scores)
    keypoints = np.where(bad[..., None], 0.0, keypoints)
    keypoint_scores = np.where(bad, 0.0, keypoint_scores)
    inst_scores = instance_scores(keypoint_scores, bbox_scores, keypoint_score_thr)
    results = []
    for img in np.unique(image_ids):
        idx = np.flatnonzero(image_ids == img)
        if nms_thr is not None and nms_thr < 1.0:
            idx = idx[oks_nms(keypoints[idx], inst_scores[idx], areas[idx], sigmas, nms_thr)]
        for i in idx:
            flat = np.concatenate([keypoints[i], keypoint_scores[i, :, None]], axis=1).reshape(-1)
            results.append(dict(image_id=int(img), category_id=category_id,
                                keypoints=[round(float(v), 3) for v in flat], score=float(inst_scores[i])))
    return results


def _load_gt(gt_json: str | Path):
    """pycocotools' COCO of a keypoint json, its missing fields filled in as the reader does."""
    from pycocotools.coco import COCO

    from sagepose.data.coco import read_ground_truth

    gt = COCO()
    gt.dataset = read_ground_truth(gt_json)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def load_results(results, gt_json) -> list[dict]:
    """COCO results (a list, or the path of a results json) -> the list; a ValueError naming the file for invalid
    JSON, and for no predictions at all (an empty list would score 0, not fail)."""
    if isinstance(results, (str, Path)):
        try:
            results = json.loads(Path(results).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{results}: not valid JSON: {e}") from None
    if not isinstance(results, list) or not results:
        raise ValueError(f"no predictions to evaluate against {gt_json}")
    return results


def evaluate_coco(gt_json: str | Path, results: list[dict] | str | Path,
                  sigmas: np.ndarray | None = None, verbose: bool = False) -> CocoKeypointMetrics:
    """pycocotools keypoint AP/AR of ``results`` (a list or a results json path) against ``gt_json``.

    ``sigmas`` (K,) sets OKS sigmas for non-COCO schemas; pycocotools' COCO-17 ones otherwise.
    Raises ValueError (naming the file) on empty or malformed predictions instead of returning 0.
    """
    from pycocotools.cocoeval import COCOeval

    results = load_results(results, gt_json)
    gt = _load_gt(gt_json)
    known = set(gt.getImgIds())
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise ValueError(f"{gt_json}: predictions reference {len(unknown)} image ids absent from the "
                         f"ground truth, e.g. {sorted(unknown)[:3]}")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(log.getvalue())
    stats = [float(s) for s in ev.stats]
    return CocoKeypointMetrics(**dict(zip(STAT_NAMES, stats)), num_predictions=len(results))
