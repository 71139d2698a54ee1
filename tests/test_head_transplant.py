"""sagepose.models.head_transplant: a new skeleton's head starts from the init checkpoint's channels of its joints."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sagepose.config import Config, ConfigError, ModelConfig, validate
from sagepose.keypoint_maps import MappingError
from sagepose.keypoint_sets import GOLIATH_TO_COCO17
from sagepose.keypoints import load_schema, schema_to_dict
from sagepose.models.checkpoint import save_checkpoint
from sagepose.models.head_transplant import channel_sources
from sagepose.models.zoo import build_model_from_config

# Sapiens v1's head (two deconvs, two 1x1 convs, InstanceNorm + SiLU) on a one-block ViT, 16 channels wide
SAPIENS_TINY = {"depth": 1, "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, "deconv_channels": (16, 16),
                "conv_channels": (16, 16)}
VIT_TINY = {"depth": 1, "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, "channels": 16}
FUSION_TINY = {"depth": 1, "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, "deconv_channels": (16,)}


def _model(schema, init=None, head_map=None, seed=0, name="vit-tiny", arch=VIT_TINY, **kw):
    cfg = dataclasses.replace(ModelConfig(), name=name, schema=schema, arch=arch, init_checkpoint=init,
                              head_map=head_map or {}, **kw)
    torch.manual_seed(seed)
    return build_model_from_config(cfg).eval()


def _final(model, part="weight", prefix="head.final_conv"):
    return model.state_dict()[f"{prefix}.{part}"]


def test_coco_model_from_a_goliath_checkpoint_predicts_its_17_heatmaps_before_training(tmp_path, capsys):
    kw = dict(name="sapiens-0.3b", arch=SAPIENS_TINY, input_size=(48, 64))
    goliath = _model("goliath", seed=1, **kw)
    path = tmp_path / "sapiens_goliath.pth"  # a foreign file: no stored schema, its 308 channels name goliath
    torch.save({"state_dict": goliath.state_dict()}, path)
    coco = _model("coco", init=str(path), seed=2, **kw)
    assert capsys.readouterr().out.strip() == "head: 17 of 17 channels from the checkpoint (coco <- goliath)"
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, ours = goliath.network_heatmaps(x), coco.network_heatmaps(x)
        assert torch.equal(ours, theirs[:, list(GOLIATH_TO_COCO17)])
        # flip test too: the flip pairs of the 17 joints are the same joints' in both schemas
        assert torch.allclose(coco.predict_heatmaps(x), goliath.predict_heatmaps(x)[:, list(GOLIATH_TO_COCO17)],
                              rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["converted", "lightning"])
def test_a_partial_overlap_transplants_the_shared_joints_and_leaves_the_rest_at_init(tmp_path, capsys, kind):
    coco = _model("coco", seed=1)
    path = tmp_path / "coco.pth"  # sagepose's own files, storing their schema: sagepose convert's, sagepose train's
    if kind == "converted":
        save_checkpoint(path, coco.state_dict(), schema=schema_to_dict(coco.schema))
    else:
        torch.save({"state_dict": {f"model.{k}": v for k, v in coco.state_dict().items()},
                    "hyper_parameters": {"schema": schema_to_dict(coco.schema)}}, path)
    fresh, mpii = _model("mpii", seed=2), _model("mpii", init=str(path), seed=2)
    assert capsys.readouterr().out.strip() == "head: 12 of 16 channels from the checkpoint (mpii <- coco)"
    mpii_joints, coco_joints = load_schema("mpii").keypoints, coco.schema.keypoints
    for part in ("weight", "bias"):
        ours, theirs, init = _final(mpii, part), _final(coco, part), _final(fresh, part)
        for t, joint in enumerate(mpii_joints):
            expected = theirs[coco_joints.index(joint)] if joint in coco_joints else init[t]
            assert torch.equal(ours[t], expected), (part, joint)
    own, other = mpii.state_dict(), coco.state_dict()
    assert all(torch.equal(own[k], other[k]) for k in own if not k.startswith("head.final_conv"))


def test_head_map_overrides_the_automatic_matches_and_names_a_stored_or_inferred_joint(tmp_path, capsys):
    coco = _model("coco", seed=1)
    path = tmp_path / "coco.pth"  # no stored schema: 17 channels name coco
    torch.save({"state_dict": coco.state_dict()}, path)
    mpii = _model("mpii", init=str(path), head_map={"head_top": "nose", "left_hip": "right_hip"}, seed=2)
    assert capsys.readouterr().out.strip() == "head: 13 of 16 channels from the checkpoint (mpii <- coco)"
    mpii_s, coco_s = mpii.schema, coco.schema
    for new, old in (("head_top", "nose"), ("left_hip", "right_hip"), ("right_hip", "right_hip"),
                     ("left_knee", "left_knee")):
        assert torch.equal(_final(mpii)[mpii_s.index(new)], _final(coco)[coco_s.index(old)])


def test_a_head_map_joint_of_neither_schema_is_a_one_line_error():
    cfg = Config(model=dataclasses.replace(ModelConfig(), schema="mpii", head_map={"nose_tip": "nose"}))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert "model.head_map" in msg and "'nose_tip' is not a keypoint of model.schema mpii" in msg and "\n" not in msg
    with pytest.raises(MappingError) as e:  # the checkpoint's joints are known once it is read
        channel_sources(load_schema("coco"), load_schema("mpii"), {"head_top": "top_of_head"})
    msg = str(e.value)
    assert "model.head_map" in msg and "'top_of_head'" in msg and "schema coco" in msg and "\n" not in msg


def test_fusion_head_moves_each_joints_heatmap_offset_and_variance_rows(tmp_path):
    coco = _model("coco", name="vit-tiny-fusion", arch=FUSION_TINY, seed=1)
    path = tmp_path / "coco_fusion.pth"
    save_checkpoint(path, coco.state_dict(), schema=schema_to_dict(coco.schema))
    mpii = _model("mpii", name="vit-tiny-fusion", arch=FUSION_TINY, init=str(path), seed=2)
    m, c = mpii.schema.index("left_wrist"), coco.schema.index("left_wrist")
    for prefix, rows in (("head.heatmap", 1), ("head.offset", 2), ("head.log_var", 1)):
        for part in ("weight", "bias"):
            assert torch.equal(_final(mpii, part, prefix)[m * rows:(m + 1) * rows],
                               _final(coco, part, prefix)[c * rows:(c + 1) * rows])


def test_same_schema_loads_the_head_as_it_is_and_says_nothing(tmp_path, capsys):
    coco = _model("coco", seed=1)
    path = tmp_path / "coco.pth"
    torch.save({"state_dict": coco.state_dict()}, path)
    again = _model("coco", init=str(path), seed=2)
    assert capsys.readouterr().out == ""
    assert all(torch.equal(v, coco.state_dict()[k]) for k, v in again.state_dict().items())


def test_a_count_no_builtin_schema_has_names_its_joints_kp0_on_for_head_map(tmp_path, capsys):
    crowd = _model("crowdpose", seed=1)  # 14 channels: AIC or CrowdPose, ambiguous without a stored schema
    path = tmp_path / "crowd14.pth"
    torch.save({"state_dict": crowd.state_dict()}, path)
    with pytest.warns(UserWarning, match=r"head: 0 of 17 channels from the checkpoint \(coco <- generic-14\)"):
        _model("coco", init=str(path), seed=2)
    coco = _model("coco", init=str(path), head_map={"left_shoulder": "kp0"}, seed=2)
    assert "head: 1 of 17 channels from the checkpoint (coco <- generic-14)" in capsys.readouterr().out
    assert torch.equal(_final(coco)[coco.schema.index("left_shoulder")], _final(crowd)[0])
