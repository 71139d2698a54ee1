"""PoseTrack18 annotations (COCO-style json, one file per video or MMPose's merged file) -> person records.

PoseTrack18's json files are COCO keypoint files with video fields: each ``images`` entry has ``vid_id``,
``frame_id``, ``is_labeled``, ``ignore_regions_x`` / ``ignore_regions_y``, and a ``file_name`` that is already the
path from the dataset root (``images/val/000342_mpii_test/000000.jpg``); annotations add ``track_id`` and
``bbox_head``. :func:`load_posetrack18` reads one such file, or a folder of per-video files, into
:class:`sagepose.data.coco.Record` s in :data:`POSETRACK18`, parsed as MMPose 1.3.2's ``PoseTrack18Dataset`` (a
plain ``BaseCocoStyleDataset``, top-down) parses them:

* records come image by image in file order, each image's annotations in file order (xtcocotools' index);
  a folder's files are read in name order;
* every image counts, ``is_labeled`` or not: MMPose does not look at it (PoseTrack18 puts no annotations on
  unlabelled frames); the video fields and ignore regions are not part of a record;
* an annotation is dropped, in train and evaluation alike (MMPose filters both the same way), when it has no
  ``bbox`` or no ``keypoints``, is a crowd, has ``num_keypoints`` 0, has a box with no area left after clipping
  to ``[0, width - 1] x [0, height - 1]``, or has no keypoint coordinate > 0; the drops are counted in one
  warning per call;
* ``visible`` is ``v > 0``, ``flags`` the raw ``v``; ``area`` the json's or 0.53 x the clipped box
  (:func:`sagepose.data.coco.annotation_area`; PoseTrack18 gives none).

Malformed input fails with a :class:`~sagepose.errors.DataError` naming the file and the annotation (or image)
id: a missing path, a folder without json files, invalid JSON, a missing field, a bbox that is not 4 finite
numbers, keypoints that are not 17 x 3 numbers, an annotation of an unknown image, an image id used twice,
category keypoint names that are not PoseTrack18's, no usable annotation at all.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict

import numpy as np

from sagepose.data.coco import (
    Record,
    _check_keypoint_names,
    _clip_box_xywh,
    annotation_area,
    image_index,
    read_json,
    warn_skipped,
)
from sagepose.errors import DataError
from sagepose.keypoints import POSETRACK18


def _json_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(".json"))
        if not files:
            raise DataError(f"{path}: folder holds no PoseTrack18 json files")
        return files
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such PoseTrack18 annotation file or folder")
    return [path]


def _numbers(value, n: int, what: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} must be numbers, got {value!r}") from None
    if arr.shape != (n,):
        raise DataError(f"{where}: expected {n} {what} values, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {what} {value!r} has non-finite values")
    return arr


def _read_file(path: str, root: str, seen_images: dict, skipped: Counter) -> list[Record]:
    try:  # coco's helpers name the file; raised again as the data error the CLI prints in one line
        data = read_json(path)
        images = image_index(path, data)
        _check_keypoint_names(path, data, POSETRACK18)
    except ValueError as e:
        raise DataError(str(e)) from None
    if len(images) != len(data["images"]):
        counts = Counter(img["id"] for img in data["images"])
        raise DataError(f"{path}: image {next(i for i, n in counts.items() if n > 1)} appears more than once")
    for img_id in images:
        if img_id in seen_images:
            raise DataError(f"{path}: image {img_id} is also in {seen_images[img_id]}")
        seen_images[img_id] = path
    by_image = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation #{i}: expected an object, got {type(ann).__name__}")
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        for key in ("id", "image_id"):
            if key not in ann:
                raise DataError(f"{where}: missing required field {key!r}")
        if ann["image_id"] not in images:
            raise DataError(f"{where}: image_id {ann['image_id']} has no entry in 'images'")
        by_image[ann["image_id"]].append((where, ann))
    k = POSETRACK18.num_keypoints
    records = []
    for img_id, img in images.items():  # MMPose's order: images in file order, then their annotations
        for where, ann in by_image[img_id]:
            if "bbox" not in ann or "keypoints" not in ann:
                skipped["without bbox or keypoints"] += 1
                continue
            box_xywh = _numbers(ann["bbox"], 4, "bbox", where)
            kpt = _numbers(ann["keypoints"], 3 * k, "keypoint", where).astype(np.float32).reshape(k, 3)
            if ann.get("iscrowd", 0):
                skipped["crowd"] += 1
                continue
            # MMPose's fallback count is of joints with a non-zero coordinate (not v > 0); kept for parity
            num_kpts = ann["num_keypoints"] if "num_keypoints" in ann else np.count_nonzero(kpt[:, :2].max(1))
            if num_kpts == 0 or kpt[:, :2].max() <= 0:
                skipped["without labelled keypoints"] += 1
                continue
            box = _clip_box_xywh(box_xywh, img["width"], img["height"])
            if box[2] <= 0 or box[3] <= 0:
                skipped["zero-area boxes"] += 1
                continue
            flags = kpt[:, 2].copy()
            records.append(Record(
                image_path=os.path.join(root, img["file_name"]), image_id=img_id, ann_id=ann["id"],
                bbox_xywh=box, keypoints=np.ascontiguousarray(kpt[:, :2]), visible=(flags > 0).astype(np.float32),
                flags=flags, area=annotation_area(ann, img), width=int(img["width"]), height=int(img["height"])))
    return records


def load_posetrack18(json_path_or_dir: str, image_root: str) -> list[Record]:
    """Read a PoseTrack18 json (per-video, or MMPose's merged ``posetrack18_val.json``) or a folder of
    per-video jsons -> records in :data:`POSETRACK18`, in MMPose's order (see the module docstring).

    ``image_root`` is the dataset root: ``file_name`` already holds ``images/<split>/<video>/<frame>.jpg``.
    """
    path = os.fspath(json_path_or_dir)
    root = os.fspath(image_root)
    seen_images: dict = {}
    skipped: Counter = Counter()
    records = [rec for f in _json_files(path) for rec in _read_file(f, root, seen_images, skipped)]
    warn_skipped(path, skipped)
    if not records:
        raise DataError(f"{path}: no usable annotation (each is a crowd, without labelled keypoints, or with "
                        f"no box area in its image)")
    return records
