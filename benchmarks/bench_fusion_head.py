"""Plain heatmap head vs the fusion head on vit-tiny, trained at equal FLOPs on synthetic people; COCO AP.

    PYTHONPATH=. python benchmarks/bench_fusion_head.py [--steps 280] [--train 2000] [--val 200] [--out DIR]

Arms, all the same backbone (``vit-tiny``'s conv stem and 4 blocks, the head fed by the last map only),
data, augmentation, seed and optimiser (the demo recipe: AdamW 3e-3, 50 warm-up steps, cosine to the last
step, batch 32):

* ``plain-mse``      -- ``vit-tiny`` without skips, heatmaps regressed with MSE (MMPose's loss), DARK-UDP decode;
* ``plain-softmax``  -- ``vit-tiny`` without skips, spatial softmax + cross-entropy, DARK-UDP decode;
* ``fusion``         -- ``vit-tiny-fusion``: heatmap + offset + log-variance maps, the six-term fusion loss
  with its default weights, soft-argmax + Gaussian step + offset decode;
* ``hybrid-softmax`` -- (not run by default) the demo's model, whose head also takes the stem's stride-4/8
  maps: what the skips add at the same compute.

Equal compute means equal training FLOPs (forward + backward per sample, counted once with torch's
``FlopCounterMode``; the loss's own arithmetic is not counted): the fusion arm runs ``--steps`` optimiser
steps, each plain arm as many more as its cheaper head allows. FLOPs, not seconds, because the machine is
shared and wall time there is noisy; the measured training time is printed beside. Each arm is scored
with ``sagepose.train.run.test`` (pycocotools OKS AP, flip test, GT boxes) on the same val images.

The fusion checkpoint is then scored again with parts of its decode taken away (same weights, same
validation loop): without the offsets, without the blur before the Newton step, and with the codec's own
DARK-UDP decode of its heatmap channels -- what the decoder adds apart from the training.

Measured 2026-11-27 on a quiet 2-core machine (float32), ``--steps 1200 --train 5000 --arms
plain-softmax,fusion``, 36.75 TFLOP per arm (~5 min of training each): plain-softmax AP 0.092 (AP50 0.397,
1324 steps, 318 s) vs fusion AP 0.033 (AP50 0.196, 1200 steps, 305 s); the fusion checkpoint decoded without
offsets 0.033, without the blur 0.028, with the codec's DARK-UDP 0.032. At this budget the fusion head does
not beat the plain head trained with the softmax recipe, and its offsets add nothing yet. On MMPose's
sigma-2 targets (``--arms fusion-sigma2``, same budget) the fusion head scores AP 0.030 (AP50 0.187): no better.
Which part loses: at the same budget, ``--arms plain-mse,fusion`` with every fusion term but the heatmap one off
(``--fusion-override trainer.fusion_loss.offset=0`` and likewise peak, variance, overlap, shape) gives plain-mse
AP 0.000 and heatmap-only fusion 0.008 (AP50 0.067): the auxiliary terms lift the fusion head from 0.008 to
0.033, and the gap to plain-softmax's 0.092 is the squared-error heatmap loss against the softmax one.
(An earlier run with the defaults, 4.56 TFLOP per arm on a shared machine: plain-mse 0.000,
plain-softmax 0.009, fusion 0.002.)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from sagepose.config import load_config
from sagepose.configs import resolve_config
from sagepose.data.synth import generate_dataset
from sagepose.models import build_model, load_checkpoint
from sagepose.models.fusion_head import fusion_decode, split_outputs, to_input_pixels
from sagepose.train.loaders import TopDownData
from sagepose.train.module import TopDownModule
from sagepose.train.run import fit, test

NO_SKIPS = {"skip_strides": ()}  # the fusion head reads the ViT's last map only; the plain arms do the same
ARMS = {  # name -> (zoo model, heatmap_output, model.arch overrides)
    "plain-mse": ("vit-tiny", "raw", NO_SKIPS),
    "plain-softmax": ("vit-tiny", "softmax", NO_SKIPS),
    "fusion": ("vit-tiny-fusion", "raw", {}),
    "hybrid-softmax": ("vit-tiny", "softmax", {}),  # the demo's model: stride-4/8 stem skips into the head
    "fusion-sigma2": ("vit-tiny-fusion", "raw", {}),  # the fusion head on MMPose's sigma-2 targets
}
EXTRA = {"fusion-sigma2": ["model.codec={'sigma': 2.0, 'blur_kernel_size': 11}"]}  # arm -> more overrides


def train_flops_per_sample(name: str, arch: dict) -> float:
    """Forward + backward FLOPs of one training sample (batch of 2, halved; BatchNorm in train mode)."""
    model = build_model(name, arch=arch).train()
    w, h = model.input_size
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, h, w)).sum().backward()
    return counter.get_total_flops() / 2


def _in_input_pixels(decoded, codec):
    locs, scores, std = decoded
    keypoints, std = to_input_pixels(locs, std, codec)
    return keypoints, scores, std


def _no_offsets(outputs: torch.Tensor, codec):
    heatmaps, offsets, log_var = split_outputs(outputs)
    zeroed = torch.cat([heatmaps, torch.zeros_like(offsets).flatten(1, 2), log_var], dim=1)
    return _in_input_pixels(fusion_decode(zeroed, blur_kernel_size=11), codec)


def _no_blur(outputs: torch.Tensor, codec):
    return _in_input_pixels(fusion_decode(outputs, blur_kernel_size=0), codec)


def _codec_decode(outputs: torch.Tensor, codec):
    return (*codec.decode(split_outputs(outputs)[0]), None)


# the fusion head's decode replaced by (outputs, codec) -> keypoints, scores, std; its default: radius 2, blur 11
DECODE_VARIANTS = {"no offsets": _no_offsets, "no blur": _no_blur, "codec decode": _codec_decode}


def evaluate_decode_variant(cfg_eval, checkpoint: str, variant: str) -> dict:
    """COCO metrics of ``checkpoint`` with the fusion head's decode replaced by ``DECODE_VARIANTS[variant]``."""
    module = TopDownModule(cfg_eval)
    load_checkpoint(module.model, checkpoint)
    module.model.head.decode = DECODE_VARIANTS[variant]  # an instance attribute: the estimator calls it
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=TopDownData(cfg_eval, module.model), verbose=False)
    return module.last_metrics


