"""``sagepose infer`` / :mod:`sagepose.infer`: dataset image ids, skipped unreadable images and bad boxes, the shared
detections reader and instance score."""
from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest

from sagepose.cli.main import main
from sagepose.data.detections import load_detections
from sagepose.geometry import BOX_EMPTY, BOX_NONFINITE, BOX_OUTSIDE
from sagepose.infer import load_boxes, run_inference
from sagepose.keypoints import COCO17
from sagepose.models.estimator import Prediction

IDS = (785, 40083, 196141)  # as COCO's: neither 0-based nor contiguous


@pytest.fixture
def coco_folder(tmp_path):
    """Three images with COCO-style ids, their GT json (one person each) and COCO-results detections."""
    images, anns, dets = [], [], []
    folder = tmp_path / "images"
    folder.mkdir()
    for n, image_id in enumerate(IDS):
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(folder / name), np.full((120, 160, 3), 60 + 40 * n, np.uint8))
        images.append({"id": image_id, "file_name": name, "width": 160, "height": 120})
        kp = np.stack([np.linspace(40, 90, 17), np.linspace(20, 100, 17), np.full(17, 2)], 1)
        anns.append({"id": 10 + n, "image_id": image_id, "category_id": 1, "bbox": [30, 10, 70, 100],
                     "keypoints": kp.reshape(-1).tolist(), "num_keypoints": 17, "area": 5000.0, "iscrowd": 0})
        dets.append({"image_id": image_id, "category_id": 1, "bbox": [28.5, 9.0, 72.0, 103.0], "score": 0.9})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}]}))
    det = tmp_path / "dets.json"
    det.write_text(json.dumps(dets))
    return folder, gt, det


class FixedModel:
    """predict() -> keypoints at the box centre with fixed scores; records the boxes it was given."""

    schema = COCO17

    def __init__(self, scores=None):
        self.scores = np.full(17, 0.5, np.float32) if scores is None else np.asarray(scores, np.float32)
        self.boxes = []

    def predict(self, image, boxes):
        boxes = np.asarray(boxes, np.float32)
        self.boxes.append(boxes)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        return Prediction(np.repeat(centre[:, None], 17, 1), np.tile(self.scores, (len(boxes), 1)))


def _load_res(gt, results):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        return coco, coco.loadRes(results)


# ---- 4: results carry the dataset's image ids ---------------------------------------------------

