"""sagepose demo [--out runs/demo] [key=value ...]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("overrides", nargs="*", help="config overrides for the demo recipe, e.g. trainer.max_epochs=5")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--num-train", type=int, default=5000, help="synthetic training images")
    p.add_argument("--num-val", type=int, default=200, help="synthetic validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis")


def run(args) -> int:
    from sagepose.demo import run_demo

    run_demo(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed, workers=args.workers,
             overrides=args.overrides)
    return 0
