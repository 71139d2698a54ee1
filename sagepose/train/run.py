"""Entry points behind ``sagepose train`` / ``sagepose test`` (and the demo): plain code, no registry.

:func:`fit` checks the run (:mod:`sagepose.train.checks`), picks the LightningModule (supervised
:mod:`~sagepose.train.module` or semi-supervised :mod:`~sagepose.train.ssl_module`) and its DataModule
(:mod:`~sagepose.train.loaders`), builds the Trainer (:mod:`~sagepose.train.trainer`) with the checkpoint, EMA and
logging callbacks, trains, and writes the run's summary; :func:`test` scores a checkpoint on the val set(s).
"""
from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from sagepose.config import Config, ConfigError, dump_config, replace, validate
from sagepose.fileio import write_json_atomic, write_text_atomic
from sagepose.models.checkpoint import read_checkpoint
from sagepose.recipe import (
    adapter_base,
    checkpoint_model_config,
    checkpoint_schema,
    load_weights,
    warn_if_not_trained_as,
)
from sagepose.train.checks import check_accelerator, check_run
from sagepose.train.loaders import SemiSupervisedData, TopDownData
from sagepose.train.trainer import build_eval_trainer, build_trainer
from sagepose.train.warm_start import (
    FINE_TUNED_DIR,
    START_DIR,
    finished_summary,
    gain_line,
    is_checkpoint_spec,
    keep_better,
    monitored,
    stage_config,
    val_gap,
)

# what a training run writes into its folder: --overwrite removes these (and only these) before a new run
RUN_OUTPUTS = ("checkpoints", "logs", "config.yaml", "train_summary.json", "metrics.csv", "curves.png", "warm_start",
               "start", "fine_tuned")


def remove_run_outputs(out: Path) -> list[str]:
    """Remove a previous run's :data:`RUN_OUTPUTS` from ``out`` (files of other tools stay); returns their names."""
    from sagepose.fileio import remove_outputs

    removed = [p.name for p in remove_outputs(out, RUN_OUTPUTS)]
    if removed:
        print(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}", flush=True)
    return removed


