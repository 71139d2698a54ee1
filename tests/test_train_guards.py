"""Steps with a non-finite loss or gradient are skipped without touching the weights; gradient accumulation
adds up to the full batch's gradient; a frozen backbone stays frozen for its phase; val AP reaches the console."""
from __future__ import annotations

import os
import re
import sys

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sagepose.config import load_config
from sagepose.data.synth import generate_dataset
from sagepose.train.run import fit

NAN = float("nan")
# the host-read guard (plain AdamW) and the device-side one (fused AdamW skipping on found_inf)
OPTIMIZERS = pytest.mark.parametrize("opt", ["optim.fused=false", "optim.fused=true"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 16, seed=1, split="train")  # 39 people: a full batch of 32
    generate_dataset(root, 2, seed=2, split="val")
    return root


def _cfg(data, out, *extra):
    return load_config(None, [
        f"data.train_json={data / 'train.json'}", f"trainer.out_dir={out}", "model.name=vit-tiny",
        "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}", "data.batch_size=8",
        "data.num_workers=0", "optim.warmup_iters=0", "optim.lr=1e-3", "trainer.max_epochs=1",
        "trainer.progress_bar=false", "trainer.accelerator=cpu", *extra])


class Recorder(Callback):
    """Parameters and BatchNorm statistics after every optimizer step; optional sabotage at given steps."""

    def __init__(self, nan_output_steps=(), nan_grad_steps=()):
        self.nan_output_steps, self.nan_grad_steps = set(nan_output_steps), set(nan_grad_steps)
        self.states: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, pl_module):
        model = pl_module.model
        # NaN heatmaps (so a NaN loss) in the chosen steps, as a bad batch or an overflow would give
        model.head.register_forward_hook(
            lambda m, i, out: out * NAN if trainer.global_step in self.nan_output_steps else out)
        # a NaN gradient behind a finite loss
        model.head.final_conv.weight.register_hook(
            lambda g: g * NAN if trainer.global_step in self.nan_grad_steps else g)
        self.states.append(self._state(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.states.append(self._state(pl_module))

    @staticmethod
    def _state(pl_module):
        return {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@OPTIMIZERS
def test_nan_loss_step_is_skipped_with_weights_and_batchnorm_stats_unchanged(data, tmp_path, opt):
    rec = Recorder(nan_output_steps={1})
    summary = fit(_cfg(data, tmp_path / "run", "trainer.max_steps=3", opt), callbacks=[rec])
    before, after_skip, after_next = rec.states[1], rec.states[2], rec.states[3]
    assert _same(before, after_skip)  # weights and BatchNorm running statistics, bit for bit
    assert "backbone.patch_embed.stages.0.1.running_mean" in before  # (the stem has BatchNorm)
    assert not _same(after_skip, after_next)  # and training goes on
    assert all(torch.isfinite(v).all() for v in after_next.values() if v.is_floating_point())
    assert summary["skipped_steps"] == 1 and summary["steps"] == 3
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    steps = {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert steps == {2}  # AdamW stepped twice: the skipped step moved neither weights nor moments


@OPTIMIZERS
def test_nan_gradient_behind_a_finite_loss_is_skipped(data, tmp_path, opt):
    rec = Recorder(nan_grad_steps={0})
    summary = fit(_cfg(data, tmp_path / "run", "trainer.max_steps=2", opt), callbacks=[rec])
    assert _same(rec.states[0], rec.states[1]) and not _same(rec.states[1], rec.states[2])
    assert summary["skipped_steps"] == 1


@OPTIMIZERS
def test_a_nan_micro_batch_skips_the_whole_accumulated_step(data, tmp_path, opt):
    class NanSecondMicroBatch(Recorder):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.nan_output_steps = {0} if batch_idx == 1 else set()

    rec = NanSecondMicroBatch()
    fit(_cfg(data, tmp_path / "run", "trainer.max_steps=2", "trainer.accumulate_grad_batches=2", opt),
        callbacks=[rec])
    assert _same(rec.states[0], rec.states[1]) and not _same(rec.states[1], rec.states[2])


def test_too_many_nonfinite_steps_in_a_row_stop_the_run_with_a_clear_message(data, tmp_path):
    rec = Recorder(nan_output_steps=set(range(100)))
    cfg = _cfg(data, tmp_path / "run", "trainer.max_nonfinite_steps=3")
    with pytest.raises(FloatingPointError, match=r"3 optimizer steps in a row .* non-finite loss or gradient"):
        fit(cfg, callbacks=[rec])
    assert all(_same(rec.states[0], s) for s in rec.states[1:])  # never updated with NaN


def test_with_fused_adamw_a_run_of_bad_steps_stops_at_the_next_read_of_the_counters(data, tmp_path):
    rec = Recorder(nan_output_steps=set(range(100)))
    cfg = _cfg(data, tmp_path / "run", "trainer.max_nonfinite_steps=3", "optim.fused=true",
               "trainer.log_every_steps=2")  # read after steps 2 and 4: two bad in a row, then four
    with pytest.raises(FloatingPointError, match=r"4 optimizer steps in a row .* non-finite loss or gradient"):
        fit(cfg, callbacks=[rec])
    assert len(rec.states) == 4 and all(_same(rec.states[0], s) for s in rec.states[1:])  # raised in step 4


@pytest.mark.parametrize("fused", [False, True])
def test_with_fused_adamw_no_step_reads_the_device(data, tmp_path, monkeypatch, fused):
    """The fused path keeps the guard on the device: sagepose's training code reads no tensor on the host inside a
    step (a GPU would wait for its queue there); the plain path reads one flag a step (the check can fail)."""
    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__int__", "__float__")}

    def counted(name):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if inside[0] and f"{os.sep}sagepose{os.sep}" in caller:
                reads.append((name, caller))
            return originals[name](self, *args, **kwargs)
        return read

    inside = [False]

    class Window(Callback):
        def on_train_batch_start(self, *args):
            inside[0] = True

        def on_train_batch_end(self, *args):
            inside[0] = False

    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    summary = fit(_cfg(data, tmp_path / "run", "trainer.max_steps=3", f"optim.fused={fused}",
                       "trainer.log_every_steps=100"), callbacks=[Window(), Recorder(nan_output_steps={1})])
    assert summary["skipped_steps"] == 1  # read once, at the end of training
    assert (len(reads) == 0) if fused else (len(reads) >= 3), reads


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adamw_steps_on_clipped_gradients_in_every_precision(data, tmp_path, precision):
    """Lightning's bf16 plugin refuses to clip for a fused optimizer; the module clips itself (no scaler to undo)."""
    norms = []

    class StepNorms(Callback):
        def on_fit_start(self, trainer, pl_module):
            def record(optimizer, args, kwargs):
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            trainer.optimizers[0].register_step_post_hook(record)  # the closure (backward, clipping) runs in step

    fit(_cfg(data, tmp_path / "run", "trainer.max_steps=2", "optim.fused=true", "optim.grad_clip=0.001",
             f"trainer.precision={precision}"), callbacks=[StepNorms()])
    assert len(norms) == 2 and all(n <= 0.001 * (1 + 1e-5) for n in norms), norms


def test_accumulating_4_batches_of_8_gives_the_gradient_of_one_batch_of_32(data, tmp_path):
    class FirstGradient(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 0:
                self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}

    # No BatchNorm (a patch-embedding stem, InstanceNorm in the head) and the per-pixel-mean MSE loss: the
    # mean of 4 micro-batch means is then exactly the mean over 32 (BatchNorm statistics of 8 are not those
    # of 32, and the cross-entropy loss normalises by each micro-batch's joint count).
    arch = "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64, 'stem_channels': (), 'norm': 'in'}"
    common = [arch, "model.heatmap_output=raw", "trainer.max_steps=1", "optim.grad_clip=None"]
    grads = {}
    for name, batch, accumulate in (("4x8", 8, 4), ("1x32", 32, 1)):
        cap = FirstGradient()
        fit(_cfg(data, tmp_path / name, *common, f"data.batch_size={batch}",
                 f"trainer.accumulate_grad_batches={accumulate}"), callbacks=[cap])
        grads[name] = cap.grads
    diff = max((grads["4x8"][k] - grads["1x32"][k]).abs().max().item() for k in grads["1x32"])
    scale = max(g.abs().max().item() for g in grads["1x32"].values())
    print(f"accumulated 4 x 8 vs batch 32: max abs gradient difference {diff:.1e} (largest gradient {scale:.1e})")
    assert diff < 1e-5 and scale > 1e-3


def test_frozen_backbone_phase_trains_only_the_head_then_everything(data, tmp_path):
    rec = Recorder()
    fit(_cfg(data, tmp_path / "run", "optim.freeze_backbone_epochs=1", "trainer.max_epochs=2"), callbacks=[rec])
    per_epoch = (len(rec.states) - 1) // 2
    first, mid, last = rec.states[0], rec.states[per_epoch], rec.states[-1]
    backbone = [k for k in first if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    head = [k for k in first if k.startswith("head.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(first[k], mid[k]) for k in backbone)  # phase 1: backbone weights untouched
    assert not all(torch.equal(first[k], mid[k]) for k in head)
    assert not all(torch.equal(mid[k], last[k]) for k in backbone)  # phase 2: everything trains


def test_each_validation_prints_its_ap_line_with_the_progress_bar_on(data, tmp_path, capfd):
    fit(_cfg(data, tmp_path / "run", f"data.val_json={data / 'val.json'}", "trainer.val_every_epochs=1",
             "trainer.progress_bar=true"))
    out, err = capfd.readouterr()
    lines = re.findall(r"epoch (\d+) step (\d+): val AP \d\.\d{3} AP50 \d\.\d{3} AR \d\.\d{3}", out + err)
    assert lines == [("0", "4")]  # one validation, after the epoch's 4 steps (39 people, batches of 8)
