"""What ``sagepose train`` / ``test`` leave behind, and what they refuse before leaving anything: the data check
before the run folder, a previous run never written over (OUT-2, --overwrite, --resume, one folder for every rank),
metrics.csv and curves.png per validation, a checkpoint as the recipe, one-line errors for settings Lightning would
answer with a traceback, the val images test renders, and why an MPII set is scored without PCKh."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from sagepose.cli.main import main
from sagepose.data.synth import generate_dataset

TINY = ["model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}", "data.batch_size=8",
        "data.val_batch_size=16", "data.num_workers=0", "trainer.val_every_epochs=1", "trainer.progress_bar=false",
        "optim.warmup_iters=1", "trainer.accelerator=cpu"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, 4, seed=1, split="train")
    generate_dataset(root, 2, seed=2, split="val")
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.train_json={data / 'train.json'}", f"data.val_json={data / 'val.json'}", f"trainer.out_dir={out}",
            *TINY, *extra]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """One finished run of two epochs (a validation after each)."""
    out = tmp_path_factory.mktemp("runs") / "x"
    assert main(["train", "demo_tiny_vit", *_args(data, out, "trainer.max_epochs=2")]) == 0
    return out


def _one_line_error(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("sagepose: error: ")]
    assert code != 0 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err[-2000:]
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- pre-flight ------------------------------------------------------------------------------------------------


def test_a_missing_train_json_is_one_line_before_any_run_folder(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "demo_tiny_vit", *_args(data, out)[1:], f"data.train_json={tmp_path / 'nope.json'}"])
    _one_line_error(capsys, code, f"data.train_json={tmp_path / 'nope.json'}: no such file")
    code = main(["train", "demo_tiny_vit", *_args(data, out)[1:]])  # not set at all
    assert code == 2 and "data.train_json is not set" in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_training_images_are_counted_and_named_before_any_run_folder(data, tmp_path, capsys):
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    images = sorted((broken / "train").glob("*.jpg"))
    images[0].write_text("not an image")
    images[1].unlink()
    out = tmp_path / "run"
    code = main(["train", "demo_tiny_vit", *_args(broken, out)])
    line = _one_line_error(capsys, code, f"{broken / 'train.json'}: 2 of {len(images)} images unreadable: ")
    assert f"train/{images[0].name} (not an image)" in line and f"train/{images[1].name} (missing)" in line
    assert not out.exists()


def test_readable_data_is_one_line_with_the_counts(data, tmp_path):
    from sagepose.config import load_config
    from sagepose.data.preflight import check_data

    line = check_data(load_config("demo_tiny_vit", _args(data, tmp_path / "run")))
    assert line.startswith("checked 4 training images, 2 val images: all readable (") and line.endswith(" s)")


def test_an_unlabeled_folder_without_images_fails_before_any_run_folder(data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code = main(["train", "demo_tiny_vit", *_args(data, out), "ssl.mode=semi", f"ssl.unlabeled={tmp_path / 'empty'}"])
    _one_line_error(capsys, code, f"{tmp_path / 'empty'}: no images")
    assert not out.exists()


# ---- run folders -----------------------------------------------------------------------------------------------


def test_metrics_csv_has_a_row_per_validation_and_curves_png_is_drawn(run):
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "1"), ("1", "2")]
    assert all(float(r["train/loss"]) > 0 and r["val/AP"] != "" and r["val/pixel_error"] != "" for r in rows)
    assert (run / "curves.png").read_bytes()[:8] == PNG


def test_a_second_train_into_a_used_folder_goes_to_a_new_one_and_leaves_the_first_intact(data, run, capsys):
    before = _digest(run)
    assert main(["train", "demo_tiny_vit", *_args(data, run, "trainer.max_steps=1")]) == 0
    moved = run.with_name(f"{run.name}-2")
    assert f"{run} holds a previous run: writing to {moved}" in capsys.readouterr().out
    assert _digest(run) == before
    assert (moved / "checkpoints" / "last.ckpt").is_file()
    assert f"out_dir: {moved}" in (moved / "config.yaml").read_text()
    assert json.loads((moved / "train_summary.json").read_text())["steps"] == 1


def test_overwrite_reuses_the_folder_without_a_stale_best_checkpoint(data, run, tmp_path):
    out = tmp_path / "x"
    shutil.copytree(run, out)
    (out / "notes.txt").write_text("mine")
    assert (out / "checkpoints" / "best.ckpt").is_file()
    # no val set: this run keeps no best.ckpt, so one there would be the previous run's
    args = [a for a in _args(data, out, "trainer.max_steps=1") if not a.startswith("data.val_json")]
    assert main(["train", "demo_tiny_vit", *args, "--overwrite"]) == 0
    assert not (out / "checkpoints" / "best.ckpt").exists() and not out.with_name("x-2").exists()
    assert not (out / "metrics.csv").exists()  # no validation in this run: the previous run's rows are gone
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # what the run does not own stays


def test_resume_keeps_the_rows_up_to_its_checkpoint_and_appends(data, run, tmp_path):
    out = tmp_path / "x"
    shutil.copytree(run, out)
    with open(out / "metrics.csv", "a") as f:  # a row the interrupted run wrote after its last checkpoint
        f.write("2,99,1.0\n")
    assert main(["train", "demo_tiny_vit", *_args(data, out, "trainer.max_epochs=3"), "--resume"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "1"), ("1", "2"), ("2", "3")]


def test_every_rank_of_a_launch_writes_into_the_same_folder(tmp_path, monkeypatch):
    from sagepose.cli.train import RUN_DIR_ENV, run_folder
    from sagepose.errors import OutputExistsError

    used = tmp_path / "x"
    (used / "checkpoints").mkdir(parents=True)
    # ranks Lightning starts by re-running the command take the first process's choice
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "x-2"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_folder(used) == tmp_path / "x-2"
    monkeypatch.delenv(RUN_DIR_ENV)
    # torchrun / srun: no numbering; rank 0 refuses a used folder (the launcher stops the rest), the others use it
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        run_folder(used, rank=0)
    assert run_folder(used, rank=1) == used
    assert run_folder(used, rank=0, overwrite=True) == used and run_folder(used, rank=0, resume=True) == used
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert run_folder(used) == tmp_path / "x-2" and run_folder(tmp_path / "new") == tmp_path / "new"


# ---- a checkpoint as the recipe --------------------------------------------------------------------------------


def test_test_takes_a_checkpoint_as_its_recipe_and_renders_val_images(data, run, tmp_path):
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    assert main(["test", str(ckpt), f"data.val_json={data / 'val.json'}", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(ckpt) and metrics["instances"] > 0 and 0 <= metrics["AP"] <= 1
    vis = sorted((out / "vis").glob("*.png"))
    assert len(vis) == 2 and all(p.read_bytes()[:8] == PNG for p in vis)
    # a second test into the same folder: a new one
    assert main(["test", str(ckpt), "--out", str(out), "--vis", "0"]) == 0
    assert (tmp_path / "eval-2" / "metrics.json").is_file() and not (tmp_path / "eval-2" / "vis").exists()


def test_train_fine_tunes_a_checkpoint_given_as_its_recipe(data, run, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    folder = run.with_name("fine")
    assert main(["train", str(ckpt), f"trainer.out_dir={folder}", "trainer.max_steps=1"]) == 0
    assert "fine-tuning" in capsys.readouterr().out
    saved = (folder / "config.yaml").read_text()
    assert f"init_checkpoint: {ckpt.resolve()}" in saved and "embed_dim: 32" in saved
    code = main(["train", str(ckpt), "--resume"])
    _one_line_error(capsys, code, "--resume with a checkpoint as CONFIG")


def test_a_foreign_checkpoint_as_recipe_is_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    for command in (["train", str(foreign)], ["test", str(foreign)]):
        _one_line_error(capsys, main(command), "a checkpoint without a sagepose run config")


# ---- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=-1", "override trainer.max_epochs=-1: must be at least 1, or -1 with trainer.max_steps"),
    ("trainer.max_epochs=0", "override trainer.max_epochs=0: must be at least 1"),
    ("trainer.max_steps=0", "override trainer.max_steps=0: must be at least 1, or -1"),
    ("trainer.checkpoint_every_minutes=-1", "override trainer.checkpoint_every_minutes=-1: must be >= 0"),
])
def test_epoch_and_step_limits_that_train_nothing_or_never_end_are_one_line(data, tmp_path, capsys, override,
                                                                             expected):
    code = main(["train", "demo_tiny_vit", *_args(data, tmp_path / "run"), override])
    assert code == 2
    _one_line_error(capsys, code, expected)
    assert not (tmp_path / "run").exists()


def test_no_epoch_limit_is_accepted_when_steps_bound_the_run():
    from sagepose.config import load_config

    assert load_config(None, ["trainer.max_epochs=-1", "trainer.max_steps=5"]).trainer.max_epochs == -1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_is_one_line_before_any_run_folder(data, tmp_path, capsys, accelerator):
    code = main(["train", "demo_tiny_vit", *_args(data, tmp_path / "run"), f"trainer.accelerator={accelerator}"])
    assert code == 2
    _one_line_error(capsys, code, f"trainer.accelerator='{accelerator}': no CUDA GPU")
    assert not (tmp_path / "run").exists()


# ---- evaluation ------------------------------------------------------------------------------------------------


def test_mpii_without_head_boxes_says_it_is_scored_by_pixel_error(tmp_path, capsys):
    from sagepose.config import load_config
    from sagepose.train.run import test

    val = generate_dataset(tmp_path, 1, seed=2, split="val", schema="mpii")
    gt = json.loads(Path(val).read_text())
    for ann in gt["annotations"]:
        ann.pop("head_box")
    Path(val).write_text(json.dumps(gt))
    cfg = load_config("demo_tiny_vit", [f"data.val_json={val}", "model.schema=mpii", f"trainer.out_dir={tmp_path}",
                                        *TINY])
    metrics = test(cfg, None)
    n = metrics["instances"]
    assert "PCKh" not in metrics and metrics["pixel_error"] is not None
    assert (f"{val}: MPII keypoints scored by pixel error, not PCKh: {n} of {n} instances have no head size"
            in capsys.readouterr().err)
