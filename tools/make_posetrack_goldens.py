"""Write tests/data/posetrack_goldens/: MMPose 1.3.2's ``PoseTrack18Dataset`` parse of the PoseTrack18 fixtures.

Regenerate (needs the MMPose peer venv, not sagepose's):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_posetrack_goldens.py

Reads tests/data/realdata/posetrack18/test_posetrack18_val.json (merged, MMPose's form) and each per-video file
of tests/data/realdata/posetrack18/val/, and writes one ``<json name>_parsed.json`` per file: per instance, in
MMPose's order, ``bbox`` (x1, y1, x2, y2), ``keypoints`` (17, 2), ``keypoints_visible`` (17,), ``area``,
``num_keypoints``, ``id``, ``img_id`` and ``img_path`` (PoseTrack18Dataset, top-down, test_mode and train mode:
both are stored, to show the two keep the same instances), and ``metainfo.json``: the dataset's keypoint
names, flip pairs, skeleton links, OKS sigmas, joint weights and upper-body ids, for the ``POSETRACK18`` schema.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "peers"))  # MMPose's import shim
sys.path.insert(0, str(ROOT))
import compat  # noqa: E402,F401  (must come before mmpose)
import numpy as np  # noqa: E402
from mmpose.datasets import PoseTrack18Dataset  # noqa: E402

from sagepose.fileio import write_json_atomic  # noqa: E402

ANN_DIR = ROOT / "tests" / "data" / "realdata" / "posetrack18"
OUT = ROOT / "tests" / "data" / "posetrack_goldens"


def _parse(ann: Path, test_mode: bool) -> list[dict]:
    ds = PoseTrack18Dataset(ann_file=str(ann), data_prefix=dict(img=""), test_mode=test_mode, lazy_init=False,
                            serialize_data=False)
    parsed = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        rec = {key: np.asarray(info[key]).astype(np.float64).reshape(-1).tolist()
               for key in ("bbox", "keypoints", "keypoints_visible", "area")}
        rec.update(num_keypoints=int(info["num_keypoints"]), id=int(info["id"]), img_id=int(info["img_id"]),
                   img_path=info["img_path"])
        parsed.append(rec)
    return parsed


def _metainfo() -> dict:
    ds = PoseTrack18Dataset(ann_file=str(ANN_DIR / "test_posetrack18_val.json"), data_prefix=dict(img=""),
                            test_mode=True, lazy_init=True)
    meta = ds.metainfo
    names = [meta["keypoint_id2name"][i] for i in range(meta["num_keypoints"])]
    flips = sorted({tuple(sorted((i, j))) for i, j in enumerate(meta["flip_indices"]) if i != j})
    return {"keypoints": names, "flip_pairs": [list(p) for p in flips],
            "skeleton": [list(map(int, link)) for link in meta["skeleton_links"]],
            "sigmas": np.asarray(meta["sigmas"], np.float64).tolist(),
            "joint_weights": np.asarray(meta["dataset_keypoint_weights"], np.float64).reshape(-1).tolist(),
            "upper_body": sorted(int(i) for i in meta["upper_body_ids"])}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(OUT / "metainfo.json"), {"source": "mmpose 1.3.2 PoseTrack18Dataset.metainfo",
                                                   **_metainfo()})
    for ann in [ANN_DIR / "test_posetrack18_val.json", *sorted((ANN_DIR / "val").glob("*.json"))]:
        test, train = _parse(ann, True), _parse(ann, False)
        write_json_atomic(str(OUT / f"{ann.stem}_parsed.json"),
                          {"source": f"mmpose 1.3.2 PoseTrack18Dataset, {ann.relative_to(ANN_DIR)}",
                           "test_mode": test, "train_mode": train})
        print(f"{ann.name}: {len(test)} instances (test_mode), {len(train)} (train)")


if __name__ == "__main__":
    main()
