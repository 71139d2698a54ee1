"""sagepose distill STUDENT_CONFIG --teacher CKPT_OR_NAME [key=value ...] [--resume | --overwrite]

``sagepose train`` of the student recipe with ``distill.teacher`` set: the teacher (a sagepose checkpoint, a file
``sagepose.load`` reads -- give ``distill.teacher_model=ZOO_NAME`` when the file does not name its model -- or a hub
name) predicts on weak views of ``ssl.unlabeled``'s crops and of the labeled images, and the student learns those
distributions on its strong views beside its labels (:mod:`sagepose.train.distill_module`). A student recipe without
unlabeled training (``ssl.mode: off``) distils with its labels (``ssl.mode=semi``; ``ssl.mode=unsup_only`` for none).
Run folder, Ctrl-C / SIGTERM, ``--resume`` and ``--overwrite`` as ``sagepose train``.
"""
from __future__ import annotations

from sagepose.cli import train


def add_arguments(p):
    train.add_arguments(p)
    p.add_argument("--teacher", required=True,
                   help="the teacher: a checkpoint (sagepose, MMPose, Sapiens; distill.teacher_model=NAME for a file "
                        "that does not name its model) or a hub name (e.g. vitpose-b-coco)")


def run(args) -> int:
    from sagepose.recipe import load_recipe

    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].strip() == "ssl.mode" for o in overrides):
        cfg, _ = load_recipe(args.config, overrides, "train")
        if cfg.ssl.mode == "off":
            overrides.append("ssl.mode=semi")
    args.overrides = [*overrides, f"distill.teacher={args.teacher}"]
    return train.run(args)
