"""The bundled recipes: each passes the training checks; a published-setting one
(``configs/{model}_coco_{h}x{w}.yaml``) names its source config and the AP its authors report, and builds
the model its header declares (input, heatmap, codec, sigma) with the published batch and schedule: one
check of each YAML against its own header, not a parity test. The big models are built on the meta device
(shapes, no memory)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from sagepose import hub
from sagepose.config import load_config
from sagepose.configs import CONFIG_DIR
from sagepose.data.synth import generate_dataset
from sagepose.models import build_model_from_config
from sagepose.train.checks import check_run
from sagepose.train.loaders import build_loaders

ALL = sorted(CONFIG_DIR.glob("*.yaml"))
PUBLISHED = [p for p in ALL if not p.stem.startswith(("demo_", "finetune_", "custom_", "multi_", "sapiens2_",
                                                      "distill_", "rtmpose_"))]
# RTMPose (SimCC, 420 epochs, its own optimizer and schedule): checked against its source below
RTMPOSE = [p for p in ALL if p.stem.startswith("rtmpose_")]
# COCO-17 from Sapiens2: its 308-keypoint training's settings (Sapiens2 has no COCO config, reports no COCO AP)
SAPIENS2 = [p for p in ALL if p.stem.startswith("sapiens2_")]

EXPECTED = (
    [f"vitpose_{s}{v}_coco_256x192" for s in "sblh" for v in ("", "_simple")]
    + [f"hrnet_w{w}{v}_coco_{r}" for w in (32, 48) for v in ("", "_dark", "_udp") for r in ("256x192", "384x288")]
    + [f"hrformer_{s}_coco_{r}" for s in "sb" for r in ("256x192", "384x288")]
    + [f"sapiens_{s}_coco_1024x768" for s in ("0.3b", "0.6b", "1b", "2b")]
)

# The published optimizer numbers by model, as the source configs the headers name set them:
# weight decay, layer decay, gradient clipping, drop path (None: the model has no stochastic depth)
OPTIM = {"vitpose-s": (0.1, 0.8, 1.0, 0.1), "vitpose-b": (0.1, 0.75, 1.0, 0.3), "vitpose-l": (0.1, 0.8, 1.0, 0.5),
         "vitpose-h": (0.1, 0.85, 1.0, 0.55), "hrnet": (0.0, 1.0, None, None),  # Adam: AdamW without decay
         "hrformer-s": (0.01, 1.0, None, 0.1), "hrformer-b": (0.01, 1.0, None, 0.2), "sapiens": (0.1, 0.85, 1.0, 0.0)}

SETTING = re.compile(r"input (\d+)x(\d+), heatmap (\d+)x(\d+), codec (\w+)(\(unbiased=True\))?, sigma ([\d.]+)$")
BATCH = re.compile(r"(\d+) x (\d+) GPUs = (\d+)\b")


def header_fields(path: Path) -> dict[str, str]:
    """``# key: value`` lines of the comment block above the YAML, with ``#   `` continuation lines joined."""
    fields: dict[str, str] = {}
    key = None
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"# ([a-zA-Z][a-zA-Z ]*): (.*)$", line)
        if m:
            key = m.group(1)
            fields[key] = m.group(2)
        elif line.startswith("#   ") and key is not None:
            fields[key] += " " + line[4:]
        else:
            key = None
    return fields


def zoo_name_of_source(config_file: str) -> str:
    """The zoo model a source config file builds, read from its name alone."""
    sizes = {"small": "s", "base": "b", "large": "l", "huge": "h"}
    if m := re.match(r"td-hm_ViTPose-(small|base|large|huge)(-simple)?_", config_file):
        return f"vitpose-{sizes[m.group(1)]}{m.group(2) or ''}"
    if m := re.match(r"td-hm_hrnet-(w32|w48)(?:_(udp|dark))?[-_]8xb", config_file):
        return f"hrnet-{m.group(1)}" + (f"-{m.group(2)}" if m.group(2) else "")
    if m := re.match(r"td-hm_hrformer-(small|base)_", config_file):
        return f"hrformer-{sizes[m.group(1)]}"
    if m := re.match(r"sapiens_(\d\.\d+b|\d+b)-210e_coco-", config_file):
        return f"sapiens-{m.group(1)}"
    raise AssertionError(f"unrecognised source config {config_file}")


