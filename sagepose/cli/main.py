"""The `sagepose` command: one subcommand per module in this package.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and
keeps heavy imports (torch, lightning, cv2) inside ``run`` so ``sagepose --help`` is instant.

Options and ``key=value`` overrides mix in any order (``sagepose test CFG --checkpoint F data.val_json=V``).
An error raised on purpose (a :class:`sagepose.errors.SagePoseError`, an OS error naming a file, or any
error a ``raise`` statement in sagepose's own code raises) prints one line, ``sagepose: error: ...``, and
exits 2 for a bad setting, 1 otherwise; anything else -- a bug -- keeps its traceback.
``SAGEPOSE_TRACEBACK=1`` shows the traceback always.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import linecache
import os
import sys
from pathlib import Path

SUBCOMMANDS = {
    "demo": "synthesize a dataset, train the tiny ViT on CPU, evaluate and render (runs/demo/)",
    "synth": "write a synthetic COCO-format human keypoint dataset",
    "train": "train from a YAML recipe: sagepose train CONFIG [key=value ...] [--resume]",
    "distill": "a big model teaches a small one on unlabeled crops: sagepose distill CONFIG --teacher CKPT [key=value]",
    "test": "evaluate a checkpoint: sagepose test CONFIG --checkpoint F [key=value ...]",
    "infer": "predict keypoints on an image or folder; write results json and renders",
    "export": "a model as ONNX (crops in, heatmaps out, its settings in the metadata) for onnxruntime / TensorRT",
    "convert": "any supported checkpoint (MMPose, ViTPose, Sapiens, TorchScript, .pt2) -> a sagepose checkpoint",
    "import": "labeled data of another tool -> a COCO keypoint json: sagepose import dlc CSV|PROJECT --out OUT.json",
    "split": "a COCO keypoint json -> train / val (/ test) jsons: sagepose split LABELS.json --val 0.2 [--by video]",
    "show-data": "a contact sheet of augmented training crops with their keypoints: sagepose show-data CONFIG",
    "translate": "keypoints of one schema as another's: sagepose translate fit|apply (fixed map or learned)",
}
# subcommands whose module is not named after them (``import`` is a Python keyword)
MODULES = {"import": "import_dlc", "show-data": "show_data"}

_PACKAGE = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagepose", description="Top-down 2D human pose estimation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subcommand_parsers = {}
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"sagepose.cli.{MODULES.get(name, name)}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module, command=name)
        parser.subcommand_parsers[name] = p
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The subcommand's arguments, its positionals (``key=value`` overrides) before, between or after its
    options; an unknown option is still an error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in parser.subcommand_parsers:
        return parser.parse_args(argv)  # --help, or a usage error naming the subcommands
    sub, rest = parser.subcommand_parsers[argv[0]], argv[1:]
    options = list(sub._option_string_actions)
    for token in rest[:rest.index("--")] if "--" in rest else rest:
        name = token.split("=", 1)[0]
        if name.startswith("--") and not any(o.startswith(name) for o in options):  # before "required" errors
            close = difflib.get_close_matches(name, options, n=1)
            sub.error(f"unrecognized option {name}" + (f"; did you mean {close[0]}?" if close else ""))
    return sub.parse_intermixed_args(rest)


def _raised_on_purpose(error: BaseException) -> bool:
    """A message for the user rather than a bug: a sagepose error class, an OS error naming its file, or an
    error raised by a ``raise X(...)`` statement in sagepose's own code (not a failed call, ``assert`` or bare
    re-raise there, nor anything raised inside torch, Lightning or the standard library)."""
    from sagepose.errors import SagePoseError

    if isinstance(error, SagePoseError):
        return True
    if isinstance(error, OSError) and error.filename is not None:
        return True
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    source = Path(tb.tb_frame.f_code.co_filename).resolve()
    line = linecache.getline(str(source), tb.tb_lineno).strip()
    return source.is_relative_to(_PACKAGE) and line.startswith("raise ")


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]  # str(KeyError) would quote it
    return str(error) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside a training step (one stops after the step, with a checkpoint)
        if os.environ.get("SAGEPOSE_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"sagepose: interrupted ({args.command})", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("SAGEPOSE_TRACEBACK", "") not in ("", "0") or not _raised_on_purpose(e):
            raise
        from sagepose.config import ConfigError

        print(f"sagepose: error: {_message(e)}", file=sys.stderr)
        if getattr(e, "exit_code", None):  # e.g. a run stopped by SIGINT / SIGTERM: 130 / 143, as the shell's
            return int(e.exit_code)
        return 2 if isinstance(e, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
