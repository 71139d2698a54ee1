"""Many datasets, one model, and keypoint translation, on synthetic people (issue 13, section 5): two tables.

    python benchmarks/bench_multidataset.py [--steps 1200] [--train 800] [--val 150] [--seed 0] [--out DIR]
        [--quick] [--override KEY=VALUE ...]

Data: the generator renders three sets, each in its own keypoint schema, style and images (different seeds):
``coco`` (COCO-17, ``default`` style), ``mpii`` (MPII-16, ``sports``), ``aic`` (AIC-14, ``indoor``); ``--train``
training and ``--val`` val images each. The MPII set is rendered a second time with COCO-17 labels and the COCO set
with MPII-16 labels: the same images and people (the generator's draws do not depend on the schema), which is
what a translator is trained and tested on.

Union vs single (every model: recipe ``demo_tiny_vit`` from scratch, tested on its last checkpoint, no validation
inside training; equal total optimizer steps: each single model ``--steps``, each multi-dataset model the three
singles' total, ``--union-steps`` = 3 x ``--steps`` by default -- one union replaces three models; with
``--union-steps`` equal to ``--steps`` the comparison is model for model): three single-dataset models, the merged
union (23 outputs), the union with one head per dataset (ViTPose+'s layout), the concatenated union (47 outputs) and the
converter mode (every set mapped into COCO-17, midpoints allowed: scored on COCO only, since COCO-17 has no MPII
head_top). Each model is scored on every val set it can be: COCO and AIC by their OKS AP (AIC: its sigmas, as
MMPose), MPII by PCKh@0.5 (head boxes from the generator). Floor: the merged union within 0.01 of the single model
on each dataset (PCKh as a fraction) and ahead by >= 0.02 on at least two.

Translation: ``coco -> mpii``: the single COCO model's predictions on the MPII-styled training images (GT boxes)
paired with their MPII labels train ``sagepose.translate``'s translator; it then translates that model's
predictions on the MPII val images, scored by PCKh against the model trained on MPII labels (floor: >= 0.95 x).
``mpii -> coco`` the other way, scored by COCO AP. Each beside the fixed converter (copies and midpoints) and with
the mean error in px against the true target joints.

Writes, under ``--out`` (default ``benchmarks/results/multidataset``): ``data/``, ``runs/``, and
``multidataset.md`` (both tables, also printed) and ``multidataset.json`` (every number).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = "demo_tiny_vit"
NO_VAL_EPOCHS = 1_000_000  # epochs unbounded (max_steps ends the run) and no validation inside training
# name: (schema, style, seed offset)
SETS = {"coco": ("coco", "default", 0), "mpii": ("mpii", "sports", 100), "aic": ("aic", "indoor", 200)}
TINY_ARCH = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"
QUICK = {"steps": 4, "train": 6, "val": 4, "overrides": [TINY_ARCH, "data.batch_size=4", "data.val_batch_size=8"]}


def make_data(root: Path, num_train: int, num_val: int, seed: int, workers: int) -> dict:
    """-> {set: {"train": json, "val": json}} plus ``mpii_as_coco`` / ``coco_as_mpii``: the same images relabeled."""
    from sagepose.data.synth import generate_dataset

    start = time.time()
    out: dict = {}

    def render(name: str, schema: str, relabel: bool = False) -> dict:
        _, style, offset = SETS[name]
        return {split: str(generate_dataset(root / name, n, seed=seed + offset + (split == "val"), split=split,
                                            schema=schema, style=style, workers=workers,
                                            json_name=f"{split}_{schema}.json" if relabel else None,
                                            write_images=not relabel))
                for split, n in (("train", num_train), ("val", num_val))}

    for name, (schema, _, _) in SETS.items():
        out[name] = render(name, schema)
    out["mpii_as_coco"] = render("mpii", "coco", relabel=True)  # the same images, their people in COCO-17
    out["coco_as_mpii"] = render("coco", "mpii", relabel=True)
    print(f"synthesized {len(out)} x ({num_train} + {num_val}) images in {time.time() - start:.0f} s -> {root}",
          flush=True)
    return out


def _fit_and_test(overrides: list[str], out: Path) -> tuple[dict, dict]:
    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.train.run import fit, test

    cfg = load_config(resolve_config(RECIPE), [*overrides, f"trainer.out_dir={out}"])
    summary = fit(cfg)
    return summary, test(cfg, summary["last_checkpoint"], out_dir=out)


def predictions(checkpoint: str, schema: str, labels_json: str, common: list[str], out: Path) -> list[dict]:
    """A single-dataset model's COCO results on ``labels_json``'s people (their GT boxes)."""
    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.train.run import test

    cfg = load_config(resolve_config(RECIPE), [*common, f"model.schema={schema}", f"data.val_json={labels_json}",
                                              f"trainer.out_dir={out}"])
    test(cfg, checkpoint, out_dir=out)
    return json.loads((out / "predictions.json").read_text())


def score_results(results: list[dict], labels_json: str, schema: str, copied=None) -> dict:
    """A results list on its labels: the dataset's official metric (COCO / AIC OKS AP, MPII PCKh from the labels'
    head boxes) and ``pixel_error`` against the labeled joints. MPII with ``copied`` (a bool per joint: the joints a
    fixed map copies from the source schema): also ``PCKh_copied`` / ``PCKh_rest``, the PCKh over those joints and
    over the others (each weighted by its labeled count, as the headline), and ``copied_weight``, the copied joints'
    share of the headline's weight."""
    from sagepose.data import load_coco
    from sagepose.eval import official_ap, pair_with_labels, pckh, pixel_metrics
    from sagepose.keypoints import load_schema

    s = load_schema(schema)
    records = load_coco(labels_json, schema=s, mode="val")
    p = pair_with_labels(results, records)
    out = {"pairs": int(len(p["record"])), "labeled": len(records),
           "pixel_error": pixel_metrics(p["pred"], p["gt"], p["visible"], p["box_size"], s.keypoints)["pixel_error"]}
    if schema == "mpii":
        heads = np.array([records[j].head_size for j in p["record"]], np.float64)
        m = pckh(p["pred"], p["gt"], p["visible"], heads, pred_offset=0.0)
        out["PCKh"] = m["PCKh"]
        if copied is not None:
            from sagepose.eval.keypoint_metrics import MPII_EXCLUDED

            counts = (np.asarray(p["visible"]) > 0).sum(0).astype(np.float64)
            counts[list(MPII_EXCLUDED)] = 0.0
            per = np.array([np.nan if m["per_joint"][n] is None else m["per_joint"][n] for n in s.keypoints])
            for key, group in (("PCKh_copied", np.asarray(copied)), ("PCKh_rest", ~np.asarray(copied))):
                w = np.where(group & (counts > 0), counts, 0.0)
                out[key] = float(np.nansum(per * w) / w.sum()) if w.sum() else None
            out["copied_weight"] = float(counts[np.asarray(copied)].sum() / counts.sum())
    else:
        out["AP"] = official_ap(schema, labels_json, results, s.sigmas_array())["AP"]
    return out


