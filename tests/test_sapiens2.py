"""Sapiens2 (sagepose.models.sapiens2) against the official code: a shrunk model's official-layout weights load
strictly and give the official outputs at two input sizes, every zoo row counts the official parameters, a
tiny config trains every parameter; the official key names map onto ours; ``.safetensors`` files read. The 4K
variant's windowed tokenizer (``use_tokenizer``): a shrunk backbone with it against the official code, the
1b-4k size's parameter count, and the flip test, bfloat16 and activation checkpointing with it on.

Goldens: tools/make_sapiens2_goldens.py (runs facebookresearch/sapiens2's own backbone and head modules)."""
import json
from pathlib import Path

import pytest
import torch
from float_platform import signature
from goldens_io import golden_threads
from safetensors.torch import load_file, save_file

from sagepose.models import MODELS, build_model, build_model_from_config, load_checkpoint
from sagepose.models.checkpoint import CheckpointMismatchError, convert_state_dict, from_sapiens2, read_checkpoint
from sagepose.models.sapiens2 import SAPIENS2_SIZES, GridRope, sapiens2

GOLDENS = Path(__file__).parent / "goldens" / "sapiens2"
OFFICIAL = json.loads((GOLDENS / "official.json").read_text())
SAPIENS2_ROWS = sorted(n for n in MODELS if n.startswith("sapiens2-"))


def shrunk_model(**extra):
    """The zoo's 0.4b row cut to the goldens' shrunk config (17 outputs, the middle block grouped-query)."""
    s, head = OFFICIAL["shrunk"], OFFICIAL["shrunk"]["head"]
    assert s["gqa_layers"] == [1]
    arch = dict(embed_dim=s["embed_dims"], depth=s["num_layers"], num_heads=s["num_heads"],
                mlp_dim=s["feedforward_channels"], mha_ends=1, deconv_channels=tuple(head["deconv_out_channels"]),
                conv_channels=tuple(head["conv_out_channels"]), **extra)
    return build_model("sapiens2-0.4b", schema="coco", input_size=(48, 64), arch=arch)


@pytest.fixture(scope="module")
def loaded():
    model = shrunk_model().eval()
    missing, unexpected, shaped = load_checkpoint(model, GOLDENS / "shrunk.safetensors")  # strict
    assert not (missing or unexpected or shaped)
    return model


def max_rel_diff(model, tag: str, golden: str = "") -> dict[str, float]:
    """max |ours - official| / peak |official| of the feature map and the heatmaps, for input ``tag`` (h x w)."""
    io = load_file(GOLDENS / "io.safetensors")
    model.backbone.set_input_size(tuple(int(v) for v in tag.split("x")))
    with golden_threads(), torch.no_grad():
        feats = model.backbone(io[f"input_{tag}"])
        heatmaps = model.head(feats)
    out = {}
    for name, got in (("features", feats), ("heatmaps", heatmaps)):
        want = io[f"{name}_{golden}{tag}"]
        assert got.shape == want.shape
        out[name] = float((got - want).abs().max() / want.abs().max())
    return out


SIZES = [f"{h}x{w}" for h, w in OFFICIAL["sizes_hw"]]


@pytest.mark.parametrize("tag", SIZES)
def test_outputs_equal_the_official_code_to_float32_rounding(loaded, tag):
    """As the official module computes by default (RoPE in bfloat16). Rounding the queries and keys to bfloat16
    turns a float32 last-bit difference upstream into a bfloat16 step now and then (measured: ~7e-5 of the peak
    when everything before runs in float64), so 1e-5 holds where float32 matmuls round as on the goldens'
    platform (measured there: 0, bit-identical); elsewhere the bound is 5e-4, and the float32-RoPE test below
    pins the arithmetic to 1e-5 everywhere."""
    same_platform = OFFICIAL["platform"] == signature()
    bound = 1e-5 if same_platform else 5e-4
    diffs = max_rel_diff(loaded, tag)
    assert max(diffs.values()) <= bound, diffs


