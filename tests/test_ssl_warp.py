"""sagepose.ssl.views and sagepose.ssl.warp: view affines, image warps and the heatmap warp, checked analytically,
against OpenCV's warpAffine and numpy's matrix inverse, and against warping the image itself."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sagepose.config import SSLConfig
from sagepose.data.batch_aug import sample_keys
from sagepose.geometry import (
    apply_affine_torch,
    compose_affine_torch,
    invert_affine_torch,
    relative_affine_torch,
    rescale_affine_torch,
)
from sagepose.keypoints import COCO17
from sagepose.ssl.views import (
    ViewParams,
    ViewSpec,
    make_views,
    sample_view_affines,
    strong_view,
    warp_images,
    weak_view,
)
from sagepose.ssl.warp import warp_heatmaps

WEAK, STRONG = weak_view(SSLConfig().weak), strong_view(SSLConfig().strong)  # the config's default views

W, H = 192, 256  # input crop (W, H)
MSRA_SCALE = (48 / 192, 64 / 256)  # MSRAHeatmap.to_heatmap: input / 4
UDP_SCALE = (47 / 191, 63 / 255)  # UDPHeatmap.to_heatmap: (hm - 1) / (input - 1)
FLIP4 = [0, 2, 1, 3]  # mouse: nose, left ear, right ear, tail


def _keys(b: int, seed: int = 0) -> torch.Tensor:
    return sample_keys(seed, 0, torch.arange(b))


def _affine(angle_deg: float, zoom: float, shift=(0.0, 0.0), flip: bool = False, size=(W, H)) -> np.ndarray:
    """Independent construction: about the centre, in float64 with 3x3 matrices."""
    w, h = size
    c = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])
    a = math.radians(angle_deg)
    r = np.array([[zoom * math.cos(a), -zoom * math.sin(a), 0], [zoom * math.sin(a), zoom * math.cos(a), 0], [0, 0, 1]])
    t = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1.0]])
    m = t @ c @ r @ np.linalg.inv(c)
    if flip:
        m = np.array([[-1, 0, w - 1.0], [0, 1, 0], [0, 0, 1]]) @ m
    return m[:2]


def _gaussians(centres: np.ndarray, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """centres (B, K, 2) (x, y) -> (B, K, h, w) peak-1 Gaussians, float64 -> float32."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    d2 = (xs[None, None] - centres[..., 0, None, None]) ** 2 + (ys[None, None] - centres[..., 1, None, None]) ** 2
    return torch.from_numpy(np.exp(-d2 / (2 * sigma**2))).float()


def _centroid(maps: torch.Tensor) -> np.ndarray:
    m = maps.double().numpy()
    h, w = m.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w]
    mass = m.sum((-2, -1))
    return np.stack([(m * xs).sum((-2, -1)) / mass, (m * ys).sum((-2, -1)) / mass], -1)


def _np_apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


# ----------------------------------------------------------------------------- affines


def test_view_affines_are_per_sample_deterministic_and_streams_independent():
    keys = _keys(8)
    a, f, z = sample_view_affines(keys, (W, H), STRONG.geometry, 2)
    a2, f2, z2 = sample_view_affines(keys[3:], (W, H), STRONG.geometry, 2)  # another batch split
    assert torch.equal(a[3:], a2) and torch.equal(f[3:], f2) and torch.equal(z[3:], z2)
    b, _, _ = sample_view_affines(keys, (W, H), STRONG.geometry, 3)
    assert (a - b).abs().amax(dim=(1, 2)).min() > 1e-3  # every sample's view differs between streams
    assert a.dtype == torch.float32 and a.shape == (8, 2, 3) and f.dtype == torch.bool


