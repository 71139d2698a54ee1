"""The translator's training pairs: each labeled annotation (target schema) with the prediction (source schema) on
its image whose keypoint box overlaps its box most, both in the prediction's normalised frame."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from sagepose.data.coco import image_index, read_json
from sagepose.errors import DataError
from sagepose.eval.pairing import pair_by_box_iou
from sagepose.geometry import keypoint_boxes
from sagepose.keypoints import KeypointSchema
from sagepose.translate.results import FRAME_MIN_SCORE, parse_results, person_frames

MATCH_IOU = 0.3  # a label and a prediction whose boxes overlap less than this are not a pair


def _label_arrays(path: str, data: dict, target: KeypointSchema, skipped: Counter):
    """The labels' usable annotations -> image ids, keypoints (A, K, 2), labeled (A, K), boxes (A, 4) xyxy (the
    annotation's bbox, else its labeled keypoints' box). Crowd annotations and those without a labeled keypoint are
    counted in ``skipped`` by reason."""
    images = image_index(path, data)
    for cat in data.get("categories") or []:
        names = cat.get("keypoints") if isinstance(cat, dict) else None
        if names and (len(names) != target.num_keypoints or target.name_mismatches(names)):
            raise DataError(f"{path}: category {cat.get('id', '?')} keypoints {list(names)[:4]}... are not those of "
                            f"the target schema {target.name}")
    k = target.num_keypoints
    ids, kps, labeled, boxes = [], [], [], []
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        if ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in the file's images")
        values = np.asarray(ann.get("keypoints") or np.zeros(3 * k), np.float64).reshape(-1)
        if values.size != 3 * k:
            raise DataError(f"{where}: {values.size} keypoint values, expected {3 * k} for schema {target.name}")
        v = values.reshape(k, 3)
        lab = v[:, 2] > 0
        if not lab.any():
            skipped["without labeled keypoints"] += 1
            continue
        if not np.isfinite(v[lab, :2]).all():
            raise DataError(f"{where}: non-finite labeled keypoint coordinates")
        if ann.get("bbox") is not None:
            b = np.asarray(ann["bbox"], np.float64).reshape(-1)
            if b.size != 4 or not np.isfinite(b).all():
                raise DataError(f"{where}: bbox {ann['bbox']} is not 4 finite numbers")
            box = np.concatenate([b[:2], b[:2] + b[2:]])
        else:
            box = keypoint_boxes(v[None, :, :2], lab[None].astype(float), FRAME_MIN_SCORE)[0][0]
        ids.append(ann["image_id"])
        kps.append(np.where(lab[:, None], v[:, :2], 0.0))
        labeled.append(lab)
        boxes.append(box)
    return ids, np.array(kps).reshape(-1, k, 2), np.array(labeled, bool).reshape(-1, k), np.array(boxes).reshape(-1, 4)


def training_pairs(predictions: list[dict], labels_json: str, source: KeypointSchema, target: KeypointSchema,
                   where: str = "predictions") -> tuple[dict, dict]:
    """Each usable annotation of ``labels_json`` (target schema) with the prediction (source schema) on its image
    whose keypoint box overlaps its bbox most (:func:`~sagepose.eval.pairing.pair_by_box_iou`: greedy by IoU, each
    prediction used once; IoU < :data:`MATCH_IOU`: unmatched). Returns the normalised arrays (``src``,
    ``src_scores``, ``tgt``, ``tgt_labeled``; each pair in its prediction's frame) and counts (``pairs``,
    ``skipped``: by reason, ``unmatched``)."""
    path = os.fspath(labels_json)
    skipped: Counter = Counter()
    ids, tgt, lab, ann_boxes = _label_arrays(path, read_json(path), target, skipped)
    kp, sc, boxes = parse_results(predictions, source, where)
    pred_boxes, _ = keypoint_boxes(kp, sc, FRAME_MIN_SCORE)
    a_idx, p_idx = pair_by_box_iou(ids, ann_boxes, [r.get("image_id") for r in predictions], pred_boxes, MATCH_IOU)
    centres, sizes = person_frames(kp[p_idx], sc[p_idx], boxes[p_idx])
    norm = lambda x: (x - centres[:, None]) / sizes[:, None, None]
    arrays = dict(src=norm(kp[p_idx]), src_scores=sc[p_idx], tgt=np.where(lab[a_idx, :, None], norm(tgt[a_idx]), 0.0),
                  tgt_labeled=lab[a_idx])
    counts = dict(pairs=len(a_idx), skipped=dict(skipped), unmatched=len(ids) - len(a_idx))
    return arrays, counts
