"""Supervised vs semi-supervised (SAGE-Pose) fine-tuning: same labeled data, optimizer steps, initialisation and
seeds; one table per part, and a picture of both arms.

    python benchmarks/bench_ssl.py --part mouse|synthetic|all [--seeds 0 1] [--rows main|all] [--steps N]
        [--out DIR] [--mouse-root DIR] [--style surveillance] [--init CKPT] [--quick] [--override KEY=VALUE ...]

Parts (issue 12, section 4; the floors are the issue's):

* ``mouse`` -- real animal video: lightning-pose's mirror-mouse (17 keypoints, 90 labeled frames) imported with
  ``sagepose.data.dlc.csv_to_coco``; a fixed split (the frames sorted by file name, a permutation with seed 0: the
  first 30 train, the other 60 test); unlabeled source the 994-frame ``videos/test_vid.mp4`` (every frame).
  Supervised arm ``custom_tiny_vit``, semi arms ``custom_tiny_vit_ssl``. Metric ``pixel_error`` on the 60 test
  frames (lower is better); floor: semi / supervised <= 0.9.
* ``synthetic`` -- domain shift, as ``sagepose demo --ssl`` runs it: both arms start from the ``sagepose demo``
  model (5000 ``default``-style images; trained once in ``OUT/synthetic/pretrained`` and reused, or ``--init``), the
  stand-in for public pretrained weights, and fine-tune on 300 other labeled ``default``-style images; 5000
  unlabeled and 300 labeled test images of ``--style`` (``sagepose.demo.shift_data``); recipe ``demo_tiny_vit``
  with the demo's ssl sizing (``sagepose.demo.SSL_DEMO_OVERRIDES``); the unlabeled json's boxes are the unlabeled
  instances. Metric COCO AP on the target test set (the starting model's is in the header); floor: semi >=
  supervised + 0.03.

Rows: ``supervised``, ``semi`` (all parts on) and, with ``--rows all``, the ablations ``no_mask``, ``no_priors``,
``no_fusion``, ``mse`` (consistency on logits instead of JS), ``no_temporal`` (mouse only: the synthetic set has
no video) and ``no_style_mix`` (synthetic only: labeled crops not given the unlabeled crops' look). Default steps:
mouse 900, synthetic 1500 (twice the demo's 750). Every arm trains exactly ``--steps`` optimizer steps
(``trainer.max_steps``, epochs unbounded; the cosine schedule is sized by ``trainer.estimated_stepping_batches``,
i.e. by those steps) and is tested on its last checkpoint by ``sagepose.demo.compare_arms``; no validation runs
inside training. A run whose step count differs from the others stops the bench with an error.

Writes, under ``--out`` (default ``benchmarks/results/ssl``): ``{part}/`` run folders (checkpoints, metrics.json,
predictions.json), ``ssl_{part}.md`` (the table, also printed), ``ssl_{part}.json`` (every row) and
``ssl_{part}.png``: per-keypoint mean error of supervised vs semi (bars: mean over seeds, whiskers: the seeds'
range) above 4 test frames with each arm's predictions (first seed) and the labels.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from sagepose.demo import SSL_DEMO_STEPS
from sagepose.errors import SagePoseError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MOUSE_ROOT = REPO.parent / "shared" / "realdata" / "mirror-mouse"
MOUSE_TRAIN, MOUSE_SPLIT_SEED = 30, 0
ABLATIONS = {"no_mask": ["ssl.mask=False"], "no_priors": ["ssl.priors=False"], "no_fusion": ["ssl.fusion=False"],
             "mse": ["ssl.consistency=mse"], "no_temporal": ["ssl.lambda_temporal=0"],
             "no_style_mix": ["ssl.style_mix_prob=0"]}
VIDEO_ONLY = {"no_temporal"}  # rows only the mouse part runs (its unlabeled source is a video)
SHIFT_ONLY = {"no_style_mix"}  # rows only the synthetic part runs (the mouse recipe does not mix styles)
# the mouse: ~10 min for the semi arm on 2 cores; the synthetic shift: twice the demo's steps (~10 min a semi arm)
DEFAULT_STEPS = {"mouse": 900, "synthetic": 2 * SSL_DEMO_STEPS}
# --quick: a smoke run (the test's sizes)
TINY_ARCH = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"
QUICK = {"steps": 3, "labeled": 8, "unlabeled": 8, "test": 4, "pretrain": 8, "every_n": 100,
         "overrides": [TINY_ARCH, "data.batch_size=4", "ssl.batch_size=4", "data.val_batch_size=8"]}
NO_VAL_EPOCHS = 1_000_000  # epochs unbounded (max_steps ends the run) and no validation inside training
SUP_COLOR, SEMI_COLOR, GT_COLOR = (200, 120, 40), (40, 110, 230), (255, 255, 255)  # BGR


class UnequalStepsError(SagePoseError, RuntimeError):
    """The arms did not train the same number of optimizer steps: the comparison would not be fair."""


# The mouse's body in each mirror view (the CSV has no skeleton): nose and tail base on the body axis, the front paws
# hang from the nose end, the hind paws from the tail base; the obstacle points stay unconnected. The structural
# priors need it.
MOUSE_SKELETON = ",".join(f"{a}_{v}-{b}_{v}" for v in ("top", "bot") for a, b in (
    ("nose", "tailBase"), ("tailBase", "tailMid"), ("nose", "paw2LF"), ("nose", "paw3RF"), ("tailBase", "paw1LH"),
    ("tailBase", "paw4RH")))


def mouse_split(root: Path, out: Path) -> tuple[str, str, int]:
    """mirror-mouse's CollectedData.csv -> ``out/mouse_train.json`` (30 frames), ``out/mouse_test.json`` (the
    rest), both with the import's category; -> (train json, test json, number of frames)."""
    from sagepose.data.dlc import csv_to_coco
    from sagepose.fileio import write_json_atomic

    csv = root / "CollectedData.csv"
    video = root / "videos" / "test_vid.mp4"
    for path in (csv, video):
        if not path.is_file():
            raise SagePoseError(f"{path}: not found; the mouse part needs lightning-pose's mirror-mouse example "
                                f"(--mouse-root, default {DEFAULT_MOUSE_ROOT})")
    coco = csv_to_coco(csv, image_root=root, skeleton=MOUSE_SKELETON)
    images = sorted(coco["images"], key=lambda im: im["file_name"])
    if len(images) <= MOUSE_TRAIN:
        raise SagePoseError(f"{csv}: {len(images)} labeled frames; the split needs more than {MOUSE_TRAIN}")
    order = np.random.default_rng(MOUSE_SPLIT_SEED).permutation(len(images))
    paths = []
    for name, picked in (("train", order[:MOUSE_TRAIN]), ("test", order[MOUSE_TRAIN:])):
        ims = [images[i] for i in sorted(picked)]
        ids = {im["id"] for im in ims}
        split = {**coco, "images": ims, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
        paths.append(str(out / f"mouse_{name}.json"))
        write_json_atomic(paths[-1], split)
    return paths[0], paths[1], len(images)


def part_plan(part: str, args, data: Path, extra: list[str]) -> dict:
    """-> {arms: [(arm, recipe, overrides)], common, test_json, image_root, metric, header}."""
    from sagepose.demo import SSL_DEMO_OVERRIDES, native_bf16_cpu

    quick = QUICK if args.quick else None
    steps = args.steps or (quick["steps"] if quick else DEFAULT_STEPS[part])
    precision = args.precision or ("bf16-mixed" if native_bf16_cpu() else "32-true")
    common = [f"trainer.max_steps={steps}", f"trainer.max_epochs={NO_VAL_EPOCHS}",
              f"trainer.val_every_epochs={NO_VAL_EPOCHS}", "trainer.progress_bar=False",
              f"trainer.precision={precision}"]
    rows = ["semi", *ABLATIONS] if args.rows == "all" else ["semi"]
    if part == "mouse":
        root = Path(args.mouse_root).resolve()
        train_json, test_json, frames = mouse_split(root, data)
        common += [f"data.train_json={train_json}", f"model.schema={train_json}", f"data.image_root={root}"]
        semi = ["ssl.mode=semi", f"ssl.unlabeled={root / 'videos' / 'test_vid.mp4'}",
                f"ssl.every_n={quick['every_n'] if quick else 1}", f"ssl.cache_dir={data / 'unlabeled_cache'}"]
        arms = [("supervised", "custom_tiny_vit", [])]
        arms += [(r, "custom_tiny_vit_ssl", semi + ABLATIONS.get(r, [])) for r in rows if r not in SHIFT_ONLY]
        header = (f"mirror-mouse ({root}): {frames} labeled frames sorted by file name, permuted with seed "
                  f"{MOUSE_SPLIT_SEED}: {MOUSE_TRAIN} train / {frames - MOUSE_TRAIN} test (one COCO category); "
                  f"unlabeled: videos/test_vid.mp4, every {quick['every_n'] if quick else 1} frame(s). "
                  f"Supervised `custom_tiny_vit`, semi `custom_tiny_vit_ssl`; {steps} optimizer steps each, "
                  f"{precision}. Metric: pixel_error on the test frames (lower is better); floor semi / sup <= 0.9.")
        return dict(arms=arms, common=common, test_json=test_json, image_root=str(root), metric="pixel_error",
                    header=header, steps=steps)
    from sagepose.demo import pretrained_demo_model, score_checkpoint, shift_data

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


def run_part(plan: dict, seeds, out: Path, extra: list[str]) -> list[dict]:
    """Each arm x seed through :func:`sagepose.demo.compare_arms`; rows get ``wall_minutes`` (train + test)."""
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
    """Markdown: one row per arm, the metric's mean over seeds and each seed's value, vs supervised, times, steps."""
    from sagepose.demo import mean_by_arm

    metric = plan["metric"]
    means = mean_by_arm(rows, keys=(metric, "train_minutes", "wall_minutes", "steps"))
    sup = means["supervised"].get(metric)
    versus = "semi / sup" if metric == "pixel_error" else "gain vs sup"
    lines = [plan["header"], "",
             f"| arm | {metric} (mean) | per seed | {versus} | train min | wall min | steps |",
             "|---|---|---|---|---|---|---|"]
    for arm, m in means.items():
        value = m.get(metric)
        seeds = ", ".join(f"{r['seed']}: {_fmt(r.get(metric))}" for r in rows if r["arm"] == arm)
        if value is None or sup is None or arm == "supervised":
            rel = "--"
        elif metric == "pixel_error":
            rel = f"{value / sup:.3f}" if sup > 0 else "--"
        else:
            rel = f"{value - sup:+.3f}"
        lines.append(f"| {arm} | {_fmt(value)} | {seeds} | {rel} | {m['train_minutes']:.2f} | "
                     f"{m['wall_minutes']:.2f} | {int(m['steps'])} |")
    semi = means.get("semi", {}).get(metric)
    if semi is not None and sup is not None:
        met = semi <= 0.9 * sup if metric == "pixel_error" else semi >= sup + 0.03
        lines += ["", f"Floor {'met' if met else 'NOT met'}: semi {_fmt(semi)} vs supervised {_fmt(sup)}."]
    return "\n".join(lines) + "\n"


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
    from sagepose.fileio import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("mouse", "synthetic", "all"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", choices=("main", "all"), default="main", help="all: the ablation rows too")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps of every arm (default {DEFAULT_STEPS}; --quick {QUICK['steps']})")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ssl"))
    parser.add_argument("--mouse-root", default=str(DEFAULT_MOUSE_ROOT))
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
    results = {}
    for part in (("mouse", "synthetic") if args.part == "all" else (args.part,)):
        data = out / part / "data"
        data.mkdir(parents=True, exist_ok=True)
        plan = part_plan(part, args, data, extra)
        rows = run_part(plan, args.seeds, out / part, extra)
        if extra:
            plan["header"] += f" Overrides on every arm: `{' '.join(extra)}`."
        text = table(plan, rows)
        print("\n" + text, flush=True)
        write_text_atomic(out / f"ssl_{part}.md", text)
        write_json_atomic(out / f"ssl_{part}.json", {"header": plan["header"], "rows": rows}, indent=1)
        draw_figure(plan, rows, out / f"ssl_{part}.png")
        print(f"-> {out / f'ssl_{part}.md'}, {out / f'ssl_{part}.json'}, {out / f'ssl_{part}.png'}")
        results[part] = rows
    return results


if __name__ == "__main__":
    main()
