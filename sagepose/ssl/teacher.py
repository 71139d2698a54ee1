"""The one teacher: an exponential moving average of the student, frozen and always in eval mode."""
from __future__ import annotations

import copy

import torch
from torch import nn


def _unwrap(module: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _to_float32(out):
    """Floating tensors of a model output (a tensor, or tuples / lists / dicts of them) -> float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(v) for v in out)
    return out


class EMATeacher(nn.Module):
    """A deep copy of the student (``self.model``), updated as an EMA of its parameters every optimizer step.

    The copy takes no gradients and stays in eval mode whatever ``train()`` is called with (dropout off,
    BatchNorm on its running statistics, which :meth:`update` copies from the student). Being a submodule, its
    weights land in the owner's ``state_dict``, so a checkpoint carries the teacher and a resume restores it.

    ``shared``: parameters of the student that never train (an adapter run's frozen base,
    :func:`sagepose.models.lora.frozen_base`): the teacher holds the same tensors instead of a copy, and the average
    runs over the other parameters only -- one copy of the base, two of the small trained part. Never parameters
    frozen for a while (the freeze-backbone phase): those train later, and the teacher must average them.
    """

    def __init__(self, student: nn.Module, decay: float = 0.999, shared=()):
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"EMATeacher: decay must be in [0, 1), got {decay}")
        self.decay = decay
        shared = list(shared)
        if any(p.requires_grad for p in shared):
            raise ValueError("EMATeacher: a shared parameter must be frozen (requires_grad=False)")
        self._shared = {id(p) for p in shared}
        self.model = copy.deepcopy(_unwrap(student), memo={id(p): p for p in shared})
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        super().train(mode)
        self.model.eval()
        return self

    def decay_at(self, step: int) -> float:
        """min(decay, (1 + step) / (10 + step)): early on the teacher follows the student closely (0.1 at step 0,
        0.5 at step 8), as the student still changes fast, and averages over ~1 / (1 - decay) steps later."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        """teacher = d * teacher + (1 - d) * student for every parameter not shared (d = :meth:`decay_at`); buffers
        copied.

        ``student`` is the module the teacher was copied from (a DDP or ``torch.compile`` wrapper is looked
        through), with the same parameter names.
        """
        student = _unwrap(student)
        t_params, s_params = dict(self.model.named_parameters()), dict(student.named_parameters())
        if t_params.keys() != s_params.keys():
            missing = sorted(t_params.keys() ^ s_params.keys())[:3]
            raise ValueError(f"EMATeacher.update: the student's parameters differ from the teacher's (e.g. {missing})")
        names = [n for n in t_params if id(t_params[n]) not in self._shared]  # a shared base is the student's
        teacher_p = [t_params[n] for n in names]
        student_p = [s_params[n].detach().to(t_params[n].dtype) for n in names]
        d = self.decay_at(step)
        torch._foreach_mul_(teacher_p, d)
        torch._foreach_add_(teacher_p, student_p, alpha=1.0 - d)
        s_buffers = dict(student.named_buffers())
        pairs = [(buf, s_buffers[name]) for name, buf in self.model.named_buffers() if name in s_buffers]
        if pairs:
            torch._foreach_copy_([t for t, _ in pairs], [s for _, s in pairs])

    @torch.no_grad()
    def forward(self, x: torch.Tensor, autocast_dtype: torch.dtype | None = None):
        """The teacher's output for ``x``, without a graph; in autocast of ``autocast_dtype`` (None: the input's
        precision), floating outputs returned as float32."""
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = self.model(x)
        return _to_float32(out)
