"""Checkpoints that survive a kill: atomic writes, a completeness check, and which file to resume from.

    checkpoints/last.ckpt        every epoch end, and every ``trainer.checkpoint_every_steps`` steps
    checkpoints/best.ckpt        best ``val/AP`` so far (``val/pixel_error``, lowest, for a schema without OKS sigmas)
    checkpoints/epoch-EEE.ckpt   kept every ``trainer.keep_every_epochs`` epochs

Every file is written to a hidden temporary name, flushed to the disk (fsync) and renamed over the
target, so a process killed mid-write leaves the previous complete file in place and never a
``.ckpt`` that looks complete but is not. A file truncated some other way (a full disk, a partial
copy) fails :func:`checkpoint_problem` and :func:`find_resume_checkpoint` falls back to the newest
complete one.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from sagepose.config import TrainerConfig
from sagepose.fileio import atomic_open


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
    triggers, so "last at every epoch" and "keep one every epoch" would share their saved state)."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename, save_last=self.save_last, monitor=self.monitor,
                                        every_n_train_steps=self._every_n_train_steps,
                                        every_n_epochs=self._every_n_epochs)


def monitor_for(schema) -> tuple[str, str]:
    """The metric that picks ``best.ckpt`` for a keypoint schema, and its mode: ``("val/AP", "max")`` when the
    schema has OKS sigmas, else ``("val/pixel_error", "min")``."""
    return ("val/AP", "max") if schema.has_sigmas else ("val/pixel_error", "min")


def checkpoint_callbacks(t: TrainerConfig, ckpt_dir: str | Path, monitor: str | None,
                         mode: str = "max") -> list[ModelCheckpoint]:
    """Lightning ModelCheckpoint callbacks writing last / best / every-N files into ``ckpt_dir``; ``best`` is the
    checkpoint with the highest (``mode="max"``) or lowest (``"min"``) ``monitor`` (see :func:`monitor_for`).

    ``last`` takes two callbacks when it is also written every N steps: Lightning keeps step and epoch
    triggers in separate callbacks.
    """
    common = dict(dirpath=str(ckpt_dir), enable_version_counter=False, auto_insert_metric_name=False)
    callbacks = [NamedCheckpoint(save_top_k=0, save_last=True, every_n_epochs=1, save_on_train_epoch_end=True,
                                 **common)]
    if t.checkpoint_every_steps > 0:
        callbacks.append(NamedCheckpoint(save_top_k=0, save_last=True, every_n_train_steps=t.checkpoint_every_steps,
                                         **common))
    if monitor is not None:
        callbacks.append(NamedCheckpoint(filename="best", monitor=monitor, mode=mode, save_top_k=1, **common))
    if t.keep_every_epochs > 0:
        callbacks.append(NamedCheckpoint(filename="epoch-{epoch:03d}", every_n_epochs=t.keep_every_epochs,
                                         save_top_k=-1, save_on_train_epoch_end=True, **common))
    return callbacks
