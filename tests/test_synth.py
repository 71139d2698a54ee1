"""The synthetic dataset generator: determinism, COCO validity, visibility semantics, schemas, styles, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sagepose.data.synth import STYLES, generate_dataset, render_image
from sagepose.data.synth.body import P, Proportions, pose_figure
from sagepose.data.synth.poses import LIMITS, POSE_KINDS, SIDED, sample_pose
from sagepose.data.synth.render import KEYPOINTS, PART, View, draw_person, sample_outfit, visibility
from sagepose.data.synth.styles import CASUAL
from sagepose.errors import DataError
from sagepose.keypoints import AIC14, COCO17, MPII16

SIZE = (320, 256)


def _images(n: int, seed: int = 0, **kw):
    return [render_image(np.random.default_rng([seed, i]), image_size=SIZE, **kw) for i in range(n)]


@pytest.fixture(scope="module")
def coco_images():
    return _images(40)


def _lone_figure(yaw: float, shoulder_flex: float = 0.0) -> dict[str, tuple[np.ndarray, int]]:
    """A neutral standing figure alone on a blank canvas, seen at ``yaw``: landmark -> (xy, v)."""
    pose = {k: 0.0 for k in LIMITS if k not in SIDED} | {
        f"{s}_{k}": 0.0 for k in SIDED for s in ("left", "right")
    }
    pose["left_shoulder_abd"] = pose["right_shoulder_abd"] = 8.0
    pose["left_shoulder_flex"] = pose["right_shoulder_flex"] = shoulder_flex
    img, labels = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.zeros((SIZE[1], SIZE[0]), np.uint8)
    view = View(yaw=yaw, tilt=0.0, roll=0.0, scale=200.0, center=(160.0, 130.0))
    proj = draw_person(
        img,
        labels,
        pose_figure(pose, Proportions()),
        view,
        sample_outfit(np.random.default_rng(0), CASUAL),
        slot=0,
    )
    xy, v = visibility(labels, proj, slot=0)
    return {k: (xy[i], int(v[i])) for i, k in enumerate(KEYPOINTS)}


def test_same_seed_renders_identical_bytes_and_different_seeds_differ():
    (a, pa), (b, pb) = (render_image(np.random.default_rng([7, 3])) for _ in range(2))
    assert a.tobytes() == b.tobytes()
    assert json.dumps([p["keypoints"].tolist() for p in pa]) == json.dumps(
        [p["keypoints"].tolist() for p in pb]
    )
    c, _ = render_image(np.random.default_rng([8, 3]))
    assert a.shape == (SIZE[1], SIZE[0], 3) and a.dtype == np.uint8
    assert not np.array_equal(a, c)


def test_generate_dataset_writes_coco_that_pycocotools_loads(tmp_path):
    from pycocotools.coco import COCO

    path = generate_dataset(tmp_path, 6, seed=1, split="val")
    assert path == str(tmp_path / "val.json")
    coco = COCO(path)
    assert sorted(coco.getImgIds()) == list(range(1, 7))
    assert coco.imgs[1]["file_name"] == "val/000001.jpg" and (tmp_path / "val" / "000001.jpg").is_file()
    cat = coco.loadCats(1)[0]
    assert cat["keypoints"] == list(COCO17.keypoints)
    assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO17.skeleton]
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    for ann in anns:
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        assert kps.shape == (17, 3) and ann["iscrowd"] == 0 and ann["category_id"] == 1
        assert ann["num_keypoints"] == np.count_nonzero(kps[:, 2] > 0) > 0
        assert set(np.unique(kps[:, 2])) <= {0, 1, 2}
        assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]
    # the ground truth scored against itself is perfect: areas, flags and boxes are eval-ready
    from pycocotools.cocoeval import COCOeval

    dets = coco.loadRes(
        [dict(image_id=a["image_id"], category_id=1, keypoints=a["keypoints"], score=1.0) for a in anns]
    )
    ev = COCOeval(coco, dets, "keypoints")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_output_is_identical_across_runs_and_worker_counts(tmp_path):
    one = generate_dataset(tmp_path / "a", 4, seed=3, workers=1)
    two = generate_dataset(tmp_path / "b", 4, seed=3, workers=2)
    assert (tmp_path / "a" / "train.json").read_bytes() == (tmp_path / "b" / "train.json").read_bytes()
    for i in range(1, 5):
        name = f"train/{i:06d}.jpg"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert one.endswith("train.json") and two.endswith("train.json")
    # the split is part of each image's seed: val made with the same seed is not a copy of train
    generate_dataset(tmp_path / "a", 1, seed=3, split="val")
    assert (tmp_path / "a/val/000001.jpg").read_bytes() != (tmp_path / "a/train/000001.jpg").read_bytes()


def test_visibility_flags_follow_coco_semantics(coco_images):
    w, h = SIZE
    for _, persons in coco_images:
        for p in persons:
            kps, (bx, by, bw, bh) = p["keypoints"], p["bbox"]
            assert kps.shape == (17, 3) and kps.dtype == np.float32
            assert 0 <= bx and 0 <= by and bx + bw <= w and by + bh <= h and bh >= 12
            absent, shown, hidden = kps[kps[:, 2] == 0], kps[kps[:, 2] == 2], kps[kps[:, 2] == 1]
            assert np.all(absent[:, :2] == 0)
            # visible points lie on the person's own visible pixels, hence inside image and box
            assert np.all(
                (shown[:, 0] >= 0) & (shown[:, 0] <= w - 1) & (shown[:, 1] >= 0) & (shown[:, 1] <= h - 1)
            )
            assert np.all(
                (shown[:, 0] >= bx - 1)
                & (shown[:, 0] <= bx + bw)
                & (shown[:, 1] >= by - 1)
                & (shown[:, 1] <= by + bh)
            )
            # hidden points are inside the image and near the box (occluders hide at most part of a body)
            assert np.all(
                (hidden[:, 0] >= 0) & (hidden[:, 0] <= w - 1) & (hidden[:, 1] >= 0) & (hidden[:, 1] <= h - 1)
            )
            pad = max(bw, bh)
            assert np.all((hidden[:, 0] >= bx - pad) & (hidden[:, 0] <= bx + bw + pad))


def test_occlusion_and_truncation_both_occur(coco_images):
    flags = np.concatenate([p["keypoints"][:, 2] for _, ps in coco_images for p in ps])
    assert np.mean(flags == 1) > 0.05  # occluded by people, occluders or the body itself
    assert np.any(flags == 0)  # truncated at the image border
    assert np.mean(flags == 2) > 0.5


def test_front_view_puts_the_left_shoulder_on_the_image_right_and_shows_the_face():
    kp = _lone_figure(yaw=0.0)
    assert kp["left_shoulder"][0][0] > kp["right_shoulder"][0][0]
    assert kp["left_eye"][0][0] > kp["right_eye"][0][0]
    assert all(kp[k][1] == 2 for k in ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"))


def test_back_view_hides_the_face_but_shows_the_body():
    kp = _lone_figure(yaw=180.0)
    assert kp["left_shoulder"][0][0] < kp["right_shoulder"][0][0]
    assert all(kp[k][1] == 1 for k in ("nose", "left_eye", "right_eye"))
    assert all(
        kp[k][1] == 2 for k in ("left_shoulder", "right_shoulder", "left_ear", "right_ear", "left_wrist")
    )


def test_side_view_hides_far_limbs_behind_the_body():
    kp = _lone_figure(yaw=90.0)  # faces the image right; the left side is away from the camera
    assert kp["nose"][0][0] > kp["left_ear"][0][0]
    assert kp["right_elbow"][1] == 2 and kp["left_elbow"][1] == 1
    assert kp["right_hip"][1] == 1  # the near arm hangs in front of the near hip
    kp = _lone_figure(yaw=90.0, shoulder_flex=90.0)  # arms held forward uncover it
    assert kp["right_hip"][1] == 2 and kp["left_hip"][1] == 1
    assert kp["right_eye"][1] == 2 and kp["left_eye"][1] == 1


def test_mpii_and_aic_joints_are_derived_from_the_same_figure():
    def name(schema, joint):
        return schema.keypoints.index(joint)

    for i in range(8):
        (img_c, coco), (img_m, mpii), (img_a, aic) = (
            render_image(np.random.default_rng([5, i]), schema=s) for s in ("coco", "mpii", "aic")
        )
        assert img_c.tobytes() == img_m.tobytes() == img_a.tobytes()
        assert len(coco) == len(mpii) == len(aic)
        for c, m, a in zip(coco, mpii, aic):
            ck, mk, ak = c["keypoints"], m["keypoints"], a["keypoints"]
            assert c["bbox"] == m["bbox"] == a["bbox"]
            for side in ("left", "right"):
                for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
                    j = f"{side}_{joint}"
                    np.testing.assert_array_equal(ck[name(COCO17, j)], mk[name(MPII16, j)])
                    np.testing.assert_array_equal(ck[name(COCO17, j)], ak[name(AIC14, j)])
            hips = ck[[name(COCO17, "left_hip"), name(COCO17, "right_hip")]]
            shoulders = ck[[name(COCO17, "left_shoulder"), name(COCO17, "right_shoulder")]]
            for joint, pair in (("pelvis", hips), ("thorax", shoulders)):
                derived = mk[name(MPII16, joint)]
                if derived[2] > 0 and np.all(pair[:, 2] > 0):
                    np.testing.assert_allclose(derived[:2], pair[:, :2].mean(0), atol=0.01)
            np.testing.assert_array_equal(mk[name(MPII16, "head_top")], ak[name(AIC14, "head_top")])
            np.testing.assert_array_equal(mk[name(MPII16, "upper_neck")], ak[name(AIC14, "neck")])


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_renders_annotated_people(style):
    images = _images(6, seed=2, style=style)
    assert all(img.shape == (SIZE[1], SIZE[0], 3) for img, _ in images)
    persons = [p for _, ps in images for p in ps]
    assert persons and all(set(p) == {"keypoints", "bbox", "area", "head_box"} for p in persons)
    assert max(len(ps) for _, ps in images) <= STYLES[style].people[1]


def test_person_heights_cover_small_to_frame_filling():
    heights = [p["bbox"][3] / SIZE[1] for _, ps in _images(40, seed=9) for p in ps]
    assert min(heights) < 0.35 and max(heights) > 0.75


def test_cli_synth_writes_a_dataset(tmp_path):
    from sagepose.cli.main import main

    assert (
        main(
            [
                "synth",
                str(tmp_path),
                "--num",
                "2",
                "--split",
                "val",
                "--schema",
                "mpii",
                "--size",
                "160",
                "128",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "val.json").read_text())
    assert data["images"][0] == dict(id=1, file_name="val/000001.jpg", width=160, height=128)
    assert data["categories"][0]["keypoints"] == list(MPII16.keypoints)


# ---- head boxes (MPII's head rectangles, the unit of PCKh) --------------------------------------


def _lone_render(pose: dict[str, float], view: View):
    """``pose`` drawn alone on a blank canvas -> (label map, projection)."""
    img, labels = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.zeros((SIZE[1], SIZE[0]), np.uint8)
    proj = draw_person(
        img, labels, pose_figure(pose, Proportions()), view, sample_outfit(np.random.default_rng(0), CASUAL), 0
    )
    return labels, proj


def _neutral_pose() -> dict[str, float]:
    pose = {k: 0.0 for k in LIMITS if k not in SIDED} | {f"{s}_{k}": 0.0 for k in SIDED for s in ("left", "right")}
    pose["left_shoulder_abd"] = pose["right_shoulder_abd"] = 8.0
    return pose


def _head_pixel_box(labels: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 of the pixel centres labelled as person 0's head."""
    ys, xs = np.nonzero(labels == 1 + PART["head"])
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)


