"""COCO AP and prediction time of one trained model in float32 vs bfloat16 (``sagepose.load(dtype=...)``),
on the same people through the same pipeline: ground-truth boxes, flip test, MMPose's rescoring, pycocotools.

    python benchmarks/bench_dtype_accuracy.py runs/demo [--checkpoint best.ckpt] [--dtypes float32 bfloat16]

RUN is a training run folder (``sagepose demo`` or ``sagepose train`` output: ``config.yaml``,
``checkpoints/``, and the data under ``data/`` with ``val.json``, as the demo writes it). Prints AP /
AP50 / AR and the time per dtype, and how far keypoints move from the first dtype's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def predict_all(model, run: Path, gt: dict) -> tuple[list, np.ndarray, np.ndarray, list, float]:
    import cv2

    boxes_by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        if a.get("num_keypoints", 1) > 0:
            boxes_by_image.setdefault(a["image_id"], []).append(a["bbox"])
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    ids, keypoints, scores, areas = [], [], [], []
    start = time.perf_counter()
    for image_id, boxes in boxes_by_image.items():
        path = run / "data" / files[image_id]
        image = cv2.imread(str(path))
        if image is None:
            raise FileNotFoundError(f"{path}: cannot read the image")
        pred = model.predict(image, np.array(boxes, np.float32), bbox_format="xywh")
        ids += [image_id] * len(boxes)
        keypoints.append(pred.keypoints)
        scores.append(pred.scores)
        areas += [b[2] * b[3] for b in boxes]
    return ids, np.concatenate(keypoints), np.concatenate(scores), areas, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--checkpoint", default="best.ckpt", help="file in RUN/checkpoints")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import sagepose
    from sagepose.eval.coco import evaluate_coco, make_results

    torch.set_num_threads(args.threads)
    gt_json = args.run / "data" / "val.json"
    gt = json.loads(gt_json.read_text())
    first = None
    print(f"{'dtype':<10} {'AP':>7} {'AP50':>7} {'AR':>7} {'predict s':>10}  keypoint shift vs {args.dtypes[0]} (px)")
    for dtype in args.dtypes:
        model = sagepose.load(str(args.run / "config.yaml"), checkpoint=str(args.run / "checkpoints" / args.checkpoint),
                              dtype=dtype)
        ids, kpts, scores, areas, seconds = predict_all(model, args.run, gt)
        m = evaluate_coco(gt_json, make_results(ids, kpts, scores, [1.0] * len(ids), areas, model.schema.sigmas))
        shift = ""
        if first is None:
            first = kpts
        else:
            d = np.linalg.norm(kpts - first, axis=-1)
            shift = f"median {np.median(d):.3f}, 95th pct {np.percentile(d, 95):.3f}, max {d.max():.2f}"
        print(f"{dtype:<10} {m.AP:>7.4f} {m.AP50:>7.4f} {m.AR:>7.4f} {seconds:>10.1f}  {shift}", flush=True)


if __name__ == "__main__":
    main()
