"""The demo trains the same recipe on every machine: bounded by epochs, with time only as a hang guard."""
from __future__ import annotations

import pytest

from sagepose.config import load_config
from sagepose.configs import resolve_config
from sagepose.data.synth import generate_dataset
from sagepose.train.run import fit


def test_demo_recipe_is_bounded_by_epochs_not_by_the_machines_speed():
    t = load_config(resolve_config("demo_tiny_vit")).trainer
    assert t.max_epochs == 10 and t.max_steps == -1
    # the wall-time limit is only a guard against a hung run: several times the measured ~12 minutes on 2 cores
    assert t.max_time_minutes is None or t.max_time_minutes >= 60


def _tiny(tmp_path, *extra):
    generate_dataset(tmp_path, 8, seed=1, split="train")
    return load_config(None, [
        f"data.train_json={tmp_path / 'train.json'}", f"trainer.out_dir={tmp_path / 'run'}", "model.name=vit-tiny",
        "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}", "data.batch_size=4",
        "data.num_workers=0", "trainer.progress_bar=false", "trainer.accelerator=cpu", *extra])


def test_a_run_cut_by_the_time_guard_says_so(tmp_path):
    cfg = _tiny(tmp_path, "trainer.max_epochs=3", "trainer.max_time_minutes=1e-6")
    with pytest.warns(UserWarning, match="stopped by trainer.max_time_minutes"):
        summary = fit(cfg)
    assert summary["stopped_by_time"] is True
    assert summary["steps"] < 3 * 5  # fewer than the recipe's epochs of steps


def test_a_run_that_finishes_its_epochs_under_the_guard_is_not_flagged(tmp_path):
    summary = fit(_tiny(tmp_path, "trainer.max_epochs=1", "trainer.max_time_minutes=60"))
    assert summary["stopped_by_time"] is False


@pytest.mark.slow
def test_demo_ssl_trains_both_arms_the_same_steps_and_reports_the_gain_on_the_shifted_style(tmp_path, capsys):
    import json

    from sagepose.cli.main import main

    out = tmp_path / "demo-ssl"
    code = main(["demo", "--ssl", "--out", str(out), "--num-train", "6", "--num-unlabeled", "6", "--num-val", "3",
                 "--num-pretrain", "6", "--workers", "1",
                 "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}",
                 "data.batch_size=4", "ssl.batch_size=4", "trainer.max_steps=2", "trainer.progress_bar=false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["style"] == "surveillance"
    # both arms start from the stage-0 demo model, trained in OUT/pretrained and scored on the target style too
    pretrained = json.loads((out / "pretrained" / "metrics.json").read_text())
    assert summary["init_checkpoint"] == pretrained["checkpoint"]
    assert summary["init_AP"] == json.loads((out / "init" / "metrics.json").read_text())["AP"]
    for arm in ("supervised", "semi"):
        cfg = (out / f"{arm}-seed0" / "config.yaml").read_text()
        assert f"init_checkpoint: {pretrained['checkpoint']}" in cfg
    for arm in ("supervised", "semi"):
        metrics = json.loads((out / f"{arm}-seed0" / "metrics.json").read_text())
        assert metrics["checkpoint"].endswith("last.ckpt")  # scored once, on the last checkpoint, not a picked one
        assert metrics["AP"] == summary[f"{arm}_AP"]
        assert metrics["val_json"] == str(out / "data" / "target" / "val.json")
    assert summary["gain"] == pytest.approx(summary["semi_AP"] - summary["supervised_AP"])
    printed = capsys.readouterr().out
    assert "target-style (surveillance) val AP: start" in printed and "semi-supervised" in printed