@pytest.mark.parametrize("tag", SIZES)
def test_outputs_with_float32_rope_equal_the_official_code_everywhere(tag):
    model = shrunk_model(rope_dtype="fp32").eval()
    load_checkpoint(model, GOLDENS / "shrunk.safetensors")
    diffs = max_rel_diff(model, tag, golden="fp32rope_")
    assert max(diffs.values()) <= 1e-5, diffs


def test_the_rotary_embedding_runs_in_bfloat16_as_the_official_default(loaded):
    """The official periods buffer comes in bfloat16 and its arithmetic stays there: fp32 RoPE gives other outputs."""
    assert loaded.backbone.rope.periods.dtype == torch.bfloat16
    sin, cos = loaded.backbone.rope(4, 3)
    assert sin.dtype == cos.dtype == torch.bfloat16 and sin.shape == (12, 24)
    fp32 = shrunk_model(rope_dtype="fp32").eval()
    load_checkpoint(fp32, GOLDENS / "shrunk.safetensors")
    io = load_file(GOLDENS / "io.safetensors")
    with torch.no_grad():
        diff = (fp32.backbone(io["input_64x48"]) - io["features_64x48"]).abs().max()
    assert diff > 1e-4 * io["features_64x48"].abs().max()


def test_periods_buffer_matches_the_official_init():
    official = load_file(GOLDENS / "shrunk.safetensors")["backbone.rope_embed.periods"]
    assert torch.equal(GridRope(OFFICIAL["shrunk"]["embed_dims"] // OFFICIAL["shrunk"]["num_heads"]).periods, official)


@pytest.mark.parametrize("name", SAPIENS2_ROWS)
def test_param_count_equals_the_official_build(name):
    with torch.device("meta"):  # 5B parameters: no memory
        model = build_model(name)
    assert model.schema.name == "goliath" and model.schema.num_keypoints == 308
    assert model.input_size == (768, 1024) and model.codec.heatmap_size == (192, 256) and model.codec.sigma == 6.0
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL["param_counts"][name]


@pytest.mark.parametrize("name", ["sapiens2-0.1b", "sapiens2-1b-4k"])
def test_backbone_only_sizes_count_the_official_backbone(name):
    """0.1b, and 1b with the windowed tokenizer (the official ``sapiens2_1b``, ``use_tokenizer=True``; its README:
    1.607 B)."""
    assert set(SAPIENS2_SIZES) == set(OFFICIAL["param_counts"])
    with torch.device("meta"):
        backbone = sapiens2(name)
    assert sum(p.numel() for p in backbone.parameters()) == OFFICIAL["param_counts"][name]
    assert name not in MODELS  # released as a pretraining backbone only


def test_grouped_query_attention_in_all_but_the_first_and_last_8_blocks():
    with torch.device("meta"):
        blocks = sapiens2("sapiens2-0.4b").blocks
    kv = [b.attn.num_kv_heads for b in blocks]
    assert kv == [16] * 8 + [8] * 8 + [16] * 8


def test_tiny_config_forward_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = build_model("sapiens2-1b", input_size=(48, 64), arch=dict(
        embed_dim=32, depth=3, num_heads=4, mlp_dim=48, mha_ends=1, deconv_channels=(16, 8), conv_channels=(8, 8),
        grad_checkpointing=True)).train()
    assert model.backbone.blocks[1].attn.num_kv_heads == 2
    heatmaps = model(torch.randn(2, 3, 64, 48))
    assert heatmaps.shape == (2, 308, 16, 12) and torch.isfinite(heatmaps).all()
    heatmaps.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_official_key_names_map_onto_ours():
    official = load_file(GOLDENS / "shrunk.safetensors")
    sd, fmt, backbone_only = convert_state_dict(official)
    assert (fmt, backbone_only) == ("sapiens2", False)
    assert set(sd) == set(shrunk_model().state_dict())
    assert torch.equal(sd["backbone.blocks.1.attn.k.weight"], official["backbone.blocks.1.attn.wk.weight"])
    assert torch.equal(sd["backbone.blocks.0.layer_scale"], official["backbone.blocks.0.attn.gamma.weight"])
    assert torch.equal(sd["head.deconv_blocks.1.conv.weight"], official["decode_head.deconv_layers.3.weight"])
    assert torch.equal(sd["head.final_conv.bias"], official["decode_head.conv_pose.bias"])


def test_a_pretraining_backbone_loads_with_the_head_left_as_initialised(tmp_path):
    """Bare backbone keys (no ``backbone.`` prefix, no head): detected as backbone only, the head kept."""
    official = load_file(GOLDENS / "shrunk.safetensors")
    bare = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    path = tmp_path / "sapiens2_shrunk_pretrain.safetensors"
    save_file(bare, str(path))
    model = shrunk_model()
    head_before = model.head.final_conv.weight.clone()
    missing, unexpected, _ = load_checkpoint(model, path)
    assert convert_state_dict(bare)[1:] == ("sapiens2-pretrain", True)
    assert not unexpected and missing and all(k.startswith("head.") for k in missing)
    assert torch.equal(model.head.final_conv.weight, head_before)
    assert torch.equal(model.backbone.norm.weight, official["backbone.ln1.weight"])
    assert set(from_sapiens2(bare)) == {k for k in model.state_dict() if k.startswith("backbone.")}


def test_a_named_safetensors_file_downloads_into_the_cache_and_loads_strictly(server, cache, monkeypatch):
    """The hub path of ``sapiens2-*``: the official-layout file served, fetched once, read and loaded."""
    from sagepose import hub

    root, base, requests = server
    (root / "sapiens2_0.4b_pose.safetensors").write_bytes((GOLDENS / "shrunk.safetensors").read_bytes())
    monkeypatch.setitem(hub.WEIGHTS, "sapiens2-0.4b", hub.Weights(
        "sapiens2-0.4b", f"{base}/sapiens2_0.4b_pose.safetensors", num_keypoints=308))
    path = hub.fetch("sapiens2-0.4b", progress=False)
    assert path == cache / "weights" / "sapiens2-0.4b" / "sapiens2_0.4b_pose.safetensors"
    model = shrunk_model()
    assert not any(load_checkpoint(model, path))  # strict: nothing missing, unexpected or misshaped
    assert hub.fetch("sapiens2-0.4b") == path and requests == ["/sapiens2_0.4b_pose.safetensors"]
    # model.init_checkpoint takes the name too (the sapiens2_*_coco recipes): the cached file, no new request
    s, head = OFFICIAL["shrunk"], OFFICIAL["shrunk"]["head"]
    started = build_model_from_config(dict(
        name="sapiens2-0.4b", schema="coco", input_size=(48, 64), init_checkpoint="sapiens2-0.4b",
        arch=dict(embed_dim=s["embed_dims"], depth=s["num_layers"], num_heads=s["num_heads"], mha_ends=1,
                  mlp_dim=s["feedforward_channels"], deconv_channels=tuple(head["deconv_out_channels"]),
                  conv_channels=tuple(head["conv_out_channels"]))))
    for k, v in model.state_dict().items():
        assert torch.equal(started.state_dict()[k], v), k
    assert requests == ["/sapiens2_0.4b_pose.safetensors"]


def test_safetensors_files_read_as_plain_tensors_and_a_truncated_one_says_so(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(3.0), "b": torch.ones(2, 2, dtype=torch.bfloat16)}, str(path))
    sd = read_checkpoint(path)
    assert torch.equal(sd["a"], torch.arange(3.0)) and sd["b"].dtype == torch.bfloat16
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(Exception, match="cut.safetensors"):
        read_checkpoint(cut)


def test_a_wrong_shrunk_shape_fails_the_strict_load():
    model = build_model("sapiens2-0.4b", schema="coco", input_size=(48, 64), arch=dict(
        embed_dim=96, depth=3, num_heads=4, mlp_dim=128, mha_ends=0, deconv_channels=(32, 24),
        conv_channels=(24, 16)))  # every block grouped-query: blocks 0 and 2's k / v do not fit
    with pytest.raises(CheckpointMismatchError, match="blocks.0.attn.k.weight"):
        load_checkpoint(model, GOLDENS / "shrunk.safetensors")


def test_layer_decay_groups_as_the_official_runner():
    """The official runner's layer ids: patch embedding, class and storage tokens 0, block i i + 1, the rest last."""
    from sagepose.train.optim import layer_group

    with torch.device("meta"):
        model = build_model("sapiens2-0.4b")
    groups = {n: layer_group(n, 24) for n, _ in model.named_parameters()}
    assert groups["backbone.cls_token"] == groups["backbone.storage_tokens"] == 0
    assert groups["backbone.patch_embed.weight"] == 0
    assert groups["backbone.blocks.10.attn.k.weight"] == 11 and groups["backbone.blocks.23.layer_scale"] == 24
    assert groups["backbone.norm.weight"] == groups["head.final_conv.weight"] == 25


# ---- training features on a tiny Sapiens2 (arch overrides) ----------------------------------------------------------
TINY = dict(embed_dim=32, depth=3, num_heads=4, mlp_dim=48, mha_ends=1, deconv_channels=(16, 8), conv_channels=(8, 8))


def tiny_model(**kw):
    torch.manual_seed(0)
    return build_model("sapiens2-0.4b", schema="coco", input_size=(48, 64), arch=dict(TINY, **kw.pop("arch", {})),
                       **kw)


def test_a_bf16_mixed_run_steps_every_parameter_of_a_tiny_sapiens2(tmp_path):
    """``sagepose train`` in bf16-mixed with activation checkpointing and layer decay: the blocks compute in
    bfloat16 under autocast, every parameter moves, all stays finite."""
    from lightning.pytorch.callbacks import Callback

    from sagepose.config import load_config
    from sagepose.data.synth import generate_dataset
    from sagepose.train.run import fit

    generate_dataset(tmp_path, 4, seed=1, split="train")
    seen = {}

    class Watch(Callback):
        def on_fit_start(self, trainer, pl_module):
            self.before = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}
            pl_module.model.backbone.blocks[1].attn.q.register_forward_hook(
                lambda m, i, o: seen.setdefault("q", o.dtype) and None)  # a hook returning None keeps the output

        def on_fit_end(self, trainer, pl_module):
            after = dict(pl_module.model.named_parameters())
            seen["still"] = [n for n, p in self.before.items() if torch.equal(after[n].detach(), p)]
            seen["finite"] = all(torch.isfinite(p).all() for p in after.values())

    arch = "model.arch=" + repr(TINY)
    cfg = load_config(None, [f"data.train_json={tmp_path / 'train.json'}", f"trainer.out_dir={tmp_path / 'run'}",
                             "model.name=sapiens2-0.4b", "model.input_size=[48, 64]", arch,
                             "model.grad_checkpointing=true", "trainer.precision=bf16-mixed", "optim.layer_decay=0.8",
                             "data.batch_size=4", "data.num_workers=0", "optim.warmup_iters=0", "optim.lr=1e-3",
                             "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.progress_bar=false",
                             "trainer.accelerator=cpu"])
    fit(cfg, callbacks=[Watch()])
    assert seen["q"] == torch.bfloat16  # autocast: the linear layers in bf16
    assert seen["still"] == [] and seen["finite"]


