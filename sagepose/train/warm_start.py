"""A supervised warm start for fine-tuning (SAGE-Pose's stage 0), and a best checkpoint never worse than it.

    ssl.warm_start: custom_tiny_vit      # a recipe: trained first, in OUT/warm_start, then fine-tuned from
    ssl.warm_start: runs/sup/checkpoints/best.ckpt    # or a checkpoint: fine-tuned from

A recipe is trained with this run's ``data``, ``model`` and ``trainer`` settings and that recipe's own optimizer,
steps and validation interval (:func:`stage_config`), so with the bundled custom recipes stage 0 is exactly
``sagepose train custom_tiny_vit`` on the same data. It is reused when it finished in ``OUT/warm_start`` before
with the same config, and resumed when it was interrupted there. The fine-tuning then starts the student (and the
semi-supervised teacher) from stage 0's last checkpoint, the end of its schedule.

The start is scored on ``data.val_json`` before the fine-tuning (``OUT/start/``), the fine-tuning's best after it
(``OUT/fine_tuned/``), and :func:`keep_better` makes the start ``best.ckpt`` when the fine-tuning did worse there;
the summary says what the fine-tuning bought on val (:func:`gain_line`). "Worse" is ``ssl.keep_start``'s:

    clearly_worse   (default) worse beyond chance on these frames: a paired sign-flip test over the val frames,
                    p < 0.05 (:mod:`sagepose.eval.paired`); for pixel_error. A difference a few frames cannot
                    resolve does not throw the fine-tuning away.
    worse           any worse mean (the start wins ties): on the val frames the result is never worse than the
                    start, at the price of a coin flip between near-equal models on a small val set.

Why the default is not ``worse``: on six real datasets x 2 seeds (3 - 10 val frames each), stage 1 beat its start on
the *test* frames in 9 of 12 runs; ``worse`` kept the start in 6, 4 of them wrongly, ``clearly_worse`` in 1,
rightly, letting 2 losses through (``benchmarks/results/ssl/``, docs/semi-supervised.md). Metrics without
per-frame errors (AP, a multi-dataset score) compare as ``worse``.
The comparison is fair only between equally lucky candidates: a checkpoint picked as the best of many validations
on a few frames scores better on them than it is, so the start is stage 0's last checkpoint (scored once) rather
than its best.ckpt, and the custom recipe validates stage 1 once, at its end.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from sagepose.config import Config, ConfigError, load_config, replace
from sagepose.eval.paired import PairedGap, frames_needed, paired_gap
from sagepose.fileio import atomic_open

STAGE_DIR = "warm_start"  # OUT/warm_start: stage 0's run folder
START_DIR = "start"  # OUT/start: the start's scores on data.val_json
FINE_TUNED_DIR = "fine_tuned"  # OUT/fine_tuned: the fine-tuning's best.ckpt scored on data.val_json
CLEARLY_WORSE_P = 0.05  # one-sided: the fine-tuning is "clearly worse" than the start at p below this
# trainer settings that belong to the warm-start recipe (its length and validation); the rest are the run's
RECIPE_TRAINER_FIELDS = ("max_epochs", "max_steps", "val_every_epochs", "val_every_steps")


def is_checkpoint_spec(spec: str) -> bool:
    """Whether ``ssl.warm_start`` names a checkpoint file rather than a recipe."""
    return Path(spec).is_file() and not spec.endswith((".yaml", ".yml"))


def stage_config(cfg: Config) -> Config:
    """Stage 0's config for a run whose ``ssl.warm_start`` is a recipe: that recipe's optimizer and length, this run's
    data, model and other trainer settings, no unlabeled data, into ``OUT/warm_start``."""
    spec = cfg.ssl.warm_start
    if spec.endswith((".ckpt", ".pth", ".pt", ".safetensors", ".bin")):
        raise ConfigError(f"ssl.warm_start={spec!r}: no such checkpoint file", key="ssl.warm_start")
    try:
        recipe = load_config(spec)
    except ConfigError as e:
        raise ConfigError(f"ssl.warm_start={spec!r}: neither a checkpoint file nor a recipe ({e})",
                          key="ssl.warm_start") from None
    trainer = dataclasses.replace(cfg.trainer, out_dir=str(Path(cfg.trainer.out_dir) / STAGE_DIR),
                                  **{name: getattr(recipe.trainer, name) for name in RECIPE_TRAINER_FIELDS})
    return replace(dataclasses.replace(recipe, data=cfg.data, model=cfg.model, trainer=trainer),
                   ssl={"mode": "off", "unlabeled": (), "warm_start": None})


def finished_stage(stage: Config) -> str | None:
    """The last checkpoint of stage 0 when it finished in its folder with this config before; None when it has not
    run there. A folder holding another config is refused: its checkpoint is not this run's
    stage 0."""
    out = Path(stage.trainer.out_dir)
    if not (out / "config.yaml").is_file():
        return None
    if load_config(str(out / "config.yaml")) != stage:  # as loaded: a key added since takes its default
        raise ConfigError(f"{out}: holds a warm-start run of another config than this run's stage 0 "
                          f"({stage.trainer.out_dir}/config.yaml differs); remove it, or pass --overwrite",
                          key="ssl.warm_start")
    done = finished_summary(out)  # None: started, not finished -- resumed by the caller
    return done and done.get("last_checkpoint")


def finished_summary(out: Path) -> dict | None:
    """The ``train_summary.json`` of a run that finished in ``out`` (not interrupted, not stopped by its time guard);
    None when there is none."""
    from sagepose.data.coco import read_json

    path = Path(out) / "train_summary.json"
    if not path.is_file():
        return None
    done = read_json(path)
    return None if done.get("interrupted_by") or done.get("stopped_by_time") else done


def monitored(metrics: dict, monitor: str) -> float | None:
    """The value of ``monitor`` (``val/AP``, ``val/pixel_error``, ``val/score``) in a test's metrics."""
    value = metrics.get(monitor.split("/", 1)[1])
    return None if value is None else float(value)