def fit(cfg: Config, resume: bool = False, callbacks=(), overwrite: bool = False) -> dict:
    """Train per ``cfg``; writes ``OUT/config.yaml``, ``OUT/checkpoints/*.ckpt``, TensorBoard logs, ``OUT/metrics.csv``
    and ``OUT/curves.png`` (one row / point per validation).

    The data is checked first (:func:`sagepose.data.preflight.check_data`: jsons and every image's header), before
    anything is written. ``resume``: continue from the newest complete checkpoint in ``OUT/checkpoints`` (weights,
    optimizer, schedule, EMA, RNG state and the position in the epoch, so the run goes on as if never stopped).
    ``overwrite``: remove a previous run's outputs from ``OUT`` first (:data:`RUN_OUTPUTS`), so nothing of it mixes
    with this run's; without it ``OUT`` is written into as it is (``sagepose train`` picks a fresh folder instead).
    ``callbacks``: extra Lightning callbacks. Returns paths and the best val AP.

    SIGINT / SIGTERM stop the run after the current optimizer step: ``OUT/checkpoints/last.ckpt`` holds it (resumable
    mid-epoch) and :class:`sagepose.train.interrupt.TrainingInterrupted` is raised once the summary is written.
    """
    from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor

    from sagepose.data.preflight import check_data
    from sagepose.train.checkpoints import checkpoint_callbacks, find_resume_checkpoint, monitor_for
    from sagepose.train.interrupt import TrainingInterrupted
    from sagepose.train.metrics_log import MetricsLog
    from sagepose.train.module import TopDownModule
    from sagepose.train.ssl_module import SemiSupervisedModule

    check_run(cfg)
    out = Path(cfg.trainer.out_dir)
    ckpt_dir = out / "checkpoints"
    if rank_zero_only.rank == 0:  # the other ranks wait for rank 0 when the process group starts
        print(check_data(cfg), flush=True)
        if overwrite and not resume:
            remove_run_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", dump_config(cfg))
        print(f"resolved config (saved to {out / 'config.yaml'}):\n{dump_config(cfg)}")
    resume_path = find_resume_checkpoint(ckpt_dir) if resume else None
    if resume:
        rank_zero_info(f"resuming from {resume_path}" if resume_path else
                       f"--resume: no complete checkpoint in {ckpt_dir}; starting from scratch")
    start_ckpt = None
    if cfg.ssl.warm_start:  # stage 0 first (or a given checkpoint): the fine-tuning starts from it
        start_ckpt = warm_start_checkpoint(cfg)
        cfg = replace(cfg, model={"init_checkpoint": start_ckpt})
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.ssl.mode == "off":
        module = TopDownModule(cfg)
        datamodule = TopDownData(cfg, module.model)
    elif cfg.distill.teacher:
        from sagepose.train.distill_module import DistillModule

        module = DistillModule(cfg)
        datamodule = SemiSupervisedData(cfg, module.model, crop_size=module.crop_size)
    else:
        module = SemiSupervisedModule(cfg)
        datamodule = SemiSupervisedData(cfg, module.model)
    if cfg.trainer.strategy == "fsdp":
        module.model.backbone.grad_checkpointing = False  # FSDP's checkpointing policy does it (build_strategy)
    monitor, mode = monitor_for(module.model.schema)
    if module.plan is not None:  # several val sets: the mean of their headline metrics
        monitor, mode = ("val/score", "max") if module.plan.scored() else (None, "max")
    elif not cfg.data.val_json or (cfg.data.det_json and monitor == "val/pixel_error"):
        monitor = None  # nothing to score (detections have no labels to pair with, and no AP without sigmas)
    checkpoints = checkpoint_callbacks(cfg.trainer, ckpt_dir, monitor=monitor, mode=mode)
    extra = [LearningRateMonitor(logging_interval="step"), MetricsLog(out)]
    if cfg.optim.ema_decay > 0:
        extra.append(EMAWeightAveraging(decay=cfg.optim.ema_decay))
    start_score = None
    if start_ckpt and monitor is not None and not resume_path:
        start_score = monitored(test(cfg, start_ckpt, out / START_DIR), monitor)
    elif start_ckpt and monitor is not None and (out / START_DIR / "metrics.json").is_file():
        from sagepose.data.coco import read_json

        start_score = monitored(read_json(out / START_DIR / "metrics.json"), monitor)
    trainer = build_trainer(cfg, out, [*checkpoints, *extra, *callbacks])
    start = time.time()
    interrupted = None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path)
    except TrainingInterrupted as stop:  # SIGINT / SIGTERM: last.ckpt holds the finished step; raised below
        interrupted = stop
    done = finished_summary(out) if resume_path and interrupted is None else None
    if done and done.get("steps") == trainer.global_step:  # a resumed run that had finished: it trained nothing now,
        # and its summary and best.ckpt (a warm start's choice among them) stay as they were
        _say(f"{out}: this run had finished; nothing left to train (its train_summary.json stands)")
        return done
    best = next((c for c in checkpoints if c.monitor), None)
    last = str(ckpt_dir / "last.ckpt")
    summary = {"best_checkpoint": (best.best_model_path if best else "") or last, "last_checkpoint": last,
               "best_val_AP": _best_score(best, "val/AP"), "best_val_pixel_error": _best_score(best, "val/pixel_error"),
               "best_val_score": _best_score(best, "val/score"),
               "train_minutes": round((time.time() - start) / 60, 2), "steps": trainer.global_step,
               "skipped_steps": module.skipped_steps, "resumed_from": str(resume_path) if resume_path else None,
               "stopped_by_time": interrupted is None and _stopped_by_time(cfg, trainer),
               "interrupted_by": interrupted and signal.Signals(interrupted.signum).name}
    if start_ckpt and interrupted is None:
        best_score = _best_score(best, monitor) if monitor else None
        gap = None
        if cfg.ssl.keep_start == "clearly_worse" and monitor == "val/pixel_error" and None not in (start_score,
                                                                                                  best_score):
            test(cfg, summary["best_checkpoint"], out / FINE_TUNED_DIR)  # every rank: test() shards over them
            gap = val_gap(cfg, out) if trainer.is_global_zero else None
        kept = trainer.is_global_zero and keep_better(start_ckpt, start_score, best_score, mode, ckpt_dir, gap)
        kept, gap = trainer.strategy.broadcast((kept, gap), src=0)
        if kept:
            summary["best_checkpoint"] = str(ckpt_dir / "best.ckpt")
            summary[f"best_{monitor.replace('/', '_')}"] = start_score
        summary.update(warm_start=start_ckpt, start_val_score=start_score, best_is_start=kept,
                       val_gap=gap and dataclasses.asdict(gap))
        _say(gain_line(monitor or "val/none", start_score, best_score, kept, cfg.ssl.mode != "off", gap))
    if summary["stopped_by_time"]:
        rank_zero_warn(f"training stopped by trainer.max_time_minutes={cfg.trainer.max_time_minutes} after "
                       f"{trainer.current_epoch} of {cfg.trainer.max_epochs} epochs ({trainer.global_step} steps): "
                       "this is not the recipe's result; raise the limit or resume with --resume")
    if trainer.is_global_zero:
        write_json_atomic(out / "train_summary.json", summary, indent=1)
    if interrupted is not None:
        raise interrupted
    return summary


