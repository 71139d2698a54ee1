"""CropAugment: dots painted at keypoints land on the mapped keypoints; flip folds into one warp."""
import dataclasses
import os
import subprocess
import textwrap

import cv2
import numpy as np
import pytest
from conftest import REALDATA

from sagepose import geometry
from sagepose.data.coco import Record, load_coco
from sagepose.data.transforms import CropAugment, _truncnorm
from sagepose.image import read_image
from sagepose.keypoints import COCO17

MMPOSE_PY = os.path.expanduser("~/.cache/sagepose-peers/mmpose-venv/bin/python")

OFF = dict(flip_prob=0.0, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)
FORCED = {
    "none": {},
    "flip": dict(flip_prob=1.0),
    "rotate": dict(rotate_prob=1.0),
    "scale": dict(scale_prob=1.0),
    "shift": dict(shift_prob=1.0),
    "half_body": dict(half_body_prob=1.0),
    "all": dict(flip_prob=1.0, half_body_prob=1.0, shift_prob=1.0, scale_prob=1.0, rotate_prob=1.0),
}
IMG_W, IMG_H, SIGMA = 400, 480, 2.5


def _person(seed: int = 0) -> Record:
    rng = np.random.default_rng(seed)
    box = np.array([120, 80, 160, 320], np.float32)
    kp = (box[:2] + rng.uniform(0.1, 0.9, (17, 2)) * box[2:]).astype(np.float32)
    return Record(image_path="synthetic", image_id=1, ann_id=7, bbox_xywh=box, keypoints=kp,
                  visible=np.ones(17, np.float32), flags=np.full(17, 2, np.float32), area=1.0,
                  width=IMG_W, height=IMG_H)


