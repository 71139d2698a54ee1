"""DeepLabCut / lightning-pose labeled-data CSVs -> a COCO keypoint json (dict), any skeleton.

    coco = csv_to_coco("project/CollectedData.csv")   # lightning-pose: images relative to the CSV's folder
    coco = dlc_to_coco(["dlc-project"])               # DeepLabCut: every labeled-data/*/CollectedData_*.csv
    write_coco(coco, "project/labels.json")           # file_names relative to the json's folder

The CSV is DeepLabCut's ``CollectedData_<scorer>.csv``, which lightning-pose reads too:

* single animal, 3 header rows: ``scorer`` / ``bodyparts`` / ``coords`` (``x``, ``y``);
* multi-animal, 4 header rows: ``scorer`` / ``individuals`` / ``bodyparts`` / ``coords``; every individual has the
  same bodyparts, except DLC's ``single`` individual (the "unique" bodyparts), which is dropped with a warning;
* the image path in the first column (``labeled-data/video/img001.png``), or split over several index columns
  (DLC 2.2+: ``labeled-data``, the video folder, the file name), joined with ``/``; backslashes become ``/``;
* an empty or NaN cell is an unlabeled joint (``v=0``), a number a labeled one (``v=2``); ``likelihood``
  columns (machine labels) are ignored.

One annotation per labeled animal and frame (an individual with no labeled joint in a frame gets none); images
are referenced, never copied, and their width / height read from the files. The CSV's image paths are relative
to ``image_root``; without one it is inferred: of the CSV's folder and the folders above it (up to
:data:`ROOT_LEVELS`), the first that holds the most of its images -- the CSV's folder for lightning-pose
(``project/CollectedData.csv``), the project for DeepLabCut 2.2 (whose
``project/labeled-data/<video>/CollectedData_<scorer>.csv`` names ``labeled-data/<video>/img001.png``).
:func:`dlc_to_coco` reads a DLC project folder (all its ``labeled-data/*/CollectedData*.csv``) or several CSVs
into one json (the same bodyparts, each image once). :func:`write_coco` stores the ``file_name`` s relative to
the json's own folder and ``info.image_root`` that folder (absolute), so :func:`sagepose.data.coco.load_coco`
finds the images from any working directory.

The category carries the keypoint names, the skeleton (1-based, COCO's convention, as
:func:`sagepose.keypoints.load_schema` reads it) and ``flip_pairs`` (pairs of names: given, or inferred from
left/right names by :func:`sagepose.keypoints.infer_flip_pairs`), so the json is also a schema
(``model.schema=labels.json``).
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np

from sagepose.data.coco import rebase_file_names
from sagepose.errors import DataError
from sagepose.fileio import write_json_atomic
from sagepose.image import ImageReadError, read_image
from sagepose.keypoints import infer_flip_pairs, parse_name_pairs

HEADER_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
UNIQUE_INDIVIDUAL = "single"  # DLC's multi-animal "unique bodyparts" pseudo-individual
BOX_MODES = ("image", "labels")
ROOT_LEVELS = 3  # folders above a CSV tried as its image root (DLC 2.2: labeled-data/<video>/ -> the project)
ROOT_PROBES = 50  # frames whose image is looked for under each candidate root
CSV_GLOB = "CollectedData*.csv"  # DLC's CollectedData_<scorer>.csv, lightning-pose's CollectedData.csv


def read_dlc_csv(csv_path: str | os.PathLike) -> dict:
    """Parse a labeled-data CSV -> ``{"bodyparts": [names], "individuals": [names] ([""] single-animal),
    "frames": [(line number, image path, xy (A, K, 2) float64 with NaN where unlabeled)]}``.

    Errors (:class:`DataError`) name the file and, for a cell, its line and column.
    """
    path = os.fspath(csv_path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: labeled-data CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as a CSV ({e})") from None
    levels = []
    for row in rows:
        if not row or row[0].strip().lower() not in HEADER_LEVELS or len(levels) == 4:
            break
        levels.append(row[0].strip().lower())
    if levels not in (["scorer", "bodyparts", "coords"], ["scorer", "individuals", "bodyparts", "coords"]):
        raise DataError(f"{path}: not a DeepLabCut labeled-data CSV: expected header rows scorer / bodyparts / "
                        f"coords (or scorer / individuals / bodyparts / coords), found {levels or rows[:1]}")
    header = rows[:len(levels)]
    width = len(header[0])
    for name, row in zip(levels, header):
        if len(row) != width:
            raise DataError(f"{path}: header row {name!r} has {len(row)} cells, row 'scorer' has {width}")
    coords = [c.strip().lower() for c in header[-1]]
    first = next((i for i, c in enumerate(coords) if c in ("x", "y", "likelihood")), None)
    if first is None or first < 1:
        raise DataError(f"{path}: row 'coords' names no x / y column")
    multi = len(levels) == 4
    individuals_row = header[1] if multi else [""] * width
    bodyparts_row = header[-2]
    columns: dict[tuple[str, str], dict[str, int]] = {}
    for col in range(first, width):
        coord = coords[col]
        key = (individuals_row[col].strip(), bodyparts_row[col].strip())
        if coord not in ("x", "y", "likelihood") or not key[1]:
            raise DataError(f"{path}: column {col + 1}: coords {header[-1][col]!r}, bodypart {key[1]!r}: expected "
                            "x, y or likelihood of a named bodypart")
        if coord in columns.setdefault(key, {}):
            raise DataError(f"{path}: column {col + 1}: a second {coord!r} column for {_label(key)}")
        columns[key][coord] = col
    for key, cols in columns.items():
        if "x" not in cols or "y" not in cols:
            raise DataError(f"{path}: {_label(key)} has no {'x' if 'x' not in cols else 'y'} column (odd columns)")
    individuals = list(dict.fromkeys(ind for ind, _ in columns))
    if multi and UNIQUE_INDIVIDUAL in individuals and len(individuals) > 1:
        dropped = [bp for ind, bp in columns if ind == UNIQUE_INDIVIDUAL]
        warnings.warn(f"{path}: dropped DeepLabCut's {UNIQUE_INDIVIDUAL!r} individual (unique bodyparts "
                      f"{dropped}): one schema covers the animals' shared bodyparts", stacklevel=2)
        individuals.remove(UNIQUE_INDIVIDUAL)
    bodyparts = [bp for ind, bp in columns if ind == individuals[0]]
    for ind in individuals[1:]:
        theirs = [bp for i, bp in columns if i == ind]
        if theirs != bodyparts:
            raise DataError(f"{path}: individual {ind!r} has bodyparts {theirs}, individual {individuals[0]!r} "
                            f"{bodyparts}: every individual needs the same ones")
    frames = []
    for line, row in enumerate(rows[len(levels):], start=len(levels) + 1):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) != width:
            raise DataError(f"{path}: line {line}: {len(row)} cells, the header has {width}")
        parts = [c.strip().replace("\\", "/") for c in row[:first] if c.strip()]
        if not parts:
            raise DataError(f"{path}: line {line}: no image path in the first {first} column(s)")
        xy = np.full((len(individuals), len(bodyparts), 2), np.nan)
        for a, ind in enumerate(individuals):
            for k, bp in enumerate(bodyparts):
                cols = columns[(ind, bp)]
                xy[a, k] = [_number(path, line, row, cols[c], header[-1]) for c in ("x", "y")]
                if np.isnan(xy[a, k]).sum() == 1:
                    raise DataError(f"{path}: line {line}: {_label((ind, bp))} has an x or a y, not both")
        frames.append((line, "/".join(parts), xy))
    if not frames:
        raise DataError(f"{path}: no labeled frames below the header")
    return {"bodyparts": bodyparts, "individuals": individuals, "frames": frames}


def _label(key: tuple[str, str]) -> str:
    ind, bp = key
    return f"bodypart {bp!r}" + (f" of individual {ind!r}" if ind else "")


def _number(path: str, line: int, row: list[str], col: int, coords_row: list[str]) -> float:
    text = row[col].strip()
    if not text:
        return math.nan
    where = f"{path}: line {line}, column {col + 1} ({coords_row[col]})"
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None
    if math.isinf(value):
        raise DataError(f"{where}: {text!r} is not finite")
    return value


def _labels_box(xy: np.ndarray, labeled: np.ndarray, pad: float, width: int, height: int) -> list[float]:
    """The labeled joints' extent, each side scaled by ``pad`` about its centre, clipped to the image. A side
    under 1 px (all joints on a line, or one joint) takes the other side's length (at least 1 px) first."""
    pts = xy[labeled]
    (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
    w, h = x2 - x1, y2 - y1
    if w < 1:
        w = max(h, 1.0)
    if h < 1:
        h = max(w, 1.0)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, w * pad, h * pad
    bx1, by1 = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0)
    bx2, by2 = min(cx + w / 2, float(width)), min(cy + h / 2, float(height))
    return [float(bx1), float(by1), float(max(bx2 - bx1, 0.0)), float(max(by2 - by1, 0.0))]


