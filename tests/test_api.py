"""sagepose.api: loading a checkpoint or a zoo name, and matching a state dict to its zoo model."""
from __future__ import annotations

import warnings

import pytest
import torch

import sagepose
import sagepose.api
from sagepose.models import build_model


def test_load_detects_lightning_checkpoint_and_returns_eval_model(tmp_path):
    torch.manual_seed(0)
    src = build_model("vit-tiny")
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    model = sagepose.api.load("vit-tiny", checkpoint=path, fuse=False)
    assert not model.training
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    fused = sagepose.api.load("vit-tiny", checkpoint=path)  # BatchNorms folded: same outputs, fewer entries
    assert fused.fused and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


def test_load_without_weights_warns_once_per_name(monkeypatch):
    from sagepose import api

    monkeypatch.setattr(api, "_WARNED_RANDOM", set())
    with pytest.warns(api.RandomWeightsWarning, match=r"sagepose.load\('vit-tiny'\) without a checkpoint: random"):
        sagepose.load("vit-tiny", fuse=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sagepose.load("vit-tiny", fuse=False)  # once
        sagepose.load("vit-tiny", fuse=False, random_weights=True)
    with pytest.raises(api.NoWeightsError, match="vit-tiny: no weights given"):
        sagepose.load("vit-tiny", random_weights=False)


def test_match_model_prefers_the_family_of_the_format_when_backbones_coincide():
    with torch.device("meta"):
        sd = build_model("sapiens-0.3b").state_dict()  # ViT-L numbers, as vitpose-l's backbone
    backbone = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    backbone["backbone.pos_embed"] = torch.empty(1, 64 * 64, 1024, device="meta")  # 1024x1024 MAE grid
    assert sagepose.api.match_model(backbone, backbone_only=True, fmt="sapiens-pretrain") == ("sapiens-0.3b", 17)
    assert sagepose.api.match_model(backbone, backbone_only=True, fmt="mae")[0] == "vitpose-l"
    with pytest.raises(ValueError, match="no zoo model"):
        sagepose.api.match_model({"backbone.x": torch.empty(1, device="meta")})
