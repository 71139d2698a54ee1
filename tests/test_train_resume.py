"""Fault tolerance: atomic checkpoints, truncated-file fallback, and SIGKILL + --resume == never stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sagepose.data.synth import generate_dataset
from sagepose.train.checkpoints import AtomicCheckpointIO, checkpoint_problem, find_resume_checkpoint

# A child process: train per the JSON list of overrides, optionally --resume, sleeping PACE s after each batch
# (the pause only leaves the parent time to kill it between steps; it changes no number).
CHILD = """
import json, sys, time
from lightning.pytorch.callbacks import Callback
from sagepose.config import load_config
from sagepose.train.run import fit

class Pace(Callback):
    def on_train_batch_end(self, *args):
        time.sleep(float(sys.argv[3]))

fit(load_config(None, json.loads(sys.argv[1])), resume=sys.argv[2] == "1", callbacks=[Pace()])
"""


def _save(path: Path, payload: dict) -> None:
    AtomicCheckpointIO().save_checkpoint(payload, path)


def test_atomic_save_leaves_no_temporary_file_and_loads(tmp_path):
    path = tmp_path / "ck" / "last.ckpt"
    _save(path, {"w": torch.arange(5.0)})
    assert checkpoint_problem(path) is None
    assert torch.equal(torch.load(path)["w"], torch.arange(5.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_truncated_last_checkpoint_is_skipped_for_the_newest_complete_one(tmp_path, recwarn):
    ckpt = tmp_path / "checkpoints"
    for i, name in enumerate(["epoch-000.ckpt", "epoch-001.ckpt", "last.ckpt"]):
        _save(ckpt / name, {"step": i, "w": torch.randn(1000)})
        time.sleep(0.01)  # distinct modification times
    data = (ckpt / "last.ckpt").read_bytes()
    (ckpt / "last.ckpt").write_bytes(data[: len(data) // 2])  # as a full disk or a partial copy leaves it
    (ckpt / ".epoch-002.ckpt.tmp").write_bytes(data[:100])  # a write killed half-way: never a candidate

    assert "truncated" in checkpoint_problem(ckpt / "last.ckpt")
    assert find_resume_checkpoint(ckpt) == ckpt / "epoch-001.ckpt"
    messages = [str(w.message) for w in recwarn]
    assert any("last.ckpt: not a complete checkpoint: truncated" in m and "falling back" in m for m in messages)


def test_a_record_with_a_bad_crc_is_detected(tmp_path):
    path = tmp_path / "last.ckpt"
    _save(path, {"w": torch.zeros(4096)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    path.write_bytes(bytes(data))
    assert "CRC" in checkpoint_problem(path)


def test_no_checkpoint_means_none(tmp_path):
    assert find_resume_checkpoint(tmp_path / "missing") is None


def _overrides(data: Path, out: Path) -> list[str]:
    return [f"data.train_json={data / 'train.json'}", f"data.val_json={data / 'val.json'}", f"trainer.out_dir={out}",
            "model.name=vit-tiny", "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}",
            "model.drop_path_rate=0.2",  # uses the global torch RNG: its state must come back on resume
            "data.batch_size=8", "data.val_batch_size=16", "data.num_workers=1", "data.photometric_prob=0.5",
            "data.blur_prob=0.5", "data.noise_prob=0.5",  # the device augmentations draw from each sample's key
            "optim.warmup_iters=3", "optim.schedule=cosine", "optim.ema_decay=0.9",
            "trainer.max_epochs=2", "trainer.val_every_epochs=1", "trainer.progress_bar=false",
            "trainer.accelerator=cpu", "trainer.checkpoint_every_steps=3", "trainer.log_every_steps=1"]


def _child(overrides: list[str], resume: bool, pace: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(overrides), "1" if resume else "0", str(pace)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def _flat_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """Every tensor that decides how training goes on: weights, EMA, optimizer moments, schedule."""
    flat = {f"state_dict/{k}": v for k, v in ckpt["state_dict"].items()}
    flat |= {f"current/{k}": v for k, v in ckpt["current_model_state"].items()}
    for pid, state in ckpt["optimizer_states"][0]["state"].items():
        flat |= {f"optim/{pid}/{k}": torch.as_tensor(v) for k, v in state.items()}
    flat["lr"] = torch.tensor(ckpt["lr_schedulers"][0]["_last_lr"])
    return flat


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, 14, seed=1, split="train")
    generate_dataset(data, 3, seed=2, split="val")
    ref_out, run_out = tmp_path / "reference", tmp_path / "killed"

    reference = _child(_overrides(data, ref_out), resume=False, pace=0.0)
    victim = _child(_overrides(data, run_out), resume=False, pace=0.4)
    last = run_out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists():  # the first last.ckpt is the step-3 (mid-epoch) one: kill right after it
        assert victim.poll() is None and time.time() < deadline, victim.communicate()[0][-3000:]
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    _finish(reference)

    killed_at = torch.load(last, weights_only=False)
    assert 3 <= killed_at["global_step"] < 8  # stopped mid-run, at a mid-epoch checkpoint or a later one
    log = _finish(_child(_overrides(data, run_out), resume=True, pace=0.0))
    assert f"resuming from {last}" in log

    ref = torch.load(ref_out / "checkpoints" / "last.ckpt", weights_only=False)
    res = torch.load(last, weights_only=False)
    assert ref["global_step"] == res["global_step"] == 8
    ref_t, res_t = _flat_tensors(ref), _flat_tensors(res)
    assert ref_t.keys() == res_t.keys()
    differ = [k for k in ref_t if not torch.equal(ref_t[k], res_t[k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:5]}"
    summary = json.loads((run_out / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(last) and summary["steps"] == 8
