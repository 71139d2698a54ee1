"""Training settings: the fine-tuning recipes load, unsupported combinations fail early, strategies are
built as documented, and FSDP's flattened parameters land in the same optimizer groups."""
from __future__ import annotations

import pytest
import torch

from sagepose.config import ConfigError, OptimConfig, load_config
from sagepose.configs import CONFIG_DIR
from sagepose.models import build_model
from sagepose.train.checks import check_run
from sagepose.train.optim import param_groups
from sagepose.train.trainer import build_strategy

RECIPES = sorted(p for p in CONFIG_DIR.glob("finetune_*.yaml") if not p.stem.endswith("_ssl"))
SSL_RECIPES = sorted(CONFIG_DIR.glob("finetune_*_ssl.yaml"))


def test_there_is_a_recipe_per_gpu_size_and_model():
    names = {p.stem for p in RECIPES}
    assert names == {f"finetune_{m}_{gb}" for m in ("vitpose_b", "sapiens_0.3b", "sapiens_1b")
                     for gb in ("4gb", "24gb", "80gb")} | {"finetune_sapiens_2b_80gb"}
    # semi-supervised: 24 and 80 GB; Sapiens-1B at 24 GB needs FSDP, which the EMA teacher does not support yet
    assert {p.stem for p in SSL_RECIPES} == {f"finetune_{m}_{gb}_ssl" for m, gb in (
        ("vitpose_b", "24gb"), ("vitpose_b", "80gb"), ("sapiens_0.3b", "24gb"), ("sapiens_0.3b", "80gb"),
        ("sapiens_1b", "80gb"))}


@pytest.mark.parametrize("path", SSL_RECIPES, ids=lambda p: p.stem)
def test_ssl_recipe_is_its_supervised_recipe_with_the_same_global_labeled_batch(path):
    cfg, sup = load_config(path), load_config(path.parent / f"{path.stem.removesuffix('_ssl')}.yaml")
    check_run(cfg)
    assert cfg.ssl.mode == "semi" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.model == sup.model and cfg.trainer.strategy != "fsdp"
    labeled = cfg.data.batch_size * cfg.trainer.accumulate_grad_batches
    assert labeled == sup.data.batch_size * sup.trainer.accumulate_grad_batches
    assert cfg.ssl.batch_size == cfg.data.batch_size  # the student's activations: twice the labeled crops a step
    assert cfg.optim.ema_decay == 0  # the teacher is the average


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_is_a_bf16_two_phase_run(path):
    cfg = load_config(path)
    check_run(cfg)
    assert cfg.trainer.precision == "bf16-mixed"
    assert 0 < cfg.optim.freeze_backbone_epochs < cfg.trainer.max_epochs
    assert "peak" in path.read_text().split("\nmodel:")[0]  # the header justifies the memory figure


@pytest.mark.parametrize("override, message", [
    ("trainer.precision=16-mixed", "bf16-mixed"),
    ("trainer.max_nonfinite_steps=0", "at least 1"),
    ("optim.ema_decay=1.0", "0 = off"),
    ("trainer.fsdp_cpu_offload=true", "needs trainer.strategy=fsdp"),
])
def test_unsupported_settings_fail_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        check_run(load_config(None, [override]))


def test_ema_with_fsdp_is_refused():
    with pytest.raises(ConfigError, match="unsharded"):
        check_run(load_config(None, ["trainer.strategy=fsdp", "optim.ema_decay=0.999"]))


def test_fsdp_shards_per_block_with_offload_and_lightnings_checkpointing():
    from lightning.pytorch.strategies import FSDPStrategy

    from sagepose.models.vit import Block

    strategy = build_strategy(load_config(None, ["trainer.strategy=fsdp", "trainer.fsdp_cpu_offload=true",
                                                 "model.grad_checkpointing=true"]))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.cpu_offload.offload_params and strategy.kwargs["use_orig_params"]
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}


def test_ddp_with_a_frozen_backbone_phase_looks_for_unused_parameters():
    assert build_strategy(load_config(None, ["trainer.strategy=ddp"])) == "ddp"
    cfg = load_config(None, ["trainer.strategy=ddp", "optim.freeze_backbone_epochs=1"])
    assert build_strategy(cfg) == "ddp_find_unused_parameters_true"


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
