"""Train / val / test splits of a COCO keypoint json (sagepose.data.split, `sagepose split`): disjoint by image,
complete, reproducible for a seed, whole videos with --by video, sizes, refusals, paths that still resolve."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from sagepose.cli.main import main
from sagepose.data.coco import load_coco
from sagepose.data.split import split_coco, split_sizes
from sagepose.errors import DataError
from sagepose.keypoints import load_schema


def _labels(videos=(("vidA", 10),), people_per_image=2, images_on_disk=None):
    """A COCO dict: per video ``n`` images ``labeled-data/<video>/img<i>.png``, each with ``people_per_image``
    annotations; ``images_on_disk``: a folder to write the (tiny) images into."""
    images, anns = [], []
    for video, n in videos:
        for i in range(n):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"labeled-data/{video}/img{i}.png", "width": 8, "height": 6})
            if images_on_disk is not None:
                path = images_on_disk / images[-1]["file_name"]
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.zeros((6, 8, 3), np.uint8))
            for _ in range(people_per_image):
                anns.append({"id": len(anns) + 1, "image_id": image_id, "bbox": [0, 0, 8, 6],
                             "keypoints": [1, 1, 2, 2, 2, 2], "num_keypoints": 2})
    cat = {"id": 1, "name": "mouse", "keypoints": ["a", "b"], "skeleton": [[1, 2]], "flip_pairs": []}
    return {"info": {"description": "test"}, "images": images, "annotations": anns, "categories": [cat],
            "licenses": [{"id": 1}]}


def _image_ids(part):
    return [img["id"] for img in part["images"]]


def test_split_by_image_is_disjoint_complete_and_keeps_annotations_with_their_image():
    data = _labels(videos=(("vidA", 30), ("vidB", 20)))
    parts = split_coco(data, val=0.2, test=0.1, seed=0)
    assert list(parts) == ["train", "val", "test"]
    assert [len(p["images"]) for p in parts.values()] == [35, 10, 5]
    ids = [set(_image_ids(p)) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {img["id"] for img in data["images"]}
    for part in parts.values():
        assert {a["image_id"] for a in part["annotations"]} == set(_image_ids(part))
        assert len(part["annotations"]) == 2 * len(part["images"])  # all of an image's annotations go together
        assert part["categories"] == data["categories"] and part["licenses"] == data["licenses"]
        assert _image_ids(part) == sorted(_image_ids(part))  # the file's order kept
    assert sum(len(p["annotations"]) for p in parts.values()) == len(data["annotations"])
    assert parts["val"]["info"]["split"] == {"name": "val", "seed": 0, "by": "image", "val": 0.2, "test": 0.1,
                                             "images": 10, "annotations": 20}
    assert parts["val"]["info"]["description"] == "test"


def test_split_is_reproducible_for_a_seed_and_changes_with_it():
    data = _labels(videos=(("vidA", 40),))
    a, b = split_coco(data, val=0.25, seed=3), split_coco(data, val=0.25, seed=3)
    assert _image_ids(a["val"]) == _image_ids(b["val"]) and _image_ids(a["train"]) == _image_ids(b["train"])
    assert _image_ids(split_coco(data, val=0.25, seed=4)["val"]) != _image_ids(a["val"])


def test_sizes_round_so_a_tiny_set_still_gets_a_val_image():
    assert split_sizes(3, {"val": 0.1, "test": 0.0}) == {"train": 2, "val": 1, "test": 0}
    assert split_sizes(10, {"val": 0.25, "test": 0.15}) == {"train": 5, "val": 3, "test": 2}  # 2.5 -> 3, 1.5 -> 2
    assert [len(p["images"]) for p in split_coco(_labels(videos=(("v", 2),)), val=0.1).values()] == [1, 1]


def test_too_few_images_or_videos_is_one_line_naming_the_file():
    with pytest.raises(DataError, match=r"^labels.json: 2 images, too few for train, val, test splits"):
        split_coco(_labels(videos=(("v", 2),)), val=0.2, test=0.1, where="labels.json")
    with pytest.raises(DataError, match=r"^labels.json: 2 video folder\(s\) \(labeled-data/a, labeled-data/b\), "
                                        r"too few for train, val, test splits by video"):
        split_coco(_labels(videos=(("a", 5), ("b", 5))), val=0.2, test=0.1, by="video", where="labels.json")
    with pytest.raises(ValueError, match=r"--val 1.5: expected a fraction in \[0, 1\)"):
        split_coco(_labels(), val=1.5)
    with pytest.raises(ValueError, match=r"--val 0.6 \+ --test 0.5: expected a held-out fraction in \(0, 1\)"):
        split_coco(_labels(), val=0.6, test=0.5)


def test_split_by_video_keeps_each_folder_whole_and_sizes_close_to_the_fractions():
    videos = tuple((f"v{i}", n) for i, n in enumerate([12, 7, 9, 15, 5, 11, 8, 10, 6, 17]))  # 100 images
    data = _labels(videos=videos)
    for seed in range(5):
        parts = split_coco(data, val=0.2, test=0.1, seed=seed, by="video")
        folders = {name: {os.path.dirname(img["file_name"]) for img in p["images"]} for name, p in parts.items()}
        assert not (folders["train"] & folders["val"] or folders["train"] & folders["test"]
                    or folders["val"] & folders["test"])
        assert sum(map(len, folders.values())) == 10
        assert parts["val"]["info"]["split"]["videos"] == sorted(folders["val"])
        sizes = [len(p["images"]) for p in parts.values()]
        assert sum(sizes) == 100 and abs(sizes[1] - 20) <= 2 and abs(sizes[2] - 10) <= 2, sizes
    same = split_coco(data, val=0.2, test=0.1, seed=1, by="video")
    assert _image_ids(same["val"]) == _image_ids(split_coco(data, val=0.2, test=0.1, seed=1, by="video")["val"])
    # few videos: every split still gets one
    parts = split_coco(_labels(videos=(("a", 10), ("b", 10))), val=0.2, by="video")
    assert [len(p["images"]) for p in parts.values()] == [10, 10]


def test_cli_split_writes_beside_the_labels_refuses_to_overwrite_and_resolves(tmp_path, monkeypatch, capsys):
    labels = tmp_path / "proj" / "labels.json"
    labels.parent.mkdir()
    labels.write_text(json.dumps(_labels(videos=(("vidA", 6), ("vidB", 4)), images_on_disk=labels.parent)))
    assert main(["split", str(labels), "--val", "0.2", "--test", "0.1", "--seed", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{labels.parent / 'train.json'}: 7 images (70%), 14 annotations",
                   f"{labels.parent / 'val.json'}: 2 images (20%), 4 annotations",
                   f"{labels.parent / 'test.json'}: 1 images (10%), 2 annotations"]
    before = (labels.parent / "val.json").read_text()
    assert main(["split", str(labels), "--val", "0.3", "--seed", "1"]) == 1  # train.json exists
    err = capsys.readouterr().err.strip()
    assert err == f"sagepose: error: {labels.parent / 'train.json'} exists; pass --overwrite to replace it, or " \
                  "choose another path"
    assert (labels.parent / "val.json").read_text() == before  # nothing written
    assert main(["split", str(labels), "--val", "0.3", "--seed", "1", "--overwrite", "--by", "video"]) == 0
    captured = capsys.readouterr()
    assert ", 1 videos (labeled-data/vid" in captured.out
    assert captured.err.strip() == f"sagepose: warning: {labels.parent / 'test.json'} is an earlier split's, not " \
                                   "this one's (no --test): remove it or pass --test"
    # --out elsewhere: image paths re-expressed relative to the new folder; loads from another cwd
    assert main(["split", str(labels), "--val", "0.2", "--out", str(tmp_path / "splits")]) == 0
    val = json.loads((tmp_path / "splits" / "val.json").read_text())
    assert val["images"][0]["file_name"].startswith("../proj/labeled-data/")
    assert val["info"]["image_root"] == str(tmp_path / "splits")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    schema = load_schema(labels)
    for name in ("train", "val"):
        records = load_coco(os.path.relpath(tmp_path / "splits" / f"{name}.json"), schema=schema)
        assert records and all(os.path.isfile(r.image_path) for r in records)
