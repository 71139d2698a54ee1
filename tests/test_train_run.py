"""sagepose.train.run: what a finished fit reports about how it ended."""
from __future__ import annotations

import pytest

from sagepose.config import load_config
from sagepose.data.synth import generate_dataset
from sagepose.train.run import fit


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
