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
    with pytest.raises(ValueError, match="no mlp linear layers"):  # HRFormer's feed-forward is convolutional
        add_adapters(tiny("hrformer-s"), rank=2, targets=("mlp",))
    with pytest.raises(ValueError, match="outside the last 5 blocks"):  # every block trains fully: none left
        add_adapters(tiny("vitpose-b"), rank=2, train_blocks=5)
    model = tiny("vitpose-b")
    add_adapters(model, rank=2, train_blocks=2)  # of 3: block 0 adapted, blocks 1-2 trained
    assert isinstance(model.backbone.blocks[0].attn.qkv, LoRALinear)
    assert not isinstance(model.backbone.blocks[1].attn.qkv, LoRALinear)
    assert "backbone.blocks.1.attn.qkv.weight" not in frozen_base(model, 2)
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


def test_a_sapiens2_1b_adapter_checkpoint_holds_under_8_percent_of_the_parameters():
    """Rank 16 on qkv / proj / mlp, the head trained: what an adapter checkpoint holds vs the full model."""
    with torch.device("meta"):
        model = build_model("sapiens2-1b")
        add_adapters(model, rank=16)
    total = sum(p.numel() for p in model.parameters())
    base = sum(p.numel() for p in frozen_base(model).values())
    saved = total - base  # the adapters, the head and nothing else
    head = sum(p.numel() for p in model.head.parameters())
    assert saved == head + sum(p.numel() for n, p in model.named_parameters() if n.endswith((".lora_a", ".lora_b")))
    assert saved / (base + head) < 0.08, (saved, base, head)  # vs the full model's checkpoint: 5.6%


def test_teacher_shares_the_frozen_base_and_averages_only_what_trains():
    from sagepose.ssl.teacher import EMATeacher

    torch.manual_seed(0)
    student = build_model("vitpose-b", input_size=(48, 64))
    add_adapters(student, rank=16)
    base = frozen_base(student)
    teacher = EMATeacher(student, decay=0.5, shared=base.values())
    t_params = dict(teacher.model.named_parameters())
    assert all(t_params[n].data_ptr() == p.data_ptr() for n, p in base.items())
    student_ptrs = {p.data_ptr() for p in student.parameters()}
    own = sum(p.numel() * p.element_size() for p in teacher.model.parameters() if p.data_ptr() not in student_ptrs)
    full = sum(p.numel() * p.element_size() for p in student.parameters())
    assert own / full < 0.10, (own, full)
    with torch.no_grad():  # a step of the student: the adapters and head move, the base cannot
        for n, p in student.named_parameters():
            if n not in base:
                p.add_(1.0)
    teacher.update(student, step=10**6)
    head_w = "head.final_conv.weight"
    torch.testing.assert_close(t_params[head_w], student.state_dict()[head_w] - 0.5)
    with pytest.raises(ValueError, match="frozen"):
        EMATeacher(student, shared=[student.head.final_conv.weight])


TINY_ARCH = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_dim": 64}
TINY_VIT = f"model.arch={TINY_ARCH}"


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory):
    """A base checkpoint, and a tiny adapter run on it: (base file, run config overrides, the run's summary)."""
    from sagepose.config import load_config
    from sagepose.data.synth import generate_dataset
    from sagepose.models.checkpoint import save_checkpoint
    from sagepose.train.run import fit

    root = tmp_path_factory.mktemp("lora")
    generate_dataset(root / "data", 8, seed=1, split="train")
    generate_dataset(root / "data", 3, seed=2, split="val")
    torch.manual_seed(0)
    base = build_model("vit-tiny", arch=TINY_ARCH)
    save_checkpoint(root / "base.pth", base.state_dict(), model="vit-tiny")
    overrides = [f"data.train_json={root / 'data' / 'train.json'}", f"data.val_json={root / 'data' / 'val.json'}",
                 "model.name=vit-tiny", TINY_VIT, f"model.init_checkpoint={root / 'base.pth'}",
                 "model.lora={'rank': 4, 'alpha': 8.0, 'train_blocks': 1}", "data.batch_size=4", "data.num_workers=0",
                 "optim.warmup_iters=1", "optim.freeze_backbone_epochs=1", "trainer.max_epochs=2",
                 "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.log_every_steps=1"]
    summary = fit(load_config(None, [*overrides, f"trainer.out_dir={root / 'run'}"]))
    return root / "base.pth", overrides, summary, root


