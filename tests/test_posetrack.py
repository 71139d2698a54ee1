"""sagepose.data.posetrack: PoseTrack18 jsons (merged or per video) -> records equal to MMPose 1.3.2's
PoseTrack18Dataset parse (goldens from tools/make_posetrack_goldens.py), the POSETRACK18 schema, bad input."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from sagepose.data.posetrack import POSETRACK18, load_posetrack18
from sagepose.errors import DataError

DATA = Path(__file__).parent / "data"
ANN_DIR = DATA / "realdata" / "posetrack18"
MERGED = ANN_DIR / "test_posetrack18_val.json"
GOLD = DATA / "posetrack_goldens"
ROOT = "/data/posetrack18"


def _golden(name: str, mode: str = "test_mode") -> list[dict]:
    return json.loads((GOLD / f"{name}_parsed.json").read_text())[mode]


def _xyxy(rec) -> np.ndarray:
    x, y, w, h = rec.bbox_xywh.astype(np.float64)
    return np.array([x, y, x + w, y + h])


def _assert_equal_golden(records, gold) -> None:
    assert len(records) == len(gold)
    for rec, g in zip(records, gold):  # same order as MMPose's data list
        assert rec.ann_id == g["id"] and rec.image_id == g["img_id"]
        np.testing.assert_allclose(_xyxy(rec), g["bbox"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rec.keypoints.reshape(-1), g["keypoints"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(rec.visible, g["keypoints_visible"])
        assert rec.area == pytest.approx(g["area"][0], rel=1e-6)
        assert rec.num_keypoints == g["num_keypoints"]
        assert rec.image_path == f"{ROOT}/{g['img_path']}"
        assert (rec.width, rec.height) == (1920, 1080)


def test_merged_file_equals_mmpose_posetrack18_dataset_golden():
    records = load_posetrack18(str(MERGED), ROOT)
    _assert_equal_golden(records, _golden("test_posetrack18_val"))
    assert _golden("test_posetrack18_val") == _golden("test_posetrack18_val", "train_mode")


@pytest.mark.parametrize("video", ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"])
def test_per_video_file_equals_mmpose_golden(video):
    _assert_equal_golden(load_posetrack18(str(ANN_DIR / "val" / f"{video}.json"), ROOT), _golden(video))


def test_per_video_folder_gives_the_merged_files_records():
    folder = load_posetrack18(str(ANN_DIR / "val"), ROOT)
    merged = load_posetrack18(str(MERGED), ROOT)
    # the folder is read in file-name order, the merged file in its own image order: same set of records
    assert [r.ann_id for r in folder] != [r.ann_id for r in merged]
    by_id = {r.ann_id: r for r in merged}
    assert sorted(by_id) == sorted(r.ann_id for r in folder) and len(folder) == 14
    for rec in folder:
        other = by_id[rec.ann_id]
        assert (rec.image_path, rec.image_id, rec.area, rec.width, rec.height) == \
            (other.image_path, other.image_id, other.area, other.width, other.height)
        for field in ("bbox_xywh", "keypoints", "visible", "flags"):
            np.testing.assert_array_equal(getattr(rec, field), getattr(other, field))


def test_box_clipped_to_image_and_area_from_clipped_box():
    """003418's person box [214.25, 15, 1358.5, 1092] leaves the 1920 x 1080 frame at the bottom: clipped to
    y = 1079, and the area (the json has none) is 0.53 x the clipped box."""
    (rec,) = load_posetrack18(str(ANN_DIR / "val" / "003418_mpii_test.json"), ROOT)
    np.testing.assert_allclose(rec.bbox_xywh, [214.25, 15.0, 1358.5, 1064.0], atol=1e-4)
    assert rec.area == pytest.approx(0.53 * 1358.5 * 1064.0, rel=1e-6)


def test_schema_equals_mmpose_metainfo():
    meta = json.loads((GOLD / "metainfo.json").read_text())
    assert list(POSETRACK18.keypoints) == meta["keypoints"]
    assert sorted(map(list, POSETRACK18.flip_pairs)) == meta["flip_pairs"]
    assert list(map(list, POSETRACK18.skeleton)) == meta["skeleton"]
    np.testing.assert_allclose(POSETRACK18.sigmas, meta["sigmas"], rtol=1e-6)
    np.testing.assert_allclose(POSETRACK18.joint_weights, meta["joint_weights"], rtol=1e-6)
    assert list(POSETRACK18.upper_body) == meta["upper_body"]


def _video(**ann_over) -> dict:
    kpts = []
    for i in range(17):
        kpts += [100.0 + i, 200.0 + i, 1]
    ann = {"id": 7, "image_id": 100, "bbox": [90.0, 190.0, 50.0, 60.0], "keypoints": kpts, "num_keypoints": 17,
           "iscrowd": False, "track_id": 0}
    ann.update(ann_over)
    return {"images": [{"id": 100, "file_name": "images/val/000001_x/000000.jpg", "width": 640, "height": 480,
                        "is_labeled": True, "vid_id": "000001", "frame_id": 100}],
            "annotations": [ann], "categories": [{"id": 1, "keypoints": list(POSETRACK18.keypoints)}]}


def _write(tmp_path, content, name="000001_x.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def test_hand_made_video_parses_to_its_numbers(tmp_path):
    (rec,) = load_posetrack18(_write(tmp_path, _video()), "root")
    np.testing.assert_array_equal(rec.bbox_xywh, [90, 190, 50, 60])
    np.testing.assert_array_equal(rec.keypoints[16], [116, 216])
    assert rec.image_path == "root/images/val/000001_x/000000.jpg" and rec.area == pytest.approx(0.53 * 3000)


@pytest.mark.parametrize("over, why", [
    ({"num_keypoints": 0}, "without labelled keypoints"),
    ({"iscrowd": True}, "crowd"),
    ({"bbox": [700.0, 10.0, 50.0, 50.0]}, "zero-area boxes"),
])
def test_dropped_annotations_are_counted_in_one_warning(tmp_path, over, why):
    data = _video()
    data["annotations"].append({**data["annotations"][0], "id": 8, **over})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_posetrack18(_write(tmp_path, data), "root")
    assert [r.ann_id for r in records] == [7]
    assert len(caught) == 1 and f"1 {why}" in str(caught[0].message)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(bbox=[1.0, 2.0, 3.0]), "annotation 7: expected 4 bbox values"),
    (lambda d: d["annotations"][0].update(bbox=[1.0, float("nan"), 3.0, 4.0]), "annotation 7: bbox"),
    (lambda d: d["annotations"][0].update(keypoints=[1.0] * 50), "annotation 7: expected 51 keypoint values"),
    (lambda d: d["annotations"][0].update(image_id=5), "annotation 7: image_id 5 has no entry"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotation 7: missing required field 'image_id'"),
    (lambda d: d["images"][0].pop("width"), "image 100: missing required field 'width'"),
    (lambda d: d["images"].append(dict(d["images"][0])), "image 100 appears more than once"),
    (lambda d: d["categories"][0]["keypoints"].__setitem__(1, "left_eye"), "keypoints differ from schema"),
    (lambda d: d["annotations"][0].update(num_keypoints=0), "no usable annotation"),
])
def test_bad_input_is_a_one_line_data_error_naming_file_and_record(tmp_path, edit, message):
    data = _video()
    edit(data)
    path = _write(tmp_path, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as err:
            load_posetrack18(path, "root")
    text = str(err.value)
    assert text.startswith(path) and message in text and "\n" not in text


def test_bad_paths_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such PoseTrack18 annotation file or folder"):
        load_posetrack18(str(tmp_path / "missing.json"), "root")
    with pytest.raises(DataError, match="folder holds no PoseTrack18 json files"):
        load_posetrack18(str(tmp_path), "root")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        load_posetrack18(str(tmp_path / "broken.json"), "root")


def test_same_image_in_two_files_of_a_folder_is_an_error(tmp_path):
    _write(tmp_path, _video(), "a.json")
    _write(tmp_path, _video(id=9), "b.json")
    with pytest.raises(DataError, match=r"b\.json: image 100 is also in .*a\.json"):
        load_posetrack18(str(tmp_path), "root")
