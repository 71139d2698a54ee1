"""Person boxes from a detector or a json: the one reader of detections, for evaluation, inference and the
unlabeled sources of semi-supervised training.

Two formats:

* COCO results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``; a COCO json's ``annotations`` have the
  same fields), parsed entry by entry by :func:`parse_detections`. What its callers do differently is a parameter
  of it: an image id with no ``images`` entry (an error, or skipped and counted), crowd entries (kept, or skipped),
  the score threshold and the category. :func:`read_detections` reads such a file against a COCO json's
  ``images`` (evaluation, ``sagepose infer --images-json``), :func:`load_detections` turns that into records;
* a mapping ``{"file_name": [[x1, y1, x2, y2(, score)], ...]}`` (for a video, keys are frame indices), read by
  :func:`read_box_mapping` (``sagepose infer --det-json``).

A malformed entry is an error naming the file and the entry; entries that a filter drops are counted by reason
(:data:`CROWD`, :data:`OTHER_CATEGORY`, :data:`BELOW_THRESHOLD`, :data:`NO_IMAGE_ENTRY`).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from sagepose.data.coco import Record, image_index, read_json, resolve_image_root, warn_skipped
from sagepose.errors import DataError
from sagepose.geometry import check_boxes
from sagepose.keypoints import KeypointSchema, load_schema

UNKNOWN_IMAGE_ACTIONS = ("error", "skip")  # what parse_detections does with an image id not in the images list
CROWD = "crowd"
OTHER_CATEGORY = "other category"
BELOW_THRESHOLD = "below the score threshold"
NO_IMAGE_ENTRY = "image_id not in the images list"
FILTERED = frozenset({CROWD, OTHER_CATEGORY, BELOW_THRESHOLD})  # what a filter dropped, not a problem of the file


class Detection(NamedTuple):
    """One person box of a detections file: its index in the file, image id, ``images`` entry (None when read
    without an images list), ``bbox_xywh`` (4,) float32 image px as given, score (1 where the entry has none)."""

    index: int
    image_id: object
    image: dict | None
    bbox_xywh: np.ndarray
    score: float


def parse_detections(path: str, entries, *, images: dict | None = None, images_path: str | None = None,
                     unknown_image: str = "error", skip_crowd: bool = False, score_thr: float = 0.0,
                     category_id: int | None = None,
                     entry: str = "detection") -> tuple[list[Detection], Counter, list[str]]:
    """COCO-results entries (the content of ``path``) -> (the detections kept, the count dropped by reason, the
    distinct image ids with no ``images`` entry, in order).

    Each entry needs ``image_id`` and ``bbox`` (4 numbers, ``[x, y, w, h]``); ``score`` is a number, 1 where
    absent. Otherwise a :class:`DataError` names ``path`` and the ``entry`` (``"detection"``: by its index;
    ``"annotation"``: by its ``id``). Then, in this order, an entry is dropped and counted when it is a crowd
    one (``iscrowd`` set) and ``skip_crowd``; when it names another category than ``category_id`` (None: any;
    an entry without ``category_id`` is of every category); when it scores below ``score_thr``. ``images``
    ({image id: ``images`` entry}, from the json ``images_path``) gives each kept entry its image; an image id
    not in it is an error (``unknown_image="error"``) or dropped and counted as :data:`NO_IMAGE_ENTRY`
    (``"skip"``). Without ``images`` (``None``) every image id must be an integer: the caller finds the file by
    it. Boxes are not checked here: against the image sizes, :func:`sagepose.geometry.check_boxes` does it.
    """
    if unknown_image not in UNKNOWN_IMAGE_ACTIONS:
        raise ValueError(f"unknown_image must be one of {UNKNOWN_IMAGE_ACTIONS}, got {unknown_image!r}")
    kept, skipped, unknown = [], Counter(), []
    for i, det in enumerate(entries):
        label = det.get("id", i) if entry == "annotation" and isinstance(det, dict) else i
        where = f"{path}: {entry} {label}"
        if not isinstance(det, dict):
            raise DataError(f"{where}: expected an object with 'image_id' and 'bbox' [x, y, w, h]")
        for key in ("image_id", "bbox"):
            if key not in det:
                raise DataError(f"{where}: missing required field {key!r}")
        box, score = det["bbox"], det.get("score", 1.0)
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise DataError(f"{where}: expected a bbox of 4 values [x, y, w, h], got {box!r}")
        try:
            box = np.asarray(box, np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{where}: expected a bbox of 4 values [x, y, w, h], got {box!r}") from None
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"{where}: score must be a number, got {score!r}")
        if skip_crowd and det.get("iscrowd", 0):
            skipped[CROWD] += 1
            continue
        if category_id is not None and det.get("category_id", category_id) != category_id:
            skipped[OTHER_CATEGORY] += 1
            continue
        if score < score_thr:
            skipped[BELOW_THRESHOLD] += 1
            continue
        image_id, image = det["image_id"], None
        if images is not None:
            image = images.get(image_id)
            if image is None:
                if unknown_image == "error":
                    raise DataError(f"{where}: image_id {image_id} has no entry in {images_path}")
                skipped[NO_IMAGE_ENTRY] += 1
                if str(image_id) not in unknown:
                    unknown.append(str(image_id))
                continue
        elif isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"{where}: image_id {image_id!r} is not an integer, and there is no images list to "
                            f"look it up in")
        kept.append(Detection(i, image_id, image, box, float(score)))
    return kept, skipped, unknown


def read_detections(det_json: str, coco_json: str, score_thr: float = 0.0, category_id: int = 1) -> list[Detection]:
    """A COCO-results file (a list) whose images are those of ``coco_json`` -> its usable detections, in order.

    Detections of another ``category_id`` or scored below ``score_thr`` are dropped; an image id with no entry in
    ``coco_json`` and a malformed entry are errors (:func:`parse_detections`). A box that is non-finite, empty
    or inverted, or wholly outside its image is skipped and counted in one warning.
    """
    coco_path = os.fspath(coco_json)
    return _read_detections(os.fspath(det_json), coco_path, read_json(coco_path), score_thr, category_id)


def _read_detections(det_path: str, coco_path: str, coco_data, score_thr: float, category_id: int) -> list[Detection]:
    dets = read_json(det_path)
    if not isinstance(dets, list):
        raise DataError(f"{det_path}: expected a list of detections, got {type(dets).__name__}")
    kept, _, _ = parse_detections(det_path, dets, images=image_index(coco_path, coco_data), images_path=coco_path,
                                  score_thr=score_thr, category_id=category_id)
    sizes = np.reshape([(d.image["width"], d.image["height"]) for d in kept], (-1, 2))
    _, problems = check_boxes(np.reshape([d.bbox_xywh for d in kept], (-1, 4)), sizes, fmt="xywh", where=det_path,
                              strict=False)
    warn_skipped(det_path, Counter(p for p in problems if p), "detections")
    return [d for d, problem in zip(kept, problems) if not problem]


def load_detections(det_json: str, coco_json: str, schema: str | KeypointSchema = "coco",
                    image_root: str | None = None, score_thr: float = 0.0,
                    category_id: int = 1) -> list[Record]:
    """Person detections (COCO results format, :func:`read_detections`) -> records for evaluation.

    Images resolve as :func:`sagepose.data.coco.load_coco`'s do (:func:`resolve_image_root` of ``coco_json``).
    ``ann_id`` is the detection's index in the file; keypoints are zeros with ``visible`` 0. Boxes are
    used as given (MMPose does not clip detections). No detection left is an error naming the file.
    """
    schema = load_schema(schema)
    coco_path = os.fspath(coco_json)
    coco_data = read_json(coco_path)
    root = resolve_image_root(coco_path, coco_data, image_root)
    k = schema.num_keypoints
    records = [Record(
        image_path=os.path.join(root, d.image["file_name"]), image_id=d.image["id"], ann_id=d.index,
        bbox_xywh=d.bbox_xywh, keypoints=np.zeros((k, 2), np.float32), visible=np.zeros(k, np.float32),
        flags=np.zeros(k, np.float32), area=float(d.bbox_xywh[2] * d.bbox_xywh[3]), width=int(d.image["width"]),
        height=int(d.image["height"]), bbox_score=d.score)
        for d in _read_detections(os.fspath(det_json), coco_path, coco_data, score_thr, category_id)]
    if not records:
        raise ValueError(f"{os.fspath(det_json)}: no detections of category {category_id} scored >= {score_thr} "
                         f"with a usable box")
    return records


def read_box_mapping(path: str, data: dict, score_thr: float = 0.0) -> dict[str, list[list[float]]]:
    """A mapping ``{key: [[x1, y1, x2, y2(, score)], ...]}`` (the content of ``path``) -> ``{str(key): rows}``,
    each row ``[x1, y1, x2, y2, score]`` (score 1 where absent), rows scored below ``score_thr`` dropped, keys
    with no row left absent. A key whose value is not a list of such rows is a :class:`DataError` naming it."""
    boxes: dict[str, list[list[float]]] = {}
    for key, rows in data.items():
        if not isinstance(rows, list):
            raise DataError(f"{path}: {key!r}: expected a list of boxes [[x1, y1, x2, y2(, score)], ...]")
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or len(row) not in (4, 5):
                raise DataError(f"{path}: {key!r} box {i}: expected [x1, y1, x2, y2(, score)]")
            row = list(row) + [1.0] * (5 - len(row))
            if row[4] >= score_thr:
                boxes.setdefault(str(key), []).append(row)
    return boxes
