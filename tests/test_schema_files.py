"""Keypoint schemas from data (sagepose.keypoints.load_schema): built-in names, COCO jsons (1-based skeletons),
YAML files; optional OKS sigmas; left/right flip pairs inferred from names; a checkpoint carries its schema."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import REALDATA

import sagepose
from sagepose.config import Config, ModelConfig, to_dict
from sagepose.errors import ConfigMismatchWarning
from sagepose.keypoints import (
    COCO17,
    SCHEMAS,
    KeypointSchema,
    SchemaError,
    infer_flip_pairs,
    load_schema,
    parse_name_pairs,
    schema_from_dict,
    schema_to_dict,
)
from sagepose.models import build_model_from_config
from sagepose.models.checkpoint import CheckpointMismatchError

MOUSE_CSV = REALDATA / "mirror-mouse" / "CollectedData.csv"
SMALL = {"depth": 1, "embed_dim": 16, "num_heads": 2, "mlp_dim": 32, "channels": 16}  # a fast vit-tiny


def _pairs(names, pairs):
    return sorted((names[a], names[b]) for a, b in pairs)


# ---- flip pairs from names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_flip_pairs_inferred_from_names_are_the_published_ones(schema):
    s = SCHEMAS[schema]  # the published metainfo pairs, written by hand
    inferred, published = set(infer_flip_pairs(s.keypoints)), {tuple(sorted(p)) for p in s.flip_pairs}
    if schema == "coco_wholebody":  # the names give no wrong pair; the face's 29 have no side in their names
        assert inferred < published and len(published - inferred) == 29
        assert all(s.keypoints[i].startswith("face") for p in published - inferred for i in p)
    elif schema == "goliath":  # every published pair is named; the names add the 9 eyebrow pairs Sapiens keeps
        assert published < inferred and len(inferred - published) == 9
        assert all("eyebrow" in s.keypoints[i] for p in inferred - published for i in p)
    else:
        assert inferred == published


@pytest.mark.parametrize("left, right", [("left_ear", "right_ear"), ("leftear", "rightear"), ("LeftEar", "RightEar"),
                                         ("ear_left", "ear_right"), ("l_paw", "r_paw"), ("paw_L", "paw_R"),
                                         ("earL", "earR"), ("LEar", "REar"), ("LEFT_EYE", "right_eye"),
                                         ("paw1LH", "paw1RH")])
def test_flip_pair_name_forms(left, right):
    names = ["nose", right, "tail", left]
    assert infer_flip_pairs(names) == ((1, 3),)


def test_ambiguous_or_unmatched_names_stay_unpaired():
    # paw1L's mirror ignoring digits is paw2R or paw3R: ambiguous, so neither pairs with it
    assert infer_flip_pairs(["paw1L", "paw2R", "paw3R"]) == ()
    assert infer_flip_pairs(["left_ear", "nose", "tailL", "obsLow", "obsHigh"]) == ()
    # an exact mirror wins over digit-free near matches
    assert infer_flip_pairs(["paw1L", "paw1R", "paw2R"]) == ((0, 1),)


def test_mirror_mouse_paws_pair_across_their_numbering():
    with open(MOUSE_CSV, newline="") as f:
        names = list(csv.reader(f))[1][1::2]  # the bodyparts row, one name per x / y column pair
    assert len(names) == 17
    # the paws are numbered 1-4 around the body: 1 LH <-> 4 RH, 2 LF <-> 3 RF, in both views
    assert _pairs(names, infer_flip_pairs(names)) == sorted([
        ("paw1LH_top", "paw4RH_top"), ("paw2LF_top", "paw3RF_top"),
        ("paw1LH_bot", "paw4RH_bot"), ("paw2LF_bot", "paw3RF_bot")])


def test_name_pairs_parse_names_with_the_separator_in_them():
    names = ["a", "b-c", "d"]
    assert parse_name_pairs("a-b-c, b-c-d", names, "-") == ((0, 1), (1, 2))
    with pytest.raises(ValueError, match="'a-x'"):
        parse_name_pairs("a-x", names, "-")


# ---- optional sigmas, plain data --------------------------------------------------------------------------------
def test_sigmas_are_optional_and_joint_weights_default_to_ones():
    s = KeypointSchema(name="mouse", keypoints=("nose", "tail"))
    assert not s.has_sigmas and s.joint_weights == (1.0, 1.0) and COCO17.has_sigmas
    with pytest.raises(ValueError, match="schema mouse has no OKS sigmas"):
        s.sigmas_array()
    with pytest.raises(ValueError, match="sigmas has 1 entries, expected 2"):
        KeypointSchema(name="mouse", keypoints=("nose", "tail"), sigmas=(0.1,))


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_schema_round_trips_through_plain_data(schema):
    d = schema_to_dict(SCHEMAS[schema])
    assert json.loads(json.dumps(d)) == d  # lists, numbers and strings only
    assert schema_from_dict(d) == SCHEMAS[schema]


# ---- files -----------------------------------------------------------------------------------------------------
def test_builtin_names_resolve_to_the_builtin_schemas():
    assert all(load_schema(name) is schema for name, schema in SCHEMAS.items())
    assert load_schema(COCO17) is COCO17


def test_coco_json_schema_reads_the_official_one_based_skeleton():
    s = load_schema(REALDATA / "coco" / "test_coco.json")  # COCO's own category: skeleton numbered from 1
    assert s.name == "person" and s.keypoints == COCO17.keypoints and not s.has_sigmas
    assert set(s.skeleton) == set(COCO17.skeleton)  # MMPose's 0-based COCO skeleton
    assert set(s.flip_pairs) == set(COCO17.flip_pairs)  # inferred from the names


def test_coco_json_schema_zero_based_skeleton_flip_pairs_and_sigmas(tmp_path):
    cat = {"id": 1, "name": "mouse", "keypoints": ["nose", "earL", "earR", "tail"],
           "skeleton": [[0, 1], [0, 2], [0, 3]], "flip_pairs": [["earL", "earR"]], "sigmas": [0.1, 0.2, 0.2, 0.3]}
    path = tmp_path / "mouse.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [cat]}))
    s = load_schema(str(path))
    assert s.skeleton == ((0, 1), (0, 2), (0, 3)) and s.flip_pairs == ((1, 2),) and s.sigmas == (0.1, 0.2, 0.2, 0.3)
    # K itself in the skeleton: 1-based, though 0 does not appear either way
    cat.update(skeleton=[[1, 4], [2, 3]], flip_pairs=[[1, 2]])
    path.write_text(json.dumps({"categories": [cat]}))
    assert load_schema(path).skeleton == ((0, 3), (1, 2)) and load_schema(path).flip_pairs == ((1, 2),)


def test_yaml_schema_file_top_level_or_under_schema_key(tmp_path):
    body = {"keypoints": ["snout", "left_paw", "right_paw", "tail"], "skeleton": [["snout", "tail"], [0, 1]],
            "joint_weights": [1, 2, 2, 1]}
    plain, nested = tmp_path / "mouse4.yaml", tmp_path / "run.yml"
    plain.write_text(yaml.safe_dump(body))
    nested.write_text(yaml.safe_dump({"schema": {"name": "m4", "flip_pairs": [], **body}}))
    a, b = load_schema(str(plain)), load_schema(str(nested))
    assert a.name == "mouse4" and a.flip_pairs == ((1, 2),)  # name from the file, pairs from the names
    assert a.skeleton == ((0, 3), (0, 1)) and a.joint_weights == (1.0, 2.0, 2.0, 1.0) and not a.has_sigmas
    assert b.name == "m4" and b.flip_pairs == ()  # flip_pairs: [] is "none", not "infer"


@pytest.mark.parametrize("content, match", [
    (None, "schema file not found"),
    ("keypoints: [a, b\n", "not valid YAML"),
    ("- a\n- b\n", "expected a schema mapping"),
    ("keypoints: [a, b]\nflip_pair: [[a, b]]\n", "unknown schema keys \\['flip_pair'\\]"),
    ("keypoints: [a, b]\nskeleton: [[a, c]]\n", "skeleton names 'c'"),
    ("keypoints: [a, b]\nskeleton: [[0, 5]]\n", "out of range"),
    ("keypoints: [a, a]\n", "duplicate keypoint names"),
])
def test_bad_yaml_schema_files_are_one_line_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SchemaError, match=match) as e:
        load_schema(str(path))
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_bad_json_schema_and_unknown_names(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(SchemaError, match=f"^{path}: no category with 'keypoints'"):
        load_schema(str(path))
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(SchemaError, match="x.json: not valid JSON"):
        load_schema(str(tmp_path / "x.json"))
    with pytest.raises(SchemaError, match="'cocoo': not a built-in schema .*coco.* nor a .json / .yaml"):
        load_schema("cocoo")


def test_every_schema_argument_is_read_by_load_schema_so_a_file_works_and_a_typo_is_a_schema_error(tmp_path):
    from sagepose.keypoint_maps import keypoint_map

    path = tmp_path / "coco_copy.yaml"
    path.write_text(yaml.safe_dump(schema_to_dict(COCO17)))
    assert keypoint_map(str(path), "coco").sources == keypoint_map(COCO17, COCO17).sources
    with pytest.raises(SchemaError, match="'mpi': not a built-in schema"):
        keypoint_map("coco", "mpi")


# ---- models and checkpoints ------------------------------------------------------------------------------------
def _mouse_yaml(tmp_path):
    path = tmp_path / "mouse4.yaml"
    path.write_text(yaml.safe_dump({"keypoints": ["snout", "left_ear", "right_ear", "tail"],
                                    "skeleton": [[0, 1], [0, 2], [0, 3]]}))
    return path


def test_model_built_from_a_schema_file_has_its_keypoints(tmp_path):
    cfg = dataclasses.replace(ModelConfig(), name="vit-tiny", schema=str(_mouse_yaml(tmp_path)), arch=SMALL)
    model = build_model_from_config(cfg)
    assert model.schema.name == "mouse4" and model.schema.flip_indices == [0, 2, 1, 3]
    assert model.head.final_conv.out_channels == 4


def test_checkpoint_rebuilds_its_schema_without_the_file_and_refuses_another_keypoint_count(tmp_path):
    from sagepose.train.module import TopDownModule

    schema_file = _mouse_yaml(tmp_path)
    cfg = Config(model=dataclasses.replace(ModelConfig(), schema=str(schema_file), arch=SMALL))
    module, schema = TopDownModule(cfg), load_schema(schema_file)
    assert module.hparams["schema"] == schema_to_dict(schema)
    ckpt = tmp_path / "last.ckpt"  # what Lightning writes: the module's keys under model., its hyper-parameters
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()},
                "hyper_parameters": dict(module.hparams)}, ckpt)
    schema_file.unlink()
    model = sagepose.load(str(ckpt), fuse=False)
    assert model.schema == schema
    x = torch.zeros(1, 3, 128, 96)
    assert torch.equal(model.predict_heatmaps(x), module.model.eval().predict_heatmaps(x))
    # the same weights given a 17-keypoint schema: warned that it was trained as another, then refused
    with pytest.warns(ConfigMismatchWarning, match="model.schema"), pytest.raises(CheckpointMismatchError) as e:
        sagepose.load({"name": "vit-tiny", "schema": "coco", "arch": SMALL}, checkpoint=str(ckpt))
    msg = str(e.value)
    assert msg.startswith(f"{ckpt}: its head predicts 4 keypoints, schema coco has 17") and "\n" not in msg


def test_init_checkpoint_for_another_keypoint_count_keeps_the_backbone_and_starts_a_new_head(tmp_path):
    coco = build_model_from_config(dataclasses.replace(ModelConfig(), arch=SMALL))
    path = tmp_path / "coco.pth"
    torch.save({"state_dict": coco.state_dict()}, path)
    cfg = dataclasses.replace(ModelConfig(), schema=str(_mouse_yaml(tmp_path)), arch=SMALL, init_checkpoint=str(path))
    with pytest.warns(UserWarning, match=r"backbone loaded; the head is new .* another keypoint count than schema "
                                         r"mouse4 \(4\)"):
        mouse = build_model_from_config(cfg)
    own, theirs = mouse.state_dict(), coco.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if k.startswith("backbone."))
    assert to_dict(Config())["model"]["schema"] == "coco"  # the config field stays a name or a path
    assert np.isfinite(mouse.head.final_conv.weight.detach().numpy()).all()
