"""What starting a new skeleton's head from the old one buys (issue 29, section 3): one table.

    python benchmarks/bench_transplant.py [--pretrain-steps 1200] [--steps 0 100 300] [--train 800] [--val 150]
        [--seed 0] [--coco-checkpoint CKPT] [--out DIR] [--quick] [--override KEY=VALUE ...]

Data: the synthetic people generator renders a COCO-17 set (``default`` style) and an MPII-16 set (``sports``
style, other seeds): ``--train`` training and ``--val`` val images each.

Models: recipe ``demo_tiny_vit``. First a COCO model, ``--pretrain-steps`` optimizer steps from scratch on the COCO
set (or ``--coco-checkpoint``: one trained before). Then, for each fine-tuning length of ``--steps``, two MPII models
initialised from it, trained the same steps with the same seed and data order, differing only in their head's final
layer: **transplant** (``model.init_checkpoint`` as it is: the 12 limb joints MPII shares with COCO start from the
COCO head's channels, ``sagepose.models.head_transplant``) and **new head** (the same checkpoint without its final
layer, so that layer keeps its initialisation: what a new skeleton got before the transplant). Length 0 scores the
models as initialised, before any fine-tuning. Each is scored on the MPII val set by PCKh@0.5 (head boxes from the
generator), overall and split into the 12 transplanted joints and the 4 new ones (head_top, upper_neck, thorax,
pelvis).

Writes, under ``--out`` (default ``benchmarks/results/transplant``): ``data/``, ``runs/``, ``transplant.md`` (the
table, also printed) and ``transplant.json`` (every number).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = "demo_tiny_vit"
NO_VAL_EPOCHS = 1_000_000  # epochs unbounded (max_steps ends the run) and no validation inside training
SETS = {"coco": ("coco", "default", 0), "mpii": ("mpii", "sports", 100)}  # name: (schema, style, seed offset)
TINY_ARCH = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"
QUICK = {"pretrain_steps": 4, "steps": [0, 2], "train": 6, "val": 4,
         "overrides": [TINY_ARCH, "data.batch_size=4", "data.val_batch_size=8"]}
ARMS = ("transplant", "new head")


def make_data(root: Path, num_train: int, num_val: int, seed: int, workers: int) -> dict:
    """-> {set: {"train": json, "val": json}}."""
    from sagepose.data.synth import generate_dataset

    return {name: {split: str(generate_dataset(root / name, n, seed=seed + offset + (split == "val"), split=split,
                                               schema=schema, style=style, workers=workers))
                   for split, n in (("train", num_train), ("val", num_val))}
            for name, (schema, style, offset) in SETS.items()}


def _config(overrides: list[str], out: Path):
    from sagepose.config import load_config
    from sagepose.configs import resolve_config

    return load_config(resolve_config(RECIPE), [*overrides, f"trainer.out_dir={out}"])


def without_final_layer(checkpoint: str, out: Path) -> str:
    """The checkpoint less its head's final layer (the 'new head' arm: that layer then keeps its initialisation)."""
    from sagepose.fileio import atomic_open
    from sagepose.models.checkpoint_files import read_checkpoint

    raw = read_checkpoint(checkpoint)
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if ".head.final_conv." not in f".{k}"}
    with atomic_open(out) as f:
        torch.save(raw, f)
    return str(out)


def pckh_split(predictions: Path, labels_json: str) -> dict:
    """PCKh@0.5 of a results file on the MPII val labels: overall, the joints COCO shares, the new ones."""
    from sagepose.data import load_coco
    from sagepose.eval import pair_with_labels, pckh
    from sagepose.eval.keypoint_metrics import MPII_EXCLUDED
    from sagepose.keypoint_maps import keypoint_map
    from sagepose.keypoints import load_schema

    s = load_schema("mpii")
    records = load_coco(labels_json, schema=s, mode="val")
    p = pair_with_labels(json.loads(predictions.read_text()), records)
    heads = np.array([records[j].head_size for j in p["record"]], np.float64)
    m = pckh(p["pred"], p["gt"], p["visible"], heads, pred_offset=0.0)
    counts = (np.asarray(p["visible"]) > 0).sum(0).astype(np.float64)
    counts[list(MPII_EXCLUDED)] = 0.0
    per = np.array([np.nan if m["per_joint"][n] is None else m["per_joint"][n] for n in s.keypoints])
    shared = keypoint_map("coco", "mpii").covered
    out = {"PCKh": m["PCKh"]}
    for key, group in (("PCKh_transplanted", shared), ("PCKh_new", ~shared)):
        w = np.where(group & (counts > 0), counts, 0.0)
        out[key] = float(np.nansum(per * w) / w.sum()) if w.sum() else None
    return out