def test_view_affines_stay_within_their_parameters():
    keys = _keys(400)
    a, flipped, zoom = sample_view_affines(keys, (W, H), STRONG.geometry, 2)
    m = a[:, :, :2].double()
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    torch.testing.assert_close(det.abs().sqrt(), zoom.double(), atol=1e-5, rtol=0)
    assert torch.equal(det < 0, flipped)
    assert zoom.min() >= 0.75 and zoom.max() <= 1.25
    frac = flipped.float().mean().item()
    assert 0.4 < frac < 0.6  # flip_prob 0.5 over 400 draws
    # unflip, then the rotation angle is atan2(m10, m00) and the centre moves by the shift only
    unflip = torch.where(flipped[:, None], torch.tensor([-1.0, 1.0], dtype=torch.float64), torch.ones(2).double())
    angle = torch.atan2(m[:, 1, 0], m[:, 0, 0] * unflip[:, 0])
    assert angle.abs().max() <= math.radians(30) + 1e-5 and angle.abs().max() > math.radians(25)
    centre = torch.tensor([[(W - 1) / 2, (H - 1) / 2]])
    moved = apply_affine_torch(centre.expand(400, 2)[:, None], a)[:, 0].double()
    moved[:, 0] = torch.where(flipped, W - 1 - moved[:, 0], moved[:, 0])
    shift = moved - centre.double()
    assert shift[:, 0].abs().max() <= 0.1 * W + 1e-3 and shift[:, 1].abs().max() <= 0.1 * H + 1e-3
    _, weak_flip, weak_zoom = sample_view_affines(keys, (W, H), WEAK.geometry, 0)
    assert not weak_flip.any() and weak_zoom.min() >= 0.9 and weak_zoom.max() <= 1.1


def test_sampled_affine_equals_an_independent_construction():
    params = ViewParams(rotate=0.0, scale=(1.3, 1.3), shift=0.0, flip_prob=1.0)
    a, _, _ = sample_view_affines(_keys(2), (W, H), params, 0)
    np.testing.assert_allclose(a[0].numpy(), _affine(0.0, 1.3, flip=True), atol=1e-4)


