"""sagepose demo [--ssl] [--out runs/demo] [--overwrite] [key=value ...]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("overrides", nargs="*", help="config overrides for the demo recipe, e.g. trainer.max_epochs=5")
    p.add_argument("--ssl", action="store_true",
                   help="the semi-supervised demo: supervised vs semi-supervised on a shifted style (runs/demo-ssl)")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-ssl with --ssl); one "
                                               "holding a previous demo is kept and OUT-2, OUT-3, ... written instead "
                                               "(--ssl: starting from its trained stage-0 model)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even if it holds a previous demo: that demo's files are removed (--ssl: "
                        "except its finished stage-0 model in OUT/pretrained, which is reused)")
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
    from pathlib import Path

    from sagepose.demo import demo_folder, run_demo, run_ssl_demo, ssl_demo_folder

    out = args.out or ("runs/demo-ssl" if args.ssl else "runs/demo")
    if args.ssl:
        folder, removed, init = ssl_demo_folder(out, args.overwrite, args.init)
    else:
        (folder, removed), init = demo_folder(out, args.overwrite), None
    if removed:
        print(f"--overwrite: removed the previous demo's {', '.join(removed)} from {folder}")
    elif Path(folder) != Path(out):
        reuse = f", starting from its stage-0 model {init}" if init and args.init is None else ""
        print(f"{out} holds a previous demo: writing to {folder}{reuse} (--overwrite to replace it)")
    if args.ssl:
        run_ssl_demo(folder, num_labeled=args.num_train or 300, num_unlabeled=args.num_unlabeled,
                     num_test=args.num_val or 300, style=args.style, seed=args.seed, workers=args.workers,
                     overrides=args.overrides, init=init, num_pretrain=args.num_pretrain)
        return 0
    run_demo(folder, num_train=args.num_train or 5000, num_val=args.num_val or 200, seed=args.seed,
             workers=args.workers, overrides=args.overrides)
    return 0
