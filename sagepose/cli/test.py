"""sagepose test CONFIG [--checkpoint F] [key=value ...] (options and overrides in any order)

CONFIG is a YAML recipe (with ``--checkpoint``, the weights to evaluate), or a checkpoint of ``sagepose train``
itself: its run config, schema and weights (``sagepose test runs/x/checkpoints/best.ckpt data.val_json=V``).
Writes ``predictions.json``, ``metrics.json`` and ``vis/`` (the poses on the first ``--vis`` val images) into
``--out`` (default ``trainer.out_dir``); a folder holding a previous test's outputs is not written over: they go
to ``OUT-2`` (``OUT-3``, ...), or, with ``--overwrite``, replace them.
"""
from __future__ import annotations

from pathlib import Path

# what a test writes into its folder (and --overwrite removes first), besides predictions-{dataset}.json
TEST_OUTPUTS = ("metrics.json", "predictions.json", "vis")


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name), or a sagepose checkpoint (its own recipe)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.det_json=dets.json")
    p.add_argument("--checkpoint", default=None, help="sagepose .ckpt, or an MMPose / ViTPose checkpoint (default: "
                                                      "CONFIG, when it is a checkpoint)")
    p.add_argument("--out", default=None, help="folder for predictions.json, metrics.json and vis/ "
                                               "(default: trainer.out_dir)")
    p.add_argument("--vis", type=int, default=8, metavar="N", help="render the poses on the first N val images "
                                                                   "into OUT/vis/ (0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous test's outputs in OUT (default: "
                                                            "write to OUT-2, OUT-3, ...)")


def run(args) -> int:
    import json

    from sagepose.config import ConfigError
    from sagepose.recipe import load_recipe

    cfg, own = load_recipe(args.config, args.overrides, "test")  # checked before Lightning is imported
    checkpoint = args.checkpoint or own
    if checkpoint is None:
        raise ConfigError(f"--checkpoint is not set: the weights to evaluate ({args.config} is a recipe, not a "
                          "checkpoint)")

    from lightning.pytorch.utilities import rank_zero_only

    from sagepose.train.run import test

    out = test_folder(Path(args.out or cfg.trainer.out_dir), args.overwrite, rank=rank_zero_only.rank)
    print(json.dumps(test(cfg, checkpoint, out_dir=out, render=args.vis), indent=1))
    return 0


def _previous_outputs(folder: Path) -> list[Path]:
    return [p for p in (*(folder / n for n in TEST_OUTPUTS), *sorted(folder.glob("predictions-*.json")))
            if p.exists()]


def test_folder(requested: Path, overwrite: bool = False, rank: int = 0) -> Path:
    """Where a test writes: ``requested`` unless it holds a previous test's outputs; then, with ``overwrite``,
    ``requested`` with those removed (by rank 0), else the first free ``requested-2``, ``-3``, ... Every rank
    decides the same: a test writes nothing before all ranks have validated."""
    import sys

    from sagepose.fileio import fresh_output_dir, remove_outputs

    previous = _previous_outputs(requested) if requested.is_dir() else []
    if not previous:
        return requested
    if overwrite:
        if rank == 0:
            remove_outputs(requested, [p.name for p in previous])
        return requested
    folder, _ = fresh_output_dir(requested)
    if rank == 0:
        print(f"{requested} holds a previous test's outputs: writing to {folder} (--overwrite replaces them)",
              file=sys.stderr, flush=True)  # stdout is the metrics' JSON
    return folder