def csv_to_coco(csv_path: str | os.PathLike, image_root: str | os.PathLike | None = None, flip_pairs=None,
                box: str = "image", box_pad: float = 1.25, skip_missing: bool = False, skeleton=None,
                name: str | None = None) -> dict:
    """A DeepLabCut / lightning-pose labeled-data CSV -> a COCO keypoint json dict (see the module docstring).

    ``image_root``: the folder the CSV's image paths are relative to (default: inferred, :func:`infer_image_root`);
    the dict's ``file_name`` s are relative to it (``info.image_root``), :func:`write_coco` re-expresses them
    relative to the json's folder. ``flip_pairs``: None infers them from left/right names; ``"a:b,c:d"`` or
    pairs of names gives them ("" none). ``skeleton``: ``"a-b,b-c"`` or pairs of names (default none).
    ``box``: ``"image"`` (the whole image: single-animal files only) or ``"labels"`` (the labeled joints'
    extent, each side x ``box_pad``, clipped to the image; always so for multi-animal files). ``area`` is the
    box's area (w x h).
    ``skip_missing``: a frame whose image is missing or unreadable is left out and counted (one warning) instead
    of an error naming it. ``name``: the category (and schema) name, default the image root's folder name.
    ``info`` records the source, the image root and the counts (frames, skipped, frames without labels).
    """
    path = os.fspath(csv_path)
    if box not in BOX_MODES:
        raise ValueError(f"box must be one of {BOX_MODES}, got {box!r}")
    if not (isinstance(box_pad, (int, float)) and math.isfinite(box_pad) and box_pad > 0):
        raise ValueError(f"box_pad must be a positive factor, got {box_pad!r}")
    parsed = read_dlc_csv(path)
    names, individuals = parsed["bodyparts"], parsed["individuals"]
    multi = individuals != [""]
    if multi:
        box = "labels"
    try:
        pairs = _name_pairs(flip_pairs, names, ":", "flip pair") if flip_pairs is not None \
            else infer_flip_pairs(names)
        bones = _name_pairs(skeleton, names, "-", "skeleton edge") if skeleton is not None else ()
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    if image_root is None:
        root, tried = infer_image_root(path, [rel for _, rel, _ in parsed["frames"]])
        where = (f"image root {root}, inferred: looked in {', '.join(tried)}; --image-root DIR (image_root=) names "
                 "the folder the CSV's image paths are relative to")
    else:
        root = os.fspath(image_root)
        where = f"image root {root}"
    images, annotations, missing, unlabeled_frames = [], [], [], 0
    seen: dict[str, int] = {}
    for line, rel, xy in parsed["frames"]:
        if rel in seen:
            raise DataError(f"{path}: line {line}: image {rel} is already labeled on line {seen[rel]}")
        seen[rel] = line
        full = os.path.join(root, rel)
        try:
            height, width = read_image(full).shape[:2]
        except ImageReadError as e:
            if not skip_missing:
                raise DataError(f"{path}: line {line}: image {e} ({where}; skip_missing=True / "
                                "--skip-missing leaves such frames out)") from None
            missing.append(rel)
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": rel, "width": int(width), "height": int(height)})
        labeled_any = False
        for a, individual in enumerate(individuals):
            labeled = ~np.isnan(xy[a]).any(-1)
            if not labeled.any():
                continue
            labeled_any = True
            bbox = ([0.0, 0.0, float(width), float(height)] if box == "image"
                    else _labels_box(xy[a], labeled, box_pad, width, height))
            kpts = np.zeros((len(names), 3))
            kpts[labeled, :2] = xy[a][labeled]
            kpts[labeled, 2] = 2
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": bbox,
                   "area": bbox[2] * bbox[3], "keypoints": [float(v) for v in kpts.reshape(-1)],
                   "num_keypoints": int(labeled.sum()), "iscrowd": 0}
            if multi:
                ann["individual"] = individual
            annotations.append(ann)
        unlabeled_frames += not labeled_any
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.warn(f"{path}: skipped {len(missing)} of {len(parsed['frames'])} frames whose image is missing or "
                      f"unreadable under {root}: {shown}", stacklevel=2)
    if not annotations:
        raise DataError(f"{path}: no labeled animal in any frame with a readable image "
                        f"({len(images)} frames read, {len(missing)} skipped)")
    category = {"id": 1, "name": name or Path(root).resolve().name or "animal", "supercategory": "animal",
                "keypoints": list(names), "skeleton": [[a + 1, b + 1] for a, b in bones],
                "flip_pairs": [[names[a], names[b]] for a, b in pairs]}
    info = {"description": "imported from a DeepLabCut / lightning-pose labeled-data CSV by sagepose",
            "source": os.path.abspath(path), "sources": [os.path.abspath(path)], "image_root": os.path.abspath(root),
            "frames": len(images),
            "skipped_missing_images": len(missing), "frames_without_labels": unlabeled_frames,
            "individuals": individuals if multi else []}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def infer_image_root(csv_path: str | os.PathLike, image_paths: list[str]) -> tuple[str, list[str]]:
    """The folder a CSV's image paths are relative to: of the CSV's folder and up to :data:`ROOT_LEVELS` folders
    above it, the first holding the most of (up to :data:`ROOT_PROBES` of) ``image_paths``; the CSV's folder when
    none holds any. Returns ``(root, the folders tried)``."""
    folder = os.path.dirname(os.path.abspath(csv_path))
    tried = [folder]
    for _ in range(ROOT_LEVELS):
        parent = os.path.dirname(tried[-1])
        if parent == tried[-1]:
            break
        tried.append(parent)
    probes = image_paths[:ROOT_PROBES]
    counts = [sum(os.path.isfile(os.path.join(root, rel)) for rel in probes) for root in tried]
    best = max(range(len(tried)), key=lambda i: (counts[i], -i))
    return (tried[best] if counts[best] else folder), tried


