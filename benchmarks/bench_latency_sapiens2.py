"""CPU latency of sagepose's Sapiens2 pose model vs the official facebookresearch/sapiens2 code, same weights.

    python benchmarks/bench_latency_sapiens2.py [--model 0.4b] [--size 1024x768] [--batch 4] [--threads 2]
                                                [--repeats 3] [--snapshot DIR] [--quick]

The official code is the reference, run outside the package as ``tools/make_sapiens2_goldens.py`` runs it: its
backbone and pose-head files are extracted from a git snapshot of facebookresearch/sapiens2 (``--snapshot``;
default the ``fetch`` tool's mirror) and imported with their package imports stubbed. Its pose model of one
size (the keypoints308 config's head, 308 outputs) gets seeded random weights; its state dict, in the official
key layout, is saved as a ``.safetensors`` file and loaded the way a user loads a released file:
``sagepose.load("sapiens2-0.4b", checkpoint=FILE)`` (a model-config dict in place of the name where the input
size or, with ``--quick``, the architecture differs from the zoo row), through sagepose's own key conversion.

Timed, on one random normalised input of ``--size`` (h x w), at batch 1 and ``--batch`` N, network only
(input -> 308 heatmaps), under ``torch.inference_mode``:

* ``float32, same call``: the official module's forward vs sagepose's trainable model (``fuse=False``), plain
  ``model(x)``: the same work on both sides;
* ``float32, sagepose inference mode``: vs the model as ``sagepose.load`` gives it (``fuse_for_inference``: the
  head's second deconv fed channels-last, linear weights packed where memory allows) through
  ``network_heatmaps``, the call ``predict`` makes per batch of crops;
* on CPUs with native bf16 (AVX512-BF16 / AMX; ``sagepose.models.inference.native_bf16``) the same two in
  bfloat16: both under ``torch.autocast("cpu", torch.bfloat16)``, then sagepose's ``dtype="bfloat16"`` (weights
  cast, no autocast) against the official code under autocast. Elsewhere bf16 is emulated and the rows are skipped.

Before timing, each case checks that the two networks agree: the max |sagepose - official| of the heatmaps over the
official's peak |heatmap| must stay within 1e-3 in float32 (it fails loudly otherwise); in bfloat16 it is reported.
Each sagepose model is loaded for its case and dropped after it, so at most two models are in memory, plus the
file's tensors while one loads and the packed copy of the linear weights that ``fuse_for_inference`` keeps where it
takes at most 1/8 of the RAM: peak ~4x the float32 weights (measured 7.1 GB for 0.4b), ~65 GB for 5b.

Timing as ``bench_latency_mmpose.py``: warm-up calls, then rounds in which each side makes one call, the two
back to back (who goes first alternates), so load from other processes hits both alike; reported the best time of
the rounds and its ratio, the medians, and the median of the per-round ratios. sagepose's ``keep_freed_memory``
(glibc malloc kept from returning freed activations) is process-wide, so the official side, in the same process,
has it too once the first sagepose model is loaded.

Writes ``benchmarks/results/latency/sapiens2_vs_official.md`` and ``.json`` (``--quick``:
``sapiens2_vs_official_quick.*``; ``--out STEM``: elsewhere). ``--quick``: a shrunk model (3 blocks, the middle
one grouped-query, embed 64, a small head, 308 outputs) at 64x48, 1 repeat unless ``--repeats`` is given: a smoke
test of every path, its times meaningless.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "latency"
POSE_SIZES = ("0.4b", "0.8b", "1b", "5b")
REL_BOUND = 1e-3  # float32 agreement, max |diff| / peak; measured goldens agree to 1e-5 (tests/test_sapiens2.py)
# --quick: the official arch_zoo row and the sagepose arch override of the same shrunk network
QUICK_ARCH = dict(embed_dims=64, num_layers=3, num_heads=4, feedforward_channels=128, num_tokenizer_layers=1)
QUICK_GQA_LAYERS = (1,)
QUICK_HEAD = dict(deconv_out_channels=(32, 24), conv_out_channels=(24, 16))
QUICK_SIZE_HW = (64, 48)


def official_tools():
    """tools/make_sapiens2_goldens.py, the project's runner of the official code (imported, not changed)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_sapiens2_goldens

    return make_sapiens2_goldens


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def parse_hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        hw = int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size: expected HxW such as 1024x768, got {text!r}") from None
    if min(hw) <= 0 or hw[0] % 16 or hw[1] % 16:
        raise argparse.ArgumentTypeError(f"--size {text}: both sides must be positive multiples of the 16-px patch")
    return hw


# ------------------------------------------------------------------------------------------------ the two models