def headline(metrics: dict | None, name: str) -> float | None:
    """A val set's number in [0, 1]: PCKh / 100 for MPII, AP otherwise."""
    if not metrics:
        return None
    value = metrics.get("PCKh" if name == "mpii" else "AP")
    return None if value is None else (value / 100.0 if name == "mpii" else value)


ARMS = ("single-coco", "single-mpii", "single-aic", "union-merged", "union-per-dataset-heads", "union-concatenated",
        "convert-to-coco")


def union_rows(data: dict, common: list[str], steps: int, union_steps: int, runs: Path, only=ARMS) -> list[dict]:
    datasets = [{"name": n, "schema": SETS[n][0], "train_json": data[n]["train"], "val_json": data[n]["val"]}
                for n in SETS]
    arms = {f"single-{n}": [f"model.schema={SETS[n][0]}", f"data.train_json={data[n]['train']}",
                            f"data.val_json={data[n]['val']}"] for n in SETS}
    multi = [f"data.datasets={datasets!r}"]
    arms.update({"union-merged": [*multi, "data.union=merged"],
                 "union-per-dataset-heads": [*multi, "data.union=merged", "model.heads=per_dataset"],
                 "union-concatenated": [*multi, "data.union=concatenated"],
                 "convert-to-coco": [*multi, "data.union=convert", "model.schema=coco"]})
    rows = []
    for arm, extra in arms.items():
        if arm not in only:
            continue
        print(f"\n=== {arm}", flush=True)
        budget = steps if arm.startswith("single") else union_steps
        summary, metrics = _fit_and_test([*common, *extra, f"trainer.max_steps={budget}"], runs / arm)
        if summary["steps"] != budget:
            raise SystemExit(f"{arm} trained {summary['steps']} steps, not {budget}")
        per = {n: metrics for n in SETS if arm == f"single-{n}"} if arm.startswith("single") else \
            {n: metrics.get(n) for n in SETS}
        rows.append({"arm": arm, "steps": summary["steps"], "train_minutes": summary["train_minutes"],
                     "checkpoint": summary["last_checkpoint"],
                     **{n: headline(per.get(n), n) for n in SETS},
                     "metrics": {n: (m or {}) for n, m in per.items()}})
    return rows


