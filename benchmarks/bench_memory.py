"""Peak training memory per fine-tuning recipe, and what activation checkpointing saves on a ViT.

    python benchmarks/bench_memory.py                       # both tables
    python benchmarks/bench_memory.py --only checkpointing  # ViT activation memory, checkpointing off / on
    python benchmarks/bench_memory.py --only recipes        # every configs/finetune_*.yaml
    python benchmarks/bench_memory.py --only recipes --recipes NAME --set model.lora.rank=0  # its full fine-tune

With a CUDA GPU the figures are measured (``torch.cuda.max_memory_allocated``): activations as the
memory still allocated after forward + loss minus before it; a recipe's peak over 3 optimizer steps of
``sagepose.train.run.fit`` (Lightning precision, EMA, FSDP, the real data pipeline on synthetic people)
in a process of its own, with the frozen-backbone phase off (the full phase is the peak).

Without one, a CPU proxy:

* activations: the bytes of the distinct tensors autograd keeps for the backward (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, one count per storage, parameters left out) in a forward
  under the recipe's bf16 autocast. The forward runs on fake tensors (``FakeTensorMode``: shapes and
  dtypes, no arithmetic), so a Sapiens-1B step at its batch costs nothing; checked against real CPU
  tensors for ViTPose-B below (the first row of the checkpointing table). Blocks are identical, so a
  model's figure is its 0-block copy plus depth x (1-block minus 0-block copy);
* static: fp32 weights + fp32 gradients + AdamW's two moments + an EMA copy; with FSDP CPU offload,
  the unit being run and the next (bf16 weights, gradients) plus the root unit (stem, head) instead.
  With adapters (``model.lora``) only the trainable parameters (adapters, ``train_blocks``, the head) carry
  gradients and moments; a semi-supervised run's teacher (``ssl.mode``) is a second fp32 copy of what trains
  -- of the whole model without adapters, of the trainable parameters with them (it shares the frozen base);
  its student runs the labeled and ``ssl.num_strong_views`` x the unlabeled crops, so its activations are
  counted at that batch (the teacher's forward is under no_grad and keeps nothing);
* peak proxy = static + activations + the backward's working set: with checkpointing one block's
  recomputed activations, and 3x the largest kept tensor (its gradient and the input gradient next to
  it). It leaves out the allocator's slack and the CUDA context (~0.4 GB): recipes keep 25 % spare.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from sagepose.config import load_config  # noqa: E402
from sagepose.configs import CONFIG_DIR  # noqa: E402
from sagepose.models import build_model  # noqa: E402
from sagepose.models.lora import add_adapters  # noqa: E402
from sagepose.models.sapiens2 import SAPIENS2_SIZES  # noqa: E402
from sagepose.models.vit import VIT_SIZES  # noqa: E402

GIB = 2 ** 30
BUDGETS = {"4gb": 4, "24gb": 24, "80gb": 80}  # recipe file name suffix -> GPU memory, GB


def recipe_paths(names=None) -> list[Path]:
    if names:
        return [CONFIG_DIR / f"{n.removesuffix('.yaml')}.yaml" for n in names]
    return sorted(CONFIG_DIR.glob("finetune_*.yaml"))


def budget_gb(path: Path) -> int:
    return next(BUDGETS[part] for part in reversed(path.stem.split("_")) if part in BUDGETS)  # ..._80gb_lora_ssl


# ---- activations -------------------------------------------------------------------------------------
def saved_tensors(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> dict[int, int]:
    """{storage id: bytes} of what autograd keeps for the backward of forward + loss (parameters left out)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().square().mean()
    return seen


def activation_profile(name: str, batch: int, ckpt: bool, bf16: bool = True, lora: dict | None = None) -> dict:
    """CPU proxy of a model's kept activations at ``batch``: from 0- and 1-block copies on fake tensors. With
    ``lora`` (``model.lora`` as a dict) the adapters go on and the base is frozen; then from 1- and 2-block
    copies, as a 0-block copy with a frozen stem keeps nothing for the final norm that a real one keeps."""
    adapted = bool(lora and lora.get("rank"))
    first = int(adapted)
    kept, largest = {}, 0
    for depth in (first, first + 1):
        model = build_model(name, grad_checkpointing=ckpt, arch={"depth": depth}).train()
        if adapted:
            add_adapters(model, **lora)
        w, h = model.input_size
        with FakeTensorMode(allow_non_fake_inputs=True):
            seen = saved_tensors(model, torch.empty(batch, 3, h, w), bf16)
        kept[depth], largest = sum(seen.values()), max(largest, max(seen.values()))
    # Sapiens2's 1-block copy is a full-attention block: its grouped-query blocks are counted as such (a bound)
    depth = {**VIT_SIZES, **SAPIENS2_SIZES}[name]["depth"]
    block = kept[first + 1] - kept[first]
    return {"activations": kept[first] + (depth - first) * block, "block": block, "largest": largest}


