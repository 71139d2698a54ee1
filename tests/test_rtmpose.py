"""RTMPose (CSPNeXt + RTMCC head + SimCC) reproduces MMPose 1.3.2 on identical weights.

Goldens from ``tools/make_rtmpose_goldens.py`` (run in the MMPose venv): RTMPose-t with ``tests/weightgen.py``'s
deterministic weights -- regenerated here from MMPose's key list -- and the BatchNorm statistics the golden stores,
converted by ``from_mmpose`` and loaded strictly; flip test on, the two person boxes of a real COCO image. SimCC
logits within 1e-5 of their peak, keypoints within 1e-3 px where the logits fix them (argmax margin >= 1e-3), and
``exact=True`` bit for bit on the goldens' platform (``tests/goldens/rtmpose/platform.json``; skipped elsewhere).
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from float_platform import signature
from goldens_io import EXACT_KEYPOINT_ATOL, golden_image, golden_threads, rel_err
from weightgen import deterministic_weights

import sagepose
from sagepose.codecs import SimCCLabel, build_codec
from sagepose.convert import convert
from sagepose.models import MODELS, build_model, from_mmpose
from sagepose.models.rtmcc_head import GatedAttentionUnit

GOLDENS = Path(__file__).parent / "goldens" / "rtmpose"
NAMES = sorted(n for n in MODELS if n.startswith("rtmpose"))
LOGIT_RTOL, KEYPOINT_ATOL = 1e-5, 1e-3
SMALL_ARCH = dict(widen=0.125, deepen=0.33, hidden=32, s=16)  # a fast forward / backward


@pytest.fixture(scope="module")
def g() -> dict:
    return dict(np.load(GOLDENS / "rtmpose-t__coco196141.npz"))


def mmpose_weights(g: dict) -> dict:
    """The golden's MMPose-named state dict: deterministic weights, the stored BatchNorm statistics."""
    keys = list(zip(g["keys"].tolist(), json.loads(str(g["shapes"]))))
    sd = deterministic_weights(keys, int(g["seed"]))
    checksums = np.array([float(v.double().sum()) for v in sd.values()])
    np.testing.assert_allclose(checksums, g["checksums"], rtol=1e-9, atol=1e-9,
                               err_msg="tests/weightgen.py no longer reproduces the golden weights")
    flat, start = torch.from_numpy(g["bn_stats"]), 0
    for key in g["bn_keys"].tolist():
        n = sd[key].numel()
        sd[key] = flat[start:start + n].view_as(sd[key]).clone()
        start += n
    assert start == len(flat)
    return sd


@pytest.fixture(scope="module", params=[True, False], ids=["fused", "unfused"])
def model(request, g):
    return sagepose.load("rtmpose-t", checkpoint=mmpose_weights(g), fuse=request.param)  # MMPose format, strict


