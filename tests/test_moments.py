"""Keypoint distributions as moments (sagepose.ssl.moments): analytic cases for each step -- from a codec's own
labels, through affines, mirrors and schema translations, into a heatmap or SimCC target -- and a semi-supervised
SimCC run end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sagepose.keypoint_maps import keypoint_map
from sagepose.models.zoo import build_model
from sagepose.ssl import moments as mo

SMALL_RTM = dict(input_size=(64, 96), arch={"widen": 0.125, "deepen": 0.33, "hidden": 32, "s": 16})


def _logits_for(model, kp: torch.Tensor) -> torch.Tensor:
    """A perfect model's output for keypoints (B, K, 2): the codec's own labels (SimCC: the unnormalised Gaussian
    labels RTMPose is trained towards; heatmaps: the regressed Gaussian)."""
    labels, _ = model.codec.encode(kp, torch.ones(kp.shape[:2]))
    return torch.as_tensor(labels).float()


@pytest.mark.parametrize("name,kw", [("rtmpose-t", SMALL_RTM), ("hrnet-w32", {}), ("hrnet-w32-udp", {}),
                                     ("vit-tiny", {"heatmap_output": "softmax"})])
def test_moments_of_a_codecs_own_labels_are_the_keypoint(name, kw):
    model = build_model(name, **kw)
    w, h = model.input_size
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(3, 17, 2, generator=gen) * torch.tensor([w - 60.0, h - 60.0]) + 30.0  # 3 sigma inside
    out = _logits_for(model, kp)
    if model.heatmap_output == "softmax":  # a softmax model's raw output is the log of its distribution
        out = torch.log(out.clamp_min(1e-12))
    m = mo.output_moments(out, model)
    # the encoders put the label on a grid: SimCC on the nearest bin (MMPose rounds x * split_ratio), MSRA on the
    # nearest heatmap pixel (4 input px here); UDP is sub-pixel
    if mo.is_simcc(model):
        kp = torch.round(kp * model.codec.simcc_split_ratio) / model.codec.simcc_split_ratio
    elif name == "hrnet-w32":
        kp = torch.floor(kp / 4 + 0.5) * 4
    # (vit-tiny's sigma-0.5 Gaussian is narrower than its pixels: sampled, its mean is pulled towards the nearest
    # pixel centre, by up to ~0.04 heatmap px here -- 0.16 input px)
    tol = {"rtmpose-t": 1e-3, "hrnet-w32": 1e-3, "hrnet-w32-udp": 0.05, "vit-tiny": 0.2}
    assert (m.mean - kp).norm(dim=-1).max() <= tol[name]
    assert m.conf.min() > 0.95  # one sharp mode: nearly all its mass in the window
    assert torch.allclose(m.cov, m.cov.transpose(-1, -2)) and (torch.linalg.eigvalsh(m.cov) > 0).all()


def test_a_second_mode_does_not_move_the_mean_and_halves_the_confidence():
    model = build_model("hrnet-w32-udp")
    a, b = torch.tensor([[[60.0, 100.0]]]), torch.tensor([[[140.0, 100.0]]])
    two = _logits_for(model, a) + _logits_for(model, b)
    m = mo.output_moments(two, model)
    assert (m.mean - a).norm() < 0.05 or (m.mean - b).norm() < 0.05
    assert 0.45 < float(m.conf) < 0.55


def test_transform_rotates_the_covariance_and_a_mirror_swaps_joints():
    mean = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    cov = torch.diag_embed(torch.tensor([[[4.0, 1.0], [9.0, 0.25]]]))
    m = mo.Moments(mean, cov, torch.tensor([[0.9, 0.5]]))
    A = torch.tensor([[[0.0, -2.0, 100.0], [2.0, 0.0, 5.0]]])  # rotate 90 degrees, zoom 2, shift
    out = mo.transform(m, A)
    assert torch.allclose(out.mean, torch.tensor([[[60.0, 25.0], [20.0, 65.0]]]))
    assert torch.allclose(out.cov, torch.diag_embed(torch.tensor([[[4.0, 16.0], [1.0, 36.0]]])))
    flipped = mo.transform(m, A, torch.tensor([True]), flip_indices=[1, 0])
    assert torch.equal(flipped.mean, out.mean.flip(1)) and torch.equal(flipped.conf, m.conf.flip(1))


def test_translate_copies_joints_and_takes_midpoints_of_independent_ends():
    kmap = keypoint_map("coco", "mpii", midpoints=True)  # MPII's pelvis / thorax: midpoints of COCO's hips / shoulders
    gen = torch.Generator().manual_seed(1)
    mean = torch.rand(2, 17, 2, generator=gen) * 100
    cov = torch.diag_embed(torch.rand(2, 17, 2, generator=gen) + 0.5)
    m = mo.translate(mo.Moments(mean, cov, torch.rand(2, 17, generator=gen)), kmap)
    ref_kp, ref_conf = kmap.apply(mean.numpy(), np.ones((2, 17)))
    covered = kmap.covered
    assert np.allclose(m.mean.numpy()[:, covered], ref_kp[:, covered], atol=1e-5)
    for t, src in enumerate(kmap.sources):
        if len(src) == 1:
            assert torch.equal(m.cov[:, t], cov[:, src[0]])
        elif len(src) == 2:
            assert torch.allclose(m.cov[:, t], (cov[:, src[0]] + cov[:, src[1]]) / 4)
        else:
            assert (m.conf[:, t] == 0).all()


def test_fuse_weighs_the_surer_view_and_keeps_the_spread_of_the_means():
    cov = torch.eye(2).expand(1, 1, 2, 2)
    a = mo.Moments(torch.tensor([[[0.0, 0.0]]]), cov, torch.tensor([[0.8]]))
    b = mo.Moments(torch.tensor([[[2.0, 0.0]]]), cov, torch.tensor([[0.8]]))
    f = mo.fuse(a, b)
    assert torch.allclose(f.mean, torch.tensor([[[1.0, 0.0]]]))
    assert torch.allclose(f.cov, torch.tensor([[[[2.0, 0.0], [0.0, 1.0]]]]))  # 1 + the means' variance 1 on x
    surer = mo.fuse(a, b._replace(conf=torch.tensor([[0.2]])), confidence_tau=0.01)
    assert torch.allclose(surer.mean, a.mean, atol=1e-6)


@pytest.mark.parametrize("name,kw", [("rtmpose-t", SMALL_RTM), ("vit-tiny", {"heatmap_output": "softmax"})])
def test_render_puts_the_moments_into_the_students_bins(name, kw):
    model = build_model(name, **kw)
    w, h = model.input_size
    mean = torch.tensor([[[w * 0.4, h * 0.55]]])
    # a spread well above the label sigma floor, rotated 30 degrees
    rot = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    cov = (rot @ torch.diag(torch.tensor([40.0, 10.0])) @ rot.T)[None, None]
    target = mo.render(mo.Moments(mean, cov, torch.ones(1, 1)), model)
    if mo.is_simcc(model):
        r = model.codec.simcc_split_ratio
        tx, ty = model.codec.split(target)
        sure_axes = model.codec.split(mo.render(mo.Moments(mean, torch.zeros_like(cov), torch.ones(1, 1)), model))
        for t, sure_t, axis in ((tx, sure_axes[0], 0), (ty, sure_axes[1], 1)):
            mu, var = mo._axis_moments(t)
            # (the label family's flat floor, exp(0) on every bin, pulls the mean a little towards the axis' centre)
            assert abs(float(mu) / r - float(mean[0, 0, axis])) < 0.01
            assert float(t.max()) < 0.8 * float(sure_t.max())  # widened by the teacher's spread: a lower peak
        # a sure teacher (no spread) on a bin: exactly the student's own supervised target, softmax(10 * label)
        on_bin = torch.round(mean * r) / r
        sure = mo.render(mo.Moments(on_bin, torch.zeros_like(cov), torch.ones(1, 1)), model)
        labels, _ = model.codec.encode(on_bin, torch.ones(1, 1))
        wx = model.codec.simcc_size[0]
        axes = torch.as_tensor(labels).float().tensor_split([wx], -1)
        expected = torch.cat([torch.softmax(10 * a, -1) for a in axes], -1)
        assert torch.allclose(sure, expected, atol=1e-6)
    else:
        assert target.shape[-2:] == (model.codec.heatmap_size[1], model.codec.heatmap_size[0])
        s = model.codec.heatmap_scale
        hh, ww = target.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(hh) / s[1], torch.arange(ww) / s[0], indexing="ij")
        p = target[0, 0]
        mu = torch.stack([(p * xs).sum(), (p * ys).sum()])
        d = torch.stack([xs - mu[0], ys - mu[1]])
        c = torch.einsum("ihw,jhw,hw->ij", d, d, p)
        assert (mu - mean[0, 0]).norm() < 0.05
        assert torch.allclose(c, cov[0, 0], rtol=0.05, atol=0.3)  # + the pixels' own variance (1/12 px^2 each)
    assert torch.allclose(target.sum(-1) if mo.is_simcc(model) else target.sum((-1, -2)),
                          torch.full((1, 1), 2.0 if mo.is_simcc(model) else 1.0))


def test_a_simcc_teachers_keypoint_lands_where_the_affine_takes_it_in_the_student_view():
    """Teacher labels of a point p in its view -> moments -> a student view related by a rotation + mirror ->
    rendered SimCC target: its decoded point is A p (mirrored joint), within the bins' resolution."""
    from sagepose.ssl.views import Views

    model = build_model("rtmpose-t", **SMALL_RTM)
    k = model.schema.num_keypoints
    w, h = model.input_size
    kp = torch.full((1, k, 2), 30.0)
    kp[0, 5] = torch.tensor([20.0, 40.0])  # left shoulder somewhere else
    t_view = Views(None, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), torch.tensor([False]), torch.ones(1))
    ang = math.radians(10)
    A = torch.tensor([[[-math.cos(ang), math.sin(ang), w - 1.0], [math.sin(ang), math.cos(ang), 2.0]]])  # mirrored
    s_view = Views(None, A, torch.tensor([True]), torch.ones(1))
    tm = mo.into_view([mo.output_moments(_logits_for(model, kp), model)], [t_view], s_view,
                      model.schema.flip_indices)
    decoded, _ = model.codec.decode(mo.render(tm, model))  # probabilities: positive maxima
    expected = A[0, :, :2] @ kp[0, 5] + A[0, :, 2]
    assert (torch.as_tensor(decoded)[0, 6] - expected).norm() <= 0.5  # right shoulder's channel: the mirror


