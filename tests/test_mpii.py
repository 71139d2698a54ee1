"""sagepose.data.mpii: MPII json (MMPose's form) -> records equal to MMPose 1.3.2's MpiiDataset, head sizes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sagepose.data.mpii import MpiiSet, load_mpii, load_mpii_set, read_headboxes
from sagepose.errors import DataError
from sagepose.geometry import box_to_center_scale

DATA = Path(__file__).parent / "data"
ANN = DATA / "realdata" / "mpii" / "test_mpii.json"
GOLD = DATA / "mpii_goldens"


def _golden():
    return json.loads((GOLD / "test_mpii_parsed.json").read_text())["records"]


def _xyxy(rec) -> np.ndarray:
    x, y, w, h = rec.bbox_xywh.astype(np.float64)
    return np.array([x, y, x + w, y + h])


def _write(tmp_path, content, name="mpii.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def _ann(**over) -> dict:
    ann = {"image": "000000001.jpg", "center": [101.0, 201.0], "scale": 2.0,
           "joints": [[float(i), float(2 * i)] for i in range(16)], "joints_vis": [1] * 16}
    ann.update(over)
    return ann


def test_records_equal_mmpose_mpii_dataset_golden():
    records = load_mpii(str(ANN))
    gold = _golden()
    assert len(records) == len(gold) == 5
    for rec, g in zip(records, gold):
        np.testing.assert_allclose(_xyxy(rec), g["bbox"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rec.keypoints.reshape(-1), g["keypoints"], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(rec.visible, g["keypoints_visible"])
        np.testing.assert_array_equal(rec.flags, g["keypoints_visible"])
        assert rec.area == pytest.approx(g["area"][0], rel=1e-6)
        assert rec.image_id == g["img_id"] and rec.ann_id == gold.index(g)
        assert Path(rec.image_path) == ANN.parent / g["img_path"]


def test_box_gives_mmpose_crop_center_and_padded_scale():
    """The box's centre and size are MMPose's bbox_center / bbox_scale; sagepose's 1.25 padding of the box is
    GetBBoxCenterScale's padding of the stored scale."""
    for rec, g in zip(load_mpii(str(ANN)), _golden()):
        center, scale = box_to_center_scale(_xyxy(rec)[None].astype(np.float32))
        np.testing.assert_allclose(center.reshape(-1), g["bbox_center"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(scale.reshape(-1), np.array(g["bbox_scale"]) * 1.25, rtol=1e-6)


def test_head_sizes_equal_mmpose_from_json_headboxes():
    got = load_mpii_set(str(ANN), headboxes=str(GOLD / "headboxes.json"))
    assert isinstance(got, MpiiSet) and len(got.records) == 5
    np.testing.assert_allclose(got.head_sizes, [g["head_size"][0] for g in _golden()], rtol=1e-12)


def test_head_sizes_equal_mmpose_from_mat_headboxes():
    pytest.importorskip("scipy")
    got = load_mpii_set(str(ANN), headboxes=str(GOLD / "headboxes.mat"))
    np.testing.assert_allclose(got.head_sizes, [g["head_size"][0] for g in _golden()], rtol=1e-12)


def test_analytic_centre_shift_one_based_to_zero_based_and_square_box(tmp_path):
    # centre (101, 201), scale 2 -> side 400 px; y += 15/200 * 400 = 30 -> (101, 231); -1 -> (100, 230)
    vis = [0, 1, 2] + [1] * 13
    path = _write(tmp_path, [_ann(joints_vis=vis)])
    (rec,) = load_mpii(path, image_root="/imgs")
    np.testing.assert_array_equal(rec.bbox_xywh, [-100.0, 30.0, 400.0, 400.0])
    assert rec.area == pytest.approx(0.53 * 400 * 400)
    np.testing.assert_array_equal(rec.keypoints, [[i, 2 * i] for i in range(16)])  # kept 1-based, as given
    np.testing.assert_array_equal(rec.visible, [0, 1, 1] + [1] * 13)
    np.testing.assert_array_equal(rec.flags, vis)
    assert rec.image_path == "/imgs/000000001.jpg" and rec.image_id == 1 and rec.ann_id == 0
    assert (rec.width, rec.height) == (0, 0)


def test_analytic_no_shift_where_center_x_is_minus_one_and_small_area_floored(tmp_path):
    path = _write(tmp_path, [_ann(center=[-1, 50], scale=1.0), _ann(center=[10, 10], scale=0.005)])
    a, b = load_mpii(path)
    np.testing.assert_array_equal(a.bbox_xywh, [-102.0, -51.0, 200.0, 200.0])  # centre (-2, 49), no +15 shift
    assert b.area == 1.0  # 0.53 x 1 px^2 < 1 -> 1, as MMPose clips it


def test_head_size_is_point_six_diagonal_in_both_box_forms(tmp_path):
    path = _write(tmp_path, [_ann(), _ann()])
    boxes = _write(tmp_path, [[[0, 0], [30, 40]], [10, 20, 16, 28]], "heads.json")
    got = load_mpii_set(path, headboxes=boxes)
    np.testing.assert_allclose(got.head_sizes, [30.0, 6.0])
    np.testing.assert_array_equal(read_headboxes(boxes)[1], [[10, 20], [16, 28]])
    assert load_mpii_set(path).head_sizes is None


def test_records_carry_their_head_sizes(tmp_path):
    path = _write(tmp_path, [_ann(), _ann()])
    boxes = _write(tmp_path, [[[0, 0], [30, 40]], [10, 20, 16, 28]], "heads.json")
    assert [r.head_size for r in load_mpii_set(path, headboxes=boxes).records] == pytest.approx([30.0, 6.0])
    assert [r.head_size for r in load_mpii(path, headboxes=boxes)] == pytest.approx([30.0, 6.0])
    assert all(np.isnan(r.head_size) for r in load_mpii(path))
    # the rest of each record is unchanged by the head boxes
    plain, headed = load_mpii(path)[1], load_mpii(path, headboxes=boxes)[1]
    assert (plain.image_path, plain.ann_id, plain.area) == (headed.image_path, headed.ann_id, headed.area)
    np.testing.assert_array_equal(plain.bbox_xywh, headed.bbox_xywh)
    np.testing.assert_array_equal(plain.keypoints, headed.keypoints)


@pytest.mark.parametrize("content, message", [
    ({"a": 1}, "expected a list of MPII records, got dict"),
    ([], "no records"),
    ([_ann(), 3], "record 1: expected an object"),
    *[([_ann(), {k: v for k, v in _ann().items() if k != key}], f"record 1: missing required field {key!r}")
      for key in ("image", "center", "scale", "joints", "joints_vis")],
    ([_ann(joints=[[0, 0]] * 15)], "record 0: expected 16 joints, got 15"),
    ([_ann(joints=[[0, 0, 1]] * 16)], "record 0: joints must have shape (16, 2), got (16, 3)"),
    ([_ann(joints=[["a", 0]] * 16)], "record 0: joints must be numbers"),
    ([_ann(joints=[[float("nan"), 0]] * 16)], "record 0: joints has non-finite values"),
    ([_ann(joints_vis=[1] * 17)], "record 0: expected 16 joints_vis values, got 17"),
    ([_ann(joints_vis=["yes"] * 16)], "record 0: joints_vis must be numbers"),
    ([_ann(center=[1.0])], "record 0: center must have shape (2,), got (1,)"),
    ([_ann(center="middle")], "record 0: center must be numbers"),
    ([_ann(scale="big")], "record 0: scale must be numbers"),
    ([_ann(scale=[1, 2])], "record 0: scale must have shape (), got (2,)"),
    ([_ann(scale=0)], "record 0: scale must be > 0, got 0.0"),
    ([_ann(image=5)], "record 0: image must be a file name"),
    ([_ann(image="frame_a.jpg")], "record 0: image 'frame_a.jpg': MPII image names are numbers"),
])
def test_bad_record_is_a_data_error_naming_file_and_record(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_mpii(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("content, message", [
    ([[[0, 0], [1, 1]]], "1 head boxes for the 2 records of"),
    ({"boxes": []}, "expected a list of head boxes, got dict"),
    ([[0, 0, 1], [0, 0, 1, 1]], "head box 0: expected [[x1, y1], [x2, y2]] or [x1, y1, x2, y2]"),
    ([[0, 0, 1, 1], [0, "x", 1, 1]], "head box 1: head box must be numbers"),
    ([[0, 0, 1, 1], [0, float("inf"), 1, 1]], "head box 1: head box has non-finite values"),
])
def test_bad_headboxes_json_is_a_data_error_naming_it(tmp_path, content, message):
    path = _write(tmp_path, [_ann(), _ann()])
    heads = _write(tmp_path, content, "heads.json")
    with pytest.raises(DataError) as err:
        load_mpii(path, headboxes=heads)
    assert str(err.value).startswith(f"{heads}: ") and message in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: annotation file not found"):
        load_mpii(str(tmp_path / "nope.json"))
    with pytest.raises(DataError, match="gone.mat: head boxes file not found"):
        load_mpii(_write(tmp_path, [_ann()]), headboxes=str(tmp_path / "gone.mat"))


def test_mat_headboxes_without_scipy_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError, match=r"headboxes.mat: reading MPII .mat head boxes needs scipy"):
        read_headboxes(str(GOLD / "headboxes.mat"))


def test_mat_without_headboxes_src_is_named(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    path = tmp_path / "other.mat"
    scipy_io.savemat(str(path), {"something": np.zeros((2, 2))})
    with pytest.raises(DataError, match="other.mat: no 'headboxes_src' variable"):
        read_headboxes(str(path))
