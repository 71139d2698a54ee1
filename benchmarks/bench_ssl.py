"""Supervised vs semi-supervised (SAGE-Pose) fine-tuning, as a user runs the bundled recipes: same labeled data,
initialisation and seeds; one table per part, and a picture of both arms.

    python benchmarks/bench_ssl.py --part DATASET|real|synthetic|all   # DATASET: mirror-mouse, sleap-flies, sleap-pair,
        # horse10-brown, dlc-reaching, dlc-montblanc (benchmarks/ssl_datasets.py)
        [--labels 30 100] [--seeds 0 1] [--rows main|all] [--steps N] [--out DIR] [--root DIR] [--quick]
        [--style surveillance] [--init CKPT] [--override KEY=VALUE ...]

Real parts (issue 27): public labeled animal datasets (``benchmarks/ssl_datasets.py``: where each comes from, how
its labels are read, its unlabeled source; ``--part mouse`` is mirror-mouse). Each is split once: its labeled
frames sorted by file name, permuted with seed 0; the first ``--labels`` train, the next ~10 are the user's
validation frames (``VAL_FRAMES``), the rest test. Per seed:

* ``semi``: ``sagepose train custom_tiny_vit_ssl`` with the dataset's unlabeled source -- stage 0
  (``custom_tiny_vit``, in ``RUN/warm_start``), then stage 1 from it; ``best.ckpt`` picked on the val frames, the
  start included;
* ``semi_stage1``: stage 1's last checkpoint whatever the val frames chose -- what the unlabeled data did, before
  the selection that guards the user's val frames;
* ``supervised``: that stage 0 -- exactly ``sagepose train custom_tiny_vit`` on the same data (asserted by
  ``tests/test_warm_start.py``), its ``best.ckpt`` picked on the val frames;
* ``supervised_same_steps``: ``sagepose train custom_tiny_vit`` given as many optimizer steps as ``semi``
  (``trainer.max_steps``) -- the same-steps comparison of the two bundled recipes;
* ``supervised_more``: stage 1 without unlabeled data (``ssl.mode=off``) from the same start and picked the same
  way, also as many steps as ``semi`` -- what the unlabeled loss itself does.

Every arm's ``best.ckpt`` is tested on the test frames; metric ``pixel_error`` (lower is better). Floors (issue
27): semi / supervised_same_steps <= 1.0 on every dataset; <= 0.9 on mirror-mouse and two others. With ``--rows
all`` the ablations of ``semi`` (``no_mask``, ``no_priors``, ``no_fusion``, ``mse``, ``no_temporal``) start from
the same stage 0.

``synthetic`` -- domain shift, as ``sagepose demo --ssl`` runs it: both arms start from the ``sagepose demo``
model (5000 ``default``-style images; trained once in ``OUT/synthetic/pretrained`` and reused, or ``--init``) and
fine-tune on 300 other labeled ``default``-style images; 5000 unlabeled and 300 labeled test images of ``--style``
(``sagepose.demo.shift_data``); recipe ``demo_tiny_vit`` with the demo's ssl sizing
(``sagepose.demo.SSL_DEMO_OVERRIDES``), ``--steps`` (default 1500) optimizer steps each, tested on the last
checkpoint; metric COCO AP on the target test set; floor: semi >= supervised + 0.03.

Writes, under ``--out`` (default ``benchmarks/results/ssl``): ``{part}/`` run folders, ``ssl_{part}.md`` (the
table, also printed), ``ssl_{part}.json`` (every row) and ``ssl_{part}.png``: per-keypoint mean error of supervised
vs semi (bars: mean over seeds, whiskers: the seeds' range) above 4 test frames with each arm's predictions (first
seed) and the labels. A real part's table is ``ssl_{part}.*`` for 30 labeled frames, ``ssl_{part}-{n}.*`` for
another count. Runs that finished are reused (each is resumed), so an interrupted bench continues where it stopped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from sagepose.demo import SSL_DEMO_STEPS
from sagepose.errors import SagePoseError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from ssl_datasets import DATASETS, prepare, unlabeled_source  # noqa: E402  (beside this file)

ALIASES = {"mouse": "mirror-mouse"}
DEFAULT_LABELS = 30  # labeled training frames of a real part's main table
SPLIT_SEED, VAL_FRAMES = 0, 10  # the split's permutation; validation frames (fewer when the test set would be small)
ABLATIONS = {"no_mask": ["ssl.mask=False"], "no_priors": ["ssl.priors=False"], "no_fusion": ["ssl.fusion=False"],
             "mse": ["ssl.consistency=mse"], "no_temporal": ["ssl.lambda_temporal=0"],
             "no_style_mix": ["ssl.style_mix_prob=0"]}
VIDEO_ONLY = {"no_temporal"}  # rows only parts with a video source run
SHIFT_ONLY = {"no_style_mix"}  # rows only the synthetic part runs (the custom recipe does not mix styles)
SYNTHETIC_STEPS = 2 * SSL_DEMO_STEPS  # twice the demo's steps (~10 min a semi arm on 2 cores)
# --quick: a smoke run (the test's sizes); real parts: stage 0 from QUICK_STAGE0 instead of custom_tiny_vit
TINY_ARCH = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"
QUICK = {"steps": 3, "labeled": 8, "unlabeled": 8, "test": 4, "pretrain": 8, "every_n": 100,
         "overrides": [TINY_ARCH, "data.batch_size=4", "ssl.batch_size=4", "data.val_batch_size=8"]}
QUICK_STAGE0 = "optim: {lr: 2.0e-3, warmup_iters: 1, schedule: cosine}\ntrainer: {max_epochs: -1, max_steps: 3}\n"
NO_VAL_EPOCHS = 1_000_000  # synthetic: epochs unbounded (max_steps ends the run), no validation inside training
SUP_COLOR, SEMI_COLOR, GT_COLOR = (200, 120, 40), (40, 110, 230), (255, 255, 255)  # BGR


class UnequalStepsError(SagePoseError, RuntimeError):
    """The arms did not train the same number of optimizer steps: the comparison would not be fair."""


def real_split(labels_json: str, n_train: int, out: Path) -> dict:
    """A dataset's labeled frames (those with at least one labeled instance: a frame its labeler left empty, the
    animal out of view, is not one) -> ``out/{train,val,test}.json`` (same category): sorted by file name, permuted
    with :data:`SPLIT_SEED`; the first ``n_train`` train, the next ``min(VAL_FRAMES, rest // 3)`` val, the rest test.
    -> ``{"train", "val", "test": paths, "counts": {split: frames}, "frames": all}``."""
    from sagepose.data.coco import read_json
    from sagepose.fileio import write_json_atomic

    coco = read_json(labels_json)
    labeled = {a["image_id"] for a in coco["annotations"]}
    images = sorted((im for im in coco["images"] if im["id"] in labeled), key=lambda im: im["file_name"])
    rest = len(images) - n_train
    n_val = min(VAL_FRAMES, rest // 3)
    if n_val < 1:
        raise SagePoseError(f"{labels_json}: {len(images)} labeled frames; {n_train} for training leave too few "
                            "to validate and test on")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    picks = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    out.mkdir(parents=True, exist_ok=True)
    result = {"counts": {}, "frames": len(images)}
    for name, picked in picks.items():
        ims = [images[i] for i in sorted(picked)]
        ids = {im["id"] for im in ims}
        split = {**coco, "images": ims, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
        result[name] = str(out / f"{name}.json")
        result["counts"][name] = len(ims)
        write_json_atomic(result[name], split)
    return result


def real_plan(name: str, n_train: int, args, out: Path, extra: list[str]) -> dict:
    """-> {common, semi, test_json, image_root, metric, header, rows, name}: the overrides every arm shares (data,
    schema, precision, sizes) and the semi arm's unlabeled source."""
    import torch

    from sagepose.models.inference import native_bf16

    spec = DATASETS[name]
    info = prepare(name, root=args.root)
    data = out / "data"
    split = real_split(info["labels_json"], n_train, data)
    source = unlabeled_source(name, info, out.parent / "unlabeled", exclude_file_names=())
    precision = args.precision or ("bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true")
    common = [f"data.train_json={split['train']}", f"data.val_json={split['val']}", f"model.schema={split['train']}",
              f"data.image_root={info['image_root']}", f"trainer.precision={precision}", "trainer.progress_bar=False",
              *extra]
    semi = [f"ssl.unlabeled={source}", f"ssl.cache_dir={out.parent / 'unlabeled_cache'}"]
    if args.quick:
        (out / "quick_stage0.yaml").write_text(QUICK_STAGE0)
        semi += [f"ssl.warm_start={out / 'quick_stage0.yaml'}", f"ssl.every_n={QUICK['every_n']}"]
    if args.steps:
        common.append(f"trainer.max_steps={args.steps}")  # stage 1's (stage 0 keeps custom_tiny_vit's)
    rows = ["semi", *ABLATIONS] if args.rows == "all" else ["semi"]
    rows = [r for r in rows if r not in SHIFT_ONLY and (r not in VIDEO_ONLY or info["video"])]
    c = split["counts"]
    what = (f"its video `{Path(info['video']).name}`" if info["video"] else
            f"its own {info['frames']} frames, test frames included, labels unused (no video of it is public)")
    header = (f"{name} ({spec.description}; {spec.source} `{spec.path}`): {split['frames']} labeled frames sorted by "
              f"file name, permuted with seed {SPLIT_SEED}: {c['train']} train / {c['val']} val / {c['test']} test; "
              f"unlabeled: {what} (`{source}`). Supervised: `custom_tiny_vit` (stage 0); semi: `custom_tiny_vit_ssl` "
              f"(stage 0 + stage 1); supervised_more: stage 1 without unlabeled data; best.ckpt of each: the start "
              f"only where the result is worse on the val frames beyond chance (`ssl.keep_start=clearly_worse`: "
              f"paired sign-flip test over the frames, p < 0.05); {precision}. "
              f"Metric: pixel_error on the test frames (lower is better).")
    return dict(name=name, common=common, semi=semi, test_json=split["test"], image_root=info["image_root"],
                metric="pixel_error", header=header, rows=rows)


def synthetic_plan(args, data: Path, extra: list[str]) -> dict:
    """-> {arms: [(arm, recipe, overrides)], common, test_json, image_root, metric, header, steps}."""
    import torch

    from sagepose.demo import SSL_DEMO_OVERRIDES, pretrained_demo_model, score_checkpoint, shift_data
    from sagepose.models.inference import native_bf16

    quick = QUICK if args.quick else None
    steps = args.steps or (quick["steps"] if quick else SYNTHETIC_STEPS)
    precision = args.precision or ("bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true")
    common = [f"trainer.max_steps={steps}", f"trainer.max_epochs={NO_VAL_EPOCHS}",
              f"trainer.val_every_epochs={NO_VAL_EPOCHS}", "trainer.progress_bar=False",
              f"trainer.precision={precision}"]
    rows = ["semi", *ABLATIONS] if args.rows == "all" else ["semi"]
    n_lab, n_unl, n_test, n_pre = ((quick["labeled"], quick["unlabeled"], quick["test"], quick["pretrain"]) if quick
                                   else (args.labeled, args.unlabeled, args.test, args.pretrain))
    init = args.init or pretrained_demo_model(data.parent / "pretrained", num_train=n_pre, num_val=min(200, n_pre),
                                              workers=args.workers, overrides=extra)
    labeled, unlabeled, target = shift_data(data, n_lab, n_unl, n_test, args.style, workers=args.workers)
    common += [f"data.train_json={labeled}", f"model.init_checkpoint={init}", *SSL_DEMO_OVERRIDES]
    start_ap = score_checkpoint("demo_tiny_vit", [*common, *extra, f"data.val_json={target}"], init,
                                data.parent / "init")["AP"]
    arms = [("supervised", "demo_tiny_vit", ["ssl.mode=off"])]
    arms += [(r, "demo_tiny_vit", ["ssl.mode=semi", f"ssl.unlabeled={unlabeled}", *ABLATIONS.get(r, [])])
             for r in rows if r not in VIDEO_ONLY]
    header = (f"synthetic people: both arms start from `{init}` (the `sagepose demo` model: {n_pre} `default`-style "
              f"images; target AP {start_ap:.3f}) and fine-tune on {n_lab} other labeled `default`-style images; "
              f"{n_unl} unlabeled (boxes only) and {n_test} labeled test images of style `{args.style}`. Recipe "
              f"`demo_tiny_vit` + `{' '.join(SSL_DEMO_OVERRIDES)}`; {steps} optimizer steps each, {precision}. "
              f"Metric: COCO AP on the target test set (GT boxes, flip test); floor semi >= sup + 0.03.")
    return dict(arms=arms, common=common, test_json=target, image_root=None, metric="AP", header=header,
                steps=steps)


def run_real(plan: dict, seeds, out: Path) -> list[dict]:
    """Each seed: the semi run as a user runs it (stage 0 inside), its stage 0 as the supervised arm, stage 1
    without unlabeled data as supervised_more, the ablations from the same stage 0; every arm's best.ckpt tested
    on the test frames. Finished runs are reused (``fit(..., resume=True)``)."""
    from sagepose.config import load_config
    from sagepose.data.coco import read_json
    from sagepose.demo import score_checkpoint
    from sagepose.train.run import fit

    common, rows = plan["common"], []

    def train(arm: str, seed: int, overrides: list[str], recipe: str = "custom_tiny_vit_ssl") -> dict:
        run = out / f"{arm}-seed{seed}"
        return fit(load_config(recipe, [*common, *overrides, f"trainer.out_dir={run}", f"trainer.seed={seed}"]),
                   resume=True)

    def score(arm: str, seed: int, summary: dict, stage0: dict | None) -> None:
        ckpt = summary["best_checkpoint"]
        test_out = out / f"{arm}-seed{seed}" / "test"
        metrics = score_checkpoint("custom_tiny_vit", [*common, f"data.val_json={plan['test_json']}"], ckpt, test_out)
        steps = summary["steps"] + (stage0["steps"] if stage0 else 0)
        minutes = summary["train_minutes"] + (stage0["train_minutes"] if stage0 else 0)
        rows.append({"arm": arm, "seed": seed, "steps": steps, "train_minutes": round(minutes, 2),
                     "out": str(test_out), "checkpoint": ckpt,
                     "best_is_start": summary.get("best_is_start"), "val_start": summary.get("start_val_score"),
                     "val_gap": summary.get("val_gap"),
                     **{k: metrics.get(k) for k in ("pixel_error", "AP", "per_keypoint", "instances")}})
        print(f"{plan['name']} {arm} seed {seed}: pixel_error {metrics.get('pixel_error'):.3f} after {steps} steps "
              f"(best is the start: {summary.get('best_is_start')})", flush=True)

    for seed in seeds:
        semi = train("semi", seed, plan["semi"])
        stage0_dir = out / f"semi-seed{seed}" / "warm_start"
        stage0 = read_json(stage0_dir / "train_summary.json")
        score("supervised", seed, stage0, None)
        score("semi", seed, semi, stage0)
        # stage 1's own result, whatever the val frames chose: what the unlabeled data did on the test frames
        score("semi_stage1", seed, {**semi, "best_checkpoint": semi["last_checkpoint"], "best_is_start": None},
              stage0)
        start = [f"ssl.warm_start={stage0['last_checkpoint']}"]
        more = train("supervised_more", seed, ["ssl.mode=off", "ssl.unlabeled=[]", *start])
        score("supervised_more", seed, more, stage0)
        same = train("supervised_same_steps", seed, [f"trainer.max_steps={semi['steps'] + stage0['steps']}"],
                     recipe="custom_tiny_vit")
        score("supervised_same_steps", seed, same, None)
        for arm in plan["rows"][1:]:
            ablation = train(arm, seed, [*plan["semi"], *start, *ABLATIONS[arm]])
            score(arm, seed, ablation, stage0)
    check_equal_steps([r for r in rows if r["arm"] != "supervised"], next(r["steps"] for r in rows
                                                                        if r["arm"] == "semi"))
    return rows


def run_part(plan: dict, seeds, out: Path, extra: list[str]) -> list[dict]:
    """Synthetic: each arm x seed through :func:`sagepose.demo.compare_arms`; rows get ``wall_minutes``."""
    from sagepose.demo import compare_arms

    rows = []
    for arm, recipe, overrides in plan["arms"]:
        for seed in seeds:
            start = time.perf_counter()
            [row] = compare_arms(recipe, [*plan["common"], *extra], {arm: overrides}, [seed], out, plan["test_json"])
            row["wall_minutes"] = round((time.perf_counter() - start) / 60, 2)
            row["recipe"] = recipe
            rows.append(row)
            print(f"{arm} seed {seed}: {plan['metric']} {row.get(plan['metric'])} after {row['steps']} steps, "
                  f"{row['wall_minutes']} min", flush=True)
    check_equal_steps(rows, plan["steps"])
    return rows


def check_equal_steps(rows: list[dict], steps: int) -> None:
    wrong = [f"{r['arm']} seed {r['seed']}: {r['steps']}" for r in rows if r["steps"] != steps]
    if wrong:
        raise UnequalStepsError(f"every arm must train {steps} optimizer steps; {', '.join(wrong)} "
                                f"(stopped by trainer.max_time_minutes?): the comparison is void")


def table(plan: dict, rows: list[dict]) -> str:
    """Markdown: one row per arm, the metric's mean over seeds and each seed's value, vs supervised (and, for real
    parts, vs supervised_more: the same steps), times, steps; then the floor's verdict."""
    from sagepose.demo import mean_by_arm

    metric = plan["metric"]
    means = mean_by_arm(rows, keys=(metric, "train_minutes", "wall_minutes", "steps"))
    sup = means["supervised"].get(metric)
    same = means.get("supervised_same_steps", {}).get(metric)
    more = means.get("supervised_more", {}).get(metric)
    lower = metric == "pixel_error"
    cols = ["arm", f"{metric} (mean)", "per seed", "/ sup" if lower else "gain vs sup"]
    cols += ["/ sup same steps", "/ sup_more"] if same is not None else []
    cols += ["best = start (seeds)", "val: result - start (p)"] if same is not None else []
    wall = all(r.get("wall_minutes") is not None for r in rows)  # real parts: train minutes (stage 0 + 1) only
    cols += ["train min", *(["wall min"] if wall else []), "steps"]
    lines = [plan["header"], "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for arm, m in means.items():
        value = m.get(metric)
        arm_rows = [r for r in rows if r["arm"] == arm]
        cells = [arm, _fmt(value), ", ".join(f"{r['seed']}: {_fmt(r.get(metric))}" for r in arm_rows),
                 _relative(value, sup, lower, arm == "supervised")]
        if same is not None:
            cells.append(_relative(value, same, lower, arm.startswith("supervised")))
            cells.append(_relative(value, more, lower, arm.startswith("supervised")))
            kept = [r.get("best_is_start") for r in arm_rows]
            cells.append("--" if kept[0] is None else f"{sum(bool(k) for k in kept)} of {len(kept)}")
            gaps = [(r["seed"], r.get("val_gap")) for r in arm_rows]
            cells.append(", ".join(f"{seed}: {g['difference']:+.3g} ({g['p_worse']:.2g})" for seed, g in gaps if g)
                         or "--")
        cells += [f"{m['train_minutes']:.2f}", *([f"{m['wall_minutes']:.2f}"] if wall else []), str(int(m["steps"]))]
        lines.append("| " + " | ".join(cells) + " |")
    semi = means.get("semi", {}).get(metric)
    if semi is not None and sup is not None:
        if not lower:
            met = semi >= sup + 0.03
            lines += ["", f"Floor {'met' if met else 'NOT met'}: semi {_fmt(semi)} vs supervised {_fmt(sup)}."]
        else:
            base = same if same is not None else sup
            ratio = semi / base if base else float("nan")
            verdict = "<= 0.9: gains" if ratio <= 0.9 else "<= 1.0: does not lose" if ratio <= 1.0 else "> 1.0: LOSES"
            lines += ["", f"semi / supervised{'_same_steps' if same is not None else ''} = {ratio:.3f} ({verdict})."]
    return "\n".join(lines) + "\n"


def _relative(value, base, lower: bool, skip: bool) -> str:
    if value is None or base is None or skip:
        return "--"
    if lower:
        return f"{value / base:.3f}" if base > 0 else "--"
    return f"{value - base:+.3f}"


def _fmt(v) -> str:
    return "--" if v is None else f"{v:.3f}"


def per_keypoint(rows: list[dict], arm: str) -> dict[str, list[float]]:
    """{keypoint: [error of each seed's run]} of ``arm`` (from each run's metrics.json ``per_keypoint``)."""
    from sagepose.data.coco import read_json

    out: dict[str, list[float]] = {}
    for r in rows:
        if r["arm"] == arm:
            for name, err in read_json(Path(r["out"]) / "metrics.json")["per_keypoint"].items():
                if err is not None:
                    out.setdefault(name, []).append(float(err))
    return out


def error_bars(sup: dict[str, list[float]], semi: dict[str, list[float]], width: int) -> np.ndarray:
    """Horizontal bars, two per keypoint (supervised, semi): mean over seeds, a whisker over the seeds' range."""
    names = [n for n in sup if n in semi]
    row_h, label_w, top = 26, 170, 34
    h = top + row_h * len(names) + 30
    img = np.full((h, width, 3), 255, np.uint8)
    top_err = max([max(v) for v in (*sup.values(), *semi.values())] + [1e-6])
    scale = (width - label_w - 70) / top_err
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "per-keypoint mean error (px), mean over seeds; whisker: seeds' range", (8, 20), font, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    for arm, color, x in (("supervised", SUP_COLOR, width - 230), ("semi", SEMI_COLOR, width - 110)):
        cv2.rectangle(img, (x, 8), (x + 14, 20), color, -1)
        cv2.putText(img, arm, (x + 18, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, name in enumerate(names):
        y = top + i * row_h
        cv2.putText(img, name[:22], (8, y + 17), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for j, (errs, color) in enumerate(((sup[name], SUP_COLOR), (semi[name], SEMI_COLOR))):
            y0 = y + 3 + j * 11
            x1 = label_w + int(round(np.mean(errs) * scale))
            cv2.rectangle(img, (label_w, y0), (max(x1, label_w + 1), y0 + 9), color, -1)
            lo, hi = (label_w + int(round(min(errs) * scale)), label_w + int(round(max(errs) * scale)))
            cv2.line(img, (lo, y0 + 4), (hi, y0 + 4), (0, 0, 0), 1)
            cv2.putText(img, f"{np.mean(errs):.1f}", (max(x1, hi) + 4, y0 + 9), font, 0.35, (0, 0, 0), 1,
                        cv2.LINE_AA)
    axis_y = top + row_h * len(names) + 4
    cv2.line(img, (label_w, axis_y), (width - 70, axis_y), (0, 0, 0), 1)
    for t in np.linspace(0, top_err, 5):
        x = label_w + int(round(t * scale))
        cv2.line(img, (x, axis_y), (x, axis_y + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.0f}", (x - 6, axis_y + 18), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def frame_strip(plan: dict, rows: list[dict], schema, num: int, tile: int) -> np.ndarray:
    """Two rows of ``num`` test frames: supervised's and semi's predictions (first seed; COCO results with their
    per-joint scores, drawn with ``sagepose.viz.draw_poses``), the labels as white crosses on both."""
    from sagepose.data.coco import read_json
    from sagepose.image import read_image
    from sagepose.viz import draw_poses

    gt = read_json(plan["test_json"])
    root = Path(plan["image_root"] or Path(plan["test_json"]).parent)
    images = gt["images"][:num]
    labels: dict[int, list] = {}
    for a in gt["annotations"]:
        labels.setdefault(a["image_id"], []).append(np.asarray(a["keypoints"], np.float64).reshape(-1, 3))
    first = {}
    for r in rows:
        if r["arm"] in ("supervised", "semi") and r["arm"] not in first:
            first[r["arm"]] = read_json(Path(r["out"]) / "predictions.json")
    strip, tile_h = [], None
    for arm in ("supervised", "semi"):
        preds: dict[int, list] = {}
        for p in first[arm]:
            preds.setdefault(p["image_id"], []).append(np.asarray(p["keypoints"], np.float64).reshape(-1, 3))
        tiles = []
        for im in images:
            image = read_image(root / im["file_name"])
            kp = np.asarray(preds.get(im["id"], []), np.float64).reshape(-1, len(schema.keypoints), 3)
            vis = draw_poses(image, kp[..., :2], kp[..., 2], schema, score_thr=0.0)
            for lab in labels.get(im["id"], []):
                for x, y, v in lab:
                    if v > 0:
                        cv2.drawMarker(vis, (int(round(x)), int(round(y))), GT_COLOR, cv2.MARKER_CROSS, 7, 1)
            vis = around_labels(vis, labels.get(im["id"], []))
            tile_h = tile_h or round(tile * vis.shape[0] / vis.shape[1])  # the first frame's aspect for all
            s = min(tile / vis.shape[1], tile_h / vis.shape[0])
            vis = cv2.resize(vis, (round(vis.shape[1] * s), round(vis.shape[0] * s)), interpolation=cv2.INTER_AREA)
            canvas = np.full((tile_h, tile, 3), 40, np.uint8)
            canvas[:vis.shape[0], :vis.shape[1]] = vis
            cv2.putText(canvas, arm, (6, tile_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                        SUP_COLOR if arm == "supervised" else SEMI_COLOR, 2, cv2.LINE_AA)
            tiles.append(canvas)
        strip.append(np.hstack(tiles))
    return np.vstack(strip)


def around_labels(image: np.ndarray, labels: list[np.ndarray], margin: float = 0.5, least: int = 96) -> np.ndarray:
    """The part of ``image`` around its labeled joints (their box grown by ``margin`` of its longer side, at least
    ``least`` px a side): small animals in large frames (two flies in 1024 x 1024) stay visible in a tile."""
    points = [p[:2] for lab in labels for p in lab if p[2] > 0]
    if not points:
        return image
    pts = np.asarray(points)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    half = max(x1 - x0, y1 - y0, least) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
    right, bottom = int(min(cx + half, w)), int(min(cy + half, h))
    return image[top:bottom, left:right]


def draw_figure(plan: dict, rows: list[dict], path: Path, num_frames: int = 4, tile: int = 320) -> None:
    from sagepose.keypoints import load_schema

    schema_spec = next(o.split("=", 1)[1] for o in [*plan["common"], "model.schema=coco"]
                       if o.startswith("model.schema="))
    schema = load_schema(schema_spec)
    frames = frame_strip(plan, rows, schema, num_frames, tile)
    bars = error_bars(per_keypoint(rows, "supervised"), per_keypoint(rows, "semi"), frames.shape[1])
    if not cv2.imwrite(str(path), np.vstack([bars, frames])):
        raise SagePoseError(f"{path}: could not write the PNG")


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*DATASETS, *ALIASES, "real", "synthetic", "all"), default="all",
                        help="a dataset of benchmarks/ssl_datasets.py, real (all of them), synthetic, or all")
    parser.add_argument("--labels", type=int, nargs="+", default=[DEFAULT_LABELS],
                        help="real parts: labeled training frames")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", choices=("main", "all"), default="main", help="all: the ablation rows too")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"synthetic: every arm's steps (default {SYNTHETIC_STEPS}); real: stage 1's (default "
                             "custom_tiny_vit_ssl's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ssl"))
    parser.add_argument("--root", default=None, help="a real part's dataset folder (default: ssl_datasets.prepare's)")
    parser.add_argument("--style", default="surveillance", help="the synthetic target style")
    parser.add_argument("--labeled", type=int, default=300)
    parser.add_argument("--unlabeled", type=int, default=5000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--pretrain", type=int, default=5000,
                        help="synthetic: default-style images of the starting model (trained once in OUT/synthetic/"
                             "pretrained, then reused), unless --init")
    parser.add_argument("--init", default=None, help="synthetic: the checkpoint both arms start from")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on CPUs with native bf16, else 32-true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, model and steps")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every arm (repeatable)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    extra = [*(QUICK["overrides"] if args.quick else []), *args.override]
    out = Path(args.out)
    parts = {"all": [*DATASETS, "synthetic"], "real": list(DATASETS)}.get(args.part, [ALIASES.get(args.part,
                                                                                                 args.part)])
    results = {}
    for part in parts:
        if part == "synthetic":
            data = out / part / "data"
            data.mkdir(parents=True, exist_ok=True)
            plan = synthetic_plan(args, data, extra)
            results[part] = report(plan, run_part(plan, args.seeds, out / part, extra), out, part, extra)
            continue
        for n in args.labels:
            name = part if n == DEFAULT_LABELS else f"{part}-{n}"  # ssl_<part>.md: 30 labels; ssl_<part>-<n>.md
            plan = real_plan(part, n, args, out / part / f"n{n}", extra)
            results[name] = report(plan, run_real(plan, args.seeds, out / part / f"n{n}"), out, name, extra)
    return results


def report(plan: dict, rows: list[dict], out: Path, name: str, extra: list[str]) -> list[dict]:
    """The table (printed, ``ssl_{name}.md``), the rows (``ssl_{name}.json``) and the picture (``ssl_{name}.png``)."""
    from sagepose.fileio import write_json_atomic, write_text_atomic

    if extra:
        plan["header"] += f" Overrides on every arm: `{' '.join(extra)}`."
    text = table(plan, rows)
    print("\n" + text, flush=True)
    write_text_atomic(out / f"ssl_{name}.md", text)
    write_json_atomic(out / f"ssl_{name}.json", {"header": plan["header"], "rows": rows}, indent=1)
    draw_figure(plan, rows, out / f"ssl_{name}.png")
    print(f"-> {out / f'ssl_{name}.md'}, {out / f'ssl_{name}.json'}, {out / f'ssl_{name}.png'}")
    return rows


if __name__ == "__main__":
    main()