def run_arm(arm: str, steps: int, train_json: str, val_json: str, out: Path, batch: int, seed: int,
            extra: tuple[str, ...] = ()) -> dict:
    model_name, output, arch = ARMS[arm]
    base = [f"model.name={model_name}", f"model.heatmap_output={output}", f"model.arch={arch!r}",
            f"data.train_json={train_json}",
            f"data.batch_size={batch}", f"trainer.seed={seed}", "trainer.max_epochs=1000", f"trainer.max_steps={steps}",
            "trainer.max_time_minutes=None", "trainer.val_every_epochs=1000", "trainer.progress_bar=False",
            f"trainer.out_dir={out / arm}", *EXTRA.get(arm, []), *extra]
    cfg = load_config(resolve_config("demo_tiny_vit"), base)  # no val_json: no validation inside the timed fit
    start = time.perf_counter()
    summary = fit(cfg)
    train_s = time.perf_counter() - start
    cfg_eval = load_config(resolve_config("demo_tiny_vit"), [*base, f"data.val_json={val_json}"])
    start = time.perf_counter()
    metrics = test(cfg_eval, summary["last_checkpoint"], out_dir=out / arm)
    return {"arm": arm, "model": model_name, "steps": summary["steps"], "skipped": summary["skipped_steps"],
            "train_s": train_s, "eval_s": time.perf_counter() - start, "AP": metrics["AP"], "AP50": metrics["AP50"],
            "AP75": metrics["AP75"], "AR": metrics["AR"],
            "_cfg_eval": cfg_eval, "_checkpoint": summary["last_checkpoint"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=280, help="optimiser steps of the fusion arm")
    parser.add_argument("--train", type=int, default=2000, help="synthetic train images")
    parser.add_argument("--val", type=int, default=200, help="synthetic val images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="plain-mse,plain-softmax,fusion", help=f"comma-separated, of {list(ARMS)}")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--fusion-override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the fusion arms, e.g. trainer.fusion_loss.heatmap=10 (repeatable)")
    args = parser.parse_args()
    arms = args.arms.split(",")

    flops = {arm: train_flops_per_sample(ARMS[arm][0], ARMS[arm][2]) for arm in arms}
    budget = args.steps * args.batch * flops.get("fusion", max(flops.values()))  # training FLOPs per arm
    steps = {arm: round(budget / (args.batch * flops[arm])) for arm in arms}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        start = time.perf_counter()
        train_json = generate_dataset(out / "data", args.train, seed=args.seed, split="train", workers=2)
        val_json = generate_dataset(out / "data", args.val, seed=args.seed + 10_000, split="val", workers=2)
        print(f"synthesized {args.train} train / {args.val} val images in {time.perf_counter() - start:.0f} s")
        rows = [run_arm(arm, steps[arm], train_json, val_json, out, args.batch, args.seed,
                        tuple(args.fusion_override) if arm.startswith("fusion") else ()) for arm in arms]
        fusion = next((r for r in rows if r["arm"] == "fusion"), None)
        variants = {v: evaluate_decode_variant(fusion["_cfg_eval"], fusion["_checkpoint"], v)
                    for v in (DECODE_VARIANTS if fusion else ())}

    print(f"\nvit-tiny, {args.train} synthetic train images, batch {args.batch}, equal training FLOPs "
          f"({budget / 1e12:.2f} TFLOP per arm); AP on {args.val} val images (GT boxes, flip test)")
    header = (f"{'arm':<14} {'model':<16} {'GFLOP/sample':>12} {'steps':>6} {'train s':>8} {'eval s':>7} "
              f"{'AP':>6} {'AP50':>6} {'AP75':>6} {'AR':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['arm']:<14} {r['model']:<16} {flops[r['arm']] / 1e9:>12.3f} {r['steps']:>6} {r['train_s']:>8.0f} "
              f"{r['eval_s']:>7.0f} {r['AP']:>6.3f} {r['AP50']:>6.3f} {r['AP75']:>6.3f} {r['AR']:>6.3f}"
              + (f"  ({r['skipped']} skipped steps)" if r["skipped"] else ""))
    if fusion:
        print("\nthe fusion checkpoint, decoded differently (same weights, same val images)")
        print(f"{'decode':<66} {'AP':>6} {'AP50':>6} {'AP75':>6} {'AR':>6}")
        named = {"full fusion decode (soft-argmax, Newton on blurred log, offsets)": fusion, **variants}
        for name, m in named.items():
            print(f"{name:<66} {m['AP']:>6.3f} {m['AP50']:>6.3f} {m['AP75']:>6.3f} {m['AR']:>6.3f}")
    print(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]))


if __name__ == "__main__":
    main()
