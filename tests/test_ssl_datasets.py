"""benchmarks/ssl_datasets.py: the registry's entries, and prepare() on tiny fake roots of each format (a DLC
project with 3 labeled frames; a SLEAP .slp + video), and unlabeled_source() of each kind (boxes, whole images,
video, SLEAP frames)."""
import importlib.util
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_module():
    spec = importlib.util.spec_from_file_location("ssl_datasets", REPO / "benchmarks" / "ssl_datasets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass looks its module up while being built
    spec.loader.exec_module(module)
    return module


ssl_datasets = _load_module()
DATASETS, prepare = ssl_datasets.DATASETS, ssl_datasets.prepare


def check_coco(coco: dict, keypoints: int, frames: int, instances: int) -> np.ndarray:
    """The shape csv_to_coco writes; -> keypoints (N, K, 3)."""
    cat = coco["categories"][0]
    assert len(cat["keypoints"]) == keypoints and len(coco["images"]) == frames
    assert len(coco["annotations"]) == instances
    assert all(1 <= i <= keypoints for bone in cat["skeleton"] for i in bone)
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    kpts = np.array([a["keypoints"] for a in coco["annotations"]]).reshape(-1, keypoints, 3)
    assert set(np.unique(kpts[..., 2])) <= {0.0, 2.0}
    for ann, k in zip(coco["annotations"], kpts):
        w, h = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
        assert ann["num_keypoints"] == int((k[:, 2] > 0).sum())
        assert (k[k[:, 2] == 0, :2] == 0).all()
    return kpts


def test_every_dataset_names_its_source_and_a_skeleton_of_pairs():
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.kind in ("dlc", "dlc_h5", "sleap")
        assert spec.source.startswith("https://github.com/") and spec.path and spec.commit and spec.layout
        assert spec.skeleton is None or all(len(pair) == 2 for pair in spec.skeleton)
    assert "openfield" not in " ".join(f"{s.path} {s.description}" for s in DATASETS.values()).lower()
    assert len(ssl_datasets.MOUSE_SKELETON) == 12


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ssl_datasets.DATA_ENV, str(tmp_path))
    assert ssl_datasets.data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="dlc-reaching"):
        prepare("dlc-reaching")
    with pytest.raises(KeyError, match="unknown dataset"):
        prepare("openfield")


