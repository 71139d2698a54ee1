"""sagepose.models.checkpoint and ``sagepose convert``: every foreign format loads strictly and exactly.

Foreign files are written here from small models under the real key names (MMPose's list comes
from the MMPose goldens; the ViTPose repository's and Sapiens' names are in REFERENCE-FACTS.md),
then read back through the same path users take: ``read_checkpoint`` -> detected format ->
converter -> strict load. TorchScript and ``torch.export`` files are made by the tests themselves.
"""
import io
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import sagepose.api
from sagepose.cli.main import main as cli_main
from sagepose.models import build_model, from_mmpose, load_checkpoint
from sagepose.models.checkpoint import (
    CheckpointMismatchError,
    CheckpointReadError,
    detect_format,
    read_checkpoint,
    save_checkpoint,
)
from sagepose.models.vit import interpolate_pos_embed

GOLDEN = Path(__file__).parent / "goldens" / "models" / "vitpose-b__synthetic.npz"
SMALL = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64)
SAPIENS_SMALL = dict(SMALL, deconv_channels=(16, 16), conv_channels=(16, 16))

_TO_MMPOSE = [
    (r"^backbone\.patch_embed\.", "backbone.patch_embed.projection."),
    (r"^backbone\.blocks\.(\d+)\.norm1\.", r"backbone.layers.\1.ln1."),
    (r"^backbone\.blocks\.(\d+)\.norm2\.", r"backbone.layers.\1.ln2."),
    (r"^backbone\.blocks\.(\d+)\.attn\.", r"backbone.layers.\1.attn."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.layers.\1.ffn.layers.0.0."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.layers.\1.ffn.layers.1."),
    (r"^backbone\.norm\.", "backbone.ln1."),
    (r"^head\.final_conv\.", "head.final_layer."),
]


def _head_layers(key: str, head: str) -> str:
    m = re.match(r"^head\.(deconv|conv)_blocks\.(\d+)\.(conv|norm)\.(.+)$", key)
    if not m:
        return key.replace("head.", f"{head}.", 1)
    return f"{head}.{m[1]}_layers.{3 * int(m[2]) + (m[3] == 'norm')}.{m[4]}"


def to_mmpose(sd: dict) -> dict:
    """sagepose names -> MMPose 1.x names (the inverse of ``from_mmpose``; checked on MMPose's own list)."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in _TO_MMPOSE:
            key = re.sub(pattern, repl, key)
        out[_head_layers(key, "head")] = value
    return out


def to_vitpose_repo(sd: dict, cls_slot: torch.Tensor) -> dict:
    """sagepose names -> the ViTPose repository's (MMPose 0.x), with a cls position slot of its own."""
    out = {}
    for key, value in sd.items():
        if key == "backbone.pos_embed":  # the repo adds pos[:, :1] to every token
            value = torch.cat([cls_slot, value - cls_slot], 1)
        key = key.replace("backbone.patch_embed.", "backbone.patch_embed.proj.")
        key = key.replace("backbone.norm.", "backbone.last_norm.").replace("head.final_conv.", "head.final_layer.")
        out[_head_layers(key, "keypoint_head")] = value
    return out


def small(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    arch = SAPIENS_SMALL if name.startswith("sapiens") else SMALL
    return build_model(name, arch=arch, input_size=(48, 64), **kw).eval()


def assert_same_weights(model, reference):
    own = model.state_dict()
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


def test_reverse_names_reproduce_mmpose_own_key_list_and_round_trip():
    mmpose_keys = np.load(GOLDEN)["keys"].tolist()
    with torch.device("meta"):
        model = build_model("vitpose-b")
    assert sorted(to_mmpose(model.state_dict())) == sorted(mmpose_keys)
    sd = small("sapiens-0.3b").state_dict()
    assert from_mmpose(to_mmpose(sd)).keys() == sd.keys()


@pytest.mark.parametrize("wrapped", [False, True])
def test_mmpose_file_raw_or_wrapped_with_numpy_metadata_loads_strictly(tmp_path, wrapped):
    src = small("vitpose-b")
    sd = to_mmpose(src.state_dict())
    meta = {"dataset_meta": {"sigmas": np.linspace(0.025, 0.1, 17), "flip_indices": [0, 2, 1]},
            "epoch": np.int64(210), "mmengine_version": "0.10.7"}
    torch.save({"meta": meta, "state_dict": sd} if wrapped else sd, tmp_path / "mmpose.pth")
    model = small("vitpose-b", seed=1)
    load_checkpoint(model, tmp_path / "mmpose.pth")
    assert_same_weights(model, src)
    raw = read_checkpoint(tmp_path / "mmpose.pth")
    assert detect_format(raw.get("state_dict", raw)) == "mmpose"


def test_vitpose_repo_file_folds_its_cls_position_slot_exactly(tmp_path):
    src = small("vitpose-b")
    cls_slot = torch.randn(1, 1, 32)
    torch.save({"state_dict": to_vitpose_repo(src.state_dict(), cls_slot), "optimizer": {}}, tmp_path / "repo.pth")
    model = small("vitpose-b", seed=1)
    load_checkpoint(model, tmp_path / "repo.pth")
    torch.testing.assert_close(model.backbone.pos_embed, src.backbone.pos_embed, rtol=1e-6, atol=1e-7)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["clean", "full"])
