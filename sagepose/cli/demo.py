"""sagepose demo [--ssl] [--out runs/demo] [key=value ...]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("overrides", nargs="*", help="config overrides for the demo recipe, e.g. trainer.max_epochs=5")
    p.add_argument("--ssl", action="store_true",
                   help="the semi-supervised demo: supervised vs semi-supervised on a shifted style (runs/demo-ssl)")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-ssl with --ssl)")
    p.add_argument("--num-train", type=int, default=None,
                   help="synthetic training images (default 5000; with --ssl the labeled ones, 300)")
    p.add_argument("--num-val", type=int, default=None,
                   help="synthetic validation images (default 200; with --ssl the shifted-style test set, 300)")
    p.add_argument("--num-unlabeled", type=int, default=5000, help="with --ssl: unlabeled shifted-style images")
    p.add_argument("--style", default="surveillance", help="with --ssl: the shifted style (surveillance, sports, ...)")
    p.add_argument("--init", default=None,
                   help="with --ssl: the checkpoint both arms start from (e.g. runs/demo/checkpoints/best.ckpt of "
                        "`sagepose demo`); default: train that model first, in OUT/pretrained")
    p.add_argument("--num-pretrain", type=int, default=5000,
                   help="with --ssl and no --init: default-style images the starting model is trained on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for data synthesis")


def run(args) -> int:
    from sagepose.demo import run_demo, run_ssl_demo

    if args.ssl:
        run_ssl_demo(args.out or "runs/demo-ssl", num_labeled=args.num_train or 300, num_unlabeled=args.num_unlabeled,
                     num_test=args.num_val or 300, style=args.style, seed=args.seed, workers=args.workers,
                     overrides=args.overrides, init=args.init, num_pretrain=args.num_pretrain)
        return 0
    run_demo(args.out or "runs/demo", num_train=args.num_train or 5000, num_val=args.num_val or 200, seed=args.seed,
             workers=args.workers, overrides=args.overrides)
    return 0
