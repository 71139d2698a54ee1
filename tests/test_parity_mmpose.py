"""ViTPose-B (classic and simple decoder) reproduces MMPose 1.3.2 on identical weights.

The goldens (``tools/make_model_goldens.py``, run in the MMPose venv) hold MMPose's key list,
its network input crops, raw and flip-fused heatmaps, keypoints and scores for a synthetic
image and a real COCO image. Weights are regenerated here from the key list
(``tests/weightgen.py``), converted with ``from_mmpose`` and loaded strictly.

Two paths are checked. The default (``sagepose.load``: BatchNorms folded, oneDNN matmuls, one
batch for crops and mirrors) agrees with MMPose to float32 rounding: heatmaps <= 1e-5 relative.
Random weights give flat, noisy heatmaps on which the DARK-UDP decode is ill-conditioned: float
rounding (which differs between CPUs) moves keypoints there by up to ~0.4 px, in MMPose as here. So
keypoints are compared (to 1e-3 px) only where the heatmaps fix them: the maximum is unambiguous (argmax
margin >= 1e-3) and MMPose's own decode is stable under heatmap noise at the heatmap tolerance
(sensitivity <= 1e-3 px). ``sagepose.load(..., exact=True)``
(``TopDownEstimator.set_exact``: MMPose's arithmetic operation for operation) reproduces MMPose's
heatmaps and scores bit for bit and its keypoints to float32 rounding at every point, on the
platform that wrote the goldens (``tests/goldens/models/platform.json``; skipped elsewhere).

The rest of the ViT family (``VIT_FAMILY``) has compact goldens: heatmaps every ``heatmap_stride``
px and the network input crops as an md5 (cut here from the image, bit-identical to MMPose's).
ViTPose-L / -H are full size. The Sapiens-shaped ViTs are MMPose's ViT with Sapiens' numbers at
1024x768, depth reduced to 2 for CPU time, one person box per image; MMPose 1.3.2's HeatmapHead
cannot express Sapiens' head (it hard-codes BN + ReLU), so the golden script swaps in Sapiens'
non-affine InstanceNorm + SiLU at the same places, and the head's formula is also checked by hand.
"""
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from goldens_io import (
    assert_bit_exact,
    assert_exact_predict,
    exact_model_fixture,
    golden,
    golden_image,
    golden_model,
    predict_exact,
    rel_err,
    require_golden_platform,
    well_posed_joints,
)
from weightgen import deterministic_weights

from sagepose.models import HeatmapHead, build_model, from_mmpose, load_checkpoint

MODELS = ("vitpose-b", "vitpose-b-simple")
IMAGES = ("synthetic", "coco196141")
HEATMAP_RTOL, KEYPOINT_ATOL = 1e-5, 1e-3








@pytest.fixture(scope="module", params=MODELS)
def model_and_name(request):
    name = request.param
    model = golden_model(name)
    return model, name


def test_mmpose_key_list_maps_onto_every_model_key(model_and_name):
    model, name = model_and_name
    keys = golden(name, "synthetic")["keys"].tolist()
    converted = from_mmpose(dict.fromkeys(keys, None))
    with torch.device("meta"):  # the trainable module's keys (`model` is fused for inference)
        assert sorted(converted) == sorted(build_model(name).state_dict())
    assert not any("layers" in k or "ln1" in k or "final_layer" in k for k in converted)


