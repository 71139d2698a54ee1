"""sagepose.models.fusion_head and sagepose.train.fusion_loss: analytic decodes, flip symmetry, each loss term's
zero and sign, gradients into every branch, switching terms off, and the fusion zoo rows."""
import dataclasses

import pytest
import torch
from goldens_io import well_posed_joints

from sagepose.codecs import MSRAHeatmap, UDPHeatmap
from sagepose.models import MODELS, build_model
from sagepose.models.fusion_head import (
    FusionHead,
    decode_heatmaps,
    fusion_decode,
    join_outputs,
    soft_argmax_window,
    split_outputs,
    to_heatmap_coords,
)
from sagepose.train.fusion_loss import MIN_VAR, FusionLossWeights, fusion_loss

FUSION_MODELS = sorted(n for n in MODELS if n.endswith("-fusion"))
TERMS = ("heatmap", "offset", "peak", "variance", "overlap", "shape")


def gaussians(points: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """points (B, K, 2) in heatmap pixels -> unit-peak Gaussians (B, K, H, W), uncut."""
    w, h = size
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    d2 = (xs - points[..., 0, None, None]) ** 2 + (ys - points[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))


def random_points(b: int, k: int, size: tuple[int, int], margin: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    span = torch.tensor([size[0] - 1 - 2 * margin, size[1] - 1 - 2 * margin])
    return torch.rand(b, k, 2, generator=gen) * span + margin


def outputs_with(heatmaps: torch.Tensor, offset=(0.0, 0.0), log_var: float = 0.0) -> torch.Tensor:
    b, k, h, w = heatmaps.shape
    offsets = torch.tensor(offset, dtype=torch.float32).view(1, 1, 2, 1, 1).expand(b, k, 2, h, w)
    return join_outputs(heatmaps, offsets, torch.full_like(heatmaps, log_var))


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("blur", [0, 11])
@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_gaussian_at_subpixel_location_decodes_within_a_hundredth_of_a_pixel(sigma, blur):
    # the blur pads with zeros (as DARK does), which pulls a wide Gaussian near the border: keep off it then
    points = random_points(4, 17, (48, 64), margin=10 if blur else 4, seed=1)
    locs, scores = decode_heatmaps(gaussians(points, (48, 64), sigma), blur_kernel_size=blur)
    assert (locs - points).abs().max() < 0.01
    assert torch.all(scores > 0.6) and torch.all(scores <= 1)


def test_soft_argmax_alone_is_biased_and_the_gaussian_step_removes_the_bias():
    points = random_points(2, 17, (48, 64), margin=4, seed=2)
    heatmaps = gaussians(points, (48, 64), 2.0)
    _, _, soft = soft_argmax_window(heatmaps, radius=2)
    assert (soft - points).abs().max() > 0.1  # a 5x5 centroid is pulled toward the argmax pixel
    assert (decode_heatmaps(heatmaps)[0] - points).abs().max() < 0.01


# 192x256 input, 48x64 heatmaps: input px per heatmap px when decoding (x, y), and what encode + decode
# make of a keypoint: UDP encodes with (input - 1) / (hm - 1); MMPose's UDP decodes with input / (hm - 1)
@pytest.mark.parametrize("codec, decode_scale, roundtrip", [
    (UDPHeatmap(decode_scale="unbiased"), (191 / 47, 255 / 63), (1.0, 1.0)),
    (UDPHeatmap(), (192 / 47, 256 / 63), (192 / 191, 256 / 255)),
    (MSRAHeatmap(unbiased=True), (4.0, 4.0), (1.0, 1.0)),
], ids=["udp-unbiased", "udp-mmpose", "dark"])
def test_encoded_target_decodes_to_the_keypoint_in_input_pixels_without_offsets(codec, decode_scale, roundtrip):
    keypoints = random_points(2, 17, codec.input_size, margin=32, seed=3)
    target, _ = codec.encode(keypoints)
    kp, scores, std = FusionHead(8, 17).decode(outputs_with(target, log_var=0.0), codec)
    assert (kp - keypoints * torch.tensor(roundtrip)).abs().max() < 0.01
    torch.testing.assert_close(scores, target.amax((-2, -1)))
    torch.testing.assert_close(std, torch.full_like(std, sum(decode_scale) / 2))  # exp(0 / 2) heatmap px


def test_msra_quantised_target_plus_the_quantisation_offset_decodes_exactly():
    codec = MSRAHeatmap()
    keypoints = random_points(1, 17, codec.input_size, margin=32, seed=4)
    target, _ = codec.encode(keypoints)
    hm_points = to_heatmap_coords(keypoints, codec)
    plain = decode_heatmaps(target)[0]
    assert (plain - hm_points).abs().max() > 0.3  # the Gaussian sits on the rounded pixel
    torch.testing.assert_close(plain, torch.trunc(hm_points + 0.5), atol=1e-4, rtol=0)
    b, k, h, w = target.shape
    offsets = (hm_points - plain)[..., None, None].expand(b, k, 2, h, w)
    kp, _, _ = FusionHead(8, 17).decode(join_outputs(target, offsets, torch.zeros_like(target)), codec)
    assert (kp - keypoints).abs().max() < 0.01


def test_known_offsets_shift_the_result_exactly_and_log_var_gives_the_std():
    points = random_points(2, 17, (48, 64), margin=4, seed=5)
    heatmaps = gaussians(points, (48, 64), 2.0)
    base, _, _ = fusion_decode(outputs_with(heatmaps))
    shifted, _, std = fusion_decode(outputs_with(heatmaps, offset=(0.3, -0.45), log_var=2 * torch.log(torch.tensor(
        0.7)).item()))
    torch.testing.assert_close(shifted - base, torch.tensor([0.3, -0.45]).expand_as(base), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.full_like(std, 0.7))


def test_flat_or_negative_maps_keep_the_argmax_instead_of_a_wild_newton_step():
    heatmaps = torch.zeros(1, 2, 16, 16)
    heatmaps[0, 0, 5, 7] = 1.0  # a single hot pixel: log-map is no local quadratic
    heatmaps[0, 1] = -1.0
    heatmaps[0, 1, 9, 3] = -0.5
    locs, scores = decode_heatmaps(heatmaps)
    torch.testing.assert_close(locs[0], torch.tensor([[7.0, 5.0], [3.0, 9.0]]))
    torch.testing.assert_close(scores[0], torch.tensor([1.0, -0.5]))


# ----------------------------------------------------------------------------- flip test


def test_decoding_flipped_back_outputs_gives_the_mirrored_swapped_keypoints():
    model = build_model("vit-tiny-fusion")
    w, h = model.codec.heatmap_size
    points = random_points(2, 17, (w, h), margin=4, seed=6)
    gen = torch.Generator().manual_seed(7)
    offsets = (torch.rand(2, 17, 2, 1, 1, generator=gen) - 0.5).expand(2, 17, 2, h, w)
    heatmaps = gaussians(points, (w, h), 1.5)
    outputs = join_outputs(heatmaps, offsets, torch.randn(2, 17, 1, 1, generator=gen).expand(2, 17, h, w))
    locs, scores, std = fusion_decode(outputs)
    flipped = model.head.flip_back(outputs, model.schema.flip_indices, shift=False)  # UDP: no shift
    f_locs, f_scores, f_std = fusion_decode(flipped)
    idx = list(model.schema.flip_indices)
    mirrored = torch.stack([(w - 1) - locs[..., 0], locs[..., 1]], dim=-1)[:, idx]
    torch.testing.assert_close(f_locs, mirrored, atol=1e-4, rtol=0)
    torch.testing.assert_close(f_scores, scores[:, idx])
    torch.testing.assert_close(f_std, std[:, idx])


def test_flip_test_fusion_is_mirror_symmetric_through_the_estimator():
    torch.manual_seed(0)
    model = build_model("vit-tiny-fusion").eval()
    x = torch.randn(2, 3, 128, 96)
    fused, fused_mirror = model.predict_heatmaps(x), model.predict_heatmaps(x.flip(-1))
    assert fused.shape == (2, 68, 32, 24)
    torch.testing.assert_close(fused_mirror, model.head.flip_back(fused, model.schema.flip_indices, False),
                               atol=1e-5, rtol=1e-5)
    kp, scores = model.decode(fused)
    kp_m, scores_m = model.decode(fused_mirror)
    idx = list(model.schema.flip_indices)
    # UDP with MMPose's decode scale: heatmap column c maps to c * 96 / 23, its mirror to 96 - that; compared where
    # the random maps fix the keypoint (elsewhere the Newton step turns float rounding into ~1e-3 px moves)
    err = (kp_m - torch.stack([96 - kp[..., 0], kp[..., 1]], -1)[:, idx]).abs().amax(-1).numpy()
    well_posed = well_posed_joints(model, fused.numpy())
    assert well_posed[:, idx].sum() >= 4  # 14 of 34 here
    assert err[well_posed[:, idx]].max() <= 1e-4
    torch.testing.assert_close(scores_m, scores[:, idx])


def test_msra_flip_back_shifts_every_map_and_negates_x_offsets():
    head = FusionHead(8, 2)
    outputs = torch.arange(2 * 8 * 3 * 5, dtype=torch.float32).view(2, 8, 3, 5)
    hm, off, lv = split_outputs(head.flip_back(outputs, [1, 0], shift=True))
    hm0, off0, lv0 = split_outputs(outputs)
    shifted = lambda m: torch.cat([m.flip(-1)[..., :1], m.flip(-1)[..., :-1]], dim=-1)
    torch.testing.assert_close(hm, shifted(hm0)[:, [1, 0]])
    torch.testing.assert_close(off[:, :, 0], -shifted(off0[:, :, 0])[:, [1, 0]])
    torch.testing.assert_close(off[:, :, 1], shifted(off0[:, :, 1])[:, [1, 0]])
    torch.testing.assert_close(lv, shifted(lv0)[:, [1, 0]])


# ----------------------------------------------------------------------------- loss


def perfect_case(codec=None):
    """A batch whose outputs are the perfect prediction for their targets: (outputs, target, weights, points)."""
    codec = codec or MSRAHeatmap(input_size=(96, 128), heatmap_size=(24, 32), sigma=2.0)
    keypoints = random_points(2, 17, codec.input_size, margin=24, seed=8)
    target, weights = codec.encode(keypoints)
    points = to_heatmap_coords(keypoints, codec)
    b, k, h, w = target.shape
    offsets = (points - decode_heatmaps(target)[0])[..., None, None].expand(b, k, 2, h, w)
    log_var = torch.full_like(target, torch.log(torch.tensor(MIN_VAR)).item())
    return join_outputs(target, offsets, log_var), target, weights, points


def test_every_term_is_zero_at_the_perfect_prediction():
    outputs, target, weights, points = perfect_case()
    loss, logs = fusion_loss(outputs, target, weights, points)
    assert sorted(logs) == sorted(f"loss/fusion_{t}" for t in TERMS)
    for name, value in logs.items():
        assert abs(float(value)) < 1e-5, (name, float(value))
    assert abs(float(loss)) < 1e-5


@pytest.mark.parametrize("branch", ["heatmap", "offset", "log_var"])
def test_each_term_is_positive_when_its_branch_is_wrong(branch):
    outputs, target, weights, points = perfect_case()
    hm, off, lv = split_outputs(outputs.clone())
    gen = torch.Generator().manual_seed(9)
    if branch == "heatmap":  # the Gaussians moved one pixel right and scaled down
        hm = torch.cat([hm[..., :1] * 0, hm[..., :-1]], dim=-1) * 0.8
        off = off.clone()
    elif branch == "offset":
        off = off + 0.3 * torch.randn(off.shape, generator=gen)
    else:
        lv = lv + 2.0
    _, logs = fusion_loss(join_outputs(hm, off, lv), target, weights, points)
    positive = {"heatmap": ("heatmap", "peak", "overlap", "shape", "variance"), "offset": ("offset", "variance"),
                "log_var": ("variance",)}[branch]
    for name in TERMS:
        value = float(logs[f"loss/fusion_{name}"])
        if name in positive:
            assert value > 1e-3, (name, value)
        else:
            assert abs(value) < 1e-5, (name, value)


def test_unlabelled_joints_add_nothing():
    outputs, target, weights, points = perfect_case()
    hm, off, lv = split_outputs(outputs.clone())
    hm[:, 3] = 5.0  # joint 3 far off, but weight 0
    weights = weights.clone()
    weights[:, 3] = 0
    loss, _ = fusion_loss(join_outputs(hm, off, lv + 0 * hm), target, weights, points)
    assert abs(float(loss)) < 1e-5


def test_gradients_reach_every_branch_and_the_shared_trunk():
    torch.manual_seed(0)
    head = FusionHead(16, 17, deconv_channels=(16,))
    _, target, weights, points = perfect_case()
    outputs = head(torch.randn(2, 16, 16, 12))
    loss, _ = fusion_loss(outputs, target, weights, points)
    loss.backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


@pytest.mark.parametrize("off", TERMS)
def test_a_zero_weight_switches_its_term_off(off):
    torch.manual_seed(0)
    head = FusionHead(16, 17, deconv_channels=(16,))
    _, target, weights, points = perfect_case()
    outputs = head(torch.randn(2, 16, 16, 12))
    full, logs = fusion_loss(outputs, target, weights, points)
    lw = dataclasses.replace(FusionLossWeights(), **{off: 0.0})
    partial_loss, partial_logs = fusion_loss(outputs, target, weights, points, lw)
    assert f"loss/fusion_{off}" not in partial_logs
    weight = getattr(FusionLossWeights(), off)
    torch.testing.assert_close(partial_loss, full - weight * logs[f"loss/fusion_{off}"], atol=1e-5, rtol=1e-5)


def test_only_the_heatmap_term_leaves_offset_and_variance_branches_without_gradient():
    torch.manual_seed(0)
    head = FusionHead(16, 17, deconv_channels=(16,))
    _, target, weights, points = perfect_case()
    lw = FusionLossWeights(heatmap=1.0, offset=0.0, peak=0.0, variance=0.0, overlap=0.0, shape=0.0)
    loss, logs = fusion_loss(head(torch.randn(2, 16, 16, 12)), target, weights, points, lw)
    loss.backward()
    assert list(logs) == ["loss/fusion_heatmap"]
    silent = lambda p: p.grad is None or not p.grad.abs().sum() > 0
    assert all(silent(p) for p in (*head.offset.parameters(), *head.log_var.parameters()))
    assert head.heatmap.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- zoo


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_fusion_zoo_model_forward_shape_finite_and_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    if name.startswith("hrformer"):
        small = dict(arch=dict(widths=(8, 16, 24, 32), num_heads=(1, 2, 2, 4), num_modules=(1, 1, 1), num_blocks=1,
                               stem_blocks=1), input_size=(64, 64))
    else:
        small = {}
    model = build_model(name, drop_path_rate=0.0, **small).train()
    w, h = model.input_size
    outputs = model(torch.randn(2, 3, h, w))
    assert outputs.shape == (2, 4 * 17, h // 4, w // 4) and torch.isfinite(outputs).all()
    assert isinstance(model.head, FusionHead)
    assert model.codec.udp == name.startswith("vit")  # the base model's codec: UDP for ViTs, MSRA for HRFormer
    codec_target, weights = model.codec.encode(torch.tensor([[[w / 2, h / 3]] * 17]))
    loss, _ = fusion_loss(outputs, codec_target.expand(2, -1, -1, -1), weights.expand(2, -1),
                          to_heatmap_coords(torch.tensor([[[w / 2, h / 3]] * 17]).expand(2, -1, -1), model.codec))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


def test_fusion_models_predict_in_image_pixels_with_heatmaps_only_returned():
    torch.manual_seed(0)
    model = build_model("vit-tiny-fusion").eval()
    image = (torch.rand(200, 150, 3) * 255).to(torch.uint8).numpy()
    pred = model.predict(image, [[10, 20, 110, 180]], return_heatmaps=True)
    assert pred.keypoints.shape == (1, 17, 2) and pred.scores.shape == (1, 17)
    assert pred.heatmaps.shape == (1, 17, 32, 24)