def test_activation_checkpointing_recomputes_each_block_and_keeps_the_gradients():
    grads, calls = {}, {}
    for on in (False, True):
        model = tiny_model(arch=dict(grad_checkpointing=on)).train()
        calls[on] = 0

        def count(*_, on=on):
            calls[on] += 1
        for block in model.backbone.blocks:
            block.register_forward_pre_hook(count)  # the recomputation may stop early, before a post hook
        torch.manual_seed(1)
        model(torch.randn(2, 3, 64, 48)).square().mean().backward()
        grads[on] = {n: p.grad for n, p in model.named_parameters()}
    assert (calls[False], calls[True]) == (3, 6)  # each block run again in the backward pass
    for n, g in grads[False].items():
        torch.testing.assert_close(grads[True][n], g, rtol=1e-5, atol=1e-7)


def test_fsdp_wraps_and_checkpoints_sapiens2_blocks_as_the_backbone_names_them():
    from sagepose.config import load_config
    from sagepose.models.sapiens2 import Block
    from sagepose.train.trainer import build_strategy

    strategy = build_strategy(load_config(None, ["model.name=sapiens2-5b", "trainer.strategy=fsdp",
                                                 "model.grad_checkpointing=true"]))
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert tiny_model().backbone.block_type is Block


def test_layer_decay_scales_and_weight_decay_as_the_official_runner():
    """lr x rate ** (depth + 1 - group) (the runner's ``num_layers - layer_id - 1``, num_layers = depth + 2); no
    weight decay on 1-D parameters and biases (layer scales, norms), decay on the class and storage tokens."""
    from sagepose.config import OptimConfig
    from sagepose.train.optim import param_groups

    groups = param_groups(tiny_model(), OptimConfig(lr=1e-3, layer_decay=0.8, weight_decay=0.1))
    by_name = {n: g for g in groups for n in g["names"]}
    scale = {n: g["lr"] / 1e-3 for n, g in by_name.items()}
    assert scale["backbone.cls_token"] == scale["backbone.storage_tokens"] == pytest.approx(0.8 ** 4)
    assert scale["backbone.blocks.0.attn.q.weight"] == pytest.approx(0.8 ** 3)
    assert scale["backbone.blocks.2.mlp.fc2.weight"] == pytest.approx(0.8)
    assert scale["backbone.norm.weight"] == scale["head.final_conv.weight"] == 1.0
    assert by_name["backbone.storage_tokens"]["weight_decay"] == by_name["backbone.blocks.1.attn.k.weight"][
        "weight_decay"] == 0.1
    for name in ("backbone.blocks.1.layer_scale", "backbone.blocks.1.attn.q_norm.weight", "backbone.norm.weight",
                 "backbone.blocks.0.attn.q.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name


def test_multi_scale_test_averages_each_scales_flip_tested_heatmaps():
    import numpy as np

    model = tiny_model(test_scales=(0.75, 1.0, 1.25)).eval()
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5, 5, 80, 110], [20, 10, 70, 100]], np.float32)
    pred = model.predict(image, boxes, return_heatmaps=True)
    assert pred.keypoints.shape == (2, 17, 2) and np.isfinite(pred.keypoints).all()
    with torch.no_grad():
        want = sum(model.scale_heatmaps(model.normalize(torch.from_numpy(model.crop(image, boxes, f)[0])), f)
                   for f in model.test_scales) / 3
    np.testing.assert_allclose(pred.heatmaps, want.numpy(), rtol=0, atol=1e-6)
    model.test_scales = (1.0,)
    assert not np.allclose(model.predict(image, boxes, return_heatmaps=True).heatmaps, pred.heatmaps)