@pytest.mark.parametrize("image", IMAGES)
def test_network_matches_mmpose_on_its_input_crops(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    with torch.no_grad():
        heatmaps = model(model.normalize(torch.from_numpy(g["crops_bgr"]))).numpy()
    assert rel_err(heatmaps, g["heatmaps_raw"]) <= HEATMAP_RTOL


@pytest.mark.parametrize("image", IMAGES)
def test_crops_match_mmpose_bit_exactly(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    crops, center, scale = model.crop(golden_image(g), g["bboxes_xyxy"])
    np.testing.assert_array_equal(center, g["input_center"])
    np.testing.assert_array_equal(scale, g["input_scale"])
    np.testing.assert_array_equal(crops, g["crops_bgr"])


@pytest.mark.parametrize("image", IMAGES)
def test_predict_matches_mmpose_inference_topdown(model_and_name, image):
    model, name = model_and_name
    g = golden(name, image)
    pred = model.predict(golden_image(g), g["bboxes_xyxy"], return_heatmaps=True)
    assert rel_err(pred.heatmaps, g["heatmaps_final"]) <= HEATMAP_RTOL
    score_atol = HEATMAP_RTOL * np.abs(g["scores"]).max()
    np.testing.assert_allclose(pred.scores, g["scores"], rtol=0, atol=score_atol)
    err = np.abs(pred.keypoints - g["keypoints"]).max(-1)
    stable = (g["argmax_margin"] >= 1e-3) & (g["decode_sensitivity"] <= 1e-3)  # well-posed keypoints
    stable &= model.codec.well_posed(torch.from_numpy(pred.heatmaps)).numpy()  # the default decode bounds the rest
    assert stable.sum() >= 1  # random weights: ViTPose-B has 1 and 2 stable, well-posed points on the two images
    assert err[stable].max() <= KEYPOINT_ATOL


exact_model_and_name = exact_model_fixture(MODELS)


@pytest.mark.parametrize("image", IMAGES)
def test_exact_predict_reproduces_mmpose_bit_for_bit(exact_model_and_name, image):
    assert_exact_predict(*exact_model_and_name, image)


VIT_FAMILY = ("vitpose-l", "vitpose-h", "sapiens-0.3b", "sapiens-1b")


def golden_weights(g: dict) -> dict:
    keys = list(zip(g["keys"].tolist(), json.loads(str(g["shapes"]))))
    sd = deterministic_weights(keys, int(g["seed"]))
    checksums = np.array([float(v.double().sum()) for v in sd.values()])
    np.testing.assert_allclose(checksums, g["checksums"], rtol=1e-9, atol=1e-9,
                               err_msg="tests/weightgen.py no longer reproduces the golden weights")
    return sd


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) for n in VIT_FAMILY])
def vit_family(request):  # slow: ~5 min on 2 cores, most of it drawing ViTPose-H's 632M weights and Sapiens' heads
    """(name, model with the golden weights, predict(image) -> (prediction, raw head output) cached)."""
    name = request.param
    g = golden(name, "synthetic")
    model = build_model(name, arch=json.loads(str(g["arch"]))).eval()
    load_checkpoint(model, golden_weights(g), strict=True)  # MMPose format detected, every key matched
    cache = {}

    def predict(image: str, exact: bool = False):
        """(prediction, raw head output of the unflipped crops); ``exact``: with MMPose's arithmetic."""
        if (image, exact) not in cache:
            gi = golden(name, image)
            if exact:
                model.set_exact()
                try:
                    cache[image, exact] = predict_exact(model, gi)
                finally:
                    model.set_exact(False)
                return cache[image, exact]
            raw = []
            hook = model.head.register_forward_hook(lambda m, args, out: raw.append(out))
            try:  # one batch holds the crops and their mirror images: the first half is the raw output
                pred = model.predict(golden_image(gi), gi["bboxes_xyxy"], return_heatmaps=True)
            finally:
                hook.remove()
            cache[image, exact] = pred, raw[0][: len(gi["bboxes_xyxy"])].numpy()
        return cache[image, exact]

    yield name, model, predict
    cache.clear()


def test_vit_family_mmpose_key_list_maps_onto_every_model_key():
    for name in VIT_FAMILY:
        g = golden(name, "synthetic")
        with torch.device("meta"):
            model = build_model(name, arch=json.loads(str(g["arch"])))
        assert sorted(from_mmpose(dict.fromkeys(g["keys"].tolist()))) == sorted(model.state_dict()), name


@pytest.mark.parametrize("image", IMAGES)
def test_vit_family_crops_match_mmpose_bit_exactly(vit_family, image):
    name, model, _ = vit_family
    g = golden(name, image)
    crops, center, scale = model.crop(golden_image(g), g["bboxes_xyxy"])
    np.testing.assert_array_equal(center, g["input_center"])
    np.testing.assert_array_equal(scale, g["input_scale"])
    assert hashlib.md5(np.ascontiguousarray(crops).tobytes()).hexdigest() == str(g["crops_md5"])


@pytest.mark.parametrize("image", IMAGES)
def test_vit_family_heatmaps_and_keypoints_match_mmpose(vit_family, image):
    name, model, predict = vit_family
    g = golden(name, image)
    pred, raw = predict(image)
    s = int(g["heatmap_stride"])
    assert rel_err(raw[..., ::s, ::s], g["heatmaps_raw"]) <= HEATMAP_RTOL
    assert rel_err(pred.heatmaps[..., ::s, ::s], g["heatmaps_final"]) <= HEATMAP_RTOL
    np.testing.assert_allclose(pred.scores, g["scores"], rtol=0, atol=HEATMAP_RTOL * np.abs(g["scores"]).max())
    err = np.abs(pred.keypoints - g["keypoints"]).max(-1)
    stable = (g["argmax_margin"] >= 1e-3) & (g["decode_sensitivity"] <= 1e-3)  # well-posed keypoints
    # ... where the sub-pixel location is also well-posed (elsewhere the default decode bounds MMPose's Newton
    # step): random deep ViTs give flat maps, ViTPose-L none or one such point per image, so the keypoints may
    # go uncompared here (the decode's parity on peaked maps: tests/test_codecs.py)
    stable &= model.codec.well_posed(torch.from_numpy(pred.heatmaps)).numpy()
    assert err[stable].max(initial=0) <= KEYPOINT_ATOL