def test_head_box_of_an_upright_front_view_is_the_ellipsoid_and_the_head_pixels():
    labels, proj = _lone_render(_neutral_pose(), View(yaw=0.0, tilt=0.0, roll=0.0, scale=200.0, center=(160.0, 130.0)))
    cx, cy = proj.xy[P["head"]]
    rx, ry = 200.0 * Proportions().head[0], 200.0 * Proportions().head[1]  # 11.2, 14 px: the radii, no turn
    np.testing.assert_allclose(proj.head_box, [cx - rx, cy - ry, cx + rx, cy + ry], atol=1e-9)
    # the head pixels of the label map (pixel centres inside the silhouette) fill the box to within a pixel
    pixels, box = _head_pixel_box(labels), np.asarray(proj.head_box)
    assert np.all(pixels[:2] >= box[:2]) and np.all(pixels[2:] <= box[2:])
    assert np.all(np.abs(pixels - box) < 1.0)
    # head_top is the top of the ellipsoid: on the box's top edge, centred
    np.testing.assert_allclose(proj.xy[P["head_top"]], [cx, cy - ry], atol=1e-9)


def test_head_box_in_profile_reaches_the_nose_tip():
    labels, proj = _lone_render(_neutral_pose(), View(yaw=90.0, tilt=0.0, roll=0.0, scale=200.0, center=(160.0, 130.0)))
    cx = proj.xy[P["head"]][0]
    forward = 200.0 * Proportions().head[2]  # the ellipsoid reaches 12.8 px towards the image right...
    assert proj.head_box[2] > cx + forward + 2  # ...the nose disc about 4 px further
    assert proj.head_box[0] == pytest.approx(cx - forward)
    np.testing.assert_allclose(_head_pixel_box(labels), proj.head_box, atol=1.0)