def test_the_rounded_rope_that_onnx_exports_equals_the_bfloat16_one_bit_for_bit():
    """apply_rope_rounded (float32 operations, each rounded to bfloat16: what the ONNX graph holds) gives exactly
    apply_rope's bfloat16 arithmetic, for float32, bfloat16 and float16 queries (onnxruntime running the exported
    graph: tests/test_onnx.py)."""
    from sagepose.models.sapiens2 import apply_rope, apply_rope_rounded

    sin, cos = GridRope(16)(4, 3)
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = (torch.randn(2, 4, 9 + 12, 16) * 4).to(dtype)
        want = apply_rope(x, sin, cos)
        assert want.dtype == dtype and torch.equal(apply_rope_rounded(x, sin, cos), want)


# ---- the 4K variant's windowed tokenizer ----------------------------------------------------------------------------
TOKENIZER = OFFICIAL["tokenizer"]
TOKENIZER_TAG = "x".join(str(v) for v in TOKENIZER["size_hw"])


def tokenizer_backbone(**extra):
    """The goldens' shrunk tokenizer backbone (the middle block grouped-query), the official weights loaded strictly
    from the pretraining-style file (bare backbone keys) through the converter."""
    t = TOKENIZER
    assert t["gqa_layers"] == [1]
    backbone = sapiens2("sapiens2-0.4b", embed_dim=t["embed_dims"], depth=t["num_layers"], num_heads=t["num_heads"],
                        mlp_dim=t["feedforward_channels"], mha_ends=1, patch_size=t["patch_size"],
                        use_tokenizer=True, window_size=t["window_size"],
                        num_tokenizer_layers=t["num_tokenizer_layers"], **extra).eval()
    sd, fmt, backbone_only = convert_state_dict(load_file(GOLDENS / "tokenizer.safetensors"))
    assert (fmt, backbone_only) == ("sapiens2-pretrain", True)
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in sd.items()}, strict=True)
    return backbone