def test_sapiens_pretrain_loads_backbone_only_dropping_cls_and_resizing_square_grid(tmp_path, layout):
    src = small("sapiens-0.3b")
    backbone = {k.removeprefix("backbone."): v for k, v in to_mmpose(src.state_dict()).items()
                if k.startswith("backbone.")}
    pos = torch.randn(1, 1 + 8 * 8, 32)  # MAE at a square grid, with its cls slot
    backbone.update(pos_embed=pos, cls_token=torch.randn(1, 1, 32))
    if layout == "clean":  # *_clean.pth: the bare mmpretrain ViT
        file = backbone
    else:  # the MAE training file: backbone.* + the decoder in neck.*
        file = {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in backbone.items()},
                                           "neck.mask_token": torch.zeros(1, 1, 16),
                                           "neck.decoder_blocks.0.ln1.weight": torch.ones(16)}}
    torch.save(file, tmp_path / "pretrain.pth")
    model = small("sapiens-0.3b", seed=1)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    missing, unexpected, shaped = load_checkpoint(model, tmp_path / "pretrain.pth")  # strict: the head may be missing
    assert sorted(missing) == sorted(head_before) and not unexpected and not shaped
    for k, v in head_before.items():
        torch.testing.assert_close(model.state_dict()[k], v)  # the head keeps its initialisation
    expected = interpolate_pos_embed(pos[:, 1:], (8, 8), model.backbone.grid_size)
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)
    torch.testing.assert_close(model.backbone.blocks[1].mlp.fc2.weight, src.backbone.blocks[1].mlp.fc2.weight)


def test_sapiens_pose_file_has_no_head_norm_parameters_and_loads_strictly(tmp_path):
    src = small("sapiens-1b")
    sd = to_mmpose(src.state_dict())
    head_keys = {k.rsplit(".", 1)[0] for k in sd if k.startswith("head.")}
    assert head_keys == {"head.deconv_layers.0", "head.deconv_layers.3", "head.conv_layers.0", "head.conv_layers.3",
                         "head.final_layer"}  # InstanceNorm without affine: nothing at 1 and 4
    torch.save({"state_dict": sd}, tmp_path / "sapiens_1b_coco_best_coco_AP_821.pth")
    model = small("sapiens-1b", seed=1)
    load_checkpoint(model, tmp_path / "sapiens_1b_coco_best_coco_AP_821.pth")
    assert_same_weights(model, src)


def test_pos_embed_resizes_bicubically_when_the_input_size_differs(tmp_path):
    src = small("vitpose-b")
    torch.save(to_mmpose(src.state_dict()), tmp_path / "mmpose.pth")
    torch.manual_seed(1)
    model = build_model("vitpose-b", arch=SMALL, input_size=(80, 96))  # 4x3 tokens -> 6x5
    load_checkpoint(model, tmp_path / "mmpose.pth")
    expected = interpolate_pos_embed(src.backbone.pos_embed.detach(), (4, 3), (6, 5))
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)


