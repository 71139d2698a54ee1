"""Semi-supervised training end to end: the step, what the checkpoint carries, resume, and bad unlabeled input."""
from __future__ import annotations

import signal
from pathlib import Path

import cv2
import pytest
import torch
from test_train_resume import _child, _finish, _output  # the killable training child process

from sagepose.cli.main import main
from sagepose.data.synth import generate_dataset

TINY = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"



def _video(path: Path, images: list[Path], repeat: int = 2) -> Path:
    first = cv2.imread(str(images[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for p in images:
        frame = cv2.resize(cv2.imread(str(p)), (w, h))
        for _ in range(repeat):
            writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ssl")
    train = generate_dataset(root / "labeled", 12, seed=1, split="train")
    val = generate_dataset(root / "labeled", 3, seed=2, split="val")
    unlabeled = generate_dataset(root / "unlabeled", 10, seed=3, split="train", style="surveillance")
    frames = sorted((root / "unlabeled" / "train").glob("*.jpg"))[:6]
    video = _video(root / "clip.avi", frames)
    return {"train": Path(train), "val": Path(val), "unlabeled": Path(unlabeled), "video": video, "root": root}


def _overrides(data: dict, out: Path, *extra: str) -> list[str]:
    return [f"data.train_json={data['train']}", f"data.val_json={data['val']}", f"trainer.out_dir={out}",
            "model.name=vit-tiny", TINY, "model.heatmap_output=softmax", "data.batch_size=4", "data.val_batch_size=8",
            "data.num_workers=0", "optim.warmup_iters=2", "optim.schedule=cosine", "trainer.max_epochs=1",
            "trainer.val_every_epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu",
            "trainer.log_every_steps=1", "ssl.mode=semi", "ssl.batch_size=4", "ssl.mask_warmup_iters=2",
            "ssl.rampup_iters=2", f"ssl.unlabeled=['{data['unlabeled']}', '{data['video']}']", "ssl.every_n=2",
            "ssl.temporal_eps_px=0.0", *extra]


def _scalars(log_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_semi_supervised_fit_trains_logs_every_term_and_checkpoints_teacher_and_mask(data, tmp_path):
    from sagepose.config import load_config
    from sagepose.train.run import fit

    out = tmp_path / "run"
    summary = fit(load_config(None, _overrides(data, out)))
    assert summary["steps"] >= 3 and summary["skipped_steps"] == 0

    logged = _scalars(out / "logs")
    for term in ("consistency", "topology", "bone", "angle", "temporal", "mask_kept", "teacher_conf_mean",
                 "teacher_conf_max", "unlabeled", "ramp"):
        assert f"ssl/{term}" in logged, sorted(logged)
        assert all(v == v and v >= 0 for v in logged[f"ssl/{term}"]), (term, logged[f"ssl/{term}"])
    assert logged["ssl/ramp"][0] == 0.0 and logged["ssl/ramp"][-1] == 1.0
    assert max(logged["ssl/consistency"]) > 0  # the teacher's views and the student's disagree at first
    assert max(logged["ssl/motion_px"]) > 0  # the video's frames pair up: the temporal term sees motion

    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    sd = ckpt["state_dict"]
    student = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    teacher = {k[len("teacher.model."):]: v for k, v in sd.items() if k.startswith("teacher.model.")}
    assert student.keys() == teacher.keys()
    # an EMA of the student: moved from the initial copy, not equal to the student
    assert any(not torch.equal(student[k], teacher[k]) for k in student if student[k].is_floating_point())
    assert sd["keypoint_mask.initialized"].item() and (sd["keypoint_mask.mean"] > 0).all()
    assert "priors.bone_range" in sd and torch.isfinite(sd["priors.bone_range"][:, 0]).all()
    assert ckpt["sagepose"]["teacher_step"] == ckpt["global_step"]

    import sagepose

    model = sagepose.load(str(out / "checkpoints" / "last.ckpt"), fuse=False)  # the student, a plain estimator
    assert model.state_dict().keys() == student.keys()
    assert all(torch.equal(v, student[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_unsup_only_starts_from_a_supervised_checkpoint_and_skips_the_labeled_loader(data, tmp_path):
    from sagepose.config import load_config
    from sagepose.train.run import fit

    sup = fit(load_config(None, _overrides(data, tmp_path / "sup", "ssl.mode=off", "ssl.unlabeled=[]")))
    out = tmp_path / "unsup"
    cfg = load_config(None, _overrides(data, out, "ssl.mode=unsup_only", f"ssl.unlabeled={data['unlabeled']}",
                                       f"model.init_checkpoint={sup['last_checkpoint']}", "ssl.lambda_temporal=0"))
    summary = fit(cfg)
    logged = _scalars(out / "logs")
    assert "train/loss" not in logged  # no supervised term
    from sagepose.data import load_unlabeled

    assert summary["steps"] == len(load_unlabeled(str(data["unlabeled"]), verbose=False)) // 4  # one epoch of it


@pytest.mark.slow
def test_sigkill_then_resume_restores_student_teacher_mask_and_both_loaders(data, tmp_path):
    extra = ("trainer.checkpoint_every_steps=2", "trainer.max_epochs=2", "ssl.lambda_temporal=0",
             f"ssl.unlabeled={data['unlabeled']}", "ssl.style_mix_prob=0.5")  # labeled crops in unlabeled looks too
    ref_out, run_out = tmp_path / "reference", tmp_path / "killed"
    reference = _child(_overrides(data, ref_out, *extra), resume=False)
    # killed right after the first last.ckpt (step 2), before step 3 begins
    victim = _child(_overrides(data, run_out, *extra), resume=False, stop_at=2, sig=signal.SIGKILL)
    last = run_out / "checkpoints" / "last.ckpt"
    out = _output(victim)
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    _finish(reference)
    killed_at = torch.load(last, weights_only=False)
    assert killed_at["global_step"] == 2
    log = _finish(_child(_overrides(data, run_out, *extra), resume=True))
    assert f"resuming from {last}" in log

    ref = torch.load(ref_out / "checkpoints" / "last.ckpt", weights_only=False)
    res = torch.load(last, weights_only=False)
    assert killed_at["global_step"] < res["global_step"] == ref["global_step"]
    differ = [k for k in ref["state_dict"] if not torch.equal(ref["state_dict"][k], res["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:5]}"
    assert ref["sagepose"]["train_loader"] == res["sagepose"]["train_loader"]
    assert set(ref["sagepose"]["train_loader"]) == {"labeled", "unlabeled"}


def test_bad_unlabeled_sources_are_one_line_errors_before_training(data, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, expected in ((broken, str(broken)), (empty, str(empty)), (tmp_path / "missing", "not found")):
        code = main(["train", "demo_tiny_vit", *_overrides(data, tmp_path / "out", f"ssl.unlabeled={source}")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and err and err[-1].startswith("sagepose: error: ") and expected in err[-1], err[-3:]
        assert "Traceback" not in "\n".join(err)


def test_ssl_settings_are_checked_before_any_work(data, tmp_path, capsys):
    for override, expected in (("ssl.mode=semi-supervised", "ssl.mode"), ("ssl.consistency=l2", "ssl.consistency"),
                               ("ssl.strong.flip_prob=2", "ssl.strong.flip_prob"),
                               ("ssl.unlabeled=[]", "needs unlabeled sources")):
        code = main(["train", "demo_tiny_vit", *_overrides(data, tmp_path / "out"), override])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and expected in err[-1], err[-3:]
