"""The paired comparison of two models on the same frames (sagepose.eval.paired), against analytic cases: the
sign-flip test's p-value where all differences have one size is a binomial tail, and the gap is the difference of
the two models' pixel_error over the same joints."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sagepose.data.coco import Record
from sagepose.eval import paired_gap, pixel_metrics
from sagepose.eval.paired import EXACT_FRAMES, frames_needed, sign_flip_p


def _binomial_tail(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) >= k)."""
    return sum(math.comb(n, j) for j in range(k, n + 1)) / 2 ** n


@pytest.mark.parametrize("n,k", [(5, 5), (10, 8), (10, 5), (12, 3), (EXACT_FRAMES, 12)])
def test_sign_flip_p_is_the_binomial_tail_for_equal_sized_differences_exact(n, k):
    d = np.array([2.5] * k + [-2.5] * (n - k))  # the sum under flips is 2.5 (2m - n), m ~ Binomial(n, 1/2)
    assert sign_flip_p(d) == pytest.approx(_binomial_tail(n, k), abs=1e-12)


def test_sign_flip_p_beyond_the_exact_range_is_a_seeded_monte_carlo_within_its_error():
    n, k = 40, 26
    d = np.array([1.0] * k + [-1.0] * (n - k))
    p = sign_flip_p(d, seed=0)
    expected = _binomial_tail(n, k)  # 0.0403
    assert abs(p - expected) < 4 * math.sqrt(expected * (1 - expected) / 20000)
    assert sign_flip_p(d, seed=0) == p  # seeded: the same decision every time
    assert 0 < sign_flip_p(np.ones(60)) < 1e-4  # never 0: the observed pattern counts


def test_sign_flip_p_edge_cases():
    assert sign_flip_p([]) == 1.0
    assert sign_flip_p(np.zeros(6)) == 1.0  # no difference at all is never "worse"
    assert sign_flip_p([-1.0, -2.0, -3.0]) == 1.0  # better everywhere
    assert frames_needed(0.05) == 5 and sign_flip_p(np.ones(4)) > 0.05 > sign_flip_p(np.ones(5))


def _record(image_id: int, kp, visible=None, ann_id=None) -> Record:
    kp = np.asarray(kp, np.float32)
    vis = np.ones(len(kp), np.float32) if visible is None else np.asarray(visible, np.float32)
    x0, y0 = kp.min(0) - 10
    w, h = kp.max(0) - kp.min(0) + 20
    return Record(image_path=f"{image_id}.jpg", image_id=image_id, ann_id=ann_id or image_id,
                  bbox_xywh=np.array([x0, y0, w, h], np.float32), keypoints=kp, visible=vis,
                  flags=np.zeros(len(kp), np.float32), area=float(w * h), width=640, height=480)


def _results(records, offsets) -> list[dict]:
    """One COCO result per record: its labels moved by (dx, dy) per joint."""
    out = []
    for r, off in zip(records, offsets):
        kp = r.keypoints + np.asarray(off, np.float32)
        out.append({"image_id": r.image_id, "category_id": 1, "score": 1.0,
                    "keypoints": np.concatenate([kp, np.ones((len(kp), 1))], 1).ravel().tolist()})
    return out


def test_paired_gap_is_the_difference_of_pixel_errors_over_the_same_joints_frames_as_units():
    rng = np.random.default_rng(0)
    # 6 frames; frame 5 holds two animals far apart; one unlabeled joint that neither model is scored on
    records = [_record(i, rng.uniform(100, 200, (4, 2))) for i in range(5)]
    records += [_record(5, rng.uniform(0, 50, (4, 2)), ann_id=50), _record(5, rng.uniform(400, 450, (4, 2)), ann_id=51)]
    records[0] = _record(0, records[0].keypoints, visible=[1, 1, 1, 0])
    first = rng.normal(0, 2, (len(records), 4, 2))
    second = first + rng.normal(1.0, 1, (len(records), 4, 2))
    gap = paired_gap(_results(records, first), _results(records, second), records)
    vis = np.stack([r.visible for r in records])
    gt = np.stack([r.keypoints for r in records])
    boxes = np.ones(len(records))
    names = [f"k{j}" for j in range(4)]
    expected = (pixel_metrics(gt + second, gt, vis, boxes, names)["pixel_error"]
                - pixel_metrics(gt + first, gt, vis, boxes, names)["pixel_error"])
    assert gap.frames == 6 and gap.difference == pytest.approx(expected, rel=1e-5)
    same = paired_gap(_results(records, first), _results(records, first), records)
    assert same.difference == 0 and same.p_worse == 1.0


def test_a_model_worse_on_every_frame_is_worse_beyond_chance_and_only_with_enough_frames():
    rng = np.random.default_rng(1)
    records = [_record(i, rng.uniform(100, 200, (3, 2))) for i in range(8)]
    good, bad = np.zeros((8, 3, 2)), np.full((8, 3, 2), 3.0)
    gap = paired_gap(_results(records, good), _results(records, bad), records)
    assert gap.difference == pytest.approx(3 * math.sqrt(2), rel=1e-5) and gap.p_worse == 2 ** -8
    few = records[:4]
    assert paired_gap(_results(few, good[:4]), _results(few, bad[:4]), few).p_worse == 2 ** -4  # > 0.05: unresolved


def test_results_that_are_not_one_per_label_are_refused_naming_the_image():
    records = [_record(7, [[10, 10], [20, 20]]), _record(7, [[50, 50], [60, 60]], ann_id=70)]
    one = _results(records[:1], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="image 7: 1 predictions for 2 labeled instances"):
        paired_gap(one, one, records)