def checkpointing_rows(gpu: bool) -> list[dict]:
    rows = []
    if gpu:
        for name, batch in (("vitpose-b", 32), ("sapiens-0.3b", 4), ("sapiens2-1b", 4)):
            held = {ckpt: gpu_held_activations(name, batch, ckpt) for ckpt in (False, True)}
            rows.append({"model": name, "batch": batch, "how": "GPU, allocated for the backward",
                         "plain": held[False], "ckpt": held[True]})
        return rows
    # cross-check of the fake-tensor proxy: the same count on real CPU tensors, real arithmetic
    real = {}
    for ckpt in (False, True):
        model = build_model("vitpose-b", grad_checkpointing=ckpt).train()
        real[ckpt] = sum(saved_tensors(model, torch.randn(2, 3, 256, 192), bf16=True).values())
    rows.append({"model": "vitpose-b", "batch": 2, "how": "real CPU tensors", "plain": real[False],
                 "ckpt": real[True]})
    for name, batch in (("vitpose-b", 2), ("vitpose-b", 32), ("sapiens-0.3b", 4), ("sapiens-1b", 4),
                        ("sapiens2-1b", 4), ("sapiens2-5b", 4)):
        prof = {ckpt: activation_profile(name, batch, ckpt)["activations"] for ckpt in (False, True)}
        rows.append({"model": name, "batch": batch, "how": "fake tensors", "plain": prof[False], "ckpt": prof[True]})
    return rows


def gpu_held_activations(name: str, batch: int, ckpt: bool) -> int:
    with torch.device("cuda"):
        model = build_model(name, grad_checkpointing=ckpt).train()
        x = torch.randn(batch, 3, model.input_size[1], model.input_size[0])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    loss = out.float().square().mean()
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    del model, x, out, loss
    torch.cuda.empty_cache()
    return held


# ---- recipes -----------------------------------------------------------------------------------------
def describe(path: Path, overrides=()) -> dict:
    cfg = load_config(path, list(overrides))
    t, o = cfg.trainer, cfg.optim
    return {"recipe": " ".join([path.stem, *overrides]), "model": cfg.model.name, "ckpt": cfg.model.grad_checkpointing,
            "batch": cfg.data.batch_size, "accumulate": t.accumulate_grad_batches, "precision": t.precision,
            "strategy": t.strategy + ("+offload" if t.fsdp_cpu_offload else ""), "ema": o.ema_decay > 0,
            "fused": o.fused, "gpu_gb": budget_gb(path), "lora": cfg.model.lora.rank or 0, "ssl": cfg.ssl.mode}


def recipe_proxy(path: Path, overrides=()) -> dict:
    cfg = load_config(path, list(overrides))
    m, t, o, s = cfg.model, cfg.trainer, cfg.optim, cfg.ssl
    lora = dataclasses.asdict(m.lora) if m.lora.rank else None
    with torch.device("meta"):
        model = build_model(m.name)
        if lora:
            add_adapters(model, **lora)
    n_bytes = sum(p.numel() * 4 for p in model.parameters())  # fp32 master weights
    trained = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)  # all of them without adapters
    if t.fsdp_cpu_offload:  # weights, gradients, optimizer in host memory; two units at a time on the GPU
        unit = max(sum(p.numel() for p in b.parameters()) for b in model.backbone.blocks)
        root = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.backbone.blocks.parameters())
        static = 2 * unit * (2 + 2) + root * (2 + 4)  # bf16 weights + bf16 grads; root: bf16 copy + fp32 grads
    else:
        static = n_bytes + trained * (1 + 2) + (n_bytes if o.ema_decay > 0 else 0)  # Lightning's EMA: everything
        static += 0 if o.fused else trained  # foreach AdamW materialises sqrt(v) for every trained parameter
    static += trained if s.mode != "off" else 0  # the teacher: what trains (it shares an adapter run's base)
    batch = cfg.data.batch_size * (s.mode != "unsup_only") + s.batch_size * s.num_strong_views * (s.mode != "off")
    prof = activation_profile(m.name, batch, m.grad_checkpointing, "bf16" in str(t.precision), lora)
    working = 3 * prof["largest"]
    if m.grad_checkpointing:  # the backward recomputes one block with everything it keeps
        working += activation_profile(m.name, batch, False, lora=lora)["block"]
    return {"static": static, "activations": prof["activations"], "working": working,
            "peak": static + prof["activations"] + working, "measured": "CPU proxy"}


