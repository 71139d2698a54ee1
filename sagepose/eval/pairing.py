"""COCO results paired with the labeled people they predict, for metrics that compare joints one to one (PCKh, pixel
errors) on a results file rather than inside validation.

Each labeled annotation takes, on its image, the prediction whose joints lie closest to its labeled joints (mean
distance over them, in units of the annotation's box size ``sqrt(w h)``); greedily, closest pairs first, each
prediction used once. Top-down predictions on ground-truth boxes give one prediction per annotation, and the pairs
are then the ones the boxes made.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from sagepose.eval.pixel import box_size


def pair_with_labels(results: list[dict], records, max_cost: float = np.inf) -> dict[str, np.ndarray]:
    """``results`` (COCO results in the records' schema) and ``records`` (:func:`sagepose.data.load_coco` of the
    labels, ``mode="val"``) -> arrays over the paired annotations, in record order: ``pred`` (N, K, 2),
    ``scores`` (N, K), ``gt`` (N, K, 2), ``visible`` (N, K), ``box_size`` (N,), ``record`` (N,) their indices in
    ``records``. A pair whose cost exceeds ``max_cost`` is dropped; annotations left without a prediction are not
    in the arrays (``len(records) - N`` of them)."""
    k = records[0].keypoints.shape[0] if records else 0
    by_image = defaultdict(list)
    for i, r in enumerate(results):
        kp = np.asarray(r["keypoints"], np.float64)
        if kp.size != 3 * k:
            raise ValueError(f"result {i} (image {r.get('image_id')}) has {kp.size // 3} keypoints, the labels {k}")
        by_image[r["image_id"]].append(kp.reshape(k, 3))
    recs_by_image = defaultdict(list)
    for j, rec in enumerate(records):
        recs_by_image[rec.image_id].append(j)
    pairs = []
    for image_id, recs in recs_by_image.items():
        preds = by_image.get(image_id, [])
        if not preds:
            continue
        p = np.stack(preds)[:, :, :2]  # (P, K, 2)
        cost = np.full((len(recs), len(preds)), np.inf)
        for a, j in enumerate(recs):
            rec = records[j]
            lab = rec.visible > 0
            if lab.any():
                d = np.linalg.norm(p[:, lab] - rec.keypoints[lab][None], axis=-1).mean(axis=1)
                cost[a] = d / max(float(box_size(rec.bbox_xywh)), 1e-6)
        used_a, used_p = set(), set()
        for flat in np.argsort(cost, axis=None, kind="stable"):
            a, q = divmod(int(flat), len(preds))
            if not np.isfinite(cost[a, q]) or cost[a, q] > max_cost:
                break
            if a not in used_a and q not in used_p:
                used_a.add(a)
                used_p.add(q)
                pairs.append((recs[a], preds[q]))
    pairs.sort(key=lambda t: t[0])
    idx = np.array([j for j, _ in pairs], np.int64)
    kp = np.array([q for _, q in pairs], np.float64).reshape(-1, k, 3)
    return {"pred": kp[..., :2], "scores": kp[..., 2],
            "gt": np.array([records[j].keypoints for j in idx], np.float64).reshape(-1, k, 2),
            "visible": np.array([records[j].visible for j in idx], np.float64).reshape(-1, k),
            "box_size": np.array([box_size(records[j].bbox_xywh) for j in idx], np.float64), "record": idx}
