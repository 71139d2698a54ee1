"""Bad input stops with a one-line error naming where, or is skipped and counted: boxes, keypoint names, empty files,
ground truth without ``area``."""
from __future__ import annotations

import contextlib
import io
import json
import warnings

import cv2
import numpy as np
import pytest

from sagepose.data.coco import load_coco
from sagepose.data.detections import load_detections
from sagepose.eval import evaluate_coco
from sagepose.geometry import BOX_EMPTY, BOX_NONFINITE, BOX_OUTSIDE
from sagepose.keypoints import AIC14, COCO17, CROWDPOSE14, SCHEMAS

# ---- helpers ------------------------------------------------------------------------------------


def _write_coco(tmp_path, annotations, categories=None, name="train.json", width=64, height=48):
    """A COCO keypoint json with one ``width`` x ``height`` image (id 1, written as a.jpg); returns its path."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((height, width, 3), 128, np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
            "annotations": annotations}
    if categories is not None:
        data["categories"] = categories
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id=11, k=17, **kw):
    a = {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": [4, 4, 30, 40], "keypoints": [10, 10, 2] * k,
         "num_keypoints": k, "area": 1000.0, "iscrowd": 0}
    a.update(kw)
    return a


def _category(names):
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(names), "skeleton": []}]


# ---- 7: boxes at the readers --------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_load_coco_rejects_a_non_finite_bbox_naming_the_annotation(tmp_path, bad):
    path = _write_coco(tmp_path, [_ann(1), _ann(7, bbox=[4, bad, 30, 40])])
    with pytest.raises(ValueError, match=rf"^{path}: annotation 7: bbox \[4, \w+, 30, 40\]: non-finite coordinates$"):
        load_coco(path)


def test_load_detections_skips_non_finite_inverted_and_outside_boxes_in_one_warning(tmp_path):
    gt = _write_coco(tmp_path, [_ann(1)], name="gt.json")  # one 64x48 image
    dets = [dict(image_id=1, category_id=1, bbox=b, score=0.9) for b in
            ([4, 4, 30, 40], [float("nan"), 4, 30, 40], [30, 4, -20, 40], [70, 4, 10, 10], [10, 10, 20, 20])]
    det_path = tmp_path / "dets.json"
    det_path.write_text(json.dumps(dets))
    with pytest.warns(UserWarning) as w:
        records = load_detections(det_path, gt)
    assert [r.ann_id for r in records] == [0, 4]
    assert len(w) == 1
    assert str(w[0].message) == (f"skipped 3 detections in {det_path}: 1 {BOX_NONFINITE}, 1 {BOX_EMPTY}, "
                                 f"1 {BOX_OUTSIDE}")


# ---- 6: keypoint names against the schema -------------------------------------------------------

def test_seventeen_animal_keypoints_do_not_train_as_coco(tmp_path):
    animal = list(COCO17.keypoints)
    animal[0], animal[3], animal[4] = "snout", "left_ear_tip", "right_ear_tip"
    path = _write_coco(tmp_path, [_ann(1)], _category(animal))
    with pytest.raises(ValueError) as e:
        load_coco(path)
    assert str(e.value) == (f"{path}: category 1 keypoints differ from schema coco at 3 of 17 positions: "
                            f"'nose' vs 'snout', 'left_ear' vs 'left_ear_tip', 'right_ear' vs 'right_ear_tip'")


def test_a_category_with_another_keypoint_count_names_both_counts(tmp_path):
    path = _write_coco(tmp_path, [_ann(1)], _category(AIC14.keypoints))
    with pytest.raises(ValueError, match=rf"^{path}: category 1 names 14 keypoints, schema coco has 17$"):
        load_coco(path)


def test_keypoint_names_differing_only_in_case_spaces_or_hyphens_are_accepted(tmp_path):
    # the AI Challenger json's own spelling: 'Right Shoulder', ..., 'Head top', 'Neck'
    names = [n.replace("_", " ").title() for n in AIC14.keypoints]
    names[12] = "Head-top"
    path = _write_coco(tmp_path, [_ann(1, k=14)], _category(names))
    assert len(load_coco(path, schema="aic")) == 1


def test_crowdpose_json_head_is_the_schemas_top_head(tmp_path):
    names = [("head" if n == "top_head" else n) for n in CROWDPOSE14.keypoints]
    path = _write_coco(tmp_path, [_ann(1, k=14)], _category(names))
    assert len(load_coco(path, schema="crowdpose")) == 1
    swapped = names[1::-1] + names[2:]  # left/right shoulder swapped: a different schema
    path = _write_coco(tmp_path, [_ann(1, k=14)], _category(swapped), name="swapped.json")
    with pytest.raises(ValueError, match=r"differ from schema crowdpose at 2 of 14 positions: "
                                         r"'left_shoulder' vs 'right_shoulder', 'right_shoulder' vs 'left_shoulder'$"):
        load_coco(path, schema="crowdpose")


def test_real_coco_aic_and_crowdpose_names_agree_with_their_schemas(realdata):
    for folder, schema in (("coco", "coco"), ("aic", "aic"), ("crowdpose", "crowdpose")):
        assert load_coco(realdata / folder / f"test_{folder}.json", schema=schema, mode="val")


# the schemas the synthetic figure has landmarks for; the others (feet, face, hands, PoseTrack's head_bottom) are
# refused by name, below
RENDERABLE = ("aic", "coco", "crowdpose", "mpii")


@pytest.mark.parametrize("schema", sorted(set(SCHEMAS) - set(RENDERABLE)))
def test_synthetic_dataset_refuses_a_schema_its_figure_cannot_label(tmp_path, schema):
    from sagepose.data.synth import generate_dataset

    with pytest.raises(ValueError, match=f"schema {schema}: the synthetic figure has no landmark for"):
        generate_dataset(tmp_path, 1, seed=3, schema=schema, image_size=(128, 96), workers=1)


@pytest.mark.parametrize("schema", RENDERABLE)
def test_synthetic_dataset_keypoint_names_agree_with_its_schema(tmp_path, schema):
    from sagepose.data.synth import generate_dataset

    path = generate_dataset(tmp_path, 1, seed=3, schema=schema, image_size=(128, 96))
    assert json.loads(open(path).read())["categories"][0]["keypoints"] == list(SCHEMAS[schema].keypoints)
    assert load_coco(path, schema=schema, mode="val")


# ---- 8: empty files say which ---------------------------------------------------------------------

def test_an_empty_annotation_list_names_the_file(tmp_path):
    path = _write_coco(tmp_path, [])
    for mode in ("train", "val"):
        with pytest.raises(ValueError, match=rf"^{path}: no annotations$"):
            load_coco(path, mode=mode)


def test_annotations_all_filtered_out_name_the_file(tmp_path):
    path = _write_coco(tmp_path, [_ann(1, iscrowd=1), _ann(2, keypoints=[0, 0, 0] * 17, num_keypoints=0)])
    with pytest.raises(ValueError, match=rf"^{path}: none of its 2 annotations is usable for mode='train'"):
        load_coco(path, mode="train")
    assert [r.ann_id for r in load_coco(path, mode="val")] == [2]
    path = _write_coco(tmp_path, [_ann(1, iscrowd=1)], name="crowd.json")
    with pytest.raises(ValueError, match=rf"^{path}: none of its 1 annotations is usable for mode='val'"):
        load_coco(path, mode="val")


def test_detections_all_below_the_score_threshold_name_the_file(tmp_path):
    gt = _write_coco(tmp_path, [_ann(1)], name="gt.json")
    det_path = tmp_path / "dets.json"
    det_path.write_text(json.dumps([dict(image_id=1, category_id=1, bbox=[4, 4, 30, 40], score=0.1)]))
    with pytest.raises(ValueError, match=rf"^{det_path}: no detections of category 1 scored >= 0.5"):
        load_detections(det_path, gt, score_thr=0.5)


# ---- 5: evaluation of ground truth without 'area' (AI Challenger, CrowdPose) -------------------

def _aic_like_gt(tmp_path, rng):
    """Three AIC-style people in a 900x600 image (no 'area', no 'iscrowd', as the released json), boxes inside."""
    anns = []
    for i, (x, y, w, h) in enumerate([(100, 50, 120, 300), (400, 80, 150, 400), (650, 100, 90, 200)]):
        kp = np.stack([rng.uniform(x, x + w, 14), rng.uniform(y, y + h, 14), np.full(14, 1.0)], 1)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h],
                     "keypoints": kp.reshape(-1).round(1).tolist(), "num_keypoints": 14})
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 900, "height": 600}], "annotations": anns,
          "categories": _category([n.replace("_", " ").title() for n in AIC14.keypoints])}
    path = tmp_path / "aic_like.json"
    path.write_text(json.dumps(gt))
    return path, gt


def test_evaluation_of_gt_without_area_uses_the_readers_fallback(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    path, gt = _aic_like_gt(tmp_path, rng)
    results = []
    for ann in gt["annotations"]:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, 4.0, kp[:, :2].shape)
        results.append(dict(image_id=1, category_id=1, keypoints=kp.reshape(-1).tolist(),
                            score=float(rng.uniform(0.3, 1.0))))
    ours = evaluate_coco(path, results, sigmas=AIC14.sigmas_array())
    # the same file with MMPose's fallback written out by hand: 0.53 x box area (boxes lie inside the image)
    for ann in gt["annotations"]:
        ann["area"], ann["iscrowd"] = 0.53 * ann["bbox"][2] * ann["bbox"][3], 0
    filled = tmp_path / "filled.json"
    filled.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(filled))
        ev = COCOeval(coco, coco.loadRes(results), "keypoints")
        ev.params.kpt_oks_sigmas = AIC14.sigmas_array()
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.05 < ours.AP < 0.99  # the noise makes a case where the area matters
    np.testing.assert_array_equal([getattr(ours, k) for k in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50",
                                                              "AR75", "ARm", "ARl")], ev.stats)


def test_real_aic_and_crowdpose_ground_truth_evaluates_to_ap_one(realdata):
    for folder, schema in (("aic", AIC14), ("crowdpose", CROWDPOSE14)):
        gt_json = realdata / folder / f"test_{folder}.json"
        gt = json.loads(gt_json.read_text())
        assert not any("area" in a for a in gt["annotations"])  # the released files carry none
        results = [dict(image_id=a["image_id"], category_id=1, keypoints=a["keypoints"], score=1.0)
                   for a in gt["annotations"] if a["num_keypoints"] > 0 and not a.get("iscrowd", 0)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = evaluate_coco(gt_json, results, sigmas=schema.sigmas_array())
        assert m.AP == pytest.approx(1.0) and m.AR == pytest.approx(1.0)
