"""COCO-format keypoint annotations (COCO, AIC, CrowdPose, custom) -> person records.

One :class:`Record` per person instance, in the dataset's own keypoint schema. The
filtering and box handling follow MMPose 1.x's ``BaseCocoStyleDataset`` so that
training sets and GT-box evaluation sets have the same instances:

* boxes are clipped to ``[0, width - 1] x [0, height - 1]``; a box with no area left
  is skipped and counted;
* ``mode="train"`` drops crowd instances and those without labelled keypoints;
  ``mode="val"`` keeps every non-crowd instance;
* a missing ``area`` becomes 0.53 x the clipped box area (MMPose's fallback, used
  by OKS), a missing ``iscrowd`` is 0.

Malformed input fails with an error naming the file and the annotation id; only
zero-area boxes (common in real data) are skipped, with one summary warning per file.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from sagepose.keypoints import KeypointSchema, get_schema

AREA_FROM_BOX = 0.53  # MMPose's area estimate for annotations without 'area'


class ImageReadError(OSError):
    """An image that is missing or cannot be decoded; the message starts with its path."""


@dataclass(frozen=True, eq=False)
class Record:
    """One person instance.

    ``keypoints`` (K, 2) float32 image px; ``visible`` (K,) float32, 1 where the joint
    is labelled (v > 0); ``flags`` (K,) float32, COCO's raw v (0 / 1 / 2).
    ``bbox_xywh`` (4,) float32 is already clipped to the image.
    """

    image_path: str
    image_id: int
    ann_id: int
    bbox_xywh: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    flags: np.ndarray
    area: float
    width: int
    height: int
    bbox_score: float = 1.0

    @property
    def num_keypoints(self) -> int:
        return int(np.count_nonzero(self.visible))


def read_image(path: str) -> np.ndarray:
    """Decode an image file -> (H, W, 3) BGR uint8; :class:`ImageReadError` if missing or corrupt."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        raise ImageReadError(f"{path}: missing") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: cannot decode (corrupt or not an image)")
    return img


def _read_json(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: annotation file not found")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None


def _require(obj: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in obj:
            raise ValueError(f"{where}: missing required field {key!r}")


def _image_index(path: str, data) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO json object, got {type(data).__name__}")
    _require(data, ("images", "annotations"), path)
    images = {}
    for i, img in enumerate(data["images"]):
        _require(img, ("id", "file_name", "width", "height"), f"{path}: image {img.get('id', f'#{i}')}")
        images[img["id"]] = img
    return images


def _clip_box_xywh(box, width: int, height: int) -> np.ndarray:
    x, y, w, h = (float(v) for v in box[:4])
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)


def _warn_skipped(path: str, skipped: Counter) -> None:
    if skipped:
        parts = ", ".join(f"{n} {why}" for why, n in skipped.items())
        warnings.warn(f"skipped {sum(skipped.values())} annotations in {path}: {parts}", stacklevel=3)


def load_coco(json_path: str, schema: str | KeypointSchema = "coco", image_root: str | None = None,
              mode: str = "train") -> list[Record]:
    """Read a COCO-format keypoint json -> records in annotation order.

    ``image_root`` defaults to the json's folder; ``mode`` is ``"train"`` or ``"val"``.
    """
    if mode not in ("train", "val"):
        raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
    schema = get_schema(schema)
    path = os.fspath(json_path)
    data = _read_json(path)
    images = _image_index(path, data)
    root = os.path.dirname(path) if image_root is None else os.fspath(image_root)
    num_values = 3 * schema.num_keypoints
    records: list[Record] = []
    skipped: Counter = Counter()
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}")
        where = f"{path}: annotation {ann_id}"
        _require(ann, ("id", "image_id", "bbox", "keypoints"), where)
        if len(ann["bbox"]) != 4:
            raise ValueError(f"{where}: expected 4 bbox values, got {len(ann['bbox'])}")
        if len(ann["keypoints"]) != num_values:
            raise ValueError(f"{where}: expected {num_values} keypoint values, got {len(ann['keypoints'])}")
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(f"{where}: image_id {ann['image_id']} has no entry in 'images'")
        if ann.get("iscrowd", 0):
            continue
        kpt = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
        flags = kpt[:, 2].copy()
        visible = (flags > 0).astype(np.float32)
        num_kpts = ann.get("num_keypoints", int(visible.sum()))
        if mode == "train" and (num_kpts == 0 or kpt[:, :2].max() <= 0):
            continue
        box = _clip_box_xywh(ann["bbox"], img["width"], img["height"])
        if box[2] <= 0 or box[3] <= 0:
            skipped["zero-area boxes"] += 1
            continue
        area = ann["area"] if "area" in ann else max(float(box[2] * box[3]) * AREA_FROM_BOX, 1.0)
        records.append(Record(
            image_path=os.path.join(root, img["file_name"]), image_id=ann["image_id"], ann_id=ann_id,
            bbox_xywh=box, keypoints=np.ascontiguousarray(kpt[:, :2]), visible=visible, flags=flags,
            area=float(area), width=int(img["width"]), height=int(img["height"])))
    _warn_skipped(path, skipped)
    return records


def load_detections(det_json: str, coco_json: str, schema: str | KeypointSchema = "coco",
                    image_root: str | None = None, score_thr: float = 0.0,
                    category_id: int = 1) -> list[Record]:
    """Person detections (COCO results format: image_id, bbox xywh, score) -> records for evaluation.

    Images are looked up in ``coco_json``; keypoints are zeros with ``visible`` 0 and
    ``ann_id`` is the detection's index in the file. Boxes are used as given (MMPose
    does not clip detections); zero-area boxes are skipped with a warning.
    """
    schema = get_schema(schema)
    det_path, coco_path = os.fspath(det_json), os.fspath(coco_json)
    dets = _read_json(det_path)
    if not isinstance(dets, list):
        raise ValueError(f"{det_path}: expected a list of detections, got {type(dets).__name__}")
    images = _image_index(coco_path, _read_json(coco_path))
    root = os.path.dirname(coco_path) if image_root is None else os.fspath(image_root)
    k = schema.num_keypoints
    records: list[Record] = []
    skipped: Counter = Counter()
    for i, det in enumerate(dets):
        where = f"{det_path}: detection {i}"
        _require(det, ("image_id", "bbox", "score"), where)
        if det.get("category_id", category_id) != category_id:
            continue
        if det["score"] < score_thr:
            continue
        img = images.get(det["image_id"])
        if img is None:
            raise ValueError(f"{where}: image_id {det['image_id']} has no entry in {coco_path}")
        box = np.asarray(det["bbox"][:4], np.float32)
        if box[2] <= 0 or box[3] <= 0:
            skipped["zero-area boxes"] += 1
            continue
        records.append(Record(
            image_path=os.path.join(root, img["file_name"]), image_id=det["image_id"], ann_id=i,
            bbox_xywh=box, keypoints=np.zeros((k, 2), np.float32), visible=np.zeros(k, np.float32),
            flags=np.zeros(k, np.float32), area=float(box[2] * box[3]), width=int(img["width"]),
            height=int(img["height"]), bbox_score=float(det["score"])))
    _warn_skipped(det_path, skipped)
    return records
