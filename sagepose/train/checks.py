"""What refuses a run before any work: the config's own checks, then what the config alone cannot tell."""
from __future__ import annotations

import torch

from sagepose.config import Config, ConfigError, validate
from sagepose.train.warm_start import is_checkpoint_spec, stage_config


def check_run(cfg: Config) -> None:
    """Refuse, before any work, a run that cannot start: a config :func:`sagepose.config.validate` refuses (values,
    and combinations training does not support), then what the config alone cannot tell and ``validate`` leaves to
    here -- a warm-start recipe that does not load (another file, read through :mod:`sagepose.train.warm_start`,
    which stands above ``config``) and ``trainer.accelerator=gpu`` without a CUDA GPU (this machine's torch)."""
    validate(cfg)
    if cfg.ssl.warm_start and not is_checkpoint_spec(cfg.ssl.warm_start):
        stage_config(cfg)  # an unknown recipe or a missing file: one line before any work
    if cfg.distill.teacher:
        check_teacher(cfg.distill.teacher)
    check_accelerator(cfg)


def check_teacher(spec: str) -> None:
    """``distill.teacher`` names a file or published weights (:data:`sagepose.hub.WEIGHTS`): one line otherwise,
    before the run folder is made (the file's content is read when the run starts)."""
    from pathlib import Path

    from sagepose.hub import WEIGHTS

    if Path(spec).is_file() or spec in WEIGHTS:
        return
    raise ConfigError(f"distill.teacher={spec}: neither a checkpoint file nor published weights (a sagepose.hub name, "
                      "e.g. vitpose-b-coco); a zoo name alone has no trained weights to teach with",
                      key="distill.teacher")


def check_accelerator(cfg: Config) -> None:
    """``trainer.accelerator=gpu`` / ``cuda`` on a machine without a CUDA GPU: one line naming the setting, before
    Lightning starts (its own error is a traceback)."""
    a = cfg.trainer.accelerator
    if a in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={a!r}: no CUDA GPU is visible to torch on this machine "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use "
                          "trainer.accelerator=cpu or auto", key="trainer.accelerator")