def test_head_pixels_of_random_poses_and_views_lie_in_the_head_box():
    rng = np.random.default_rng(4)
    tight = 0
    for i in range(40):
        kind = sorted(POSE_KINDS)[i % len(POSE_KINDS)]
        view = View(yaw=rng.uniform(0, 360), tilt=rng.uniform(-10, 45), roll=rng.normal(0, 30), scale=180.0,
                    center=(160.0, 128.0))
        labels, proj = _lone_render(sample_pose(rng, kind, 1.5), view)
        box = np.asarray(proj.head_box)
        assert np.all(box[:2] > 0) and box[2] < SIZE[0] - 1 and box[3] < SIZE[1] - 1  # the whole head in frame
        pixels = _head_pixel_box(labels)
        # no head pixel outside the box (1 px: the nose disc's rasterisation)...
        assert np.all(pixels[:2] >= box[:2] - 1.0) and np.all(pixels[2:] <= box[2:] + 1.0)
        # ...and the box no wider than the head, unless the figure's own limbs cover its edge
        tight += bool(np.all(np.abs(pixels - box) <= 1.0))
        # head_top lies on the ellipsoid, so inside its silhouette
        x, y = proj.xy[P["head_top"]]
        assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    assert tight >= 32


def test_every_written_annotation_has_its_head_box(tmp_path):
    path = generate_dataset(tmp_path, 12, seed=6, split="val", schema="mpii", style="sports")
    anns = json.loads(open(path).read())["annotations"]
    top, neck = MPII16.keypoints.index("head_top"), MPII16.keypoints.index("upper_neck")
    ratios = []
    for ann in anns:
        x1, y1, x2, y2 = ann["head_box"]
        assert np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        if kps[top, 2] > 0:  # rounded to 0.01 px in the file
            assert x1 - 0.01 <= kps[top, 0] <= x2 + 0.01 and y1 - 0.01 <= kps[top, 1] <= y2 + 0.01
            if kps[neck, 2] > 0:
                ratios.append(0.6 * np.hypot(x2 - x1, y2 - y1) / np.hypot(*(kps[top, :2] - kps[neck, :2])))
    # as on MPII, the head size is about the head_top - upper_neck distance
    assert len(ratios) > 10 and 0.8 < np.median(ratios) < 1.4