def test_adapter_checkpoint_holds_adapters_and_trained_parts_and_loads_back(adapter_run):
    import sagepose
    from sagepose.models.checkpoint import read_checkpoint

    base_file, _, summary, _ = adapter_run
    ckpt = torch.load(summary["last_checkpoint"], weights_only=False)
    meta = ckpt["sagepose"]["lora"]
    assert meta["base"] == str(base_file) and meta["model"] == "vit-tiny" and len(meta["base_hash"]) == 64
    keys = ckpt["state_dict"]
    assert any(k.endswith(".lora_a") for k in keys) and "model.head.final_conv.weight" in keys
    assert "model.backbone.blocks.1.attn.qkv.weight" in keys  # the last block trains fully (train_blocks=1)
    assert not any(k.startswith("model.backbone.blocks.0.") and not k.endswith((".lora_a", ".lora_b"))
                   for k in keys)  # the frozen base is not there
    assert "model.backbone.pos_embed" not in keys and "model.backbone.patch_embed.stem.0.conv.weight" not in keys
    # the trained weights differ from the base's: the adapters learnt (B moved off zero) and so did block 1
    assert any(v.abs().sum() > 0 for k, v in ckpt["state_dict"].items() if k.endswith(".lora_b"))
    # sagepose.load: the base rebuilt from model.init_checkpoint, the adapters put back, then merged in
    unmerged = build_model("vit-tiny", arch=TINY_ARCH)
    unmerged.load_state_dict(read_checkpoint(base_file)["state_dict"])
    add_adapters(unmerged, rank=4, alpha=8.0, train_blocks=1)
    missing, unexpected = unmerged.load_state_dict({k[6:]: v for k, v in keys.items() if k.startswith("model.")},
                                                   strict=False)
    assert not unexpected and set(missing) == set(frozen_base(unmerged, train_blocks=1))
    loaded = sagepose.load(summary["last_checkpoint"])
    assert not any(isinstance(m, LoRALinear) for m in loaded.modules())
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = unmerged.eval()(x), loaded(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_an_adapter_checkpoint_refuses_another_base(adapter_run, tmp_path):
    import sagepose
    from sagepose.models.checkpoint import CheckpointMismatchError, read_checkpoint, save_checkpoint

    base_file, _, summary, _ = adapter_run
    ckpt = torch.load(summary["last_checkpoint"], weights_only=False)
    other = dict(read_checkpoint(base_file)["state_dict"])
    other["backbone.blocks.0.attn.proj.weight"] = other["backbone.blocks.0.attn.proj.weight"] + 1e-3
    save_checkpoint(tmp_path / "other.pth", other, model="vit-tiny")
    ckpt["sagepose"]["lora"]["base"] = str(tmp_path / "other.pth")
    ckpt["hyper_parameters"]["config"]["model"]["init_checkpoint"] = str(tmp_path / "other.pth")
    torch.save(ckpt, tmp_path / "moved.ckpt")
    with pytest.raises(CheckpointMismatchError, match="another base") as e:
        sagepose.load(tmp_path / "moved.ckpt")
    assert "\n" not in str(e.value)


def test_an_adapter_run_resumes(adapter_run):
    from sagepose.config import load_config
    from sagepose.train.run import fit

    _, overrides, summary, root = adapter_run
    more = fit(load_config(None, [*overrides, f"trainer.out_dir={root / 'run'}", "trainer.max_epochs=3"]),
               resume=True)
    assert more["resumed_from"] and more["steps"] > summary["steps"]


def test_the_freeze_backbone_phase_never_unfreezes_the_base_and_layer_decay_groups_what_trains(adapter_run):
    from sagepose.config import load_config
    from sagepose.train.module import TopDownModule
    from sagepose.train.optim import param_groups

    _, overrides, _, root = adapter_run
    cfg = load_config(None, [*overrides, f"trainer.out_dir={root / 'unit'}", "optim.layer_decay=0.75"])
    module = TopDownModule(cfg)
    base = module.frozen_base
    trains = [p for n, p in module.model.named_parameters() if n not in base]
    module._freeze_backbone(True)
    assert not any(p.requires_grad for p in module.model.backbone.parameters())
    from sagepose.ssl.teacher import EMATeacher  # built in the frozen phase: still shares the base only

    teacher = EMATeacher(module.model, shared=module.frozen_base.values())
    t_params = dict(teacher.model.named_parameters())
    block1 = "backbone.blocks.1.attn.qkv.weight"  # frozen for now, trained later: the teacher's own copy
    assert t_params[block1] is not dict(module.model.named_parameters())[block1]
    assert all(t_params[n] is p for n, p in base.items())
    module._freeze_backbone(False)
    assert not any(p.requires_grad for p in base.values()) and all(p.requires_grad for p in trains)
    groups = param_groups(module.model, cfg.optim)
    grouped = [n for g in groups for n in g["names"]]
    assert sorted(grouped) == sorted(n for n, _ in module.model.named_parameters() if n not in base)  # nothing else
    lr = {n: g["lr"] for g in groups for n in g["names"]}
    assert lr["backbone.blocks.0.attn.qkv.lora_a"] < lr["backbone.blocks.1.attn.qkv.weight"] < lr[
        "head.final_conv.weight"]


@pytest.mark.parametrize("override, match", [("model.lora={'rank': -1}", "model.lora.rank"),
                                             ("model.lora={'rank': 4, 'targets': ['ffn']}", "model.lora.targets"),
                                             ("model.lora={'rank': 4, 'dropout': 1.0}", "model.lora.dropout"),
                                             ("model.lora={'rank': 4, 'alpha': 0}", "model.lora.alpha"),
                                             ("model.lora={'rank': 4, 'train_blocks': -2}", "model.lora.train_blocks"),
                                             ("model.lora={'rnak': 4}", "did you mean 'rank'"),
                                             # Lightning's weight average would copy the frozen base too
                                             (("model.lora.rank=4", "optim.ema_decay=0.999"), "optim.ema_decay")])
def test_bad_lora_settings_are_one_line_config_errors(override, match):
    from sagepose.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, [override] if isinstance(override, str) else list(override))
    assert "\n" not in str(e.value)


