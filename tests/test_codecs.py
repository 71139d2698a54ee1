"""sagepose.codecs against MMPose 1.3.2 goldens (tools/make_codec_goldens.py) and analytic cases."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from goldens_io import require_golden_platform

from sagepose.codecs import CODECS, MSRAHeatmap, UDPHeatmap, build_codec, flip_heatmaps, get_heatmap_maximum
from sagepose.codecs.decode import NEWTON_TRUST_RADIUS
from sagepose.codecs.gaussian import continuous_gaussian_heatmaps
from sagepose.codecs.reference import blur_like_mmpose
from sagepose.keypoints import COCO17

GOLDENS = np.load(Path(__file__).parent / "goldens" / "codecs.npz")
CASES = ("coco", "large", "odd")
NAMES = ("msra", "dark", "udp")


def golden_codec(case: str, name: str):
    iw, ih, hw, hh, sigma, blur, _ = GOLDENS[f"{case}/config"]
    kw = dict(input_size=(iw, ih), heatmap_size=(hw, hh), sigma=float(sigma), blur_kernel_size=int(blur))
    if name == "udp":
        return UDPHeatmap(**kw)
    return MSRAHeatmap(unbiased=name == "dark", **kw)


def golden_heatmaps(case: str) -> tuple[torch.Tensor, int]:
    """Decode inputs (B, K, H, W) and how many leading instances are uniform noise (the rest: noisy peaks)."""
    n_random = int(GOLDENS[f"{case}/config"][-1])
    return torch.from_numpy(GOLDENS[f"{case}/heatmaps"].astype(np.float32)), n_random


def well_posed(case: str, name: str) -> np.ndarray:
    """(B, K) bool: where MMPose's decode of the golden heatmaps is a well-posed function of them. On uniform
    noise DARK's Newton step is ill-conditioned: MMPose's own decode moves by up to 0.09 px when its input moves
    one ulp (``ulp_spread``), and any CPU's float rounding moves either decode as far; there only points with a
    spread <= 1e-4 px are comparable (1 to 19 of a case's random maps). Noisy peaked maps and MSRA (argmax and the
    sign of a difference: no rounding) are well-posed everywhere."""
    config = GOLDENS[f"{case}/config"]
    mask = np.ones(GOLDENS[f"{case}/{name}/decoded"].shape[:2], bool)
    if name != "msra":
        mask[: int(config[-1])] = GOLDENS[f"{case}/{name}/ulp_spread"] <= 1e-4
    return mask


def assert_keypoints_close(ours: np.ndarray, ref: np.ndarray, atol) -> None:
    """Same NaNs (MMPose's DARK / UDP give NaN for an all-zero map) and elsewhere within atol px."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    err = np.nan_to_num(np.abs(ours - ref)).max(-1)
    assert (err <= atol).all(), f"max error {err.max():.3g} px (worst excess {(err - atol).max():.3g})"


def mmpose_hessian_has_a_peak(case: str, name: str) -> np.ndarray:
    """(B, K) bool: where the Hessian MMPose's Newton step inverts (computed here in numpy from the golden
    heatmaps, as MMPose computes it) is negative definite -- or, for UDP, the argmax lies on the map's edge,
    where the edge padding puts the outward axis's vertex on the edge. There the default decode takes MMPose's
    step (within the trust region); elsewhere it keeps the argmax."""
    heatmaps = GOLDENS[f"{case}/heatmaps"].astype(np.float32)
    codec = golden_codec(case, name)
    b, k, h, w = heatmaps.shape
    blurred = np.stack([blur_like_mmpose(hm, codec.blur_kernel_size) for hm in heatmaps])
    locs, scores = get_heatmap_maximum(heatmaps)
    x, y = locs[..., 0].astype(int), locs[..., 1].astype(int)
    if name == "dark":
        pad, logmap = 2, np.log(np.maximum(blurred, np.float32(1e-10)))
    else:
        pad, logmap = 1, np.log(np.clip(blurred, 1e-3, 50.0))
    logmap = np.pad(logmap, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    bi, ki = np.indices((b, k))
    m = lambda ox, oy: logmap[bi, ki, y + oy + pad, x + ox + pad]
    if name == "dark":  # second differences of step 2, scaled by 1/4
        hxx, hyy = 0.25 * (m(2, 0) - 2 * m(0, 0) + m(-2, 0)), 0.25 * (m(0, 2) - 2 * m(0, 0) + m(0, -2))
        hxy = 0.25 * (m(1, 1) - m(1, -1) - m(-1, 1) + m(-1, -1))
        edge = np.zeros_like(hxx, bool)
    else:
        eps = np.finfo(np.float32).eps
        hxx, hyy = m(1, 0) - 2 * m(0, 0) + m(-1, 0) + eps, m(0, 1) - 2 * m(0, 0) + m(0, -1) + eps
        hxy = 0.5 * (m(1, 1) - m(1, 0) - m(0, 1) + 2 * m(0, 0) - m(-1, 0) - m(0, -1) + m(-1, -1))
        edge = (x == 0) | (x == w - 1) | (y == 0) | (y == h - 1)
    with np.errstate(invalid="ignore"):  # an all-zero map's blur is NaN
        return (((hxx * hyy - hxy * hxy > 0) & (hxx < 0)) | edge) & (scores > 0)


def default_decode_of_goldens(case: str, name: str) -> np.ndarray:
    """(B, K, 2) input px: what the default (bounded) decode should give for the golden heatmaps, built from
    MMPose's decode: its keypoint where its Newton step leads to a peak within the trust region, its step
    clamped to the region per axis beyond it, the argmax where the Hessian has no peak, and MMPose's (-1, -1)
    mark for a map with no positive value (where MMPose's UDP reads the previous channel and its all-zero
    maps give NaN)."""
    codec = golden_codec(case, name)
    heatmaps = GOLDENS[f"{case}/heatmaps"].astype(np.float32)
    reference = GOLDENS[f"{case}/{name}/decoded"]
    locs, scores = get_heatmap_maximum(heatmaps)
    if name == "msra":
        return reference
    to_hm = codec.to_heatmap if name == "dark" else (
        lambda kp: kp / torch.tensor(codec.input_size) * torch.tensor(codec.heatmap_size, dtype=torch.float32).sub(1))
    step = to_hm(torch.from_numpy(reference).double()).numpy() - locs
    radius = NEWTON_TRUST_RADIUS
    clamped = np.clip(step, -radius, radius)
    peak = mmpose_hessian_has_a_peak(case, name)
    bounded = codec.to_input(torch.from_numpy(locs + np.where(peak[..., None], clamped, 0))).numpy()
    taken_as_is = peak & (np.abs(step) <= radius).all(-1)
    return np.where(taken_as_is[..., None], reference, bounded.astype(reference.dtype))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_encode_equals_mmpose_within_1e6(case, name):
    codec = golden_codec(case, name)
    heatmaps, weights = codec.encode(torch.from_numpy(GOLDENS[f"{case}/keypoints"]),
                                     torch.from_numpy(GOLDENS[f"{case}/visible"]))
    assert heatmaps.dtype == torch.float32
    np.testing.assert_allclose(heatmaps.numpy(), GOLDENS[f"{case}/{name}/encoded"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights.numpy(), GOLDENS[f"{case}/{name}/weights"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_decode_of_noisy_peaked_heatmaps_equals_mmpose_within_1e4_px(case, name):
    # every map with a positive maximum: MMPose's keypoint where its Newton step stays within the one-pixel trust
    # region, clamped to it beyond (on these noisy peaks MMPose steps up to 1.63 px: 4 of the 49 COCO-size
    # keypoints, none of the others); a map with none: MMPose's (-1, -1) mark, not its NaN / previous channel
    heatmaps, n_random = golden_heatmaps(case)
    keypoints, scores = golden_codec(case, name).decode(heatmaps[n_random:])
    reference = GOLDENS[f"{case}/{name}/decoded"][n_random:]
    expected = default_decode_of_goldens(case, name)[n_random:]
    positive = scores.numpy() > 0
    differ = (expected[positive] != reference[positive]).any(-1).sum()
    assert differ == (4 if case == "coco" and name != "msra" else 0)
    assert_keypoints_close(keypoints.numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(scores.numpy(), GOLDENS[f"{case}/{name}/scores"][n_random:])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_decode_of_random_heatmaps_equals_mmpose_bounded_where_the_decode_is_well_posed(case, name):
    # uniform noise: where MMPose's decode is a well-posed function of the heatmaps (``well_posed``), ours is its
    # keypoint if the Hessian has a peak and the step is inside the trust region, that step clamped to the
    # region if beyond it, and the argmax (no NaN, no keypoint off the map) if the Hessian has no peak
    heatmaps, n_random = golden_heatmaps(case)
    keypoints, scores = golden_codec(case, name).decode(heatmaps[:n_random])
    assert np.isfinite(keypoints.numpy()).all()
    mask = well_posed(case, name)[:n_random]
    assert mask.any()
    expected = default_decode_of_goldens(case, name)[:n_random]
    assert_keypoints_close(keypoints.numpy()[mask], expected[mask], atol=1e-4 if name == "msra" else 1e-3)
    np.testing.assert_array_equal(scores.numpy(), GOLDENS[f"{case}/{name}/scores"][:n_random])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["dark", "udp"])
def test_well_posed_marks_where_the_default_decode_equals_mmpose(case, name):
    # the codec's own mask against where the bounded decode built here from MMPose's Hessian and step
    # (default_decode_of_goldens) keeps MMPose's keypoint
    heatmaps, n_random = golden_heatmaps(case)
    codec = golden_codec(case, name)
    marked = codec.well_posed(heatmaps).numpy()
    stable = well_posed(case, name)  # MMPose's decode a stable function of the maps (ulp_spread)
    reference = GOLDENS[f"{case}/{name}/decoded"]
    kept = np.nan_to_num(np.abs(default_decode_of_goldens(case, name) - reference).max(-1), nan=1.0) <= 1e-4
    np.testing.assert_array_equal(marked[stable], kept[stable])
    positive = GOLDENS[f"{case}/{name}/scores"] > 0
    # noisy peaks: all well-posed but the 4 COCO-size ones where MMPose steps past the one-pixel trust region
    assert (~marked[n_random:][positive[n_random:]]).sum() == (4 if case == "coco" and name != "msra" else 0)
    assert_keypoints_close(codec.decode(heatmaps)[0].numpy()[marked & stable], reference[marked & stable], 1e-3)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["dark", "udp"])
def test_mmpose_decode_impl_equals_mmpose_within_1e4_px_where_the_decode_is_well_posed(case, name):
    heatmaps, n_random = golden_heatmaps(case)
    codec = dataclasses.replace(golden_codec(case, name), decode_impl="mmpose")
    keypoints, scores = codec.decode(heatmaps)
    reference = GOLDENS[f"{case}/{name}/decoded"]
    assert keypoints.dtype == torch.float32
    np.testing.assert_array_equal(np.isnan(keypoints.numpy()), np.isnan(reference))
    mask = well_posed(case, name)
    assert_keypoints_close(keypoints.numpy()[mask], reference[mask], atol=1e-4)
    np.testing.assert_array_equal(scores.numpy(), GOLDENS[f"{case}/{name}/scores"])
    # and numpy in, numpy out, like the batched path
    keypoints_np, _ = codec.decode(heatmaps[:n_random].numpy())
    np.testing.assert_array_equal(keypoints_np, keypoints[:n_random].numpy())


def test_mmpose_decode_impl_reproduces_mmpose_bit_for_bit_on_the_goldens_platform():
    # decode_impl="mmpose" repeats MMPose's numpy / OpenCV operations, so on the CPU that wrote the goldens even
    # the ill-conditioned random maps agree: DARK to the bit, UDP to the float32 rounding of MMPose's float64
    # keypoints. Elsewhere numpy's and OpenCV's SIMD kernels may round differently (skipped).
    require_golden_platform()
    for case in CASES:
        heatmaps, _ = golden_heatmaps(case)
        for name in ("dark", "udp"):
            codec = dataclasses.replace(golden_codec(case, name), decode_impl="mmpose")
            keypoints, _ = codec.decode(heatmaps)
            assert_keypoints_close(keypoints.numpy(), GOLDENS[f"{case}/{name}/decoded"],
                                   atol=0 if name == "dark" else 2e-5)


def test_decode_impl_is_checked():
    with pytest.raises(ValueError, match="decode_impl must be 'batched'"):
        UDPHeatmap(decode_impl="numpy")
    with pytest.raises(ValueError, match="decode_impl must be 'batched'"):
        MSRAHeatmap(unbiased=True, decode_impl="exact")


@pytest.mark.parametrize("shift", [False, True])
def test_flip_heatmaps_equals_mmpose(shift):
    flipped = flip_heatmaps(torch.from_numpy(GOLDENS["flip/input"]), COCO17.flip_indices, shift_heatmap=shift)
    np.testing.assert_array_equal(flipped.numpy(), GOLDENS[f"flip/shift{int(shift)}"])


@pytest.mark.parametrize("impl", ["batched", "mmpose"])
@pytest.mark.parametrize("name", NAMES)
def test_flip_fused_decode_equals_mmpose(name, impl):
    heatmaps, n_random = golden_heatmaps("coco")
    plain = heatmaps[n_random:]
    codec = dataclasses.replace(golden_codec("coco", name), decode_impl=impl)
    back = flip_heatmaps(plain.flip(0).flip(-1), COCO17.flip_indices, codec.shift_heatmap_default)
    keypoints, scores = codec.decode((plain + back) * 0.5)
    reference = GOLDENS[f"flip/{name}/decoded"]
    if impl == "batched":  # a map with no positive value keeps MMPose's (-1, -1) mark (MMPose's UDP moves it)
        reference = np.where(scores.numpy()[..., None] > 0, reference, codec.to_input(-torch.ones(2)).numpy())
        # MMPose's keypoint where its step stays in the trust region; elsewhere within it of the argmax
        fused = (plain + back) * 0.5
        kept = codec.well_posed(fused).numpy()
        assert kept.mean() > 0.9
        locs = get_heatmap_maximum(fused)[0]
        assert (codec.to_heatmap(keypoints) - locs).abs().amax().item() <= NEWTON_TRUST_RADIUS + 1e-4
        keypoints, reference = keypoints[kept], reference[kept]
    assert_keypoints_close(keypoints.numpy(), reference, atol=1e-4)
    np.testing.assert_array_equal(scores.numpy(), GOLDENS[f"flip/{name}/scores"])


def test_heatmap_maximum_is_first_argmax_and_minus_one_where_max_is_not_positive():
    heatmaps = torch.zeros(1, 3, 4, 5)
    heatmaps[0, 0, 2, 3] = heatmaps[0, 0, 3, 1] = 0.5  # tie: row-major first wins
    heatmaps[0, 1] = -1.0
    locs, vals = get_heatmap_maximum(heatmaps)
    assert locs.tolist() == [[[3.0, 2.0], [-1.0, -1.0], [-1.0, -1.0]]]
    assert vals.tolist() == [[0.5, -1.0, 0.0]]


@pytest.mark.parametrize("sigma, kernel", [(2.0, 11), (3.0, 17)])
def test_dark_decodes_a_subpixel_gaussian_to_its_centre_within_1e3_heatmap_px(sigma, kernel):
    # Blurring a Gaussian gives a Gaussian, whose log is a quadratic: DARK's Newton step is exact
    # up to float32 rounding of the log-heatmap, for centres far enough from the border that
    # neither the heatmap edge nor the blur's zero padding cuts the peak.
    g = torch.Generator().manual_seed(0)
    margin = 3 * sigma + kernel // 2
    span = torch.tensor([48.0, 64.0], dtype=torch.float64) - 2 * margin
    centre = margin + torch.rand(3, 17, 2, generator=g, dtype=torch.float64) * span
    heatmaps, _ = continuous_gaussian_heatmaps(centre, torch.ones_like(centre[..., 0]), (48, 64), sigma)
    keypoints, _ = MSRAHeatmap(sigma=sigma, unbiased=True, blur_kernel_size=kernel).decode(heatmaps.float())
    assert (keypoints / 4 - centre).abs().max() < 1e-3


def test_udp_with_unbiased_decode_scale_round_trips_and_mmpose_scale_stretches_by_input_over_input_minus_1():
    g = torch.Generator().manual_seed(1)
    keypoints = 40 + torch.rand(4, 17, 2, generator=g) * torch.tensor([112.0, 176.0])
    heatmaps, weights = UDPHeatmap(decode_scale="unbiased").encode(keypoints, torch.ones(4, 17))
    assert (weights == 1).all()
    unbiased, _ = UDPHeatmap(decode_scale="unbiased").decode(heatmaps)
    assert (unbiased - keypoints).abs().max() < 1e-3
    mmpose, _ = UDPHeatmap().decode(heatmaps)
    torch.testing.assert_close(mmpose, unbiased * torch.tensor([192 / 191, 256 / 255]), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("codec, expected", [
    (MSRAHeatmap(input_size=(192, 256), heatmap_size=(48, 64)), (48 / 192, 64 / 256)),
    (MSRAHeatmap(input_size=(100, 70), heatmap_size=(27, 19)), (27 / 100, 19 / 70)),
    (UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64)), (47 / 191, 63 / 255)),
])
def test_heatmap_scale_is_heatmap_px_per_input_px_the_factor_to_heatmap_applies(codec, expected):
    scale = codec.heatmap_scale
    assert scale.dtype == torch.float32 and scale.shape == (2,)
    torch.testing.assert_close(scale, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=0)
    keypoints = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [37.5, 80.25]]])
    torch.testing.assert_close(codec.to_heatmap(keypoints), keypoints * scale, rtol=1e-6, atol=1e-6)
    assert torch.equal(scale, codec.to_heatmap(torch.ones(2)))  # the same float32 numbers, to the bit


