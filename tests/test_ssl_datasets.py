"""benchmarks/ssl_datasets.py: the registry's entries, and prepare() on tiny fake roots of each format (a DLC
project with 3 labeled frames; a SLEAP .slp + video)."""
import importlib.util
import json
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
        assert spec.name == name and spec.kind in ("dlc", "sleap")
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