def translation_rows(data: dict, rows: list[dict], common: list[str], runs: Path, epochs: int | None) -> list[dict]:
    from sagepose.keypoint_maps import keypoint_map
    from sagepose.translate.config import TranslatorConfig
    from sagepose.translate.fit import fit_translator
    from sagepose.translate.model import translate_results
    from sagepose.translate.results import convert_results

    ckpt = {r["arm"]: r["checkpoint"] for r in rows}
    direct = {r["arm"]: r for r in rows}
    cfg = TranslatorConfig() if epochs is None else TranslatorConfig(epochs=epochs)
    out = []
    for src, tgt, relabeled in (("coco", "mpii", "mpii_as_coco"), ("mpii", "coco", "coco_as_mpii")):
        where = runs / f"translate-{src}-to-{tgt}"
        kmap = keypoint_map(src, tgt, midpoints=True)
        copied = np.array([len(s) == 1 for s in kmap.sources])  # the joints the map copies (midpoints: not)
        train_preds = predictions(ckpt[f"single-{src}"], src, data[relabeled]["train"], common, where / "train")
        val_preds = predictions(ckpt[f"single-{src}"], src, data[relabeled]["val"], common, where / "val")
        scored, reports = {}, {}
        for kind, refine in (("learned", True), ("learned, fixed joints copied", False)):
            start = time.time()
            model, reports[kind] = fit_translator(train_preds, data[tgt]["train"], src, tgt,
                                                  dataclasses.replace(cfg, refine_covered=refine), midpoints=True)
            reports[kind]["fit_seconds"] = round(time.time() - start, 1)
            scored[kind] = score_results(translate_results(model, val_preds), data[tgt]["val"], tgt, copied)
        scored["fixed"] = score_results(convert_results(val_preds, kmap), data[tgt]["val"], tgt, copied)
        ref = direct[f"single-{tgt}"]
        ref_value = ref[tgt]
        # the target-trained model's own predictions, scored the same way (per joint group)
        ref_scored = score_results(predictions(ckpt[f"single-{tgt}"], tgt, data[tgt]["val"], common, where / "direct"),
                                   data[tgt]["val"], tgt, copied)
        for kind, m in scored.items():
            value = headline(m, tgt)
            row = {"translation": f"{src} -> {tgt}", "kind": kind, "metric": "PCKh" if tgt == "mpii" else "AP",
                   "value": value, "direct": ref_value,
                   "ratio": None if value is None or not ref_value else value / ref_value,
                   "pixel_error": m["pixel_error"], "direct_pixel_error": ref["metrics"][tgt].get("pixel_error"),
                   "pairs": reports[kind]["pairs"] if kind in reports else None,
                   "best_epoch": reports[kind]["best_epoch"] if kind in reports else None,
                   "fit_seconds": reports[kind]["fit_seconds"] if kind in reports else None}
            if "PCKh_copied" in m:
                # what a translator that keeps the copied joints could reach at best: every other joint right
                ceiling = (m["copied_weight"] * m["PCKh_copied"] + (1 - m["copied_weight"]) * 100.0) / 100.0
                row.update(PCKh_copied=m["PCKh_copied"], PCKh_rest=m["PCKh_rest"], copied_weight=m["copied_weight"],
                           direct_PCKh_copied=ref_scored["PCKh_copied"], direct_PCKh_rest=ref_scored["PCKh_rest"],
                           ceiling_ratio=ceiling / ref_value if ref_value else None)
            out.append(row)
    return out