def test_invisible_and_off_map_keypoints_get_an_empty_map_and_the_documented_weight():
    keypoints = torch.tensor([[[96.0, 128.0], [96.0, 128.0], [-40.0, 128.0], [96.0, 300.0]]])
    visible = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    for codec in (MSRAHeatmap(), MSRAHeatmap(unbiased=True), UDPHeatmap()):
        heatmaps, weights = codec.encode(keypoints, visible)
        assert weights.tolist() == [[1.0, 0.0, 0.0, 0.0]]
        assert heatmaps[0, 0].max() > 0.9 and (heatmaps[0, 1:] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_batched_decode_equals_per_instance_decode(name):
    # the batch only changes the shapes of the blur's matrix products: an instance's keypoints stay the same
    # (MSRA: no rounding, the same bits) or, where the decode is well-posed (`well_posed`), within float rounding
    heatmaps, _ = golden_heatmaps("coco")
    codec = golden_codec("coco", name)
    batched, batched_scores = codec.decode(heatmaps)
    single = [codec.decode(heatmaps[i : i + 1]) for i in range(len(heatmaps))]
    single_keypoints = torch.cat([s[0] for s in single]).numpy()
    np.testing.assert_array_equal(np.isnan(batched.numpy()), np.isnan(single_keypoints))
    mask = well_posed("coco", name)
    assert_keypoints_close(batched.numpy()[mask], single_keypoints[mask], atol=0 if name == "msra" else 1e-3)
    torch.testing.assert_close(batched_scores, torch.cat([s[1] for s in single]), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_float64_and_float32_inputs_agree(name):
    case, n_random = "coco", int(GOLDENS["coco/config"][-1])
    codec = golden_codec(case, name)
    hm32 = GOLDENS[f"{case}/heatmaps"][n_random:].astype(np.float32)
    kp32, _ = codec.decode(torch.from_numpy(hm32))
    kp_np, scores_np = codec.decode(hm32)
    assert isinstance(kp_np, np.ndarray) and isinstance(scores_np, np.ndarray)
    np.testing.assert_array_equal(kp_np, kp32.numpy())
    kp64, _ = codec.decode(torch.from_numpy(hm32.astype(np.float64)))
    assert kp64.dtype == torch.float64
    assert_keypoints_close(kp64.numpy(), kp32.numpy(), atol=1e-3)

    keypoints, visible = GOLDENS[f"{case}/keypoints"], GOLDENS[f"{case}/visible"]
    enc_np, w_np = codec.encode(keypoints, visible)
    enc64, w64 = codec.encode(torch.from_numpy(keypoints.astype(np.float64)), torch.from_numpy(visible))
    assert isinstance(enc_np, np.ndarray) and enc_np.dtype == np.float32 and enc64.dtype == torch.float32
    np.testing.assert_allclose(enc_np, GOLDENS[f"{case}/{name}/encoded"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(enc64.numpy(), enc_np, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(w_np, w64.numpy())
    labelled = visible >= 0.5
    np.testing.assert_array_equal(codec.encode(keypoints, labelled)[0],
                                  codec.encode(keypoints, labelled.astype(np.float32))[0])


def test_codec_flags_follow_mmpose_flip_test_configs():
    assert (MSRAHeatmap.udp, MSRAHeatmap.shift_heatmap_default) == (False, True)
    assert (UDPHeatmap.udp, UDPHeatmap.shift_heatmap_default) == (True, False)


def test_build_codec_from_an_mmpose_style_config():
    codec = build_codec(dict(type="MSRAHeatmap", input_size=[288, 384], heatmap_size=[72, 96], sigma=3,
                             unbiased=True, blur_kernel_size=17))
    assert codec == MSRAHeatmap((288, 384), (72, 96), 3, True, 17)
    assert set(CODECS) == {"MSRAHeatmap", "UDPHeatmap", "SimCCLabel"}  # SimCC: tests/test_rtmpose.py
    with pytest.raises(ValueError, match=r"unknown codec type 'RegressionLabel'.*MSRAHeatmap.*UDPHeatmap"):
        build_codec(dict(type="RegressionLabel"))
    with pytest.raises(ValueError, match="did you mean 'sigma'"):
        build_codec(dict(type="UDPHeatmap", sigm=2.0))


@pytest.mark.parametrize("sigma", [0.5, 0.6, 0.75, 1.0, 1.1, 1.25, 1.75, 2.0, 2.25])
def test_udp_warns_exactly_for_the_sigmas_whose_patch_mmpose_centres_off_the_keypoint(sigma):
    """MMPose's UDP encoder puts the Gaussian's peak 1 px off when 3*sigma has a fraction in (0, 0.5);
    the codec warns for exactly those sigmas (checked here against where the peak actually lands)."""
    import warnings as w

    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        codec = UDPHeatmap(input_size=(96, 128), heatmap_size=(24, 32), sigma=sigma)
    warned = any("centres the Gaussian" in str(c.message) for c in caught)
    kps = torch.tensor([[[40.3, 70.6], [50.9, 60.1], [33.5, 80.45]]])
    hm, _ = codec.encode(kps, torch.ones(1, 3))
    peak = torch.stack([hm[0].flatten(1).argmax(-1) % 24, hm[0].flatten(1).argmax(-1) // 24], -1).float()
    expected = kps[0] * torch.tensor([23 / 95, 31 / 127])
    off = (peak - expected).abs().amax() > 0.75
    assert warned == bool(off)
