"""Entry points behind ``sagepose train`` / ``sagepose test`` (and the demo): plain code, no registry."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sagepose.config import Config, dump_config

# DataConfig fields that are TopDownSampler arguments of the same name
_SAMPLER_AUGMENT_FIELDS = ("flip_prob", "half_body_prob", "scale_factor", "rotate_factor", "rotate_prob",
                           "shift_factor", "shift_prob")


def build_loaders(cfg: Config, model, train: bool = True):
    """Train and val DataLoaders for a top-down model (val on GT boxes, or on ``data.det_json``)."""
    from sagepose.data import TopDownDataset, TopDownSampler, collate, load_coco, load_detections

    d = cfg.data
    schema = model.schema
    common = dict(schema=schema, input_size=tuple(model.input_size), udp=model.codec.udp)
    loaders = {}
    if train:
        if not d.train_json:
            raise ValueError("data.train_json is not set")
        augment = {name: getattr(d, name) for name in _SAMPLER_AUGMENT_FIELDS}
        sampler = TopDownSampler(**common, **augment)
        records = load_coco(d.train_json, schema=schema, image_root=d.image_root, mode="train")
        ds = TopDownDataset(records, sampler, train=True, seed=cfg.trainer.seed)
        loaders["train"] = torch.utils.data.DataLoader(
            ds, batch_size=d.batch_size, shuffle=True, num_workers=d.num_workers, collate_fn=collate,
            drop_last=len(ds) > d.batch_size, persistent_workers=d.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.trainer.seed))
    if d.val_json:
        sampler = TopDownSampler(**common)
        if d.det_json:
            records = load_detections(d.det_json, d.val_json, schema=schema, image_root=d.image_root)
        else:
            records = load_coco(d.val_json, schema=schema, image_root=d.image_root, mode="val")
        ds = TopDownDataset(records, sampler, train=False, seed=cfg.trainer.seed)
        loaders["val"] = torch.utils.data.DataLoader(
            ds, batch_size=d.val_batch_size, shuffle=False, num_workers=d.num_workers, collate_fn=collate,
            persistent_workers=d.num_workers > 0)
    return loaders


def _trainer(cfg: Config, out_dir: Path, callbacks=()):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    t = cfg.trainer
    max_time = None if t.max_time_minutes is None else {"minutes": t.max_time_minutes}
    return L.Trainer(
        default_root_dir=str(out_dir), max_epochs=t.max_epochs, max_steps=t.max_steps,
        max_time=max_time, precision=t.precision, accumulate_grad_batches=t.accumulate_grad_batches,
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        gradient_clip_val=cfg.optim.grad_clip, check_val_every_n_epoch=t.val_every_epochs,
        log_every_n_steps=t.log_every_steps, enable_progress_bar=t.progress_bar,
        logger=TensorBoardLogger(str(out_dir), name="logs", version=""), callbacks=list(callbacks),
        num_sanity_val_steps=0)


def fit(cfg: Config, resume: bool = False) -> dict:
    """Train per ``cfg``; writes ``OUT/config.yaml``, ``OUT/checkpoints/{best,last}.ckpt``, TensorBoard logs.

    Returns paths and the best val AP.
    """
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from sagepose.train.module import TopDownModule

    out = Path(cfg.trainer.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    print(f"resolved config (saved to {out / 'config.yaml'}):\n{dump_config(cfg)}")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = TopDownModule(cfg, val_gt_json=cfg.data.val_json)
    loaders = build_loaders(cfg, module.model)
    ckpt_dir = out / "checkpoints"
    has_val = "val" in loaders
    # one callback writes both: best by val AP (when validating) and last after every epoch
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor="val/AP" if has_val else None,
                                 mode="max", save_top_k=1 if has_val else 0, save_last=True,
                                 enable_version_counter=False)
    callbacks = [checkpoint, LearningRateMonitor(logging_interval="step")]
    trainer = _trainer(cfg, out, callbacks)
    resume_path = ckpt_dir / "last.ckpt" if resume and (ckpt_dir / "last.ckpt").exists() else None
    start = time.time()
    trainer.fit(module, loaders["train"], loaders.get("val"), ckpt_path=resume_path)
    best = checkpoint.best_model_path if has_val else ""
    summary = {"best_checkpoint": best or str(ckpt_dir / "last.ckpt"),
               "last_checkpoint": str(ckpt_dir / "last.ckpt"),
               "best_val_AP": float(checkpoint.best_model_score) if has_val and checkpoint.best_model_score
               is not None else None,
               "train_minutes": round((time.time() - start) / 60, 2), "steps": trainer.global_step}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def test(cfg: Config, checkpoint: str | None, out_dir: str | Path | None = None) -> dict:
    """Evaluate a checkpoint on ``data.val_json`` (GT boxes or ``data.det_json``).

    Writes ``OUT/predictions.json`` (COCO results) and ``OUT/metrics.json``; returns the metrics.
    """
    from sagepose.eval import evaluate_coco
    from sagepose.models.checkpoint import load_checkpoint
    from sagepose.train.module import TopDownModule, save_predictions

    if not cfg.data.val_json:
        raise ValueError("data.val_json is not set")
    out = Path(out_dir or cfg.trainer.out_dir)
    module = TopDownModule(cfg, val_gt_json=cfg.data.val_json)
    if checkpoint:
        load_checkpoint(module.model, checkpoint)
    loaders = build_loaders(cfg, module.model, train=False)
    _trainer_eval(cfg).validate(module, loaders["val"], verbose=False)
    results = module.last_predictions
    save_predictions(results, out / "predictions.json")
    metrics = evaluate_coco(cfg.data.val_json, results, sigmas=module.model.schema.sigmas_array()).as_dict()
    metrics.update(checkpoint=str(checkpoint), val_json=str(cfg.data.val_json),
                   predictions=str(out / "predictions.json"))
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    tmp.replace(out / "metrics.json")
    return metrics


def _trainer_eval(cfg: Config):
    import lightning as L

    t = cfg.trainer
    return L.Trainer(accelerator=t.accelerator, devices=1, precision=t.precision, logger=False,
                     enable_checkpointing=False, enable_progress_bar=t.progress_bar, enable_model_summary=False)
