"""Pre-flight check of a run's data: every json parses and every image it references opens, before any work.

    line = check_data(cfg)   # "checked 1200 training images, 200 val images: all readable (1.3 s)"

A training run that finds a bad image at step 2, after minutes of setup, or a missing ``data.train_json`` once
Lightning has started, wastes the setup and leaves a run folder behind; this check runs first and fails in one
line naming the file, the problem and the count (``DataError``; ``ConfigError`` for a json that is not set).
The jsons are read by the readers training uses (:func:`load_coco`, :func:`load_mpii`, :func:`load_detections`),
so a bad annotation fails here too, and only the images training reads are checked: each by its header
(:func:`sagepose.image.image_size`: JPEG, PNG, BMP and WebP headers parsed, other formats decoded once),
several at a time (file opens are I/O bound: a network file system is the slow case). ``ssl.unlabeled`` sources
are checked where that is cheap: each exists and is of a known kind, a video opens and decodes its first frame;
their images are read (and bad ones skipped and counted) when training starts, as before.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sagepose.config import Config, ConfigError
from sagepose.errors import DataError
from sagepose.image import ImageReadError, image_size

SHOWN = 5  # unreadable images a message names
THREADS = 16


def unreadable_images(paths, threads: int = THREADS) -> dict[str, str]:
    """``{path: "missing" | "not an image"}`` for each of ``paths`` whose header does not give a size."""
    def problem(path: str) -> str | None:
        if not os.path.isfile(path):
            return "missing"
        try:
            image_size(path)
        except ImageReadError:
            return "not an image"
        return None

    paths = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
        found = list(pool.map(problem, paths))
    return {p: why for p, why in zip(paths, found) if why is not None}


def check_images(source: str, paths) -> int:
    """The number of distinct images in ``paths`` (those of the json ``source``); a :class:`DataError` in one line
    when any is unreadable: ``source: 3 of 1200 images unreadable: a.png (not an image), b.png (missing), ...``."""
    paths = list(dict.fromkeys(paths))
    bad = unreadable_images(paths)
    if bad:
        named = ", ".join(f"{_short(p, source)} ({why})" for p, why in list(bad.items())[:SHOWN])
        more = ", ..." if len(bad) > SHOWN else ""
        raise DataError(f"{source}: {len(bad)} of {len(paths)} images unreadable: {named}{more}")
    return len(paths)


def _short(path: str, source: str) -> str:
    """An image path as a user finds it: relative to the json's folder where it lies below it."""
    rel = os.path.relpath(path, os.path.dirname(os.path.abspath(source)))
    return path if rel.startswith("..") else rel


def check_data(cfg: Config, train: bool = True, val: bool = True, schema=None) -> str:
    """Read every json ``cfg`` trains (``train``) and validates (``val``) on and check each image they reference;
    returns the summary line, raises in one line on the first problem. ``schema``: the model's keypoint schema
    (default: ``model.schema`` resolved)."""
    from sagepose.keypoints import load_schema

    start = time.perf_counter()
    d, s = cfg.data, cfg.ssl
    counts: list[str] = []
    labeled = s.mode != "unsup_only"
    if d.datasets:
        for ds in d.datasets:
            for split, path in (("train", ds.train_json if train else None), ("val", ds.val_json if val else None)):
                if path:
                    records = _member_records(ds, path, split)
                    n = check_images(path, [r.image_path for r in records])
                    counts.append(f"{n} {ds.name} {'training' if split == 'train' else 'val'} images")
        if train and labeled and not any(ds.train_json for ds in d.datasets):
            raise ConfigError("data.datasets: no dataset has a train_json", key="data.datasets")
    else:
        schema = schema if schema is not None else load_schema(cfg.model.schema)
        if train and labeled:
            if not d.train_json:
                raise ConfigError("data.train_json is not set: the COCO keypoint json to train on (or, to train on "
                                  "unlabeled data only, ssl.mode=unsup_only)", key="data.train_json")
            counts.append(f"{_split_images(d.train_json, 'train', schema, d.image_root)} training images")
        if val and d.val_json:
            if d.det_json:
                from sagepose.data.detections import load_detections

                _exists(d.det_json, "data.det_json")
                _exists(d.val_json, "data.val_json")
                records = load_detections(d.det_json, d.val_json, schema=schema, image_root=d.image_root)
                counts.append(f"{check_images(d.det_json, [r.image_path for r in records])} val images")
            else:
                counts.append(f"{_split_images(d.val_json, 'val', schema, d.image_root)} val images")
    if train and s.mode != "off":
        require_unlabeled(s)
        counts.extend(check_unlabeled(s.unlabeled, s.every_n, s.det_score_thr))
    took = time.perf_counter() - start
    return f"checked {', '.join(counts) or 'no images'}: all readable ({took:.1f} s)"


def _exists(path: str, key: str) -> None:
    if not os.path.isfile(path):
        raise DataError(f"{key}={path}: no such file")


def _split_images(json_path: str, mode: str, schema, image_root: str | None) -> int:
    from sagepose.data.coco import load_coco

    _exists(json_path, f"data.{mode}_json")
    records = load_coco(json_path, schema=schema, image_root=image_root, mode=mode)
    return check_images(json_path, [r.image_path for r in records])


def _member_records(ds, path: str, split: str) -> list:
    """A ``data.datasets`` member's records, read in its format (as training reads them)."""
    from sagepose.data.multi import read_member
    from sagepose.keypoints import load_schema

    _exists(path, f"data.datasets {ds.name}: {split}_json")
    return read_member(ds, load_schema(ds.schema), split)


def require_unlabeled(s) -> None:
    """A semi-supervised run (``ssl`` config ``s``, mode not "off") names its unlabeled data: a one-line error
    otherwise (recipes leave the sources to the user, so this is checked when a run starts)."""
    if not s.unlabeled:
        raise ConfigError(f"ssl.unlabeled: ssl.mode={s.mode!r} needs unlabeled sources (a video, an image folder, "
                          "a detections or COCO json, or a list of them)", key="ssl.unlabeled")


def check_unlabeled(sources, every_n: int = 10, score_thr: float = 0.3) -> list[str]:
    """Each ``ssl.unlabeled`` source exists and is of a known kind, a folder holds an image, a video opens and decodes
    its first frame.
    -> ``["2 unlabeled sources"]``."""
    import cv2

    from sagepose.data.unlabeled_sources import parse_source

    specs = [sources] if isinstance(sources, (str, os.PathLike, dict)) else list(sources or [])
    if not specs:
        raise ConfigError("ssl.unlabeled: no unlabeled source given", key="ssl.unlabeled")
    for spec in specs:
        src = parse_source(spec, every_n, score_thr)  # a missing path or an unknown kind: one line naming it
        if not os.path.exists(src.path):
            raise DataError(f"{src.path}: unlabeled source not found (no such file or folder)")
        if src.kind == "images" and os.path.isdir(src.path):
            from sagepose.data.unlabeled_sources import IMAGE_SUFFIXES

            found = (p for p in Path(src.path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if next(found, None) is None:
                raise DataError(f"{src.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder or "
                                "below")
        if src.kind == "video":
            cap = cv2.VideoCapture(src.path)
            try:
                ok = cap.isOpened() and cap.read()[0]
            finally:
                cap.release()
            if not ok:
                raise DataError(f"{src.path}: unlabeled video does not open or decode (not a video, or a codec "
                                "OpenCV lacks)")
    return [f"{len(specs)} unlabeled source{'s' if len(specs) > 1 else ''}"]