def test_dlc_project_root_becomes_coco_with_the_specs_skeleton(tmp_path):
    folder = tmp_path / "labeled-data" / "reachingvideo1"
    folder.mkdir(parents=True)
    parts = ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
    rows = [["scorer"] + ["me"] * 10, ["bodyparts"] + [p for p in parts for _ in "xy"], ["coords"] + ["x", "y"] * 5]
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), np.zeros((40, 60, 3), np.uint8))
        xy = [str(10.0 + i + j) for j in range(10)]
        if i == 1:
            xy[4:6] = ["", ""]  # Tongue unlabeled
        rows.append([f"labeled-data/reachingvideo1/img{i:03d}.png"] + xy)
    (folder / "CollectedData_me.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    info = prepare("dlc-reaching", root=tmp_path, out_dir=tmp_path / "out")
    assert (info["frames"], info["keypoints"], info["instances"], info["video"]) == (3, 5, 3, None)
    coco = json.loads(Path(info["labels_json"]).read_text())
    kpts = check_coco(coco, 5, 3, 3)
    assert kpts[1, 2, 2] == 0 and kpts[0, 2, 2] == 2
    assert coco["categories"][0]["skeleton"] == [[1, 2], [4, 5]]
    assert all((Path(info["labels_json"]).parent / im["file_name"]).is_file() for im in coco["images"])


def _write_slp(path: Path, frames: int) -> None:
    """A SLEAP-like labels file: nodes stored out of skeleton order, a body and a symmetry edge type (later links
    referring back by py/id), two user instances per frame and one predicted instance on frame 0."""
    h5py = pytest.importorskip("h5py")
    body = {"py/reduce": [{"py/type": "sleap.skeleton.EdgeType"}, {"py/tuple": [1]}]}
    sym = {"py/reduce": [{"py/type": "sleap.skeleton.EdgeType"}, {"py/tuple": [2]}]}
    links = [dict(source=1, target=3, type=body), dict(source=3, target=0, type={"py/id": 1}),
             dict(source=0, target=2, type=sym), dict(source=3, target=2, type={"py/id": 1})]
    meta = {"version": "2.0.0", "nodes": [{"name": n} for n in ("wingL", "head", "wingR", "thorax")],
            "skeletons": [{"nodes": [{"id": 1}, {"id": 3}, {"id": 0}, {"id": 2}], "links": links}]}
    fr_dt = [("frame_id", "<u8"), ("video", "<u4"), ("frame_idx", "<u8"), ("instance_id_start", "<u8"),
             ("instance_id_end", "<u8")]
    in_dt = [("instance_id", "<i8"), ("instance_type", "u1"), ("frame_id", "<u8"), ("skeleton", "<u4"),
             ("track", "<i4"), ("from_predicted", "<i8"), ("score", "<f4"), ("point_id_start", "<u8"),
             ("point_id_end", "<u8")]
    pt_dt = [("x", "<f8"), ("y", "<f8"), ("visible", "?"), ("complete", "?")]
    fr_rows, in_rows, pt_rows = [], [], []
    for f in range(frames):
        start = len(in_rows)
        for a, kind in enumerate((0, 0, 1) if f == 0 else (0, 0)):
            p0 = len(pt_rows)
            for k, (x, y) in enumerate([(8, 8), (12, 10), (10, 14), (14, 14)]):
                visible = not (f == 0 and a == 1 and k == 3)
                pt_rows.append((x + 20 * a + f * 0.1, y + k, visible, True))
            in_rows.append((len(in_rows), kind, f, 0, -1, -1, np.nan, p0, len(pt_rows)))
        fr_rows.append((f, 0, f, start, len(in_rows)))
    with h5py.File(path, "w") as out:
        out.create_dataset("metadata", data=np.zeros(0)).attrs["json"] = json.dumps(meta)
        out["frames"] = np.array(fr_rows, dtype=fr_dt)
        out["instances"] = np.array(in_rows, dtype=in_dt)
        out["points"] = np.array(pt_rows, dtype=pt_dt)


def test_sleap_labels_and_video_become_coco_of_every_stride_th_frame(tmp_path):
    _write_slp(tmp_path / "clip.slp", frames=31)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(31):
        writer.write(np.full((48, 64, 3), i * 8, np.uint8))
    writer.release()
    info = prepare("sleap-flies", root=tmp_path, out_dir=tmp_path / "out")
    assert (info["frames"], info["keypoints"], info["instances"], info["video_frames"]) == (3, 4, 6, 31)
    coco = json.loads(Path(info["labels_json"]).read_text())
    kpts = check_coco(coco, 4, 3, 6)
    cat = coco["categories"][0]
    assert cat["keypoints"] == ["head", "thorax", "wingL", "wingR"]
    assert sorted(cat["skeleton"]) == [[1, 2], [2, 3], [2, 4]]
    assert cat["flip_pairs"] == [["wingL", "wingR"]]
    assert [im["frame_index"] for im in coco["images"]] == [0, 15, 30]
    assert kpts[1, 3, 2] == 0 and kpts[1, :3, 2].tolist() == [2, 2, 2]  # the not-visible point is unlabeled
    np.testing.assert_allclose(kpts[2, 0, :2], [8 + 1.5, 8])  # frame 15, first fly's head
    img = cv2.imread(str(Path(info["image_root"]) / coco["images"][1]["file_name"]))
    assert img.shape == (48, 64, 3) and abs(float(img.mean()) - 15 * 8) < 6  # the frame cut is frame 15


def _fake_labels(root: Path, boxes_of, frames: int = 3) -> dict:
    """``root/labels.json`` (the form write_coco leaves: file_names relative to it) over ``frames`` 60x40 PNGs
    ``labeled-data/v/img00N.png``, 2 keypoints per instance; ``boxes_of(i)``: the boxes of frame i."""
    folder = root / "labeled-data" / "v"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(frames):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
        images.append({"id": i + 1, "file_name": f"labeled-data/v/img{i:03d}.png", "width": 60, "height": 40})
        for box in boxes_of(i):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": box,
                                "area": box[2] * box[3], "keypoints": [box[0] + 1, box[1] + 1, 2, 0, 0, 0],
                                "num_keypoints": 1, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "bird", "keypoints": ["head", "tail"], "skeleton": [[1, 2]]}]}
    (root / "labels.json").write_text(json.dumps(coco))
    return {"labels_json": str(root / "labels.json"), "image_root": str(root), "video": None}


