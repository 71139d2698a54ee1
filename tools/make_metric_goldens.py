"""Write tests/data/metrics_goldens/keypoint_metrics.npz: MMPose 1.3.2's keypoint metrics on seeded inputs.

Regenerate (needs the MMPose peer venv, not sagepose's):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_metric_goldens.py

Cases (``<prefix>/<name>`` keys in the npz, inputs and MMPose's outputs side by side):

* ``pck/i``: ``keypoint_pck_accuracy`` for several (N, K), thresholds and (N, 2) norm factors, masks with an
  all-False joint and an all-False instance, one case with an instance whose norm factor is 0 on one axis and
  one with nothing labeled; outputs ``acc`` (-1: no scored sample), ``avg``, ``cnt``. The same inputs give
  ``keypoint_epe`` (``epe``) and, with the scalar ``auc_norm`` and ``auc_thrs``, ``keypoint_auc`` (``auc``).
* ``mpii/i``: ``MpiiPCKAccuracy`` run through ``process`` / ``compute_metrics`` on 16-joint instances: 0-based
  predictions, 1-based labels, head sizes; outputs ``table`` (its nine numbers, in ``MPII_KEYS`` order) and
  ``per_joint`` (``keypoint_pck_accuracy`` called as the metric calls it, in percent).
"""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "peers"))  # MMPose's import shim
sys.path.insert(0, str(ROOT))
import compat  # noqa: E402,F401  (must come before mmpose)
import numpy as np  # noqa: E402
from mmpose.evaluation.functional import keypoint_auc, keypoint_epe, keypoint_pck_accuracy  # noqa: E402
from mmpose.evaluation.metrics import MpiiPCKAccuracy  # noqa: E402

from sagepose.fileio import atomic_open  # noqa: E402

OUT = ROOT / "tests" / "data" / "metrics_goldens" / "keypoint_metrics.npz"
MPII_KEYS = ("Head PCK", "Shoulder PCK", "Elbow PCK", "Wrist PCK", "Hip PCK", "Knee PCK", "Ankle PCK", "PCK",
             "PCK@0.1")

# (N, K, thr, auc_norm, auc_thrs, special)
PCK_CASES = [
    (1, 1, 0.5, 10.0, 20, ""),
    (5, 3, 0.2, 30.0, 20, ""),
    (20, 17, 0.05, 64.0, 20, "dead_joint"),
    (40, 16, 0.1, 20.0, 10, "dead_instance"),
    (12, 21, 0.2, 48.0, 7, "zero_norm"),
    (4, 5, 0.3, 25.0, 20, "nothing_labeled"),
]
# (N, thr, special)
MPII_CASES = [(1, 0.5, ""), (10, 0.5, ""), (60, 0.5, "unlabeled_head_top"), (30, 0.3, "")]


def offsets(rng, n, k, scale, reach):
    """(n, k, 2) offsets of length U(0, reach) x scale in a random direction."""
    angle = rng.uniform(0, 2 * np.pi, (n, k))
    length = rng.uniform(0, reach, (n, k)) * scale
    return np.stack([np.cos(angle), np.sin(angle)], -1) * length[..., None]


def pck_case(rng, n, k, thr, auc_norm, auc_thrs, special):
    gt = rng.uniform(0, 256, (n, k, 2))
    norm = rng.uniform(20, 200, (n, 2))
    # per-axis scaled offsets so the normalised distances straddle every threshold
    pred = gt + offsets(rng, n, k, 1.0, 1.0) * np.maximum(norm, auc_norm)[:, None, :] * 0.6
    mask = rng.random((n, k)) < 0.75
    if special == "dead_joint":
        mask[:, 2] = False
    if special == "dead_instance":
        mask[3] = False
    if special == "zero_norm":
        norm[1, 0] = 0.0
        mask[1] = True
    if special == "nothing_labeled":
        mask[:] = False
    acc, avg, cnt = keypoint_pck_accuracy(pred, gt, mask, thr, norm.copy())  # it overwrites norm <= 0
    return {"pred": pred, "gt": gt, "mask": mask, "thr": np.float64(thr), "norm": norm,
            "acc": np.asarray(acc, np.float64), "avg": np.float64(avg), "cnt": np.int64(cnt),
            "epe": np.float64(keypoint_epe(pred, gt, mask)),
            "auc_norm": np.float64(auc_norm), "auc_thrs": np.int64(auc_thrs),
            "auc": np.float64(keypoint_auc(pred, gt, mask, auc_norm, auc_thrs))}


def mpii_case(rng, n, thr, special):
    head = rng.uniform(20, 80, n)
    gt = rng.uniform(1, 400, (n, 16, 2))  # 1-based, as MPII's annotations
    pred = gt - 1.0 + offsets(rng, n, 16, head[:, None], 0.8)  # 0-based, as a model predicts
    visible = rng.random((n, 16)) < 0.85
    if special == "unlabeled_head_top":
        visible[:, 9] = False
    metric = MpiiPCKAccuracy(thr=thr, norm_item="head")
    samples = [{"gt_instances": {"keypoints": gt[i:i + 1], "keypoints_visible": visible[i:i + 1],
                                 "head_size": np.array([[head[i]]])},
                "pred_instances": {"keypoints": pred[i:i + 1]}} for i in range(n)]
    metric.process([{}] * n, samples)
    table = metric.compute_metrics(metric.results)
    # the per-joint numbers behind the table, computed as MpiiPCKAccuracy computes them (percent, -100: unlabeled)
    per_joint = 100.0 * keypoint_pck_accuracy(pred + 1.0, gt, visible, thr, np.repeat(head[:, None], 2, 1))[0]
    return {"pred": pred, "gt": gt, "visible": visible, "head_size": head, "thr": np.float64(thr),
            "per_joint": np.asarray(per_joint, np.float64),
            "table": np.array([float(table[key]) for key in MPII_KEYS], np.float64)}


def main() -> None:
    rng = np.random.default_rng(20261202)
    golden = {}
    for i, case in enumerate(PCK_CASES):
        for key, value in pck_case(rng, *case).items():
            golden[f"pck/{i}/{key}"] = value
    for i, case in enumerate(MPII_CASES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "The prefix is not set in metric class MpiiPCKAccuracy."
            result = mpii_case(rng, *case)
        for key, value in result.items():
            golden[f"mpii/{i}/{key}"] = value
    buf = io.BytesIO()
    np.savez_compressed(buf, **golden)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(OUT) as f:
        f.write(buf.getvalue())
    print(f"wrote {OUT} ({len(PCK_CASES)} pck cases, {len(MPII_CASES)} mpii cases, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