def simcc_logits_of(model, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(model.normalize(torch.from_numpy(crops))).numpy()


def test_mmpose_keys_map_onto_ours_backbone_unrenamed(g):
    keys = g["keys"].tolist()
    converted = from_mmpose(dict.fromkeys(keys, None))
    with torch.device("meta"):
        assert sorted(converted) == sorted(build_model("rtmpose-t").state_dict())
    assert all(k in converted for k in keys if k.startswith("backbone."))  # mmdet's names, kept
    renamed = {k: v for k, v in zip(keys, converted) if k != v}
    assert renamed == {"head.final_layer.weight": "head.final_conv.weight",
                       "head.final_layer.bias": "head.final_conv.bias",
                       "head.mlp.0.g": "head.mlp.norm.g", "head.mlp.1.weight": "head.mlp.fc.weight",
                       "head.gau.ln.g": "head.gau.norm.g", "head.gau.res_scale.scale": "head.gau.res_scale"}


def test_crops_match_mmpose_bit_exactly(model, g):
    crops, center, scale = model.crop(golden_image(g), g["bboxes_xyxy"])
    np.testing.assert_array_equal(center, g["input_center"])
    np.testing.assert_array_equal(scale, g["input_scale"])
    assert hashlib.md5(np.ascontiguousarray(crops).tobytes()).hexdigest() == str(g["crops_md5"])


def test_network_matches_mmpose_on_its_crops_and_their_mirror_images(model, g):
    crops, _, _ = model.crop(golden_image(g), g["bboxes_xyxy"])  # bit-identical to MMPose's (test above)
    assert rel_err(simcc_logits_of(model, crops), g["logits_raw"]) <= LOGIT_RTOL
    assert rel_err(simcc_logits_of(model, np.ascontiguousarray(crops[:, :, ::-1])), g["logits_flip"]) <= LOGIT_RTOL


def test_flip_back_is_mmposes_flip_vectors(g):
    codec = build_model("rtmpose-t").codec
    fused = (torch.from_numpy(g["logits_raw"]) + codec.flip_back(torch.from_numpy(g["logits_flip"]), g["flip_indices"]))
    np.testing.assert_array_equal((fused * 0.5).numpy(), g["logits_final"])  # MMPose's arithmetic, bit for bit


def test_predict_matches_mmpose_inference_topdown(model, g):
    pred = model.predict(golden_image(g), g["bboxes_xyxy"], return_heatmaps=True)
    assert pred.heatmaps.shape == (2, 17, 384 + 512)  # the fused x and y logits
    assert rel_err(pred.heatmaps, g["logits_final"]) <= LOGIT_RTOL
    np.testing.assert_allclose(pred.scores, g["scores"], rtol=0, atol=LOGIT_RTOL * np.abs(g["logits_final"]).max())
    clear = g["argmax_margin"] >= 1e-3  # a clear maximum on both axes: the argmax cannot flip by rounding
    assert clear.sum() >= 30
    assert np.abs(pred.keypoints - g["keypoints"]).max(-1)[clear].max() <= KEYPOINT_ATOL


def test_exact_predict_reproduces_mmpose_bit_for_bit(g):
    recorded = json.loads((GOLDENS / "platform.json").read_text())
    if recorded != signature():
        pytest.skip(f"bit-level parity needs the goldens' platform {recorded}; this machine is {signature()}")
    model = sagepose.load("rtmpose-t", checkpoint=mmpose_weights(g), exact=True)
    raw = []
    hook = model.head.register_forward_hook(lambda m, args, out: raw.append(out.numpy().copy()))
    with golden_threads():  # exact mode runs the crops, then their mirror images, as MMPose
        pred = model.predict(golden_image(g), g["bboxes_xyxy"], return_heatmaps=True)
    hook.remove()
    np.testing.assert_array_equal(raw[0], g["logits_raw"])
    np.testing.assert_array_equal(raw[1], g["logits_flip"])
    np.testing.assert_array_equal(pred.heatmaps, g["logits_final"])
    np.testing.assert_array_equal(pred.scores, g["scores"])
    assert np.abs(pred.keypoints - g["keypoints"]).max() <= EXACT_KEYPOINT_ATOL


def test_codec_decode_dark_and_visibility_match_mmpose(g):
    codec = build_model("rtmpose-t").codec
    assert codec.sigma == (4.9, 5.66) and codec.simcc_size == (384, 512) and not codec.normalize
    dark = SimCCLabel(**{**vars(codec), "use_dark": True})
    keypoints, scores = dark.decode(g["logits_final"])
    np.testing.assert_allclose(keypoints, g["dark_keypoints"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(scores, g["scores"])  # the logits' maxima, untouched by DARK
    np.testing.assert_allclose(codec.visibility(g["logits_final"]), g["visibility"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("setting", ["rtmpose", "normalized", "standard", "onehot"])
def test_codec_encode_matches_mmpose(setting):
    c = dict(np.load(GOLDENS / "codec.npz"))
    codec = build_codec({"type": "SimCCLabel", **json.loads(str(c["settings"]))[setting]})
    labels, weights = codec.encode(c["keypoints"], c["visible"])
    np.testing.assert_allclose(labels, c[f"{setting}_labels"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(weights, c[f"{setting}_weights"])
    # a visible keypoint whose bins are on the crop decodes to its own bin centre (bin / split ratio px)
    keypoints, _ = codec.decode(torch.from_numpy(labels))
    bins = np.round(c["keypoints"][0] * codec.simcc_split_ratio)
    inside = (c["visible"][0] > 0) & (bins >= 0).all(-1) & (bins < codec.simcc_size).all(-1)
    assert inside.sum() == 2
    np.testing.assert_array_equal(keypoints[0].numpy()[inside], bins[inside] / codec.simcc_split_ratio)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_rows_carry_their_configs_sizes_and_codec(name):
    with torch.device("meta"):
        model = build_model(name)
    big = name.endswith("-384x288")
    assert model.input_size == ((288, 384) if big else (192, 256)) and model.flip_test and not model.codec.udp
    assert model.codec.sigma == ((6.0, 6.93) if big else (4.9, 5.66)) and model.codec.simcc_split_ratio == 2.0
    assert model.head.feature_size == ((9, 12) if big else (6, 8)) and model.head.simcc_size == model.codec.simcc_size


@pytest.mark.parametrize("name", ["rtmpose-t", "rtmpose-l"])
def test_forward_shape_finite_and_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, arch=dict(SMALL_ARCH, rel_bias=True, pos_enc=True), input_size=(64, 96)).train()
    logits = model(torch.randn(2, 3, 96, 64))
    assert logits.shape == (2, 17, 128 + 192)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_relative_bias_entry_is_the_weight_of_the_token_offset():
    gau = GatedAttentionUnit(num_tokens=4, dim=8, s=4, rel_bias=True)
    bias = gau.relative_bias(4)
    for i in range(4):
        for j in range(4):
            assert bias[i, j] == gau.w[j - i + 3]


def test_attention_unit_with_relative_bias_and_rotary_embedding_matches_mmpose():
    a = dict(np.load(GOLDENS / "gau.npz"))
    sd = deterministic_weights(zip(a["keys"].tolist(), json.loads(str(a["shapes"]))), int(a["seed"]))
    names = {"ln.g": "norm.g", "res_scale.scale": "res_scale"}  # as from_mmpose renames them under head.gau
    gau = GatedAttentionUnit(17, 32, s=16, expansion=2, rel_bias=True, pos_enc=True).eval()
    gau.load_state_dict({names.get(k, k): v for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        out = gau(torch.from_numpy(a["inputs"])).numpy()
    assert rel_err(out, a["outputs"]) <= 1e-6


def test_load_by_name_predicts_image_pixels_with_flip_test(g):
    model = sagepose.load("rtmpose-m", random_weights=True)
    image = golden_image(g)
    pred = model.predict(image, g["bboxes_xyxy"])
    assert model.flip_test and pred.keypoints.shape == (2, 17, 2) and pred.scores.shape == (2, 17)
    assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.scores).all()
    _, center, scale = model.crop(image, g["bboxes_xyxy"])  # every keypoint a bin of its crop, in image px
    assert (np.abs(pred.keypoints - center[:, None]) <= scale[:, None] / 2 + 1).all()


def test_convert_reads_an_mmpose_file_and_names_the_model(g, tmp_path):
    torch.save({"state_dict": mmpose_weights(g), "meta": {}}, tmp_path / "rtmpose.pth")
    summary = convert(tmp_path / "rtmpose.pth", tmp_path / "out.pth")
    assert summary["model"] == "rtmpose-t"
    converted = sagepose.load(tmp_path / "out.pth")
    crops, _, _ = converted.crop(golden_image(g), g["bboxes_xyxy"])
    assert rel_err(simcc_logits_of(converted, crops), g["logits_raw"]) <= LOGIT_RTOL


def test_settings_a_simcc_model_cannot_take_fail_in_one_line():
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("rtmpose-t", input_size=(200, 256))
    with pytest.raises(ValueError, match="one test scale"):
        build_model("rtmpose-t", test_scales=(0.8, 1.0))
    with pytest.raises(ValueError, match="widen"):
        build_model("rtmpose-t", arch=dict(widen_factor=0.5))
    with pytest.raises(ValueError, match="SimCC logits"):
        build_model("rtmpose-t").codec.decode(torch.zeros(1, 17, 64, 48))


def test_training_checks_pass_a_simcc_model_supervised_and_semi_supervised():
    from sagepose.config import load_config
    from sagepose.train.checks import check_run

    check_run(load_config("demo_tiny_vit", ["model.name=rtmpose-t"]))  # its loss: KLDiscretLoss (test_losses.py)
    check_run(load_config("custom_tiny_vit_ssl", ["model.name=rtmpose-t"]))  # the SimCC step: test_moments.py


def test_an_rtmpose_recipe_trains_and_tests_through_the_cli_on_a_shrunk_model(tmp_path):
    """``sagepose train rtmpose_s_coco_256x192`` (EMA on) on a few synthetic people, then ``sagepose test`` of its
    checkpoint: the SimCC step, validation and the averaged weights end to end, a shrunk model for speed."""
    from sagepose.cli.main import main
    from sagepose.data.synth import generate_dataset

    data = generate_dataset(tmp_path, 4, seed=1, split="train", workers=1)
    args = [f"data.train_json={data}", f"data.val_json={data}", "data.det_json=null", "data.batch_size=4",
            "data.val_batch_size=8", "data.num_workers=0", "model.input_size=[64, 96]",
            "model.arch={'widen': 0.125, 'deepen': 0.33, 'hidden': 32, 's': 16}", "trainer.accelerator=cpu"]
    out = tmp_path / "run"
    assert main(["train", "rtmpose_s_coco_256x192", *args, "trainer.max_steps=3", "trainer.max_epochs=-1",
                 "trainer.accumulate_grad_batches=1", "trainer.val_every_steps=3", f"trainer.out_dir={out}"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    assert main(["test", str(out / "checkpoints" / "last.ckpt"), *args, "--out", str(tmp_path / "eval")]) == 0