@pytest.mark.parametrize("image", IMAGES)
def test_vit_family_exact_predict_reproduces_mmpose_bit_for_bit(vit_family, image):
    name, model, predict = vit_family
    require_golden_platform()
    g = golden(name, image)
    assert_bit_exact(*predict(image, exact=True), g, stride=int(g["heatmap_stride"]))


def test_sapiens_head_is_deconv_then_instance_norm_and_silu_by_hand():
    torch.manual_seed(0)
    head = HeatmapHead(8, 3, deconv_channels=(6, 5), conv_channels=(4, 4), conv_kernel_size=1, norm="in",
                       act="silu").eval()
    assert not any("norm" in n for n, _ in head.named_parameters())  # non-affine: no norm parameters
    x = torch.randn(2, 8, 4, 3)

    def norm_silu(t):  # per sample and channel over the spatial map, biased variance, eps 1e-5
        t = (t - t.mean((2, 3), keepdim=True)) / torch.sqrt(t.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
        return t * torch.sigmoid(t)

    y = x
    for stage in head.deconv_blocks:
        assert stage.conv.bias is None
        y = norm_silu(F.conv_transpose2d(y, stage.conv.weight, stride=2, padding=1))
    for stage in head.conv_blocks:
        y = norm_silu(F.conv2d(y, stage.conv.weight, stage.conv.bias))
    y = F.conv2d(y, head.final_conv.weight, head.final_conv.bias)
    with torch.no_grad():
        out = head(x)
    assert out.shape == (2, 3, 16, 12)
    torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-6)


def test_vit_onednn_inference_path_matches_the_plain_one_and_training_keeps_autograd(monkeypatch):
    from sagepose.models import cpu_kernels

    torch.manual_seed(0)
    model = build_model("vitpose-b", arch=dict(depth=2), input_size=(96, 128)).eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(cpu_kernels, "onednn_available", lambda: False)
        plain = model(x)
    assert rel_err(fast.numpy(), plain.numpy()) <= 1e-6
    monkeypatch.setattr(cpu_kernels, "onednn_available", lambda: True)
    model.train()
    model(x).square().mean().backward()  # grad enabled: plain F.linear, so every weight gets a gradient
    assert all(p.grad is not None for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["vitpose-b", "hrformer-b", "hrnet-w32-dark"])
def test_exact_mode_agrees_with_the_default_path_and_switches_back(name):
    torch.manual_seed(0)
    arch = dict(depth=2) if name.startswith("vitpose") else dict(
        widths=(8, 16, 24, 32), num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1,
        **(dict(num_heads=(1, 2, 2, 4)) if name.startswith("hrformer") else {}))
    model = build_model(name, arch=arch).eval()
    for m in model.modules():  # BN statistics far from identity, so folding them would matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    codec = model.codec
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 200, 280], [40, 0, 230, 250]], np.float32)
    default = model.predict(image, boxes, return_heatmaps=True)
    calls = []
    hook = model.head.register_forward_hook(lambda m, args, out: calls.append(len(out)))
    exact = model.set_exact().predict(image, boxes, return_heatmaps=True)
    hook.remove()
    assert calls == [2, 2]  # as MMPose: the crops, then their mirror images, in passes of their own
    assert model.codec.decode_impl == "mmpose" and model.set_exact(False).codec is codec
    assert rel_err(exact.heatmaps, default.heatmaps) <= 1e-5
    np.testing.assert_allclose(exact.scores, default.scores, rtol=1e-5, atol=1e-6)
    # random weights give flat maps, on which rounding moves DARK / MSRA keypoints by up to ~0.1 px (by how much
    # depends on the CPU): keypoints are compared where the heatmaps fix them (ViTPose-B: 9 of 34 joints here)
    well_posed = well_posed_joints(model, default.heatmaps, model.crop(image, boxes)[2])
    # ... and where the sub-pixel location is well-posed: elsewhere the default decode bounds MMPose's Newton step
    # (a step to no peak, or beyond the trust region), which exact mode keeps; on this noise image ViTPose-B's
    # random maps have no such joint, so it is compared on heatmaps and scores only
    well_posed &= model.codec.well_posed(torch.from_numpy(default.heatmaps)).numpy()
    assert well_posed.sum() >= (0 if name == "vitpose-b" else 4)
    assert np.abs(exact.keypoints - default.keypoints).max(-1)[well_posed].max(initial=0) <= KEYPOINT_ATOL
    with pytest.raises(RuntimeError, match="exact=True"):
        model.fuse_for_inference().set_exact()
