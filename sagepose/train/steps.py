"""How long a run is, in optimizer steps, and the schedules sized by it.

A run is bounded by ``trainer.max_steps`` or by ``trainer.max_epochs`` (whichever comes first, as Lightning does);
:func:`describe_steps` is the line every run prints about it. Schedules given as a fraction of the run
(``optim.warmup_fraction``, ``ssl.rampup_fraction``, ``ssl.mask_warmup_fraction``) become step counts with
:func:`schedule_steps`, so they complete however long the run is -- 30 labeled frames or 30 000.
"""
from __future__ import annotations

from sagepose.config import TrainerConfig


def schedule_steps(iters: int, fraction: float | None, total: int) -> int:
    """A schedule's length in steps: ``fraction`` of ``total`` when it is set, else ``iters``."""
    return iters if fraction is None else int(round(fraction * total))


def describe_steps(t: TrainerConfig, total: int, per_epoch: int, batch_size: int) -> str:
    """One line: how many optimizer steps the run takes and what bounds it (``per_epoch``: steps an epoch of the
    training data at ``batch_size``)."""
    epoch = f"{per_epoch} step{'s' if per_epoch != 1 else ''} an epoch at batch {batch_size}"
    if t.max_steps > 0 and total >= t.max_steps:
        return f"training {total} optimizer steps: trainer.max_steps={t.max_steps} ({epoch})"
    return f"training {total} optimizer steps: trainer.max_epochs={t.max_epochs} x {epoch}"


def planned_steps(t: TrainerConfig, per_epoch: int) -> int:
    """The optimizer steps a run of ``per_epoch`` steps an epoch takes, as Lightning bounds it: the fewer of
    ``trainer.max_steps`` (when set) and ``trainer.max_epochs`` epochs (when set)."""
    bounds = [t.max_steps] if t.max_steps > 0 else []
    if t.max_epochs > 0:
        bounds.append(t.max_epochs * per_epoch)
    return min(bounds)