def _dot_image(pt) -> np.ndarray:
    """(H, W, 3) uint8 with one Gaussian blob centred on ``pt`` (pixel centres at integer coords)."""
    ys, xs = np.mgrid[:IMG_H, :IMG_W]
    blob = np.exp(-((xs - pt[0]) ** 2 + (ys - pt[1]) ** 2) / (2 * SIGMA**2)) * 255
    return np.repeat(np.round(blob).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(crop: np.ndarray) -> np.ndarray:
    w = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def dot_errors(udp: bool, forced: dict, seeds=range(3)) -> list[float]:
    """Distance (px) between each dot's centroid in the crop and its mapped keypoint, over seeds."""
    record = _person()
    sampler = CropAugment(COCO17, udp=udp, **{**OFF, **forced})
    images = [_dot_image(p) for p in record.keypoints]
    errors = []
    for seed in seeds:
        for k, image in enumerate(images):
            s = sampler(image, record, np.random.default_rng(seed), train=True)
            j = COCO17.flip_indices[k] if s.flipped else k  # where joint k's dot must be
            expected = s.keypoints[j]
            margin = 4 * SIGMA * np.sqrt(abs(np.linalg.det(s.matrix[:, :2]))) + 2  # whole blob inside
            w, h = sampler.input_size
            if not (margin < expected[0] < w - 1 - margin and margin < expected[1] < h - 1 - margin):
                continue
            errors.append(float(np.linalg.norm(_centroid(s.crop) - expected)))
    return errors


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
@pytest.mark.parametrize("name", list(FORCED))
def test_painted_dots_land_within_1px_of_mapped_keypoints(name, udp):
    errors = dot_errors(udp, FORCED[name])
    assert len(errors) >= 20, "too few keypoints inside the crop to test"
    assert max(errors) < 1.0, f"{name}: max dot error {max(errors):.3f} px"


def test_forced_steps_change_the_crop_box():
    record = _person()
    image = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    base = CropAugment(COCO17, **OFF)(image, record, np.random.default_rng(0), train=True)
    for name in ("rotate", "scale", "shift", "half_body"):
        s = CropAugment(COCO17, **{**OFF, **FORCED[name]})(image, record, np.random.default_rng(0),
                                                              train=True)
        changed = (s.rotation != 0) if name == "rotate" else not (
            np.allclose(s.center, base.center) and np.allclose(s.scale, base.scale))
        assert changed, name


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_flip_swaps_left_and_right_joints(udp):
    record = _person()
    image = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    s = CropAugment(COCO17, udp=udp, **{**OFF, "flip_prob": 1.0})(image, record,
                                                                     np.random.default_rng(0), True)
    plain = CropAugment(COCO17, udp=udp, **OFF)(image, record, np.random.default_rng(0), True)
    # the output's left joint is the mirrored input right joint: same height, mirrored x in the crop;
    # MSRA crops mirror about w / 2 (x -> w - x), UDP ones about (w - 1) / 2, as in MMPose
    mirror = 191.0 if udp else 192.0
    for a, b in COCO17.flip_pairs:
        for left, right in ((a, b), (b, a)):
            np.testing.assert_allclose(s.keypoints[left], [mirror - plain.keypoints[right, 0],
                                                           plain.keypoints[right, 1]], atol=1e-3)


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_single_matrix_flip_equals_flip_image_then_crop(udp):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (IMG_H, IMG_W, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 2)
    record = _person()
    sampler = CropAugment(COCO17, udp=udp)
    center, scale, rot = np.array([210.0, 230.0]), np.array([200.0, 300.0]), 25.0
    fast = sampler.crop(image, record, center, scale, rot, flip=True)
    # the slow way, as MMPose: flip the whole image, the centre (given here in flipped coordinates)
    # and the keypoints, then crop
    flipped = cv2.flip(image, 1)
    kp, _ = geometry.flip_keypoints_lr(record.keypoints, record.visible, IMG_W, COCO17.flip_indices)
    m = geometry.crop_matrix(center, geometry.fix_aspect_ratio(scale, 192 / 256), rot, (192, 256), udp)
    slow_crop = cv2.warpAffine(flipped, m, (192, 256), flags=cv2.INTER_LINEAR)
    slow_kp = cv2.transform(kp[None].astype(np.float64), m)[0]
    np.testing.assert_allclose(fast.keypoints, slow_kp, atol=1e-3)
    diff = np.abs(fast.crop.astype(int) - slow_crop.astype(int))
    assert diff.mean() < 0.2 and diff.max() <= 2  # cv2's 1/32-px interpolation grid only


def test_val_mode_is_the_plain_box_crop():
    record = _person()
    image = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    s = CropAugment(COCO17, flip_prob=1.0, rotate_prob=1.0)(image, record, np.random.default_rng(0),
                                                                train=False)
    assert not s.flipped and s.rotation == 0.0
    np.testing.assert_allclose(s.center, [200, 240])
    np.testing.assert_allclose(s.scale, [240, 320] * np.array([1.25 * 320 * 0.75 / 240, 1.25]))


def test_half_body_crops_the_upper_joints_when_preferred():
    record = _person()
    sampler = CropAugment(COCO17, **{**OFF, "half_body_prob": 1.0, "half_body_upper_prob": 1.0})
    s = sampler(np.zeros((IMG_H, IMG_W, 3), np.uint8), record, np.random.default_rng(0), True)
    upper = record.keypoints[list(COCO17.upper_body)]
    np.testing.assert_allclose(s.center, upper.mean(0), atol=1e-4)
    # too few labelled joints: no half-body
    few = dataclasses.replace(record, visible=np.r_[np.ones(8), np.zeros(9)].astype(np.float32))
    s = sampler(np.zeros((IMG_H, IMG_W, 3), np.uint8), few, np.random.default_rng(0), True)
    np.testing.assert_allclose(s.center, [200, 240])


def test_random_ranges_follow_mmpose_defaults():
    rng = np.random.default_rng(0)
    v = _truncnorm(rng, 20000)
    assert v.min() >= -1 and v.max() <= 1 and abs(v.mean()) < 0.02
    sampler = CropAugment(COCO17, half_body_prob=0.0)
    record = _person()
    image = np.zeros((8, 8, 3), np.uint8)
    base = sampler(image, record, rng, train=False).scale
    samples = [sampler(image, record, rng, train=True) for _ in range(400)]
    rots = np.array([s.rotation for s in samples])
    factors = np.array([s.scale[1] / base[1] for s in samples])
    assert np.abs(rots).max() <= 80 and 0.5 < np.mean(rots != 0) < 0.7
    assert 0.4 < np.mean([s.flipped for s in samples]) < 0.6
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6 and abs(factors.mean() - 1) < 0.03


@pytest.fixture(scope="module")
def mmpose_reference(tmp_path_factory):
    """MMPose 1.3.2's own pipeline on the first real COCO person: forced flip + upper half-body
    (``*_hb``), and a fixed 30 deg / 1.2x crop (``*_rot``), for MSRA and UDP; run once in its venv."""
    if not os.path.exists(MMPOSE_PY):
        pytest.skip("needs the MMPose reference venv")
    record = load_coco(os.path.join(REALDATA, "coco", "test_coco.json"))[0]
    out = tmp_path_factory.mktemp("mmpose") / "mm.npz"
    script = textwrap.dedent(f"""
        import numpy as np, cv2
        from mmpose.datasets.transforms import (GetBBoxCenterScale, RandomFlip, RandomHalfBody,
                                                TopdownAffine)
        from mmpose.datasets.datasets.utils import parse_pose_metainfo
        meta = parse_pose_metainfo(dict(from_file='configs/_base_/datasets/coco.py'))
        img = cv2.imread({record.image_path!r})
        x, y, w, h = {record.bbox_xywh.tolist()}
        def base():
            return dict(img=img.copy(), img_shape=img.shape[:2], bbox=np.array([[x, y, x + w, y + h]],
                        np.float32), keypoints=np.array([{record.keypoints.tolist()}], np.float32),
                        keypoints_visible=np.array([{record.visible.tolist()}], np.float32),
                        flip_indices=meta['flip_indices'], upper_body_ids=meta['upper_body_ids'],
                        lower_body_ids=meta['lower_body_ids'])
        res = {{}}
        for udp in (False, True):
            aff = TopdownAffine(input_size=(192, 256), use_udp=udp)
            r = GetBBoxCenterScale()(base())
            r = RandomHalfBody(prob=1.0, upper_prioritized_prob=1.0)(RandomFlip(prob=1.0)(r))
            r = aff(r)
            r2 = GetBBoxCenterScale()(base())
            r2['bbox_scale'] = r2['bbox_scale'] * 1.2
            r2['bbox_rotation'] = np.array([30.0])
            r2 = aff(r2)
            res.update({{f'crop_hb_{{udp}}': r['img'], f'kp_hb_{{udp}}': r['transformed_keypoints'][0],
                         f'vis_hb_{{udp}}': r['keypoints_visible'][0], f'crop_rot_{{udp}}': r2['img'],
                         f'kp_rot_{{udp}}': r2['transformed_keypoints'][0]}})
        np.savez({str(out)!r}, **res)
    """)
    subprocess.run([MMPOSE_PY, "-c", script], check=True, capture_output=True)
    return record, dict(np.load(out))


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_matches_mmpose_pipeline_on_a_real_coco_person(mmpose_reference, udp):
    record, mm = mmpose_reference
    image = read_image(record.image_path)
    forced = dict(OFF, flip_prob=1.0, half_body_prob=1.0, half_body_upper_prob=1.0)
    ours = CropAugment(COCO17, udp=udp, **forced)(image, record, np.random.default_rng(0), train=True)
    np.testing.assert_allclose(ours.keypoints, mm[f"kp_hb_{udp}"], atol=1e-3)
    np.testing.assert_array_equal(ours.visible, mm[f"vis_hb_{udp}"])
    assert np.abs(ours.crop.astype(int) - mm[f"crop_hb_{udp}"].astype(int)).mean() < 0.2
    center, scale = geometry.box_to_center_scale(geometry.xywh_to_xyxy(record.bbox_xywh))
    ours = CropAugment(COCO17, udp=udp).crop(image, record, center, scale * 1.2, 30.0, flip=False)
    np.testing.assert_allclose(ours.keypoints, mm[f"kp_rot_{udp}"], atol=1e-3)
    assert np.abs(ours.crop.astype(int) - mm[f"crop_rot_{udp}"].astype(int)).max() <= 1  # float32 ulps
