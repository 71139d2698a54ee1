"""Layer-wise lr decay groups (the same under FSDP's flattened parameters) and the warmup + step/cosine schedule
(MMPose's semantics)."""
from __future__ import annotations

import pytest
import torch

from sagepose.config import OptimConfig
from sagepose.models import build_model
from sagepose.train.optim import layer_group, lr_factor, param_groups


class _Backbone(torch.nn.Module):
    depth = 2

    def __init__(self):
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, 4, 2)
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, 4))
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
        self.norm = torch.nn.LayerNorm(4)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.head = torch.nn.Conv2d(4, 17, 1)


def test_layer_groups_follow_vitpose_assignment():
    assert layer_group("backbone.patch_embed.proj.weight", 12) == 0
    assert layer_group("backbone.pos_embed", 12) == 0
    assert layer_group("backbone.blocks.0.attn.qkv.weight", 12) == 1
    assert layer_group("backbone.blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_group("backbone.norm.weight", 12) == 13
    assert layer_group("head.final.weight", 12) == 13


def test_param_groups_scale_lr_and_skip_decay_on_1d_bias_pos_embed():
    cfg = OptimConfig(lr=1.0, weight_decay=0.1, layer_decay=0.5)
    groups = param_groups(_Model(), cfg)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["backbone.patch_embed.weight"]["lr"] == pytest.approx(0.5 ** 3)
    assert by_name["backbone.blocks.1.weight"]["lr"] == pytest.approx(0.5 ** 1)
    assert by_name["head.weight"]["lr"] == pytest.approx(1.0)
    assert by_name["backbone.pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.norm.weight"]["weight_decay"] == 0.0
    assert by_name["head.weight"]["weight_decay"] == 0.1


def test_schedule_warmup_then_steps_at_milestones():
    cfg = OptimConfig(warmup_iters=500, warmup_ratio=0.001, schedule="step", milestones=(170, 200), gamma=0.1)
    assert lr_factor(0, cfg, 100, 21000) == pytest.approx(0.001)
    assert lr_factor(250, cfg, 100, 21000) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(500, cfg, 100, 21000) == pytest.approx(1.0)
    assert lr_factor(170 * 100, cfg, 100, 21000) == pytest.approx(0.1)
    assert lr_factor(200 * 100, cfg, 100, 21000) == pytest.approx(0.01)


def test_cosine_schedule_reaches_floor():
    cfg = OptimConfig(warmup_iters=0, schedule="cosine", min_lr_ratio=0.01)
    assert lr_factor(0, cfg, 10, 1000) == pytest.approx(1.0)
    assert lr_factor(500, cfg, 10, 1000) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(1000, cfg, 10, 1000) == pytest.approx(0.01)


def test_cosine_from_half_way_is_rtmposes_schedule():
    """MMPose's RTMPose: LinearLR from 1e-5 over 1000 iterations, then flat, then a cosine to 0.05 x lr over the
    second half of the run (420 epochs, cosine from 210), by iteration."""
    cfg = OptimConfig(warmup_iters=1000, warmup_ratio=1e-5, schedule="cosine", min_lr_ratio=0.05,
                      cosine_start_fraction=0.5)
    per_epoch, total = 73, 73 * 420
    assert lr_factor(0, cfg, per_epoch, total) == pytest.approx(1e-5)
    assert lr_factor(500, cfg, per_epoch, total) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert lr_factor(1000, cfg, per_epoch, total) == lr_factor(210 * per_epoch, cfg, per_epoch, total) == 1.0
    assert lr_factor(315 * per_epoch, cfg, per_epoch, total) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(total, cfg, per_epoch, total) == pytest.approx(0.05)


class _Unit(torch.nn.Module):
    """What FSDP makes of a wrapped block: the block under ``_fsdp_wrapped_module``."""

    def __init__(self, block):
        super().__init__()
        self._fsdp_wrapped_module = block


def test_fsdp_flat_parameters_get_the_same_lr_and_weight_decay_groups():
    cfg = OptimConfig(lr=1.0, weight_decay=0.1, layer_decay=0.8)
    model = build_model("vit-tiny", arch={"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_dim": 64})
    ndims = {n: p.ndim for n, p in model.named_parameters()}
    expected = {n: (g["lr"], g["weight_decay"]) for g in param_groups(model, cfg) for n in g["names"]}
    model.backbone.blocks = torch.nn.ModuleList(_Unit(b) for b in model.backbone.blocks)
    for p in model.parameters():  # sharded: every parameter a 1-D view
        p.data = p.data.flatten()
    got = {n: (g["lr"], g["weight_decay"]) for g in param_groups(model, cfg, ndims) for n in g["names"]}
    assert got == expected