def main(argv: list[str] | None = None) -> dict:
    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.models.inference import native_bf16
    from sagepose.train.run import fit, test

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=1200, help="optimizer steps of the COCO model")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 100, 300], help="fine-tuning lengths (0: none)")
    parser.add_argument("--train", type=int, default=800, help="training images per set")
    parser.add_argument("--val", type=int, default=150, help="val images per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--coco-checkpoint", default=None, help="a COCO model trained before (skips pretraining)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "transplant"))
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on CPUs with native bf16, else 32-true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, model and steps")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model (repeatable)")
    args = parser.parse_args(argv)
    pretrain = QUICK["pretrain_steps"] if args.quick else args.pretrain_steps
    lengths = QUICK["steps"] if args.quick else args.steps
    n_train, n_val = (QUICK["train"], QUICK["val"]) if args.quick else (args.train, args.val)
    out = Path(args.out)
    start = time.time()
    data = make_data(out / "data", n_train, n_val, args.seed, args.workers)
    precision = args.precision or ("bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true")
    extra = [*(QUICK["overrides"] if args.quick else []), *args.override]
    common = [f"trainer.max_epochs={NO_VAL_EPOCHS}", f"trainer.val_every_epochs={NO_VAL_EPOCHS}",
              f"trainer.seed={args.seed}", f"trainer.precision={precision}", "trainer.progress_bar=false", *extra]

    coco = args.coco_checkpoint
    if coco is None:
        print("\n=== COCO model", flush=True)
        cfg = _config([*common, "model.schema=coco", f"data.train_json={data['coco']['train']}",
                       f"data.val_json={data['coco']['val']}", f"trainer.max_steps={pretrain}"], out / "runs" / "coco")
        coco = fit(cfg)["last_checkpoint"]
    inits = {"transplant": coco, "new head": without_final_layer(coco, out / "runs" / "coco_no_final_layer.ckpt")}
    mpii = ["model.schema=mpii", f"data.train_json={data['mpii']['train']}", f"data.val_json={data['mpii']['val']}"]
    rows = []
    for steps in lengths:
        for arm in ARMS:
            run = out / "runs" / f"mpii_{arm.replace(' ', '_')}_{steps}"
            print(f"\n=== {arm}, {steps} fine-tuning steps", flush=True)
            cfg = _config([*common, *mpii, f"model.init_checkpoint={inits[arm]}",
                           f"trainer.max_steps={max(steps, 1)}"], run)
            tick = time.time()
            if steps:
                summary = fit(cfg)
                if summary["steps"] != steps:
                    raise SystemExit(f"{arm} trained {summary['steps']} steps, not {steps}")
                test(cfg, summary["last_checkpoint"], out_dir=run)
            else:
                test(cfg, None, out_dir=run)  # the model as initialised
            rows.append({"arm": arm, "steps": steps, "minutes": (time.time() - tick) / 60,
                         **pckh_split(run / "predictions.json", data["mpii"]["val"])})

    header = (f"Synthetic people: a COCO-17 set (`default` style) and an MPII-16 set (`sports`), {n_train} training "
              f"and {n_val} val images each, seed {args.seed}. Recipe `{RECIPE}`: a COCO model "
              + (f"({coco})" if args.coco_checkpoint else f"of {pretrain} optimizer steps from scratch")
              + f", fine-tuned to MPII from it, {precision}, last checkpoint, GT boxes, flip test; PCKh@0.5 on the "
              "MPII val set (x 100), overall / the 12 joints COCO shares / the 4 new ones."
              + (f" Overrides: `{' '.join(extra)}`." if extra else "")
              + f" Wall time {(time.time() - start) / 60:.1f} min.")
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [header, "", "| fine-tuning steps | head | PCKh | transplanted 12 | new 4 |", "|---|---|---|---|---|"]
    lines += [f"| {r['steps']} | {r['arm']} | {fmt(r['PCKh'])} | {fmt(r['PCKh_transplanted'])} | "
              f"{fmt(r['PCKh_new'])} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print("\n" + text, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "transplant.md", text)
    write_json_atomic(out / "transplant.json", {"header": header, "coco_checkpoint": str(coco), "rows": rows},
                      indent=1)
    print(f"-> {out / 'transplant.md'}, {out / 'transplant.json'}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
