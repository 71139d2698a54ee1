"""Write tests/data/schema_goldens/coco_wholebody.json: MMPose 1.3.2's parsed metainfo of
``configs/_base_/datasets/coco_wholebody.py`` (``parse_pose_metainfo``), the reference for ``COCO_WHOLEBODY133``.

Regenerate (needs the MMPose peer venv, not sagepose's):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_schema_goldens.py

Fields: ``keypoints`` (names, in id order), ``flip_indices``, ``flip_pairs`` (0-based, as MMPose lists them),
``skeleton_links``, ``sigmas``, ``joint_weights``, ``upper_body_ids``, ``lower_body_ids``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "peers"))  # MMPose's import shim
sys.path.insert(0, str(ROOT))
import compat  # noqa: E402,F401  (must come before mmpose)
import mmpose  # noqa: E402
from mmpose.datasets.datasets.utils import parse_pose_metainfo  # noqa: E402

from sagepose.fileio import write_json_atomic  # noqa: E402


def main() -> None:
    cfg = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "coco_wholebody.py"
    meta = parse_pose_metainfo(dict(from_file=str(cfg)))
    k = int(meta["num_keypoints"])
    out = {
        "source": f"mmpose {mmpose.__version__} configs/_base_/datasets/coco_wholebody.py",
        "dataset_name": meta["dataset_name"],
        "keypoints": [meta["keypoint_id2name"][i] for i in range(k)],
        "flip_indices": [int(i) for i in meta["flip_indices"]],
        "flip_pairs": [[int(a), int(b)] for a, b in meta["flip_pairs"]],
        "skeleton_links": [[int(a), int(b)] for a, b in meta["skeleton_links"]],
        "sigmas": [float(s) for s in meta["sigmas"]],
        "joint_weights": [float(w) for w in meta["dataset_keypoint_weights"]],
        "upper_body_ids": [int(i) for i in meta["upper_body_ids"]],
        "lower_body_ids": [int(i) for i in meta["lower_body_ids"]],
    }
    dest = ROOT / "tests" / "data" / "schema_goldens" / "coco_wholebody.json"
    write_json_atomic(dest, out)
    print(f"wrote {dest}: {k} keypoints")


if __name__ == "__main__":
    main()
