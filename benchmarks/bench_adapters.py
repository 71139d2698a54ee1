"""What adapters cost in accuracy: low-rank adapters (``model.lora``) vs full fine-tuning, supervised and
semi-supervised, on the project's two CPU-sized fine-tuning experiments; same data, steps, seeds and initialisation.

    python benchmarks/bench_adapters.py [--part mirror-mouse|synthetic|all] [--seeds 0 1] [--rank 16] [--alpha 32]
        [--out DIR] [--init CKPT] [--quick]

Both parts start from the same pretrained model, the ``sagepose demo`` model (the tiny hybrid ViT trained on 5000
``default``-style synthetic people; trained once in ``OUT/pretrained`` and reused, or ``--init``): it stands in for
the public pretrained weights an adapter run starts from. Arms, each seed:

* ``full``: every parameter trains (as ``benchmarks/bench_ssl.py`` runs the two parts);
* ``adapters``: ``model.lora.rank=RANK model.lora.alpha=ALPHA`` on the backbone's ``qkv``, ``proj`` and ``mlp``
  layers, the rest of the backbone frozen (the tiny ViT's conv stem included), the head trained in full
  (``model.lora.train_blocks=0``);
* ``adapters_last3`` (``--modes``): the same with the last 3 of the 4 blocks trained fully (``train_blocks=3``).

``mirror-mouse`` (bench_ssl's split: 30 labeled train frames, 10 val, 50 test; its video unlabeled): ``supervised``
is ``custom_tiny_vit`` with ``model.init_checkpoint`` the demo model (a new 17-keypoint head), 1500 steps;
``semi`` is ``custom_tiny_vit_ssl`` from the same init (stage 0, 1000 steps, then stage 1, 500), its best.ckpt as a
user gets it (the start only where stage 1 is clearly worse on the val frames); ``semi_stage1`` stage 1's last
checkpoint. Metric: pixel error on the test frames.

``synthetic`` (bench_ssl's domain shift: 300 labeled ``default``-style images, 5000 unlabeled and 300 test images
of ``surveillance`` style; recipe ``demo_tiny_vit`` with the demo's ssl sizing): ``supervised`` and ``semi``, 1500
steps each, scored on the last checkpoint. Metric: COCO AP on the target test set.

Writes ``adapters_{part}.md`` (the table, also printed) and ``adapters_{part}.json`` (every row) under ``--out``
(default ``benchmarks/results/adapters``), beside the run folders. Finished runs are reused (each is resumed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ssl import QUICK, real_plan, synthetic_plan  # noqa: E402  (beside this file)

PARTS = ("mirror-mouse", "synthetic")
SEMI_STEPS = 1500  # mirror-mouse: custom_tiny_vit_ssl's stage 0 (1000) + stage 1 (500); supervised gets as many
MODES = ("full", "adapters", "adapters_last3")  # --modes picks; the first two by default


def mode_overrides(mode: str, rank: int, alpha: float) -> list[str]:
    """``full``: nothing; ``adapters``: ``model.lora`` on every block, the head trained; ``adapters_last3``: the same
    with the last 3 of the tiny ViT's 4 blocks trained fully (``model.lora.train_blocks=3``)."""
    if mode == "full":
        return []
    blocks = {"adapters": 0, "adapters_last3": 3}[mode]
    return [f"model.lora.rank={rank}", f"model.lora.alpha={alpha}", f"model.lora.train_blocks={blocks}"]


def trainable(recipe: str, overrides: list[str]) -> tuple[int, int]:
    """(trained, all) parameters of the model ``recipe`` + ``overrides`` builds (adapters included)."""
    from sagepose.config import load_config
    from sagepose.train.module import TopDownModule

    model = TopDownModule(load_config(recipe, overrides)).model
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def score_mouse(plan: dict, arm: str, mode: str, seed: int, extra: list[str], summary: dict, ckpt: str,
                steps: int, minutes: float, out: Path) -> dict:
    """One mirror-mouse row: ``ckpt`` tested on the test frames."""
    from sagepose.demo import score_checkpoint

    test_out = out / f"{arm}-{mode}-seed{seed}" / "test"
    m = score_checkpoint("custom_tiny_vit", [*plan["common"], *extra, f"data.val_json={plan['test_json']}"], ckpt,
                         test_out)
    print(f"mirror-mouse {arm} {mode} seed {seed}: {m['pixel_error']:.3f} px", flush=True)
    return {"arm": arm, "mode": mode, "seed": seed, "steps": steps, "train_minutes": round(minutes, 2),
            "checkpoint": ckpt, "best_is_start": summary.get("best_is_start"), "pixel_error": m["pixel_error"]}