def warm_start_checkpoint(cfg: Config) -> str:
    """``ssl.warm_start``'s checkpoint: the file it names, or its recipe's last checkpoint in ``OUT/warm_start``
    -- reused when that run finished there, resumed when it was interrupted, trained when it is not there."""
    from sagepose.train.warm_start import finished_stage

    spec = cfg.ssl.warm_start
    if is_checkpoint_spec(spec):
        _say(f"warm start: {spec}")
        return str(Path(spec).resolve())
    stage = stage_config(cfg)
    done = finished_stage(stage)
    if done:
        _say(f"warm start: {done} ({spec}, finished before in {stage.trainer.out_dir})")
        return done
    started = (Path(stage.trainer.out_dir) / "checkpoints").is_dir()
    _say(f"warm start: {'resuming' if started else 'training'} {spec} first, in {stage.trainer.out_dir}")
    return fit(stage, resume=started)["last_checkpoint"]


@rank_zero_only
def _say(line: str) -> None:
    print(line, flush=True)


def _best_score(best, key: str) -> float | None:
    """The best checkpoint's score when it was chosen by ``key``."""
    if best is None or best.monitor != key or best.best_model_score is None:
        return None
    return float(best.best_model_score)


def _stopped_by_time(cfg: Config, trainer) -> bool:
    """Whether a finished fit ended on its wall-time guard, before its epoch / step bound."""
    t = cfg.trainer
    if t.max_time_minutes is None:
        return False
    steps_done = t.max_steps >= 0 and trainer.global_step >= t.max_steps
    return not steps_done and trainer.current_epoch < t.max_epochs