def build_official(tools, tmp: Path, snapshot: str, size: str, quick: bool, seed: int):
    """The official pose model (backbone + keypoints308 head), seeded random weights, eval mode; its commit."""
    commit = tools.extract(snapshot, tmp)
    Sapiens2, Head = tools.import_official(tmp)
    arch, kw = f"sapiens2_{size}", {}
    if quick:  # the official split (8 full-attention blocks at each end) would leave 3 blocks all full
        arch = "bench_quick"
        Sapiens2.arch_zoo[arch] = dict(QUICK_ARCH)
        kw["layer_cfgs"] = [dict(num_kv_heads=QUICK_ARCH["num_heads"] // 2) if i in QUICK_GQA_LAYERS else {}
                            for i in range(QUICK_ARCH["num_layers"])]
        deconv, conv = QUICK_HEAD["deconv_out_channels"], QUICK_HEAD["conv_out_channels"]
    else:
        deconv, conv = tools.POSE_HEADS[arch]  # the keypoints308 config's head
    head = dict(out_channels=308, deconv_out_channels=deconv, deconv_kernel_sizes=(4,) * len(deconv),
                conv_out_channels=conv, conv_kernel_sizes=(1,) * len(conv))
    model = tools.build_official(Sapiens2, Head, arch, head, **kw).eval()
    tools.randomize(model, seed)
    return model, commit


def sagepose_source(size: str, quick: bool, size_hw: tuple[int, int]):
    """What ``sagepose.load`` is given: the zoo name, or a model-config dict where the input size or the
    architecture differs from the zoo row."""
    name = f"sapiens2-{size}"
    if not quick and size_hw == (1024, 768):
        return name
    cfg = {"name": name, "input_size": [size_hw[1], size_hw[0]]}
    if quick:
        cfg["arch"] = dict(embed_dim=QUICK_ARCH["embed_dims"], depth=QUICK_ARCH["num_layers"],
                           num_heads=QUICK_ARCH["num_heads"], mlp_dim=QUICK_ARCH["feedforward_channels"],
                           mha_ends=1, deconv_channels=QUICK_HEAD["deconv_out_channels"],
                           conv_channels=QUICK_HEAD["conv_out_channels"])
    return cfg


# ------------------------------------------------------------------------------------------------ cases


def cases(bf16: bool):
    """(label, sagepose.load keywords, sagepose call, official under bf16 autocast, sagepose under it)."""
    out = [("float32, same call", dict(fuse=False), "forward", False, False),
           ("float32, sagepose inference mode", {}, "network_heatmaps", False, False)]
    if bf16:
        out += [("bfloat16, same call (both autocast)", dict(fuse=False), "forward", True, True),
                ("bfloat16, sagepose inference mode", dict(dtype="bfloat16"), "network_heatmaps", True, False)]
    return out


def autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def run_case(official, model, call: str, official_bf16: bool, ours_bf16: bool, x: torch.Tensor, warmup: int,
             repeats: int, label: str) -> dict:
    """Warm-up, the agreement check on the warm-up outputs, then ``repeats`` alternating timed rounds."""
    fn = getattr(model, call) if call == "network_heatmaps" else model

    def theirs():
        with autocast(official_bf16):
            return official(x)[1]

    def ours():
        with autocast(ours_bf16):
            return fn(x)

    with torch.inference_mode():
        for _ in range(max(warmup, 1)):
            want, got = theirs(), ours()
        peak = float(want.float().abs().max())
        rel = float((got.float() - want.float()).abs().max()) / peak
        times = ([], [])
        for r in range(repeats):
            if r % 2:
                ours_ms, theirs_ms = time_once(ours), time_once(theirs)
            else:
                theirs_ms, ours_ms = time_once(theirs), time_once(ours)
            times[0].append(theirs_ms)
            times[1].append(ours_ms)
            print(f"  round {r + 1}/{repeats}, {label}: official {theirs_ms:.1f} ms, sagepose {ours_ms:.1f} ms",
                  file=sys.stderr, flush=True)
    t, o = times
    return dict(official_ms=min(t), sagepose_ms=min(o), speedup=min(t) / min(o), official_median=statistics.median(t),
                sagepose_median=statistics.median(o), speedup_median=statistics.median(t) / statistics.median(o),
                speedup_paired=statistics.median(a / b for a, b in zip(t, o)), rel_diff=rel, peak=peak,
                official_all=t, sagepose_all=o)


# ------------------------------------------------------------------------------------------------ report


def table(rows: list[dict]) -> str:
    lines = ["| case | batch | official ms | sagepose ms | speed-up | per-round | max diff / peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['batch']} | {r['official_ms']:.1f} ({r['official_median']:.1f}) | "
                     f"{r['sagepose_ms']:.1f} ({r['sagepose_median']:.1f}) | {r['speedup']:.2f}x "
                     f"({r['speedup_median']:.2f}x) | {r['speedup_paired']:.2f}x | {r['rel_diff']:.1e} |")
    return "\n".join(lines)


def report(meta: dict, rows: list[dict]) -> str:
    bf16 = meta["bf16"]
    return (f"# Sapiens2-{meta['model']} on the CPU: sagepose vs the official code, same weights\n\n"
            f"`{meta['command']}`\n\n"
            f"Official code: {meta['official']}. {meta['params']:,} parameters, input {meta['input_hw'][0]}x"
            f"{meta['input_hw'][1]} (h x w), 308 heatmaps; {meta['threads']} threads, torch {meta['torch']}, "
            f"`torch.inference_mode`. Machine: {meta['machine']} at the start, {meta['load_end']} at the end.\n\n"
            f"Each cell: best of {meta['repeats']} alternating rounds (median in brackets), after "
            f"{meta['warmup']} warm-up call(s) each. Speed-up = official / sagepose of the best times (of the "
            f"medians); per-round: the median of the per-round ratios. Max diff / peak: the heatmaps' max "
            f"|sagepose - official| over the official's peak |heatmap| (float32 bound {REL_BOUND:g}). "
            f"bfloat16: {bf16}.\n\n" + table(rows) + "\n")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="0.4b", choices=POSE_SIZES, help="the Sapiens2 pose size")
    ap.add_argument("--size", type=parse_hw, default=None, help="input HxW (default 1024x768; --quick: 64x48)")
    ap.add_argument("--batch", type=int, default=None, help="also time this batch size (batch 1 always)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 3; --quick: 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per side and case first (at least 1)")
    ap.add_argument("--seed", type=int, default=0, help="of the random weights")
    ap.add_argument("--snapshot", default=None, help="git directory of facebookresearch/sapiens2 (default: the "
                    "fetch tool's mirror)")
    ap.add_argument("--out", type=Path, default=None, help="stem of the .md / .json written (default "
                    "benchmarks/results/latency/sapiens2_vs_official[_quick])")
    ap.add_argument("--quick", action="store_true", help="shrunk model, 64x48 input: a smoke test")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    tools = official_tools()
    snapshot = args.snapshot or tools.MIRROR
    if not Path(snapshot).exists():
        sys.exit(f"{snapshot}: no git snapshot of facebookresearch/sapiens2 (give one with --snapshot)")
    size_hw = args.size or (QUICK_SIZE_HW if args.quick else (1024, 768))
    repeats = args.repeats or (1 if args.quick else 3)
    batches = [1] + ([args.batch] if args.batch and args.batch != 1 else [])
    out = args.out or RESULTS / ("sapiens2_vs_official_quick" if args.quick else "sapiens2_vs_official")

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import describe_machine
    from safetensors.torch import save_file

    import sagepose
    from sagepose.models.inference import native_bf16

    torch.set_num_threads(args.threads)
    machine = describe_machine()
    bf16 = native_bf16(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sagepose-sapiens2-") as tmp:
        official, commit = build_official(tools, Path(tmp), snapshot, args.model, args.quick, args.seed)
        checkpoint = Path(tmp) / f"sapiens2_{args.model}_pose.safetensors"
        save_file({k: v.contiguous() for k, v in official.state_dict().items()}, str(checkpoint))
        params = sum(p.numel() for p in official.parameters())
        source = sagepose_source(args.model, args.quick, size_hw)
        inputs = {b: torch.randn(b, 3, *size_hw, generator=torch.Generator().manual_seed(b)) for b in batches}
        print(f"official facebookresearch/sapiens2@{commit[:12]}, sapiens2-{args.model}"
              f"{' (quick: shrunk)' if args.quick else ''}, {params:,} parameters; {machine}", file=sys.stderr)
        for label, load_kw, call, official_bf16, ours_bf16 in cases(bf16):
            model = sagepose.load(source, checkpoint=checkpoint, **load_kw)
            ours_params = sum(p.numel() for p in model.parameters())
            if ours_params != params:
                raise SystemExit(f"sagepose's model has {ours_params:,} parameters, the official {params:,}")
            for b in batches:
                row = run_case(official, model, call, official_bf16, ours_bf16, inputs[b], args.warmup, repeats,
                               f"{label}, batch {b}")
                print(f"{label}, batch {b}: heatmaps max |sagepose - official| / peak = {row['rel_diff']:.2e} "
                      f"(peak {row['peak']:.4g})", file=sys.stderr, flush=True)
                if label.startswith("float32") and not row["rel_diff"] <= REL_BOUND:
                    raise SystemExit(f"{label}, batch {b}: sagepose's heatmaps differ from the official code's by "
                                     f"{row['rel_diff']:.2e} of the peak (bound {REL_BOUND:g}): not the same network")
                rows.append(dict(case=label, batch=b, **row))
            del model
            gc.collect()
    meta = dict(command=shlex.join(["python", "benchmarks/bench_latency_sapiens2.py", *argv]), machine=machine,
                load_end=describe_machine().rpartition("load ")[2], torch=torch.__version__, threads=args.threads,
                model=args.model + (" (quick: shrunk)" if args.quick else ""), input_hw=list(size_hw),
                batches=batches, repeats=repeats, warmup=max(args.warmup, 1), params=params,
                official=f"facebookresearch/sapiens2@{commit}",
                bf16="timed (native on this CPU)" if bf16 else "skipped: this CPU has no native bf16 (AVX512-BF16 or "
                "AMX), where it is emulated and slower than float32")
    text = report(meta, rows)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(dict(meta, rows=rows), indent=1) + "\n")
    return dict(meta, rows=rows)


if __name__ == "__main__":
    main()
