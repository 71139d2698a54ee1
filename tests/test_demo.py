"""The demo trains the same recipe on every machine: bounded by epochs, with time only as a hang guard; it writes
what it says and prints what it wrote."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from sagepose.cli.main import main

TINY = "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}"


def test_demo_trains_its_recipes_epochs_and_prints_the_scores_it_writes(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--num-train", "4", "--num-val", "2", "--workers", "1", TINY,
                 "data.batch_size=4", "trainer.progress_bar=false"])
    assert code == 0
    printed = capsys.readouterr().out

    # bounded by epochs, not by the machine's speed: the run says so and trains every epoch it names
    bound = re.search(r"training (\d+) optimizer steps: trainer.max_epochs=(\d+) x (\d+) steps? an epoch", printed)
    assert bound, printed[-3000:]
    steps, epochs, per_epoch = (int(g) for g in bound.groups())
    assert per_epoch > 1 and steps == epochs * per_epoch
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == steps and summary["stopped_by_time"] is False
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == epochs - 1
    # the wall-time limit it ran under is only a guard against a hung run: several times the measured ~12 minutes
    # of the full demo on 2 cores
    guard = yaml.safe_load((out / "config.yaml").read_text())["trainer"]["max_time_minutes"]
    assert guard is None or guard >= 60

    # what it synthesized, scored, wrote and rendered, as it says
    train, val = (json.loads((out / "data" / f"{split}.json").read_text()) for split in ("train", "val"))
    assert (len(train["images"]), len(val["images"])) == (4, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == summary["best_checkpoint"] and metrics["val_json"] == str(out / "data" / "val.json")
    said = re.search(r"val AP (\S+) \(AP50 (\S+), AR (\S+)\) in (\S+) min -> (\S+)/metrics.json, "
                     r"(\S+)/predictions.json, (\S+)/vis/", printed)
    assert said, printed[-3000:]
    ap, ap50, ar, minutes, *folders = said.groups()
    assert [ap, ap50, ar] == [f"{metrics[k]:.3f}" for k in ("AP", "AP50", "AR")]
    assert float(minutes) == metrics["total_minutes"] and folders == [str(out)] * 3
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and {p["image_id"] for p in predictions} <= {im["id"] for im in val["images"]}
    rendered = sorted(p.name for p in (out / "vis").iterdir())
    assert rendered == sorted(f"{Path(im['file_name']).stem}.png" for im in val["images"])


@pytest.mark.slow
def test_demo_ssl_trains_both_arms_the_same_steps_and_reports_the_gain_on_the_shifted_style(tmp_path, capsys):
    out = tmp_path / "demo-ssl"
    code = main(["demo", "--ssl", "--out", str(out), "--num-train", "6", "--num-unlabeled", "6", "--num-val", "3",
                 "--num-pretrain", "6", "--workers", "1",
                 TINY, "data.batch_size=4", "ssl.batch_size=4", "trainer.max_steps=2", "trainer.progress_bar=false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["style"] == "surveillance"
    # both arms start from the stage-0 demo model, trained in OUT/pretrained and scored on the target style too
    pretrained = json.loads((out / "pretrained" / "metrics.json").read_text())
    assert summary["init_checkpoint"] == pretrained["checkpoint"]
    init = json.loads((out / "init" / "metrics.json").read_text())
    assert summary["init_AP"] == init["AP"]
    for arm in ("supervised", "semi"):
        cfg = (out / f"{arm}-seed0" / "config.yaml").read_text()
        assert f"init_checkpoint: {pretrained['checkpoint']}" in cfg
    arms = {}
    for arm in ("supervised", "semi"):
        metrics = arms[arm] = json.loads((out / f"{arm}-seed0" / "metrics.json").read_text())
        assert metrics["checkpoint"].endswith("last.ckpt")  # scored once, on the last checkpoint, not a picked one
        assert metrics["AP"] == summary[f"{arm}_AP"]
        assert metrics["val_json"] == str(out / "data" / "target" / "val.json")
    printed = capsys.readouterr().out
    # the line it prints: the three models' APs as their metrics files hold them, and the gain: the semi arm's AP
    # over the supervised arm's (to the printed digits), as summary.json holds it
    said = re.search(r"target-style \(surveillance\) val AP: start (\S+); supervised (\S+), semi-supervised (\S+), "
                     r"gain (\S+) \((\d+) steps each; .*-> (\S+)\n", printed)
    assert said, printed[-3000:]
    start, sup, semi, gain, steps, where = said.groups()
    assert [start, sup, semi] == [f"{m['AP']:.3f}" for m in (init, arms["supervised"], arms["semi"])]
    assert gain == f"{summary['gain']:+.3f}" and float(gain) == pytest.approx(arms["semi"]["AP"] -
                                                                             arms["supervised"]["AP"], abs=5.1e-4)
    assert int(steps) == summary["steps"] and where == str(out / "summary.json")