def tokenizer_rel_diff(backbone, golden: str = "") -> float:
    io = load_file(GOLDENS / "tokenizer_io.safetensors")
    with golden_threads(), torch.no_grad():
        got = backbone(io[f"input_{TOKENIZER_TAG}"])
    want = io[f"features_{golden}{TOKENIZER_TAG}"]
    assert got.shape == want.shape == (2, TOKENIZER["embed_dims"], 2, 3)  # a 2x3 grid of 4x4-patch windows
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("chunk_size", [1024, TOKENIZER["chunk_size"], 1])
def test_the_tokenizer_backbone_equals_the_official_code(chunk_size):
    """The official tokenizer ran its 12 windows in chunks of 5 (a chunk spanning both images); ours in any chunks:
    the windows are independent, so chunking moves the float32 last bits only (measured: 1.6e-7 of the peak at
    1024 and 1, 0 at 5). With the default bfloat16 RoPE the bound is the shrunk pose model's (1e-5 on the goldens'
    platform, 5e-4 elsewhere); with float32 RoPE 1e-5 everywhere."""
    bound = 1e-5 if OFFICIAL["platform"] == signature() else 5e-4
    assert tokenizer_rel_diff(tokenizer_backbone(tokenizer_chunk_size=chunk_size)) <= bound
    assert tokenizer_rel_diff(tokenizer_backbone(tokenizer_chunk_size=chunk_size, rope_dtype="fp32"),
                              golden="fp32rope_") <= 1e-5


