"""The fine-tuning recipes (sagepose/configs/finetune_*.yaml): one per model and GPU size, each loads and passes
the run checks, and each semi-supervised one is its supervised recipe with the same labeled batch."""
from __future__ import annotations

import pytest

from sagepose.config import load_config
from sagepose.configs import CONFIG_DIR
from sagepose.train.checks import check_run

RECIPES = sorted(p for p in CONFIG_DIR.glob("finetune_*.yaml") if not p.stem.endswith("_ssl"))
SSL_RECIPES = sorted(CONFIG_DIR.glob("finetune_*_ssl.yaml"))


def test_there_is_a_recipe_per_gpu_size_and_model():
    names = {p.stem for p in RECIPES}
    assert names == {f"finetune_{m}_{gb}" for m in ("vitpose_b", "sapiens_0.3b", "sapiens_1b")
                     for gb in ("4gb", "24gb", "80gb")} | {"finetune_sapiens_2b_80gb", "finetune_sapiens2_1b_24gb_lora",
                                                          "finetune_sapiens2_5b_80gb_lora",
                                                          "finetune_sapiens2_0.4b_24gb", "finetune_sapiens2_1b_80gb"}
    # semi-supervised: 24 and 80 GB; Sapiens-1B at 24 GB needs FSDP, which the EMA teacher does not support yet
    assert {p.stem for p in SSL_RECIPES} == {f"finetune_{m}_{gb}_ssl" for m, gb in (
        ("vitpose_b", "24gb"), ("vitpose_b", "80gb"), ("sapiens_0.3b", "24gb"), ("sapiens_0.3b", "80gb"),
        ("sapiens_1b", "80gb"), ("sapiens2_1b", "24gb_lora"), ("sapiens2_5b", "80gb_lora"))}


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
