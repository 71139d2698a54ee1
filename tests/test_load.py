"""sagepose.load / convert / `sagepose infer` rebuild the model a checkpoint was trained as (its recipe:
heatmap output, codec and architecture overrides), never the zoo default of the same name."""
from __future__ import annotations

import copy
import json
import warnings

import cv2
import numpy as np
import pytest
import torch

import sagepose
from sagepose.config import load_config, replace, to_dict
from sagepose.errors import ConfigMismatchWarning
from sagepose.models import build_model, build_model_from_config
from sagepose.models.checkpoint import read_checkpoint

# what a run with `model.heatmap_output=softmax model.codec=... model.arch=...` trains: none of it the zoo's
RECIPE = ["model.name=vit-tiny", "model.heatmap_output=softmax", "model.codec={'sigma': 1.0, 'blur_kernel_size': 5}",
          "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}", "model.channels_last=true"]


def _save_like_training(cfg, model, path):
    """The checkpoint `sagepose train` writes: Lightning's dict, the module's keys under ``model.``, and the run
    config in ``hyper_parameters`` (TopDownModule.save_hyperparameters)."""
    torch.save({"epoch": 3, "global_step": 12, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"config": to_dict(cfg), "val_gt_json": None}}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model as trained, its training checkpoint, a test image). The saved config names an init checkpoint
    that does not exist: rebuilding for prediction must not read it."""
    root = tmp_path_factory.mktemp("load")
    cfg = load_config(None, RECIPE)
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model).eval()
    with torch.no_grad():  # weights of some scale, so the heatmaps have clear peaks the recipes decode differently
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    saved = replace(cfg, model={"init_checkpoint": str(root / "pretrain-gone.pth")})
    ckpt = _save_like_training(saved, model, root / "best.ckpt")
    image = np.random.default_rng(0).integers(0, 256, (150, 110, 3), dtype=np.uint8)
    return model, ckpt, image


def _assert_same_predictions(loaded, original, image):
    want, got = original.predict(image), loaded.predict(image)
    np.testing.assert_array_equal(got.keypoints, want.keypoints)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_a_training_checkpoint_alone_rebuilds_the_model_it_was_trained_as(trained):
    model, ckpt, image = trained
    loaded = sagepose.load(ckpt, fuse=False)
    assert loaded.heatmap_output == "softmax" and len(loaded.backbone.blocks) == 2
    _assert_same_predictions(loaded, model, image)
    fused = sagepose.load(ckpt)  # the default: fused for inference, as the original would be
    _assert_same_predictions(fused, copy.deepcopy(model).fuse_for_inference(), image)


def test_the_zoo_name_with_a_training_checkpoint_uses_the_checkpoints_recipe(trained):
    model, ckpt, image = trained
    _assert_same_predictions(sagepose.load("vit-tiny", checkpoint=ckpt, fuse=False), model, image)


def test_convert_carries_the_recipe_and_the_converted_file_rebuilds_it(trained, tmp_path):
    model, ckpt, image = trained
    info = sagepose.api.convert(ckpt, tmp_path / "m.pth")
    assert (info["model"], info["source_format"]) == ("vit-tiny", "lightning")
    meta = read_checkpoint(tmp_path / "m.pth")["sagepose"]
    assert meta["model_config"]["heatmap_output"] == "softmax" and meta["model_config"]["init_checkpoint"] is None
    _assert_same_predictions(sagepose.load(tmp_path / "m.pth", fuse=False), model, image)
    _assert_same_predictions(sagepose.load("vit-tiny", checkpoint=tmp_path / "m.pth", fuse=False), model, image)
    sagepose.api.convert(tmp_path / "m.pth", tmp_path / "again.pth")  # sagepose -> sagepose keeps it too
    _assert_same_predictions(sagepose.load(tmp_path / "again.pth", fuse=False), model, image)


def test_the_recipe_without_arch_overrides_is_not_silently_replaced_by_the_zoo_default(tmp_path):
    """Softmax output and another decode blur load strictly into the zoo default too: the predictions would
    differ with no error (the issue's 75 px, scores of 3.6)."""
    cfg = load_config(None, ["model.heatmap_output=softmax", "model.codec={'sigma': 1.0, 'blur_kernel_size': 5}"])
    torch.manual_seed(1)
    model = build_model_from_config(cfg.model).eval()
    ckpt = _save_like_training(cfg, model, tmp_path / "last.ckpt")
    image = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    zoo_default = build_model("vit-tiny").eval()
    zoo_default.load_state_dict(model.state_dict())
    assert not np.array_equal(zoo_default.predict(image).scores, model.predict(image).scores)
    for loaded in (sagepose.load(ckpt, fuse=False), sagepose.load("vit-tiny", checkpoint=ckpt, fuse=False)):
        _assert_same_predictions(loaded, model, image)


def test_a_zoo_name_other_than_the_checkpoints_model_is_an_error(trained, tmp_path):
    _, ckpt, _ = trained
    with pytest.raises(ValueError, match=r"best.ckpt was trained as 'vit-tiny', not 'vitpose-s'"):
        sagepose.load("vitpose-s", checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"trained as 'vit-tiny', not 'vitpose-s'"):
        sagepose.api.convert(ckpt, tmp_path / "x.pth", model="vitpose-s")
    assert not (tmp_path / "x.pth").exists()


def test_an_explicit_config_that_differs_from_the_checkpoints_warns_naming_the_fields(trained):
    model, ckpt, image = trained
    raw_output = load_config(None, [*RECIPE, "model.heatmap_output=raw"])
    with pytest.warns(ConfigMismatchWarning, match=r"model.heatmap_output: checkpoint 'softmax', given 'raw'"):
        loaded = sagepose.load(raw_output, checkpoint=ckpt, fuse=False)
    assert loaded.heatmap_output == "raw"  # what was asked for explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same recipe: no warning
        _assert_same_predictions(sagepose.load(load_config(None, RECIPE), checkpoint=ckpt, fuse=False), model, image)


def test_infer_cli_with_a_zoo_name_and_a_training_checkpoint_uses_its_recipe(trained, tmp_path):
    from sagepose.cli.main import main

    model, ckpt, image = trained
    cv2.imwrite(str(tmp_path / "person.png"), image)  # lossless: the file holds the same pixels
    assert main(["infer", "vit-tiny", str(tmp_path / "person.png"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "out"), "--no-render"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    got = np.asarray(rows[0]["keypoints"]).reshape(-1, 3)
    want = copy.deepcopy(model).fuse_for_inference().predict(image)  # the CLI loads fused
    np.testing.assert_allclose(got[:, :2], want.keypoints[0], atol=5e-4)  # results.json keeps 3 decimals
    np.testing.assert_allclose(got[:, 2], want.scores[0], atol=5e-4)
    assert main(["infer", str(ckpt), str(tmp_path / "person.png"), "--out", str(tmp_path / "alone"),
                 "--no-render"]) == 0  # the checkpoint alone names its model
    assert json.loads((tmp_path / "alone" / "results.json").read_text()) == rows


def test_load_accepts_a_bundled_recipe_name():
    model = sagepose.load("demo_tiny_vit", fuse=False)
    assert model.heatmap_output == "softmax"  # the recipe's, not the zoo default's "raw"
