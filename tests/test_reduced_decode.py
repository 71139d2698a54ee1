"""data.reduced_decode: a JPEG decoded at 1/2, 1/4, 1/8 by libjpeg's scaled IDCT and cropped through the full image's
geometry. Checked on a blob at a known sub-pixel point: the crop puts it where the crop's keypoint says, as the full
decode does (a pixel-centre offset left out moves it (f - 1) / 2 image px: the test fails); other formats and a json
whose image size is wrong fall back to the full decode, bit for bit."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from sagepose import geometry
from sagepose.config import ConfigError, load_config
from sagepose.data.coco import Record
from sagepose.data.dataset import TopDownDataset
from sagepose.data.transforms import CropAugment
from sagepose.image import read_image, read_image_reduced
from sagepose.keypoints import COCO17

W, H = 1280, 960
BLOB = np.array([641.3, 457.8])  # image px
INPUT = (48, 64)


@pytest.fixture(scope="module")
def blob_jpeg(tmp_path_factory):
    """A smooth Gaussian blob (sigma 10 px) on grey, as a quality-100 JPEG and as a PNG."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    blob = 40 + 200 * np.exp(-((x - BLOB[0]) ** 2 + (y - BLOB[1]) ** 2) / (2 * 10.0 ** 2))
    img = np.repeat(np.round(blob).astype(np.uint8)[..., None], 3, axis=2)
    folder = tmp_path_factory.mktemp("blob")
    cv2.imwrite(str(folder / "blob.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(folder / "blob.png"), img)
    return folder


def record(path, box_side: float, width: int = W) -> Record:
    box = np.array([BLOB[0] - box_side / 2 + 7, BLOB[1] - box_side / 2 - 5, box_side, box_side], np.float32)
    kp = np.tile(BLOB.astype(np.float32), (17, 1))
    return Record(image_path=str(path), image_id=1, ann_id=1, bbox_xywh=box, keypoints=kp,
                  visible=np.ones(17, np.float32), flags=np.full(17, 2, np.float32), area=box_side ** 2,
                  width=width, height=H)


def centroid(crop: np.ndarray) -> np.ndarray:
    g = crop[..., 0].astype(np.float64) - 40.0
    g = np.where(g > 0.2 * g.max(), g, 0.0)
    y, x = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return np.array([(g * x).sum() / g.sum(), (g * y).sum() / g.sum()])


def datasets(rec, train: bool):
    sampler = CropAugment(COCO17, input_size=INPUT, flip_prob=1.0 if train else 0.0, rotate_prob=1.0,
                             rotate_factor=30.0, half_body_prob=0.0, scale_factor=(0.9, 1.1))
    return [TopDownDataset([rec], sampler, train=train, seed=5, reduced_decode=r) for r in (False, True)]


def test_the_reduced_image_is_the_full_one_in_block_means(blob_jpeg):
    full = read_image(str(blob_jpeg / "blob.jpg")).astype(np.float64)
    for f in (2, 4, 8):
        reduced, got = read_image_reduced(str(blob_jpeg / "blob.jpg"), f)
        assert got == f and reduced.shape == (H // f, W // f, 3)
        means = full.reshape(H // f, f, W // f, f, 3).mean(axis=(1, 3))
        assert np.abs(reduced - means).max() <= 3.0  # the scaled IDCT's rounding, not a shift


@pytest.mark.parametrize("box_side, factor", [(150, 2), (300, 4), (620, 8)])
@pytest.mark.parametrize("train", [False, True])
def test_the_crop_puts_the_blob_where_its_keypoint_is(blob_jpeg, box_side, factor, train):
    rec = record(blob_jpeg / "blob.jpg", box_side)
    full, reduced = (ds[0] for ds in datasets(rec, train))
    assert np.array_equal(full["keypoints"], reduced["keypoints"])  # the same draws, the same geometry
    scale = reduced["scale"]
    assert datasets(rec, train)[1].transform.reduction(scale) == factor
    kp = reduced["keypoints"][0]
    ratio = geometry.fix_aspect_ratio(scale, INPUT[0] / INPUT[1])[1] / INPUT[1]  # image px per crop px
    # the blob's centroid: within 0.12 crop px of the keypoint (a missing (f-1)/2 offset is 0.4-0.45 crop px here)
    assert np.abs(centroid(full["img"]) - kp).max() < 0.12
    assert np.abs(centroid(reduced["img"]) - kp).max() < 0.12, (centroid(reduced["img"]) - kp, (factor - 1) / 2 / ratio)
    diff = np.abs(full["img"].astype(np.int16) - reduced["img"].astype(np.int16))
    assert diff.mean() < 1.5  # block means against bilinear point samples of a smooth image


def test_other_formats_and_a_wrong_json_size_take_the_full_decode(blob_jpeg):
    for rec in (record(blob_jpeg / "blob.png", 620), record(blob_jpeg / "blob.jpg", 620, width=W + 64)):
        full, reduced = (ds[0] for ds in datasets(rec, True))
        assert np.array_equal(full["img"], reduced["img"])


def test_reduced_decode_and_the_image_cache_are_refused_together(tmp_path):
    with pytest.raises(ConfigError, match="data.reduced_decode"):
        load_config(None, ["data.reduced_decode=true", "data.cache_images=true"])
