"""Train / val / test splits of a COCO keypoint json, reproducible for a seed.

    parts = split_coco(data, val=0.2, test=0.1, seed=0)             # {"train": coco, "val": coco, "test": coco}
    parts = split_coco(data, val=0.2, seed=0, by="video")           # each video folder wholly in one split

Disjoint by image: an image and all its annotations go to one split. ``by="image"`` draws the images at random;
``by="video"`` keeps each video -- the folder of an image's ``file_name``, e.g. DeepLabCut's
``labeled-data/<video>/`` -- wholly in one split (frames of one video are near duplicates: a val frame whose
neighbours are in training scores too well) and picks the videos so that each split's image count is close to
its fraction. Every split keeps the json's other top-level fields (``categories``, ``licenses``), the ids as
they were, and only its own images and their annotations; ``info.split`` records how it was made.
"""
from __future__ import annotations

import math
import posixpath

import numpy as np

from sagepose.errors import DataError

SPLITS = ("train", "val", "test")
BY = ("image", "video")
VIDEO_TRIALS = 64  # random video orders tried (each filled greedily); the one closest to the fractions is kept


def split_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Image counts of the held-out splits: each fraction x ``n`` rounded half up, at least 1 where the fraction
    is positive (a tiny set still gets a val image); ``train`` the rest."""
    sizes = {name: max(1, math.floor(f * n + 0.5)) if f > 0 else 0 for name, f in fractions.items()}
    return {"train": n - sum(sizes.values()), **sizes}


def video_of(file_name: str) -> str:
    """The video an image belongs to: the folder of its ``file_name`` (``/`` or ``\\`` separated)."""
    return posixpath.dirname(file_name.replace("\\", "/"))


def check_fractions(val: float, test: float) -> dict[str, float]:
    """``{"val": val, "test": test}`` when each is in [0, 1) and their sum in (0, 1); else a ValueError."""
    for name, f in (("val", val), ("test", test)):
        if not (isinstance(f, (int, float)) and math.isfinite(f) and 0 <= f < 1):
            raise ValueError(f"--{name} {f!r}: expected a fraction in [0, 1)")
    if not 0 < val + test < 1:
        raise ValueError(f"--val {val} + --test {test}: expected a held-out fraction in (0, 1)")
    return {"val": float(val), "test": float(test)}


def split_coco(data: dict, val: float, test: float = 0.0, seed: int = 0, by: str = "image",
               where: str = "annotations") -> dict[str, dict]:
    """A COCO json's content -> ``{"train": ..., "val": ..., "test": ...}`` (only the splits with a positive
    fraction; train always), each a COCO json dict. ``where`` names the source in errors: too few images (or
    videos, ``by="video"``) for the splits asked, an annotation of no listed image."""
    if by not in BY:
        raise ValueError(f"by must be one of {BY}, got {by!r}")
    fractions = check_fractions(val, test)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise DataError(f"{where}: expected a COCO json object with 'images' and 'annotations'")
    images = data["images"]
    ids = [img.get("id") if isinstance(img, dict) else None for img in images]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise DataError(f"{where}: every 'images' entry needs an id of its own")
    names = [name for name, f in fractions.items() if f > 0]
    wanted = ", ".join(["train", *names])
    rng = np.random.default_rng(seed)
    if by == "image":
        sizes = split_sizes(len(images), fractions)
        if sizes["train"] < 1:
            raise DataError(f"{where}: {len(images)} images, too few for {wanted} splits (each needs at least one)")
        order = rng.permutation(len(images))
        owner, start = np.empty(len(images), object), 0
        for name in (*names, "train"):
            stop = start + sizes[name] if name != "train" else len(images)
            owner[order[start:stop]] = name
            start = stop
        assignment = list(owner)
    else:
        videos: dict[str, list[int]] = {}
        for i, img in enumerate(images):
            file_name = img.get("file_name")
            if not isinstance(file_name, str):
                raise DataError(f"{where}: image {img['id']}: no file_name to take its video folder from")
            videos.setdefault(video_of(file_name), []).append(i)
        if len(videos) < len(names) + 1:
            shown = ", ".join(v or "." for v in list(videos)[:4]) + (", ..." if len(videos) > 4 else "")
            raise DataError(f"{where}: {len(videos)} video folder(s) ({shown}), too few for {wanted} splits by video "
                            "(each needs a whole video); split by image instead")
        chosen = _assign_videos([len(v) for v in videos.values()], split_sizes(len(images), fractions), names, rng)
        assignment = [None] * len(images)
        for members, name in zip(videos.values(), chosen):
            for i in members:
                assignment[i] = name
    by_image = {img_id: name for img_id, name in zip(ids, assignment)}
    for i, ann in enumerate(data["annotations"]):
        if ann.get("image_id") not in by_image:
            raise DataError(f"{where}: annotation {ann.get('id', f'#{i}')}: image_id {ann.get('image_id')!r} has no "
                            "entry in 'images'")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    out = {}
    for name in ("train", *names):
        split_images = [img for img, owner in zip(images, assignment) if owner == name]
        split_anns = [ann for ann in data["annotations"] if by_image[ann["image_id"]] == name]
        record = {"name": name, "seed": seed, "by": by, **fractions, "images": len(split_images),
                  "annotations": len(split_anns)}
        if by == "video":
            record["videos"] = sorted({video_of(img["file_name"]) for img in split_images})
        out[name] = {**data, "info": {**info, "split": record}, "images": split_images, "annotations": split_anns}
    return out


def _assign_videos(counts: list[int], targets: dict[str, int], names: list[str], rng) -> list[str]:
    """Each video's split: of :data:`VIDEO_TRIALS` random video orders, each filled greedily (a video to the
    split furthest below its target image count), the one whose counts are closest to the targets, every split
    holding at least one video."""
    splits = ["train", *names]
    best, best_cost = None, math.inf
    for _ in range(VIDEO_TRIALS):
        filled = dict.fromkeys(splits, 0)
        chosen = [""] * len(counts)
        for v in rng.permutation(len(counts)):
            name = max(splits, key=lambda s: targets[s] - filled[s])
            chosen[v] = name
            filled[name] += counts[v]
        for name in splits:  # an empty split takes the smallest video of the split holding the most videos
            if name not in chosen:
                donor = max(splits, key=lambda s: chosen.count(s))
                v = min((i for i, s in enumerate(chosen) if s == donor), key=lambda i: counts[i])
                filled[donor] -= counts[v]
                filled[name] += counts[v]
                chosen[v] = name
        cost = sum(abs(filled[s] - targets[s]) for s in splits)
        if cost < best_cost:
            best, best_cost = chosen, cost
    return best
