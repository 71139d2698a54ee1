"""A test-only Lightning callback that interrupts a training run from inside, at a chosen optimizer step.

No clock is raced: the process signals itself from the training loop, so where the run stops is exact. Training
children import it from ``tests/`` (:data:`TESTS`, put on their ``PYTHONPATH``) and pass it to
``sagepose.train.run.fit(callbacks=...)``.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback

TESTS = Path(__file__).resolve().parent

# one line per finished optimizer step of every rank
STEP_LINE = re.compile(r"step done: rank (?P<rank>\d+) pid (?P<pid>\d+) step (?P<step>\d+)")


class StopAt(Callback):
    """Prints a :data:`STEP_LINE` after each optimizer step; on ``rank`` (every rank: None), sends the process
    ``signum`` at ``step``.

    SIGINT / SIGTERM arrive as optimizer step ``step`` ends, before the checkpoint callbacks of that step run (a
    plain callback runs before Lightning's ``Checkpoint`` ones): the run's own handler takes them there. SIGKILL
    arrives when the next batch starts, so everything step ``step`` writes (its checkpoint) is on disk and nothing of
    the next step is: a kill between two steps.
    """

    def __init__(self, step: int = -1, signum: int = 0, rank: int | None = 0):
        self.step, self.signum, self.rank = step, signum, rank
        self._done = None  # the last step a line was printed for (a batch accumulated into a step prints none)

    def _here(self, trainer) -> bool:
        return self.signum != 0 and trainer.global_step == self.step and self.rank in (None, trainer.global_rank)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self._done:
            return
        self._done = trainer.global_step
        # one write: the line stays whole in a pipe that other ranks write into
        os.write(1, f"step done: rank {trainer.global_rank} pid {os.getpid()} step {trainer.global_step}\n".encode())
        if self._here(trainer) and self.signum != signal.SIGKILL:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, *args) -> None:
        if self._here(trainer) and self.signum == signal.SIGKILL:
            os.kill(os.getpid(), signal.SIGKILL)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a training child process that imports this module."""
    path = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(path), **extra}