def test(cfg: Config, checkpoint: str | None, out_dir: str | Path | None = None, render: int = 0) -> dict:
    """Evaluate a checkpoint on ``data.val_json`` (GT boxes or ``data.det_json``), sharded over the ranks
    of ``trainer.strategy`` / ``devices`` when launched so.

    Writes ``OUT/predictions.json`` (COCO results) and ``OUT/metrics.json``, and with ``render`` the poses of that
    many val images into ``OUT/vis/`` (``OUT/vis/{dataset}/`` for each of ``data.datasets``); returns the metrics.
    """
    from sagepose.train.module import TopDownModule
    from sagepose.train.validation import save_predictions

    validate(cfg)
    check_accelerator(cfg)
    multi = bool(cfg.data.datasets)
    if not cfg.data.val_json and not any(ds.val_json for ds in cfg.data.datasets):
        raise ConfigError("data.val_json is not set: the annotations to evaluate on", key="data.val_json")
    raw = read_checkpoint(checkpoint) if checkpoint else None
    schema = None
    if raw is not None:  # the weights come from the checkpoint: the recipe's init_checkpoint is not read
        trained = checkpoint_model_config(raw, str(checkpoint))
        warn_if_not_trained_as(cfg.model, trained, str(checkpoint))
        cfg = replace(cfg, model={"init_checkpoint": adapter_base(raw)})  # an adapter checkpoint: its base
        if multi or (trained is not None and cfg.model.schema == trained.schema):  # as trained, as stored
            schema = checkpoint_schema(raw, str(checkpoint))
    out = Path(out_dir or cfg.trainer.out_dir)
    module = TopDownModule(cfg, schema=schema)
    if raw is not None:
        load_weights(module.model, raw, str(checkpoint))
    trainer = build_eval_trainer(cfg)
    trainer.validate(module, datamodule=TopDownData(cfg, module.model), verbose=False)
    metrics = dict(module.last_metrics)
    if multi:  # {dataset: its metrics, "score": the mean headline}; predictions-{dataset}.json each
        for name in module.last_predictions:
            member = module.plan.members[module.plan.names.index(name)]
            metrics[name].update(val_json=str(member.config.val_json),
                                 predictions=str(out / f"predictions-{name}.json"),
                                 instances=len(module.last_instances[name]))
        metrics.update(checkpoint=str(checkpoint))
    else:
        metrics.update(checkpoint=str(checkpoint), val_json=str(cfg.data.val_json),
                       predictions=str(out / "predictions.json"), instances=len(module.last_instances))
    if trainer.is_global_zero:
        if multi:
            for name, preds in module.last_predictions.items():
                save_predictions(preds, out / f"predictions-{name}.json")
        else:
            save_predictions(module.last_predictions, out / "predictions.json")
        write_json_atomic(out / "metrics.json", metrics, indent=1)
        if render > 0:
            render_predictions(trainer, module, out / "vis", render)
    return metrics


def render_predictions(trainer, module, vis_dir: Path, num: int) -> None:
    """The first ``num`` val images (by image id) with the predictions just scored on them, drawn with
    :func:`sagepose.viz.draw_poses` into ``vis_dir`` (a folder per dataset of a multi-dataset run)."""
    import cv2
    import numpy as np

    from sagepose.image import read_image
    from sagepose.viz import draw_poses

    loaders = trainer.val_dataloaders
    if module.plan is None:
        sets = [(vis_dir, loaders.dataset, module.last_predictions, module.model.schema)]
    else:
        sets = []
        for loader, m in zip(loaders, module.plan.scored()):
            member = module.plan.members[m]
            sets.append((vis_dir / member.name, loader.dataset.dataset, module.last_predictions.get(member.name, []),
                         member.schema))
    for folder, dataset, predictions, schema in sets:
        paths = {r.image_id: r.image_path for r in dataset.records}
        by_image: dict[int, list] = {}
        for p in predictions:
            by_image.setdefault(p["image_id"], []).append(p["keypoints"])
        folder.mkdir(parents=True, exist_ok=True)
        for image_id in sorted(by_image)[:num]:
            kpts = np.asarray(by_image[image_id], np.float32).reshape(len(by_image[image_id]), -1, 3)
            image = draw_poses(read_image(paths[image_id]), kpts[..., :2], kpts[..., 2], schema)
            cv2.imwrite(str(folder / f"{Path(paths[image_id]).stem}.png"), image)