def test_unlabeled_source_of_animal_boxes_is_a_coco_json_of_boxes_only(tmp_path):
    from sagepose.data.unlabeled_sources import load_unlabeled

    info = _fake_labels(tmp_path / "data", lambda i: [[2.0 + i, 3.0, 10.0, 8.0], [30.0, 20.0 + i, 12.5, 9.0]])
    out = tmp_path / "out"
    path = ssl_datasets.unlabeled_source("dlc-montblanc", info, out, exclude_file_names=["labeled-data/v/img001.png"])
    data = json.loads(Path(path).read_text())
    assert Path(path).parent == out and [im["id"] for im in data["images"]] == [1, 3]
    assert all("keypoints" not in a and a["image_id"] in (1, 3) for a in data["annotations"])
    assert [a["bbox"] for a in data["annotations"]] == [[2.0, 3.0, 10.0, 8.0], [30.0, 20.0, 12.5, 9.0],
                                                        [4.0, 3.0, 10.0, 8.0], [30.0, 22.0, 12.5, 9.0]]
    records = load_unlabeled(path, every_n=1, verbose=False)
    assert [Path(r.image_path).resolve() for r in records] == [
        (tmp_path / "data" / "labeled-data" / "v" / f"img{i:03d}.png").resolve() for i in (0, 0, 2, 2)]
    np.testing.assert_allclose(records[3].bbox_xywh, [30.0, 22.0, 12.5, 9.0])
    assert (records[0].width, records[0].height) == (60, 40)
    os.utime(path, ns=(1_500_000_000 * 10**9,) * 2)  # dated back to 2017: a rewrite, however soon, moves it
    mtime = Path(path).stat().st_mtime_ns  # the same inputs: the complete build is reused
    again = ssl_datasets.unlabeled_source("dlc-montblanc", info, out, exclude_file_names=["labeled-data/v/img001.png"])
    assert again == path and Path(path).stat().st_mtime_ns == mtime
    everything = ssl_datasets.unlabeled_source("dlc-montblanc", info, out)  # other exclusions: rebuilt
    assert len(load_unlabeled(everything, every_n=1, verbose=False)) == 6
    with pytest.raises(ValueError, match="not its images"):
        ssl_datasets.unlabeled_source("dlc-montblanc", info, out, exclude_file_names=["img001.png"])


def test_unlabeled_source_of_whole_image_boxes_is_a_folder_and_of_a_video_the_video(tmp_path):
    from sagepose.data.unlabeled_sources import load_unlabeled

    info = _fake_labels(tmp_path / "data", lambda i: [[0, 0, 60, 40]])
    path = ssl_datasets.unlabeled_source("dlc-reaching", info, tmp_path / "out",
                                         exclude_file_names=[str(tmp_path / "data" / "labeled-data/v/img002.png")])
    records = load_unlabeled(path, every_n=1, verbose=False)
    assert [Path(r.image_path).name for r in records] == ["labeled-data__v__img000.png", "labeled-data__v__img001.png"]
    np.testing.assert_allclose(records[1].bbox_xywh, [0, 0, 60, 40])
    video = {**info, "video": str(tmp_path / "v.mp4")}
    assert ssl_datasets.unlabeled_source("mirror-mouse", video, tmp_path / "unused") == video["video"]
    boxed = _fake_labels(tmp_path / "boxed", lambda i: [[5, 5, 20, 20]])
    with pytest.warns(UserWarning, match="not whole images"):
        ssl_datasets.unlabeled_source("mirror-mouse", {**boxed, "video": video["video"]}, tmp_path / "unused")


