"""sagepose.models: every zoo model's size, forward/backward, pos-embed resizing, activation
checkpointing, checkpoint import and the strict-load report, and the ``load`` / ``predict`` API."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from weightgen import synthetic_image

from sagepose.keypoints import MPII16
from sagepose.models import MODELS, build_model, build_model_from_config, cpu_kernels, from_vitpose, load_checkpoint
from sagepose.models.checkpoint import CheckpointMismatchError
from sagepose.models.heads import SkipHeatmapHead
from sagepose.models.vit import interpolate_pos_embed, vit

PARAM_COUNTS = json.loads((Path(__file__).parent / "goldens/models/param_counts.json").read_text())["counts"]
# Shrunk numbers so every family's head runs a forward/backward in well under a second on CPU.
SMALL_ARCH = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64)


# vit-tiny and the *-fusion rows are ours: no MMPose build (the fusion rows are checked in test_fusion_head.py)
@pytest.mark.parametrize("name", sorted(n for n in MODELS if n != "vit-tiny" and not n.endswith("-fusion")))
def test_param_count_equals_mmpose_build_of_same_config(name):
    with torch.device("meta"):  # no memory for the 2B-parameter Sapiens
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


# HRNet / HRFormer run the same check on shrunk architectures in test_parity_hrnet.py
@pytest.mark.parametrize("name", sorted(n for n in MODELS if not n.startswith(("hrnet", "hrformer"))
                                         and not n.endswith("-fusion")))
def test_forward_shape_finite_and_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    # no drop path: a dropped branch for the whole (tiny) batch would leave its parameters without gradient
    small = dict(arch=SMALL_ARCH, input_size=(48, 64)) if name != "vit-tiny" else {}
    small["drop_path_rate"] = 0.0
    if name.startswith("sapiens"):
        small["arch"] = dict(SMALL_ARCH, deconv_channels=(16, 16), conv_channels=(16, 16))
    model = build_model(name, **small).train()
    w, h = model.input_size
    heatmaps = model(torch.randn(2, 3, h, w))
    assert heatmaps.shape == (2, 17, h // 4, w // 4)
    assert torch.isfinite(heatmaps).all()
    heatmaps.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


def test_vit_tiny_demo_numbers():
    model = build_model("vit-tiny")
    assert model.input_size == (96, 128) and model.backbone.grid_size == (8, 6)
    assert model.codec.heatmap_size == (24, 32) and model.codec.udp and model.flip_test
    assert sum(p.numel() for p in model.parameters()) == 1_432_041
    assert isinstance(model.head, SkipHeatmapHead) and model.backbone.out_channels == [48, 96, 128]


def test_conv_stem_reaches_patch_stride_and_rejects_a_mismatch():
    torch.manual_seed(0)
    backbone = vit("vit-tiny")
    f4, f8, tokens = backbone(torch.randn(1, 3, 128, 96))
    assert (f4.shape, f8.shape, tokens.shape) == ((1, 48, 32, 24), (1, 96, 16, 12), (1, 128, 8, 6))
    assert vit("vit-tiny", skip_strides=())(torch.randn(1, 3, 128, 96)).shape == (1, 128, 8, 6)
    with pytest.raises(ValueError, match="stride 8, patch_size is 16"):
        vit("vit-tiny", stem_channels=(8, 16, 32))
    with pytest.raises(ValueError, match="skip_strides \\[16\\]"):
        vit("vit-tiny", skip_strides=(4, 16))


def test_skip_head_adds_the_stride4_features_where_they_are():
    """A change of the stride-4 skip at one pixel moves the heatmaps only within the 3x3 refine conv's
    reach of that pixel; a change of the tokens reaches further (the deconvs spread it)."""
    torch.manual_seed(0)
    head = SkipHeatmapHead([48, 96, 128], 17).eval()
    feats = [torch.randn(1, 48, 32, 24), torch.randn(1, 96, 16, 12), torch.randn(1, 128, 8, 6)]
    with torch.no_grad():
        base = head(feats)
        f4 = feats[0].clone()
        f4[0, :, 10, 7] += 5.0
        moved = (head([f4, *feats[1:]]) - base).abs().amax(1)[0] > 0
    ys, xs = torch.nonzero(moved, as_tuple=True)
    assert moved[10, 7] and ys.min() >= 9 and ys.max() <= 11 and xs.min() >= 6 and xs.max() <= 8
    with torch.no_grad():
        tokens = feats[2].clone()
        tokens[0, :, 2, 2] += 5.0
        spread = (head([*feats[:2], tokens]) - base).abs().amax(1)[0] > 0
    assert spread.sum() > moved.sum()


def test_softmax_output_is_a_scaled_spatial_distribution_peaking_like_the_target():
    # sigma 1.5: a discrete Gaussian this wide has nearly the same mass at any sub-pixel position
    model = build_model("vit-tiny", heatmap_output="softmax", codec={"sigma": 1.5}).eval()
    w, h = model.codec.input_size
    target, _ = model.codec.encode(torch.tensor([[[40.0, 70.0]]]), torch.ones(1, 1))
    logits = target.clamp_min(1e-8).log().expand(1, 17, -1, -1)  # the ideal logits for this target
    heatmaps = model.activate(logits)
    torch.testing.assert_close(heatmaps.sum((-2, -1)), torch.full((1, 17), model.heatmap_mass))
    # the discrete Gaussian's mass shifts slightly with the sub-pixel position: within 0.5 %
    torch.testing.assert_close(heatmaps[0, 0], target[0, 0], atol=5e-3, rtol=5e-3)


def test_resize_pos_embed_changes_grid_bicubically_and_matches_runtime_interpolation():
    torch.manual_seed(0)
    backbone = vit("vit-tiny").eval()
    x = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        on_the_fly = backbone(x)  # the grid differs: position embeddings interpolated at run time
    old = backbone.pos_embed.detach().clone()
    backbone.set_input_size((160, 128))
    assert backbone.grid_size == (10, 8) and backbone.pos_embed.shape == (1, 80, 128)
    grid = old.reshape(1, 8, 6, 128).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(10, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(backbone.pos_embed.detach(), expected.flatten(2).transpose(1, 2))
    with torch.no_grad():
        for a, b in zip(backbone(x), on_the_fly):
            torch.testing.assert_close(a, b)
    assert backbone(x)[-1].shape == (1, 128, 10, 8)
    assert interpolate_pos_embed(old, (8, 6), (8, 6)) is old


def test_activation_checkpointing_gives_same_output_and_gradients():
    x = torch.randn(2, 3, 128, 96)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        backbone = vit("vit-tiny", drop_path_rate=0.2, grad_checkpointing=ckpt).train()
        torch.manual_seed(1)  # same drop-path draws; checkpoint replays them with the saved RNG state
        out = backbone(x)[-1]
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in backbone.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_strict_load_reports_missing_unexpected_and_misshaped_keys():
    model = build_model("vit-tiny")
    sd = model.state_dict()
    sd.pop("backbone.blocks.0.attn.qkv.bias")
    sd["backbone.extra.weight"] = torch.zeros(3)
    sd["head.final_conv.weight"] = torch.zeros(5, 64, 1, 1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, sd)
    msg = str(info.value)
    assert "1 missing" in msg and "backbone.blocks.0.attn.qkv.bias" in msg
    assert "1 unexpected" in msg and "backbone.extra.weight" in msg
    assert "1 mis-shaped" in msg
    assert "head.final_conv.weight: checkpoint (5, 64, 1, 1) vs model (17, 64, 1, 1)" in msg
    missing, unexpected, shaped = load_checkpoint(model, sd, strict=False)
    assert (len(missing), len(unexpected), len(shaped)) == (1, 1, 1)


def test_mae_style_pos_embed_with_cls_slot_is_dropped_and_resized():
    torch.manual_seed(0)
    model = build_model("vit-tiny")
    sd = model.state_dict()
    pos = torch.randn(1, 1 + 8 * 8, 128)  # square MAE grid plus a cls slot
    sd["backbone.pos_embed"] = pos
    load_checkpoint(model, sd)
    expected = interpolate_pos_embed(pos[:, 1:], (8, 8), (8, 6))
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)


def test_official_vitpose_keys_convert_and_fold_cls_position_into_tokens():
    sd = {"backbone.patch_embed.proj.weight": 0, "backbone.blocks.0.norm1.weight": 1,
          "backbone.blocks.0.mlp.fc1.bias": 2, "backbone.last_norm.bias": 3,
          "keypoint_head.deconv_layers.4.running_var": 4, "keypoint_head.final_layer.weight": 5,
          "backbone.pos_embed": torch.arange(6.0).view(1, 3, 2)}
    out = from_vitpose({"state_dict": sd})
    assert out["backbone.patch_embed.weight"] == 0 and out["backbone.blocks.0.norm1.weight"] == 1
    assert out["backbone.blocks.0.mlp.fc1.bias"] == 2 and out["backbone.norm.bias"] == 3
    assert out["head.deconv_blocks.1.norm.running_var"] == 4 and out["head.final_conv.weight"] == 5
    torch.testing.assert_close(out["backbone.pos_embed"], torch.tensor([[[2.0, 4.0], [4.0, 6.0]]]))


def test_build_from_config_dict_with_schema_arch_and_codec_overrides():
    model = build_model_from_config({"name": "vit-tiny", "schema": "mpii", "drop_path_rate": None,
                                     "arch": {"depth": 2}, "codec": {"sigma": 2.0}, "flip_test": False})
    assert model.schema is MPII16 and len(model.backbone.blocks) == 2
    assert model.codec.sigma == 2.0 and not model.flip_test
    assert build_model("vit-tiny", num_keypoints=5).head.final_conv.out_channels == 5
    with pytest.raises(ValueError, match="dpeth"):
        build_model("vit-tiny", arch={"dpeth": 2})


def test_channels_last_config_gives_nhwc_conv_weights_and_the_same_heatmaps():
    torch.manual_seed(0)
    plain = build_model_from_config({"name": "vit-tiny"}).eval()
    nhwc = build_model_from_config({"name": "vit-tiny", "channels_last": True}).eval()
    nhwc.load_state_dict(plain.state_dict())
    conv = nhwc.backbone.patch_embed.stages[1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), atol=1e-4, rtol=1e-4)


def test_cpu_bf16_training_attention_runs_in_float32_with_the_same_values_and_gradients(monkeypatch):
    kernel_dtypes = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(cpu_kernels.F, "scaled_dot_product_attention",
                        lambda q, *a, **kw: kernel_dtypes.append(q.dtype) or sdpa(q, *a, **kw))
    attention = cpu_kernels.attention
    torch.manual_seed(0)
    base = [torch.randn(4, 2, 48, 16).bfloat16() for _ in range(3)] + [torch.randn(2, 48, 48)]
    q, k, v = (t.clone().requires_grad_() for t in base[:3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, attn_mask=base[3].float())
    assert out.dtype == torch.bfloat16 and kernel_dtypes == [torch.float32]
    (out.float() * torch.linspace(-1, 1, 16)).sum().backward()
    # reference: float32 SDPA on the same bf16-rounded inputs
    qr, kr, vr = (t.float().requires_grad_() for t in base[:3])
    ref = F.scaled_dot_product_attention(qr, kr, vr, attn_mask=base[3].float())
    (ref * torch.linspace(-1, 1, 16)).sum().backward()
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)  # the output's bf16 rounding
    for got, want in zip((q, k, v), (qr, kr, vr)):
        assert got.grad.dtype == torch.bfloat16
        torch.testing.assert_close(got.grad.float(), want.grad, atol=2e-2, rtol=2e-2)
    with torch.no_grad():  # inference keeps torch's own bf16 kernel
        assert attention(*base[:3]).dtype == torch.bfloat16 and kernel_dtypes[-1] == torch.bfloat16


@pytest.mark.parametrize("name", ["hrnet-w32", "hrformer-s", "vit-tiny", "vitpose-b-simple"])
def test_fuse_for_inference_folds_every_batchnorm_and_keeps_the_outputs(name):
    from sagepose.models.inference import fold_batchnorm

    torch.manual_seed(0)
    arch = dict(SMALL_ARCH) if name.startswith("vitpose") else None
    model = build_model(name, **({"arch": arch} if arch else {}))
    with torch.no_grad():  # BatchNorm statistics far from identity, so a wrong fold shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        want = model(x)
        with pytest.raises(RuntimeError, match="eval mode"):
            fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).train())
        model.fuse_for_inference()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        got = model(x)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5
    assert model.fuse_for_inference() is model  # idempotent
    with pytest.raises(RuntimeError, match="fused for inference"):
        model.train()


def test_packed_linear_weights_give_the_same_bits_and_follow_weight_changes():
    import copy

    from sagepose.models.cpu_kernels import pack_linear_weights

    torch.manual_seed(0)
    model = build_model("vitpose-b", arch=dict(depth=2), input_size=(96, 128)).eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        plain = model(x)
        if pack_linear_weights(model) == 0:
            pytest.skip("this torch build has no oneDNN linear-weight packing")
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert all(cpu_kernels._PACKED[m][2].is_mkldnn for m in linears)
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)  # the same bits
        fc1 = model.backbone.blocks[0].mlp.fc1
        fc1.weight.mul_(0.5)  # changed in place after packing
        proj = model.backbone.blocks[1].attn.proj
        proj.weight = torch.nn.Parameter(torch.randn_like(proj.weight))  # replaced after packing
        unpacked = copy.deepcopy(model)  # a copy is not packed (and copying works)
        assert not any(m in cpu_kernels._PACKED for m in unpacked.modules())
        want = unpacked(x)
        assert (want - plain).abs().max() > 1e-2
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["vitpose-b", "hrnet-w32"])
def test_set_dtype_predicts_in_bfloat16_close_to_float32(name):
    import copy

    torch.manual_seed(0)
    arch = dict(depth=2) if name.startswith("vitpose") else dict(widths=(8, 16, 24, 32), num_modules=(1, 1, 1),
                                                                  num_blocks=1, stem_blocks=1)
    model = build_model(name, arch=arch).eval()
    fused = copy.deepcopy(model).fuse_for_inference()
    image = synthetic_image()
    boxes = np.array([[60, 20, 260, 300], [0, 0, 320, 320]], np.float32)
    want = model.predict(image, boxes, return_heatmaps=True)
    for m in (model, fused):
        got = m.set_dtype("bfloat16").predict(image, boxes, return_heatmaps=True)
        assert m.compute_dtype == torch.bfloat16 and m.mean.dtype == torch.float32
        assert all(p.dtype == torch.bfloat16 for p in m.parameters())
        assert got.heatmaps.dtype == np.float32 and got.keypoints.dtype == np.float32
        rel = np.abs(got.heatmaps - want.heatmaps).max() / np.abs(want.heatmaps).max()
        assert 1e-4 < rel <= 5e-2  # really computed in bf16 (not silently float32), and close
    assert not any(m in cpu_kernels._PACKED for m in fused.modules())  # no stale float32 packed copies
    with pytest.raises(RuntimeError, match="float32"):
        model.set_exact()
    with pytest.raises(ValueError, match="float64"):
        model.set_dtype(torch.float64)
    with pytest.warns(UserWarning, match="float16 on this CPU is emulated"):
        model.set_dtype("float16")
    with pytest.raises(RuntimeError, match="mixed precision"):
        model.train()
    back = model.set_dtype(torch.float32).predict(image, boxes, return_heatmaps=True)
    assert np.abs(back.heatmaps - want.heatmaps).max() / np.abs(want.heatmaps).max() <= 1e-2  # weights went via bf16
    with pytest.raises(RuntimeError, match="float32"):
        model.set_exact().set_dtype("bfloat16")


def test_weights_are_packed_by_default_only_where_the_copy_fits_in_an_eighth_of_the_ram(monkeypatch):
    linear_bytes = 2 * 4 * 4 * 768 * 768 + 2 * 2 * 4 * 768 * 3072  # 2 blocks: qkv + proj, fc1 + fc2; float32
    pages = {"SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(cpu_kernels.os, "sysconf", lambda name: pages[name])
    for ram, packed in ((8 * linear_bytes + 4096, True), (8 * linear_bytes - 4096, False)):
        pages["SC_PHYS_PAGES"] = ram // 4096
        model = build_model("vitpose-b", arch=dict(depth=2), input_size=(96, 128)).eval().fuse_for_inference()
        packs = any(m in cpu_kernels._PACKED for m in model.modules())
        assert packs == (packed and cpu_kernels.onednn_available()), ram


def test_inference_mode_refuses_exactly_exact_with_fusing_or_low_precision_and_packing_without_fusing():
    import itertools

    from sagepose.models.inference import InferenceMode

    for fused, exact, dtype, packed in itertools.product((False, True), (False, True),
                                                         (torch.float32, torch.bfloat16, torch.float16), (False, True)):
        mode = InferenceMode(fused, exact, dtype, packed)
        reasons = [(exact and fused, r"exact=True"), (exact and dtype != torch.float32, r"float32 arithmetic"),
                   (packed and not fused, r"needs fused=True")]
        refused = [match for bad, match in reasons if bad]
        if not refused:
            mode.check()
            continue
        with pytest.raises((RuntimeError, ValueError), match=refused[0] if len(refused) == 1 else None):
            mode.check()
    with pytest.raises(ValueError, match="float64"):
        InferenceMode(dtype=torch.float64).check()


def test_fuse_for_inference_refuses_a_model_in_exact_mode_and_fusing_cannot_be_undone():
    import dataclasses

    from sagepose.models.inference import InferenceMode

    model = build_model("vit-tiny").eval().set_exact()
    with pytest.raises(RuntimeError, match="set_exact\\(False\\) before fuse_for_inference"):
        model.fuse_for_inference()  # formerly it folded the BatchNorms under exact mode
    assert model.exact and not model.fused
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    model.set_exact(False).fuse_for_inference(pack_weights=False)
    assert model.inference_mode == InferenceMode(fused=True)
    with pytest.raises(RuntimeError, match="cannot be undone"):
        model.set_mode(dataclasses.replace(model.inference_mode, fused=False))


def test_set_mode_in_one_step_predicts_as_the_setters_one_after_another():
    import copy

    from sagepose.models.inference import InferenceMode

    torch.manual_seed(0)
    model = build_model("vitpose-b", arch=dict(depth=2), input_size=(96, 128)).eval()
    image = synthetic_image()
    boxes = np.array([[60, 20, 260, 300]], np.float32)
    stepwise = copy.deepcopy(model).fuse_for_inference(pack_weights=True).set_dtype("bfloat16")
    at_once = model.set_mode(InferenceMode(fused=True, dtype=torch.bfloat16, packed=True))  # folded, then cast
    for _ in range(2):
        assert at_once.inference_mode == stepwise.inference_mode
        want = stepwise.predict(image, boxes, return_heatmaps=True)
        got = at_once.predict(image, boxes, return_heatmaps=True)
        np.testing.assert_array_equal(got.heatmaps, want.heatmaps)
        np.testing.assert_array_equal(got.keypoints, want.keypoints)
        stepwise.set_dtype("float32")
        at_once.set_mode(InferenceMode(fused=True, packed=True))
    assert any(m in cpu_kernels._PACKED for m in at_once.modules()) == cpu_kernels.onednn_available()  # re-packed


def test_onednn_is_probed_once_and_sagepose_onednn_0_gives_plain_f_linear(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 5, 8)
    monkeypatch.setenv("SAGEPOSE_ONEDNN", "0")
    cpu_kernels.onednn_available.cache_clear()
    try:
        assert cpu_kernels.onednn_available() is False
        monkeypatch.setenv("SAGEPOSE_ONEDNN", "1")
        assert cpu_kernels.onednn_available() is False  # probed once: the first answer stays
        with torch.no_grad():
            torch.testing.assert_close(cpu_kernels.linear(x, layer, gelu=True), F.gelu(F.linear(x, layer.weight,
                                       layer.bias)), rtol=0, atol=0)
            assert cpu_kernels.pack_linear_weights(layer) == 0
    finally:
        cpu_kernels.onednn_available.cache_clear()
