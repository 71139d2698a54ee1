"""The out-of-the-box demos: synthesize -> train the tiny ViT on CPU -> evaluate -> render; and ``--ssl``, the
same model trained supervised and semi-supervised on one labeled set, scored on a shifted style (:func:`run_ssl_demo`).

Everything lands in one folder (default ``runs/demo/``):

    data/train.json, data/train/   synthetic training set (default style)
    data/val.json, data/val/       synthetic validation set (default style, other seed)
    checkpoints/{best,last}.ckpt   Lightning checkpoints; logs/ TensorBoard
    predictions.json               COCO results of the best checkpoint on val (GT boxes)
    metrics.json                   pycocotools keypoint AP/AR of predictions.json
    vis/*.png                      rendered skeletons on val images

A folder holding a previous demo is kept: the command picks ``OUT-2``, ``OUT-3``, ... (:func:`demo_folder`,
:func:`ssl_demo_folder`, which reuses the previous folder's trained stage-0 model), or with ``--overwrite`` removes
the previous demo's files and writes into ``OUT``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

DEMO_CONFIG = "demo_tiny_vit"
# `sagepose demo --ssl`: the demo recipe fine-tuned on a smaller labeled set, both arms the same steps; the mask
# warm-up, ramp and teacher average sized to the run's 750 steps (the SAGE-Pose defaults are for runs of tens of
# thousands); the student's probabilities unsharpened and a heavier consistency weight, as custom_tiny_vit_ssl; the
# teacher sharpened (teacher_tau 0.5, the SAGE-Pose default): unsharpened, the student learnt the teacher's
# flat maps on the target style and 37% of its people fell below MMPose's 0.2 keypoint-score cut (instance score 0)
SSL_DEMO_OVERRIDES = ["ssl.rampup_iters=300", "ssl.mask_warmup_iters=300", "ssl.teacher_ema=0.99",
                      "ssl.lambda_temporal=0", "ssl.batch_size=32", "ssl.teacher_tau=0.5", "ssl.prob_tau=1.0",
                      "ssl.lambda_u=10.0", "ssl.style_mix_prob=0.5"]
SSL_DEMO_STEPS = 750  # optimizer steps of each arm (benchmarks/bench_ssl.py's synthetic part: twice as many)
NO_VALIDATION = 1_000_000  # epochs: an arm is bounded by its steps and scored once, on its last checkpoint


def run_demo(out_dir: str | Path = "runs/demo", num_train: int = 5000, num_val: int = 200, seed: int = 0,
             workers: int = 2, overrides: list[str] | None = None, num_vis: int = 8) -> dict:
    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.data.synth import generate_dataset
    from sagepose.fileio import write_json_atomic
    from sagepose.models.inference import native_bf16
    from sagepose.train.run import fit, test

    out = Path(out_dir)
    start = time.time()
    data = out / "data"
    train_json = generate_dataset(data, num_train, seed=seed, split="train", workers=workers)
    val_json = generate_dataset(data, num_val, seed=seed + 10_000, split="val", workers=workers)
    print(f"synthesized {num_train} train / {num_val} val images in {time.time() - start:.0f}s -> {data}")
    precision = "bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true"  # ~1.4x faster steps
    cfg = load_config(resolve_config(DEMO_CONFIG), [
        f"data.train_json={train_json}", f"data.val_json={val_json}", f"trainer.out_dir={out}",
        f"trainer.seed={seed}", f"trainer.precision={precision}", *(overrides or [])])
    print(f"training {cfg.model.name} in {cfg.trainer.precision} on {torch.get_num_threads()} CPU threads")
    summary = fit(cfg)
    metrics = test(cfg, summary["best_checkpoint"], out_dir=out)
    render_val(cfg, summary["best_checkpoint"], val_json, out / "vis", num_vis)
    metrics["total_minutes"] = round((time.time() - start) / 60, 2)
    write_json_atomic(out / "metrics.json", metrics, indent=1)
    print(f"val AP {metrics['AP']:.3f} (AP50 {metrics['AP50']:.3f}, AR {metrics['AR']:.3f}) "
          f"in {metrics['total_minutes']} min -> {out}/metrics.json, {out}/predictions.json, {out}/vis/")
    return metrics


DEMO_OUTPUTS = ("data", "predictions.json", "metrics.json", "vis")  # besides the training run's (RUN_OUTPUTS)
SSL_DEMO_OUTPUTS = ("data", "init", "summary.json")  # besides the arms' folders ({arm}-seed{S}) and pretrained/


def finished_demo_checkpoint(out_dir: str | Path) -> str | None:
    """The best checkpoint of a :func:`run_demo` that finished in ``out_dir`` (its ``metrics.json`` names it), or
    None."""
    done = Path(out_dir) / "metrics.json"
    try:
        checkpoint = json.loads(done.read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return None
    return checkpoint if checkpoint and Path(checkpoint).is_file() else None


def demo_folder(out_dir: str | Path, overwrite: bool = False) -> tuple[Path, list[str]]:
    """Where ``sagepose demo`` writes: ``out_dir`` when empty or absent; with ``overwrite``, ``out_dir`` after
    removing a previous demo's files (:data:`DEMO_OUTPUTS` and the training run's); else the first free ``OUT-2``,
    ``OUT-3``, ... -> (folder, what was removed)."""
    from sagepose.fileio import fresh_output_dir, remove_outputs
    from sagepose.train.run import RUN_OUTPUTS

    folder, _ = fresh_output_dir(out_dir, overwrite)
    removed = remove_outputs(folder, (*DEMO_OUTPUTS, *RUN_OUTPUTS)) if overwrite and folder.is_dir() else []
    return folder, [p.name for p in removed]


def ssl_demo_folder(out_dir: str | Path, overwrite: bool = False,
                    init: str | None = None) -> tuple[Path, list[str], str | None]:
    """Where ``sagepose demo --ssl`` writes, and the checkpoint it starts from -> (folder, removed, init).

    Its stage 0 (the demo model, ``OUT/pretrained``: minutes of training) is reused on purpose, so ``out_dir`` is
    written into when it is absent, empty or holds nothing but that model. When it holds more (a finished or an
    interrupted comparison) the run goes to the first free ``OUT-2``, ``OUT-3``, ... and starts from ``OUT``'s
    finished stage-0 model (``init`` None: it is trained there when ``OUT`` has none). ``overwrite``: ``out_dir``
    itself, its comparison's files removed (:data:`SSL_DEMO_OUTPUTS`, the arms' folders) and a finished stage-0
    model kept (delete ``OUT/pretrained`` to train it again; an unfinished one is removed)."""
    from sagepose.fileio import fresh_output_dir, remove_outputs

    out = Path(out_dir)
    stage0 = finished_demo_checkpoint(out / "pretrained") if init is None else None
    others = [p for p in out.iterdir() if p.name != "pretrained" or not stage0] if out.is_dir() else []
    if overwrite:
        arms = [p for p in others if p.is_dir() and p.name.startswith(("supervised-seed", "semi-seed"))]
        removed = remove_outputs(out, [*SSL_DEMO_OUTPUTS, *(p.name for p in arms),
                                       *([] if stage0 or init is not None else ["pretrained"])])
        return out, [p.name for p in removed], init
    if not others:
        return out, [], init
    folder, _ = fresh_output_dir(out)
    return folder, [], init if init is not None else stage0


def render_val(cfg, checkpoint: str, val_json: str | Path, vis_dir: Path, num: int) -> None:
    """Predict on the first ``num`` val images with their GT boxes and save rendered skeletons."""
    import cv2

    from sagepose.api import load
    from sagepose.image import read_image
    from sagepose.viz import draw_poses

    model = load(cfg, checkpoint=checkpoint)
    gt = json.loads(Path(val_json).read_text())
    by_image: dict[int, list] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    vis_dir.mkdir(parents=True, exist_ok=True)
    for im in gt["images"][:num]:
        image = read_image(Path(val_json).parent / im["file_name"])
        boxes = np.asarray(by_image.get(im["id"], []), np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        vis = image
        if len(boxes):
            pred = model.predict(image, boxes)
            vis = draw_poses(image, pred.keypoints, pred.scores, model.schema, boxes=boxes)
        vis = cv2.resize(vis, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(vis_dir / f"{Path(im['file_name']).stem}.png"), vis)


def compare_arms(recipe: str, common: list[str], arms: dict[str, list[str]], seeds, out_dir: str | Path,
                 test_json: str | Path | None = None) -> list[dict]:
    """Train each arm (overrides on top of ``recipe`` + ``common``) once per seed and test its LAST checkpoint on
    ``test_json`` (default ``data.val_json``): every arm the same data, steps, initialisation and seed, and no
    checkpoint picked on the test set. -> one row per (arm, seed): its metrics (``AP`` where the schema has
    sigmas, ``pixel_error`` always), ``train_minutes``, ``steps``, ``out`` (the run folder)."""
    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.train.run import fit, test

    rows = []
    for name, extra in arms.items():
        for seed in seeds:
            run_out = Path(out_dir) / f"{name}-seed{seed}"
            cfg = load_config(resolve_config(recipe), [*common, f"trainer.out_dir={run_out}", f"trainer.seed={seed}",
                                                      *extra, *([f"data.val_json={test_json}"] if test_json else [])])
            summary = fit(cfg)
            metrics = test(cfg, summary["last_checkpoint"], out_dir=run_out)
            rows.append({"arm": name, "seed": seed, "train_minutes": summary["train_minutes"],
                         "steps": summary["steps"], "out": str(run_out), **metrics})
    return rows


def score_checkpoint(recipe: str, overrides: list[str], checkpoint: str | Path, out_dir: str | Path) -> dict:
    """Test ``checkpoint`` on the ``data.val_json`` of ``recipe`` + ``overrides`` (as :func:`compare_arms` scores an
    arm): -> its metrics, also in ``out_dir/metrics.json``."""
    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.train.run import test

    cfg = load_config(resolve_config(recipe), [*overrides, f"trainer.out_dir={out_dir}"])
    return test(cfg, str(checkpoint), out_dir=out_dir)


def mean_by_arm(rows: list[dict], keys=("AP", "pixel_error", "train_minutes")) -> dict[str, dict[str, float]]:
    """{arm: {key: mean over its seeds}} for the keys every row of the arm has."""
    arms: dict[str, list[dict]] = {}
    for r in rows:
        arms.setdefault(r["arm"], []).append(r)
    return {arm: {k: float(np.mean([r[k] for r in rs])) for k in keys if all(r.get(k) is not None for r in rs)}
            for arm, rs in arms.items()}


def pretrained_demo_model(out_dir: str | Path, num_train: int = 5000, num_val: int = 200, seed: int = 0,
                          workers: int = 2, overrides: list[str] | None = None) -> str:
    """Stage 0 of the semi-supervised demo and benchmark: the :func:`run_demo` model (its recipe and data sizes, the
    ``default`` style), trained in ``out_dir`` once; a later call finds ``out_dir/metrics.json`` and reuses the
    checkpoint it names. -> the best checkpoint's path. It stands in for the public pretrained weights
    (ViTPose / Sapiens on COCO) that a real fine-tuning starts from."""
    out = Path(out_dir)
    checkpoint = finished_demo_checkpoint(out)
    if checkpoint:
        print(f"reusing the pretrained demo model {checkpoint} (delete {out} to train it again)")
        return checkpoint
    print(f"stage 0: the demo model on {num_train} default-style images -> {out}")
    return run_demo(out, num_train=num_train, num_val=num_val, seed=seed, workers=workers, overrides=overrides,
                    num_vis=0)["checkpoint"]


def shift_data(data: Path, num_labeled: int, num_unlabeled: int, num_test: int, style: str, seed: int = 0,
               workers: int = 2) -> tuple[str, str, str]:
    """The domain-shift sets of the semi-supervised demo and benchmark, under ``data/``: ``labeled/`` (``default``
    style, seed ``seed + 40_000``: images the :func:`pretrained_demo_model` of the same seed never saw; its sets are
    seeds ``seed`` and ``seed + 10_000``), ``unlabeled/`` and ``target/`` (``style``, seeds ``seed + 20_000`` and
    ``seed + 30_000``). -> the three COCO jsons; the unlabeled one's boxes are the unlabeled instances."""
    from sagepose.data.synth import generate_dataset

    start = time.time()
    labeled = generate_dataset(data / "labeled", num_labeled, seed=seed + 40_000, split="train", workers=workers)
    unlabeled = generate_dataset(data / "unlabeled", num_unlabeled, seed=seed + 20_000, split="train", style=style,
                                 workers=workers)
    target = generate_dataset(data / "target", num_test, seed=seed + 30_000, split="val", style=style, workers=workers)
    print(f"synthesized {num_labeled} labeled (default) / {num_unlabeled} unlabeled ({style}) / {num_test} test "
          f"({style}) images in {time.time() - start:.0f} s -> {data}", flush=True)
    return str(labeled), str(unlabeled), str(target)


