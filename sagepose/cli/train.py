"""sagepose train CONFIG [key=value ...] [--resume]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name, e.g. vitpose_b_coco_256x192)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-4 trainer.max_epochs=5")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")


def run(args) -> int:
    import json

    from sagepose.config import load_config
    from sagepose.configs import resolve_config
    from sagepose.train.run import fit

    cfg = load_config(resolve_config(args.config), args.overrides)
    print(json.dumps(fit(cfg, resume=args.resume), indent=1))
    return 0
