"""Ctrl-C and SIGTERM stop training at the end of the current optimizer step, with a resumable checkpoint.

:class:`StopSignals` notes SIGINT / SIGTERM instead of obeying them; :class:`sagepose.train.checkpoints.LastCheckpoint`
polls it after every optimizer step, writes ``checkpoints/last.ckpt`` (mid-epoch resumable) and raises
:class:`TrainingInterrupted`, which ``fit`` passes on and ``sagepose train`` turns into one line and exit status
128 + the signal's number (130 for SIGINT, 143 for SIGTERM). A second signal ends the process at once, by that
signal, as if nothing had caught the first (a checkpoint being written then stays the previous complete one).
"""
from __future__ import annotations

import os
import signal
import threading

from sagepose.errors import SagePoseError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(SagePoseError):
    """Training stopped on a signal after writing ``checkpoint``, which ``--resume`` continues from."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum  # the shell's status for a process ended by that signal
        super().__init__(f"interrupted at step {step} ({signal.Signals(signum).name}); resumable checkpoint "
                         f"{checkpoint}")


class StopSignals:
    """SIGINT and SIGTERM while installed: the first one's number goes to ``received``, a second ends the process.

    Only the main thread may set signal handlers; elsewhere (a notebook's worker thread) installing does nothing.
    """

    def __init__(self):
        self.received = 0  # the first signal's number, 0 while none came
        self._previous = {}

    def install(self) -> None:
        self.received = 0
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _note(self, signum, frame) -> None:
        if self.received:  # asked twice: stop waiting for the step, die of the signal as an uncaught one would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received = signum
