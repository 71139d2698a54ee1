"""COCO-format keypoint annotations (COCO, AIC, CrowdPose, custom) -> person records.

One :class:`Record` per person instance, in the dataset's own keypoint schema. The
filtering and box handling follow MMPose 1.x's ``BaseCocoStyleDataset`` so that
training sets and GT-box evaluation sets have the same instances:

* boxes are clipped to ``[0, width - 1] x [0, height - 1]``; a box with no area left
  is skipped and counted;
* ``mode="train"`` drops crowd instances and those without labelled keypoints;
  ``mode="val"`` keeps every non-crowd instance;
* a missing ``area`` becomes 0.53 x the clipped box area (MMPose's fallback, used
  by OKS; :func:`annotation_area`, which evaluation uses too), a missing ``iscrowd`` is 0;
* an optional ``head_box`` ``[x1, y1, x2, y2]`` px (MPII's head rectangle; the synthetic
  generator writes one per person) becomes the record's ``head_size``, the unit of PCKh.

Image paths: a relative ``file_name`` resolves against the first of these folders that holds the json's images (a
few of them probed: :func:`resolve_image_root`): ``image_root`` (``data.image_root``) when given, the json's own
folder, and the absolute ``info.image_root`` a sagepose-written json records (the folder its ``file_name`` s were
relative to when written). sagepose writes ``file_name`` s relative to the json's own folder
(:func:`rebase_file_names`), so its jsons resolve from any working directory. When none of those folders holds
the images but another nearby folder does, the error names it (``pass data.image_root=...``).

Malformed input fails with an error naming the file and the annotation id: a
non-finite box, keypoint names (``categories[i]["keypoints"]``) that are not the
schema's, a file with no usable annotation. Only zero-area boxes (common in real
data) are skipped, with one summary warning per file. Detections (COCO results) are
read by :mod:`sagepose.data.detections`.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagepose.errors import DataError
from sagepose.geometry import BOX_NONFINITE, check_boxes, mpii_head_size
from sagepose.keypoints import KeypointSchema, load_schema

AREA_FROM_BOX = 0.53  # MMPose's area estimate for annotations without 'area'
PROBED_IMAGES = 3  # images (first, middle, last) probed to choose a json's image root
HINT_LEVELS = 2  # folders above the json (and above image_root) searched, with their subfolders, for a hint


@dataclass(frozen=True, eq=False)
class Record:
    """One person instance.

    ``keypoints`` (K, 2) float32 image px; ``visible`` (K,) float32, 1 where the joint
    is labelled (v > 0); ``flags`` (K,) float32, COCO's raw v (0 / 1 / 2).
    ``bbox_xywh`` (4,) float32 is already clipped to the image. ``head_size`` px: MPII's PCKh unit, 0.6 x the
    diagonal of the person's head box (:func:`sagepose.geometry.mpii_head_size`), NaN where the file gives none.
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
    head_size: float = float("nan")

    @property
    def num_keypoints(self) -> int:
        return int(np.count_nonzero(self.visible))


def read_json(path: str):
    """A json file's content; FileNotFoundError / ValueError naming the file when missing or not JSON."""
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


def image_index(path: str, data) -> dict:
    """{image id: ``images`` entry} of a COCO json's content, every entry with id, file_name, width, height."""
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO json object, got {type(data).__name__}")
    _require(data, ("images", "annotations"), path)
    images = {}
    for i, img in enumerate(data["images"]):
        _require(img, ("id", "file_name", "width", "height"), f"{path}: image {img.get('id', f'#{i}')}")
        images[img["id"]] = img
    return images