def run_ssl_demo(out_dir: str | Path = "runs/demo-ssl", num_labeled: int = 300, num_unlabeled: int = 5000,
                 num_test: int = 300, style: str = "surveillance", seed: int = 0, workers: int = 2,
                 steps: int = SSL_DEMO_STEPS, overrides: list[str] | None = None, init: str | None = None,
                 num_pretrain: int = 5000) -> dict:
    """Start from the demo model (``init``, or :func:`pretrained_demo_model` trained in ``OUT/pretrained``), then
    fine-tune it supervised and semi-supervised on a fresh labeled ``default``-style set (same labeled data, steps,
    initialisation and seed; the semi arm also sees an unlabeled ``style`` set) and score both -- and the starting
    model -- on a labeled ``style`` test set; print the APs and the gain. Files: ``OUT/data/``,
    ``OUT/{supervised,semi}-seed{S}/`` (checkpoints, metrics.json, predictions.json), ``OUT/init/metrics.json``,
    ``OUT/summary.json``. ``overrides`` apply to every stage."""
    from sagepose.fileio import write_json_atomic
    from sagepose.models.inference import native_bf16

    out = Path(out_dir)
    start = time.time()
    if init is None:
        init = pretrained_demo_model(out / "pretrained", num_train=num_pretrain, num_val=min(200, num_pretrain),
                                     seed=seed, workers=workers, overrides=overrides)
    labeled, unlabeled, target = shift_data(out / "data", num_labeled, num_unlabeled, num_test, style, seed, workers)
    precision = "bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true"  # ~1.4x faster steps
    common = [f"data.train_json={labeled}", f"data.val_json={target}", f"trainer.precision={precision}",
              f"model.init_checkpoint={init}", f"trainer.max_steps={steps}", f"trainer.max_epochs={NO_VALIDATION}",
              f"trainer.val_every_epochs={NO_VALIDATION}", *SSL_DEMO_OVERRIDES, *(overrides or [])]
    init_metrics = score_checkpoint(DEMO_CONFIG, common, init, out / "init")
    arms = {"supervised": ["ssl.mode=off"], "semi": ["ssl.mode=semi", f"ssl.unlabeled={unlabeled}"]}
    rows = compare_arms(DEMO_CONFIG, common, arms, [seed], out)
    by_arm = {r["arm"]: r for r in rows}
    sup, semi = by_arm["supervised"], by_arm["semi"]
    summary = {"style": style, "num_labeled": num_labeled, "num_unlabeled": num_unlabeled, "num_test": num_test,
               "seed": seed, "steps": sup["steps"], "init_checkpoint": str(init), "init_AP": init_metrics["AP"],
               "supervised_AP": sup["AP"], "semi_AP": semi["AP"], "gain": semi["AP"] - sup["AP"],
               "supervised_minutes": sup["train_minutes"], "semi_minutes": semi["train_minutes"],
               "total_minutes": round((time.time() - start) / 60, 2)}
    write_json_atomic(out / "summary.json", summary, indent=1)
    print(f"target-style ({style}) val AP: start {init_metrics['AP']:.3f}; supervised {sup['AP']:.3f}, "
          f"semi-supervised {semi['AP']:.3f}, gain {summary['gain']:+.3f} ({sup['steps']} steps each; "
          f"{sup['train_minutes']} / {semi['train_minutes']} min) in {summary['total_minutes']} min -> "
          f"{out}/summary.json")
    return summary
