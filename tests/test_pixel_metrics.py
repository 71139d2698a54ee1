"""Pixel metrics (sagepose.eval.pixel) against hand-computed values, and the validation path that computes them
for a schema without OKS sigmas (TopDownModule's hooks under a Lightning validate)."""
from __future__ import annotations

import dataclasses
import json
import math

import cv2
import lightning as L
import numpy as np
import pytest
import torch

from sagepose.config import Config, DataConfig, ModelConfig, TrainerConfig
from sagepose.eval import box_size, pixel_metrics
from sagepose.train.checkpoints import checkpoint_callbacks, monitor_for


def _case():
    """2 instances x 3 joints; errors by construction (3-4-5 triangles and axis offsets)."""
    gt = np.array([[[10, 10], [20, 20], [30, 30]], [[0, 0], [5, 5], [100, 100]]], np.float64)
    offsets = np.array([[[3, 4], [0, 1], [6, 8]], [[0, 0], [30, 40], [9, 12]]], np.float64)
    visible = np.array([[1, 1, 0], [1, 1, 1]])  # joint (0, 2) unlabeled: its error 10 must not count
    return gt + offsets, gt, visible, np.array([100.0, 400.0])


def test_pixel_metrics_hand_computed():
    pred, gt, visible, boxes = _case()
    m = pixel_metrics(pred, gt, visible, boxes, ["a", "b", "c"])
    # the labeled joints' Euclidean errors: 5, 1 (instance 0), 0, 50, 15 (instance 1)
    assert m["num_joints"] == 5 and m["num_nonfinite"] == 0
    assert m["pixel_error"] == pytest.approx(71 / 5)
    assert m["pixel_error_median"] == pytest.approx(5.0)
    # numpy's linear percentile over sorted [0, 1, 5, 15, 50]: position 0.95 * 4 = 3.8 -> 15 + 0.8 * 35
    assert m["pixel_error_p95"] == pytest.approx(43.0)
    assert m["PCK@2px"] == pytest.approx(2 / 5)  # 0, 1
    assert m["PCK@5px"] == pytest.approx(3 / 5)  # <= is a hit: 5
    assert m["PCK@10px"] == pytest.approx(3 / 5)
    assert m["PCK@20px"] == pytest.approx(4 / 5)
    assert m["per_keypoint"] == {"a": pytest.approx(2.5), "b": pytest.approx(25.5), "c": pytest.approx(15.0)}


def test_pixel_metrics_box_thresholds_scale_per_instance():
    pred, gt, visible, boxes = _case()
    m = pixel_metrics(pred, gt, visible, boxes, ["a", "b", "c"], px_thresholds=(), box_fractions=(0.05, 0.1, 0.2))
    # instance 0 errors 5, 1 vs 5 / 10 / 20 px; instance 1 errors 0, 50, 15 vs 20 / 40 / 80 px
    assert m["PCK@0.05box"] == pytest.approx(4 / 5)
    assert m["PCK@0.1box"] == pytest.approx(4 / 5)
    assert m["PCK@0.2box"] == pytest.approx(5 / 5)
    assert not any(k.endswith("px") for k in m)


def test_nonfinite_predictions_miss_and_are_counted():
    pred, gt, visible, boxes = _case()
    pred[1, 1] = np.nan  # the 50 px joint
    m = pixel_metrics(pred, gt, visible, boxes, ["a", "b", "c"])
    assert m["num_joints"] == 5 and m["num_nonfinite"] == 1
    assert m["pixel_error"] == pytest.approx(21 / 4)
    assert m["PCK@20px"] == pytest.approx(4 / 5) and m["PCK@0.2box"] == pytest.approx(4 / 5)
    assert m["per_keypoint"]["b"] == pytest.approx(1.0)


