"""Samples/s of the per-sample CPU step, one process: the one-warp sampler vs MMPose-style pipelines.

    PYTHONPATH=. python benchmarks/bench_dataloader.py [--images 48] [--repeat 5] [--size 640x480]

Images are smooth random-noise JPEGs written to a temporary folder, one person box
each. Pipelines, all with MMPose's default augmentation (flip 0.5, half-body 0.3,
shift / scale / rotate jitter) and the same random parameters:

* ``sagepose``      -- flip folded into the crop matrix, one ``warpAffine``;
* ``mmpose-style``  -- ``cv2.flip`` of the full image when flipping, then the crop warp
                       (MMPose 1.x's RandomFlip + TopdownAffine);
* ``two-warp``      -- full-image flip, a full-image rotate/scale warp, then an axis-aligned crop
                       warp (older HRNet-era pipelines).

Each runs with JPEG decode (the real per-sample cost) and on pre-decoded images
(the transform alone). Passes are interleaved and the best of ``--repeat`` kept;
ratios are to ``sagepose`` in the same run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import cv2
import numpy as np

from sagepose import geometry
from sagepose.data.coco import Record
from sagepose.data.dataset import TopDownDataset
from sagepose.data.transforms import CropAugment
from sagepose.image import read_image
from sagepose.keypoints import COCO17


def make_images(folder: str, n: int, width: int, height: int, rng: np.random.Generator) -> list[Record]:
    records = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
        path = os.path.join(folder, f"{i:04d}.jpg")
        cv2.imwrite(path, img)
        w, h = rng.uniform(0.2, 0.5) * width, rng.uniform(0.4, 0.9) * height
        box = np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h], np.float32)
        kp = (box[:2] + rng.uniform(0, 1, (17, 2)) * box[2:]).astype(np.float32)
        records.append(Record(image_path=path, image_id=i, ann_id=i, bbox_xywh=box, keypoints=kp,
                              visible=np.ones(17, np.float32), flags=np.full(17, 2, np.float32),
                              area=float(w * h), width=width, height=height))
    return records


def sagepose_step(sampler, image, record, rng):
    return sampler(image, record, rng, train=True)


def _flip_image_then_jitter(sampler, image, record, rng):
    """The full-image flip both comparison pipelines start with, then half-body and box jitter."""
    center, scale = geometry.box_to_center_scale(geometry.xywh_to_xyxy(record.bbox_xywh), sampler.padding)
    keypoints, visible = record.keypoints, record.visible
    if rng.random() < sampler.flip_prob:
        width = image.shape[1]
        image = cv2.flip(image, 1)
        center = np.array([width - 1 - center[0], center[1]], np.float32)
        keypoints, visible = geometry.flip_keypoints_lr(keypoints, visible, width, COCO17.flip_indices)
    center, scale = sampler._half_body(keypoints, visible, center, scale, rng)
    center, scale, rot = sampler._box_jitter(center, scale, rng)
    return image, center, scale, rot, keypoints, visible


def mmpose_style_step(sampler, image, record, rng):
    """Full-image flip, then the crop warp: what MMPose's RandomFlip + TopdownAffine do."""
    image, center, scale, rot, keypoints, visible = _flip_image_then_jitter(sampler, image, record, rng)
    return sampler.crop(image, record, center, scale, rot, False, keypoints, visible)


def two_warp_step(sampler, image, record, rng):
    """Full-image flip, full-image rotate + scale about the centre, then an axis-aligned crop."""
    image, center, scale, rot, keypoints, visible = _flip_image_then_jitter(sampler, image, record, rng)
    rotate = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), rot, 1.0)
    image = cv2.warpAffine(image, rotate, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)
    keypoints = geometry.apply_affine(keypoints, rotate)
    return sampler.crop(image, record, center, scale, 0.0, False, keypoints, visible)


def best_rates(steps: dict, sampler, records, images, repeat: int) -> dict[str, float]:
    """Samples/s per pipeline: passes interleaved round-robin, best pass kept (the CPU is shared)."""
    best = dict.fromkeys(steps, 0.0)
    for _ in range(repeat):
        for name, step in steps.items():
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for i, record in enumerate(records):
                image = read_image(record.image_path) if images is None else images[i]
                step(sampler, image, record, rng)
            best[name] = max(best[name], len(records) / (time.perf_counter() - start))
    return best


def reduced_decode_rates(sampler, records, repeat: int) -> dict:
    """``data.reduced_decode`` against the full decode, through ``TopDownDataset`` (plan, decode, one warp), passes
    interleaved, best kept; the share of samples decoded at each reduction, and the crops' mean absolute difference
    (grey levels, same draws) -- what the option changes in the pixels."""
    from collections import Counter

    arms = {name: TopDownDataset(records, sampler, train=True, seed=0, reduced_decode=name == "reduced")
            for name in ("full", "reduced")}
    best = dict.fromkeys(arms, 0.0)
    for _ in range(repeat):
        for name, ds in arms.items():
            start = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            best[name] = max(best[name], len(ds) / (time.perf_counter() - start))
    factors, diffs = Counter(), []
    for i in range(len(records)):
        a, b = arms["full"][i], arms["reduced"][i]
        factors[sampler.reduction(b["scale"])] += 1
        diffs.append(np.abs(a["img"].astype(np.int16) - b["img"].astype(np.int16)).mean())
    return {"rates": best, "factors": dict(sorted(factors.items())), "mean_abs_diff": float(np.mean(diffs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", default="640x480", help="image WxH")
    parser.add_argument("--input", default="192x256", help="crop WxH")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    crop = tuple(int(v) for v in args.input.split("x"))
    cv2.setNumThreads(1)
    sampler = CropAugment(COCO17, input_size=crop)
    steps = {"sagepose": sagepose_step, "mmpose-style": mmpose_style_step, "two-warp": two_warp_step}
    with tempfile.TemporaryDirectory() as folder:
        records = make_images(folder, args.images, width, height, np.random.default_rng(0))
        decoded = [read_image(r.image_path) for r in records]
        print(f"{args.images} images {width}x{height}, crops {crop[0]}x{crop[1]}, x{args.repeat}, "
              f"1 process, cv2 threads 1")
        print(f"{'pipeline':14s} {'decode':>7s} {'samples/s':>10s} {'vs sagepose':>12s}")
        for with_decode in (True, False):
            rates = best_rates(steps, sampler, records, None if with_decode else decoded, args.repeat)
            for name, rate in rates.items():
                print(f"{name:14s} {'yes' if with_decode else 'no':>7s} {rate:10.0f} "
                      f"{rate / rates['sagepose']:11.2f}x")
        r = reduced_decode_rates(sampler, records, args.repeat)
        share = ", ".join(f"1/{f}: {n}" for f, n in r["factors"].items())
        print(f"data.reduced_decode: {r['rates']['reduced']:.0f} vs {r['rates']['full']:.0f} samples/s with the full "
              f"decode ({r['rates']['reduced'] / r['rates']['full']:.2f}x); samples decoded at {share}; crops differ "
              f"by {r['mean_abs_diff']:.2f} grey levels on average (same draws)")

if __name__ == "__main__":
    main()