def _probe_names(images) -> list[str]:
    """Up to :data:`PROBED_IMAGES` distinct relative ``file_name`` s of an ``images`` list: first, middle, last."""
    names = [img.get("file_name") for img in images if isinstance(img, dict)]
    names = [n for n in names if isinstance(n, str) and n and not os.path.isabs(n)]
    if not names:
        return []
    picks = {0, len(names) // 2, len(names) - 1}
    return list(dict.fromkeys(names[i] for i in sorted(picks)))[:PROBED_IMAGES]


def recorded_image_root(data) -> str | None:
    """The absolute ``info.image_root`` a json records (sagepose writes it), or None."""
    info = data.get("info") if isinstance(data, dict) else None
    root = info.get("image_root") if isinstance(info, dict) else None
    return root if isinstance(root, str) and os.path.isabs(root) else None


def image_roots(json_path: str, data, image_root: str | None = None) -> list[str]:
    """The folders a json's relative ``file_name`` s are looked up in, in order: ``image_root`` when given, the
    json's own folder, the absolute ``info.image_root`` it records (duplicates dropped)."""
    roots = [] if image_root is None else [os.fspath(image_root)]
    roots.append(os.path.dirname(os.fspath(json_path)))
    recorded = recorded_image_root(data)
    if recorded is not None:
        roots.append(recorded)
    seen, out = set(), []
    for root in roots:
        key = os.path.abspath(root)
        if key not in seen:
            seen.add(key)
            out.append(root)
    return out


def resolve_image_root(json_path: str, data, image_root: str | None = None) -> str:
    """The folder a COCO json's relative ``file_name`` s resolve against: the first of :func:`image_roots` that
    holds any of a few probed images (first, middle, last). When none does, the first of them (images may be
    absent on purpose: labels read for scoring only) -- unless another folder near the json or ``image_root``
    holds all the probed images: then a :class:`DataError` naming the folders looked in and the one to pass."""
    path = os.fspath(json_path)
    roots = image_roots(path, data, image_root)
    names = _probe_names((data.get("images") if isinstance(data, dict) else None) or [])
    if not names:
        return roots[0]
    for root in roots:
        if any(os.path.isfile(os.path.join(root, n)) for n in names):
            return root
    found = _search_root(names, roots)
    if found is not None:
        tried = ", ".join(os.path.abspath(r) for r in roots)
        raise DataError(f"{path}: image {names[0]}: missing (looked in {tried}; the images exist under {found}: "
                        f"pass data.image_root={found})")
    return roots[0]


def _search_root(names: list[str], roots: list[str]) -> str | None:
    """The nearest folder holding every one of ``names``: the roots, then their parents up to :data:`HINT_LEVELS`
    up, each with its subfolders (COCO's ``annotations/`` beside ``val2017/``); None when there is none."""
    levels, seen = [os.path.abspath(r) for r in roots], set()
    for _ in range(HINT_LEVELS + 1):
        for folder in levels:
            for candidate in (folder, *_subfolders(folder)):
                if candidate not in seen:
                    seen.add(candidate)
                    if all(os.path.isfile(os.path.join(candidate, n)) for n in names):
                        return candidate
        levels = [os.path.dirname(f) for f in levels]
    return None


def _subfolders(folder: str, limit: int = 1000) -> list[str]:
    """Up to ``limit`` subfolders of ``folder`` (from the directory entries' types: no stat per file)."""
    out = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    out.append(entry.path)
                    if len(out) == limit:
                        break
    except OSError:
        pass
    return sorted(out)


def rebase_file_names(images: list[dict], from_root: str | os.PathLike, to_dir: str | os.PathLike) -> list[dict]:
    """``images`` entries whose relative ``file_name`` s (relative to ``from_root``) are re-expressed relative to
    ``to_dir`` (the folder a json is written into), ``/``-separated; absolute ones stay absolute, and those that
    share no folder with ``to_dir`` but the file system's root (or another drive) become absolute. New dicts; the
    input is not changed."""
    src, dst = os.path.abspath(from_root), os.path.abspath(to_dir)
    out = []
    for img in images:
        name = img["file_name"]
        if not os.path.isabs(name) and src != dst:
            full = os.path.normpath(os.path.join(src, name))
            try:
                shared = os.path.commonpath([full, dst])
            except ValueError:  # Windows: another drive
                shared = ""
            anchor = Path(full).anchor
            name = Path(os.path.relpath(full, dst) if shared and shared != anchor else full).as_posix()
        out.append({**img, "file_name": name})
    return out


def _clip_box_xywh(box, width: int, height: int) -> np.ndarray:
    x, y, w, h = (float(v) for v in box[:4])
    x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float32)


