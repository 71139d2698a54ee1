"""Write tests/data/mpii_goldens/: MMPose 1.3.2's ``MpiiDataset`` parse of tests/data/realdata/mpii/test_mpii.json.

Regenerate (needs the MMPose peer venv, not sagepose's):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_mpii_goldens.py

Writes

* ``headboxes.mat``: seeded head boxes, one per record, in ``mpii_gt_val.mat``'s layout (``headboxes_src``
  (2, 2, N): corner, coordinate, record), and ``headboxes.json``: the same boxes as N ``[[x1, y1], [x2, y2]]``;
* ``test_mpii_parsed.json``: per record, in file order, MMPose's ``bbox`` (x1, y1, x2, y2), ``bbox_center``,
  ``bbox_scale``, ``keypoints`` (16, 2), ``keypoints_visible`` (16,), ``area``, ``img_id`` and ``head_size``
  (MpiiDataset in test mode, ``headbox_file`` the .mat above).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "peers"))  # MMPose's import shim
sys.path.insert(0, str(ROOT))
import compat  # noqa: E402,F401  (must come before mmpose)
import numpy as np  # noqa: E402
from mmpose.datasets import MpiiDataset  # noqa: E402
from scipy.io import savemat  # noqa: E402

from sagepose.fileio import write_json_atomic  # noqa: E402

ANN = ROOT / "tests" / "data" / "realdata" / "mpii" / "test_mpii.json"
OUT = ROOT / "tests" / "data" / "mpii_goldens"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    num = len(json.loads(ANN.read_text()))
    rng = np.random.default_rng(13)
    x1y1 = rng.uniform(0, 1000, (num, 2))
    boxes = np.stack([x1y1, x1y1 + rng.uniform(10, 120, (num, 2))], 1)  # (N, 2, 2): corner, coordinate
    mat = OUT / "headboxes.mat"
    savemat(str(mat), {"headboxes_src": np.transpose(boxes, (1, 2, 0))})  # (2, 2, N) as mpii_gt_val.mat
    write_json_atomic(str(OUT / "headboxes.json"), boxes.tolist())
    ds = MpiiDataset(ann_file=str(ANN), headbox_file=str(mat), data_prefix=dict(img=""), test_mode=True,
                     lazy_init=False, serialize_data=False)
    parsed = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        parsed.append({key: np.asarray(info[key]).astype(np.float64).reshape(-1).tolist()
                       for key in ("bbox", "bbox_center", "bbox_scale", "keypoints", "keypoints_visible",
                                   "area", "head_size")})
        parsed[-1]["img_id"] = int(info["img_id"])
        parsed[-1]["img_path"] = info["img_path"]
    write_json_atomic(str(OUT / "test_mpii_parsed.json"), {"source": "mmpose 1.3.2 MpiiDataset (test_mode)",
                                                          "records": parsed})
    print(f"wrote {len(parsed)} records to {OUT}")


if __name__ == "__main__":
    main()