class _Wrapper(torch.nn.Module):
    """A deployment wrapper around the estimator, as exported files often hold (prefixes every key)."""

    def __init__(self, pose):
        super().__init__()
        self.pose = pose

    def forward(self, x):
        return self.pose(x)


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_torchscript_and_exported_program_files_load_and_match_the_eager_model(tmp_path, kind):
    src = small("vitpose-b")
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        eager = src(x)
    path = tmp_path / f"model_{kind}.pt2"  # Sapiens-lite names both kinds .pt2
    if kind == "torchscript":
        with pytest.warns(Warning):
            torch.jit.save(torch.jit.trace(_Wrapper(src), x), path)
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.load(path)(x), eager, rtol=1e-5, atol=1e-6)
    else:
        torch.export.save(torch.export.export(src, (x,)), path)
        with torch.no_grad():
            torch.testing.assert_close(torch.export.load(path).module()(x), eager, rtol=1e-5, atol=1e-6)
    model = small("vitpose-b", seed=1)
    load_checkpoint(model, path)  # strict: every parameter and buffer accounted for
    assert_same_weights(model, src)
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager, rtol=0, atol=0)


def test_bfloat16_exported_program_loads_into_a_float32_model(tmp_path):
    src = small("sapiens-0.3b")
    half = small("sapiens-0.3b").to(torch.bfloat16)
    torch.export.save(torch.export.export(half, (torch.randn(1, 3, 64, 48, dtype=torch.bfloat16),)),
                      tmp_path / "sapiens_bfloat16.pt2")
    raw = read_checkpoint(tmp_path / "sapiens_bfloat16.pt2")
    assert raw["backbone.pos_embed"].dtype == torch.bfloat16
    load_checkpoint(src, raw)
    torch.testing.assert_close(src.backbone.pos_embed.detach(), half.backbone.pos_embed.float(), rtol=0, atol=0)
    assert src.backbone.pos_embed.dtype == torch.float32


CALLS = []


def _side_effect(*args):
    CALLS.append(args)
    return "ran"


class _Payload:
    def __reduce__(self):
        return _side_effect, ("from the checkpoint",)


class _Blocked:
    def __reduce__(self):
        import os

        return os.system, ("echo should-not-run",)


def test_metadata_objects_are_never_executed(tmp_path):
    src = small("vitpose-b")
    torch.save({"state_dict": src.state_dict(), "meta": {"hook": _Payload()}}, tmp_path / "payload.pth")
    model = small("vitpose-b", seed=1)
    load_checkpoint(model, tmp_path / "payload.pth")
    assert CALLS == [] and pickle.loads(pickle.dumps(_Payload())) == "ran" and len(CALLS) == 1
    assert_same_weights(model, src)
    torch.save({"state_dict": src.state_dict(), "meta": _Blocked()}, tmp_path / "blocked.pth")
    with pytest.raises(CheckpointReadError, match="blocked.pth"):
        read_checkpoint(tmp_path / "blocked.pth")


@pytest.mark.parametrize("kind", ["torch.save", "torchscript", "garbage"])
def test_truncated_or_corrupt_files_raise_an_error_naming_the_file(tmp_path, kind):
    src = small("vitpose-b")
    path = tmp_path / f"broken_{kind}.pth"
    if kind == "torch.save":
        torch.save(src.state_dict(), path)
    elif kind == "torchscript":
        with pytest.warns(Warning):
            torch.jit.save(torch.jit.trace(src, torch.randn(1, 3, 64, 48)), path)
    if kind == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>")
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match=re.escape(str(path))):
        load_checkpoint(small("vitpose-b"), path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint(tmp_path / "missing.pth")


def test_detect_format_on_each_family_key_list():
    mmpose_keys = np.load(GOLDEN)["keys"].tolist()
    assert detect_format(dict.fromkeys(mmpose_keys)) == "mmpose"
    repo = ["backbone.pos_embed", "backbone.patch_embed.proj.weight", "backbone.blocks.0.norm1.weight",
            "backbone.last_norm.weight", "keypoint_head.deconv_layers.0.weight", "keypoint_head.final_layer.bias"]
    assert detect_format(dict.fromkeys(repo)) == "vitpose"
    hrnet_0x = ["backbone.conv1.weight", "backbone.stage2.0.branches.0.0.conv1.weight",
                "keypoint_head.final_layer.bias"]
    assert detect_format(dict.fromkeys(hrnet_0x)) == "vitpose"
    clean = ["cls_token", "pos_embed", "patch_embed.projection.weight", "layers.0.ln1.weight", "ln1.weight"]
    assert detect_format(dict.fromkeys(clean)) == "sapiens-pretrain"
    mae = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight", "norm.weight",
           "decoder_embed.weight"]
    assert detect_format(dict.fromkeys(mae)) == "mae"
    assert detect_format({"model.backbone.pos_embed": 0, "teacher.backbone.pos_embed": 0}) == "lightning"