def run_mouse(plan: dict, seeds, out: Path, modes: dict[str, list[str]], quick: bool) -> list[dict]:
    """Each seed x mode: the semi run (stage 0 inside: the supervised start), stage 1's last checkpoint, and a
    supervised run as long as both stages; each scored on the test frames."""
    from sagepose.config import load_config
    from sagepose.data.coco import read_json
    from sagepose.train.run import fit

    rows, common = [], plan["common"]
    sup_steps = QUICK["steps"] * 2 if quick else SEMI_STEPS
    for seed in seeds:
        for mode, extra in modes.items():
            run = out / f"semi-{mode}-seed{seed}"
            semi = fit(load_config("custom_tiny_vit_ssl", [*common, *extra, *plan["semi"], f"trainer.out_dir={run}",
                                                           f"trainer.seed={seed}"]), resume=True)
            stage0 = read_json(run / "warm_start" / "train_summary.json")
            total = semi["steps"] + stage0["steps"]
            minutes = semi["train_minutes"] + stage0["train_minutes"]
            rows.append(score_mouse(plan, "semi", mode, seed, extra, semi, semi["best_checkpoint"], total, minutes,
                                    out))
            rows.append(score_mouse(plan, "semi_stage1", mode, seed, extra, {}, semi["last_checkpoint"], total,
                                    minutes, out))
            run = out / f"supervised-{mode}-seed{seed}"
            sup = fit(load_config("custom_tiny_vit", [*common, *extra, f"trainer.max_steps={sup_steps}",
                                                      f"trainer.out_dir={run}", f"trainer.seed={seed}"]), resume=True)
            rows.append(score_mouse(plan, "supervised", mode, seed, extra, sup, sup["best_checkpoint"], sup["steps"],
                                    sup["train_minutes"], out))
    return rows


def run_synthetic(plan: dict, seeds, out: Path, modes: dict[str, list[str]], extra: list[str]) -> list[dict]:
    """Each seed x mode x arm of bench_ssl's synthetic part (as :func:`sagepose.demo.compare_arms` runs an arm, but
    resumed: a finished run is reused), scored on the last checkpoint."""
    from sagepose.config import load_config
    from sagepose.train.run import fit, test

    rows = []
    for seed in seeds:
        for mode, overrides_of_mode in modes.items():
            mode_extra = [*extra, *overrides_of_mode]
            for arm, recipe, overrides in plan["arms"]:
                run = out / f"{arm}-{mode}-seed{seed}"
                cfg = load_config(recipe, [*plan["common"], *mode_extra, f"trainer.out_dir={run}",
                                           f"trainer.seed={seed}", *overrides, f"data.val_json={plan['test_json']}"])
                summary = fit(cfg, resume=True)
                m = test(cfg, summary["last_checkpoint"], out_dir=run)
                rows.append({"arm": arm, "mode": mode, "seed": seed, "steps": summary["steps"],
                             "train_minutes": summary["train_minutes"], "AP": m["AP"], "out": str(run)})
                print(f"synthetic {arm} {mode} seed {seed}: AP {m['AP']:.3f}", flush=True)
    return rows


def shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def table(header: str, rows: list[dict], metric: str, params: dict[str, tuple[int, int]]) -> str:
    """One line per arm x mode: mean, per seed, adapters against full (ratio for pixel error, difference for AP)."""
    lower = metric == "pixel_error"
    lines = [header, "", f"| arm | mode | trained params | {metric} (mean) | per seed | vs full | "
             "train min (mean) | steps |", "|---|---|---|---|---|---|---|---|"]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    mean = {}
    for arm in arms:
        for mode in params:
            sel = [r for r in rows if r["arm"] == arm and r["mode"] == mode]
            if not sel:
                continue
            mean[arm, mode] = sum(r[metric] for r in sel) / len(sel)
            versus = "--"
            if mode != "full" and (arm, "full") in mean:
                full = mean[arm, "full"]
                versus = (f"{mean[arm, mode] / full:.3f}x" if lower else f"{mean[arm, mode] - full:+.3f}")
            trained, total = params[mode]
            lines.append(f"| {arm} | {mode} | {trained / 1e6:.3f}M of {total / 1e6:.3f}M | {mean[arm, mode]:.3f} | "
                         + ", ".join(f"{r['seed']}: {r[metric]:.3f}" for r in sel)
                         + f" | {versus} | {sum(r['train_minutes'] for r in sel) / len(sel):.2f} | "
                         + "/".join(sorted({str(r["steps"]) for r in sel})) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    import torch

    from sagepose.demo import pretrained_demo_model
    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.models.inference import native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "adapters"))
    parser.add_argument("--init", default=None, help="the checkpoint every arm starts from (default: the demo model)")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:2]))
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, model and steps")
    args = parser.parse_args(argv)
    out = Path(args.out)
    precision = "bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true"
    extra = list(QUICK["overrides"]) if args.quick else []
    n_pre = QUICK["pretrain"] if args.quick else 5000
    init = args.init or pretrained_demo_model(out / "pretrained", num_train=n_pre, num_val=min(200, n_pre),
                                              workers=args.workers, overrides=[f"trainer.precision={precision}",
                                                                               *extra])
    modes = {mode: mode_overrides(mode, args.rank, args.alpha) for mode in args.modes}
    ns = argparse.Namespace(root=None, precision=precision, quick=args.quick, rows="main",
                            steps=QUICK["steps"] if args.quick else None,
                            labeled=300, unlabeled=5000, test=300, pretrain=n_pre, init=init, workers=args.workers,
                            style="surveillance")
    results = {}
    for part in PARTS if args.part == "all" else [args.part]:
        start = time.perf_counter()
        if part == "mirror-mouse":
            plan = real_plan(part, 30, ns, out / part / "n30", [*extra, f"model.init_checkpoint={init}"])
            recipe, common = "custom_tiny_vit", plan["common"]
            rows = run_mouse(plan, args.seeds, out / part / "n30", modes, args.quick)
            how = (f"supervised: `custom_tiny_vit`, {SEMI_STEPS} steps; semi: `custom_tiny_vit_ssl` (stage 0 1000 + "
                   f"stage 1 500 steps), its best.ckpt; semi_stage1: stage 1's last checkpoint; "
                   f"metric: pixel error on the 50 test frames (lower is better)")
        else:
            data = out / part / "data"
            data.mkdir(parents=True, exist_ok=True)
            plan = synthetic_plan(ns, data, extra)
            recipe, common = "demo_tiny_vit", [*plan["common"], *extra]
            rows = run_synthetic(plan, args.seeds, out / part, modes, extra)
            how = (f"recipe `demo_tiny_vit` with the demo's ssl sizing, {plan['steps']} steps each, last checkpoint; "
                   "metric: COCO AP on the 300 `surveillance`-style test images (GT boxes, flip test)")
        params = {mode: trainable(recipe, [*common, *o]) for mode, o in modes.items()}
        metric = "pixel_error" if part == "mirror-mouse" else "AP"
        how_modes = "; ".join(f"{m}: `{' '.join(o)}`" for m, o in modes.items() if o)
        header = (f"{part}: adapters vs full fine-tuning ({how_modes}; adapters on qkv / proj / mlp, the rest of the "
                  f"backbone -- the tiny ViT's conv stem included -- frozen, the head trained); every arm starts from "
                  f"`{shown(init)}` (the `sagepose demo` model); {how}; {precision}; seeds "
                  f"{' '.join(map(str, args.seeds))}; {(time.perf_counter() - start) / 60:.0f} min wall for this part.")
        text = table(header, rows, metric, params)
        print("\n" + text, flush=True)
        write_text_atomic(out / f"adapters_{part}.md", text)
        write_json_atomic(out / f"adapters_{part}.json", {"header": header, "rows": rows}, indent=1)
        results[part] = rows
    return results


if __name__ == "__main__":
    main()
