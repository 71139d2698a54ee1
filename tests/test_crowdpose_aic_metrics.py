"""sagepose.eval.crowdpose: AIC and CrowdPose AP equal MMPose 1.3.2's (xtcocotools) on the same inputs.

Goldens: tools/make_crowd_goldens.py, run in the MMPose peer venv.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from sagepose.eval.coco import STAT_NAMES, evaluate_coco
from sagepose.eval.crowdpose import CROWDPOSE_STAT_NAMES, crowd_split, evaluate_aic, evaluate_crowdpose
from sagepose.keypoints import AIC14

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = json.loads((ROOT / "tests" / "data" / "crowd_goldens" / "goldens.json").read_text())["cases"]
AIC_GT = ROOT / "tests" / "data" / "realdata" / "aic" / "test_aic.json"
CROWD_GT = ROOT / "tests" / "data" / "realdata" / "crowdpose" / "test_crowdpose.json"


def _perfect(gt_path: Path) -> list[dict]:
    gt = json.loads(gt_path.read_text())
    return [dict(image_id=a["image_id"], category_id=1, score=1.0 - 0.01 * i,
                 keypoints=[float(v) if j % 3 < 2 else 1.0 for j, v in enumerate(a["keypoints"])])
            for i, a in enumerate(gt["annotations"]) if any(a["keypoints"][2::3])]  # one per scorable person


@pytest.mark.parametrize("case", [c for c in GOLDENS if c["dataset"] == "aic"], ids=lambda c: c["name"])
def test_aic_equals_mmpose_xtcocotools(case):
    got = evaluate_aic(ROOT / case["gt"], case["results"]).as_dict()
    np.testing.assert_allclose([got[k] for k in STAT_NAMES], case["stats"], rtol=0, atol=1e-6)
    assert got["num_predictions"] == len(case["results"])


@pytest.mark.parametrize("case", [c for c in GOLDENS if c["dataset"] == "crowdpose"], ids=lambda c: c["name"])
def test_crowdpose_equals_mmpose_xtcocotools(case):
    got = evaluate_crowdpose(ROOT / case["gt"], case["results"])
    np.testing.assert_allclose([got[k] for k in CROWDPOSE_STAT_NAMES], case["stats"], rtol=0, atol=1e-6)


def test_goldens_cover_every_crowd_split_and_mixed_scores():
    crowd = [c["stats"] for c in GOLDENS if c["dataset"] == "crowdpose"]
    assert any(s[6] > 0 for s in crowd) and any(s[7] > 0 for s in crowd) and any(s[8] > 0 for s in crowd)
    assert any(0.05 < s[0] < 0.95 for s in crowd)
    assert any(0.05 < c["stats"][0] < 0.95 for c in GOLDENS if c["dataset"] == "aic")


def test_perfect_predictions_give_ap_one():
    aic = evaluate_aic(AIC_GT, _perfect(AIC_GT))
    assert aic.AP == 1.0 and aic.AP50 == 1.0 and aic.AR == 1.0
    crowd = evaluate_crowdpose(CROWD_GT, _perfect(CROWD_GT))
    assert [crowd[k] for k in ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(M)")] == [1.0] * 7
    assert crowd["AP(E)"] == -1.0 and crowd["AP(H)"] == -1.0  # both sample images have crowdIndex 0.33 / 0.39


def test_crowd_split_uses_official_thresholds():
    images = [dict(id=i, crowdIndex=c) for i, c in enumerate([0.0, 0.199, 0.2, 0.5, 0.799, 0.8, 1.0])]
    assert crowd_split(images) == ([0, 1], [2, 3, 4], [5, 6])


def test_aic_matches_evaluate_coco_with_aic_sigmas_where_boxes_lie_inside_images():
    case = next(c for c in GOLDENS if c["name"] == "aic/noisy")
    ours = evaluate_aic(AIC_GT, case["results"]).as_dict()
    plain = evaluate_coco(AIC_GT, case["results"], sigmas=np.asarray(AIC14.sigmas)).as_dict()
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], [plain[k] for k in STAT_NAMES], atol=1e-12)


def test_crowdpose_ignores_person_by_json_num_keypoints(tmp_path):
    # one person, labelled only with v = 1 joints and num_keypoints 0: keypoints_crowd ignores it, so a
    # prediction far from it is no false positive and nothing is left to score (-1)
    gt = json.loads(CROWD_GT.read_text())
    gt["images"] = gt["images"][:1]
    ann = copy.deepcopy(gt["annotations"][0])
    ann["keypoints"] = [v if j % 3 < 2 else (1 if v else 0) for j, v in enumerate(ann["keypoints"])]
    ann["num_keypoints"] = 0
    gt["annotations"] = [ann]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    got = evaluate_crowdpose(path, [dict(image_id=ann["image_id"], category_id=1, score=0.9,
                                         keypoints=[5.0, 5.0, 1.0] * 14)])
    assert got["AP"] == -1.0


def test_bad_inputs_fail_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_crowdpose(CROWD_GT, [])
    with pytest.raises(ValueError, match="absent from the ground truth"):
        evaluate_aic(AIC_GT, [dict(image_id=999, category_id=1, score=1.0, keypoints=[0.0] * 42)])
    gt = json.loads(CROWD_GT.read_text())
    del gt["images"][0]["crowdIndex"]
    path = tmp_path / "no_index.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=f"{path}.*crowdIndex"):
        evaluate_crowdpose(path, _perfect(CROWD_GT))
    with pytest.raises(ValueError, match="sigmas"):
        evaluate_aic(AIC_GT, _perfect(AIC_GT), sigmas=np.full(17, 0.05))
