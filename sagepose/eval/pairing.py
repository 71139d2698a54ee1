"""Predictions paired with the labeled people they predict, one to one, on each image -- by one of two criteria
that share the assignment (:func:`pair_by_image`: greedily, cheapest pairs first, each label and each prediction
used once, pairs over a cost limit not made):

* :func:`pair_with_labels` -- closest joints: a labeled annotation's cost to a prediction is the mean distance over
  its labeled joints, in units of the annotation's box size ``sqrt(w h)``. For metrics that compare joints one to
  one (PCKh, pixel errors) on a results file rather than inside validation. Top-down predictions on ground-truth
  boxes give one prediction per annotation, and the pairs are then the ones the boxes made.
* :func:`pair_by_box_iou` -- box overlap: most-overlapping boxes first, pairs under a minimum IoU not made (the
  translator's training pairs, :mod:`sagepose.translate.pairs`, where the two sides are of different schemas).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from sagepose.eval.pixel import box_size
from sagepose.geometry import box_iou


def pair_by_image(label_images: Sequence, result_images: Sequence,
                  cost: Callable[[list[int], list[int]], np.ndarray], max_cost: float) -> list[tuple[int, int]]:
    """Labels and results (their image ids) -> ``(label, result)`` index pairs, sorted by label. On each image,
    ``cost(labels, results)`` (their indices) gives an (A, P) matrix; pairs are taken cheapest first (ties in
    row-major order), each label and result once, until a cost is not finite or exceeds ``max_cost``."""
    results_by_image = defaultdict(list)
    for i, image_id in enumerate(result_images):
        results_by_image[image_id].append(i)
    labels_by_image = defaultdict(list)
    for j, image_id in enumerate(label_images):
        labels_by_image[image_id].append(j)
    pairs = []
    for image_id, labels in labels_by_image.items():
        results = results_by_image.get(image_id, [])
        if not results:
            continue
        c = cost(labels, results)
        used_a, used_p = set(), set()
        for flat in np.argsort(c, axis=None, kind="stable"):
            a, p = divmod(int(flat), len(results))
            if not np.isfinite(c[a, p]) or c[a, p] > max_cost:
                break
            if a not in used_a and p not in used_p:
                used_a.add(a)
                used_p.add(p)
                pairs.append((labels[a], results[p]))
    return sorted(pairs)


def pair_by_box_iou(label_images: Sequence, label_boxes: np.ndarray, result_images: Sequence,
                    result_boxes: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels' and results' image ids and boxes (A, 4), (R, 4) xyxy -> index arrays ``(labels, results)`` of the
    pairs, sorted by label: on each image the most-overlapping boxes first; boxes overlapping by IoU < ``min_iou``
    are not a pair."""
    pairs = pair_by_image(label_images, result_images,
                          lambda a, r: -box_iou(label_boxes[a], result_boxes[r]), max_cost=-min_iou)
    return np.array([a for a, _ in pairs], np.int64), np.array([r for _, r in pairs], np.int64)


def pair_with_labels(results: list[dict], records, max_cost: float = np.inf) -> dict[str, np.ndarray]:
    """``results`` (COCO results in the records' schema) and ``records`` (:func:`sagepose.data.load_coco` of the
    labels, ``mode="val"``) -> arrays over the paired annotations, in record order, each with the result whose
    joints lie closest to its labeled ones: ``pred`` (N, K, 2), ``scores`` (N, K), ``gt`` (N, K, 2), ``visible``
    (N, K), ``box_size`` (N,), ``record`` (N,) their indices in ``records``. A pair whose cost (mean distance over
    the labeled joints / box size) exceeds ``max_cost`` is dropped; annotations left without a prediction are not
    in the arrays (``len(records) - N`` of them)."""
    k = records[0].keypoints.shape[0] if records else 0
    keypoints, images = [], []
    for i, r in enumerate(results):
        kp = np.asarray(r["keypoints"], np.float64)
        if kp.size != 3 * k:
            raise ValueError(f"result {i} (image {r.get('image_id')}) has {kp.size // 3} keypoints, the labels {k}")
        keypoints.append(kp.reshape(k, 3))
        images.append(r["image_id"])
    keypoints = np.array(keypoints, np.float64).reshape(-1, k, 3)

    def joint_distances(recs: list[int], preds: list[int]) -> np.ndarray:
        p = keypoints[preds, :, :2]  # (P, K, 2)
        cost = np.full((len(recs), len(preds)), np.inf)
        for a, j in enumerate(recs):
            rec = records[j]
            lab = rec.visible > 0
            if lab.any():
                d = np.linalg.norm(p[:, lab] - rec.keypoints[lab][None], axis=-1).mean(axis=1)
                cost[a] = d / max(float(box_size(rec.bbox_xywh)), 1e-6)
        return cost

    pairs = pair_by_image([rec.image_id for rec in records], images, joint_distances, max_cost)
    idx = np.array([j for j, _ in pairs], np.int64)
    kp = keypoints[np.array([q for _, q in pairs], np.int64)]
    return {"pred": kp[..., :2], "scores": kp[..., 2],
            "gt": np.array([records[j].keypoints for j in idx], np.float64).reshape(-1, k, 2),
            "visible": np.array([records[j].visible for j in idx], np.float64).reshape(-1, k),
            "box_size": np.array([box_size(records[j].bbox_xywh) for j in idx], np.float64), "record": idx}
