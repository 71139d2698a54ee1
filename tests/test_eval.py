"""COCO keypoint evaluation: equal to a direct pycocotools run; GT as predictions scores AP 1.0."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from sagepose.eval import evaluate_coco, make_results, oks_nms
from sagepose.keypoints import COCO17


def _gt_as_results(gt: dict, rng=None, noise=0.0) -> list[dict]:
    rows = []
    for ann in gt["annotations"]:
        if ann.get("num_keypoints", 0) == 0 or ann.get("iscrowd", 0):
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        if noise:
            kp[:, :2] += rng.normal(0, noise, kp[:, :2].shape)
        kp[:, 2] = 1.0
        score = 1.0 if rng is None else float(rng.uniform(0.2, 1.0))
        rows.append(dict(image_id=ann["image_id"], category_id=1, keypoints=kp.reshape(-1).tolist(), score=score))
    return rows


def test_ground_truth_as_predictions_scores_ap_one_on_real_coco(realdata):
    gt_json = realdata / "coco" / "test_coco.json"
    results = _gt_as_results(json.loads(gt_json.read_text()))
    m = evaluate_coco(gt_json, results)
    assert m.AP == pytest.approx(1.0) and m.AR == pytest.approx(1.0)
    assert m.num_predictions == 12  # 14 instances, 2 without labelled keypoints


def test_ap_equals_direct_pycocotools_on_same_files(realdata, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json = realdata / "coco" / "test_coco.json"
    results = _gt_as_results(json.loads(gt_json.read_text()), np.random.default_rng(0), noise=6.0)
    res_json = tmp_path / "results.json"
    res_json.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_json))
        ev = COCOeval(coco, coco.loadRes(str(res_json)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = evaluate_coco(gt_json, res_json)
    assert 0.05 < ours.AP < 0.99  # the noise makes a non-trivial case
    np.testing.assert_array_equal(
        [ours.AP, ours.AP50, ours.AP75, ours.APm, ours.APl, ours.AR, ours.AR50, ours.AR75, ours.ARm, ours.ARl],
        ev.stats)


def test_oks_nms_suppresses_duplicates_and_keeps_distinct_people():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, (17, 2))
    b = a + 300.0
    kpts = np.stack([a, a + 0.5, b])
    keep = oks_nms(kpts, np.array([0.9, 0.8, 0.7]), np.full(3, 100.0 * 100.0), COCO17.sigmas_array(), 0.9)
    assert keep == [0, 2]


def test_make_results_rescores_like_mmpose():
    kp = np.zeros((1, 17, 2))
    scores = np.full((1, 17), 0.1)
    scores[0, :4] = [0.5, 0.7, 0.9, 0.3]
    rows = make_results([7], kp, scores, [0.8], [1e4], COCO17.sigmas_array())
    # bbox score x mean of keypoint scores above 0.2
    assert rows[0]["score"] == pytest.approx(0.8 * np.mean([0.5, 0.7, 0.9, 0.3]))
    assert rows[0]["image_id"] == 7 and len(rows[0]["keypoints"]) == 51


def test_evaluate_fails_loudly_on_bad_predictions(realdata, tmp_path):
    gt_json = realdata / "coco" / "test_coco.json"
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_coco(gt_json, [])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        evaluate_coco(gt_json, bad)
    with pytest.raises(ValueError, match="absent from the ground truth"):
        evaluate_coco(gt_json, [dict(image_id=123456789, category_id=1, keypoints=[0.0] * 51, score=1.0)])


def test_make_results_neutralises_undecodable_joints():
    kp = np.random.default_rng(0).uniform(0, 100, (2, 17, 2))
    kp[0, 3] = np.nan
    scores = np.full((2, 17), 0.9)
    scores[1, 5] = np.inf
    rows = make_results([1, 1], kp, scores, [1.0, 1.0], [1e4, 1e4], COCO17.sigmas_array())
    assert len(rows) == 2  # a NaN joint must not make OKS-NMS drop its neighbours
    flat = np.asarray([r["keypoints"] for r in rows]).reshape(2, 17, 3)
    assert np.isfinite(flat).all()
    assert sorted([(r[3, 2] == 0.0, r[5, 2] == 0.0) for r in flat]) == [(False, True), (True, False)]


def test_instance_score_is_box_score_times_mean_of_keypoint_scores_above_threshold():
    from sagepose.eval import instance_scores

    kp_scores = np.array([[0.9, 0.6, 0.3, 0.1, 0.2], [0.1, 0.05, 0.0, 0.2, 0.15], [np.nan, 0.5, np.inf, 0.1, 0.3]])
    got = instance_scores(kp_scores, [0.8, 1.0, 0.5])
    # above 0.2 (strictly): (0.9, 0.6, 0.3); none, so 0; a non-finite score counts as none: (0.5, 0.3)
    np.testing.assert_allclose(got, [0.8 * 0.6, 0.0, 0.5 * 0.4], rtol=1e-12)
