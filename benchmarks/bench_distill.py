"""Distillation: a student taught by a semi-supervised teacher on the user's unlabeled video vs the same student on
the labels alone; same labeled data, student steps and seeds, both arms and the teacher in one table, with each
model's CPU latency in ONNX Runtime (2 threads, batch 1).

    python benchmarks/bench_distill.py [--part mirror-mouse] [--seeds 0 1] [--student custom_distill]
        [--override KEY=VALUE ...] [--out DIR] [--root DIR] [--threads 2]

``mirror-mouse`` (bench_ssl.py's split: 30 labeled train frames, 10 val, 50 test; the video unlabeled):

* ``teacher``: bench_ssl.py's semi arm -- ``sagepose train custom_tiny_vit_ssl`` (stage 0: ``custom_tiny_vit``, 1000
  steps; stage 1 with the video, 500), its best.ckpt;
* ``student_supervised``: ``sagepose train STUDENT ssl.mode=off`` -- the student recipe on the 30 labels alone,
  its steps (1000 for ``custom_distill``), best.ckpt on the val frames;
* ``student_distilled``: ``sagepose distill STUDENT --teacher TEACHER ssl.unlabeled=VIDEO`` -- the same student,
  labels, steps and seed, the teacher's distributions on the video's crops (and the labeled frames') beside the labels.

Every arm is tested on the test frames (pixel_error, lower is better). Floors (issue 30): student_distilled <= 1.1 x
teacher and <= 0.85 x student_supervised; the student >= 4x faster than the teacher. Latency: each best.ckpt exported
by ``sagepose export``'s code (float32, batch 1) and run in onnxruntime with ``--threads`` threads on random crops of
its input size; best and median of ``--repeats`` rounds of 50 calls (ms per call).

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
from bench_ssl import real_plan  # noqa: E402  (beside this file)
from machine import describe_machine  # noqa: E402

PARTS = ("mirror-mouse",)


def onnx_latency(checkpoint: str, out: Path, threads: int, repeats: int, calls: int = 50) -> dict:
    """``checkpoint`` -> ONNX (float32, batch 1) -> onnxruntime on ``threads`` threads: {best_ms, median_ms, params}."""
    import numpy as np
    import onnxruntime as ort

    import sagepose
    from sagepose.onnx_model import export_onnx

    model = sagepose.load(checkpoint=checkpoint, fuse=False)
    path = out / "model.onnx"
    export_onnx(model, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    w, h = model.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    for _ in range(10):
        session.run(None, {name: x})
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            session.run(None, {name: x})
        rounds.append((time.perf_counter() - start) * 1000.0 / calls)
    return {"best_ms": min(rounds), "median_ms": statistics.median(rounds),
            "params": sum(p.numel() for p in model.parameters()), "input_size": list(model.input_size)}


def run_mouse(plan: dict, seeds, student: str, extra: list[str], out: Path, threads: int, repeats: int) -> list[dict]:
    from sagepose.config import load_config
    from sagepose.data.coco import read_json
    from sagepose.demo import score_checkpoint
    from sagepose.train.run import fit

    common, rows = plan["common"], []

    def score(arm: str, seed: int, recipe: str, ckpt: str, steps: int, minutes: float, latency: dict) -> None:
        test_out = out / f"{arm}-seed{seed}" / "test"
        m = score_checkpoint(recipe, [*common, *(extra if recipe == student else []),
                                      f"data.val_json={plan['test_json']}"], ckpt, test_out)
        rows.append({"arm": arm, "seed": seed, "steps": steps, "train_minutes": round(minutes, 2), "checkpoint": ckpt,
                     "pixel_error": m["pixel_error"], **latency})
        print(f"mirror-mouse {arm} seed {seed}: {m['pixel_error']:.3f} px, onnxruntime {latency['best_ms']:.3f} ms",
              flush=True)

    for seed in seeds:
        run = out / f"teacher-seed{seed}"
        teacher = fit(load_config("custom_tiny_vit_ssl", [*common, *plan["semi"], f"trainer.out_dir={run}",
                                                          f"trainer.seed={seed}"]), resume=True)
        stage0 = read_json(run / "warm_start" / "train_summary.json")
        t_ckpt = teacher["best_checkpoint"]
        score("teacher", seed, "custom_tiny_vit", t_ckpt, teacher["steps"] + stage0["steps"],
              teacher["train_minutes"] + stage0["train_minutes"], onnx_latency(t_ckpt, run, threads, repeats))
        run = out / f"student_supervised-seed{seed}"
        sup = fit(load_config(student, [*common, *extra, "ssl.mode=off", "ssl.unlabeled=[]", f"trainer.out_dir={run}",
                                        f"trainer.seed={seed}"]), resume=True)
        score("student_supervised", seed, student, sup["best_checkpoint"], sup["steps"], sup["train_minutes"],
              onnx_latency(sup["best_checkpoint"], run, threads, repeats))
        run = out / f"student_distilled-seed{seed}"
        dist = fit(load_config(student, [*common, *extra, *plan["semi"], "ssl.mode=semi", f"distill.teacher={t_ckpt}",
                                         f"trainer.out_dir={run}", f"trainer.seed={seed}"]), resume=True)
        score("student_distilled", seed, student, dist["best_checkpoint"], dist["steps"], dist["train_minutes"],
              onnx_latency(dist["best_checkpoint"], run, threads, repeats))
    return rows


def table(header: str, rows: list[dict]) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mean = {a: statistics.mean(r["pixel_error"] for r in rows if r["arm"] == a) for a in arms}
    ms = {a: statistics.mean(r["best_ms"] for r in rows if r["arm"] == a) for a in arms}
    lines = [header, "", "| arm | pixel_error (per seed) | vs teacher | vs student_supervised | parameters | "
             "onnxruntime ms (best) | speed vs teacher |", "|---|---|---|---|---|---|---|"]
    for a in arms:
        seeds = ", ".join(f"{r['pixel_error']:.2f}" for r in rows if r["arm"] == a)
        params = next(r["params"] for r in rows if r["arm"] == a)
        sup = mean.get("student_supervised")
        lines.append(f"| {a} | {mean[a]:.2f} ({seeds}) | {mean[a] / mean['teacher']:.2f}x | "
                     f"{(mean[a] / sup) if sup else float('nan'):.2f}x | {params:,} | {ms[a]:.3f} | "
                     f"{ms['teacher'] / ms[a]:.2f}x |")
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
    args = p.parse_args(argv)
    args.quick, args.steps, args.rows = False, None, "main"
    out = Path(args.out)
    results = {}
    for part in (PARTS if args.part == "all" else (args.part,)):
        part_out = out / part
        plan = real_plan(part, 30, args, part_out, [])
        rows = run_mouse(plan, args.seeds, args.student, args.override, part_out, args.threads, args.repeats)
        header = (f"{part}: {plan['header']}\nTeacher: the semi arm above. Students: `{args.student}` "
                  f"{' '.join(args.override)}, supervised (`ssl.mode=off`) and distilled (`sagepose distill "
                  f"{args.student} --teacher` the teacher's best.ckpt, the same video). Latency: onnxruntime, "
                  f"{args.threads} threads, batch 1. {describe_machine()}")
        text = table(header, rows)
        print(text)
        (out / f"distill_{part}.md").write_text(text + "\n")
        (out / f"distill_{part}.json").write_text(json.dumps(rows, indent=1))
        results[part] = rows
    return results


if __name__ == "__main__":
    main()
