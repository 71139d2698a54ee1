"""Distillation: a student taught by a semi-supervised teacher on the user's unlabeled video vs the same student on
the labels alone; same labeled data, student steps and seeds, both arms and the teacher in one table, with each
model's CPU latency in ONNX Runtime (2 threads, batch 1).

    python benchmarks/bench_distill.py [--part mirror-mouse|synthetic|all] [--seeds 0 1] [--student custom_distill]
        [--override KEY=VALUE ...] [--tag -NAME] [--out DIR] [--root DIR] [--threads 2] [--init CKPT]

``mirror-mouse`` (bench_ssl.py's split: 30 labeled train frames, 10 val, 50 test; the video unlabeled):

* ``teacher``: bench_ssl.py's semi arm -- ``sagepose train custom_tiny_vit_ssl`` (stage 0: ``custom_tiny_vit``, 1000
  steps; stage 1 with the video, 500), its best.ckpt;
* ``student_supervised``: ``sagepose train STUDENT ssl.mode=off`` -- the student recipe on the 30 labels alone,
  its steps (1000 for ``custom_distill``), best.ckpt on the val frames;
* ``student_distilled``: ``sagepose distill STUDENT --teacher TEACHER ssl.unlabeled=VIDEO`` -- the same student,
  labels, steps and seed, the teacher's distributions on the video's crops (and the labeled frames') beside the labels.

Every arm is tested on the test frames (pixel_error, lower is better). Floors (issue 30): student_distilled <= 1.1 x
teacher and <= 0.85 x student_supervised; the student >= 4x faster than the teacher.

``synthetic`` (bench_ssl.py's domain shift: every arm starts from the ``sagepose demo`` model, ``--init``; 300 labeled
``default``-style images, 5000 unlabeled and 300 test images of ``surveillance`` style; recipe ``demo_tiny_vit`` with
the demo's ssl sizing, 1500 steps each, last checkpoint): ``teacher`` the semi arm, ``student_supervised`` the
supervised arm, ``student_distilled`` the same model, start, data and steps distilled from the teacher on the
unlabeled images (teacher view fixed: cached). Metric: COCO AP on the target test set. Floors: student_distilled >=
teacher - 0.02 and >= student_supervised + 0.03. The student is the teacher's architecture here: the part measures
what distillation carries across the shift, not speed. Latency: each best.ckpt exported
by ``sagepose export``'s code (float32, batch 1) and run in onnxruntime with ``--threads`` threads on random crops of
its input size, the arms in turn within each of ``--repeats`` rounds of 50 calls; the best round's ms per call (the
median beside it in the json), once training is over (a training process beside it would time the load).

Writes ``distill_{part}.md`` (the table, also printed) and ``distill_{part}.json`` under ``--out`` (default
``benchmarks/results/distill``), beside the run folders. Finished runs are reused (each is resumed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ssl import QUICK, real_plan, synthetic_plan  # noqa: E402  (beside this file)
from machine import describe_machine  # noqa: E402

PARTS = ("mirror-mouse", "synthetic")
# the teacher's view fixed, so its outputs are cached per crop (custom_distill's setting, given to demo_tiny_vit)
FIXED_TEACHER_VIEW = ["ssl.fusion=false", "ssl.weak.rotate=0", "ssl.weak.scale=[1, 1]", "ssl.weak.shift=0",
                      "ssl.weak.flip_prob=0", "ssl.weak.photometric_prob=0"]


def onnx_latency(checkpoints: dict[str, str], out: Path, threads: int, repeats: int, calls: int = 50) -> dict:
    """{arm: checkpoint} -> {arm: {best_ms, median_ms, params, input_size}}: each exported to ONNX (float32, batch 1)
    and run in onnxruntime on ``threads`` threads, the arms timed in turn within each of ``repeats`` rounds of
    ``calls`` calls (a load from other processes hits them alike)."""
    import numpy as np
    import onnxruntime as ort

    import sagepose
    from sagepose.onnx_model import export_onnx

    sessions = {}
    for arm, ckpt in checkpoints.items():
        model = sagepose.load(checkpoint=ckpt, fuse=False)
        path = out / f"{arm}.onnx"
        export_onnx(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        w, h = model.input_size
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        feed = {session.get_inputs()[0].name: x}
        for _ in range(10):
            session.run(None, feed)
        sessions[arm] = (session, feed, sum(p.numel() for p in model.parameters()), list(model.input_size))
    rounds: dict[str, list[float]] = {arm: [] for arm in sessions}
    for _ in range(repeats):
        for arm, (session, feed, _, _) in sessions.items():
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            rounds[arm].append((time.perf_counter() - start) * 1000.0 / calls)
    return {arm: {"best_ms": min(rounds[arm]), "median_ms": statistics.median(rounds[arm]), "params": params,
                  "input_size": size} for arm, (_, _, params, size) in sessions.items()}


def add_latency(rows: list[dict], out: Path, threads: int, repeats: int) -> None:
    """Each arm's latency (its first seed's checkpoint; the seeds share the architecture) into its rows."""
    first = {}
    for r in rows:
        first.setdefault(r["arm"], r["checkpoint"])
    latency = onnx_latency(first, out, threads, repeats)
    for r in rows:
        r.update(latency[r["arm"]])


def run_mouse(plan: dict, seeds, student: str, extra: list[str], out: Path, threads: int, repeats: int,
              tag: str = "") -> list[dict]:
    """Each seed: the teacher (bench_ssl's semi arm), the student supervised and distilled; each best.ckpt scored on
    the test frames; then the arms' latencies side by side."""
    from sagepose.config import load_config
    from sagepose.data.coco import read_json
    from sagepose.demo import score_checkpoint
    from sagepose.train.run import fit

    common, rows = plan["common"], []

    def score(arm: str, seed: int, recipe: str, ckpt: str, steps: int, minutes: float) -> None:
        test_out = out / f"{arm}{'' if arm == 'teacher' else tag}-seed{seed}" / "test"
        m = score_checkpoint(recipe, [*common, *(extra if recipe == student else []),
                                      f"data.val_json={plan['test_json']}"], ckpt, test_out)
        rows.append({"arm": arm, "seed": seed, "steps": steps, "train_minutes": round(minutes, 2), "checkpoint": ckpt,
                     "pixel_error": m["pixel_error"]})
        print(f"mirror-mouse {arm} seed {seed}: {m['pixel_error']:.3f} px", flush=True)

    for seed in seeds:
        run = out / f"teacher-seed{seed}"
        teacher = fit(load_config("custom_tiny_vit_ssl", [*common, *plan["semi"], f"trainer.out_dir={run}",
                                                          f"trainer.seed={seed}"]), resume=True)
        stage0 = read_json(run / "warm_start" / "train_summary.json")
        t_ckpt = teacher["best_checkpoint"]
        score("teacher", seed, "custom_tiny_vit", t_ckpt, teacher["steps"] + stage0["steps"],
              teacher["train_minutes"] + stage0["train_minutes"])
        run = out / f"student_supervised{tag}-seed{seed}"
        sup = fit(load_config(student, [*common, *extra, "ssl.mode=off", "ssl.unlabeled=[]", f"trainer.out_dir={run}",
                                        f"trainer.seed={seed}"]), resume=True)
        score("student_supervised", seed, student, sup["best_checkpoint"], sup["steps"], sup["train_minutes"])
        run = out / f"student_distilled{tag}-seed{seed}"
        dist = fit(load_config(student, [*common, *extra, *plan["semi"], "ssl.mode=semi", f"distill.teacher={t_ckpt}",
                                         f"trainer.out_dir={run}", f"trainer.seed={seed}"]), resume=True)
        score("student_distilled", seed, student, dist["best_checkpoint"], dist["steps"], dist["train_minutes"])
    add_latency(rows, out, threads, repeats)
    return rows


def run_synthetic(plan: dict, seeds, out: Path, threads: int, repeats: int, extra: list[str]) -> list[dict]:
    """bench_ssl's synthetic arms from the demo model: ``teacher`` its semi arm, ``student_supervised`` its supervised
    arm, ``student_distilled`` the same recipe, init and steps distilled from the teacher's last checkpoint on the
    unlabeled target-style images; each scored on its last checkpoint (COCO AP on the target test set)."""
    from sagepose.config import load_config
    from sagepose.train.run import fit, test

    arms = {arm: (recipe, overrides) for arm, recipe, overrides in plan["arms"]}
    unlabeled = next(o for o in arms["semi"][1] if o.startswith("ssl.unlabeled="))
    rows = []
    for seed in seeds:
        teacher_ckpt = None
        for arm, (recipe, overrides) in (("teacher", arms["semi"]), ("student_supervised", arms["supervised"]),
                                         ("student_distilled", arms["supervised"])):
            if arm == "student_distilled":
                overrides = ["ssl.mode=semi", unlabeled, *FIXED_TEACHER_VIEW, f"distill.teacher={teacher_ckpt}"]
            run = out / f"{arm}-seed{seed}"
            cfg = load_config(recipe, [*plan["common"], *extra, f"trainer.out_dir={run}", f"trainer.seed={seed}",
                                       *overrides, f"data.val_json={plan['test_json']}"])
            summary = fit(cfg, resume=True)
            ckpt = summary["last_checkpoint"]
            teacher_ckpt = teacher_ckpt or ckpt
            m = test(cfg, ckpt, out_dir=run)
            rows.append({"arm": arm, "seed": seed, "steps": summary["steps"], "train_minutes": summary["train_minutes"],
                         "checkpoint": ckpt, "AP": m["AP"]})
            print(f"synthetic {arm} seed {seed}: AP {m['AP']:.3f}", flush=True)
    add_latency(rows, out, threads, repeats)
    return rows


def table(header: str, rows: list[dict]) -> str:
    """Mean over seeds per arm, against the teacher and the supervised student; pixel error as a ratio (lower is
    better), AP as a difference (higher is better)."""
    metric = "pixel_error" if "pixel_error" in rows[0] else "AP"
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mean = {a: statistics.mean(r[metric] for r in rows if r["arm"] == a) for a in arms}
    ms = {a: statistics.mean(r["best_ms"] for r in rows if r["arm"] == a) for a in arms}

    def vs(a: str, b: str) -> str:
        if b not in mean:
            return "-"
        return f"{mean[a] / mean[b]:.2f}x" if metric == "pixel_error" else f"{mean[a] - mean[b]:+.3f}"

    lines = [header, "", f"| arm | {metric} (per seed) | vs teacher | vs student_supervised | parameters | "
             "onnxruntime ms (best) | speed vs teacher |", "|---|---|---|---|---|---|---|"]
    for a in arms:
        seeds = ", ".join(f"{r[metric]:.3f}" for r in rows if r["arm"] == a)
        params = next(r["params"] for r in rows if r["arm"] == a)
        lines.append(f"| {a} | {mean[a]:.3f} ({seeds}) | {vs(a, 'teacher')} | {vs(a, 'student_supervised')} | "
                     f"{params:,} | {ms[a]:.3f} | {ms['teacher'] / ms[a]:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=[*PARTS, "all"], default="mirror-mouse")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--student", default="custom_distill", help="the student recipe (distilled and supervised arms)")
    p.add_argument("--override", nargs="*", default=[], help="KEY=VALUE for the student arms")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distill"))
    p.add_argument("--root", default=None, help="where the datasets are (benchmarks/ssl_datasets.py)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default=None)
    p.add_argument("--init", default=None, help="synthetic: the checkpoint every arm starts from (default: the "
                                                "sagepose demo model, trained once in OUT/synthetic/pretrained)")
    p.add_argument("--tag", default="", help="mirror-mouse: a suffix for another student's run folders and table "
                                              "(e.g. --tag=-rtmpose-t); the teacher is shared")
    p.add_argument("--quick", action="store_true", help="synthetic: a smoke run (tiny sizes, model and steps)")
    args = p.parse_args(argv)
    args.steps = QUICK["steps"] if args.quick else None
    args.rows = "main"
    if args.quick:
        args.repeats = 1
    out = Path(args.out)
    results = {}
    for part in (PARTS if args.part == "all" else (args.part,)):
        part_out = out / part
        if part == "mirror-mouse":
            plan = real_plan(part, 30, args, part_out, [])
            rows = run_mouse(plan, args.seeds, args.student, args.override, part_out, args.threads, args.repeats,
                             args.tag)
            how = (f"Teacher: the semi arm above. Students: `{args.student}` {' '.join(args.override)}, supervised "
                   f"(`ssl.mode=off`) and distilled (`sagepose distill {args.student} --teacher` the teacher's "
                   "best.ckpt, the same video).")
        else:
            data = part_out / "data"
            data.mkdir(parents=True, exist_ok=True)
            ns = argparse.Namespace(**vars(args), labeled=300, unlabeled=5000, test=300, pretrain=5000,
                                    workers=2, style="surveillance")
            extra = list(QUICK["overrides"]) if args.quick else []
            plan = synthetic_plan(ns, data, extra)
            rows = run_synthetic(plan, args.seeds, part_out, args.threads, args.repeats, extra)
            how = ("Teacher: the semi arm; students: the same model from the same start, supervised (the supervised "
                   "arm) and distilled from the teacher's last checkpoint on the unlabeled target images "
                   f"(`distill.teacher`, `{' '.join(FIXED_TEACHER_VIEW)}`), the same steps.")
        header = (f"{part}: {plan['header']}\n{how} Latency: onnxruntime, {args.threads} threads, batch 1. "
                  f"{describe_machine()}")
        text = table(header, rows)
        print(text)
        (out / f"distill_{part}{args.tag}.md").write_text(text + "\n")
        (out / f"distill_{part}{args.tag}.json").write_text(json.dumps(rows, indent=1))
        results[part] = rows
    return results


if __name__ == "__main__":
    main()
