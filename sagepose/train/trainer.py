"""The Lightning Trainer of a run, from ``trainer.*``: precision, devices, DDP / FSDP, when to validate, logging.

One process or many: ``sagepose train CONFIG trainer.strategy=ddp trainer.devices=4`` under
``torchrun --nproc_per_node 4`` (or ``srun`` under SLURM) -- Lightning reads the launcher's environment; the
per-rank data shards are the loaders' (:mod:`sagepose.train.loaders`).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L

from sagepose.config import Config, TrainerConfig
from sagepose.train.loaders import uses_cuda


def build_strategy(cfg: Config):
    """``trainer.strategy`` as Lightning takes it; "fsdp" shards per transformer block."""
    t = cfg.trainer
    if t.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from sagepose.models.zoo import block_type

        # one FSDP unit per block of the backbone's block class (ViT's, Sapiens2's: the backbone names it; none:
        # the model is one unit); activation checkpointing by the same policy (fit turns the backbone's own off),
        # and full state dicts, so a checkpoint loads anywhere
        blocks = {block} if (block := block_type(cfg.model)) is not None else None
        return FSDPStrategy(auto_wrap_policy=blocks, state_dict_type="full", cpu_offload=t.fsdp_cpu_offload,
                            activation_checkpointing_policy=blocks if cfg.model.grad_checkpointing else None)
    if t.strategy == "ddp" and cfg.optim.freeze_backbone_epochs > 0:
        return "ddp_find_unused_parameters_true"  # a frozen backbone has no gradients for DDP to reduce
    return t.strategy


def build_trainer(cfg: Config, out_dir: Path, callbacks=()) -> L.Trainer:
    """The training Trainer: atomic checkpoint writes, TensorBoard logs in ``out_dir/logs``, ``callbacks`` (and a
    progress bar when ``trainer.progress_bar``); no sanity validation, no distributed sampler (the loaders shard)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from sagepose.train.checkpoints import AtomicCheckpointIO

    t = cfg.trainer
    max_time = None if t.max_time_minutes is None else {"minutes": t.max_time_minutes}
    if t.progress_bar:  # on a GPU a bar redrawn every step reads the logged loss every step: every N steps
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=t.log_every_steps if uses_cuda(cfg) else 1)]
    return L.Trainer(
        default_root_dir=str(out_dir), max_epochs=t.max_epochs, max_steps=t.max_steps,
        max_time=max_time, precision=t.precision, accumulate_grad_batches=t.accumulate_grad_batches,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=build_strategy(cfg),
        sync_batchnorm=t.sync_batchnorm, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
        gradient_clip_val=cfg.optim.grad_clip, **validation_interval(t),
        log_every_n_steps=t.log_every_steps, enable_progress_bar=t.progress_bar,
        logger=TensorBoardLogger(str(out_dir), name="logs", version=""), callbacks=list(callbacks),
        num_sanity_val_steps=0)


def build_eval_trainer(cfg: Config) -> L.Trainer:
    """The Trainer of ``sagepose test``: the run's devices and precision, no logger, no checkpoints."""
    t = cfg.trainer
    strategy = "auto" if t.strategy == "fsdp" else build_strategy(cfg)  # inference needs no sharded optimizer
    return L.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
                     precision=t.precision, use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                     enable_progress_bar=t.progress_bar, enable_model_summary=False)


def validation_interval(t: TrainerConfig) -> dict:
    """Lightning's arguments for when to validate: every ``trainer.val_every_steps`` optimizer steps, counted over
    epochs (Lightning counts training batches) -- at most ``trainer.max_steps``, so a shortened run still validates
    at its end -- or every ``trainer.val_every_epochs`` epochs."""
    if t.val_every_steps > 0:
        every = min(t.val_every_steps, t.max_steps) if t.max_steps > 0 else t.val_every_steps
        return dict(check_val_every_n_epoch=None, val_check_interval=every * t.accumulate_grad_batches)
    return dict(check_val_every_n_epoch=t.val_every_epochs)
