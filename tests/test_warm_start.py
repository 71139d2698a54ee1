"""The supervised warm start (ssl.warm_start) and runs sized by optimizer steps: stage 0 is the supervised recipe,
the start stays best.ckpt unless the fine-tuning beats it on val, and a few labeled frames still get their steps."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_ssl_train import _overrides, data  # noqa: F401  (the module's synthetic labeled / unlabeled data)

from sagepose.config import load_config, replace
from sagepose.eval import PairedGap
from sagepose.train.steps import describe_steps, planned_steps, schedule_steps
from sagepose.train.warm_start import gain_line, keep_better, stage_config, start_wins

USER = ["data.train_json=labels.json", "data.val_json=val.json", "model.schema=mpii",
        "trainer.precision=bf16-mixed", "trainer.seed=3", "data.image_root=/data/frames"]


def test_stage_zero_of_the_custom_ssl_recipe_is_the_custom_recipe_on_the_same_data():
    semi = load_config("custom_tiny_vit_ssl", [*USER, "trainer.out_dir=runs/x", "ssl.unlabeled=clip.mp4"])
    assert semi.ssl.warm_start == "custom_tiny_vit"
    stage = stage_config(semi)
    supervised = load_config("custom_tiny_vit", [*USER, f"trainer.out_dir={Path('runs/x') / 'warm_start'}"])
    assert stage == supervised  # the same optimizer, steps, data, model and trainer: the user's supervised run


def test_custom_recipes_train_as_many_steps_on_30_labeled_frames_as_on_300():
    for name in ("custom_tiny_vit", "custom_tiny_vit_ssl"):
        t = load_config(name).trainer
        batch = load_config(name).data.batch_size
        few, many = (planned_steps(t, max(n // batch, 1)) for n in (30, 300))
        assert few >= many >= 500, (name, few, many)
    sup = planned_steps(load_config("custom_tiny_vit").trainer, 1)
    semi = load_config("custom_tiny_vit_ssl")
    stage0 = planned_steps(stage_config(semi).trainer, 1)
    assert stage0 == sup and stage0 + planned_steps(semi.trainer, 1) > sup  # semi never trains fewer steps


def test_the_step_line_names_what_bounds_the_run():
    t = load_config("custom_tiny_vit").trainer
    assert describe_steps(t, t.max_steps, 1, 16) == (f"training {t.max_steps} optimizer steps: trainer.max_steps="
                                                     f"{t.max_steps} (1 step an epoch at batch 16)")
    t = replace(load_config(None), trainer={"max_epochs": 5, "max_steps": -1}).trainer
    line = describe_steps(t, 30, 6, 16)
    assert line == "training 30 optimizer steps: trainer.max_epochs=5 x 6 steps an epoch at batch 16"
    assert planned_steps(t, 6) == 30
    assert schedule_steps(200, None, 1000) == 200 and schedule_steps(200, 0.25, 1000) == 250


@pytest.mark.parametrize("start,best,mode,wins", [(5.0, 6.0, "min", True), (5.0, 5.0, "min", True),
                                                  (5.0, 4.0, "min", False), (0.5, 0.6, "max", False),
                                                  (None, 4.0, "min", False), (5.0, None, "min", True)])
def test_the_start_stays_best_unless_beaten(tmp_path, start, best, mode, wins):
    start_file = tmp_path / "start.ckpt"
    start_file.write_bytes(b"start weights")
    (tmp_path / "checkpoints").mkdir()
    assert start_wins(start, best, mode) is wins
    assert keep_better(str(start_file), start, best, mode, tmp_path / "checkpoints") is wins
    assert (tmp_path / "checkpoints" / "best.ckpt").exists() is wins


@pytest.mark.parametrize("difference,p,wins", [(0.3, 0.45, False), (2.0, 0.03, True), (-1.0, 0.01, False),
                                               (0.5, 0.0625, False)])
def test_with_paired_frames_the_start_stays_only_when_the_fine_tuning_is_clearly_worse(difference, p, wins):
    gap = PairedGap(difference=difference, p_worse=p, frames=10)
    start, best = 10.0, 10.0 + difference
    assert start_wins(start, best, "min", gap) is wins
    assert start_wins(start, best, "min") is (difference >= 0)  # ssl.keep_start=worse: any worse mean
    line = gain_line("val/pixel_error", start, best, wins, semi=True, gap=gap)
    if wins:
        assert "worse beyond chance" in line and line.endswith("best.ckpt is the start")
    elif difference > 0:
        assert "bought nothing on val" in line and "within chance" in line and "best.ckpt is the fine-tuning's" in line
    else:
        assert f"the unlabeled data bought {-difference:.3g} px" in line
    few = gain_line("val/pixel_error", start, best, False, semi=True, gap=PairedGap(difference, 0.125, 3))
    assert "label more val frames" in few


def test_a_wrong_keep_start_rule_is_one_line():
    from sagepose.config import ConfigError

    with pytest.raises(ConfigError, match="ssl.keep_start.*clearly_worse"):
        load_config("custom_tiny_vit_ssl", ["ssl.keep_start=clearly"])


@pytest.mark.slow
def test_a_pixel_error_run_scores_the_fine_tuning_on_the_same_val_frames(data, tmp_path, capsys):  # noqa: F811
    from sagepose.train.run import fit

    stage0 = tmp_path / "stage0.yaml"
    stage0.write_text("optim: {lr: 1.0e-3, warmup_iters: 1}\ntrainer: {max_epochs: -1, max_steps: 2}\n")
    out = tmp_path / "run"
    cfg = load_config(None, _overrides(data, out, f"ssl.warm_start={stage0}", f"model.schema={data['train']}",
                                       "trainer.max_epochs=-1", "trainer.max_steps=2", "trainer.val_every_steps=2",
                                       "ssl.lambda_temporal=0"))
    summary = fit(cfg)
    printed = "".join(capsys.readouterr())
    start, tuned = (json.loads((out / d / "metrics.json").read_text()) for d in ("start", "fine_tuned"))
    assert start["val_json"] == tuned["val_json"] == str(data["val"])
    gap = summary["val_gap"]
    assert gap["frames"] == 3 and gap["difference"] == pytest.approx(tuned["pixel_error"] - start["pixel_error"],
                                                                     abs=1e-3)
    # three frames can never show a loss at p < 0.05: the fine-tuning is kept, and the run says to label more
    assert gap["p_worse"] >= 2 ** -3 and summary["best_is_start"] is False
    assert "label more val frames" in printed and "sign-flip p(worse)" in printed


@pytest.mark.slow
def test_warm_start_trains_stage_zero_scores_the_start_and_reuses_it(data, tmp_path, capsys):  # noqa: F811
    from sagepose.train.run import fit

    recipe = tmp_path / "stage0.yaml"
    recipe.write_text("optim: {lr: 1.0e-3, warmup_iters: 1, schedule: cosine}\n"
                      "trainer: {max_epochs: -1, max_steps: 4, val_every_steps: 2}\n")
    out = tmp_path / "run"
    cfg = load_config(None, _overrides(data, out, f"ssl.warm_start={recipe}", "trainer.max_epochs=-1",
                                       "trainer.max_steps=3", "trainer.val_every_steps=1", "ssl.lambda_temporal=0",
                                       "ssl.rampup_fraction=0.5", "ssl.mask_warmup_fraction=0.5"))
    summary = fit(cfg)
    printed = "".join(capsys.readouterr())
    stage0 = json.loads((out / "warm_start" / "train_summary.json").read_text())
    assert stage0["steps"] == 4 and summary["steps"] == 3
    assert "training 4 optimizer steps: trainer.max_steps=4" in printed
    assert "training 3 optimizer steps: trainer.max_steps=3" in printed
    start = json.loads((out / "start" / "metrics.json").read_text())  # COCO people: scored by AP
    assert summary["warm_start"] == stage0["last_checkpoint"] and summary["start_val_score"] == start["AP"]
    best = Path(summary["best_checkpoint"])
    if summary["best_is_start"]:
        assert best.read_bytes() == Path(stage0["last_checkpoint"]).read_bytes()
        assert "bought nothing on val; best.ckpt is the start" in printed
    else:
        assert summary["best_val_AP"] > start["AP"] and "the unlabeled data bought" in printed

    for d in ("warm_start", "."):  # dated back to 2017: a rewrite, however soon, gives them another time
        os.utime(out / d / "train_summary.json", ns=(1_500_000_000 * 10**9,) * 2)
    stamps = [(out / d / "train_summary.json").stat().st_mtime_ns for d in ("warm_start", ".")]
    chosen = best.read_bytes()
    again = fit(cfg, overwrite=False, resume=True)  # both stages finished: nothing trained, nothing re-chosen
    assert [(out / d / "train_summary.json").stat().st_mtime_ns for d in ("warm_start", ".")] == stamps
    assert again == json.loads((out / "train_summary.json").read_text()) and again["steps"] == 3
    assert best.read_bytes() == chosen  # a resumed finished run never re-decides best.ckpt
    printed = "".join(capsys.readouterr())
    assert "finished before in" in printed and "nothing left to train" in printed


class _Trainer:
    """What LastCheckpoint reads of a Lightning Trainer: the step, the world, and save_checkpoint."""

    world_size, global_step = 1, 0

    def __init__(self):
        self.saved: list[int] = []

    def save_checkpoint(self, path, weights_only=False):
        self.saved.append(self.global_step)


def test_one_step_epochs_save_last_every_n_steps_not_every_step(tmp_path):
    from sagepose.train.checkpoints import LastCheckpoint

    callback, trainer = LastCheckpoint(tmp_path / "last.ckpt", every_steps=4), _Trainer()
    callback.on_train_start(trainer, None)
    for _ in range(10):  # 30 labeled frames at batch 16: every step ends an epoch
        trainer.global_step += 1
        callback.on_train_batch_end(trainer)
        callback.on_train_epoch_end(trainer, None)
    assert trainer.saved == [4, 8]
    callback.on_train_end(trainer, None)  # the run's last step is kept whatever the interval
    assert trainer.saved == [4, 8, 10]
    plain, trainer = LastCheckpoint(tmp_path / "last.ckpt"), _Trainer()  # no interval: every epoch end, as before
    plain.on_train_start(trainer, None)
    for _ in range(3):
        trainer.global_step += 1
        plain.on_train_epoch_end(trainer, None)
    assert trainer.saved == [1, 2, 3]


def test_a_wrong_warm_start_is_one_line_before_any_work(tmp_path):
    from sagepose.config import ConfigError
    from sagepose.train.checks import check_run

    base = [*USER, f"trainer.out_dir={tmp_path / 'run'}", "ssl.unlabeled=clip.mp4", "trainer.precision=32-true"]
    for spec, expected in (("runs/mouse/best.ckpt", "no such checkpoint file"),
                           ("custom_tiny", "neither a checkpoint file nor a recipe")):
        with pytest.raises(ConfigError, match=expected):
            check_run(load_config("custom_tiny_vit_ssl", [*base, f"ssl.warm_start={spec}"]))
    assert not (tmp_path / "run").exists()
