"""The `sagepose` command: one subcommand per module in this package.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and
keeps heavy imports (torch, lightning, cv2) inside ``run`` so ``sagepose --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": "synthesize a dataset, train the tiny ViT on CPU, evaluate and render (runs/demo/)",
    "synth": "write a synthetic COCO-format human keypoint dataset",
    "train": "train from a YAML recipe: sagepose train CONFIG [key=value ...]",
    "test": "evaluate a checkpoint: sagepose test CONFIG --checkpoint F [key=value ...]",
    "infer": "predict keypoints on an image or folder; write results json and renders",
    "convert": "any supported checkpoint (MMPose, ViTPose, Sapiens, TorchScript, .pt2) -> a sagepose checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagepose", description="Top-down 2D human pose estimation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"sagepose.cli.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