def test_invert_compose_and_relative_affine_against_numpy():
    rng = np.random.default_rng(0)
    mats = np.stack([_affine(rng.uniform(-40, 40), rng.uniform(0.6, 1.4), rng.uniform(-20, 20, 2), rng.random() < 0.5)
                     for _ in range(6)])
    a = torch.from_numpy(mats).float()
    full = np.concatenate([mats, np.broadcast_to([[[0, 0, 1.0]]], (6, 1, 3))], 1)
    np.testing.assert_allclose(invert_affine_torch(a).numpy(), np.linalg.inv(full)[:, :2], atol=1e-4)
    np.testing.assert_allclose(compose_affine_torch(a, a.flip(0)).numpy(), (full @ full[::-1])[:, :2], rtol=1e-5,
                               atol=1e-3)
    rel = relative_affine_torch(a, a.flip(0))  # view i -> view 5 - i
    pts = torch.from_numpy(rng.uniform(0, 190, (6, 5, 2))).float()
    torch.testing.assert_close(apply_affine_torch(apply_affine_torch(pts, a), rel), apply_affine_torch(pts, a.flip(0)),
                               atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- images


def test_warp_images_matches_opencv_warp_affine():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 2.0)
    mats = [_affine(17.0, 1.2, (5.0, -8.0)), _affine(-25.0, 0.8, (-3.0, 4.0), flip=True)]
    out = warp_images(torch.from_numpy(img)[None].expand(2, H, W, 3), torch.from_numpy(np.stack(mats)).float())
    assert out.dtype == torch.float32 and out.shape == (2, H, W, 3)
    for i, m in enumerate(mats):
        ref = cv2.warpAffine(img, m.astype(np.float32), (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        ys, xs = np.mgrid[0:H, 0:W]
        src = _np_apply(inv, np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)).reshape(H, W, 2)
        inside = (src[..., 0] > 1) & (src[..., 0] < W - 2) & (src[..., 1] > 1) & (src[..., 1] < H - 2)
        assert inside.mean() > 0.5
        np.testing.assert_allclose(out[i].numpy()[inside], ref[inside], atol=0.05)  # cv2: 1/32-px weights


def test_make_views_identity_params_keep_the_crop_and_photometric_is_per_view():
    crops = torch.randint(0, 256, (3, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    keys = _keys(3)
    ident = ViewParams(rotate=0.0, scale=(1.0, 1.0), shift=0.0, flip_prob=0.0)
    plain = make_views(crops, keys, ViewSpec(ident), 0)
    torch.testing.assert_close(plain.images, crops.float(), atol=0.02, rtol=0)  # grid rounding ~3e-5 px x 255 per px
    assert torch.equal(plain.zoom, torch.ones(3)) and not plain.flipped.any()
    jitter = ViewSpec(ident, photometric=STRONG.photometric)
    v1 = make_views(crops, keys, jitter, 0).images
    v2 = make_views(crops, keys, jitter, 1).images
    v1b = make_views(crops[1:], keys[1:], jitter, 0).images
    torch.testing.assert_close(v1[1:], v1b)
    assert not torch.equal(v1, v2)


# ----------------------------------------------------------------------------- heatmaps


CASES = [  # (rotation deg, zoom, shift input px, flip)
    (0.0, 1.0, (12.0, -7.0), False),
    (25.0, 1.0, (0.0, 0.0), False),
    (-30.0, 1.2, (6.0, 10.0), False),
    (10.0, 0.8, (-9.0, 3.0), False),
    (0.0, 1.0, (0.0, 0.0), True),
    (-20.0, 1.15, (4.0, -6.0), True),
]


@pytest.mark.parametrize("k, flip_indices", [(4, FLIP4), (17, COCO17.flip_indices)])
@pytest.mark.parametrize("hm_scale", [MSRA_SCALE, UDP_SCALE], ids=["msra", "udp"])
def test_gaussian_peak_warps_to_the_mapped_point(k, flip_indices, hm_scale):
    hw = (48, 64)
    rng = np.random.default_rng(k)
    b = len(CASES)
    centres = rng.uniform([17, 22], [31, 42], (b, k, 2))  # heatmap px, well inside every case's view
    maps = _gaussians(centres, hw, sigma=2.0)
    mats = np.stack([_affine(*c) for c in CASES])
    flipped = torch.tensor([c[3] for c in CASES])
    out = warp_heatmaps(maps, torch.from_numpy(mats).float(), flipped, flip_indices, hm_scale)
    assert out.shape == (b, k, 64, 48) and out.dtype == torch.float32
    s = np.diag([*hm_scale, 1.0])
    expected = np.empty_like(centres)
    for i, m in enumerate(mats):  # heatmap-frame map: S A S^-1
        m_hm = (s @ np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(s))[:2]
        dest = _np_apply(m_hm, centres[i])
        expected[i] = dest[np.argsort(flip_indices)] if CASES[i][3] else dest  # channel fi[k] holds joint k
    np.testing.assert_allclose(_centroid(out), expected, atol=0.03)


def test_flip_swaps_pair_channels_and_mirrors_exactly_on_udp_maps():
    maps = torch.rand(2, 17, 64, 48, generator=torch.Generator().manual_seed(0))
    mirror = torch.from_numpy(np.stack([_affine(0, 1, flip=True)] * 2)).float()
    out = warp_heatmaps(maps, mirror, torch.tensor([True, False]), COCO17.flip_indices, UDP_SCALE)
    fi = COCO17.flip_indices
    torch.testing.assert_close(out[0, fi], maps[0].flip(-1), atol=1e-4, rtol=0)  # left ear -> right ear channel
    torch.testing.assert_close(out[1], maps[1].flip(-1), atol=1e-4, rtol=0)  # not flipped: channels stay
    assert fi[1] == 2 and torch.equal(out[0, 2], out[0, fi[1]])


def test_mass_preserving_warp_keeps_probability_under_zoom():
    centres = np.array([[[24.0, 32.0]]] * 3)
    p = _gaussians(centres, (48, 64), sigma=2.5)
    p = p / p.sum(dim=(2, 3), keepdim=True)
    mats = torch.from_numpy(np.stack([_affine(0, z) for z in (0.75, 1.0, 1.25)])).float()
    out = warp_heatmaps(p, mats, torch.zeros(3, dtype=torch.bool), [0], MSRA_SCALE, mass_preserving=True)
    np.testing.assert_allclose(out.sum(dim=(1, 2, 3)).numpy(), 1.0, atol=2e-3)
    plain = warp_heatmaps(p, mats, torch.zeros(3, dtype=torch.bool), [0], MSRA_SCALE)
    np.testing.assert_allclose(plain.sum(dim=(1, 2, 3)).numpy(), [0.75**2, 1.0, 1.25**2], rtol=3e-3)


def test_inverse_and_warp_stay_float32_under_bf16_autocast():
    mats = torch.from_numpy(np.stack([_affine(*c) for c in CASES])).float()
    maps = torch.rand(len(CASES), 4, 64, 48, generator=torch.Generator().manual_seed(2))
    flipped = torch.tensor([c[3] for c in CASES])
    ref = warp_heatmaps(maps, mats, flipped, FLIP4, MSRA_SCALE)
    ref_inv = invert_affine_torch(mats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inv = invert_affine_torch(mats)
        rel = relative_affine_torch(mats, mats.flip(0))
        out = warp_heatmaps(maps.bfloat16(), mats, flipped, FLIP4, MSRA_SCALE)
        out32 = warp_heatmaps(maps, mats, flipped, FLIP4, MSRA_SCALE)
        imgs = warp_images(torch.zeros(1, H, W, 3, dtype=torch.uint8), mats[:1])
    assert inv.dtype == rel.dtype == out.dtype == out32.dtype == imgs.dtype == torch.float32
    assert torch.equal(inv, ref_inv) and torch.equal(out32, ref)
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=0)  # only the bf16 rounding of the maps themselves


def test_rescaled_affine_is_the_input_affine_seen_at_heatmap_resolution():
    a = torch.from_numpy(_affine(33.0, 0.9, (7.0, -4.0))[None]).float()
    pts = torch.tensor([[[10.0, 20.0], [150.0, 230.0]]])
    s = torch.tensor(UDP_SCALE)
    torch.testing.assert_close(apply_affine_torch(pts * s, rescale_affine_torch(a, UDP_SCALE)),
                               apply_affine_torch(pts, a) * s, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- warping heatmaps = warping the image


def _blob_image(k: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(1, H, W, k) base crop: channel j holds one Gaussian blob (sigma 20 input px, 5 heatmap px) near the centre."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([70, 95], [122, 161], (1, k, 2))
    return _gaussians(centres, (W, H), sigma=20.0).permute(0, 2, 3, 1).contiguous(), centres


def _model(views: torch.Tensor, flipped: torch.Tensor, flip_indices, hm_scale) -> torch.Tensor:
    """A fixed differentiable 'pose model' on (B, H, W, K) views -> (B, K, h, w) heatmaps in the codec's frame:
    the view sampled at the input pixel of each heatmap pixel (x_in = x_hm / s), the channels of a mirrored view
    relabelled (its channel k shows the blob of joint flip_indices[k])."""
    x = views.permute(0, 3, 1, 2)
    if hm_scale == MSRA_SCALE:
        hm = x[:, :, ::4, ::4]  # heatmap px i <-> input px 4 i
    else:
        hm = F.interpolate(x, size=(64, 48), mode="bilinear", align_corners=True)  # i <-> i (W-1)/(w-1)
    return torch.where(flipped.view(-1, 1, 1, 1), hm[:, flip_indices], hm)


@pytest.mark.parametrize("k, flip_indices", [(4, FLIP4), (17, COCO17.flip_indices)])
@pytest.mark.parametrize("hm_scale", [MSRA_SCALE, UDP_SCALE], ids=["msra", "udp"])
def test_warped_teacher_heatmaps_equal_the_student_views_own(k, flip_indices, hm_scale):
    b = 6
    base, _ = _blob_image(k, seed=k)
    base = base.expand(b, H, W, k)
    keys = _keys(b, seed=3)
    a_t, f_t, _ = sample_view_affines(keys, (W, H), WEAK.geometry, 0)
    a_s, f_s, _ = sample_view_affines(keys, (W, H), STRONG.geometry, 2)
    force = (torch.arange(b) < 2) & ~f_s  # at least two mirrored students
    mirror = torch.tensor([[[-1.0, 0.0, W - 1.0], [0.0, 1.0, 0.0]]]).expand(b, 2, 3)
    a_s = torch.where(force.view(-1, 1, 1), compose_affine_torch(mirror, a_s), a_s)
    f_s = f_s | force
    teacher = _model(warp_images(base, a_t), f_t, flip_indices, hm_scale)
    student = _model(warp_images(base, a_s), f_s, flip_indices, hm_scale)
    warped = warp_heatmaps(teacher, relative_affine_torch(a_t, a_s), f_s ^ f_t, flip_indices, hm_scale)
    # compare where the student's heatmap pixel comes from inside both the base crop and the teacher view
    s = torch.tensor(hm_scale)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    q = (torch.stack([xs, ys], -1).reshape(1, -1, 2) / s).expand(b, -1, 2)  # student input px
    in_base = apply_affine_torch(q, invert_affine_torch(a_s))
    in_teacher = apply_affine_torch(in_base, a_t)

    def inside(p):
        return (p[..., 0] > 2) & (p[..., 0] < W - 3) & (p[..., 1] > 2) & (p[..., 1] < H - 3)

    ok = (inside(in_base) & inside(in_teacher)).view(b, 1, 64, 48).expand_as(student)
    assert ok.float().mean() > 0.4 and f_s.sum() >= 2
    err = (warped - student).abs()[ok]
    # what is left is bilinear resampling of peak-1 Gaussians, ~1 / (4 sigma^2) = 0.012 at the teacher's smallest
    # sigma (5 hm px x zoom 0.9); a half-pixel misregistration would add ~0.5 / (sigma sqrt(e)) = 0.06
    assert err.max() < 0.015, err.max()
    assert student.amax() > 0.9