def _f(v, digits: int = 3) -> str:
    return "--" if v is None else f"{v:.{digits}f}"


def tables(header: str, rows: list[dict], trans: list[dict]) -> tuple[str, list[str]]:
    lines = [header, "", "| model | COCO AP | MPII PCKh@0.5 | AIC AP | outputs | train min | steps |",
             "|---|---|---|---|---|---|---|"]
    outputs = {"single-coco": 17, "single-mpii": 16, "single-aic": 14, "union-merged": 23, "union-per-dataset-heads":
               23, "union-concatenated": 47, "convert-to-coco": 17}
    for r in rows:
        mp = None if r["mpii"] is None else 100 * r["mpii"]
        lines.append(f"| {r['arm']} | {_f(r['coco'])} | {_f(mp, 2)} | {_f(r['aic'])} | {outputs.get(r['arm'], '')} "
                     f"| {r['train_minutes']:.2f} | {r['steps']} |")
    by = {r["arm"]: r for r in rows}
    verdicts = []
    if "union-merged" in by:  # not in a --translation-only run
        union = by["union-merged"]
        diffs = {n: union[n] - by[f"single-{n}"][n] for n in SETS
                 if union[n] is not None and by[f"single-{n}"][n] is not None}
        within = all(d >= -0.01 for d in diffs.values()) and len(diffs) == len(SETS)
        ahead = sum(d >= 0.02 for d in diffs.values())
        verdicts.append(f"Union floor {'met' if within and ahead >= 2 else 'NOT met'}: merged union - single = "
                        + ", ".join(f"{n} {d:+.3f}" for n, d in diffs.items())
                        + f" (PCKh as a fraction); within 0.01 on all: {within}; ahead by >= 0.02 on {ahead} of 3.")
    lines += ["", "| translation | translator | metric | translated | model trained on the target's labels | ratio | "
              "px error vs true joints (translated / direct) | pairs |", "|---|---|---|---|---|---|---|---|"]
    for t in trans:
        scale = 100 if t["metric"] == "PCKh" else 1
        digits = 2 if t["metric"] == "PCKh" else 3
        value = None if t["value"] is None else scale * t["value"]
        ref = None if t["direct"] is None else scale * t["direct"]
        lines.append(f"| {t['translation']} | {t['kind']} | {t['metric']} | {_f(value, digits)} | {_f(ref, digits)} "
                     f"| {_f(t['ratio'])} | {_f(t['pixel_error'], 2)} / {_f(t['direct_pixel_error'], 2)} | "
                     f"{t['pairs'] or ''} |")
    groups = [t for t in trans if "PCKh_copied" in t]
    if groups:
        lines += ["", "PCKh by joint group on the MPII val set (copied: the 12 joints COCO-17 has -- shoulders, elbows,"
                  " wrists, hips, knees, ankles -- which the fixed map copies; rest: head top and upper neck; "
                  "pelvis and thorax are not scored). Ceiling: the ratio a translator keeping the copied joints "
                  "would reach with every other joint right.", "",
                  "| translation | translator | PCKh copied (translated / direct) | PCKh rest (translated / direct) | "
                  "copied share of the weight | ceiling ratio |", "|---|---|---|---|---|---|"]
        for t in groups:
            lines.append(f"| {t['translation']} | {t['kind']} | {_f(t['PCKh_copied'], 2)} / "
                         f"{_f(t['direct_PCKh_copied'], 2)} | {_f(t['PCKh_rest'], 2)} / {_f(t['direct_PCKh_rest'], 2)} "
                         f"| {_f(t['copied_weight'])} | {_f(t['ceiling_ratio'])} |")
    learned = [t for t in trans if t["translation"] == "coco -> mpii" and t["kind"].startswith("learned")]
    c2m = max(learned, key=lambda t: t["ratio"] or 0.0)
    ok = c2m["ratio"] is not None and c2m["ratio"] >= 0.95
    verdicts.append(f"Translation floor {'met' if ok else 'NOT met'}: coco -> mpii translated PCKh ({c2m['kind']}) is "
                    f"{_f(c2m['ratio'])} x the MPII-trained model's (floor 0.95).")
    lines += ["", *verdicts]
    return "\n".join(lines) + "\n", verdicts


