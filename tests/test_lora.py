"""sagepose.models.lora: low-rank adapters on the transformer backbones -- equal to the base at init, only the
adapters and trained parts learn, merging changes no prediction, and what their checkpoints and teacher cost."""
import pytest
import torch

from sagepose.models import build_model
from sagepose.models.lora import LoRALinear, add_adapters, frozen_base, merge_adapters

TINY = {  # one tiny architecture per transformer family
    "vitpose-b": dict(input_size=(48, 64), drop_path_rate=0.0, arch=dict(embed_dim=32, depth=3, num_heads=2,
                                                                        mlp_dim=64)),
    "sapiens2-1b": dict(input_size=(48, 64), schema="coco", arch=dict(
        embed_dim=32, depth=3, num_heads=4, mlp_dim=48, mha_ends=1, deconv_channels=(16, 8), conv_channels=(8, 8))),
    "hrformer-s": dict(drop_path_rate=0.0, input_size=(32, 32), arch=dict(
        widths=(8, 16, 24, 32), num_heads=(1, 2, 2, 4), num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
}


def tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, **TINY[name])


def _randomize_adapters(model) -> None:
    """B is zero at init: give it values so merging has something to fold."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.05)


@pytest.mark.parametrize("name", sorted(TINY))
def test_adapted_model_starts_equal_to_the_base(name):
    model = tiny(name).eval()
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    # autograd on and the backbone frozen in both: the same kernels (no oneDNN inference matmuls, the same conv
    # algorithm for a weight without gradient), so bit-equal
    model.backbone.requires_grad_(False)
    before = model(x)
    n = add_adapters(model, rank=4, alpha=8)
    after = model(x)
    assert n > 0
    assert torch.equal(before, after)


@pytest.mark.parametrize("name", sorted(TINY))
def test_only_adapters_head_and_the_last_blocks_get_gradients(name):
    model = tiny(name).train()
    add_adapters(model, rank=4, alpha=8, train_blocks=1)
    _randomize_adapters(model)
    w, h = model.input_size
    model(torch.randn(2, 3, h, w)).square().mean().backward()
    frozen = frozen_base(model, train_blocks=1)
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen.values())
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {n for n, p in model.named_parameters() if n not in frozen}
    assert any(n.endswith(".lora_a") for n in trained) and any(n.startswith("head.") for n in trained)


def test_targets_map_onto_each_familys_layers():
    vit_model, s2_model = tiny("vitpose-b"), tiny("sapiens2-1b")
    assert add_adapters(vit_model, rank=2, targets=("qkv",)) == 3  # one fused qkv per block
    assert add_adapters(s2_model, rank=2, targets=("qkv",)) == 9  # separate q, k, v
    assert isinstance(s2_model.backbone.blocks[0].attn.k, LoRALinear)
    assert add_adapters(tiny("hrformer-s"), rank=2, targets=("mlp",), train_blocks=1) == 0  # convolutional FFN
    with pytest.raises(ValueError, match="no mlp linear layers"):
        add_adapters(tiny("hrformer-s"), rank=2, targets=("mlp",))
    with pytest.raises(ValueError, match="targets"):
        add_adapters(tiny("vitpose-b"), rank=2, targets=("ffn",))


def test_base_state_dict_names_unchanged_so_base_checkpoints_load():
    base = tiny("vitpose-b")
    model = tiny("vitpose-b", seed=1)
    add_adapters(model, rank=4)
    sd = model.state_dict()
    assert set(base.state_dict()) == {k for k in sd if not k.endswith((".lora_a", ".lora_b"))}
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.endswith((".lora_a", ".lora_b")) for k in missing)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, base.backbone.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("name", sorted(TINY))
def test_merged_predictions_equal_unmerged_to_float32_rounding(name):
    model = tiny(name)
    add_adapters(model, rank=4, alpha=8)
    _randomize_adapters(model)
    model.eval()
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        unmerged = model(x)
        assert merge_adapters(model) > 0
        merged = model(x)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5 * unmerged.abs().max().item())
