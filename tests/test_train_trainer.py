"""sagepose.train.trainer: the strategies are built as documented -- FSDP wrapped per block with offload and
Lightning's activation checkpointing, DDP looking for unused parameters while the backbone is frozen."""
from sagepose.config import load_config
from sagepose.train.trainer import build_strategy


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
