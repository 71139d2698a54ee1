"""sagepose demo [--ssl] [--out runs/demo] [key=value ...]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("overrides", nargs="*", help="config overrides for the demo recipe, e.g. trainer.max_epochs=5")
    p.add_argument("--ssl", action="store_true",
                   help="the semi-supervised demo: supervised vs semi-supervised on a shifted style (runs/demo-ssl)")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-ssl with --ssl)")
    p.add_argument("--num-train", type=int, default=5000, help="synthetic training images")
    p.add_argument("--num-val", type=int, default=200, help="synthetic validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis")


def run(args) -> int:
    from sagepose.demo import run_demo, run_ssl_demo

    if args.ssl:
        run_ssl_demo(args.out or "runs/demo-ssl", seed=args.seed, workers=args.workers, overrides=args.overrides)
        return 0
    run_demo(args.out or "runs/demo", num_train=args.num_train, num_val=args.num_val, seed=args.seed,
             workers=args.workers, overrides=args.overrides)
    return 0
