"""COCO-format reader, bad-input handling and the TopDownDataset."""
import hashlib
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import REALDATA

from sagepose.data.coco import load_coco
from sagepose.data.dataset import TopDownDataset, collate
from sagepose.data.detections import load_detections
from sagepose.data.transforms import CropAugment
from sagepose.errors import DataError
from sagepose.image import ImageReadError, read_image
from sagepose.keypoints import COCO17


def _coco(tmp_path, annotations=None, images=None, name="ann.json"):
    """A small valid COCO keypoint file with two people in one 64x48 image; returns its path."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((48, 64, 3), 128, np.uint8))
    kp = [10, 10, 2] * 17
    data = {
        "images": images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 64,
                                                      "height": 48}],
        "annotations": annotations if annotations is not None else [
            {"id": 11, "image_id": 1, "bbox": [4, 4, 30, 40], "keypoints": kp, "num_keypoints": 17,
             "area": 1000.0, "iscrowd": 0},
            {"id": 12, "image_id": 1, "bbox": [30, 2, 40, 30], "keypoints": kp, "num_keypoints": 17,
             "area": 900.0, "iscrowd": 0},
        ],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id=11, **kw):
    a = {"id": ann_id, "image_id": 1, "bbox": [4, 4, 30, 40], "keypoints": [10, 10, 2] * 17,
         "num_keypoints": 17}
    a.update(kw)
    return a


# ---- real samples -------------------------------------------------------------------------------

def test_real_coco_counts_match_mmpose():
    path = os.path.join(REALDATA, "coco", "test_coco.json")
    train, val = load_coco(path, mode="train"), load_coco(path, mode="val")
    assert (len(train), len(val)) == (12, 14)  # two instances have num_keypoints == 0
    r = train[0]
    assert (r.ann_id, r.image_id, r.width, r.height) == (442619, 785, 640, 425)
    np.testing.assert_allclose(r.bbox_xywh, [280.79, 44.73, 218.7, 346.68], rtol=1e-6)
    assert r.keypoints.shape == (17, 2) and r.keypoints.dtype == np.float32
    assert r.flags.max() == 2 and r.visible.max() == 1 and r.num_keypoints == 17
    assert os.path.exists(r.image_path)
    assert read_image(r.image_path).shape == (425, 640, 3)


def test_real_aic_without_area_or_iscrowd_fields():
    path = os.path.join(REALDATA, "aic", "test_aic.json")
    records = load_coco(path, schema="aic")
    assert len(records) == 9 and records[0].keypoints.shape == (14, 2)
    r = records[0]  # area missing: MMPose's 0.53 x box area
    assert r.area == pytest.approx(0.53 * r.bbox_xywh[2] * r.bbox_xywh[3], rel=1e-5)
    # box [279, 55, 213, 544] in a 900x600 image: bottom clipped to height - 1
    np.testing.assert_allclose(r.bbox_xywh, [279, 55, 213, 599 - 55])


def test_real_crowdpose_and_detections():
    path = os.path.join(REALDATA, "crowdpose", "test_crowdpose.json")
    assert len(load_coco(path, schema="crowdpose", mode="val")) == 5
    assert len(load_coco(path, schema="crowdpose", mode="train")) == 4
    coco = os.path.join(REALDATA, "coco", "test_coco.json")
    dets = load_detections(os.path.join(REALDATA, "coco", "test_coco_det_AP_H_56.json"), coco)
    assert len(dets) == 118 and dets[0].image_id == 785 and 0.99 < dets[0].bbox_score <= 1
    assert dets[0].visible.sum() == 0 and dets[0].keypoints.shape == (17, 2)
    assert len(load_detections(os.path.join(REALDATA, "coco", "test_coco_det_AP_H_56.json"), coco,
                               score_thr=0.5)) < 118


# ---- bad input: one test per case ----------------------------------------------------------------

def test_missing_annotation_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: annotation file not found"):
        load_coco(tmp_path / "nope.json")


def test_file_that_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{'images': [")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON: "):
        load_coco(path)


def test_missing_top_level_field(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"ann\.json: missing required field 'annotations'"):
        load_coco(path)


@pytest.mark.parametrize("field", ["bbox", "keypoints", "image_id"])
def test_annotation_missing_a_required_field_names_file_and_id(tmp_path, field):
    ann = _ann(ann_id=77)
    del ann[field]
    path = _coco(tmp_path, annotations=[_ann(), ann])
    with pytest.raises(ValueError, match=rf"ann\.json: annotation 77: missing required field '{field}'"):
        load_coco(path)


def test_wrong_keypoint_count_names_file_and_id(tmp_path):
    path = _coco(tmp_path, annotations=[_ann(ann_id=5, keypoints=[1, 1, 2] * 16)])
    with pytest.raises(ValueError) as e:
        load_coco(path)
    assert str(e.value) == f"{path}: annotation 5: expected 51 keypoint values, got 48"


def test_zero_area_box_is_skipped_and_counted_in_one_warning(tmp_path):
    anns = [_ann(1), _ann(2, bbox=[5, 5, 0, 10]), _ann(3, bbox=[5, 5, 10, 0]),
            _ann(4, bbox=[70, 10, 5, 5])]  # the last one lies right of the 64-px image: clipped to nothing
    path = _coco(tmp_path, annotations=anns)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning) as w:
        records = load_coco(path, mode="val")
    assert [r.ann_id for r in records] == [1]
    assert len(w) == 1 and str(w[0].message) == f"skipped 3 annotations in {path}: 3 zero-area boxes"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # input untouched


def test_annotation_whose_image_entry_is_missing(tmp_path):
    path = _coco(tmp_path, annotations=[_ann(9, image_id=42)])
    with pytest.raises(ValueError, match=r"ann\.json: annotation 9: image_id 42 has no entry in 'images'"):
        load_coco(path)


def test_crowd_and_unlabelled_instances_follow_mmpose_filtering(tmp_path):
    anns = [_ann(1), _ann(2, iscrowd=1), _ann(3, keypoints=[0, 0, 0] * 17, num_keypoints=0)]
    path = _coco(tmp_path, annotations=anns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropped by design: no warning
        assert [r.ann_id for r in load_coco(path, mode="train")] == [1]
        assert [r.ann_id for r in load_coco(path, mode="val")] == [1, 3]


def test_head_box_gives_the_mpii_head_size_and_its_absence_nan(tmp_path):
    # 0.6 x the diagonal: a 30 x 40 box (diagonal 50) -> 30 px, a 6 x 8 one -> 6 px
    anns = [_ann(1, head_box=[10, 5, 40, 45]), _ann(2), _ann(3, head_box=[0.5, 1.5, 6.5, 9.5])]
    records = load_coco(_coco(tmp_path, annotations=anns))
    assert records[0].head_size == pytest.approx(30.0, abs=1e-12)
    assert np.isnan(records[1].head_size)
    assert records[2].head_size == pytest.approx(6.0, abs=1e-12)
    assert np.isnan(load_coco(_coco(tmp_path))[0].head_size)


@pytest.mark.parametrize("box, problem", [
    ([1, 2, 3], "expected 4 numbers"),
    ("1 2 3 4", "expected 4 numbers"),
    ([1, 2, "3", 4], "expected 4 numbers"),
    ([[1, 2], [3, 4]], "expected 4 numbers"),
    ([1, 2, float("nan"), 4], "non-finite values"),
    ([10, 2, 10, 4], "empty or inverted"),
    ([1, 9, 3, 4], "empty or inverted"),
])
def test_malformed_head_box_is_a_data_error_naming_file_and_id(tmp_path, box, problem):
    from sagepose.errors import DataError

    path = _coco(tmp_path, annotations=[_ann(1), _ann(8, head_box=box)])
    with pytest.raises(DataError) as e:
        load_coco(path)
    assert str(e.value).startswith(f"{path}: annotation 8: head_box {box!r}: {problem}")


def test_missing_image_raises_with_the_path(tmp_path):
    with pytest.raises(ImageReadError, match=r"gone\.jpg: missing"):
        read_image(str(tmp_path / "gone.jpg"))


def test_corrupt_image_raises_with_the_path(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ImageReadError, match=r"bad\.jpg: cannot decode \(corrupt or not an image\)"):
        read_image(str(bad))


def _dataset(tmp_path, **kw):
    records = load_coco(_coco(tmp_path))
    sampler = CropAugment(COCO17, input_size=(48, 64))
    return TopDownDataset(records, sampler, train=True, **kw), records


def test_dataset_raises_on_an_unreadable_image_naming_it(tmp_path):
    ds, _ = _dataset(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"a\.jpg: cannot decode"):
        ds[0]


# ---- dataset ------------------------------------------------------------------------------------

def test_dataset_sample_fields_and_collate(tmp_path):
    ds, _ = _dataset(tmp_path)
    batch = collate([ds[0], ds[1]])
    assert batch["img"].dtype == torch.uint8 and batch["img"].shape == (2, 64, 48, 3)
    assert batch["keypoints"].shape == (2, 17, 2) and batch["visible"].shape == (2, 17)
    assert batch["image_id"].tolist() == [1, 1] and batch["index"].tolist() == [0, 1]
    # only fields something reads: training (img, keypoints, visible, index), validation (all of them)
    assert list(batch) == ["img", "keypoints", "visible", "center", "scale", "image_id", "bbox_score", "index",
                           "gt_keypoints", "gt_visible", "bbox", "head_size"]
    # the labels as the file gives them (image px), for validation's pixel metrics
    records = ds.records
    assert np.array_equal(batch["gt_keypoints"].numpy(), np.stack([records[0].keypoints, records[1].keypoints]))
    assert np.array_equal(batch["gt_visible"].numpy(), np.stack([records[0].visible, records[1].visible]))
    assert np.array_equal(batch["bbox"].numpy(), np.stack([records[0].bbox_xywh, records[1].bbox_xywh]))


def test_dataset_carries_head_sizes_into_the_batch(tmp_path):
    path = _coco(tmp_path, annotations=[_ann(1, head_box=[10, 5, 40, 45]), _ann(2)])
    ds = TopDownDataset(load_coco(path), CropAugment(COCO17, input_size=(48, 64)), train=False)
    assert ds[0]["head_size"].dtype == np.float32 and ds[0]["head_size"] == 30.0
    batch = collate([ds[0], ds[1]])
    assert batch["head_size"].dtype == torch.float32 and batch["head_size"].shape == (2,)
    assert batch["head_size"][0] == 30.0 and torch.isnan(batch["head_size"][1])


def test_dataset_is_reproducible_with_any_num_workers_and_changes_per_epoch(tmp_path):
    ds, _ = _dataset(tmp_path)
    ds.records = ds.records * 4

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate,
                                             persistent_workers=workers > 0,
                                             multiprocessing_context="fork" if workers else None)
        out = []
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            out.append(torch.cat([b["keypoints"] for b in loader]))
        return out

    single, multi = run(0), run(2)
    for a, b in zip(single, multi):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(single[0], single[1])


def test_image_cache_gives_the_same_samples_and_decodes_each_file_once(tmp_path, monkeypatch):
    import sagepose.data.dataset as dataset_module

    plain, _ = _dataset(tmp_path)
    cached, _ = _dataset(tmp_path, cache_images=True)
    decoded = []
    monkeypatch.setattr(dataset_module, "read_image", lambda path: decoded.append(path) or read_image(path))
    for epoch in (0, 1, 2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert np.array_equal(a["img"], b["img"]) and np.array_equal(a["keypoints"], b["keypoints"])
    files = {r.image_path for r in plain.records}
    # the plain dataset decodes on every access, the cached one once per file
    assert len(decoded) == 3 * len(plain) + len(files)
    assert all(not img.flags.writeable for img in cached._images.values())


# ---- image paths: data.image_root, the json's folder, the folder it records ---------------------------------------

def _labels_at(json_path, file_name, info=None):
    """A one-person COCO json at ``json_path`` whose image is ``file_name``."""
    data = {"images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
            "annotations": [_ann()]}
    if info is not None:
        data["info"] = info
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return json_path


def test_file_names_relative_to_the_json_resolve_from_another_cwd_despite_an_image_root(tmp_path, monkeypatch):
    (tmp_path / "proj" / "frames").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "proj" / "frames" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    path = _labels_at(tmp_path / "proj" / "splits" / "train.json", "../frames/a.png")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rel = os.path.relpath(path)
    assert os.path.isfile(load_coco(rel)[0].image_path)
    # data.image_root first, then the json's folder: a root that does not hold the images is passed over
    record = load_coco(rel, image_root=str(tmp_path / "proj"))[0]
    assert os.path.samefile(record.image_path, tmp_path / "proj" / "frames" / "a.png")
    # an image root that holds them wins over the json's folder
    (tmp_path / "alt" / "frames").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "alt" / "frames" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "alt" / "x").mkdir()
    assert load_coco(rel, image_root=str(tmp_path / "alt" / "x"))[0].image_path == os.path.join(
        str(tmp_path / "alt" / "x"), "../frames/a.png")


def test_a_json_copied_away_from_its_images_resolves_by_its_recorded_image_root(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    path = _labels_at(tmp_path / "copy" / "labels.json", "a.png", info={"image_root": str(tmp_path)})
    assert load_coco(path)[0].image_path == os.path.join(str(tmp_path), "a.png")


def test_missing_images_name_the_folders_tried_and_the_root_to_pass(tmp_path):
    (tmp_path / "coco" / "val2017").mkdir(parents=True)  # COCO's layout: annotations/ beside val2017/
    cv2.imwrite(str(tmp_path / "coco" / "val2017" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    path = _labels_at(tmp_path / "coco" / "annotations" / "val.json", "a.png")
    with pytest.raises(DataError) as e:
        load_coco(path, image_root=str(tmp_path / "wrong"))
    want = (f"{path}: image a.png: missing (looked in {tmp_path / 'wrong'}, {path.parent}; the images exist under "
            f"{tmp_path / 'coco' / 'val2017'}: pass data.image_root={tmp_path / 'coco' / 'val2017'})")
    assert str(e.value) == want
    assert load_coco(path, image_root=str(tmp_path / "coco" / "val2017"))[0].image_path == str(
        tmp_path / "coco" / "val2017" / "a.png")
    # images that exist nowhere (labels read for scoring only): the json's folder, as before, no error
    nowhere = _labels_at(tmp_path / "labels" / "val.json", "gone.png")
    assert load_coco(nowhere)[0].image_path == os.path.join(str(tmp_path / "labels"), "gone.png")
