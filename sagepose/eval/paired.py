"""Two models on the same labeled frames: is the second one worse beyond what these frames can tell?

    gap = paired_gap(start_results, fine_tuned_results, records)
    gap.difference   # pixel_error(fine_tuned) - pixel_error(start) over the same labeled joints
    gap.p_worse      # one-sided sign-flip p-value of "fine_tuned is worse"

A mean pixel error over a few frames moves a lot with which frames they are: one swapped paw can add pixels to the
mean. Comparing two models on the *same* frames removes the frames' own difficulty, and what is left -- the
per-frame differences -- says whether one model is worse beyond chance. The frame is the unit (the joints and
animals of one frame are not independent draws). The test is a paired sign-flip (randomisation) test: under "no
difference" each frame's difference is as likely negative as positive, so the observed sum of differences is
compared with the sums of every sign pattern (exactly up to :data:`EXACT_FRAMES` frames, with
:data:`MONTE_CARLO_DRAWS` seeded random patterns beyond). It assumes no distribution of the errors, which are
heavy-tailed. With n frames the smallest p-value it can give is 2^-n: four frames can never show a difference at
p < 0.05 (:func:`frames_needed`).
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

EXACT_FRAMES = 16  # up to this many frames every one of the 2^n sign patterns is counted
MONTE_CARLO_DRAWS = 20000
_CHUNK = 1000  # sign patterns drawn at a time (memory: CHUNK x frames)


@dataclass(frozen=True)
class PairedGap:
    difference: float  # second model's mean pixel error minus the first's, over the joints both are scored on
    p_worse: float  # one-sided p-value of "the second model is worse" (small: worse beyond chance)
    frames: int  # frames compared (the test's units)


def frame_errors(results: list[dict], records) -> dict[int, tuple[float, int]]:
    """COCO results and the labeled records they predict -> {image_id: (sum of the labeled joints' pixel errors,
    their number)}. The results are one per record, on each image in the records' order -- what ``sagepose test``
    writes on ground-truth boxes for a schema without OKS sigmas (no NMS) -- so each joint is scored against the
    label it was predicted for, as ``val/pixel_error`` scores it; non-finite predictions are left out."""
    by_image: dict[int, list] = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2])
    labels: dict[int, list] = defaultdict(list)
    for rec in records:
        labels[rec.image_id].append(rec)
    out: dict[int, tuple[float, int]] = {}
    for image_id, recs in labels.items():
        preds = by_image.get(image_id, [])
        if len(preds) != len(recs):
            raise ValueError(f"image {image_id}: {len(preds)} predictions for {len(recs)} labeled instances; "
                             "paired errors need one per label (ground-truth boxes, no NMS)")
        total, count = 0.0, 0
        for pred, rec in zip(preds, recs):
            err = np.linalg.norm(pred - rec.keypoints, axis=-1)
            scored = (rec.visible > 0) & np.isfinite(err)
            total, count = total + float(err[scored].sum()), count + int(scored.sum())
        out[image_id] = (total, count)
    return out


def paired_gap(first: list[dict], second: list[dict], records, seed: int = 0) -> PairedGap:
    """The second model's results against the first's on the same labeled ``records`` (frames both scored)."""
    a, b = frame_errors(first, records), frame_errors(second, records)
    frames = sorted(i for i in a.keys() & b.keys() if a[i][1] and a[i][1] == b[i][1])
    if not frames:
        return PairedGap(difference=0.0, p_worse=1.0, frames=0)
    d = np.array([b[i][0] - a[i][0] for i in frames])  # per-frame sums of joint-error differences
    joints = sum(a[i][1] for i in frames)
    return PairedGap(difference=float(d.sum() / joints), p_worse=sign_flip_p(d, seed), frames=len(frames))


def sign_flip_p(d, seed: int = 0) -> float:
    """One-sided p-value that values as large as ``sum(d)`` arise by flipping the signs of ``d`` at random: the
    fraction of sign patterns whose sum is at least the observed one (the observed pattern counts)."""
    d = np.asarray(d, np.float64)
    n = d.size
    if n == 0:
        return 1.0
    observed = d.sum() - 1e-9 * np.abs(d).sum()  # ties (e.g. zero differences) count as at least as large
    if n <= EXACT_FRAMES:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float((signs @ d >= observed).mean())
    rng = np.random.default_rng(seed)
    hits = 1  # the observed pattern itself, so p is never 0
    for start in range(0, MONTE_CARLO_DRAWS, _CHUNK):
        signs = rng.choice((1.0, -1.0), size=(min(_CHUNK, MONTE_CARLO_DRAWS - start), n))
        hits += int((signs @ d >= observed).sum())
    return hits / (MONTE_CARLO_DRAWS + 1)


def frames_needed(alpha: float) -> int:
    """The fewest frames on which the sign-flip test can reach p < ``alpha`` at all (2^-n < alpha)."""
    return math.floor(math.log2(1 / alpha)) + 1