def annotation_area(ann: dict, image: dict) -> float:
    """An annotation's ``area``, or MMPose's fallback where it has none: 0.53 x its box clipped to the image
    (at least 1). The reader's records and the ground truth handed to pycocotools both take it from here."""
    if "area" in ann:
        return float(ann["area"])
    box = _clip_box_xywh(ann["bbox"], image["width"], image["height"])
    return max(float(box[2] * box[3]) * AREA_FROM_BOX, 1.0)


def read_ground_truth(json_path: str) -> dict:
    """A COCO keypoint json as pycocotools evaluates it, missing fields given the reader's values:
    ``area`` :func:`annotation_area`, ``iscrowd`` 0, ``num_keypoints`` the count of labelled keypoints."""
    path = os.fspath(json_path)
    data = read_json(path)
    images = image_index(path, data)
    for i, ann in enumerate(data["annotations"]):
        if "area" not in ann:
            if "bbox" not in ann or ann.get("image_id") not in images:
                raise ValueError(f"{path}: annotation {ann.get('id', f'#{i}')}: no 'area', and no 'bbox' "
                                 f"and image to estimate it from")
            ann["area"] = annotation_area(ann, images[ann["image_id"]])
        ann.setdefault("iscrowd", 0)
        if "num_keypoints" not in ann and "keypoints" in ann:
            ann["num_keypoints"] = _num_labelled(ann["keypoints"])
    return data


def _head_sizes(anns: list[dict], path: str) -> np.ndarray:
    """(len(anns),) float64: each annotation's MPII head size from its ``head_box`` ``[x1, y1, x2, y2]``, NaN
    where it has none; a malformed box is a DataError naming the file and the annotation."""
    boxes = np.full((len(anns), 4), np.nan)
    for i, ann in enumerate(anns):
        if "head_box" not in ann:
            continue
        box = ann["head_box"]
        where = f"{path}: annotation {ann.get('id', f'#{i}')}: head_box {box!r}"
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise DataError(f"{where}: expected 4 numbers [x1, y1, x2, y2]")
        box = np.asarray(box, np.float64)
        if not np.isfinite(box).all():
            raise DataError(f"{where}: non-finite values")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{where}: empty or inverted (needs x2 > x1 and y2 > y1)")
        boxes[i] = box
    labelled = ~np.isnan(boxes[:, 0])
    sizes = np.full(len(anns), np.nan)
    if labelled.any():
        sizes[labelled] = mpii_head_size(boxes[labelled])
    return sizes


def _num_labelled(keypoints) -> int:
    return int(np.count_nonzero(np.asarray(keypoints, np.float32).reshape(-1, 3)[:, 2] > 0))


def warn_skipped(path: str, skipped: Counter, what: str = "annotations") -> None:
    """One warning for what a reader skipped in ``path``: ``skipped 3 annotations in PATH: 2 why, 1 why``."""
    if skipped:
        parts = ", ".join(f"{n} {why}" for why, n in skipped.items())
        warnings.warn(f"skipped {sum(skipped.values())} {what} in {path}: {parts}", stacklevel=3)


