"""The non-finite guard: an optimizer step whose loss or gradient is not finite is skipped, the weights untouched.

Its gradients are dropped before the optimizer sees them (AdamW leaves a parameter without a gradient untouched: no
update, no decay, no moment change) and BatchNorm statistics -- written by the forward pass before any loss is seen
-- are put back; ``trainer.max_nonfinite_steps`` such steps in a row stop the run. Every rank takes the same
decision (one small reduction a step), so DDP / FSDP ranks never drift apart.

With a fused AdamW (``optim.fused``) the decision stays on the device: the optimizer's ``found_inf`` makes its kernel
skip the update, as under a GradScaler, and the counters are device tensors read every ``trainer.log_every_steps``
steps (so a run of bad steps stops at the next such read). Otherwise the decision is read on the host each step.

The LightningModule drives it: :meth:`NonFiniteGuard.start_step` at the first micro-batch of an optimizer step,
:meth:`~NonFiniteGuard.mark` with every micro-batch's loss, :meth:`~NonFiniteGuard.before_optimizer_step` from its
``on_before_optimizer_step``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def skips_on_device(optimizer) -> bool:
    """Whether the optimizer skips a step itself on a ``found_inf`` flag (torch's fused Adam / AdamW)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


def running_stats(model: nn.Module) -> list[torch.Tensor]:
    """Persistent buffers (BatchNorm running statistics and counters): a forward pass over a bad batch writes them
    before any loss is seen."""
    return [b for m in model.modules() for name, b in m.named_buffers(recurse=False)
            if name not in m._non_persistent_buffers_set]


class NonFiniteGuard:
    """Skips the optimizer steps with a non-finite loss or gradient and counts them: ``skipped_steps`` in all,
    ``skipped_in_row`` now (both carried by checkpoints: :meth:`state_dict`)."""

    def __init__(self, max_in_row: int, out_dir: str):
        self.max_in_row, self.out_dir = max_in_row, out_dir
        self.skipped_steps = 0
        self.skipped_in_row = 0
        self._bad: torch.Tensor | None = None  # any non-finite loss in this step's micro-batches
        self._stats_before: list[torch.Tensor] = []
        # the on-device path's counters: skipped since the last read, in a row now, most in a row since the last read
        self._counters: torch.Tensor | None = None

    def start_step(self, device: torch.device, stats: list[torch.Tensor]) -> None:
        """A new optimizer step begins (its first micro-batch): no bad loss yet; ``stats`` (:func:`running_stats`)
        kept to put back."""
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._stats_before = [b.clone() for b in stats]

    def mark(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss; not acted on here: every DDP rank must still run backward."""
        self._bad |= ~torch.isfinite(loss.detach())

    def before_optimizer_step(self, optimizer, parameters: list[torch.nn.Parameter], stats: list[torch.Tensor],
                              strategy, step: int, read_now: bool, log: Callable[[float], None]) -> None:
        """Skip the step (no weight, moment or BatchNorm-statistics update) if its loss or gradient is not finite on
        any rank (``strategy``: Lightning's, for the reduction); stop the run after ``max_in_row`` such steps in a
        row. ``stats``: the model's :func:`running_stats` now; ``step``: the global step, for the message;
        ``read_now``: read the on-device counters this step; ``log(skipped_steps)`` when the count grew."""
        grads = [p.grad for p in parameters if p.grad is not None]
        bad = self._bad.clone()
        if grads:  # the norm of all gradients overflows or turns NaN iff some gradient is not finite
            norms = torch._foreach_norm(grads)
            total = torch.linalg.vector_norm(torch.stack([n.float().to(bad.device) for n in norms]))
            bad |= ~torch.isfinite(total)
        # every rank must take the same decision (their gradients may be sharded): one small reduction a step
        bad = strategy.reduce(bad.float(), reduce_op="max") > 0
        if skips_on_device(optimizer):
            optimizer.found_inf = bad.float()
            for buf, before in zip(stats, self._stats_before):
                buf.copy_(torch.where(bad, before, buf))
            if self._counters is None:
                self._counters = torch.tensor([0, self.skipped_in_row, self.skipped_in_row], device=bad.device)
            in_row = (self._counters[1] + 1) * bad
            self._counters = torch.stack([self._counters[0] + bad, in_row, torch.maximum(self._counters[2], in_row)])
            if read_now:
                self.read(step, log)
            return
        if not bad.item():
            self.skipped_in_row = 0
            return
        for p in parameters:
            p.grad = None
        for buf, before in zip(stats, self._stats_before):
            buf.copy_(before)
        self.skipped_steps += 1
        self.skipped_in_row += 1
        log(float(self.skipped_steps))
        self._check_in_row(self.skipped_in_row, step)

    def read(self, step: int, log: Callable[[float], None] | None = None) -> None:
        """The on-device counters into ``skipped_steps`` / ``skipped_in_row`` (one host read; nothing to do on the
        host path); ``log(skipped_steps)`` when the count grew."""
        if self._counters is None:
            return
        skipped, in_row, most = (int(v) for v in self._counters.tolist())
        self._counters = torch.tensor([0, in_row, in_row], dtype=torch.int64, device=self._counters.device)
        self.skipped_steps += skipped
        if skipped and log is not None:
            log(float(self.skipped_steps))
        self.skipped_in_row = in_row
        self._check_in_row(most, step)

    def _check_in_row(self, in_row: int, step: int) -> None:
        if in_row >= self.max_in_row:
            raise FloatingPointError(
                f"stopping: {in_row} optimizer steps in a row (the last at step {step} or before) had a non-finite "
                f"loss or gradient; they were skipped without updating the weights. Lower optim.lr, check the data, "
                f"or raise trainer.max_nonfinite_steps (now {self.max_in_row}); the last complete checkpoint is in "
                f"{self.out_dir}/checkpoints/.")

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "skipped_in_row": self.skipped_in_row}

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps, self.skipped_in_row = state["skipped_steps"], state["skipped_in_row"]