def test_no_labeled_joint_gives_none_and_bad_shapes_raise():
    pred, gt, visible, boxes = _case()
    m = pixel_metrics(pred, gt, np.zeros_like(visible), boxes, ["a", "b", "c"])
    assert m["pixel_error"] is None and m["PCK@5px"] is None and m["num_joints"] == 0
    assert m["per_keypoint"] == {"a": None, "b": None, "c": None}
    with pytest.raises(ValueError, match=r"pred \(2, 3, 2\) and gt \(2, 2, 2\)"):
        pixel_metrics(pred, gt[:, :2], visible, boxes, ["a", "b", "c"])
    with pytest.raises(ValueError, match="names 2 entries"):
        pixel_metrics(pred, gt, visible, boxes, ["a", "b"])


def test_box_size_is_the_geometric_mean_of_the_sides():
    assert box_size([[0, 0, 396, 406]]) == pytest.approx([math.sqrt(396 * 406)])
    assert box_size([5, 5, 9, 4]) == pytest.approx(6.0)


def test_best_checkpoint_monitor_follows_the_schema():
    from sagepose.keypoints import COCO17, KeypointSchema

    assert monitor_for(COCO17) == ("val/AP", "max")
    assert monitor_for(KeypointSchema(name="m", keypoints=("a", "b"))) == ("val/pixel_error", "min")
    best = [c for c in checkpoint_callbacks(TrainerConfig(), "ckpts", "val/pixel_error", mode="min") if c.monitor]
    assert best[0].monitor == "val/pixel_error" and best[0].mode == "min"


# ---- the validation hooks ---------------------------------------------------------------------------------------
def _mouse_set(tmp_path):
    """2 frames (120 x 100 noise), one 4-joint animal each, one joint unlabeled; the json is also the schema."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    kpts = [[[30, 20, 2], [50, 40, 2], [70, 60, 2], [0, 0, 0]], [[20, 80, 2], [40, 30, 2], [0, 0, 0], [90, 10, 2]]]
    for i, k in enumerate(kpts, start=1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rng.integers(0, 255, (100, 120, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": f"f{i}.png", "width": 120, "height": 100})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 120, 100], "area": 12000.0,
                     "keypoints": [float(v) for row in k for v in row], "num_keypoints": 3, "iscrowd": 0})
    cat = {"id": 1, "name": "mouse", "keypoints": ["snout", "left_ear", "right_ear", "tail"], "skeleton": []}
    path = tmp_path / "mouse.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return path, np.array(kpts, np.float64)


def test_validation_reports_pixel_metrics_without_sigmas(tmp_path):
    from sagepose.train.loaders import build_loaders
    from sagepose.train.module import TopDownModule

    path, kpts = _mouse_set(tmp_path)
    torch.manual_seed(0)  # the model's initial weights
    arch = {"depth": 1, "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, "channels": 16}
    cfg = Config(model=dataclasses.replace(ModelConfig(), schema=str(path), arch=arch),
                 data=dataclasses.replace(DataConfig(), val_json=str(path), num_workers=0, val_batch_size=1))
    module = TopDownModule(cfg)
    loader = build_loaders(cfg, module.model, train=False)["val"]
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).validate(module, dataloaders=loader, verbose=False)
    m = module.last_metrics
    assert "AP" not in m and m["num_joints"] == 6
    # independent of the module's arrays: the results it wrote (image px) against the json's labels
    pred = {r["image_id"]: np.reshape(r["keypoints"], (4, 3))[:, :2] for r in module.last_predictions}
    err = [np.hypot(*(pred[i + 1][j] - kpts[i, j, :2])) for i in range(2) for j in range(4) if kpts[i, j, 2] > 0]
    assert m["pixel_error"] == pytest.approx(np.mean(err), abs=2e-3)  # results are rounded to 1e-3 px
    thr = 0.1 * math.sqrt(119 * 99)  # the reader clips the whole-image box to [0, w - 1] x [0, h - 1]
    assert m["PCK@0.1box"] == pytest.approx(np.mean(np.array(err) <= thr))
    assert set(m["per_keypoint"]) == {"snout", "left_ear", "right_ear", "tail"}