def test_strict_mismatch_report_names_file_format_and_keys(tmp_path):
    sd = to_mmpose(small("vitpose-b").state_dict())
    sd.pop("backbone.layers.1.ln2.bias")
    sd["head.final_layer.weight"] = torch.zeros(5, 256, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(small("vitpose-b"), tmp_path / "bad.pth")
    msg = str(info.value)
    assert "bad.pth (mmpose format)" in msg and "backbone.blocks.1.norm2.bias" in msg
    assert "head.final_conv.weight: checkpoint (5, 256, 1, 1) vs model (17, 256, 1, 1)" in msg


def test_save_checkpoint_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path / "out.pth", {"w": torch.ones(2)}, model="vit-tiny")
    assert read_checkpoint(good)["sagepose"]["model"] == "vit-tiny"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "out.pth", {"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["out.pth"]
    torch.testing.assert_close(read_checkpoint(good)["state_dict"]["w"], torch.ones(2))


def test_convert_cli_guesses_the_model_and_output_loads_by_name(tmp_path, capsys):
    torch.manual_seed(0)
    src = build_model("vitpose-s").eval()
    torch.save({"meta": {"epoch": 210}, "state_dict": to_mmpose(src.state_dict())}, tmp_path / "mmpose.pth")
    assert cli_main(["convert", str(tmp_path / "mmpose.pth"), str(tmp_path / "ours.pth")]) == 0
    assert "for vitpose-s with 17 keypoints" in capsys.readouterr().out
    assert_same_weights(sagepose.api.load("vitpose-s", checkpoint=tmp_path / "ours.pth", fuse=False), src)
    assert_same_weights(sagepose.api.load(tmp_path / "ours.pth", fuse=False), src)  # the file names its model


def test_convert_keeps_keypoint_count_and_backbone_only_provenance(tmp_path):
    src = build_model("vit-tiny", num_keypoints=5).eval()
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "last.ckpt")
    info = sagepose.api.convert(tmp_path / "last.ckpt", tmp_path / "tiny.pth")
    assert (info["model"], info["num_keypoints"], info["source_format"]) == ("vit-tiny", 5, "lightning")
    model = sagepose.api.load("vit-tiny", checkpoint=tmp_path / "tiny.pth", fuse=False)
    assert model.head.final_conv.out_channels == 5
    assert_same_weights(model, src)
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        sagepose.api.convert(tmp_path / "last.ckpt", tmp_path / "x.pth", model="vitpose-s")
    assert not (tmp_path / "x.pth").exists()


def test_torchscript_archive_is_recognised_by_content_not_name(tmp_path):
    src = small("vitpose-b")
    path = tmp_path / "weights.pth"  # a TorchScript archive under a .pth name
    with pytest.warns(Warning):
        torch.jit.save(torch.jit.trace(src, torch.randn(1, 3, 64, 48)), path)
    assert any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist())
    assert set(read_checkpoint(path)) >= set(src.state_dict())


def test_exported_program_of_torch_before_2_6_is_read_from_its_state_dict_blob(tmp_path):
    """torch 2.2-2.5 wrote ``serialized_state_dict.pt`` (a torch.save blob) beside the program's json, as in
    Sapiens-lite's 2024 ``*_bfloat16.pt2`` files; the layout is written here by hand."""
    src = small("vitpose-b")
    blob = io.BytesIO()
    torch.save(src.state_dict(), blob)
    with zipfile.ZipFile(tmp_path / "old_bfloat16.pt2", "w") as zf:
        zf.writestr("serialized_exported_program.json", "{}")
        zf.writestr("serialized_state_dict.pt", blob.getvalue())
        zf.writestr("version", "1")
    model = small("vitpose-b", seed=1)
    load_checkpoint(model, tmp_path / "old_bfloat16.pt2")
    assert_same_weights(model, src)