def test_lora_on_a_model_without_transformer_layers_is_refused_at_build():
    from sagepose.models import build_model_from_config

    with pytest.raises(ValueError, match="no qkv/proj/mlp linear layers"):
        build_model_from_config({"name": "hrnet-w32", "lora": {"rank": 4}})


@pytest.mark.slow
def test_a_semi_supervised_adapter_run_saves_neither_copy_of_the_base_and_resumes(adapter_run):
    from sagepose.config import load_config
    from sagepose.data.synth import generate_dataset
    from sagepose.train.run import fit

    _, overrides, _, root = adapter_run
    unlabeled = generate_dataset(root / "unlabeled", 6, seed=3, split="train", style="surveillance")
    ssl = ["ssl.mode=semi", "ssl.batch_size=4", "ssl.mask_warmup_iters=1", "ssl.rampup_iters=1",
           f"ssl.unlabeled=['{unlabeled}']", "model.heatmap_output=softmax", f"trainer.out_dir={root / 'ssl'}"]
    summary = fit(load_config(None, [*overrides, *ssl]))
    keys = torch.load(summary["last_checkpoint"], weights_only=False)["state_dict"]
    assert "teacher.model.head.final_conv.weight" in keys and "teacher.model.backbone.blocks.0.attn.qkv.lora_a" in keys
    assert not [k for k in keys if k.endswith("blocks.0.attn.qkv.weight")]  # the base, student's nor teacher's
    more = fit(load_config(None, [*overrides, *ssl, "trainer.max_epochs=3"]), resume=True)
    assert more["resumed_from"] and more["steps"] > summary["steps"]


def test_convert_merge_writes_a_plain_checkpoint_predicting_as_the_adapted_one(adapter_run, tmp_path, capsys):
    import sagepose
    from sagepose.cli.main import main
    from sagepose.models.checkpoint import read_checkpoint

    _, _, summary, _ = adapter_run
    assert main(["convert", summary["last_checkpoint"], str(tmp_path / "no.pth")]) != 0
    assert "pass --merge" in capsys.readouterr().err
    assert main(["convert", summary["last_checkpoint"], str(tmp_path / "merged.pth"), "--merge"]) == 0
    raw = read_checkpoint(tmp_path / "merged.pth")
    assert "backbone.blocks.0.attn.qkv.weight" in raw["state_dict"]
    assert not any(k.endswith((".lora_a", ".lora_b")) for k in raw["state_dict"])
    assert raw["sagepose"]["model_config"]["lora"]["rank"] is None and "lora" not in raw["sagepose"]
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = sagepose.load(summary["last_checkpoint"])(x), sagepose.load(tmp_path / "merged.pth")(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_an_adapter_checkpoint_as_init_checkpoint_continues_with_its_adapters_or_says_to_merge(adapter_run):
    """A second stage (``ssl.warm_start``'s unsup_only stage) starts from an adapter run's checkpoint."""
    import sagepose
    from sagepose.models import build_model_from_config
    from sagepose.models.checkpoint import CheckpointMismatchError

    _, _, summary, _ = adapter_run
    init = {"name": "vit-tiny", "arch": TINY_ARCH, "init_checkpoint": summary["last_checkpoint"]}
    with pytest.raises(CheckpointMismatchError, match="--merge"):
        build_model_from_config(init)
    lora = {"rank": 4, "alpha": 8.0, "train_blocks": 1}
    model = build_model_from_config({**init, "lora": lora}).eval()
    assert isinstance(model.backbone.blocks[0].attn.qkv, LoRALinear)
    assert set(frozen_base(model, 1)) and not any(p.requires_grad for p in frozen_base(model, 1).values())
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = sagepose.load(summary["last_checkpoint"])(x), model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    with pytest.raises(CheckpointMismatchError, match="another base"):  # other frozen blocks: another base
        build_model_from_config({**init, "lora": {**lora, "train_blocks": 0}})


def test_sagepose_test_scores_an_adapter_checkpoint_on_its_base(adapter_run, capsys):
    import json

    from sagepose.cli.main import main

    _, _, summary, root = adapter_run
    assert main(["test", summary["last_checkpoint"], f"trainer.out_dir={root / 'test'}",
                 "trainer.accelerator=cpu"]) == 0
    metrics = json.loads((root / "test" / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_predictions"] > 0


def test_adapters_train_under_activation_checkpointing():
    torch.manual_seed(0)
    model = build_model("vitpose-b", **{**TINY["vitpose-b"], "grad_checkpointing": True}).train()
    add_adapters(model, rank=4)
    _randomize_adapters(model)
    model(torch.randn(2, 3, 64, 48)).square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.endswith((".lora_a", ".lora_b"))}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
