"""MPII annotations in the json form MMPose converts them to -> person records, and MPII head sizes.

The json is a list of records ``{"image", "center": [x, y], "scale", "joints": 16 x [x, y], "joints_vis": 16}``,
``scale`` the person's height in units of 200 px. Each becomes one :class:`sagepose.data.coco.Record` in
:data:`sagepose.keypoints.MPII16`, parsed exactly as MMPose 1.3.2's ``MpiiDataset`` does, so crops and PCKh
reproduce its numbers:

* the centre moves down by 15 / 200 of the scale (``y += 0.075 x scale x 200``, MMPose's guard against cropping
  the feet; skipped where ``center[0] == -1``), then by -1 on both axes (MATLAB's 1-based pixels to 0-based);
* the box is the square of side ``scale x 200`` around that centre, **not** clipped to the image (MMPose does not
  clip it); its centre and size are the centre and scale MMPose crops with (sagepose's crop pads it by 1.25 from
  the box, as MMPose's ``GetBBoxCenterScale`` pads the stored scale);
* the joints stay as the json has them, **1-based** (MMPose moves only the centre; ``eval.pckh`` adds 1 to
  0-based predictions before comparing); ``visible`` is ``joints_vis > 0``, ``flags`` the raw ``joints_vis``;
* ``area`` is 0.53 x the box area (at least 1), ``image_id`` the image name's number (``005808361.jpg`` ->
  5808361), ``ann_id`` the record's index in the file; ``width`` / ``height`` are 0: MPII's json has no image size.

Head boxes (the unit of PCKh) come from MPII's ``mpii_gt_val.mat`` (``headboxes_src``, read with scipy, which is
then needed) or a json list of ``[[x1, y1], [x2, y2]]`` (or ``[x1, y1, x2, y2]``), one per record in file order;
:func:`load_mpii_set` returns them as head sizes aligned with the records and sets each record's ``head_size``.
Malformed input fails with a :class:`~sagepose.errors.DataError` naming the file and the record index.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from sagepose.data.coco import AREA_FROM_BOX, Record, read_json
from sagepose.errors import DataError
from sagepose.geometry import mpii_head_size
from sagepose.keypoints import MPII16

PIXEL_STD = 200.0  # MPII's scale unit: scale x 200 = the person's height in pixels
CENTER_SHIFT = 15.0  # MMPose moves the centre down by 15 / 200 of the scale to keep the feet in the crop
_KEYS = ("image", "center", "scale", "joints", "joints_vis")


class MpiiSet(NamedTuple):
    """MPII records and, where head boxes were given, their head sizes: ``head_sizes`` (N,) px, aligned with
    ``records`` (0.6 x the head box diagonal; each record's ``head_size`` too), else None."""

    records: list[Record]
    head_sizes: np.ndarray | None


def _numbers(value, shape: tuple[int, ...], what: str, where: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape``, every entry a finite number; DataError naming ``where`` if not."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} must be numbers, got {value!r}") from None
    if arr.shape != shape:
        raise DataError(f"{where}: {what} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {what} has non-finite values")
    return arr


def _image_id(name: str, where: str) -> int:
    stem = os.path.splitext(os.path.basename(name))[0]
    if not stem.isdigit():
        raise DataError(f"{where}: image {name!r}: MPII image names are numbers (e.g. 005808361.jpg)")
    return int(stem)


def _record(ann, index: int, path: str, root: str) -> Record:
    where = f"{path}: record {index}"
    if not isinstance(ann, dict):
        raise DataError(f"{where}: expected an object with {', '.join(_KEYS)}, got {type(ann).__name__}")
    for key in _KEYS:
        if key not in ann:
            raise DataError(f"{where}: missing required field {key!r}")
    if not isinstance(ann["image"], str) or not ann["image"]:
        raise DataError(f"{where}: image must be a file name, got {ann['image']!r}")
    k = MPII16.num_keypoints
    center = _numbers(ann["center"], (2,), "center", where).astype(np.float32)
    scale = _numbers(ann["scale"], (), "scale", where)
    if scale <= 0:
        raise DataError(f"{where}: scale must be > 0, got {float(scale)}")
    joints = ann["joints"]
    if isinstance(joints, (list, tuple)) and len(joints) != k:
        raise DataError(f"{where}: expected {k} joints, got {len(joints)}")
    joints = _numbers(joints, (k, 2), "joints", where).astype(np.float32)
    vis = ann["joints_vis"]
    if isinstance(vis, (list, tuple)) and len(vis) != k:
        raise DataError(f"{where}: expected {k} joints_vis values, got {len(vis)}")
    flags = _numbers(vis, (k,), "joints_vis", where).astype(np.float32)

    # MpiiDataset's arithmetic, in its float32
    size = np.float32(scale) * np.float32(PIXEL_STD)
    if center[0] != -1:
        center[1] = center[1] + np.float32(CENTER_SHIFT / PIXEL_STD) * size
    center = center - np.float32(1.0)
    x1y1 = center - np.float32(0.5) * size
    x2y2 = x1y1 + size
    area = max(float(np.float32((x2y2[0] - x1y1[0]) * (x2y2[1] - x1y1[1]) * AREA_FROM_BOX)), 1.0)
    return Record(
        image_path=os.path.join(root, ann["image"]), image_id=_image_id(ann["image"], where), ann_id=index,
        bbox_xywh=np.array([x1y1[0], x1y1[1], x2y2[0] - x1y1[0], x2y2[1] - x1y1[1]], np.float32),
        keypoints=np.ascontiguousarray(joints), visible=(flags > 0).astype(np.float32), flags=flags,
        area=area, width=0, height=0)


def _headbox(value, where: str) -> np.ndarray:
    flat = np.asarray(value, dtype=object).reshape(-1) if isinstance(value, (list, tuple)) else None
    if flat is None or len(flat) != 4:
        raise DataError(f"{where}: expected [[x1, y1], [x2, y2]] or [x1, y1, x2, y2], got {value!r}")
    return _numbers(value, np.shape(value), "head box", where).reshape(2, 2)


def read_headboxes(path: str) -> np.ndarray:
    """MPII head boxes -> (N, 2, 2) ``[[x1, y1], [x2, y2]]`` float64, in record order.

    ``path``: MPII's ``mpii_gt_val.mat`` (``headboxes_src`` (2, 2, N); needs scipy) or a json list of N
    ``[[x1, y1], [x2, y2]]`` or ``[x1, y1, x2, y2]``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: head boxes file not found")
    if path.lower().endswith(".mat"):
        try:
            from scipy.io import loadmat
        except ImportError:
            raise DataError(f"{path}: reading MPII .mat head boxes needs scipy (pip install scipy)") from None
        try:
            mat = loadmat(path)
        except Exception as e:  # scipy raises ValueError / TypeError / OSError on files that are not .mat
            raise DataError(f"{path}: not a MATLAB .mat file: {e}") from None
        if "headboxes_src" not in mat:
            raise DataError(f"{path}: no 'headboxes_src' variable (expected MPII's mpii_gt_val.mat)")
        src = np.asarray(mat["headboxes_src"])
        if src.ndim != 3 or src.shape[:2] != (2, 2):
            raise DataError(f"{path}: headboxes_src must be (2, 2, N), got {src.shape}")
        boxes = np.transpose(src, (2, 0, 1))
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of head boxes, got {type(data).__name__}")
        boxes = [_headbox(b, f"{path}: head box {i}") for i, b in enumerate(data)]
        boxes = np.stack(boxes) if boxes else np.zeros((0, 2, 2))
    boxes = np.asarray(boxes, np.float64)
    if not np.isfinite(boxes).all():
        raise DataError(f"{path}: head boxes have non-finite values")
    return boxes


def load_mpii_set(json_path: str, image_root: str | None = None, headboxes: str | None = None) -> MpiiSet:
    """Read an MPII json (MMPose's form) -> :class:`MpiiSet`: records in file order and, when ``headboxes`` (a
    .mat or json file, see :func:`read_headboxes`) is given, their head sizes. ``image_root`` defaults to the
    json's folder. The number of head boxes must equal the number of records; each record's ``head_size`` is its
    head size (NaN without head boxes)."""
    path = os.fspath(json_path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of MPII records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no records")
    root = os.path.dirname(path) if image_root is None else os.fspath(image_root)
    records = [_record(ann, i, path, root) for i, ann in enumerate(data)]
    head_sizes = None
    if headboxes is not None:
        boxes = read_headboxes(headboxes)
        if len(boxes) != len(records):
            raise DataError(f"{os.fspath(headboxes)}: {len(boxes)} head boxes for the {len(records)} records "
                            f"of {path}")
        head_sizes = mpii_head_size(boxes)
        records = [replace(r, head_size=float(size)) for r, size in zip(records, head_sizes)]
    return MpiiSet(records, head_sizes)


def load_mpii(json_path: str, image_root: str | None = None, headboxes: str | None = None) -> list[Record]:
    """The records of :func:`load_mpii_set` (head boxes, when given, checked against them too)."""
    return load_mpii_set(json_path, image_root, headboxes).records


__all__ = ["CENTER_SHIFT", "PIXEL_STD", "MpiiSet", "load_mpii", "load_mpii_set", "read_headboxes"]
