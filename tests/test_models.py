"""sagepose.models: every zoo model's size, forward/backward, pos-embed resizing, activation
checkpointing, checkpoint import and the strict-load report, and the ``load`` / ``predict`` API."""
import json
from pathlib import Path

import pytest
import torch

from sagepose.keypoints import MPII16
from sagepose.models import MODELS, build_model, build_model_from_config, from_vitpose, load_checkpoint
from sagepose.models.checkpoint import CheckpointMismatchError
from sagepose.models.heads import SkipHeatmapHead
from sagepose.models.vit import interpolate_pos_embed, vit

GOLDENS = Path(__file__).parent / "goldens"
PARAM_COUNTS = {**json.loads((GOLDENS / "models/param_counts.json").read_text())["counts"],
                **json.loads((GOLDENS / "rtmpose/param_counts.json").read_text())["counts"]}  # make_rtmpose_goldens
# Shrunk numbers so every family's head runs a forward/backward in well under a second on CPU.
SMALL_ARCH = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64)


# vit-tiny and the *-fusion rows are ours: no MMPose build (the fusion rows are checked in test_fusion_head.py);
# Sapiens2 has no MMPose build either: test_sapiens2.py counts its rows against the official code's
@pytest.mark.parametrize("name", sorted(n for n in MODELS if n != "vit-tiny" and not n.endswith("-fusion")
                                         and not n.startswith("sapiens2-")))
def test_param_count_equals_mmpose_build_of_same_config(name):
    with torch.device("meta"):  # no memory for the 2B-parameter Sapiens
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


# HRNet / HRFormer run the same check on shrunk architectures in test_parity_hrnet.py, Sapiens2 (308 keypoints)
# in test_sapiens2.py, RTMPose (SimCC logits, not heatmaps) in test_rtmpose.py
@pytest.mark.parametrize("name", sorted(n for n in MODELS if not n.startswith(("hrnet", "hrformer", "sapiens2-",
                                                                                "rtmpose"))
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