def _check_keypoint_names(path: str, data: dict, schema: KeypointSchema) -> None:
    """The keypoint names of the json's categories, where it gives them, must be the schema's (in order)."""
    for cat in data.get("categories") or []:
        names = cat.get("keypoints") if isinstance(cat, dict) else None
        if not names:
            continue
        where = f"{path}: category {cat.get('id', '?')}"
        if len(names) != schema.num_keypoints:
            raise ValueError(f"{where} names {len(names)} keypoints, schema {schema.name} has "
                             f"{schema.num_keypoints}")
        diff = schema.name_mismatches(names)
        if diff:
            shown = ", ".join(f"{want!r} vs {got!r}" for _, want, got in diff[:4]) + (", ..." if len(diff) > 4 else "")
            raise ValueError(f"{where} keypoints differ from schema {schema.name} at {len(diff)} of "
                             f"{schema.num_keypoints} positions: {shown}")


def load_coco(json_path: str, schema: str | KeypointSchema = "coco", image_root: str | None = None,
              mode: str = "train") -> list[Record]:
    """Read a COCO-format keypoint json -> records in annotation order.

    Relative image paths resolve as :func:`resolve_image_root` says (``image_root`` first when given, then the
    json's folder, then the folder it records); ``mode`` is ``"train"`` or ``"val"``. A file with no annotation
    left for ``mode`` is an error naming it.
    """
    if mode not in ("train", "val"):
        raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
    schema = load_schema(schema)
    path = os.fspath(json_path)
    data = read_json(path)
    images = image_index(path, data)
    _check_keypoint_names(path, data, schema)
    anns = data["annotations"]
    if not anns:
        raise ValueError(f"{path}: no annotations")
    root = resolve_image_root(path, data, image_root)
    num_values = 3 * schema.num_keypoints
    for i, ann in enumerate(anns):
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        _require(ann, ("id", "image_id", "bbox", "keypoints"), where)
        if len(ann["bbox"]) != 4:
            raise ValueError(f"{where}: expected 4 bbox values, got {len(ann['bbox'])}")
        if len(ann["keypoints"]) != num_values:
            raise ValueError(f"{where}: expected {num_values} keypoint values, got {len(ann['keypoints'])}")
        if ann["image_id"] not in images:
            raise ValueError(f"{where}: image_id {ann['image_id']} has no entry in 'images'")
    # empty, inverted and off-image GT boxes are clipped to nothing and skipped below; a NaN one is an error
    _, problems = check_boxes([ann["bbox"] for ann in anns], fmt="xywh", where=path, strict=False)
    for i in np.flatnonzero(problems == BOX_NONFINITE)[:1]:
        raise ValueError(f"{path}: annotation {anns[i]['id']}: bbox {anns[i]['bbox']}: {BOX_NONFINITE}")
    head_sizes = _head_sizes(anns, path)
    records: list[Record] = []
    skipped: Counter = Counter()
    for ann, head_size in zip(anns, head_sizes):
        ann_id, img = ann["id"], images[ann["image_id"]]
        if ann.get("iscrowd", 0):
            continue
        kpt = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
        flags = kpt[:, 2].copy()
        visible = (flags > 0).astype(np.float32)
        num_kpts = ann.get("num_keypoints", _num_labelled(ann["keypoints"]))
        if mode == "train" and (num_kpts == 0 or kpt[:, :2].max() <= 0):
            continue
        box = _clip_box_xywh(ann["bbox"], img["width"], img["height"])
        if box[2] <= 0 or box[3] <= 0:
            skipped["zero-area boxes"] += 1
            continue
        records.append(Record(
            image_path=os.path.join(root, img["file_name"]), image_id=ann["image_id"], ann_id=ann_id,
            bbox_xywh=box, keypoints=np.ascontiguousarray(kpt[:, :2]), visible=visible, flags=flags,
            area=annotation_area(ann, img), width=int(img["width"]), height=int(img["height"]),
            head_size=float(head_size)))
    warn_skipped(path, skipped)
    if not records:
        raise ValueError(f"{path}: none of its {len(anns)} annotations is usable for mode={mode!r} "
                         f"(crowd, without labelled keypoints, or with no box area in the image)")
    return records