def val_gap(cfg: Config, out: Path) -> PairedGap:
    """The fine-tuning's val predictions (``OUT/fine_tuned``) against the start's (``OUT/start``), frame by frame."""
    from sagepose.data.coco import load_coco, read_json
    from sagepose.keypoints import load_schema

    records = load_coco(cfg.data.val_json, load_schema(cfg.model.schema), image_root=cfg.data.image_root, mode="val")
    return paired_gap(read_json(out / START_DIR / "predictions.json"),
                      read_json(out / FINE_TUNED_DIR / "predictions.json"), records, seed=cfg.trainer.seed)


def start_wins(start: float | None, best: float | None, mode: str, gap: PairedGap | None = None) -> bool:
    """Whether the start stays: with a paired ``gap`` (``ssl.keep_start=clearly_worse``), when the fine-tuning is
    worse beyond chance on the val frames; without one, when the start's val score is at least as good as the
    fine-tuning's best (``mode`` "min" or "max")."""
    if start is None:
        return False
    if best is None:
        return True
    if gap is not None:
        return gap.difference > 0 and gap.p_worse < CLEARLY_WORSE_P
    return start <= best if mode == "min" else start >= best


def keep_better(start_ckpt: str, start: float | None, best: float | None, mode: str, ckpt_dir: Path,
                gap: PairedGap | None = None) -> bool:
    """Copy the start to ``ckpt_dir/best.ckpt`` when :func:`start_wins`; returns whether it did."""
    if not start_wins(start, best, mode, gap):
        return False
    with atomic_open(ckpt_dir / "best.ckpt") as f, open(start_ckpt, "rb") as src:
        shutil.copyfileobj(src, f, length=1 << 24)
    return True


def gain_line(monitor: str, start: float | None, best: float | None, kept_start: bool, semi: bool,
              gap: PairedGap | None = None) -> str:
    """What the fine-tuning bought on val, in one line."""
    name = monitor.split("/", 1)[1]
    what = "the unlabeled data" if semi else "the fine-tuning"
    if start is None:
        return "warm start: no data.val_json to score the start on; best.ckpt is the fine-tuning's"
    unit = " px" if name == "pixel_error" else ""
    if gap is not None:
        at = f"warm start: val {name} {start:.4g}{unit} at the start, {best:.4g}{unit} after the fine-tuning"
        test = f"{gap.frames} val frames, sign-flip p(worse) = {gap.p_worse:.2g}"
        if kept_start:
            return (f"{at}: worse beyond chance ({test} < {CLEARLY_WORSE_P}); {what} bought nothing; "
                    "best.ckpt is the start")
        if gap.frames < frames_needed(CLEARLY_WORSE_P):
            test += f"; fewer than {frames_needed(CLEARLY_WORSE_P)} frames can never show a loss: label more val frames"
        if gap.difference > 0:
            return (f"{at}: {what} bought nothing on val (+{gap.difference:.3g}{unit}, within chance: {test}); "
                    "best.ckpt is the fine-tuning's all the same (ssl.keep_start=worse keeps the start)")
        return f"{at}: {what} bought {-gap.difference:.3g}{unit} ({test})"
    if kept_start:
        reached = "" if best is None else f" (the fine-tuning's best: {best:.4g})"
        return (f"warm start: val {name} {start:.4g} at the start{reached}: {what} bought nothing on val; "
                "best.ckpt is the start")
    return (f"warm start: val {name} {start:.4g}{unit} at the start, {best:.4g}{unit} at best: {what} bought "
            f"{abs(best - start):.3g}{unit}")
