"""sagepose train CONFIG [key=value ...] [--resume] (options and overrides in any order)"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name, e.g. vitpose_b_coco_256x192)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-4 trainer.max_epochs=5")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in OUT/checkpoints (last.ckpt unless it is "
                        "damaged): weights, optimizer, schedule, EMA, RNG state and the position in the epoch")


def run(args) -> int:
    import json

    from sagepose.config import load_config

    cfg = load_config(args.config, args.overrides)  # checked before Lightning is imported

    from lightning.pytorch.utilities import rank_zero_only

    from sagepose.train.run import fit

    summary = fit(cfg, resume=args.resume)
    if rank_zero_only.rank == 0:  # one summary, however many processes torchrun / SLURM started
        print(json.dumps(summary, indent=1))
    return 0
