"""Test-time augmentation on one model, side by side: COCO AP and time per image with box scales {1} and
{0.75, 1, 1.25}, each with and without flip test (issue 14, section 3).

    python benchmarks/bench_tta.py --checkpoint runs/demo/checkpoints/best.ckpt --val-json runs/demo/data/val.json
        [--threads 2] [--out benchmarks/results/tta]

Every val image's non-crowd people are predicted on their ground-truth boxes with ``sagepose.load(CHECKPOINT)``'s
``predict`` (the model fused for inference, as users get it), the settings changed on the same loaded model
(``flip_test``, ``test_scales``); AP by the schema's official metric (pycocotools with its sigmas). Time: the
whole pass over the val set per setting, divided by its images (one pass, the settings in turn; a loaded machine
slows all alike only roughly, so read the ratios, not the milliseconds). Writes ``tta.md`` / ``tta.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = (("scale 1, no flip", (1.0,), False), ("scale 1, flip", (1.0,), True),
            ("scales 0.75 / 1 / 1.25, no flip", (1.0, 0.75, 1.25), False),
            ("scales 0.75 / 1 / 1.25, flip", (1.0, 0.75, 1.25), True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--val-json", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tta")
    args = ap.parse_args()
    import numpy as np
    import torch

    import sagepose
    from sagepose.data.coco import image_index, read_json
    from sagepose.eval.coco import instance_scores
    from sagepose.eval.official import official_ap
    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.image import read_image

    torch.set_num_threads(args.threads)
    model = sagepose.load(args.checkpoint)
    data = read_json(args.val_json)
    images = image_index(args.val_json, data)
    people: dict = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0:
            people.setdefault(a["image_id"], []).append(a["bbox"])
    root = Path(args.val_json).parent
    loaded = {i: read_image(root / images[i]["file_name"]) for i in people}
    rows = []
    for label, scales, flip in SETTINGS:
        model.flip_test, model.test_scales = flip, scales
        results = []
        start = time.perf_counter()
        for image_id, boxes in people.items():
            xywh = np.asarray(boxes, np.float32)
            pred = model.predict(loaded[image_id], xywh, bbox_format="xywh")
            score = instance_scores(pred.scores, np.ones(len(xywh)))
            for n in range(len(xywh)):
                kp = np.concatenate([pred.keypoints[n], pred.scores[n][:, None]], 1).reshape(-1)
                results.append(dict(image_id=image_id, category_id=1, keypoints=kp.round(3).tolist(),
                                    score=float(score[n])))
        ms = (time.perf_counter() - start) * 1000 / len(people)
        ap_ = official_ap(model.schema.name, args.val_json, results, model.schema.sigmas_array())["AP"]
        rows.append(dict(setting=label, scales=list(scales), flip=flip, AP=ap_, ms_per_image=ms))
        print(f"  {label}: AP {ap_:.4f}, {ms:.1f} ms / image", file=sys.stderr, flush=True)
    base = rows[1]  # scale 1 with flip: the default
    header = (f"Test-time augmentation, `{args.checkpoint}` on `{args.val_json}` ({len(people)} images, "
              f"{sum(len(b) for b in people.values())} people, GT boxes), {args.threads} threads, torch "
              f"{torch.__version__}.")
    lines = [header, "", "| setting | AP | AP - default | ms / image | time x default |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['AP']:.4f} | {r['AP'] - base['AP']:+.4f} | {r['ms_per_image']:.1f} | "
                     f"{r['ms_per_image'] / base['ms_per_image']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    write_text_atomic(args.out / "tta.md", text)
    write_json_atomic(args.out / "tta.json", {"header": header, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