def test_sleap_unlabeled_source_is_every_third_unlabeled_frame_with_the_labels_boxes(tmp_path):
    from sagepose.data.unlabeled_sources import load_unlabeled

    _write_slp(tmp_path / "clip.slp", frames=31)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(31):
        writer.write(np.full((48, 64, 3), i * 8, np.uint8))
    writer.release()
    info = prepare("sleap-flies", root=tmp_path, out_dir=tmp_path / "out")
    path = ssl_datasets.unlabeled_source("sleap-flies", info, tmp_path / "unlabeled")
    data = json.loads(Path(path).read_text())
    assert [im["frame_index"] for im in data["images"]] == [3, 6, 9, 12, 18, 21, 24, 27]  # 0, 15, 30 are labeled
    assert len(data["annotations"]) == 16 and all("keypoints" not in a for a in data["annotations"])
    xy = {idx: xy for _, idx, xy in ssl_datasets.read_slp(tmp_path / "clip.slp")["frames"]}
    labels = json.loads(Path(info["labels_json"]).read_text())
    assert labels["annotations"][2]["bbox"] == ssl_datasets.sleap_instance_box(xy[15][0], 64, 48)[1]  # the rule
    assert data["annotations"][2]["bbox"] == ssl_datasets.sleap_instance_box(xy[6][0], 64, 48)[1]
    records = load_unlabeled(path, every_n=1, verbose=False)
    assert len(records) == 16 and (records[0].width, records[0].height) == (64, 48)
    img = cv2.imread(records[4].image_path)
    assert records[4].image_path.endswith("frame_000009.jpg") and abs(float(img.mean()) - 9 * 8) < 6


