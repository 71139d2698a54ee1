"""COCO keypoint results <-> arrays for the translator, the fixed converter, and each instance's normalised frame."""
from __future__ import annotations

import numpy as np

from sagepose.errors import DataError
from sagepose.geometry import keypoint_boxes
from sagepose.keypoint_maps import KeypointMap
from sagepose.keypoints import KeypointSchema

FRAME_MIN_SCORE = 0.05  # keypoints scored above this span an instance's frame when its result has no bbox


def parse_results(results, schema: KeypointSchema, where: str = "results"):
    """COCO results in ``schema`` -> keypoints (N, K, 2), scores (N, K), boxes (N, 4) xywh (NaN where a result has
    no ``bbox``), float64. A non-finite keypoint becomes ``0, 0`` with score 0 (as ``make_results`` writes it); a
    result without ``3 K`` keypoint values, or with a bbox that is not 4 finite numbers, is a :class:`DataError`."""
    if not isinstance(results, list):
        raise DataError(f"{where}: expected a list of COCO results, got {type(results).__name__}")
    k = schema.num_keypoints
    kp = np.zeros((len(results), k, 3))
    boxes = np.full((len(results), 4), np.nan)
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "keypoints" not in r:
            raise DataError(f"{where}: result {i} has no 'keypoints'")
        values = np.asarray(r["keypoints"], np.float64).reshape(-1)
        if values.size != 3 * k:
            raise DataError(f"{where}: result {i} (image {r.get('image_id', '?')}) has {values.size} keypoint values, "
                            f"expected {3 * k} for schema {schema.name} ({k} keypoints)")
        kp[i] = values.reshape(k, 3)
        if r.get("bbox") is not None:
            box = np.asarray(r["bbox"], np.float64).reshape(-1)
            if box.size != 4 or not np.isfinite(box).all():
                raise DataError(f"{where}: result {i} (image {r.get('image_id', '?')}): bbox {r['bbox']} is not "
                                f"4 finite numbers")
            boxes[i] = box
    bad = ~np.isfinite(kp).all(-1)
    kp[bad] = 0.0
    return kp[..., :2], kp[..., 2], boxes


def flat_keypoints(keypoints: np.ndarray, scores: np.ndarray) -> list[float]:
    """(K, 2), (K,) -> a result's ``keypoints`` list ``[x, y, score, ...]``."""
    return np.concatenate([keypoints, scores[:, None]], 1).reshape(-1).tolist()


def convert_results(results: list[dict], kmap: KeypointMap, where: str = "results") -> list[dict]:
    """COCO results in ``kmap.source`` -> ``kmap.target`` by the fixed map: copied joints keep their x, y, score; a
    midpoint joint is the mean of its two, scored by the smaller; a joint the map does not give is ``0, 0, 0``. Every
    other field (image_id, category_id, score, bbox) is kept."""
    kp, sc, _ = parse_results(results, kmap.source, where)
    out, out_sc = kmap.apply(kp, sc)
    return [{**r, "keypoints": flat_keypoints(o, s)} for r, o, s in zip(results, out, out_sc)]


def person_frames(keypoints: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each instance's normalised frame: centres (N, 2) and sizes (N,) (the longer side) of its ``boxes`` (N, 4)
    xywh where given (finite, non-empty), else of its keypoints scored above :data:`FRAME_MIN_SCORE` (all of them
    where none is). A frame of no extent (one point) has size 1 (pixel)."""
    kb, _ = keypoint_boxes(keypoints, scores, FRAME_MIN_SCORE)
    given = np.isfinite(boxes).all(1) & (np.nan_to_num(boxes[:, 2:]).max(1) > 0)
    b = np.nan_to_num(boxes)
    xyxy = np.where(given[:, None], np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1), kb)
    centres = 0.5 * (xyxy[:, :2] + xyxy[:, 2:])
    sizes = (xyxy[:, 2:] - xyxy[:, :2]).max(1)
    return centres, np.where(sizes > 0, sizes, 1.0)
