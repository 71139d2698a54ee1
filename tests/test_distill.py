"""Distillation (sagepose distill): the target a student learns lands on the pixels its view shows, through a
teacher at another resolution, a mirrored view and a schema translation; the teacher's cache; the command end to
end with an RTMPose student."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sagepose.codecs import build_codec
from sagepose.config import load_config
from sagepose.keypoints import KeypointSchema
from sagepose.models.estimator import TopDownEstimator
from sagepose.ssl import moments as mo
from sagepose.ssl import views

DOTS = KeypointSchema("dots", ("left_dot", "right_dot"), flip_pairs=((0, 1),))
DOTS3 = KeypointSchema("dots3", ("right_dot", "left_dot", "middle"), flip_pairs=((0, 1),))


class _Pixels(nn.Module):
    """A backbone that passes the normalised image through."""

    def forward(self, x):
        return x

    def set_input_size(self, size):
        pass


class _DotHead(nn.Module):
    """Logits of a softmax heatmap: the red channel for the left dot, the green one for the right dot."""

    def forward(self, x):
        return x[:, :2] * 30.0  # normalised RGB: channel 0 red, 1 green


def dot_teacher(size=(128, 128)) -> TopDownEstimator:
    """A 'teacher' that finds a red and a green dot exactly: heatmap = its input at stride 1."""
    codec = build_codec({"type": "UDPHeatmap", "input_size": size, "heatmap_size": size, "sigma": 2.0})
    return TopDownEstimator(_Pixels(), _DotHead(), codec, DOTS, size, flip_test=False, heatmap_output="softmax")


def _crops(n: int, size, gen: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """(n, H, W, 3) uint8 BGR crops with a red and a green 3x3 dot each; their centres (n, 2, 2) in crop px."""
    w, h = size
    crops = np.zeros((n, h, w, 3), np.uint8)
    centres = np.zeros((n, 2, 2))
    for i in range(n):
        for k, channel in ((0, 2), (1, 1)):  # BGR: red is 2, green 1
            x, y = gen.integers(w // 4, 3 * w // 4), gen.integers(h // 4, 3 * h // 4)
            crops[i, y - 1:y + 2, x - 1:x + 2, channel] = 255
            centres[i, k] = x, y
    return torch.from_numpy(crops), centres


def _module(student_schema, teacher, extra=()):
    from sagepose.train.distill_module import DistillModule

    cfg = load_config("custom_tiny_vit_ssl", ["ssl.mode=unsup_only", "ssl.unlabeled=unused.mp4", "ssl.warm_start=null",
                                              "distill.teacher=in-memory", "model.input_size=[64, 64]",
                                              "ssl.weak.photometric_prob=0", *extra])  # the dots keep their colours
    return DistillModule(cfg, teacher=teacher, schema=student_schema)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_the_students_target_sits_on_the_dot_its_strong_view_shows(flip):
    """Teacher at 128x128 (twice the student's resolution: the loader's crop is the teacher's), a rotated / zoomed /
    shifted strong view at 64x64, mirrored or not: the rendered target's mean for each joint is where that dot is in
    the student's view image -- found from the view's pixels, not from the affines."""
    gen = np.random.default_rng(0)
    module = _module(DOTS, dot_teacher(), [f"ssl.strong.flip_prob={flip}", "ssl.strong.rotate=25",
                                           "ssl.strong.photometric_prob=0", "ssl.strong.coarse_dropout_prob=0",
                                           "ssl.strong.blur_prob=0", "ssl.strong.noise_prob=0"])
    assert module.crop_size == (128, 128)
    crops, _ = _crops(6, module.crop_size, gen)
    keys = torch.arange(6)
    base = module.teacher_moments(crops, keys, keys)
    view = views.make_views(crops, keys, module.strong, stream=views.STUDENT_STREAM, out_size=(64, 64), udp=True)
    assert bool(view.flipped.all()) == (flip == 1.0)
    tm = mo.transform(base, view.affine, view.flipped, DOTS.flip_indices)
    target = mo.render(tm, module.model)
    img = view.images.numpy()
    for i in range(6):
        for k, channel in ((0, 2), (1, 1)):
            # in a mirrored view the red (left) dot is the right joint's
            joint = DOTS.flip_indices[k] if view.flipped[i] else k
            w = np.clip(img[i, :, :, channel] - img[i, :, :, 3 - channel - 1 if channel == 2 else 2], 0, None)
            ys, xs = np.mgrid[:64, :64]
            seen = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
            assert np.linalg.norm(tm.mean[i, joint].numpy() - seen) < 0.35, (i, k)
            hm_scale = module.model.codec.heatmap_scale.numpy()
            t = target[i, joint].numpy()
            hy, hx = np.mgrid[:t.shape[0], :t.shape[1]]
            rendered = np.array([(t * hx).sum(), (t * hy).sum()]) / hm_scale
            assert np.linalg.norm(rendered - seen) < 1.0  # the render's grid: 16x16 heatmap px for a 64 px view


def test_a_translated_schema_takes_the_teachers_joints_by_name_and_leaves_the_rest_out():
    module = _module(DOTS3, dot_teacher(), ["ssl.strong.flip_prob=0"])
    crops, centres = _crops(2, module.crop_size, np.random.default_rng(1))
    base = module.teacher_moments(crops, torch.arange(2), torch.arange(2))
    assert np.allclose(base.mean[:, 0].numpy(), centres[:, 1], atol=0.35)  # DOTS3's right_dot: the green dot
    assert np.allclose(base.mean[:, 1].numpy(), centres[:, 0], atol=0.35)
    assert (base.conf[:, 2] == 0).all() and (base.conf[:, :2] > 0.9).all()


def test_a_fixed_teacher_view_runs_the_teacher_once_per_crop():
    fixed = ["ssl.fusion=false", "ssl.weak.rotate=0", "ssl.weak.scale=[1, 1]", "ssl.weak.shift=0",
             "ssl.weak.flip_prob=0", "ssl.weak.photometric_prob=0"]
    module = _module(DOTS, dot_teacher(), fixed)
    assert module.cache_teacher
    crops, _ = _crops(4, module.crop_size, np.random.default_rng(2))
    index = torch.tensor([10, 11, 12, 13])
    first = module.teacher_moments(crops, index, index)
    again = module.teacher_moments(crops[[2, 0]], index[[2, 0]], index[[2, 0]])
    assert module.teacher_passes == 4
    assert torch.equal(again.mean, first.mean[[2, 0]]) and torch.equal(again.cov, first.cov[[2, 0]])
    assert not _module(DOTS, dot_teacher()).cache_teacher  # the recipe's weak view is random: no cache


def test_distill_settings_fail_in_one_line():
    from sagepose.config import ConfigError

    with pytest.raises(ConfigError, match="ssl.mode") as e:
        load_config("custom_tiny_vit", ["distill.teacher=t.ckpt"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="fixed"):
        load_config("custom_tiny_vit_ssl", ["distill.teacher=t.ckpt", "distill.cache_teacher=always"])
    with pytest.raises(ConfigError, match="distill.kind"):
        load_config("custom_tiny_vit_ssl", ["distill.teacher=t.ckpt", "distill.kind=l2"])
    from sagepose.train.checks import check_run

    for teacher in ("no-such.ckpt", "vitpose-b"):  # a missing file; a zoo name without weights
        with pytest.raises(ConfigError, match="neither a checkpoint file nor published weights") as e:
            check_run(load_config("custom_distill", [f"distill.teacher={teacher}", "ssl.unlabeled=v.mp4"]))
        assert "\n" not in str(e.value) and e.value.key == "distill.teacher"


@pytest.mark.slow
def test_sagepose_distill_trains_an_rtmpose_student_from_a_heatmap_teacher_and_keeps_it_alone(tmp_path):
    """``sagepose distill rtmpose_t_coco_256x192 --teacher CKPT``: the recipe's mode becomes semi, the labeled images
    join the unlabeled ones, the loss is finite, the checkpoint holds the student only and resumes."""
    from sagepose.cli.main import main
    from sagepose.data.synth import generate_dataset

    train = generate_dataset(tmp_path / "l", 6, seed=1, split="train", workers=1)
    unlabeled = generate_dataset(tmp_path / "u", 6, seed=3, split="train", style="surveillance", workers=1)
    common = [f"data.train_json={train}", f"data.val_json={train}", "data.det_json=null", "data.batch_size=4",
              "data.val_batch_size=8", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.max_epochs=-1",
              "trainer.progress_bar=false", "trainer.log_every_steps=1"]
    teacher = tmp_path / "teacher"
    tiny = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"
    assert main(["train", "demo_tiny_vit", *common, tiny, "trainer.max_steps=2", "trainer.val_every_steps=2",
                 f"trainer.out_dir={teacher}"]) == 0
    out = tmp_path / "student"
    args = ["distill", "rtmpose_t_coco_256x192", "--teacher", str(teacher / "checkpoints" / "last.ckpt"), *common,
            "model.input_size=[64, 96]", "model.arch={'widen': 0.125, 'deepen': 0.33, 'hidden': 32, 's': 16}",
            "optim.ema_decay=0", "trainer.accumulate_grad_batches=1", f"ssl.unlabeled={unlabeled}",
            "ssl.batch_size=4", f"trainer.out_dir={out}", "trainer.val_every_steps=4"]
    assert main([*args, "trainer.max_steps=4"]) == 0
    cfg = (out / "config.yaml").read_text()
    assert "mode: semi" in cfg and "teacher: " in cfg
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith(("model.", "keypoint_mask.")) for k in ckpt["state_dict"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert math.isfinite(float(rows[-1].split(",")[rows[0].split(",").index("train/total")]))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4
    assert main(["distill", str(out / "config.yaml"), "--teacher", args[3], "--resume", "trainer.max_steps=6"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 6
    # the student is a model like any other: exported, then inferred with in onnxruntime, equal to torch
    pytest.importorskip("onnxruntime")
    import sagepose

    onnx = tmp_path / "student.onnx"
    assert main(["export", str(out / "checkpoints" / "last.ckpt"), "--out", str(onnx)]) == 0
    image = next((tmp_path / "l" / "train").glob("*.jpg"))
    ours = sagepose.load(str(out / "checkpoints" / "last.ckpt")).predict(str(image))
    theirs = sagepose.load(str(onnx)).predict(str(image))
    assert np.abs(ours.keypoints - theirs.keypoints).max() < 1e-2


def test_a_simcc_students_target_sits_on_the_dot_its_mirrored_view_shows():
    """The same through a SimCC student (RTMPose's plain crop convention, not UDP): the rendered bins decode onto the
    dot in the view's pixels, the mirrored joint's channel."""
    from sagepose.codecs import SimCCLabel

    module = _module(DOTS, dot_teacher(), ["model.name=rtmpose-t", "model.heatmap_output=raw", "model.codec={}",
                                           "ssl.strong.flip_prob=1.0", "ssl.strong.rotate=25",
                                           "ssl.strong.photometric_prob=0", "ssl.strong.coarse_dropout_prob=0",
                                           "ssl.strong.blur_prob=0", "ssl.strong.noise_prob=0"])
    assert isinstance(module.model.codec, SimCCLabel) and not module.model.codec.udp
    crops, _ = _crops(6, module.crop_size, np.random.default_rng(3))
    keys = torch.arange(6)
    base = module.teacher_moments(crops, keys, keys)
    view = views.make_views(crops, keys, module.strong, stream=views.STUDENT_STREAM, out_size=(64, 64), udp=False)
    decoded, _ = module.model.codec.decode(mo.render(mo.transform(base, view.affine, view.flipped, DOTS.flip_indices),
                                                     module.model))
    img = view.images.numpy()
    ys, xs = np.mgrid[:64, :64]
    for i in range(6):
        for k, channel, other in ((0, 2, 0), (1, 1, 2)):
            w = np.clip(img[i, :, :, channel] - img[i, :, :, other], 0, None)
            seen = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
            assert np.linalg.norm(np.asarray(decoded)[i, DOTS.flip_indices[k]] - seen) < 0.6  # half-px bins
