"""sagepose test CONFIG --checkpoint F [key=value ...] (options and overrides in any order)"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.det_json=dets.json")
    p.add_argument("--checkpoint", required=True, help="sagepose .ckpt, or an MMPose / ViTPose checkpoint")
    p.add_argument("--out", default=None, help="folder for predictions.json and metrics.json "
                                               "(default: trainer.out_dir)")


def run(args) -> int:
    import json

    from sagepose.config import load_config

    cfg = load_config(args.config, args.overrides)  # checked before Lightning is imported

    from sagepose.train.run import test

    print(json.dumps(test(cfg, args.checkpoint, out_dir=args.out), indent=1))
    return 0