def recipe_on_gpu(path: Path, data_dir: Path, steps: int = 3, overrides=()) -> dict:
    """Train ``steps`` optimizer steps of the recipe in a process of its own; its peak allocation."""
    cmd = [sys.executable, __file__, "--run-recipe", str(path), "--data", str(data_dir), "--steps", str(steps),
           "--set", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": "out of memory" if "OutOfMemoryError" in proc.stderr else proc.stderr[-800:]}
    return json.loads(lines[-1][len("RESULT "):])


def recipe_run_config(path: Path, data_dir: Path, out: str, steps: int, overrides=()):
    """The recipe as :func:`run_recipe` trains it: ``data_dir``'s synthetic people (labeled, and as a semi-supervised
    recipe's unlabeled source: their boxes), no validation, no init checkpoint (an adapter recipe's base random), the
    full fine-tuning phase from the first step, no stage 0 first."""
    common = [f"data.train_json={data_dir / 'train.json'}", "data.val_json=null", f"trainer.out_dir={out}",
              f"trainer.max_steps={steps}", "trainer.progress_bar=false", "optim.freeze_backbone_epochs=0",
              "model.init_checkpoint=null", "trainer.checkpoint_every_steps=0"]
    if load_config(path, list(overrides)).ssl.mode != "off":
        common += [f"ssl.unlabeled={data_dir / 'train.json'}", "ssl.warm_start=null", "ssl.every_n=1"]
    return load_config(path, [*common, *overrides])


def run_recipe(path: Path, data_dir: Path, steps: int, overrides=()) -> None:
    from sagepose.train.run import fit

    with tempfile.TemporaryDirectory() as out:
        cfg = recipe_run_config(path, data_dir, out, steps, overrides)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fit(cfg)
        seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"peak": torch.cuda.max_memory_allocated(), "static": None,
                                  "reserved": torch.cuda.max_memory_reserved(), "seconds": seconds,
                                  "measured": torch.cuda.get_device_name(0)}))


# ---- output ------------------------------------------------------------------------------------------
def print_checkpointing(rows: list[dict]) -> None:
    print("\nViT activation memory kept for the backward at equal batch (bf16 autocast; MiB)")
    print("| model | batch | counted on | no checkpointing | per-block checkpointing | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['how']} | {r['plain'] / 2 ** 20:.0f} | {r['ckpt'] / 2 ** 20:.0f} | "
              f"{r['plain'] / r['ckpt']:.1f}x |")


def print_recipes(rows: list[dict]) -> None:
    print("\nPeak training memory per recipe, full fine-tuning phase (GiB; GPU sizes in GB)")
    print("| recipe | model | act. ckpt | batch x accum | strategy | EMA | fused | static | activations | "
          "working | peak | GPU | peak / GPU | measured |")
    print("|" + "---|" * 14)
    for r in rows:
        if "error" in r:
            print(f"| {r['recipe']} | {r['model']} | ... | {r['error'].splitlines()[-1][:80]} |")
            continue
        gib = {k: "-" if r.get(k) is None else f"{r[k] / GIB:.2f}" for k in ("static", "activations", "working",
                                                                                "peak")}
        print(f"| {r['recipe']} | {r['model']} | {r['ckpt']} | {r['batch']} x {r['accumulate']} | {r['strategy']} | "
              f"{r['ema']} | {r['fused']} | {gib['static']} | {gib['activations']} | {gib['working']} | "
              f"{gib['peak']} | {r['gpu_gb']} | {r['peak'] / (r['gpu_gb'] * 1e9):.2f} | {r['measured']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["checkpointing", "recipes"])
    p.add_argument("--recipes", nargs="*", help="recipe names (default: every configs/finetune_*.yaml)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every recipe, e.g. model.lora.rank=0 (the full fine-tune of an adapter recipe)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--run-recipe", type=Path, help=argparse.SUPPRESS)  # the per-recipe GPU child process
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_recipe:
        return run_recipe(args.run_recipe, args.data, args.steps, args.set)
    gpu = torch.cuda.is_available()
    print(f"{torch.cuda.get_device_name(0) if gpu else 'no GPU: CPU proxy figures (see the docstring)'}; "
          f"torch {torch.__version__}")
    out: dict = {}
    if args.only in (None, "checkpointing"):
        out["checkpointing"] = checkpointing_rows(gpu)
        print_checkpointing(out["checkpointing"])
    if args.only in (None, "recipes"):
        data_dir = None
        if gpu:
            from sagepose.data.synth import generate_dataset

            data_dir = Path(tempfile.mkdtemp())
            generate_dataset(data_dir, 96, seed=0, split="train", workers=4)
        out["recipes"] = [{**describe(path, args.set), **(recipe_on_gpu(path, data_dir, overrides=args.set) if gpu
                                                          else recipe_proxy(path, args.set))}
                          for path in recipe_paths(args.recipes)]
        print_recipes(out["recipes"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