def test_the_official_tokenizer_names_map_onto_ours():
    official = load_file(GOLDENS / "tokenizer.safetensors")
    sd = from_sapiens2(official)
    assert set(sd) == {f"backbone.{k}" for k in tokenizer_backbone().state_dict()}
    assert torch.equal(sd["backbone.tokenizer.pos_embed"], official["tokenizer.local_pos_embed"])
    assert torch.equal(sd["backbone.tokenizer.cls_token"], official["tokenizer.w_cls"])
    assert torch.equal(sd["backbone.tokenizer.blocks.1.attn.q.bias"], official["tokenizer.blocks.1.attn.wq.bias"])
    assert torch.equal(sd["backbone.tokenizer.blocks.0.mlp.fc1.weight"], official["tokenizer.blocks.0.ffn.w12.weight"])
    assert not any("q_norm" in k or "layer_scale" in k for k in sd if ".tokenizer." in k)  # none in the official


def test_the_4k_backbone_sees_a_1024x768_grid_and_gives_stride_64_features():
    with torch.device("meta"):
        backbone = sapiens2("sapiens2-1b-4k")
        feats = backbone(torch.empty(1, 3, 4096, 3072))
    assert backbone.img_size == (4096, 3072) and backbone.grid_size == (64, 48) and backbone.stride == 64
    assert feats.shape == (1, 1536, 64, 48)
    assert len(backbone.tokenizer.blocks) == 4 and backbone.tokenizer.pos_embed.shape == (1, 17, 1536)


def test_the_documented_4k_fine_tuning_model_has_the_4k_backbone_and_heatmaps_at_stride_4():
    """docs/pretrained-weights.md: ``sapiens2-1b`` with the tokenizer and four deconvs, for the 1B-4K backbone file."""
    with torch.device("meta"):
        model = build_model("sapiens2-1b", input_size=(3072, 4096),
                            arch=dict(use_tokenizer=True, deconv_channels=(1536, 1024, 768, 512)))
        heatmaps = model(torch.empty(1, 3, 4096, 3072))
    assert sum(p.numel() for p in model.backbone.parameters()) == OFFICIAL["param_counts"]["sapiens2-1b-4k"]
    assert heatmaps.shape == (1, 308, *model.codec.heatmap_size[::-1]) == (1, 308, 1024, 768)


def test_a_tokenizer_model_without_deconvs_enough_for_its_stride_is_refused_at_build():
    with pytest.raises(ValueError, match="stride-64 backbone needs 4 deconvs .* the head has 2") as e:
        with torch.device("meta"):
            build_model("sapiens2-1b", input_size=(3072, 4096), arch=dict(use_tokenizer=True))
    assert "\n" not in str(e.value)