# ---- one set of images, labels in every schema --------------------------------------------------


def test_every_schema_writes_the_same_images_boxes_and_shared_joints(tmp_path):
    kw = dict(seed=2, split="val", style="sports")
    paths = {s: generate_dataset(tmp_path / s, 5, schema=s, **kw) for s in ("coco", "mpii", "aic")}
    for i in range(1, 6):
        name = f"val/{i:06d}.jpg"
        assert (tmp_path / "coco" / name).read_bytes() == (tmp_path / "mpii" / name).read_bytes()
        assert (tmp_path / "coco" / name).read_bytes() == (tmp_path / "aic" / name).read_bytes()
    data = {s: json.loads(open(p).read()) for s, p in paths.items()}
    assert data["coco"]["images"] == data["mpii"]["images"] == data["aic"]["images"]
    coco, mpii = data["coco"]["annotations"], data["mpii"]["annotations"]
    assert len(coco) == len(mpii) > 0
    for c, m in zip(coco, mpii):
        assert (c["id"], c["image_id"], c["bbox"], c["head_box"]) == (m["id"], m["image_id"], m["bbox"], m["head_box"])
        ck, mk = np.reshape(c["keypoints"], (-1, 3)), np.reshape(m["keypoints"], (-1, 3))
        for joint in ("left_knee", "right_wrist", "left_shoulder", "right_ankle"):
            np.testing.assert_array_equal(ck[COCO17.keypoints.index(joint)], mk[MPII16.keypoints.index(joint)])


def test_second_schema_labels_images_already_on_disk(tmp_path):
    kw = dict(seed=2, split="val", style="sports")
    mpii_json = generate_dataset(tmp_path, 3, schema="mpii", **kw)
    jpeg = (tmp_path / "val/000002.jpg").read_bytes()
    coco_json = generate_dataset(tmp_path, 3, schema="coco", json_name="val_coco.json", write_images=False, **kw)
    assert mpii_json == str(tmp_path / "val.json") and coco_json == str(tmp_path / "val_coco.json")
    assert (tmp_path / "val/000002.jpg").read_bytes() == jpeg
    mpii, coco = (json.loads(open(p).read()) for p in (mpii_json, coco_json))
    assert mpii["categories"][0]["keypoints"] == list(MPII16.keypoints)
    assert coco["categories"][0]["keypoints"] == list(COCO17.keypoints)
    assert [a["bbox"] for a in coco["annotations"]] == [a["bbox"] for a in mpii["annotations"]]
    # labels for images another seed rendered, or for images that are not there, are refused, naming the file
    with pytest.raises(DataError, match=r"val/000001\.jpg: differs from image 1"):
        generate_dataset(tmp_path, 3, schema="coco", json_name="x.json", write_images=False, **(kw | dict(seed=3)))
    with pytest.raises(FileNotFoundError, match=r"val/000004\.jpg: image not found"):
        generate_dataset(tmp_path, 4, schema="coco", json_name="x.json", write_images=False, **kw)
    assert not (tmp_path / "x.json").exists()