def test_infer_with_images_json_writes_the_datasets_image_ids(coco_folder, tmp_path):
    folder, gt, det = coco_folder
    out = tmp_path / "out"
    assert main(["infer", "vit-tiny", "--random-weights", str(folder), "--det-json", str(det), "--images-json", str(gt),
                 "--out", str(out), "--no-render"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["image_id"] for r in results) == sorted(IDS)
    assert all(r["file_name"] == f"{r['image_id']:012d}.jpg" for r in results)
    coco, dt = _load_res(gt, str(out / "results.json"))  # pycocotools takes them as they are
    assert sorted(dt.getImgIds()) == sorted(coco.getImgIds())


def test_infer_whole_image_boxes_with_images_json_use_its_ids(coco_folder, tmp_path):
    folder, gt, _ = coco_folder
    assert main(["infer", "vit-tiny", "--random-weights", str(folder), "--images-json", str(gt),
                 "--out", str(tmp_path / "o"), "--no-render"]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["image_id"] for r in results] == list(IDS)  # the folder's sorted order
    _load_res(gt, results)


def test_infer_on_real_coco_images_gives_results_pycocotools_loads(realdata, tmp_path):
    coco_dir = realdata / "coco"
    gt, det = coco_dir / "test_coco.json", coco_dir / "test_coco_det_AP_H_56.json"
    out = tmp_path / "out"
    assert main(["infer", "vit-tiny", "--random-weights", str(coco_dir), "--det-json", str(det),
                 "--images-json", str(gt), "--out", str(out), "--no-render", "--det-thr", "0.9"]) == 0
    results = json.loads((out / "results.json").read_text())
    names = {im["id"]: im["file_name"] for im in json.loads(gt.read_text())["images"]
             if (coco_dir / im["file_name"]).is_file()}  # the images at hand (785, 196141, ...)
    assert len(names) >= 2 and {r["image_id"] for r in results} == set(names)
    assert all(names[r["image_id"]] == r["file_name"] for r in results)
    _load_res(gt, results)


def test_an_image_missing_from_the_images_json_is_an_error_naming_it(coco_folder, tmp_path):
    folder, gt, _ = coco_folder
    cv2.imwrite(str(folder / "stray.jpg"), np.zeros((20, 20, 3), np.uint8))
    from sagepose.infer import image_ids

    with pytest.raises(ValueError, match=r"stray\.jpg: no image of this name in the images json"):
        run_inference(FixedModel(), folder, tmp_path / "o", render=False, ids=image_ids(gt))


def test_without_images_json_ids_are_sorted_folder_indices_kept_past_a_skipped_image(coco_folder, tmp_path):
    folder, _, _ = coco_folder
    (folder / "000000000786.jpg").write_bytes(b"not an image")  # sorts second
    run = run_inference(FixedModel(), folder, tmp_path / "o", render=False)
    assert [(r["image_id"], r["file_name"]) for r in run.rows] == [
        (0, "000000000785.jpg"), (2, "000000040083.jpg"), (3, "000000196141.jpg")]


# ---- 8: one unreadable image does not abort a folder --------------------------------------------

def test_folder_run_skips_an_unreadable_image_and_names_it_in_the_summary(coco_folder, tmp_path, capsys):
    folder, _, _ = coco_folder
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    assert main(["infer", "vit-tiny", "--random-weights", str(folder), "--out", str(out), "--no-render"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"skipped 1 unreadable image: {broken}" in printed
    assert len(json.loads((out / "results.json").read_text())) == len(IDS)


def test_a_single_unreadable_image_is_still_an_error(tmp_path):
    from sagepose.image import ImageReadError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"broken\.jpg: cannot decode"):
        run_inference(FixedModel(), broken, tmp_path / "o", render=False)


# ---- 7: bad boxes are skipped and counted, never predicted on -------------------------------------

def test_bad_boxes_of_a_mapping_are_skipped_and_counted_in_one_summary_line(coco_folder, tmp_path):
    folder, _, _ = coco_folder
    det = tmp_path / "boxes.json"
    det.write_text(json.dumps({"000000000785.jpg": [[10, 10, 60, 90, 0.9], [float("nan"), 0, 5, 5, 0.9],
                                                   [60, 20, 30, 50, 0.9]],  # xywh given as xyxy
                               "000000040083.jpg": [[170, 10, 200, 50, 0.9], [100, 40, 150, 110]]}))
    model = FixedModel()
    run = run_inference(model, folder, tmp_path / "o", boxes=load_boxes(det), render=False)
    np.testing.assert_array_equal(np.concatenate(model.boxes), [[10, 10, 60, 90], [100, 40, 150, 110]])
    assert len(run.rows) == 2
    assert run.summary() == [f"skipped 3 boxes: 1 {BOX_NONFINITE}, 1 {BOX_EMPTY}, 1 {BOX_OUTSIDE}"]


# ---- de-duplication: one COCO-results reader, one instance score --------------------------------

def test_infer_and_evaluation_read_coco_results_detections_alike(coco_folder, tmp_path):
    folder, gt, det = coco_folder
    dets = json.loads(det.read_text())
    dets += [{"image_id": 785, "category_id": 1, "bbox": [float("nan"), 1, 2, 3], "score": 0.8},
             {"image_id": 40083, "category_id": 1, "bbox": [300, 1, 20, 30], "score": 0.8},
             {"image_id": 40083, "category_id": 2, "bbox": [3, 1, 20, 30], "score": 0.8},
             {"image_id": 196141, "category_id": 1, "bbox": [3, 1, 20, 30], "score": 0.2}]
    det.write_text(json.dumps(dets))
    with pytest.warns(UserWarning, match="skipped 2 detections"):
        boxes = load_boxes(det, gt, score_thr=0.3)
    with pytest.warns(UserWarning, match="skipped 2 detections"):  # the images are in folder/, not beside gt.json
        records = load_detections(det, gt, score_thr=0.3, image_root=str(folder))
    names = {i: f"{i:012d}.jpg" for i in IDS}
    for name in names.values():
        want = [np.r_[r.bbox_xywh[:2], r.bbox_xywh[:2] + r.bbox_xywh[2:], r.bbox_score]
                for r in records if names[r.image_id] == name]
        np.testing.assert_allclose(boxes[name], want, rtol=1e-6)


def test_infer_scores_a_person_as_evaluation_does(coco_folder, tmp_path):
    folder, _, _ = coco_folder
    scores = np.r_[0.9, 0.6, 0.3, np.full(14, 0.1)]
    det = tmp_path / "boxes.json"
    det.write_text(json.dumps({"000000000785.jpg": [[10, 10, 60, 90, 0.8]]}))
    run_inference(FixedModel(scores), folder, tmp_path / "o", boxes=load_boxes(det), render=False)
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())
    # MMPose's bbox_keypoint score: box score x mean of the keypoint scores above 0.2 (not of all 17)
    assert row["score"] == pytest.approx(0.8 * (0.9 + 0.6 + 0.3) / 3, rel=1e-6)