def test_the_tokenizer_refuses_a_grid_its_windows_do_not_tile():
    backbone = tokenizer_backbone()
    with pytest.raises(ValueError, match="divisible by its window 4, got 8x10 patches"):
        backbone(torch.zeros(1, 3, 32, 40))


def tokenizer_pose_model(**kw):
    """A tiny pose model on a tokenizer backbone: 2x2 windows of 16-px patches (stride 32), so three deconvs
    bring the heatmaps to the codec's stride 4."""
    torch.manual_seed(0)
    arch = dict(TINY, use_tokenizer=True, window_size=2, num_tokenizer_layers=2, deconv_channels=(16, 16, 8),
                **kw.pop("arch", {}))
    return build_model("sapiens2-0.4b", schema="coco", input_size=(64, 96), arch=arch, **kw)


def test_the_flip_test_with_the_tokenizer_averages_each_crop_with_its_mirror():
    """The mirrored crops ride in the same batch as the originals: their windows must stay their own."""
    model = tokenizer_pose_model().eval()
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    fused = model.predict_heatmaps(x)
    assert fused.shape == (2, 17, 24, 16)
    with torch.no_grad():
        want = (model(x) + model.flip_back(model(x.flip(-1)))) * 0.5
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-6)


def test_the_tokenizer_under_bfloat16_autocast_and_in_bfloat16():
    """Autocast: every parameter gets a finite gradient, and the tokens leave the tokenizer in the patch
    embedding's dtype (bfloat16), as the official module writes them. In bfloat16 weights: near float32."""
    model = tokenizer_pose_model().train()
    seen = {}
    model.backbone.tokenizer.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o[0].dtype) and None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        heatmaps = model(torch.randn(2, 3, 96, 64))
    heatmaps.float().square().mean().backward()
    assert seen["tokens"] == torch.bfloat16
    assert not [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
                or not p.grad.abs().sum() > 0]
    model.eval()
    x = torch.randn(2, 3, 96, 64)
    want = model.predict_heatmaps(x)
    got = model.set_dtype(torch.bfloat16).predict_heatmaps(x)
    assert got.dtype == torch.float32 and float((got - want).abs().max() / want.abs().max()) < 0.05


def test_activation_checkpointing_recomputes_the_tokenizer_and_keeps_the_gradients():
    grads, calls = {}, {}
    for on in (False, True):
        model = tokenizer_pose_model(arch=dict(grad_checkpointing=on)).train()
        calls[on] = 0

        def count(*_, on=on):
            calls[on] += 1
        for block in model.backbone.tokenizer.blocks:
            block.register_forward_pre_hook(count)
        torch.manual_seed(1)
        model(torch.randn(2, 3, 96, 64)).square().mean().backward()
        grads[on] = {n: p.grad for n, p in model.named_parameters()}
    assert (calls[False], calls[True]) == (2, 4)  # one chunk through 2 blocks, again in the backward pass
    for n, g in grads[False].items():
        torch.testing.assert_close(grads[True][n], g, rtol=1e-5, atol=1e-7)


def test_layer_decay_puts_the_tokenizer_with_the_patch_embedding_as_the_official_runner():
    """The official runner's ``_get_layer_id_for_sapiens``: ``backbone.tokenizer.*`` is layer 0; its position table
    takes no weight decay (a ``pos_embed``), its class token does."""
    from sagepose.config import OptimConfig
    from sagepose.train.optim import param_groups

    model = tokenizer_pose_model()
    by_name = {n: g for g in param_groups(model, OptimConfig(lr=1e-3, layer_decay=0.8, weight_decay=0.1))
               for n in g["names"]}
    for name in ("backbone.tokenizer.cls_token", "backbone.tokenizer.pos_embed",
                 "backbone.tokenizer.blocks.1.attn.q.weight", "backbone.tokenizer.blocks.0.mlp.fc2.bias"):
        assert by_name[name]["lr"] == pytest.approx(1e-3 * 0.8 ** 4), name
    assert by_name["backbone.tokenizer.pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.tokenizer.cls_token"]["weight_decay"] == 0.1