def _write_predictions_slp(path: Path, frames: int) -> None:
    """A SLEAP predictions file as SLEAP writes one: predicted instances whose points are in ``pred_points``; one
    fly per frame at x = 10 + frame, 4 nodes (the labels' skeleton)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as out:
        _write_slp(path.with_suffix(".user.slp"), 1)  # borrow the metadata of the user file
        with h5py.File(path.with_suffix(".user.slp"), "r") as user:
            out.create_dataset("metadata", data=np.zeros(0)).attrs["json"] = user["metadata"].attrs["json"]
            fr_dt, in_dt = user["frames"].dtype, user["instances"].dtype
        pt_dt = [("x", "<f8"), ("y", "<f8"), ("visible", "?"), ("complete", "?"), ("score", "<f8")]
        fr, inst, pts = [], [], []
        for f in range(frames):
            p0 = len(pts)
            pts += [(10 + f + dx, 10 + dy, True, False, 0.9) for dx, dy in ((0, 0), (4, 2), (2, 6), (6, 6))]
            inst.append((f, 1, f, 0, -1, -1, 0.9, p0, len(pts)))
            fr.append((f, 0, f, f, f + 1))
        out["frames"] = np.array(fr, dtype=fr_dt)
        out["instances"] = np.array(inst, dtype=in_dt)
        out["points"] = np.zeros(0, dtype=[("x", "<f8"), ("y", "<f8"), ("visible", "?"), ("complete", "?")])
        out["pred_points"] = np.array(pts, dtype=pt_dt)


def test_sparse_sleap_labels_take_the_unlabeled_boxes_from_predictions(tmp_path):
    _write_slp(tmp_path / "centered_pair.slp", frames=31)  # user instances on frames 0-30 of a 40-frame clip
    _write_predictions_slp(tmp_path / "centered_pair_predictions.slp", frames=40)
    writer = cv2.VideoWriter(str(tmp_path / "centered_pair_low_quality.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15,
                             (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), i * 6, np.uint8))
    writer.release()
    info = prepare("sleap-pair", root=tmp_path, out_dir=tmp_path / "out")
    assert info["frames"] == 31 and info["boxes"] == str(tmp_path / "centered_pair_predictions.slp")
    path = ssl_datasets.unlabeled_source("sleap-pair", info, tmp_path / "unlabeled")
    data = json.loads(Path(path).read_text())
    assert [im["frame_index"] for im in data["images"]] == [33, 36, 39]  # the predictions' frames not labeled
    assert len(data["annotations"]) == 3 and "predicted instances" in data["info"]["description"]
    (tmp_path / "centered_pair_predictions.slp").unlink()
    with pytest.raises(FileNotFoundError, match="centered_pair_predictions.slp: not found"):
        prepare("sleap-pair", root=tmp_path, out_dir=tmp_path / "out")


def test_predicted_instances_are_read_from_pred_points_and_box_the_unlabeled_frames(tmp_path):
    _write_predictions_slp(tmp_path / "pred.slp", frames=7)
    parsed = ssl_datasets.read_slp(tmp_path / "pred.slp", predicted=True)
    assert [idx for _, idx, _ in parsed["frames"]] == list(range(7))
    assert parsed["frames"][2][2][0, 0].tolist() == [12.0, 10.0]  # the head, in the skeleton's node order
    assert ssl_datasets.read_slp(tmp_path / "pred.slp")["frames"] == []  # no user instance in a predictions file
    coco = {"info": {"source": str(tmp_path / "labels.slp"), "video": str(tmp_path / "v.mp4")},
            "images": [{"id": 1, "file_name": "x.png", "frame_index": 3}],
            "categories": [{"name": "fly"}]}
    writer = cv2.VideoWriter(str(tmp_path / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15, (64, 48))
    for i in range(7):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    path, counts = ssl_datasets._sleap_unlabeled(coco, tmp_path / "labels.json", tmp_path / "u", 3,
                                                 str(tmp_path / "pred.slp"))
    data = json.loads(Path(path).read_text())
    assert [im["frame_index"] for im in data["images"]] == [0, 6]  # frame 3 is labeled
    xy = parsed["frames"][6][2][0]
    assert data["annotations"][1]["bbox"] == ssl_datasets.sleap_instance_box(xy, 64, 48)[1]


def test_a_dlc_labels_table_in_hdf5_becomes_a_project_the_importer_reads(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    spec = DATASETS["horse10-brown"]
    names = [a for pair in spec.skeleton for a in pair]
    parts = list(dict.fromkeys(names))
    columns = pd.MultiIndex.from_product([["Byron"], parts, ["x", "y"]], names=["scorer", "bodyparts", "coords"])
    rows = [f"labeled-data/BrownHorseinShadow/{50 + k:04d}.png" for k in range(6)]
    values = np.full((6, len(parts) * 2), np.nan)
    for k in range(1, 6):  # row 0: the horse not yet in view
        values[k, 0::2] = 20 + np.arange(len(parts)) * 3 + k
        values[k, 1::2] = 30 + k
    pd.DataFrame(values, index=rows, columns=columns).to_hdf(tmp_path / spec.labels, key="df_with_missing")
    writer = cv2.VideoWriter(str(tmp_path / spec.video), cv2.VideoWriter_fourcc(*"mp4v"), 24, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), i * 40, np.uint8))
    writer.release()
    info = prepare("horse10-brown", root=tmp_path, out_dir=tmp_path / "out")
    assert (info["frames"], info["instances"], info["keypoints"]) == (6, 5, len(parts))
    coco = json.loads(Path(info["labels_json"]).read_text())
    kpts = check_coco(coco, len(parts), 6, 5)
    assert kpts[0, 0, :2].tolist() == [21.0, 31.0]  # row 1 = frame 1
    first = coco["images"][1]
    img = cv2.imread(str(Path(info["image_root"]) / first["file_name"]))
    assert first["file_name"].endswith("0051.png") and abs(float(img.mean()) - 40) < 6  # row k is frame k
    assert coco["categories"][0].get("flip_pairs", []) == []  # near / off: the side facing the camera
