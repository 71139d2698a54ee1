"""HRNet-W32 / W48 (MSRA, UDP, DARK) and HRFormer-S / B reproduce MMPose 1.3.2 on identical weights.

Same protocol as ``test_parity_mmpose.py``: goldens from ``tools/make_model_goldens.py`` (run in the
MMPose venv), weights regenerated from MMPose's key list by ``tests/weightgen.py``, converted with
``from_mmpose`` and loaded strictly; flip test on. The HRNet / HRFormer goldens are compact: heatmaps
on every second row and column (float32) and the network input crops as an md5, so the crops are
cut here from the image (and must be bit-identical to MMPose's). The real COCO image is the repository's copy
(tests/data/realdata).
``sagepose.load(..., exact=True)`` (MMPose's arithmetic operation for operation) reproduces MMPose bit
for bit on the goldens' platform (``tests/goldens/models/platform.json``; skipped elsewhere).
"""
import hashlib
import json

import numpy as np
import pytest
import torch
from goldens_io import GOLDENS, assert_exact_predict, exact_model_fixture, golden, golden_image, golden_model, rel_err

from sagepose.models import MODELS, build_model, from_mmpose

PARAM_COUNTS = json.loads((GOLDENS / "param_counts.json").read_text())["counts"]
PARITY = ("hrnet-w32", "hrnet-w32-udp", "hrnet-w32-dark", "hrformer-b", "hrnet-w48", "hrformer-s")
NAMES = sorted(n for n in MODELS if n.startswith(("hrnet", "hrformer")) and not n.endswith("-fusion"))  # MMPose's
IMAGES = ("synthetic", "coco196141")
HEATMAP_RTOL, KEYPOINT_ATOL = 1e-5, 1e-3
# Shrunk numbers (two modules of one block per stage, narrow branches) for a fast forward / backward.
SMALL_ARCH = {"hrnet": dict(widths=(8, 16, 24, 32), num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1),
              "hrformer": dict(widths=(8, 16, 24, 32), num_heads=(1, 2, 2, 4), num_modules=(1, 1, 1), num_blocks=1,
                               stem_blocks=1)}








def subsample(heatmaps: np.ndarray) -> np.ndarray:
    """The goldens keep every second heatmap row and column."""
    return heatmaps[..., ::2, ::2]


@pytest.fixture(scope="module", params=PARITY)
def model_and_name(request):
    name = request.param
    model = golden_model(name)
    return model, name


def test_mmpose_keys_are_ours_except_hrformer_window_index(model_and_name):
    model, name = model_and_name
    keys = golden(name, "synthetic")["keys"].tolist()
    converted = from_mmpose(dict.fromkeys(keys, None))
    with torch.device("meta"):  # the trainable module's keys (`model` is fused for inference)
        assert sorted(converted) == sorted(build_model(name).state_dict())
    # no renaming in the backbone; HRFormer's constant window-index buffers are dropped (the model rebuilds them)
    dropped = [k for k in keys if k.startswith("backbone.") and k not in converted]
    assert all(k.endswith(".relative_position_index") for k in dropped)
    assert bool(dropped) == name.startswith("hrformer")


@pytest.mark.parametrize("image", IMAGES)
def test_crops_match_mmpose_bit_exactly(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    crops, center, scale = model.crop(golden_image(g), g["bboxes_xyxy"])
    np.testing.assert_array_equal(center, g["input_center"])
    np.testing.assert_array_equal(scale, g["input_scale"])
    assert hashlib.md5(np.ascontiguousarray(crops).tobytes()).hexdigest() == str(g["crops_md5"])


@pytest.mark.parametrize("image", IMAGES)
def test_network_matches_mmpose_on_its_input_crops(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    crops, _, _ = model.crop(golden_image(g), g["bboxes_xyxy"])  # bit-identical to MMPose's (test above)
    with torch.no_grad():
        heatmaps = model(model.normalize(torch.from_numpy(crops))).numpy()
    assert rel_err(subsample(heatmaps), g["heatmaps_raw"]) <= HEATMAP_RTOL


@pytest.mark.parametrize("image", IMAGES)
def test_predict_matches_mmpose_inference_topdown(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    pred = model.predict(golden_image(g), g["bboxes_xyxy"], return_heatmaps=True)
    assert rel_err(subsample(pred.heatmaps), g["heatmaps_final"]) <= HEATMAP_RTOL
    score_atol = HEATMAP_RTOL * np.abs(g["scores"]).max()
    np.testing.assert_allclose(pred.scores, g["scores"], rtol=0, atol=score_atol)
    err = np.abs(pred.keypoints - g["keypoints"]).max(-1)
    # compared where the heatmaps fix the keypoint (elsewhere DARK's rounding moves differ by CPU)
    stable = (g["argmax_margin"] >= 1e-3) & (g["decode_sensitivity"] <= 1e-3)
    stable &= model.codec.well_posed(torch.from_numpy(pred.heatmaps)).numpy()  # the default decode bounds the rest
    assert stable.sum() >= 4
    assert err[stable].max() <= KEYPOINT_ATOL


exact_model_and_name = exact_model_fixture(PARITY)


@pytest.mark.parametrize("image", IMAGES)
def test_exact_predict_reproduces_mmpose_bit_for_bit(exact_model_and_name, image):
    assert_exact_predict(*exact_model_and_name, image, stride=2)


def test_zoo_rows_carry_their_configs_codec_input_size_and_flip_shift():
    assert set(PARITY) <= set(NAMES) and len(NAMES) == 8
    for name in NAMES:
        with torch.device("meta"):
            model = build_model(name)
        assert model.shift_heatmap == (not name.endswith("-udp"))  # MMPose: shift_heatmap=False for UDP only
        assert model.codec.udp == name.endswith("-udp")
        assert getattr(model.codec, "unbiased", False) == name.endswith("-dark")
        assert model.input_size == (192, 256) and tuple(model.codec.heatmap_size) == (48, 64)


@pytest.mark.parametrize("name", NAMES)
def test_param_count_equals_mmpose_build_of_same_config(name):
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_finite_and_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    arch = SMALL_ARCH["hrformer" if name.startswith("hrformer") else "hrnet"]
    model = build_model(name, arch=arch, input_size=(64, 64), drop_path_rate=0.0, grad_checkpointing=True).train()
    heatmaps = model(torch.randn(2, 3, 64, 64))  # sides: multiples of 32 (the coarsest branch's stride)
    assert heatmaps.shape == (2, 17, 16, 16)
    assert torch.isfinite(heatmaps).all()
    heatmaps.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


def test_unknown_arch_key_fails_with_a_suggestion():
    with pytest.raises(ValueError, match="widths"):
        build_model("hrnet-w32", arch=dict(width=(8, 16, 24, 32)))
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_model("hrnet-w32", drop_path_rate=0.1)
