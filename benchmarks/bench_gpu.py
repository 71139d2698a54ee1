"""GPU speed and memory, side by side in one run (issue 15): training and inference img/s, eager vs compiled, model
alone vs end to end from JPEGs, and the fine-tuning recipes' true peaks.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--parts train e2e infer memory] [--out DIR] [--workers N]
    PYTHONPATH=. python benchmarks/bench_gpu.py --cpu     # a smoke run on the CPU: tiny sizes, every part

Parts (each row measured in this process, on this device, in this run):

* ``train`` -- the training step alone on synthetic tensors already on the device: uint8 crops and keypoints through
  :class:`~sagepose.train.module.TopDownModule`'s own ``_augment`` / ``_targets``, the network, the loss, backward and
  a fused AdamW step, bf16 autocast; eager and ``torch.compile``-d. ViTPose-B 256x192 and HRNet-W32 256x192 at batch
  ``--batch`` (256), Sapiens-0.3B 1024x768 at ``--sapiens-batch`` (16).
* ``e2e`` -- ViTPose-B trained by :func:`sagepose.train.run.fit` (Lightning, the real loaders: JPEG decode + one
  warp per person in ``--workers`` processes, pinned memory) on synthetic people written to local disk first
  (``generate_dataset`` with the same workers), eager and compiled. ``GPU busy`` is the model-only step time over
  the end-to-end one: the share of each step the data pipeline does not hold up.
* ``infer`` -- ViTPose-B prediction with boxes given (ground-truth boxes, flip test, bf16, decode and mapping back
  to image pixels on the device): from JPEGs through the val loader, against the same on tensors already there
  (the model's ceiling at that batch).
* ``memory`` -- every ``configs/finetune_*.yaml`` trained 3 optimizer steps in a process of its own
  (``bench_memory.recipe_on_gpu``: its peak ``torch.cuda.max_memory_allocated``); several at once where their GPU
  budgets fit the card together (a peak is per process).

Figures from elsewhere are quoted, not measured here: MMPose 1.3.2 ViTPose-B on an H100 (torch 2.11, bf16, batch
256): training step 706 img/s, inference 6,226 img/s (issue 15). Writes ``gpu.md`` (the table, also printed) and
``gpu.json`` under ``--out`` (default ``benchmarks/results/gpu``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # sagepose, and bench_memory beside this file

import torch  # noqa: E402

REPO = HERE.parent
PARTS = ("train", "e2e", "infer", "memory")
MMPOSE_H100 = {"train": 706.0, "infer": 6226.0}  # img/s, issue 15 (quoted, not measured here)
# (model, input size w x h, batch option): the training rows
TRAIN_MODELS = (("vitpose-b", (192, 256), "batch"), ("hrnet-w32", (192, 256), "batch"),
                ("sapiens-0.3b", (768, 1024), "sapiens_batch"))
CPU_ARCH = {"arch": {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_dim": 64}}  # --cpu: the tiny ViT


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(args, model: str, extra=()):
    from sagepose.config import load_config

    size = [] if args.cpu else [f"model.input_size=[{args.input_w}, {args.input_h}]"]
    arch = [f"model.arch={CPU_ARCH['arch']!r}"] if args.cpu else []
    return load_config(None, [f"model.name={model}", *size, *arch, f"trainer.precision={args.precision}",
                              "optim.fused=true", "trainer.progress_bar=false", *extra])


# ---- the training step alone -------------------------------------------------------------------------------------
def model_only_train(args, name: str, input_size, batch: int, compiled: bool) -> dict:
    """img/s of the training step on synthetic tensors on the device (warm-up, compile included, timed apart)."""
    from sagepose.train.losses import heatmap_cross_entropy, heatmap_mse
    from sagepose.train.module import TopDownModule

    device = args.device
    w, h = input_size
    cfg = _config(args, name, [f"model.input_size=[{w}, {h}]"] if not args.cpu else [])
    module = TopDownModule(cfg).to(device)
    model = module.model
    if "hrnet" in name:
        model.to(memory_format=torch.channels_last)
    if compiled:
        model.compile(dynamic=False, backend=args.compile_backend)
    w, h = model.input_size
    g = torch.Generator(device="cpu").manual_seed(0)
    k = model.schema.num_keypoints
    batch_data = {"img": torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g).to(device),
                  "keypoints": (torch.rand(batch, k, 2, generator=g) * torch.tensor([w, h])).to(device),
                  "visible": torch.ones(batch, k).to(device), "index": torch.arange(batch).to(device)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    loss_fn = heatmap_cross_entropy if model.heatmap_output == "softmax" else heatmap_mse
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")

    def step():
        x = module._augment(batch_data)
        targets, weights = module._targets(batch_data)
        with autocast:
            out = model(x)
        loss, _ = loss_fn(out.float(), targets, weights)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    return {"img_s": batch * args.steps / seconds, "step_ms": 1e3 * seconds / args.steps, "warmup_s": warm,
            "batch": batch, "input": f"{w}x{h}", "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


# ---- end to end from JPEGs ---------------------------------------------------------------------------------------
def synthesize(args) -> Path:
    from sagepose.data.synth import generate_dataset

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="sagepose-gpu-"))
    if not (root / "train.json").is_file():
        start = time.perf_counter()
        generate_dataset(root, args.images, seed=0, split="train", image_size=(640, 480), workers=args.workers)
        generate_dataset(root, max(args.images // 10, 4), seed=1, split="val", image_size=(640, 480),
                         workers=args.workers)
        print(f"synthesized {args.images} + {max(args.images // 10, 4)} JPEGs (640x480) with {args.workers} "
              f"workers in {time.perf_counter() - start:.1f} s -> {root}", flush=True)
    return root


def end_to_end_train(args, data: Path, compiled: bool) -> dict:
    """img/s of ``fit`` from JPEGs on disk, over the steps after the warm-up."""
    from lightning.pytorch.callbacks import Callback

    from sagepose.train.run import fit

    device = args.device

    class Clock(Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx in (args.warmup, args.warmup + args.steps):  # only at the two ends: no sync in between
                sync(device)
                self.times.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        cfg = _config(args, "vitpose-b" if not args.cpu else "vit-tiny", [
            f"data.train_json={data / 'train.json'}", f"data.batch_size={args.batch}",
            f"data.num_workers={args.workers}", f"trainer.max_steps={args.warmup + args.steps + 1}",
            "trainer.max_epochs=-1", "trainer.val_every_epochs=1000000", f"trainer.out_dir={out}",
            f"trainer.compile={compiled}", f"trainer.compile_backend={args.compile_backend}",
            "trainer.log_every_steps=50", f"trainer.accelerator={'cpu' if args.cpu else 'cuda'}", "trainer.devices=1"])
        start = time.perf_counter()
        fit(cfg, callbacks=[clock])
        total = time.perf_counter() - start
    seconds = clock.times[1] - clock.times[0]
    return {"img_s": args.batch * args.steps / seconds, "step_ms": 1e3 * seconds / args.steps, "batch": args.batch,
            "workers": args.workers, "fit_s": total}


# ---- inference with boxes given ----------------------------------------------------------------------------------
def inference(args, data: Path, compiled: bool) -> dict:
    """img/s of prediction from JPEGs (val loader, GT boxes) and of the same on tensors already on the device."""
    from sagepose.geometry import crop_to_image
    from sagepose.models import build_model_from_config
    from sagepose.train.loaders import build_loaders

    device = args.device
    cfg = _config(args, "vitpose-b" if not args.cpu else "vit-tiny", [
        f"data.val_json={data / 'val.json'}", f"data.val_batch_size={args.batch}", f"data.num_workers={args.workers}",
        f"trainer.accelerator={'cpu' if args.cpu else 'cuda'}"])
    model = build_model_from_config(cfg.model).to(device).eval().fuse_for_inference(pack_weights=False)
    if args.precision == "bf16-mixed":
        model.set_dtype(torch.bfloat16)
    if compiled:
        model.compile(dynamic=False, backend=args.compile_backend)
    loader = build_loaders(cfg, model, train=False)["val"]

    def predict(img, center, scale):
        heatmaps = model.predict_heatmaps(model.normalize(img))
        kpts, scores = model.decode(heatmaps)
        return crop_to_image(kpts, model.input_size, center, scale), scores

    people, seconds, first = 0, 0.0, True
    for _ in range(args.infer_passes):
        it = iter(loader)
        start = time.perf_counter()
        for batch in it:
            if len(batch["img"]) < args.batch:  # a short last batch would compile anew: left out
                continue
            kpts, scores = predict(*(batch[k].to(device, non_blocking=True) for k in ("img", "center", "scale")))
            kpts.cpu(), scores.cpu()  # the results back on the host, as a caller needs them
            if first:  # the first batch carries the loader's start and the compile: not timed
                first, start = False, time.perf_counter()
                continue
            people += len(kpts)
        seconds += time.perf_counter() - start
    w, h = model.input_size
    img = torch.randint(0, 256, (args.batch, h, w, 3), dtype=torch.uint8, device=device)
    center = torch.full((args.batch, 2), 100.0, device=device)
    scale = torch.full((args.batch, 2), 200.0, device=device)
    predict(img, center, scale)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        out = predict(img, center, scale)
    out[0].cpu()
    ceiling_s = time.perf_counter() - start
    return {"img_s": people / seconds if seconds else float("nan"), "people": people, "batch": args.batch,
            "ceiling_img_s": args.batch * args.steps / ceiling_s}


# ---- the recipes' peaks ------------------------------------------------------------------------------------------
def recipe_peaks(args) -> list[dict]:
    import bench_memory as bm

    paths = bm.recipe_paths(args.recipes)
    if args.cpu:  # no CUDA: the FakeTensor proxy, to exercise the part
        return [{**bm.describe(p), **bm.recipe_proxy(p)} for p in paths[:1]]
    data = Path(tempfile.mkdtemp(prefix="sagepose-mem-"))
    from sagepose.data.synth import generate_dataset

    generate_dataset(data, 96, seed=0, split="train", workers=min(args.workers, 8))
    card_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    # largest budgets first; a job starts when the budgets of the running ones leave room for its own
    pending = sorted(paths, key=bm.budget_gb, reverse=True)
    running: dict = {}
    rows = {}
    with ThreadPoolExecutor(max_workers=args.memory_jobs) as pool:
        while pending or running:
            used = sum(bm.budget_gb(p) for p in running)
            ready = [p for p in pending if used + bm.budget_gb(p) <= card_gb or not running]
            if ready and len(running) < args.memory_jobs:
                p = ready[0]
                pending.remove(p)
                running[p] = pool.submit(bm.recipe_on_gpu, p, data)
                continue
            done = next((p for p, f in running.items() if f.done()), None)
            if done is None:
                time.sleep(0.2)
                continue
            rows[done] = {**bm.describe(done), **running.pop(done).result()}
            print(f"  {done.stem}: " + (rows[done].get("error", "")[-200:] or
                                        f"peak {rows[done]['peak'] / 2 ** 30:.2f} GiB"), flush=True)
    return [rows[p] for p in paths]


# ---- the table ---------------------------------------------------------------------------------------------------
def _f(v, digits=0) -> str:
    return "--" if v is None else f"{v:,.{digits}f}"


def table(env: str, res: dict) -> str:
    lines = [env, "", "| what | model | batch | eager img/s | compiled img/s | compiled / eager | notes |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res.get("train", {}).items():
        e, c = r.get("eager"), r.get("compiled")
        ratio = c["img_s"] / e["img_s"] if e and c else None
        vs = f"eager {e['img_s'] / MMPOSE_H100['train']:.2f}x MMPose's 706 (H100, quoted)" if name == "vitpose-b" \
            and e else ""
        lines.append(f"| train step, synthetic tensors | {name} {r['input']} | {r['batch']} | "
                     f"{_f(e and e['img_s'])} | {_f(c and c['img_s'])} | {_f(ratio, 2)} | {vs} |")
    e2e, base = res.get("e2e", {}), res.get("train", {}).get("vitpose-b", {})
    if e2e:
        busy = {k: base[k]["step_ms"] / e2e[k]["step_ms"] for k in ("eager", "compiled") if k in base and k in e2e}
        lines.append(f"| train end to end from JPEGs ({e2e['workers']} loader workers) | vitpose-b | {e2e['batch']} | "
                     f"{_f(e2e.get('eager', {}).get('img_s'))} | {_f(e2e.get('compiled', {}).get('img_s'))} | "
                     f"{_f(e2e['compiled']['img_s'] / e2e['eager']['img_s'], 2) if 'compiled' in e2e else '--'} | "
                     "GPU busy (model-only / end-to-end step time): "
                     + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()) + " |")
    inf = res.get("infer", {})
    for k in ("eager", "compiled"):
        if k in inf:
            r = inf[k]
            lines.append(f"| inference, boxes given, from JPEGs ({k}) | vitpose-b | {r['batch']} | "
                         f"{_f(r['img_s'])} | model-only ceiling {_f(r['ceiling_img_s'])} | "
                         f"{_f(r['img_s'] / r['ceiling_img_s'], 2)} of the ceiling | flip test, bf16; MMPose "
                         f"{MMPOSE_H100['infer']:,.0f} (H100, quoted) |")
    if res.get("memory"):
        lines += ["", "| recipe | model | batch x accum | strategy | peak GiB | GPU GB | peak / GPU | measured |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in res["memory"]:
            if "error" in r:
                why = r["error"].splitlines()[-1][:80] if r["error"] else "failed"
                lines.append(f"| {r['recipe']} | {r['model']} | {r['batch']} x {r['accumulate']} | {r['strategy']} | "
                             f"{why} | {r['gpu_gb']} | -- | -- |")
                continue
            lines.append(f"| {r['recipe']} | {r['model']} | {r['batch']} x {r['accumulate']} | {r['strategy']} | "
                         f"{r['peak'] / 2 ** 30:.2f} | {r['gpu_gb']} | {r['peak'] / (r['gpu_gb'] * 1e9):.2f} | "
                         f"{r['measured']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    p.add_argument("--cpu", action="store_true", help="smoke run on the CPU (tiny model and sizes; no figures)")
    p.add_argument("--batch", type=int, default=None, help="ViTPose-B / HRNet batch (default 256; --cpu 4)")
    p.add_argument("--sapiens-batch", type=int, default=None, help="Sapiens-0.3B 1024x768 batch (default 16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 30; --cpu 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; --cpu 1)")
    p.add_argument("--images", type=int, default=None, help="training JPEGs to synthesize (default 3000)")
    p.add_argument("--workers", type=int, default=None, help="loader and synthesis processes (default: cores - 2)")
    p.add_argument("--data-dir", default=None, help="synthesize here (reused when it already holds train.json)")
    p.add_argument("--infer-passes", type=int, default=2, help="passes over the val JPEGs")
    p.add_argument("--no-compile", action="store_true", help="eager rows only")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; --cpu aot_eager)")
    p.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: every configs/finetune_*)")
    p.add_argument("--memory-jobs", type=int, default=3, help="recipe processes at once")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"))
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device (use --cpu for a smoke run of the script)")
    small = args.cpu
    args.device = torch.device("cpu" if small else "cuda")
    args.batch = args.batch or (4 if small else 256)
    args.sapiens_batch = args.sapiens_batch or (2 if small else 16)
    args.steps = args.steps or (2 if small else 30)
    args.warmup = args.warmup or (1 if small else 5)
    args.images = args.images or (12 if small else 3000)
    args.workers = args.workers if args.workers is not None else (0 if small else max(1, (os.cpu_count() or 4) - 2))
    args.compile_backend = args.compile_backend or ("aot_eager" if small else "inductor")
    args.input_w, args.input_h = 192, 256
    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.models.inference import native_bf16

    args.precision = "bf16-mixed" if not small or native_bf16(torch.device("cpu")) else "32-true"
    arms = ("eager",) if args.no_compile else ("eager", "compiled")
    env = (f"{torch.cuda.get_device_name(0) if not small else 'CPU smoke run (--cpu): figures mean nothing'}; torch "
           f"{torch.__version__}; {os.cpu_count()} cores, {args.workers} loader workers; {args.precision}; fused "
           f"AdamW; compile backend {args.compile_backend}; {args.warmup} warm-up + {args.steps} timed steps a row.")
    print(env, flush=True)
    res: dict = {}
    start = time.perf_counter()
    if "train" in args.parts:
        res["train"] = {}
        for name, size, batch_opt in TRAIN_MODELS:
            name = "vit-tiny" if small else name
            batch = getattr(args, batch_opt)
            row = res["train"].setdefault(name if not small else f"{name}-{batch_opt}", {})
            for arm in arms:
                r = model_only_train(args, name, size, batch, compiled=arm == "compiled")
                row.update({arm: r, "input": r["input"], "batch": batch})
                print(f"train {name} {arm}: {r['img_s']:,.0f} img/s ({r['step_ms']:.1f} ms a step, warm-up "
                      f"{r['warmup_s']:.1f} s)", flush=True)
        if small:  # the table's e2e ratio reads the ViTPose-B row
            res["train"]["vitpose-b"] = res["train"]["vit-tiny-batch"]
    data = synthesize(args) if {"e2e", "infer"} & set(args.parts) else None
    if "e2e" in args.parts:
        res["e2e"] = {"batch": args.batch, "workers": args.workers}
        for arm in arms:
            res["e2e"][arm] = end_to_end_train(args, data, compiled=arm == "compiled")
            print(f"e2e {arm}: {res['e2e'][arm]['img_s']:,.0f} img/s", flush=True)
    if "infer" in args.parts:
        res["infer"] = {}
        for arm in arms:
            r = res["infer"][arm] = inference(args, data, compiled=arm == "compiled")
            print(f"infer {arm}: {r['img_s']:,.0f} img/s from JPEGs, ceiling {r['ceiling_img_s']:,.0f}", flush=True)
    if "memory" in args.parts:
        res["memory"] = recipe_peaks(args)
    text = table(env + f" Wall time {(time.perf_counter() - start) / 60:.1f} min.", res)
    print("\n" + text, flush=True)
    out = Path(args.out)
    write_text_atomic(out / "gpu.md", text)
    write_json_atomic(out / "gpu.json", {"env": env, "results": res}, indent=1)
    return res


if __name__ == "__main__":
    main()
