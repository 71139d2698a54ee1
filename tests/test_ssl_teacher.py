"""sagepose.ssl.teacher.EMATeacher: EMA numbers by hand, frozen and eval, buffers, state_dict, autocast."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sagepose.ssl.teacher import EMATeacher


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.drop(self.bn(self.conv(x))))


def _net(seed: int = 0) -> _Net:
    torch.manual_seed(seed)
    return _Net()


def test_ema_equals_a_hand_computation():
    student = _net()
    teacher = EMATeacher(student, decay=0.9)
    w0 = student.head.weight.detach().clone()
    with torch.no_grad():
        student.head.weight.add_(1.0)
    teacher.update(student, step=0)  # decay ramp: min(0.9, 1 / 10) = 0.1
    torch.testing.assert_close(teacher.model.head.weight, 0.1 * w0 + 0.9 * (w0 + 1.0))
    w1 = teacher.model.head.weight.detach().clone()
    with torch.no_grad():
        student.head.weight.add_(2.0)
    teacher.update(student, step=1000)  # ramp (1001 / 1010) > 0.9: the decay itself
    torch.testing.assert_close(teacher.model.head.weight, 0.9 * w1 + 0.1 * (w0 + 3.0))
    assert teacher.decay_at(8) == pytest.approx(0.5) and teacher.decay_at(10**6) == 0.9


def test_buffers_are_copied_not_averaged():
    student = _net()
    teacher = EMATeacher(student, decay=0.99)
    student.train()
    student(torch.randn(4, 3, 8, 8) * 5 + 3)  # moves the BatchNorm running statistics
    teacher.update(student, step=5000)
    assert torch.equal(teacher.model.bn.running_mean, student.bn.running_mean)
    assert torch.equal(teacher.model.bn.num_batches_tracked, student.bn.num_batches_tracked)


def test_teacher_stays_in_eval_mode_and_takes_no_gradients():
    student = _net()
    teacher = EMATeacher(student)
    holder = nn.ModuleDict({"student": student, "teacher": teacher})
    holder.train()  # what Lightning does at the start of fit
    assert student.training and teacher.training and not teacher.model.training
    assert not any(m.training for m in teacher.model.modules())
    assert all(not p.requires_grad for p in teacher.parameters()) and all(p.requires_grad for p in student.parameters())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = teacher(x)
    assert not out.requires_grad and out.grad_fn is None
    torch.testing.assert_close(teacher(x), out)  # eval: dropout off, the same output twice


def test_teacher_weights_round_trip_through_the_owner_state_dict():
    student = _net()
    teacher = EMATeacher(student, decay=0.5)
    with torch.no_grad():
        student.conv.weight.mul_(3.0)
    teacher.update(student, step=100)
    holder = nn.ModuleDict({"student": student, "teacher": teacher})
    state = holder.state_dict()
    assert "teacher.model.conv.weight" in state and "teacher.model.bn.running_var" in state
    fresh = nn.ModuleDict({"student": _net(1), "teacher": EMATeacher(_net(1))})
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh["teacher"](x), teacher(x))


def test_update_looks_through_a_wrapper_and_refuses_another_model():
    student = _net()
    teacher = EMATeacher(student, decay=0.5)
    compiled_like = nn.Module()
    compiled_like._orig_mod = student  # what torch.compile's wrapper holds
    with torch.no_grad():
        student.head.bias.fill_(4.0)
    before = teacher.model.head.bias.detach().clone()
    teacher.update(compiled_like, step=10**6)
    torch.testing.assert_close(teacher.model.head.bias, 0.5 * before + 2.0)
    with pytest.raises(ValueError, match="parameters differ"):
        teacher.update(nn.Linear(2, 2), step=0)


def test_bf16_autocast_forward_returns_float32():
    student = _net()
    teacher = EMATeacher(student)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = teacher(x, autocast_dtype=torch.bfloat16)
    ref = EMATeacher(student)(x)
    assert out.dtype == torch.float32 and ref.dtype == torch.float32
    assert not torch.equal(out, ref)  # it did run in bf16
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)
    assert teacher.model.conv.weight.dtype == torch.float32  # weights stay float32