def find_dlc_csvs(source: str | os.PathLike) -> list[str]:
    """A labeled-data CSV, or a project folder -> its CSVs: DeepLabCut's ``labeled-data/*/CollectedData*.csv``,
    else lightning-pose's ``CollectedData*.csv`` in the folder, else ``*/CollectedData*.csv`` (the folder is
    ``labeled-data`` itself). A folder with none is a :class:`DataError` naming it."""
    path = Path(source)
    if not path.is_dir():
        return [os.fspath(source)]  # read_dlc_csv names a missing file
    for pattern in (f"labeled-data/*/{CSV_GLOB}", CSV_GLOB, f"*/{CSV_GLOB}"):
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if found:
            return [os.fspath(p) for p in found]
    raise DataError(f"{path}: no labeled-data CSV in this folder (looked for labeled-data/*/{CSV_GLOB}, {CSV_GLOB} "
                    f"and */{CSV_GLOB})")


def dlc_to_coco(sources, image_root: str | os.PathLike | None = None, name: str | None = None, **options) -> dict:
    """Labeled-data CSVs and DLC project folders (:func:`find_dlc_csvs`) -> one COCO keypoint json dict.

    Each CSV is read by :func:`csv_to_coco` (``image_root`` and ``options`` as there; each CSV's root inferred
    when ``image_root`` is None); they must name the same bodyparts in the same order and be all single- or all
    multi-animal, and no image may be labeled twice. The merged ``file_name`` s are relative to the roots'
    common folder (``info.image_root``); ids are renumbered in source order. ``name`` defaults to a project
    folder's name (one folder given), else the common root's."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not sources:
        raise ValueError("dlc_to_coco: no sources")
    csvs = [path for source in sources for path in find_dlc_csvs(source)]
    if name is None and len(sources) == 1 and Path(sources[0]).is_dir():
        name = Path(sources[0]).resolve().name
    parts = [csv_to_coco(path, image_root=image_root, name=name, **options) for path in csvs]
    if len(parts) == 1:
        return parts[0]
    first, first_csv = parts[0], csvs[0]
    multi = bool(first["info"]["individuals"])
    for source, part in zip(csvs[1:], parts[1:]):
        theirs, ours = part["categories"][0]["keypoints"], first["categories"][0]["keypoints"]
        if theirs != ours:
            raise DataError(f"{source}: bodyparts {theirs} differ from {first_csv}'s {ours}: one json holds one "
                            "keypoint set")
        if bool(part["info"]["individuals"]) != multi:
            kinds = ("single-animal", "multi-animal")
            raise DataError(f"{source}: a {kinds[not multi]} CSV, {first_csv} a {kinds[multi]} one: import them "
                            "separately")
    roots = [os.path.abspath(p["info"]["image_root"]) for p in parts]
    common = os.path.commonpath(roots)
    images, annotations, owner = [], [], {}
    for source, part, root in zip(csvs, parts, roots):
        new_ids = {}
        for img in rebase_file_names(part["images"], root, common):
            full = os.path.normpath(os.path.join(common, img["file_name"]))
            if full in owner:
                raise DataError(f"{source}: image {full} is already labeled in {owner[full]}")
            owner[full] = source
            new_ids[img["id"]] = len(images) + 1
            images.append({**img, "id": new_ids[img["id"]]})
        for ann in part["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_ids[ann["image_id"]]})
    category = dict(first["categories"][0])
    if name is None:
        category["name"] = Path(common).name or category["name"]
    infos = [p["info"] for p in parts]
    individuals = list(dict.fromkeys(i for info in infos for i in info["individuals"]))
    info = {"description": f"imported from {len(csvs)} DeepLabCut / lightning-pose labeled-data CSVs by sagepose",
            "sources": [os.path.abspath(path) for path in csvs], "image_root": common, "frames": len(images),
            **{key: sum(info[key] for info in infos) for key in ("skipped_missing_images", "frames_without_labels")},
            "individuals": individuals}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def _name_pairs(spec, names: list[str], sep: str, what: str) -> tuple[tuple[int, int], ...]:
    """``"a<sep>b,..."`` or a sequence of name pairs -> index pairs over ``names`` (ValueError on unknown names)."""
    if isinstance(spec, str):
        return parse_name_pairs(spec, names, sep, what)
    out = []
    for pair in spec:
        if len(pair) != 2 or not all(n in names for n in pair):
            raise ValueError(f"{what} {pair!r}: expected two of the keypoints {names}")
        out.append((names.index(pair[0]), names.index(pair[1])))
    return tuple(out)


def write_coco(coco: dict, out_path: str | os.PathLike) -> Path:
    """Write a COCO json dict (e.g. :func:`csv_to_coco`'s) atomically, its relative ``file_name`` s re-expressed
    relative to the json's folder (from ``info.image_root``, when it records one) and ``info.image_root`` that
    folder, so the json finds its images from any working directory; returns the path."""
    info = coco.get("info") or {}
    if info.get("image_root"):
        folder = os.path.dirname(os.path.abspath(out_path))
        coco = {**coco, "info": {**info, "image_root": folder},
                "images": rebase_file_names(coco["images"], info["image_root"], folder)}
    return write_json_atomic(out_path, coco)