def main(argv: list[str] | None = None) -> dict:
    import torch

    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.models.inference import native_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of each single-dataset model "
                                                                "(default 1200)")
    parser.add_argument("--union-steps", type=int, default=None,
                        help="optimizer steps of each multi-dataset model (default: the three single models' total, "
                             "3 x --steps; --union-steps STEPS compares model for model)")
    parser.add_argument("--train", type=int, default=800, help="training images per set")
    parser.add_argument("--val", type=int, default=150, help="val images per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "multidataset"))
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on CPUs with native bf16, else 32-true")
    parser.add_argument("--skip", nargs="*", default=[], choices=ARMS[4:],
                        help="extra rows to leave out (the singles and the merged union always run)")
    parser.add_argument("--reuse", action="store_true",
                        help="take the models of OUT/multidataset.json (a finished run) and redo the translation")
    parser.add_argument("--translation-only", action="store_true",
                        help="train only the single COCO and MPII models and run the translation table")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, model and steps")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model (repeatable)")
    args = parser.parse_args(argv)
    steps = args.steps or (QUICK["steps"] if args.quick else 1200)
    union_steps = args.union_steps or len(SETS) * steps
    n_train, n_val = (QUICK["train"], QUICK["val"]) if args.quick else (args.train, args.val)
    out = Path(args.out)
    data = make_data(out / "data", n_train, n_val, args.seed, args.workers)
    precision = args.precision or ("bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true")
    extra = [*(QUICK["overrides"] if args.quick else []), *args.override]
    common = [f"trainer.max_steps={steps}", f"trainer.max_epochs={NO_VAL_EPOCHS}",
              f"trainer.val_every_epochs={NO_VAL_EPOCHS}", f"trainer.seed={args.seed}",
              f"trainer.precision={precision}", "trainer.progress_bar=false", *extra]
    start = time.time()
    previous = out / "multidataset.json"
    if args.reuse and previous.is_file():  # the models of the last run with these settings: translation only
        rows = json.loads(previous.read_text())["rows"]
        if any(not Path(r["checkpoint"]).is_file() for r in rows):
            raise SystemExit(f"--reuse: {previous} names checkpoints that are gone")
    else:
        only = ["single-coco", "single-mpii"] if args.translation_only else [a for a in ARMS if a not in args.skip]
        rows = union_rows(data, common, steps, union_steps, out / "runs", only=only)
    trans = translation_rows(data, rows, common, out / "runs", epochs=2 if args.quick else None)
    header = (f"Synthetic people, three sets: coco (COCO-17, `default`), mpii (MPII-16, `sports`), aic (AIC-14, "
              f"`indoor`); {n_train} training and {n_val} val images each, seed {args.seed}. Recipe `{RECIPE}` from "
              f"scratch, {steps} optimizer steps each single-dataset model and {union_steps} each multi-dataset one "
              f"(equal total steps: one union against the three singles together), {precision}, last checkpoint, GT "
              "boxes, flip test."
              + (" Translation only (`--translation-only`): the single COCO and MPII models alone." if
                 args.translation_only else "")
              + (f" Overrides: `{' '.join(extra)}`." if extra else "")
              + f" Wall time {(time.time() - start) / 60:.1f} min.")
    text, verdicts = tables(header, rows, trans)
    print("\n" + text, flush=True)
    write_text_atomic(out / "multidataset.md", text)
    write_json_atomic(out / "multidataset.json", {"header": header, "rows": rows, "translation": trans,
                                                  "verdicts": verdicts}, indent=1)
    print(f"-> {out / 'multidataset.md'}, {out / 'multidataset.json'}")
    return {"rows": rows, "translation": trans, "verdicts": verdicts}


if __name__ == "__main__":
    main()
