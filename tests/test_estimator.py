"""sagepose.models.estimator: what ``predict`` takes (arrays or paths, box formats, whole images, RGB) and the bad
boxes it refuses with a one-line error naming the box."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from weightgen import synthetic_image

import sagepose
from sagepose.models import build_model


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    from sagepose.models import build_model

    return build_model("vit-tiny").eval()


IMAGE = np.full((120, 160, 3), 100, np.uint8)


def test_predict_rejects_a_nan_box_naming_its_index(tiny_model):
    with pytest.raises(ValueError, match=r"^predict: bboxes: box 1 \[nan, 0\.0, 50\.0, 50\.0\] \(xyxy\): "
                                         r"non-finite coordinates$"):
        tiny_model.predict(IMAGE, [[0, 0, 50, 50], [np.nan, 0, 50, 50]])


def test_predict_rejects_an_xywh_box_passed_as_xyxy(tiny_model):
    # x=60, y=20, w=30, h=50 read as xyxy: x2 = 30 < x1 = 60
    with pytest.raises(ValueError, match=r"box 0 \[60\.0, 20\.0, 30\.0, 50\.0\] \(xyxy\): empty or inverted"):
        tiny_model.predict(IMAGE, [[60, 20, 30, 50]])


def test_predict_rejects_a_box_wholly_outside_the_image(tiny_model):
    with pytest.raises(ValueError, match=r"box 0 .*wholly outside the image of size \(160, 120\)"):
        tiny_model.predict(IMAGE, [[170, 10, 200, 50]])
    with pytest.raises(ValueError, match=r"box 0 .*wholly outside"):
        tiny_model.predict(IMAGE, [[10, 130, 40, 60]], bbox_format="xywh")


def test_predict_rejects_a_three_number_box_with_a_clear_message(tiny_model):
    with pytest.raises(ValueError, match=r"^predict: bboxes: expected \(N, 4\) boxes \[x1, y1, x2, y2\], "
                                         r"got shape \(1, 3\)$"):
        tiny_model.predict(IMAGE, [[10, 10, 50]])


def test_predict_keeps_boxes_partly_outside_the_image(tiny_model):
    pred = tiny_model.predict(IMAGE, [[-30, -20, 60, 80], [120, 90, 200, 160]])
    assert pred.keypoints.shape == (2, 17, 2) and np.isfinite(pred.keypoints).all()


def test_predict_accepts_paths_xywh_boxes_whole_image_and_no_boxes(tmp_path):
    torch.manual_seed(0)
    model = build_model("vit-tiny").eval()
    image = synthetic_image(120, 160)
    box_xyxy = np.array([[20, 10, 100, 110]], np.float32)
    pred = model.predict(image, box_xyxy)
    assert pred.keypoints.shape == (1, 17, 2) and pred.keypoints.dtype == np.float32
    assert pred.scores.shape == (1, 17) and pred.heatmaps is None
    xywh = model.predict(image, np.array([[20, 10, 80, 100]]), bbox_format="xywh")
    np.testing.assert_array_equal(xywh.keypoints, pred.keypoints)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    np.testing.assert_array_equal(model.predict(tmp_path / "img.png", box_xyxy).keypoints, pred.keypoints)
    whole = model.predict(image)
    np.testing.assert_array_equal(whole.keypoints, model.predict(image, [[0, 0, 160, 120]]).keypoints)
    assert model.predict(image, np.zeros((0, 4))).keypoints.shape == (0, 17, 2)


# ---- predict(color=...) ------------------------------------------------------------------------------------------
def test_predict_takes_rgb_arrays_with_color_rgb():
    model = sagepose.load("demo_tiny_vit", random_weights=True)
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)
    bgr[:, :, 0] = 255  # the channels differ: swapping them changes the prediction
    boxes = [[5, 5, 55, 75]]
    want = model.predict(bgr, boxes)
    got = model.predict(np.ascontiguousarray(bgr[..., ::-1]), boxes, color="rgb")
    np.testing.assert_array_equal(got.keypoints, want.keypoints)
    np.testing.assert_array_equal(got.scores, want.scores)
    swapped = model.predict(np.ascontiguousarray(bgr[..., ::-1]), boxes)
    assert not np.array_equal(swapped.scores, want.scores)
    with pytest.raises(ValueError, match="color='RGB'"):
        model.predict(bgr, boxes, color="RGB")