def build_on_meta(cfg):
    with torch.device("meta"):
        return build_model_from_config(cfg.model)


def test_there_is_a_recipe_per_published_setting():
    assert sorted(p.stem for p in PUBLISHED) == sorted(EXPECTED)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_recipe_passes_the_training_checks_and_builds_what_its_header_states(path):
    """Every recipe loads and passes ``check_run``; a published one names its source config and the AP
    reported under a stated evaluation, and builds the model, codec, batch and schedule its header and
    source declare (big models on the meta device)."""
    cfg = load_config(path)
    check_run(cfg)
    if path not in PUBLISHED:
        return
    fields = header_fields(path)
    repo, source_path = fields["source"].split(" ")
    source = Path(source_path).name
    assert repo in ("open-mmlab/mmpose", "facebookresearch/sapiens") and source.endswith(".py")
    ap = re.match(r"(\d\d\.\d) \(AR (\d\d\.\d)\)", fields["reported AP"])
    assert ap and 70.0 <= float(ap.group(1)) <= 83.0 and float(ap.group(1)) < float(ap.group(2))
    evaluation = fields["reported AP"].split("eval: ")[1]
    assert "COCO val2017" in evaluation and "flip test" in evaluation
    assert ("AP_H_70" in evaluation) == (repo == "facebookresearch/sapiens")  # Sapiens' own detector boxes
    assert cfg.data.det_json.endswith("AP_H_70_person.json" if "AP_H_70" in evaluation else "AP_H_56_person.json")

    # model and codec
    h, w, hm_h, hm_w, codec, unbiased, sigma = SETTING.match(fields["setting"]).groups()
    h, w, hm_h, hm_w = int(h), int(w), int(hm_h), int(hm_w)
    assert f"{h}x{w}" in source and path.stem.endswith(f"_{h}x{w}")  # the source's name states the input too
    assert cfg.model.name == zoo_name_of_source(source)
    model = build_on_meta(cfg)
    assert next(model.parameters()).is_meta
    assert model.input_size == (w, h)
    assert type(model.codec).__name__ == codec
    assert tuple(model.codec.input_size) == (w, h) and tuple(model.codec.heatmap_size) == (hm_w, hm_h)
    assert (hm_w, hm_h) == (w // 4, h // 4)
    assert model.codec.sigma == float(sigma)
    assert getattr(model.codec, "unbiased", False) == bool(unbiased)
    assert model.flip_test and cfg.model.flip_test
    rates = [m.drop_path for m in model.modules() if isinstance(getattr(m, "drop_path", None), float)]
    assert max(rates, default=0.0) == pytest.approx(cfg.model.drop_path_rate or 0.0)  # the last block's rate

    # total batch, optimizer, 210-epoch step schedule
    per_gpu, gpus, total = (int(x) for x in BATCH.match(fields["batch"]).groups())
    assert per_gpu * gpus == total
    if m := re.search(r"_8xb(\d+)-210e_", source.replace("-8xb", "_8xb")):  # MMPose names: GPUs x batch a GPU
        assert (gpus, per_gpu) == (8, int(m.group(1)))
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == total
    assert "210e" in source and cfg.trainer.max_epochs == 210
    o = cfg.optim
    assert (o.schedule, o.milestones, o.gamma, o.warmup_iters, o.warmup_ratio) == ("step", (170, 200), 0.1, 500, 0.001)
    assert o.lr == 5e-4 and o.betas == (0.9, 0.999)
    name = cfg.model.name.removesuffix("-simple")
    key = next(k for k in (name, name.split("-")[0]) if k in OPTIM)
    assert (o.weight_decay, o.layer_decay, o.grad_clip, cfg.model.drop_path_rate) == OPTIM[key]


# Sapiens2's keypoints308 configs and node.sh by size: layer decay, gradient clip, iterations, batch a GPU (8 GPUs)
SAPIENS2_SOURCE = {"0.4b": (0.8, 2.0, 10000, 6), "0.8b": (0.85, 4.0, 10000, 12), "1b": (0.9, 4.0, 20000, 7)}


def test_there_is_a_sapiens2_coco_recipe_per_size():
    assert sorted(p.stem for p in SAPIENS2) == sorted(f"sapiens2_{s}_coco_1024x768" for s in SAPIENS2_SOURCE)


@pytest.mark.parametrize("path", SAPIENS2, ids=lambda p: p.stem)
def test_sapiens2_recipe_is_its_source_training_pointed_at_coco(path):
    """Each names its source config, starts from the official pose file by its hub name (the head transplanted,
    as its header says) and builds the 1024x768 COCO-17 model with the source's optimizer, batch and steps."""
    size = re.match(r"sapiens2_(\d\.\d+b|\d+b)_coco_1024x768$", path.stem).group(1)
    cfg, fields = load_config(path), header_fields(path)
    repo, source = fields["source"].split(" ")
    assert repo == "facebookresearch/sapiens2"
    assert source == (f"sapiens/pose/configs/keypoints308/shutterstock_goliath_3po/"
                      f"sapiens2_{size}_keypoints308_shutterstock_goliath_3po-1024x768.py")
    assert fields["reported AP"].startswith("none for COCO")
    assert "head_transplant" in fields["init"] and "17 of 17 channels" in fields["init"]
    assert cfg.model.name == f"sapiens2-{size}" and cfg.model.schema == "coco"
    assert cfg.model.init_checkpoint == f"sapiens2-{size}"
    assert hub.WEIGHTS[cfg.model.init_checkpoint].model == cfg.model.name
    with torch.device("meta"):
        model = build_model_from_config(dataclasses.replace(cfg.model, init_checkpoint=None))
    assert model.input_size == (768, 1024) and type(model.codec).__name__ == "UDPHeatmap"
    assert tuple(model.codec.heatmap_size) == (192, 256) and model.codec.sigma == 6.0
    assert model.schema.num_keypoints == 17 and model.flip_test and model.backbone.grad_checkpointing
    decay, clip, iters, per_gpu = SAPIENS2_SOURCE[size]
    per, gpus, total = (int(x) for x in BATCH.match(fields["batch"]).groups())
    assert (per, gpus, total) == (per_gpu, 8, per_gpu * 8)
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == total
    o, t = cfg.optim, cfg.trainer
    assert (o.lr, o.betas, o.weight_decay, o.layer_decay, o.grad_clip) == (5e-4, (0.9, 0.999), 0.1, decay, clip)
    assert (o.warmup_iters, o.warmup_ratio, o.fused) == (500, 0.001, True)
    assert (t.max_steps, t.max_epochs, t.val_every_steps, t.precision) == (iters, -1, 1000, "bf16-mixed")


def test_model_input_size_sets_the_crop_the_codec_and_the_heatmaps_training_sees(tmp_path):
    train_json = generate_dataset(tmp_path, 2, seed=1, split="train", image_size=(160, 128))
    cfg = load_config(None, ["model.name=vit-tiny", "model.input_size=[64, 96]", "model.codec={'sigma': 1.0}",
                             f"data.train_json={train_json}", "data.num_workers=0", "data.batch_size=2"])
    model = build_model_from_config(cfg.model)
    assert model.input_size == (64, 96)
    assert tuple(model.codec.heatmap_size) == (16, 24) and model.codec.sigma == 1.0
    batch = next(iter(build_loaders(cfg, model, val=False)["train"]))
    assert batch["img"].shape[1:3] == (96, 64)  # (B, H, W, 3) crops
    with torch.no_grad():
        heatmaps = model(model.normalize(batch["img"]))
    assert heatmaps.shape == (2, 17, 24, 16)


# MMPose 1.3.2's rtmpose-{t,s,m,l}_8xb256-420e_coco-256x192 by size: reported AP, AR (rtmpose_coco.yml), AdamW weight
# decay, EMA hook on, the head's in_channels (CSPNeXt's last width)
RTMPOSE_SOURCE = {"t": (68.2, 73.6, 0.0, False, 384), "s": (71.6, 76.8, 0.0, True, 512),
                  "m": (74.6, 79.5, 0.05, True, 768), "l": (75.8, 80.6, 0.05, True, 1024)}
RTMPOSE_SETTING = re.compile(r"input (\d+)x(\d+), SimCC bins (\d+) \+ (\d+) \(split ratio ([\d.]+)\), codec (\w+), "
                             r"sigma \(([\d.]+), ([\d.]+)\)$")


def test_there_is_an_rtmpose_coco_recipe_per_size():
    assert sorted(p.stem for p in RTMPOSE) == sorted(f"rtmpose_{s}_coco_256x192" for s in RTMPOSE_SOURCE)


@pytest.mark.parametrize("path", RTMPOSE, ids=lambda p: p.stem)
def test_rtmpose_recipe_is_its_source_config(path):
    """Each names its MMPose config and the AP reported for it, and builds that config's model and codec with its
    batch (8 x 256), optimizer, 420-epoch warm-up + flat + cosine schedule, EMA and augmentation numbers."""
    size = re.match(r"rtmpose_([tsml])_coco_256x192$", path.stem).group(1)
    ap, ar, decay, ema, channels = RTMPOSE_SOURCE[size]
    cfg, fields = load_config(path), header_fields(path)
    check_run(cfg)
    assert fields["source"] == ("open-mmlab/mmpose configs/body_2d_keypoint/rtmpose/coco/"
                                f"rtmpose-{size}_8xb256-420e_coco-256x192.py")
    assert fields["reported AP"].startswith(f"{ap} (AR {ar}), MMPose model zoo")
    assert fields["reported AP"].endswith("eval: COCO val2017, person detector AP 56.4 boxes, flip test")
    assert cfg.data.det_json.endswith("AP_H_56_person.json")
    assert "PipelineSwitchHook" in fields["Not expressed"]  # the stage-2 pipeline sagepose does not switch to

    h, w, bins_x, bins_y, ratio, codec, sigma_x, sigma_y = RTMPOSE_SETTING.match(fields["setting"]).groups()
    model = build_on_meta(cfg)
    assert cfg.model.name == f"rtmpose-{size}" and model.input_size == (int(w), int(h)) == (192, 256)
    assert type(model.codec).__name__ == codec == "SimCCLabel" and not model.codec.normalize
    assert model.codec.simcc_size == (int(bins_x), int(bins_y)) == (384, 512)
    assert model.codec.simcc_split_ratio == float(ratio) == 2.0
    assert model.codec.sigma == (float(sigma_x), float(sigma_y)) == (4.9, 5.66)
    assert model.backbone.out_channels == model.head.final_conv.in_channels == channels
    assert model.flip_test and model.head.feature_size == (6, 8)

    per_gpu, gpus, total = (int(x) for x in BATCH.match(fields["batch"]).groups())
    assert (per_gpu, gpus, total) == (256, 8, 2048)
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == total and cfg.trainer.sync_batchnorm
    o, t, d = cfg.optim, cfg.trainer, cfg.data
    assert (o.lr, o.betas, o.weight_decay, o.layer_decay, o.grad_clip) == (4e-3, (0.9, 0.999), decay, 1.0, None)
    assert (o.warmup_iters, o.warmup_ratio, o.schedule, o.cosine_start_fraction, o.min_lr_ratio) == \
        (1000, 1e-5, "cosine", 0.5, 0.05)
    assert o.ema_decay == (1 - 0.0002 if ema else 0.0)
    assert (t.max_epochs, t.max_steps, t.val_every_epochs) == (420, -1, 10)
    assert (d.flip_prob, d.half_body_prob, d.scale_factor, d.rotate_factor, d.rotate_prob) == \
        (0.5, 0.3, (0.6, 1.4), 80.0, 0.6)
    assert (d.shift_factor, d.shift_prob, d.coarse_dropout_prob) == (0.16, 0.3, 1.0)
