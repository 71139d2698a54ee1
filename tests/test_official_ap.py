"""sagepose.eval.official_ap: the dataset's own AP picked by the schema's name (what validation and `sagepose test`
report), checked against the per-dataset functions on the real samples."""
import json

import numpy as np
import pytest
from conftest import REALDATA

from sagepose.eval import evaluate_aic, evaluate_coco, evaluate_crowdpose, official_ap
from sagepose.keypoints import load_schema


def _results_from_gt(gt_json, shift: float = 0.0) -> list[dict]:
    """Every labeled person's keypoints as a prediction (x shifted by ``shift`` px), score 1."""
    gt = json.loads(gt_json.read_text())
    out = []
    for a in gt["annotations"]:
        kp = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
        if (kp[:, 2] > 0).any():
            kp[:, 0] += shift
            kp[:, 2] = 1.0
            out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0})
    return out


@pytest.mark.parametrize("name, path, shift, reference", [
    ("coco", "coco/test_coco.json", 3.0, lambda g, r, s: evaluate_coco(g, r, sigmas=s).as_dict()),
    ("aic", "aic/test_aic.json", 3.0, lambda g, r, s: evaluate_aic(g, r, sigmas=s).as_dict()),
    ("crowdpose", "crowdpose/test_crowdpose.json", 12.0, lambda g, r, s: evaluate_crowdpose(g, r, sigmas=s)),
])
def test_each_schema_gets_its_datasets_metric(name, path, shift, reference):
    gt = REALDATA / path
    sigmas = load_schema(name).sigmas_array()
    results = _results_from_gt(gt, shift=shift)
    got = official_ap(name, gt, results, sigmas)
    assert got == reference(gt, results, sigmas)
    assert 0 < got["AP"] < 1  # a shift of a few px: neither perfect nor nothing
    assert ("AP(M)" in got) == (name == "crowdpose")


def test_crowdpose_json_without_crowd_index_falls_back_to_coco_ap_with_a_warning(tmp_path):
    gt = json.loads((REALDATA / "crowdpose" / "test_crowdpose.json").read_text())
    for im in gt["images"]:
        im.pop("crowdIndex", None)
    path = tmp_path / "no_crowd_index.json"
    path.write_text(json.dumps(gt))
    sigmas = load_schema("crowdpose").sigmas_array()
    results = _results_from_gt(path, shift=3.0)
    with pytest.warns(UserWarning, match="crowdIndex"):
        got = official_ap("crowdpose", path, results, sigmas)
    assert got == evaluate_coco(path, results, sigmas=sigmas).as_dict()


def test_aic_is_not_scored_as_coco_where_the_two_differ():
    # the variant has a box running past its image and a person whose num_keypoints is 0 though joints are labeled:
    # AIC's metric (unclipped-box areas, labeled joints counted) differs there from pycocotools on the json as is
    gt = REALDATA.parent / "crowd_goldens" / "aic_variant_gt.json"
    sigmas = load_schema("aic").sigmas_array()
    results = _results_from_gt(gt, shift=3.0)
    got = official_ap("aic", gt, results, sigmas)
    assert got == evaluate_aic(gt, results, sigmas=sigmas).as_dict()
    assert got != evaluate_coco(gt, results, sigmas=sigmas).as_dict()
