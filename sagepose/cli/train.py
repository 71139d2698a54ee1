"""sagepose train CONFIG [key=value ...] [--resume | --overwrite] (options and overrides in any order)

CONFIG is a YAML recipe, a bundled recipe's name, or a checkpoint of ``sagepose train`` / ``convert``: then the
run fine-tunes it (its run config and model, initialised from its weights; the overrides on top).

The run folder is ``trainer.out_dir`` (``X``) when it is new or empty. When ``X`` holds a previous run the run
goes to ``X-2`` (``X-3``, ...) and one line says so; ``--overwrite`` reuses ``X`` after removing that run's
outputs (checkpoints/, logs/, config.yaml, train_summary.json, metrics.csv, curves.png); ``--resume`` continues
it. Ctrl-C or SIGTERM stops after the current optimizer step with a resumable ``X/checkpoints/last.ckpt``, one line
saying how to continue, and exit status 130 / 143; a second one ends the process at once. Every rank of a
multi-process run must write into the same folder:

* ranks that Lightning starts from the first process (``trainer.strategy=ddp`` without a launcher) re-run this
  command; they take the first process's choice from the environment (:data:`RUN_DIR_ENV`);
* ranks a launcher starts (torchrun, srun) decide alone, and rank 0 may create ``X`` before another rank looks,
  so nothing is numbered: rank 0 refuses an ``X`` holding a previous run (without --resume / --overwrite), the
  launcher then stops the others before any of them has written, and the others train into ``X``.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

# the folder the first process chose, read by the ranks Lightning starts by re-running this command
RUN_DIR_ENV = "SAGEPOSE_RUN_DIR"


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name, e.g. vitpose_b_coco_256x192), or a sagepose "
                                  "checkpoint to fine-tune (its run config and weights)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-4 trainer.max_epochs=5")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in OUT/checkpoints (last.ckpt unless it is "
                        "damaged): weights, optimizer, schedule, EMA, RNG state and the position in the epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="train into trainer.out_dir even when it holds a previous run, removing that run's "
                        "checkpoints, logs and summaries first (default: a new folder OUT-2, OUT-3, ...)")


def run(args) -> int:
    import json

    from sagepose.config import ConfigError
    from sagepose.recipe import load_recipe

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in trainer.out_dir, --overwrite replaces it: choose one")
    cfg, checkpoint = load_recipe(args.config, args.overrides, "train")  # checked before Lightning is imported
    if checkpoint and args.resume:
        raise ConfigError(f"--resume with a checkpoint as CONFIG: a run resumes from its own folder; give its "
                          f"config.yaml (sagepose train OUT/config.yaml --resume), or drop --resume to fine-tune "
                          f"{checkpoint}")

    from lightning.pytorch.utilities import rank_zero_only

    from sagepose.config import replace
    from sagepose.train.interrupt import TrainingInterrupted
    from sagepose.train.run import fit

    requested = Path(cfg.trainer.out_dir)
    out = run_folder(requested, resume=args.resume, overwrite=args.overwrite, rank=rank_zero_only.rank)
    if out != requested:
        cfg = replace(cfg, trainer={"out_dir": str(out)})
    if checkpoint and rank_zero_only.rank == 0:
        print(f"fine-tuning {checkpoint}: its run config and model, initialised from its weights "
              "(new optimizer and schedule)", flush=True)
    os.environ[RUN_DIR_ENV] = str(out)
    try:
        summary = fit(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if rank_zero_only.rank == 0:  # fit saved the resolved config there, output folder included
            resume = shlex.join(["sagepose", "train", str(out / "config.yaml"), "--resume"])
            # on a line of its own: a progress bar may be mid-line on the terminal
            print(f"\nsagepose: {stop}; continue with: {resume}", file=sys.stderr, flush=True)
        return stop.exit_code
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    if rank_zero_only.rank == 0:  # one summary, however many processes torchrun / SLURM started
        print(json.dumps(summary, indent=1))
    return 0


def launched_ranks() -> int:
    """The number of processes a launcher (torchrun, srun) started for this run; 1 when run directly."""
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def run_folder(requested: Path, resume: bool = False, overwrite: bool = False, rank: int = 0) -> Path:
    """The folder this run writes into (see the module's docstring); creates nothing."""
    from sagepose.errors import OutputExistsError
    from sagepose.fileio import fresh_output_dir

    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)
    if resume or overwrite:
        return requested
    if launched_ranks() > 1:
        if rank == 0 and requested.is_dir() and any(requested.iterdir()):
            raise OutputExistsError(f"{requested} holds a previous run; a multi-process launch does not number run "
                                    "folders: pass --resume to continue it, --overwrite to replace it, or set another "
                                    "trainer.out_dir")
        return requested
    folder, moved = fresh_output_dir(requested)
    if moved:
        print(f"{requested} holds a previous run: writing to {folder} (--overwrite replaces that run, --resume "
              "continues it)", flush=True)
    return folder
