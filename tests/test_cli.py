"""End-to-end smoke runs of the `sagepose` command: synth -> train -> test -> infer, on a tiny model."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import sagepose
from sagepose.cli.main import main

TINY = ["model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}",
        "data.batch_size=8", "data.val_batch_size=16", "data.num_workers=0", "trainer.max_epochs=2",
        "trainer.val_every_epochs=1", "trainer.progress_bar=false", "optim.warmup_iters=2"]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(root), "--num", "12", "--split", "train", "--seed", "1"]) == 0
    assert main(["synth", str(root), "--num", "4", "--split", "val", "--seed", "2"]) == 0
    return root


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "sagepose.cli.main", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("demo", "synth", "train", "test", "infer"):
        assert name in out


def test_train_test_infer_end_to_end(synth_data, tmp_path):
    out = tmp_path / "run"
    data = [f"data.train_json={synth_data / 'train.json'}", f"data.val_json={synth_data / 'val.json'}",
            f"trainer.out_dir={out}"]
    assert main(["train", "demo_tiny_vit", *data, *TINY]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] > 0
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "config.yaml").is_file()
    assert any((out / "logs").rglob("events.out.tfevents.*"))

    # the README's form: a bundled recipe name, the option, then the overrides
    assert main(["test", "demo_tiny_vit", "--checkpoint", str(out / "checkpoints" / "last.ckpt"),
                 *data, *TINY, "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    preds = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    gt = json.loads((synth_data / "val.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_predictions"] == len(preds) > 0
    assert {p["image_id"] for p in preds} <= {im["id"] for im in gt["images"]}

    images = synth_data / "val"
    # the zoo name with a training checkpoint builds the model it trained (the tiny arch), not the zoo default
    assert main(["infer", "vit-tiny", str(images), "--checkpoint",
                 str(out / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "infer")]) == 0
    rows = json.loads((tmp_path / "infer" / "results.json").read_text())
    assert len(rows) == len(list(images.glob("*.jpg")))  # one whole-image box per image
    kp = np.asarray(rows[0]["keypoints"]).reshape(-1, 3)
    assert kp.shape == (17, 3) and np.isfinite(kp).all()
    assert len(list((tmp_path / "infer" / "vis").glob("*.png"))) == len(rows)
    # --exact: MMPose's arithmetic; the same poses to float32 rounding of the heatmaps
    assert main(["infer", str(out / "config.yaml"), str(images), "--checkpoint", str(out / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "exact"), "--no-render", "--exact"]) == 0
    exact = json.loads((tmp_path / "exact" / "results.json").read_text())
    assert [r["image_id"] for r in exact] == [r["image_id"] for r in rows]
    fast_kp = np.array([r["keypoints"] for r in rows]).reshape(len(rows), -1, 3)
    exact_kp = np.array([r["keypoints"] for r in exact]).reshape(len(rows), -1, 3)
    # The file holds 3 decimals: scores (heatmap maxima) one rounding step apart at most. Keypoints are not
    # comparable on this tiny run's near-flat maps (no joint well-posed: DARK turns float rounding into ~0.1 px
    # moves, by CPU; test_parity_mmpose compares the paths where the maps fix them): --exact's file holds exact
    # mode's predictions.
    np.testing.assert_allclose(exact_kp[..., 2], fast_kp[..., 2], rtol=0, atol=1.5e-3)
    model = sagepose.load(str(out / "config.yaml"), checkpoint=out / "checkpoints" / "last.ckpt", exact=True)
    for n, row in enumerate(exact):
        pred = model.predict(cv2.imread(str(images / row["file_name"])))  # the CLI's whole-image box
        np.testing.assert_allclose(exact_kp[n, :, :2], pred.keypoints[0], rtol=0, atol=6e-4)


def test_train_rejects_a_misspelt_override(synth_data, capsys):
    assert main(["train", "demo_tiny_vit", "data.batchsize=4"]) == 2
    assert capsys.readouterr().err == ("sagepose: error: override data.batchsize=4: unknown key 'batchsize'; "
                                       "did you mean 'batch_size'?\n")


def _sagepose(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sagepose.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env)


@pytest.mark.parametrize("argv, culprit", [
    (["train", "demo_tiny_vit", "data.batch_size=-4"], "override data.batch_size=-4: must be at least 1"),
    (["train", "demo_tiny_vit", "optim.schedule=cosin"], "did you mean 'cosine'?"),
    (["test", "demo_tiny_vit", "--checkpoint", "x.ckpt", "model.name=vit-tiniest"], "did you mean 'vit-tiny'?"),
    (["infer", "demo_tiny_vit", "img.jpg", "trainer.precision=bf16"], None),  # infer takes no overrides: usage
    (["train", "demo_tiny_vitt"], "demo_tiny_vitt: no such config file or bundled recipe"),
    (["train", "demo_tiny_vit", "optim.lrr=1"], "override optim.lrr=1: unknown key 'lrr'; did you mean 'lr'?"),
    (["infer", "vit-tiny", "img.jpg", "--checkpoint", "missing.ckpt"], "missing.ckpt"),
    (["convert", "missing.pth", "out.pth"], "missing.pth"),
    (["infer", "vit-tiniest", "img.jpg"], "did you mean 'vit-tiny'?"),
])
def test_a_cli_error_is_one_line_naming_the_culprit(argv, culprit, tmp_path):
    r = subprocess.run([sys.executable, "-m", "sagepose.cli.main", *argv], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    if culprit is None:  # argparse's own usage error
        assert r.returncode == 2 and "unrecognized arguments: trainer.precision=bf16" in r.stderr
        return
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("sagepose: error: ") and culprit in r.stderr, r.stderr


def test_a_typo_in_an_option_name_is_a_usage_error():
    r = _sagepose("test", "demo_tiny_vit", "--checkpiont", "x.ckpt", "data.val_json=v.json")
    assert r.returncode == 2 and "unrecognized option --checkpiont; did you mean --checkpoint?" in r.stderr


def test_sagepose_traceback_env_var_shows_the_traceback():
    import os

    r = _sagepose("train", "demo_tiny_vit", "optim.lrr=1", env={**os.environ, "SAGEPOSE_TRACEBACK": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    import sagepose.config

    def broken(*args, **kwargs):
        return {}["no such key"]  # a KeyError no sagepose raise statement made

    monkeypatch.setattr(sagepose.config, "load_config", broken)
    with pytest.raises(KeyError, match="no such key"):
        main(["train", "demo_tiny_vit"])


def test_ctrl_c_outside_a_training_step_is_one_line_and_status_130(monkeypatch, capsys):
    import sagepose.config

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. during the data check or while a large model is built

    monkeypatch.setattr(sagepose.config, "load_config", interrupted)
    assert main(["train", "demo_tiny_vit"]) == 130
    assert capsys.readouterr().err == "sagepose: interrupted (train)\n"


def test_options_and_overrides_mix_in_any_order():
    from sagepose.cli.main import parse_args

    for argv in (["test", "demo_tiny_vit", "--checkpoint", "c.ckpt", "data.val_json=v.json", "data.batch_size=2"],
                 ["test", "demo_tiny_vit", "data.val_json=v.json", "--checkpoint", "c.ckpt", "data.batch_size=2"],
                 ["test", "--checkpoint", "c.ckpt", "demo_tiny_vit", "data.val_json=v.json", "data.batch_size=2"]):
        args = parse_args(argv)
        assert (args.config, args.checkpoint, args.overrides) == ("demo_tiny_vit", "c.ckpt",
                                                                  ["data.val_json=v.json", "data.batch_size=2"])
    for argv in (["train", "cfg.yaml", "--resume", "k=v"], ["train", "cfg.yaml", "k=v", "--resume"]):
        args = parse_args(argv)
        assert args.resume and args.overrides == ["k=v"]


def test_fusion_loss_weights_come_from_the_run_config(synth_data, tmp_path, monkeypatch):
    import sagepose.train.module as module
    from sagepose.config import ConfigError, load_config

    seen = []
    real = module.fusion_loss

    def spy(*args, **kwargs):
        seen.append(args[4])  # loss_weights, passed positionally by the training step
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "fusion_loss", spy)
    data = [f"data.train_json={synth_data / 'train.json'}", f"trainer.out_dir={tmp_path / 'run'}"]
    assert main(["train", "demo_tiny_vit", *data, *TINY, "model.name=vit-tiny-fusion", "trainer.max_steps=2",
                 "trainer.fusion_loss.offset=0.0", "trainer.fusion_loss.heatmap=5.0"]) == 0
    assert seen and all(w.offset == 0.0 and w.heatmap == 5.0 and w.shape == 0.1 for w in seen)
    with pytest.raises(ConfigError, match="did you mean 'offset'"):
        load_config(None, ["trainer.fusion_loss.ofset=0"])


def test_purposeful_error_classes_are_sagepose_errors_of_their_builtin_kind():
    from sagepose.config import ConfigError
    from sagepose.errors import DataError, SagePoseError
    from sagepose.hub import ChecksumError, WeightsDownloadError
    from sagepose.image import ImageReadError
    from sagepose.models.checkpoint import CheckpointMismatchError, CheckpointReadError

    for cls, builtin in ((ConfigError, ValueError), (DataError, ValueError), (CheckpointReadError, RuntimeError),
                         (CheckpointMismatchError, RuntimeError), (WeightsDownloadError, RuntimeError),
                         (ChecksumError, RuntimeError), (ImageReadError, OSError)):
        assert issubclass(cls, SagePoseError) and issubclass(cls, builtin), cls


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    r = _sagepose("infer", tmp_path / "bad.ckpt", tmp_path / "img.jpg")
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"sagepose: error: {tmp_path / 'bad.ckpt'}")


def test_infer_accepts_a_bundled_recipe_name(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    assert main(["infer", "demo_tiny_vit", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                 "--no-render", "--random-weights"]) == 0  # as train and test accept it
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(rows) == 1 and len(rows[0]["keypoints"]) == 17 * 3