@pytest.mark.slow
def test_semi_supervised_training_runs_on_a_simcc_model(tmp_path):
    """``ssl.mode=semi`` with an RTMPose model (shrunk): every unlabeled term finite, the consistency logged and
    falling from its first value, checkpoint with the teacher."""
    from sagepose.cli.main import main
    from sagepose.data.synth import generate_dataset

    train = generate_dataset(tmp_path / "l", 6, seed=1, split="train", workers=1)
    unlabeled = generate_dataset(tmp_path / "u", 6, seed=3, split="train", style="surveillance", workers=1)
    out = tmp_path / "run"
    args = ["train", "rtmpose_t_coco_256x192", f"data.train_json={train}", f"data.val_json={train}",
            "data.det_json=null", "data.batch_size=4", "data.val_batch_size=8", "data.num_workers=0",
            "model.input_size=[64, 96]", "model.arch={'widen': 0.125, 'deepen': 0.33, 'hidden': 32, 's': 16}",
            "trainer.accelerator=cpu", "trainer.max_steps=6", "trainer.max_epochs=-1", "optim.ema_decay=0",
            "trainer.accumulate_grad_batches=1", "trainer.val_every_steps=6", f"trainer.out_dir={out}",
            "trainer.log_every_steps=1", "ssl.mode=semi", f"ssl.unlabeled={unlabeled}", "ssl.batch_size=4",
            "ssl.rampup_iters=0", "ssl.mask_warmup_iters=2", "ssl.priors=true", "ssl.lambda_bone=0.1"]
    assert main(args) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 6
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("teacher.model.") for k in ckpt["state_dict"])
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    assert rows and all(math.isfinite(float(v)) for r in rows[1:] for v in r if v.replace(".", "", 1).isdigit())
