"""Write tests/data/crowd_goldens/: MMPose 1.3.2's AIC and CrowdPose AP on seeded perturbed predictions.

Regenerate (needs the MMPose peer venv, whose xtcocotools MMPose's CocoMetric calls, not sagepose's):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_crowd_goldens.py

The metric runs as ``CocoMetric._do_python_keypoint_eval`` runs it: ``COCO(ann_file)``, ``loadRes`` of a
results json, ``COCOeval(coco, dt, iou_type, sigmas, use_area=False)``, evaluate / accumulate / summarize,
with AIC's config (``iou_type='keypoints'``) and CrowdPose's (``iou_type='keypoints_crowd'``), the sigmas
of MMPose's ``configs/_base_/datasets/{aic,crowdpose}.py``.

Ground truth: the real samples in tests/data/realdata/{aic,crowdpose}, and one variant of each written here
(``*_variant_gt.json``) for what the samples lack: an AIC box running past its image and a person whose json
``num_keypoints`` (0) disagrees with its labelled joints; CrowdPose images with an easy (0.1) and a hard
(0.85) ``crowdIndex`` and a person with v = 1 joints only and ``num_keypoints`` 0.

Predictions: per GT person, its keypoints plus seeded Gaussian noise (``noise`` x OKS's scale of each joint,
2 sigma_k sqrt(0.53 w h)),
keypoint scores in [0.3, 1), an instance score in [0.2, 1); some persons dropped, some false positives
anywhere in the image. ``goldens.json`` holds each case's GT file, results and xtcocotools' ``stats``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
from xtcocotools.coco import COCO  # noqa: E402
from xtcocotools.cocoeval import COCOeval  # noqa: E402

from sagepose.fileio import write_json_atomic  # noqa: E402

OUT = ROOT / "tests" / "data" / "crowd_goldens"
REAL = ROOT / "tests" / "data" / "realdata"
AIC_SIGMAS = [0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
              0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173]
CROWDPOSE_SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
                    0.079, 0.079]
# (name, seed, noise, drop fraction, false positives per image)
CASES = [("clean", 0, 0.3, 0.0, 0), ("noisy", 1, 0.7, 0.0, 1), ("very_noisy", 2, 1.2, 0.2, 2),
         ("sparse", 3, 0.5, 0.4, 3)]


def aic_variant(gt: dict) -> dict:
    gt = copy.deepcopy(gt)
    anns = gt["annotations"]
    anns[0]["bbox"] = [anns[0]["bbox"][0] - 40, anns[0]["bbox"][1] - 30, anns[0]["bbox"][2] + 80,
                       anns[0]["bbox"][3] + 90]  # past the image on three sides
    anns[4]["num_keypoints"] = 0  # xtcocotools' 'keypoints' counts v > 0 itself
    return gt


def crowdpose_variant(gt: dict) -> dict:
    gt = copy.deepcopy(gt)
    gt["images"][0]["crowdIndex"] = 0.1
    gt["images"][1]["crowdIndex"] = 0.85
    for ann in gt["annotations"]:
        if ann["id"] == 131039:  # v = 1 joints only; 'keypoints_crowd' keeps num_keypoints 0 and ignores it
            ann["keypoints"][0:3] = [120, 100, 1]
            ann["keypoints"][3:6] = [135, 105, 1]
    return gt


def predictions(gt: dict, sigmas: list[float], seed: int, noise: float, drop: float, false_pos: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt["images"]}
    out = []
    for ann in gt["annotations"]:
        if rng.random() < drop:
            continue
        kpt = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        x, y, w, h = ann["bbox"]
        unlabelled = kpt[:, 2] == 0
        kpt[unlabelled, 0] = rng.uniform(x, x + w, unlabelled.sum())
        kpt[unlabelled, 1] = rng.uniform(y, y + h, unlabelled.sum())
        scale = noise * 2 * np.asarray(sigmas)[:, None] * np.sqrt(0.53 * w * h)  # OKS's own scale per joint
        xy = kpt[:, :2] + rng.normal(0, 1, (len(kpt), 2)) * scale
        out.append(dict(image_id=ann["image_id"], category_id=1, score=float(rng.uniform(0.2, 1.0)),
                        keypoints=_flat(xy, rng.uniform(0.3, 1.0, len(kpt)))))
    for img_id, img in images.items():
        k = len(gt["annotations"][0]["keypoints"]) // 3
        for _ in range(false_pos):
            xy = np.stack([rng.uniform(0, img["width"], k), rng.uniform(0, img["height"], k)], 1)
            out.append(dict(image_id=img_id, category_id=1, score=float(rng.uniform(0.2, 1.0)),
                            keypoints=_flat(xy, rng.uniform(0.3, 1.0, k))))
    return out


def _flat(xy: np.ndarray, scores: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.concatenate([xy, scores[:, None]], 1).reshape(-1)]


def xtcoco_stats(gt_file: Path, results: list[dict], iou_type: str, sigmas: list[float]) -> list[float]:
    """xtcocotools' stats as MMPose's CocoMetric._do_python_keypoint_eval computes them."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        res_file = Path(tmp) / "results.keypoints.json"
        res_file.write_text(json.dumps(results))
        coco = COCO(str(gt_file))
        coco_det = coco.loadRes(str(res_file))
        ev = COCOeval(coco, coco_det, iou_type, np.array(sigmas), False)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gts = {}
    for dataset, real, variant in (("aic", REAL / "aic" / "test_aic.json", aic_variant),
                                   ("crowdpose", REAL / "crowdpose" / "test_crowdpose.json", crowdpose_variant)):
        gts[dataset] = real.relative_to(ROOT).as_posix()
        var_path = OUT / f"{dataset}_variant_gt.json"
        write_json_atomic(var_path, variant(json.loads(real.read_text())))
        gts[f"{dataset}_variant"] = var_path.relative_to(ROOT).as_posix()
    cases = []
    for gt_name, gt_rel in gts.items():
        crowd = gt_name.startswith("crowdpose")
        # predictions come from the real sample's boxes, so a variant's changed box changes the scores
        gt = json.loads((ROOT / gts[gt_name.removesuffix("_variant")]).read_text())
        for name, seed, noise, drop, false_pos in CASES:
            sigmas = CROWDPOSE_SIGMAS if crowd else AIC_SIGMAS
            results = predictions(gt, sigmas, seed, noise, drop, false_pos)
            if not results:
                continue
            stats = xtcoco_stats(ROOT / gt_rel, results, "keypoints_crowd" if crowd else "keypoints", sigmas)
            cases.append(dict(name=f"{gt_name}/{name}", dataset="crowdpose" if crowd else "aic", gt=gt_rel,
                              results=results, stats=stats))
            print(f"{gt_name}/{name}: {len(results)} predictions, stats {np.round(stats, 4).tolist()}")
    write_json_atomic(OUT / "goldens.json", dict(mmpose="1.3.2", cases=cases))


if __name__ == "__main__":
    main()
