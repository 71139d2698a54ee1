"""sagepose.ssl.losses and sagepose.ssl.priors: hand-computed values (numpy, float64), invariances, edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sagepose.keypoints import COCO17
from sagepose.ssl.losses import (
    KeypointMask,
    consistency_loss,
    log_probabilities,
    rampup,
    renormalize,
    soft_argmax,
    teacher_target,
    temporal_loss,
    to_probabilities,
)
from sagepose.ssl.priors import StructuralPriors


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


# ----------------------------------------------------------------------------- probabilities


def test_logit_and_heatmap_probabilities_equal_hand_computations():
    logits = torch.randn(2, 3, 4, 5, generator=_gen(0)) * 3
    p = to_probabilities(logits, 0.5, "logits")
    ref = np.stack([_np_softmax(m.ravel() / 0.5) for m in logits.double().numpy().reshape(6, 20)]).reshape(p.shape)
    np.testing.assert_allclose(p.numpy(), ref, atol=1e-6)
    hm = torch.rand(2, 3, 4, 5, generator=_gen(1)) * 1.2 - 0.2  # some negative values
    q = to_probabilities(hm, 0.5, "heatmap")
    pw = np.clip(hm.double().numpy(), 0, None) ** 2
    np.testing.assert_allclose(q.numpy(), pw / pw.sum((2, 3), keepdims=True), atol=1e-6)
    zero = to_probabilities(torch.zeros(1, 1, 4, 5), 0.5, "heatmap")
    np.testing.assert_allclose(zero.numpy(), 1 / 20, atol=1e-7)  # an empty map: uniform
    torch.testing.assert_close(log_probabilities(logits, 0.5).exp(), p)
    torch.testing.assert_close(log_probabilities(hm, 0.5, "heatmap").exp(), q, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="map kind"):
        to_probabilities(hm, 0.5, "softmax")


def test_log_probabilities_stay_finite_for_extreme_logits():
    x = torch.tensor([[[[1e4, -1e4], [0.0, 3e3]]]], requires_grad=True)
    lp = log_probabilities(x, 0.1)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(x.grad).all()


def test_renormalize_returns_unit_maps_and_the_kept_mass():
    p = torch.zeros(1, 2, 3, 3)
    p[0, 0, 1, 1], p[0, 0, 0, 2] = 0.3, 0.1
    probs, mass = renormalize(p)
    torch.testing.assert_close(mass, torch.tensor([[0.4, 0.0]]))
    torch.testing.assert_close(probs[0, 0, 1, 1], torch.tensor(0.75))
    assert probs[0, 1].abs().sum() == 0  # nothing left: stays zero (the caller masks it)


def test_teacher_target_weights_views_by_confidence_and_sharpens():
    a = torch.tensor([0.7, 0.1, 0.1, 0.1]).view(1, 1, 2, 2)
    b = torch.tensor([0.25, 0.25, 0.25, 0.25]).view(1, 1, 2, 2)
    p, conf = teacher_target(a, b, confidence_tau=0.5)
    w = _np_softmax(np.array([0.7, 0.25]) / 0.5)
    ref = w[0] * a.double().numpy() + w[1] * b.double().numpy()
    np.testing.assert_allclose(p.numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(conf.numpy(), ref.max(), atol=1e-6)
    s, sconf = teacher_target(a, b, confidence_tau=0.5, spatial_tau=0.5)
    sharp = ref**2 / (ref**2).sum()
    np.testing.assert_allclose(s.numpy(), sharp, atol=1e-6)
    np.testing.assert_allclose(sconf.numpy(), sharp.max(), atol=1e-6)
    one, one_conf = teacher_target(a)
    assert torch.equal(one, a) and one_conf.item() == pytest.approx(0.7)


# ----------------------------------------------------------------------------- consistency


def _kl(p, q):
    p, q = p.ravel(), q.ravel()
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def test_kl_js_and_mse_equal_hand_computations_on_a_small_map():
    student = torch.tensor([[[[0.5, -1.0, 2.0], [0.0, 1.0, -0.5]]]])  # (1, 1, 2, 3) logits
    teacher = torch.tensor([[[[0.1, 0.0, 0.6], [0.05, 0.2, 0.05]]]])
    mask = torch.ones(1, 1)
    q = _np_softmax(student.double().numpy().ravel() / 0.5)
    p = teacher.double().numpy().ravel()
    m = (p + q) / 2
    kl, _ = consistency_loss(student, teacher, mask, kind="kl", tau=0.5)
    js, _ = consistency_loss(student, teacher, mask, kind="js", tau=0.5)
    mse, _ = consistency_loss(student, teacher, mask, kind="mse", tau=0.5)
    assert kl.item() == pytest.approx(_kl(p, q), abs=1e-6)
    assert js.item() == pytest.approx(0.5 * _kl(p, m) + 0.5 * _kl(q, m), abs=1e-6)
    assert mse.item() == pytest.approx(((q - p) ** 2).mean() * 6, abs=1e-7)


@pytest.mark.parametrize("kind", ["kl", "js", "mse"])
def test_consistency_is_never_negative_and_zero_for_identical_distributions(kind):
    g = _gen(3)
    for dtype in (torch.float32, torch.bfloat16):
        for trial in range(20):
            student = (torch.randn(4, 5, 8, 6, generator=g) * (1 + 10 * trial)).to(dtype)
            teacher = torch.softmax(torch.randn(4, 5, 48, generator=g) * 20, -1).view(4, 5, 8, 6)
            teacher = renormalize(teacher * (torch.rand(4, 5, 8, 6, generator=g) > 0.5))[0]  # zeros, as after a warp
            mask = (torch.rand(4, 5, generator=g) > 0.3).float()
            loss, logs = consistency_loss(student, teacher.to(dtype), mask, kind=kind)
            assert loss.item() >= 0 and torch.isfinite(loss)
        same = to_probabilities(student, 0.5, "logits")
        loss, _ = consistency_loss(student, same, torch.ones(4, 5), kind=kind)
        assert abs(loss.item()) < 1e-6


def test_consistency_is_normalised_by_the_mask_and_zero_mask_gives_zero_with_a_graph():
    student = torch.randn(2, 3, 4, 4, generator=_gen(4), requires_grad=True)
    teacher = torch.softmax(torch.randn(2, 3, 16, generator=_gen(5)), -1).view(2, 3, 4, 4)
    full, _ = consistency_loss(student, teacher, torch.ones(2, 3), kind="kl")
    one = torch.zeros(2, 3)
    one[1, 2] = 1.0
    single, logs = consistency_loss(student, teacher, one, kind="kl")
    ref = consistency_loss(student[1:, 2:], teacher[1:, 2:], torch.ones(1, 1), kind="kl")[0]
    assert single.item() == pytest.approx(ref.item(), rel=1e-6)  # not diluted by the 5 masked joints
    assert logs["kept"].item() == pytest.approx(1 / 6) and full.item() > 0
    zero, _ = consistency_loss(student, teacher, torch.zeros(2, 3), kind="js")
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


# ----------------------------------------------------------------------------- mask


def test_mask_statistics_equal_the_weighted_mixture_by_hand():
    m = KeypointMask(2, momentum=0.9, warmup_iters=0)
    x1 = torch.tensor([[0.2, 0.9], [0.4, 0.7], [0.6, 0.8]])
    x2 = torch.tensor([[0.9, 0.1], [0.5, 0.3]])
    m.update(x1)
    np.testing.assert_allclose(m.mean.numpy(), x1.numpy().mean(0), atol=1e-6)
    np.testing.assert_allclose(m.var.numpy(), x1.numpy().var(0), atol=1e-6)
    m.update(x2)
    # the mixture: old statistics weigh 0.9 (spread over x1's rows), the new batch 0.1
    x = np.concatenate([x1.numpy(), x2.numpy()]).astype(np.float64)
    w = np.array([0.9 / 3] * 3 + [0.1 / 2] * 2)
    mu = np.average(x, axis=0, weights=w)
    np.testing.assert_allclose(m.mean.numpy(), mu, atol=1e-6)
    np.testing.assert_allclose(m.var.numpy(), np.average((x - mu) ** 2, axis=0, weights=w), atol=1e-6)
    np.testing.assert_allclose(m.thresholds().numpy(), m.mean.numpy() - 2 * np.sqrt(m.var.numpy()), atol=1e-6)


def test_mask_is_all_ones_during_warmup_then_thresholds():
    m = KeypointMask(4, beta=0.5, warmup_iters=10, min_keep_ratio=0.25)
    conf = torch.tensor([[0.9, 0.95, 0.1, 0.9], [0.8, 0.85, 0.9, 0.2]] * 4)
    assert torch.equal(m(conf, step=9), torch.ones(8, 4))
    mask = m(conf, step=10)  # the same batch twice: the statistics are its mean and std
    c = conf.double().numpy()
    thr = c.mean(0) - 0.5 * c.std(0)  # [0.825, 0.875, 0.3, 0.375]
    assert np.array_equal(mask.numpy(), (c >= thr).astype(np.float32))
    assert mask[:2].tolist() == [[1, 1, 0, 1], [0, 0, 1, 0]]


def test_mask_keeps_a_minimum_per_sample():
    m = KeypointMask(10, warmup_iters=0, min_keep_ratio=0.3)
    good = torch.full((7, 10), 0.9)
    m(good, step=0)  # statistics of confident samples
    bad = torch.linspace(0.01, 0.1, 10).expand(2, 10).contiguous()
    mask = m(bad, step=1, stats_conf=good)  # statistics from the gathered batch, the mask for this one
    assert torch.equal(mask.sum(1), torch.tensor([3.0, 3.0]))  # ceil(0.3 * 10)
    assert torch.equal(mask[:, 7:], torch.ones(2, 3))  # the three most confident


def test_mask_fallbacks_make_it_never_all_ones_nor_all_zeros():
    m = KeypointMask(17, warmup_iters=0)
    m(torch.full((8, 17), 0.5), step=0)
    confident = torch.rand(8, 17, generator=_gen(6)) * 0.1 + 0.9  # all pass the threshold
    mask = m(confident, step=1)
    assert 0 < mask.mean() < 1 and (mask.sum(1) >= 6).all()
    dropped = confident[mask == 0]
    assert dropped.max() <= confident[mask == 1].max()
    no_min = KeypointMask(17, warmup_iters=0, min_keep_ratio=0.0)
    no_min(torch.full((8, 17), 0.9), step=0)
    hopeless = torch.rand(8, 17, generator=_gen(7)) * 0.1  # none passes
    kept = no_min(hopeless, step=1)
    assert kept.sum() == int(0.1 * 8 * 17) and kept[kept > 0].numel() > 0
    assert hopeless[kept > 0].min() >= hopeless[kept == 0].max()  # the most confident tenth
    g = _gen(8)
    for step in range(50):
        c = torch.rand(4, 17, generator=g) ** (1 + step % 5)
        mk = m(c, step=step + 2)
        assert 0 < mk.mean() < 1


def test_mask_statistics_are_in_the_state_dict():
    m = KeypointMask(3)
    m(torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.5, 0.7]]), step=0)
    fresh = KeypointMask(3)
    fresh.load_state_dict(m.state_dict())
    assert set(m.state_dict()) == {"mean", "var", "initialized"}
    assert torch.equal(fresh.mean, m.mean) and torch.equal(fresh.var, m.var) and bool(fresh.initialized)


# ----------------------------------------------------------------------------- coordinates, temporal, ramp


def test_soft_argmax_finds_deltas_and_gaussian_centres():
    p = torch.zeros(1, 2, 16, 12)
    p[0, 0, 5, 2] = 1.0
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    p[0, 1] = torch.exp(-((xs - 5.3) ** 2 + (ys - 7.6) ** 2) / 2) * 3  # unnormalised, far from the borders
    c = soft_argmax(p)
    torch.testing.assert_close(c[0, 0], torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(c[0, 1], torch.tensor([5.3, 7.6]), atol=1e-4, rtol=0)


def test_temporal_loss_is_epsilon_insensitive():
    a = torch.zeros(1, 3, 2, requires_grad=True)
    b = torch.tensor([[[3.0, 4.0], [0.0, 6.0], [0.0, 0.0]]])  # motions 5, 6, 0
    loss, logs = temporal_loss(a, b, torch.ones(1, 3), eps=4.0)
    assert loss.item() == pytest.approx((1 + 2 + 0) / 3, abs=1e-5)
    assert logs["motion"].item() == pytest.approx(11 / 3, abs=1e-5)
    loss.backward()
    assert torch.isfinite(a.grad).all() and a.grad[0, 2].abs().sum() == 0  # zero motion: no NaN
    masked, _ = temporal_loss(a, b, torch.tensor([[0.0, 1.0, 0.0]]), eps=4.0)
    assert masked.item() == pytest.approx(2.0, abs=1e-5)


def test_rampup_shape():
    assert rampup(0, 100) == 0.0 and rampup(100, 100) == 1.0 and rampup(500, 100) == 1.0 and rampup(3, 0) == 1.0
    assert rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    vals = [rampup(s, 100) for s in range(0, 120, 5)]
    assert vals == sorted(vals)


# ----------------------------------------------------------------------------- structural priors

MOUSE_SKELETON = ((0, 1), (1, 2), (2, 3))  # nose - ear - ear - tail, a chain
MOUSE = np.array([[0.0, 0.0], [30.0, 8.0], [34.0, -8.0], [110.0, 0.0]])
COCO_TEMPLATE = np.array([  # a standing person, crop px (x, y)
    [96, 40], [101, 35], [91, 35], [108, 38], [84, 38], [116, 70], [76, 70], [124, 105], [68, 105],
    [128, 138], [64, 138], [110, 140], [82, 140], [112, 190], [80, 190], [114, 238], [78, 238]], np.float64)


def _random_poses(template: np.ndarray, n: int, seed: int, noise: float = 3.0):
    """n poses: template + noise, then a random rotation, zoom and shift; scale = the crop diagonal, zoomed."""
    rng = np.random.default_rng(seed)
    out, scale = [], []
    for _ in range(n):
        p = template + rng.normal(0, noise, template.shape)
        a, z = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 2.0)
        r = z * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(p @ r.T + rng.uniform(-50, 50, 2))
        scale.append(z * 320.0)
    return np.stack(out), np.array(scale)


def _losses(priors, coords, scale, weights=None):
    coords = torch.as_tensor(coords, dtype=torch.float32)
    weights = torch.ones(coords.shape[:2]) if weights is None else weights
    scale = torch.as_tensor(scale, dtype=torch.float32)
    return [f(coords, scale, weights)[0] for f in (priors.topology_loss, priors.bone_loss, priors.angle_loss)]


@pytest.mark.parametrize("template, skeleton", [(MOUSE, MOUSE_SKELETON), (COCO_TEMPLATE, COCO17.skeleton)],
                         ids=["mouse4", "coco17"])
def test_priors_are_zero_on_the_labeled_poses_and_invariant(template, skeleton):
    k = len(template)
    poses, scale = _random_poses(template, 60, seed=k)
    priors = StructuralPriors.from_labeled(poses, np.ones((60, k)), scale, skeleton, k, quantiles=(0.0, 1.0))
    assert not priors.is_empty
    assert all(loss.item() == pytest.approx(0.0, abs=1e-6) for loss in _losses(priors, poses, scale))
    default = StructuralPriors.from_labeled(poses, np.ones((60, k)), scale, skeleton, k)
    assert sum(v.item() for v in _losses(default, poses, scale)) < 0.01  # only the 2 % tails lie outside
    # distorted poses, then rotated / shifted / zoomed (scale zoomed with them): the same losses
    bent, bscale = _random_poses(template, 8, seed=99, noise=25.0)
    base = [v.item() for v in _losses(priors, bent, bscale)]
    assert min(base) > 0
    a, z = 0.7, 1.7
    r = z * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = [v.item() for v in _losses(priors, bent @ r.T + [13.0, -40.0], bscale * z)]
    np.testing.assert_allclose(moved, base, rtol=1e-4)


def test_a_stretched_bone_costs_its_relative_excess():
    poses, scale = _random_poses(MOUSE, 40, seed=1)
    priors = StructuralPriors.from_labeled(poses, np.ones((40, 4)), scale, MOUSE_SKELETON, 4)
    pose = MOUSE.copy()
    pose[3] = pose[2] + 2 * (pose[3] - pose[2])  # tail bone twice as long
    lengths = np.linalg.norm(poses[:, 3] - poses[:, 2], axis=1) / scale
    hi = np.quantile(lengths, 0.98)
    stretched = np.linalg.norm(pose[3] - pose[2]) / 320.0
    topo, bone, angle = _losses(priors, pose[None], [320.0])
    assert bone.item() == pytest.approx((stretched - hi) / hi / 3, rel=1e-3)  # one bone of three outside
    assert angle.item() == 0.0 and topo.item() > 0  # the angle is unchanged; the tail moved off its neighbour
    masked = torch.ones(1, 4)
    masked[0, 3] = 0.0  # the tail masked: its bone no longer counts
    assert _losses(priors, pose[None], [320.0], masked)[1].item() == 0.0


def test_a_bent_angle_costs_and_gradients_undo_it():
    poses, scale = _random_poses(COCO_TEMPLATE, 40, seed=2)
    priors = StructuralPriors.from_labeled(poses, np.ones((40, 17)), scale, COCO17.skeleton, 17)
    pose = COCO_TEMPLATE.copy()
    r20 = np.array([[np.cos(0.35), -np.sin(0.35)], [np.sin(0.35), np.cos(0.35)]])
    pose[9] = pose[7] + r20 @ (pose[5] - pose[7])  # left wrist folded back to ~20 deg from the shoulder
    coords = torch.tensor(pose[None], dtype=torch.float32, requires_grad=True)
    loss, logs = priors.angle_loss(coords, torch.tensor([320.0]), torch.ones(1, 17))
    assert loss.item() > 0 and logs["outside"].item() > 0
    loss.backward()
    assert torch.isfinite(coords.grad).all() and coords.grad[0, 9].abs().sum() > 0
    with torch.no_grad():
        after = priors.angle_loss(coords - 20.0 * coords.grad, torch.tensor([320.0]), torch.ones(1, 17))[0]
    assert after.item() < loss.item()


def test_unlabeled_joints_do_not_count_and_unseen_quantities_are_unconstrained():
    poses, scale = _random_poses(MOUSE, 30, seed=3)
    vis = np.ones((30, 4))
    vis[:, 3] = 0  # the tail never labeled
    vis[0, 0] = 0
    poses[:, 3] = np.nan  # and its coordinates missing
    priors = StructuralPriors.from_labeled(poses, vis, scale, MOUSE_SKELETON, 4)
    assert torch.isinf(priors.bone_range[2, 1]) and priors.angle_range[1].tolist() == pytest.approx([0.0, math.pi])
    far = MOUSE.copy()
    far[3] = [900.0, 0.0]
    assert _losses(priors, far[None], [320.0])[1].item() == 0.0


def test_a_schema_without_skeleton_gives_empty_priors_and_zero_losses():
    poses, scale = _random_poses(MOUSE, 5, seed=4)
    priors = StructuralPriors.from_labeled(poses, np.ones((5, 4)), scale, (), 4)
    assert priors.is_empty
    coords = torch.randn(3, 4, 2, generator=_gen(8), requires_grad=True)
    for loss in _losses(priors, coords, torch.full((3,), 320.0)):
        assert loss.item() == 0.0
    total = sum(f(coords, torch.full((3,), 320.0), torch.ones(3, 4))[0]
                for f in (priors.topology_loss, priors.bone_loss, priors.angle_loss))
    total.backward()  # a graph, zero gradients
    assert torch.equal(coords.grad, torch.zeros_like(coords))


def test_priors_round_trip_through_the_state_dict():
    poses, scale = _random_poses(COCO_TEMPLATE, 20, seed=5)
    priors = StructuralPriors.from_labeled(poses, np.ones((20, 17)), scale, COCO17.skeleton, 17)
    other = StructuralPriors.from_labeled(poses[:5] * 1.1, np.ones((5, 17)), scale[:5], COCO17.skeleton, 17)
    other.load_state_dict(priors.state_dict())
    bent, bscale = _random_poses(COCO_TEMPLATE, 4, seed=6, noise=20.0)
    assert [v.item() for v in _losses(other, bent, bscale)] == [v.item() for v in _losses(priors, bent, bscale)]
    assert {"bone_range", "angle_range", "topology_range", "edges", "triplets"} <= set(priors.state_dict())


def test_priors_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="expected keypoints"):
        StructuralPriors.from_labeled(np.zeros((3, 5, 2)), np.ones((3, 5)), np.ones(3), MOUSE_SKELETON, 4)
    with pytest.raises(ValueError, match="out of range"):
        StructuralPriors.from_labeled(np.zeros((3, 4, 2)), np.ones((3, 4)), np.ones(3), ((0, 7),), 4)
    poses, scale = _random_poses(MOUSE, 5, seed=7)
    priors = StructuralPriors.from_labeled(poses, np.ones((5, 4)), scale, MOUSE_SKELETON, 4)
    with pytest.raises(ValueError, match="expected coords"):
        priors.bone_loss(torch.zeros(2, 5, 2), torch.ones(2), torch.ones(2, 5))
