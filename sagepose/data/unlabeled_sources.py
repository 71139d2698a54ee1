"""Unlabeled sources for semi-supervised training (``ssl.unlabeled``) -> instance records.

A source (one entry of ``ssl.unlabeled``) is a path, its kind detected, or a dict
``{"path", "kind", "every_n", "score_thr", "images", "root", "category_id"}``:

* ``images``: a folder of images (recursive, sorted); each image is one whole-frame instance;
* ``video``: every n-th frame of a video (with the frame after each, for the temporal term), decoded
  once into a JPEG cache (:mod:`sagepose.data.video_frames`), so training gets a map-style dataset;
* ``detections``: COCO results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``), images found
  in an ``images`` list (``file_name``) or, without one, as ``{image_id:012d}.jpg`` in the root
  (Sapiens' recipe); ``coco``: a COCO json whose annotations carry boxes (keypoints ignored). Both are
  read by :func:`sagepose.data.detections.parse_detections` (crowd entries and image ids with no
  ``images`` entry skipped and counted).

Image sizes come from the file headers (:func:`sagepose.image.image_size`). Boxes that
are not finite, empty or wholly outside their image, images that are missing and frames that do
not decode are skipped and counted in one line per source; a source with nothing usable is an error
naming it. :class:`sagepose.data.unlabeled.UnlabeledDataset` crops the records' boxes.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagepose import geometry
from sagepose.config import ConfigError
from sagepose.data.coco import image_index, read_json
from sagepose.data.detections import FILTERED, NO_IMAGE_ENTRY, Detection, parse_detections
from sagepose.data.video_frames import cached_frames, frame_file
from sagepose.errors import DataError
from sagepose.image import ImageReadError, image_size

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
KINDS = ("images", "video", "detections", "coco")
SOURCE_KEYS = ("path", "kind", "every_n", "score_thr", "images", "root", "category_id")
SHOWN = 5  # file names a skip warning quotes

MISSING_FILE = "image file missing"
UNREADABLE = "unreadable image"
BAD_FRAME = "frames that failed to decode"


@dataclass(frozen=True, eq=False)
class UnlabeledRecord:
    """One unlabeled instance: ``bbox_xywh`` (4,) float32 image px, the whole image when no detector gave it.

    ``next_path``: the cached file of the video frame after this one (temporal term), else None;
    ``frame``: the frame number in its video (-1 for images); ``source``: the source's path.
    """

    image_path: str
    image_id: int
    bbox_xywh: np.ndarray
    width: int
    height: int
    score: float = 1.0
    next_path: str | None = None
    source: str = ""
    frame: int = -1


@dataclass(frozen=True)
class UnlabeledSource:
    """One entry of ``ssl.unlabeled``, its defaults filled in (:func:`parse_source`)."""

    path: str
    kind: str
    every_n: int
    score_thr: float
    images: str | None = None
    root: str | None = None
    category_id: int | None = None


def parse_source(spec, every_n: int = 10, score_thr: float = 0.3) -> UnlabeledSource:
    """A source string or dict -> :class:`UnlabeledSource`; :class:`ConfigError` naming the bad key or value."""
    if isinstance(spec, (str, os.PathLike)):
        spec = {"path": os.fspath(spec)}
    if not isinstance(spec, dict):
        raise ConfigError(f"ssl.unlabeled: a source is a path or a dict with 'path', got {spec!r}")
    for key in spec:
        if key not in SOURCE_KEYS:
            close = difflib.get_close_matches(str(key), SOURCE_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(SOURCE_KEYS)})"
            raise ConfigError(f"ssl.unlabeled: unknown source key {key!r}{hint}")
    if not isinstance(spec.get("path"), (str, os.PathLike)):
        raise ConfigError(f"ssl.unlabeled: source {spec!r} has no 'path'")
    path = os.fspath(spec["path"])
    n = spec.get("every_n", every_n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"ssl.unlabeled: {path}: every_n must be an integer >= 1, got {n!r}")
    thr = spec.get("score_thr", score_thr)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
        raise ConfigError(f"ssl.unlabeled: {path}: score_thr must be a finite number, got {thr!r}")
    kind = spec.get("kind") or _detect_kind(path)
    if kind not in KINDS:
        raise ConfigError(f"ssl.unlabeled: {path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return UnlabeledSource(path, kind, n, float(thr), spec.get("images"), spec.get("root"), spec.get("category_id"))


def _detect_kind(path: str) -> str:
    if os.path.isdir(path):
        return "images"
    if not os.path.exists(path):
        raise DataError(f"{path}: unlabeled source not found (no such file or folder)")
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "images"
    if suffix == ".json":  # detections or COCO boxes: one reader, which names the kind from the content
        return "detections"
    raise DataError(f"{path}: not an unlabeled source (a folder of images, a video "
                    f"({', '.join(sorted(VIDEO_SUFFIXES))}) or a json of detections or boxes)")


def load_unlabeled(sources, *, root: str | None = None, cache_dir: str | None = None, every_n: int = 10,
                   score_thr: float = 0.3, temporal: bool = True, verbose: bool = True) -> list[UnlabeledRecord]:
    """``ssl.unlabeled`` (one source or a list) -> the records of every source, in order.

    ``root``: the image folder of detection jsons without an ``images`` list (``{image_id:012d}.jpg``)
    and of jsons whose sources give none; ``cache_dir``: where video frames are cached; ``every_n`` and
    ``score_thr``: the defaults of sources that do not set them; ``temporal``: also cache the frame after
    each kept one. One summary line per source (a warning when something was skipped for a problem).
    """
    specs = [sources] if isinstance(sources, (str, os.PathLike, dict)) else list(sources or [])
    if not specs:
        raise ConfigError("ssl.unlabeled: no unlabeled source given")
    records: list[UnlabeledRecord] = []
    for spec in specs:
        src = parse_source(spec, every_n, score_thr)
        if src.kind == "images":
            recs, skipped, line = _image_records(src)
        elif src.kind == "video":
            recs, skipped, line = _video_records(src, cache_dir, temporal)
        else:
            recs, skipped, line = _box_records(src, root)
        if not recs:
            why = _skip_text(skipped) or "nothing found"
            raise DataError(f"{src.path}: no usable unlabeled instance ({why})")
        if any(why not in FILTERED for why in skipped):
            warnings.warn(line, stacklevel=2)
        elif verbose:
            print(line, flush=True)
        records.extend(recs)
    return records


def _skip_text(skipped: Counter, names: dict[str, list[str]] | None = None) -> str:
    parts = []
    for why, n in skipped.items():
        named = (names or {}).get(why, [])  # distinct files, the first few quoted
        shown, more = named[:SHOWN], ", ..." if len(named) > SHOWN else ""
        parts.append(f"{n} {why}" + (f" ({', '.join(shown)}{more})" if shown else ""))
    return ", ".join(parts)


def _summary(src: UnlabeledSource, what: str, skipped: Counter, names=None) -> str:
    text = _skip_text(skipped, names)
    return f"unlabeled {src.kind} {src.path}: {what}" + (f"; skipped {text}" if text else "")


def _whole(path: str, image_id: int, width: int, height: int, src: UnlabeledSource, **kw) -> UnlabeledRecord:
    return UnlabeledRecord(image_path=path, image_id=image_id, bbox_xywh=np.array([0, 0, width, height], np.float32),
                           width=width, height=height, source=src.path, **kw)


# ---------------------------------------------------------------- images


def _image_records(src: UnlabeledSource):
    base = Path(src.path)
    if base.is_dir():
        files = sorted((p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: p.relative_to(base).as_posix())
        if not files:
            raise DataError(f"{src.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder or below")
    elif base.is_file():
        files = [base]
    else:
        raise DataError(f"{src.path}: unlabeled source not found (no such file or folder)")
    records, skipped, names = [], Counter(), {}
    for i, p in enumerate(files):
        try:
            w, h = image_size(str(p))
        except ImageReadError:
            skipped[UNREADABLE] += 1
            names.setdefault(UNREADABLE, []).append(p.name)
            continue
        records.append(_whole(str(p), i, w, h, src))
    return records, skipped, _summary(src, f"{len(records)} images", skipped, names)


# ---------------------------------------------------------------- video


def _video_records(src: UnlabeledSource, cache_dir: str | None, temporal: bool):
    if not os.path.isfile(src.path):
        raise DataError(f"{src.path}: video not found")
    if cache_dir is None:
        raise ConfigError(f"{src.path}: a video source needs a cache folder (cache_dir) for its decoded frames")
    folder, marker, how = cached_frames(src.path, cache_dir, src.every_n, temporal)
    written = set(marker["written"])
    w, h = marker["width"], marker["height"]
    records = [_whole(str(frame_file(folder, i)), i, w, h, src, frame=i,
                      next_path=str(frame_file(folder, i + 1)) if temporal and i + 1 in written else None)
               for i in marker["kept"]]
    skipped = Counter({BAD_FRAME: marker["failed"]} if marker["failed"] else {})
    nexts = sum(r.next_path is not None for r in records)
    what = (f"{len(records)} frames (every {src.every_n} of {marker['frames']}; {nexts} with the next frame), "
            f"{w}x{h}, {how}: {folder}")
    return records, skipped, _summary(src, what, skipped)


# ---------------------------------------------------------------- detections and boxes


def _box_records(src: UnlabeledSource, root: str | None):
    """Detections (COCO results) or a COCO json's boxes -> one record per usable box (:func:`parse_detections`:
    crowd entries and image ids with no ``images`` entry skipped and counted)."""
    data = read_json(src.path)
    if isinstance(data, list):
        entries, field = data, "detection"
        images_path = src.images
        images = _images_of(src.images, read_json(src.images)) if src.images else None
    elif isinstance(data, dict) and "images" in data and ("annotations" in data or "detections" in data):
        field = "annotation" if "annotations" in data else "detection"
        src = dataclasses.replace(src, kind="coco" if field == "annotation" else "detections")
        entries = data.get("annotations", data.get("detections"))
        images_path = src.images or src.path
        images = _images_of(images_path, read_json(src.images) if src.images else data)
    else:
        raise DataError(f"{src.path}: expected a list of detections (COCO results) or a COCO json with 'images' "
                        f"and 'annotations' (or 'detections'), got {type(data).__name__}")
    if not isinstance(entries, list):
        raise DataError(f"{src.path}: '{field}s' must be a list")
    if images is None:
        folder = src.root or root
        if folder is None:
            raise ConfigError(f"{src.path}: detections without an images list need an image folder holding "
                              f"{{image_id:012d}}.jpg (the source's 'root', or ssl.unlabeled_root)")
    else:
        folder = src.root or root or os.path.dirname(images_path)
    dets, skipped, unknown = parse_detections(src.path, entries, images=images, images_path=images_path,
                                              unknown_image="skip", skip_crowd=True, score_thr=src.score_thr,
                                              category_id=src.category_id, entry=field)
    names = {NO_IMAGE_ENTRY: unknown} if unknown else {}
    files: dict = {}  # image id -> (path, width, height), or (skip reason, name to quote)
    kept = []
    for det in dets:
        if det.image_id not in files:
            files[det.image_id] = _locate(det, folder)
        found = files[det.image_id]
        if isinstance(found, tuple) and len(found) == 2:  # (reason, name)
            skipped[found[0]] += 1
            names.setdefault(found[0], [])
            if found[1] not in names[found[0]]:
                names[found[0]].append(found[1])
            continue
        kept.append((found, det))
    boxes = np.reshape([det.bbox_xywh for _, det in kept], (-1, 4))
    sizes = np.reshape([(w, h) for (_, w, h), _ in kept], (-1, 2))
    _, problems = geometry.check_boxes(boxes, sizes, fmt="xywh", where=src.path, strict=False)
    skipped.update(p for p in problems if p)
    records = [UnlabeledRecord(image_path=p, image_id=det.image_id, bbox_xywh=det.bbox_xywh, width=w, height=h,
                               score=det.score, source=src.path)
               for ((p, w, h), det), problem in zip(kept, problems) if not problem]
    what = f"{len(records)} instances in {len({r.image_path for r in records})} images"
    if src.score_thr > 0:
        what += f" (score >= {src.score_thr:g})"
    return records, skipped, _summary(src, what, skipped, names)


def _images_of(path: str, data) -> dict:
    """{image id: images entry} of a COCO json, which may be an image-info file with no 'annotations'."""
    if isinstance(data, dict) and "images" in data and "annotations" not in data:
        data = {**data, "annotations": []}
    try:
        return image_index(path, data)
    except ValueError as e:
        raise DataError(str(e)) from None


def _locate(det: Detection, folder: str):
    """A detection's image: (path, width, height), or (skip reason, name to quote). Its ``images`` entry gives the
    file name and size; without an images list, the file is ``{image_id:012d}.jpg`` and its header the size."""
    if det.image is not None:
        path = os.path.join(folder, det.image["file_name"])
        if not os.path.isfile(path):
            return MISSING_FILE, det.image["file_name"]
        return path, int(det.image["width"]), int(det.image["height"])
    name = f"{det.image_id:012d}.jpg"
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return MISSING_FILE, name
    try:
        w, h = image_size(path)
    except ImageReadError:
        return UNREADABLE, name
    return path, w, h
