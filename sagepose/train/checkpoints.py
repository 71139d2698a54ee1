"""Checkpoints that survive a kill: atomic writes, a completeness check, and which file to resume from.

    checkpoints/last.ckpt        every epoch end (with ``trainer.checkpoint_every_steps``, those closer than that
                                 to the previous save skipped), every ``trainer.checkpoint_every_minutes`` of
                                 training, every ``trainer.checkpoint_every_steps`` steps, and on SIGINT / SIGTERM
                                 (then training stops: :mod:`sagepose.train.interrupt`); all resumable mid-epoch
    checkpoints/best.ckpt        best ``val/AP`` so far (``val/pixel_error``, lowest, for a schema without OKS sigmas)
    checkpoints/epoch-EEE.ckpt   kept every ``trainer.keep_every_epochs`` epochs

Every file is written to a hidden temporary name, flushed to the disk (fsync) and renamed over the
target, so a process killed mid-write leaves the previous complete file in place and never a
``.ckpt`` that looks complete but is not. A file truncated some other way (a full disk, a partial
copy) fails :func:`checkpoint_problem` and :func:`find_resume_checkpoint` falls back to the newest
complete one.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from sagepose.config import TrainerConfig
from sagepose.fileio import atomic_open
from sagepose.train.interrupt import StopSignals, TrainingInterrupted


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoint I/O, written as temporary file + fsync + rename.

    Also streams straight to the file (Lightning's own writer first serialises the whole checkpoint
    into memory, a second copy of it: 13 GB for Sapiens-1B with its optimizer state).
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_open(path) as f:
            torch.save(checkpoint, f)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None if it is.

    torch.save writes a zip archive whose directory sits at the very end of the file, with a CRC per
    record: a truncated file has no directory, a damaged one fails a CRC. Reads the whole file.
    """
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                return f"record {bad!r} fails its CRC check"
            if not any(name.endswith("/data.pkl") for name in z.namelist()):
                return "no pickled checkpoint inside the archive"
    except zipfile.BadZipFile as e:
        return f"truncated or not a torch checkpoint ({e})"
    except (OSError, EOFError) as e:
        return f"unreadable ({e})"
    return None


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` if complete, else the newest complete ``*.ckpt``.

    Every file skipped is reported with the reason; returns None when there is none to resume from.
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime_ns),
                        reverse=True)
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        rank_zero_warn(f"{path}: not a complete checkpoint: {problem}; skipping it and falling back to the "
                       "previous one")
    return None


class NamedCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint told apart from the others by its file name too (Lightning's key holds only the
    triggers, so "best by a metric" and "keep one every epoch" could share their saved state)."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename, save_last=self.save_last, monitor=self.monitor,
                                        every_n_train_steps=self._every_n_train_steps,
                                        every_n_epochs=self._every_n_epochs)


class LastCheckpoint(Checkpoint):
    """``checkpoints/last.ckpt``, the point ``--resume`` continues from: written at every epoch end, every
    ``every_steps`` optimizer steps, every ``every_minutes`` of training (``clock``: seconds), and when SIGINT or
    SIGTERM comes -- then training stops after the step with :class:`TrainingInterrupted`.

    Not Lightning's ModelCheckpoint: with ``save_top_k=0`` it writes ``last`` at an epoch's end only when a top-k file
    was written at that step, so a run without validation had no resume point until it finished. As a Lightning
    ``Checkpoint`` it runs after the other callbacks of a step (the EMA update included), so the file holds the
    finished step. Every rank decides alike at the same step: under DDP the signal and the clock are reduced (max)
    once per optimizer step -- a signal to one rank stops them all -- and rank 0 writes.
    """

    monitor = None  # chosen by no metric (as the ModelCheckpoints beside it say with theirs)

    def __init__(self, path: str | Path, every_steps: int = 0, every_minutes: float | None = None,
                 clock=time.monotonic):
        self.path, self.every_steps, self.clock = str(path), every_steps, clock
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self.signals = StopSignals()

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning's own SIGTERM handler is set (it would end the run unsaved), which this one replaces
        self.signals.install()
        self._saved_step = self._stepped = trainer.global_step  # a resumed run's state is on disk already
        self._since = self.clock()

    def on_train_batch_end(self, trainer, *args) -> None:
        step = trainer.global_step
        if step == self._stepped:  # a batch accumulated into a step that is not finished
            return
        self._stepped = step
        signum, due = self._agreed(trainer)
        if signum or due or (self.every_steps and step % self.every_steps == 0):
            self._save(trainer)
        if signum:
            raise TrainingInterrupted(signum, step, self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        signum, _ = self._agreed(trainer)  # a signal during validation stops the run here
        recent = self.every_steps and trainer.global_step - self._saved_step < self.every_steps
        if signum or not recent:  # one-step epochs (a few labeled frames) save every every_steps, not every step
            self._save(trainer)  # also after a save at this step's batch end: the epoch's end is a later state
        if signum:
            raise TrainingInterrupted(signum, trainer.global_step, self.path)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:  # ended with no epoch end after its last step: keep it
            self._save(trainer)
        self.signals.restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.signals.restore()

    def _agreed(self, trainer) -> tuple[int, bool]:
        """(the signal any rank received, 0 if none; whether the time-based checkpoint is due on any rank)."""
        local = [self.signals.received,
                 int(self.every_seconds is not None and self.clock() - self._since >= self.every_seconds)]
        if trainer.world_size > 1:
            local = trainer.strategy.reduce(torch.tensor(local, device=trainer.strategy.root_device),
                                            reduce_op="max").tolist()
        return local[0], bool(local[1])

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # resumable: optimizer, loops, callbacks
        self._saved_step, self._since = trainer.global_step, self.clock()


def monitor_for(schema) -> tuple[str, str]:
    """The metric that picks ``best.ckpt`` for a keypoint schema, and its mode: ``("val/AP", "max")`` when the
    schema has OKS sigmas, else ``("val/pixel_error", "min")``."""
    return ("val/AP", "max") if schema.has_sigmas else ("val/pixel_error", "min")


def checkpoint_callbacks(t: TrainerConfig, ckpt_dir: str | Path, monitor: str | None,
                         mode: str = "max") -> list[Checkpoint]:
    """The callbacks writing last / best / every-N files into ``ckpt_dir``: :class:`LastCheckpoint`, and Lightning
    ModelCheckpoints for ``best`` -- the checkpoint with the highest (``mode="max"``) or lowest (``"min"``)
    ``monitor`` (see :func:`monitor_for`) -- and the kept ``epoch-EEE`` files."""
    minutes = t.checkpoint_every_minutes  # >= 0 or None (config.validate)
    common = dict(dirpath=str(ckpt_dir), enable_version_counter=False, auto_insert_metric_name=False)
    callbacks = [LastCheckpoint(Path(ckpt_dir) / "last.ckpt", every_steps=t.checkpoint_every_steps,
                                every_minutes=minutes)]
    if monitor is not None:
        callbacks.append(NamedCheckpoint(filename="best", monitor=monitor, mode=mode, save_top_k=1, **common))
    if t.keep_every_epochs > 0:
        callbacks.append(NamedCheckpoint(filename="epoch-{epoch:03d}", every_n_epochs=t.keep_every_epochs,
                                         save_top_k=-1, save_on_train_epoch_end=True, **common))
    return callbacks
