"""Fault tolerance: atomic checkpoints, truncated-file fallback, and SIGKILL + --resume == never stopped."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from stop_at import STEP_LINE, child_env

from sagepose.config import load_config
from sagepose.data.synth import generate_dataset
from sagepose.train.checkpoints import AtomicCheckpointIO, LastCheckpoint, checkpoint_problem, find_resume_checkpoint
from sagepose.train.run import fit

# fit() per the JSON list of overrides, optionally --resume, stopped by StopAt(step, signal) (signal 0: not stopped)
CHILD = """
import json, sys
from stop_at import StopAt
from sagepose.config import load_config
from sagepose.train.run import fit

fit(load_config(None, json.loads(sys.argv[1])), resume=sys.argv[2] == "1",
    callbacks=[StopAt(int(sys.argv[3]), int(sys.argv[4]), rank=None)])
"""

# the `sagepose` command with the JSON list of arguments, its fit stopped by StopAt(step, signal, rank)
CLI_CHILD = """
import functools, json, sys
import sagepose.train.run
from stop_at import StopAt
from sagepose.cli.main import main

stop = StopAt(int(sys.argv[2]), int(sys.argv[3]), rank=int(sys.argv[4]))
sagepose.train.run.fit = functools.partial(sagepose.train.run.fit, callbacks=[stop])
sys.exit(main(json.loads(sys.argv[1])))
"""


def _save(path: Path, payload: dict) -> None:
    AtomicCheckpointIO().save_checkpoint(payload, path)


def test_atomic_save_leaves_no_temporary_file_and_loads(tmp_path):
    path = tmp_path / "ck" / "last.ckpt"
    _save(path, {"w": torch.arange(5.0)})
    assert checkpoint_problem(path) is None
    assert torch.equal(torch.load(path)["w"], torch.arange(5.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


STAMP = 1_500_000_000 * 10**9  # a modification time (ns) in 2017, long before any file here is written


def test_truncated_last_checkpoint_is_skipped_for_the_newest_complete_one(tmp_path, recwarn):
    ckpt = tmp_path / "checkpoints"
    g = torch.Generator().manual_seed(0)
    for i, name in enumerate(["epoch-000.ckpt", "epoch-001.ckpt", "last.ckpt"]):
        _save(ckpt / name, {"step": i, "w": torch.randn(1000, generator=g)})
        os.utime(ckpt / name, ns=(STAMP + i * 10**9,) * 2)  # modified a second apart, in this order
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


def _child(overrides: list[str], resume: bool, stop_at: int = -1, sig: int = 0) -> subprocess.Popen:
    """fit() in a child process; ``sig`` (not 0) sent to it at optimizer step ``stop_at`` (:class:`StopAt`)."""
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(overrides), "1" if resume else "0",
                             str(stop_at), str(int(sig))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env())


def _cli_child(argv: list[str], stop_at: int = -1, sig: int = 0, rank: int = 0,
               launcher: list[str] = ()) -> subprocess.Popen:
    """The ``sagepose`` command in a child process; ``sig`` (not 0) sent to its process of ``rank`` at optimizer step
    ``stop_at``."""
    return subprocess.Popen([*launcher, sys.executable, "-c", CLI_CHILD, json.dumps(argv), str(stop_at), str(int(sig)),
                             str(rank)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=child_env(OMP_NUM_THREADS="1"))


def _output(proc: subprocess.Popen) -> str:
    """Everything the child printed, once it has ended."""
    out, _ = proc.communicate(timeout=300)
    return out


def _finish(proc: subprocess.Popen) -> str:
    out = _output(proc)
    assert proc.returncode == 0, out[-3000:]
    return out


def _steps_done(log: str, rank: int = 0) -> list[int]:
    """The optimizer steps ``rank`` reported finished (:data:`STEP_LINE`), in order."""
    return [int(m["step"]) for m in STEP_LINE.finditer(log) if int(m["rank"]) == rank]


def _flat_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """Every tensor that decides how training goes on: weights, EMA, optimizer moments, schedule."""
    flat = {f"state_dict/{k}": v for k, v in ckpt["state_dict"].items()}
    flat |= {f"current/{k}": v for k, v in ckpt.get("current_model_state", {}).items()}
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

    reference = _child(_overrides(data, ref_out), resume=False)
    # the first last.ckpt is the step-3 (mid-epoch) one: killed right after it, before step 4 begins
    victim = _child(_overrides(data, run_out), resume=False, stop_at=3, sig=signal.SIGKILL)
    last = run_out / "checkpoints" / "last.ckpt"
    out = _output(victim)
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    assert _steps_done(out) == [1, 2, 3]
    _finish(reference)

    killed_at = torch.load(last, weights_only=False)
    assert killed_at["global_step"] == 3  # stopped mid-run, at the mid-epoch checkpoint
    log = _finish(_child(_overrides(data, run_out), resume=True))
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


def _recipe_args(data: Path, out: Path, *extra: str) -> list[str]:
    """``sagepose train`` of a shipped recipe on the tiny data set (3 epochs of 4 steps), its checkpoint settings as
    shipped: no step checkpoint (every 100) and no validation (at step 1000) within these 12 steps."""
    return ["train", "custom_tiny_vit", f"data.train_json={data / 'train.json'}", f"data.val_json={data / 'val.json'}",
            f"trainer.out_dir={out}", "model.schema=coco",
            "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}",
            "model.drop_path_rate=0.2",  # uses the global torch RNG: its state must come back on resume
            "data.batch_size=8", "optim.warmup_iters=3", "optim.ema_decay=0.9", "trainer.max_epochs=3",
            "trainer.progress_bar=false", "trainer.accelerator=cpu", *extra]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny data set, and the last checkpoint of an uninterrupted run of :func:`_recipe_args` on it."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = root / "data"
    generate_dataset(data, 14, seed=1, split="train")
    generate_dataset(data, 3, seed=2, split="val")
    _finish(_cli_child(_recipe_args(data, root / "reference")))
    return data, torch.load(root / "reference" / "checkpoints" / "last.ckpt", weights_only=False)


def _assert_same_training_state(ref: dict, res: dict) -> None:
    assert ref["global_step"] == res["global_step"]
    ref_t, res_t = _flat_tensors(ref), _flat_tensors(res)
    assert ref_t.keys() == res_t.keys()
    differ = [k for k in ref_t if not torch.equal(ref_t[k], res_t[k])]
    assert not differ, f"{len(differ)} tensors differ after resume, e.g. {differ[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("sig, step", [(signal.SIGINT, 6), (signal.SIGTERM, 9)])  # 2nd step of epoch 1, 1st of 2
def test_a_signal_mid_epoch_stops_with_a_checkpoint_that_resumes_bit_identical(tiny_run, tmp_path, sig, step):
    data, reference = tiny_run
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    child = _cli_child(_recipe_args(data, out), stop_at=step, sig=sig)
    log = _output(child)
    assert child.returncode == 128 + sig, log[-3000:]  # the shell's status for a run ended by that signal

    said = [line for line in log.splitlines() if line.startswith("sagepose: ")]
    assert said == [f"sagepose: interrupted at step {step} ({sig.name}); resumable checkpoint {last}; continue with: "
                    f"sagepose train {out / 'config.yaml'} --resume"], log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert _steps_done(log) == list(range(1, step + 1))  # the step under way finished, and no other began
    stopped = torch.load(last, weights_only=False)
    assert stopped["global_step"] == step and stopped["epoch"] == step // 4  # mid-epoch
    assert json.loads((out / "train_summary.json").read_text())["interrupted_by"] == sig.name

    command = shlex.split(said[0].split("continue with: ")[1])
    assert command[:2] == ["sagepose", "train"]
    resumed = _cli_child(command[1:])
    assert f"resuming from {last}" in _finish(resumed)
    _assert_same_training_state(reference, torch.load(last, weights_only=False))


class _LastOnDisk(Callback):
    """Records, before each batch, (optimizer steps done, the step last.ckpt holds or None)."""

    def __init__(self, last: Path):
        self.last, self.seen = last, []

    def on_train_batch_start(self, trainer, *args):
        on_disk = torch.load(self.last, weights_only=False)["global_step"] if self.last.exists() else None
        self.seen.append((trainer.global_step, on_disk))


def test_last_checkpoint_is_written_at_each_epoch_end_without_validation(tiny_run, tmp_path):
    data, _ = tiny_run
    out = tmp_path / "run"
    probe = _LastOnDisk(out / "checkpoints" / "last.ckpt")
    fit(load_config("custom_tiny_vit", _recipe_args(data, out, "trainer.max_epochs=2",
                                                    "trainer.checkpoint_every_steps=0")[2:]), callbacks=[probe])
    # the recipe validates at its 1000th step: none ran; nothing mid-epoch (10 minutes between time-based ones; no
    # step interval, which would also thin out the epoch-end saves)
    assert probe.seen == [(0, None), (1, None), (2, None), (3, None), (4, 4), (5, 4), (6, 4), (7, 4)]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


def test_last_checkpoint_is_written_every_n_minutes_mid_epoch(tiny_run, tmp_path):
    data, _ = tiny_run
    out = tmp_path / "run"
    probe = _LastOnDisk(out / "checkpoints" / "last.ckpt")

    class StepClock(Callback):  # each optimizer step takes 25 s by this clock
        def on_train_start(self, trainer, *args):
            last = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
            last.clock = lambda: 25.0 * trainer.global_step

    cfg = load_config("custom_tiny_vit", _recipe_args(data, out, "trainer.max_epochs=2",
                                                      "trainer.checkpoint_every_steps=0",
                                                      "trainer.checkpoint_every_minutes=1")[2:])
    fit(cfg, callbacks=[StepClock(), probe])
    # a minute after the start (step 3), the epoch's end (step 4, the clock restarts), a minute later (step 7)
    assert probe.seen == [(0, None), (1, None), (2, None), (3, 3), (4, 4), (5, 4), (6, 4), (7, 7)]


@pytest.mark.slow
def test_a_signal_to_one_ddp_rank_stops_both_at_the_same_step(tiny_run, tmp_path):
    data, _ = tiny_run
    out = tmp_path / "ddp"
    last = out / "checkpoints" / "last.ckpt"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python"]
    args = _recipe_args(data, out, "trainer.strategy=ddp", "trainer.devices=2")  # 2 steps an epoch per rank
    log = _output(_cli_child(args, stop_at=3, sig=signal.SIGTERM, rank=1, launcher=torchrun))

    # rank 1 got it, rank 0 wrote the checkpoint of step 3 and said so; both finished step 3, neither began another
    assert f"sagepose: interrupted at step 3 (SIGTERM); resumable checkpoint {last}" in log, log[-3000:]
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert _steps_done(log, rank=1) == _steps_done(log, rank=0) == [1, 2, 3], log[-3000:]


@pytest.mark.slow
def test_a_semi_supervised_adapter_run_stopped_by_sigterm_resumes_bit_identical(tiny_run, tmp_path):
    """What a Sapiens2 adapter run on a cluster meets: ``model.lora`` on a base checkpoint, an EMA teacher of the
    adapters and head, an unlabeled batch each step; SIGTERM mid-epoch, then the printed command resumes it to the
    same adapters, teacher, optimizer moments and schedule as a run never stopped (no frozen base in either file)."""
    from sagepose.models import build_model
    from sagepose.models.checkpoint import save_checkpoint

    data, _ = tiny_run
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "base.pth", build_model("vit-tiny", arch={"depth": 2, "embed_dim": 32, "num_heads": 2,
                                                                         "mlp_dim": 64}).state_dict(),
                    model="vit-tiny")
    extra = (f"model.init_checkpoint={tmp_path / 'base.pth'}", "model.lora={'rank': 4, 'alpha': 8.0}",
             "optim.ema_decay=0", "ssl.mode=semi", f"ssl.unlabeled={data / 'train.json'}", "ssl.batch_size=4",
             "trainer.max_epochs=2")
    _finish(_cli_child(_recipe_args(data, tmp_path / "reference", *extra)))
    reference = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=False)
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    child = _cli_child(_recipe_args(data, out, *extra), stop_at=6, sig=signal.SIGTERM)
    log = _output(child)
    assert child.returncode == 128 + signal.SIGTERM, log[-3000:]
    said = [line for line in log.splitlines() if line.startswith("sagepose: ")]
    assert said and said[0].startswith(f"sagepose: interrupted at step 6 (SIGTERM); resumable checkpoint {last}")
    stopped = torch.load(last, weights_only=False)
    assert stopped["global_step"] == 6 and not any(k.endswith("attn.qkv.weight") for k in stopped["state_dict"])
    assert any("teacher" in k and k.endswith("lora_b") for k in stopped["state_dict"])  # the teacher's adapters
    resumed = _cli_child(shlex.split(said[0].split("continue with: ")[1])[1:])
    assert f"resuming from {last}" in _finish(resumed)
    _assert_same_training_state(reference, torch.load(last, weights_only=False))


SECOND_SIGNAL = """
import os, signal, sys
from sagepose.train.interrupt import StopSignals
stops = StopSignals()
stops.install()
os.kill(os.getpid(), signal.{sig})  # the first: noted, the process goes on
print("noted", stops.received, flush=True)
os.kill(os.getpid(), signal.{sig})  # the second: obeyed at once
print("survived", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_first_signal_is_noted_and_a_second_ends_the_process_at_once(sig):
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL.format(sig=sig)], capture_output=True, text=True,
                          timeout=60)
    signum = getattr(signal, sig)
    assert proc.stdout.split() == ["noted", str(int(signum))]
    assert proc.returncode == -signum  # ended by the signal itself, as an uncaught one would
