"""`sagepose show-data`: a contact sheet of the crops training sees, their keypoints drawn where the model is told
they are (a tiny dataset made here; the custom_tiny_vit recipe's sampler and augmentation)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sagepose.cli.main import main
from sagepose.cli.show_data import sample_crops
from sagepose.config import load_config

KEYPOINTS = [(20, 14), (44, 14), (32, 34)]  # left_ear, right_ear, nose in a 64x48 image


def _dataset(tmp_path, n=5):
    """``n`` black 64x48 images, each with a bright 3x3 dot at every keypoint, and their COCO json (a schema too)."""
    images, anns = [], []
    for i in range(n):
        img = np.zeros((48, 64, 3), np.uint8)
        for x, y in KEYPOINTS:
            img[y - 1:y + 2, x - 1:x + 2] = 255
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"f{i}.png", "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i + 1, "bbox": [0, 0, 64, 48], "num_keypoints": 3,
                     "keypoints": [v for x, y in KEYPOINTS for v in (x, y, 2)]})
    cat = {"id": 1, "name": "toy", "keypoints": ["left_ear", "right_ear", "nose"], "skeleton": [[1, 3], [2, 3]],
           "flip_pairs": [["left_ear", "right_ear"]]}
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path


def _overrides(labels):
    return [f"data.train_json={labels}", f"data.val_json={labels}", f"model.schema={labels}",
            "data.photometric_prob=0.0"]  # black stays black: only drawn pixels are coloured


def test_crops_keypoints_are_mapped_by_the_crops_own_matrix(tmp_path):
    labels = _dataset(tmp_path)
    batch, dataset, indices, schema = sample_crops(load_config("custom_tiny_vit", _overrides(labels)), "train", 5)
    assert indices == [0, 1, 2, 3, 4] and schema.num_keypoints == 3 and batch["img"].shape == (5, 128, 128, 3)
    crops, kp = batch["img"].numpy(), batch["keypoints"].numpy()
    inside = (kp >= 1) & (kp < 127)
    inside = inside.all(-1)
    assert inside.sum() >= 10
    for b, k in zip(*np.nonzero(inside)):  # each label sits on its dot (augmented: flipped, rotated, scaled)
        x, y = np.round(kp[b, k]).astype(int)
        assert crops[b, y - 1:y + 2, x - 1:x + 2].max() > 100, (b, k)


def test_show_data_writes_a_grid_png_with_keypoints_drawn(tmp_path, monkeypatch, capsys):
    labels = _dataset(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["show-data", "custom_tiny_vit", *_overrides(labels), "--num", "5"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("show-data-train.png: 5 of 5 train crops (128x128), augmented as in epoch 0")
    sheet = cv2.imread(str(tmp_path / "show-data-train.png"))
    # 5 crops: 3 columns x 2 rows of 256 x (256 + 16 caption) tiles (128 px crops at 2x), 4 px apart and around
    assert sheet.shape == (2 * 272 + 3 * 4, 3 * 256 + 4 * 4, 3)
    batch, *_ = sample_crops(load_config("custom_tiny_vit", _overrides(labels)), "train", 5)
    kp = batch["keypoints"].numpy() * 2 + 0.5  # the crop's pixel centres at 2x
    drawn = 0
    for b in range(5):
        x0, y0 = 4 + (b % 3) * 260, 4 + (b // 3) * 276
        tile = sheet[y0:y0 + 256, x0:x0 + 256]
        for x, y in kp[b]:
            if 4 <= x < 252 and 4 <= y < 252:
                pixel = tile[int(round(y)), int(round(x))]
                assert pixel.max() > 100 and not (pixel == pixel[0]).all(), (b, x, y, pixel)  # a coloured marker
                drawn += 1
    assert drawn >= 10
    assert main(["show-data", "custom_tiny_vit", *_overrides(labels)]) == 1  # exists
    assert "show-data-train.png exists; pass --overwrite" in capsys.readouterr().err
    out = tmp_path / "val-sheet.png"
    assert main(["show-data", "custom_tiny_vit", *_overrides(labels), "--split", "val", "--num", "2",
                 "--out", str(out)]) == 0
    assert "2 of 5 val crops (128x128), validation crops, no augmentation" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == (272 + 2 * 4, 2 * 256 + 3 * 4, 3)


def test_show_data_without_a_train_json_is_one_line(capsys):
    assert main(["show-data", "custom_tiny_vit"]) == 1
    assert capsys.readouterr().err.strip() == "sagepose: error: data.train_json is not set: nothing to show for " \
                                              "--split train"


@pytest.mark.parametrize("recipe", ["sapiens_2b_coco_1024x768", "hrnet_w32_coco_256x192"])
def test_the_loaders_model_is_built_without_weights(recipe):
    from sagepose.cli.show_data import data_model

    model = data_model(load_config(recipe))
    assert next(model.parameters()).device.type == "meta" and model.schema.num_keypoints == 17
