"""CPU latency of an exported model in onnxruntime vs the same weights in sagepose's torch path and in MMPose 1.3.2,
measured side by side in one run (issue 14, section 1).

    python benchmarks/bench_onnx.py [--models vitpose-b hrnet-w32 hrformer-b] [--threads 2] [--repeats 5]
        [--no-mmpose] [--out benchmarks/results/onnx]

Weights: MMPose's worker (``bench_latency_mmpose.py``'s, in the peers venv) builds each model from its config, fills
it with ``tests/weightgen.py``'s deterministic weights and saves them; sagepose loads that file strictly (fused for
inference, as users get it) and ``sagepose export`` writes it as ONNX (float32, any batch, opset 18), which
``sagepose.load("*.onnx")`` runs in onnxruntime's CPU provider with ``--threads`` intra-op threads. With
``--no-mmpose`` (no peers venv) the same deterministic weights are generated here and the MMPose column is empty.

Timed, one call of each side per round in turn (load from other processes hits all alike): the network at batch 1
and 8 (normalised crops -> heatmaps), and ``predict`` on the real COCO image's two people with flip test (MMPose:
``inference_topdown``). Reported: the best of the rounds with its ratio to onnxruntime, medians beside; and the
largest heatmap difference onnxruntime - torch relative to the peak. Writes ``onnx.md`` and ``onnx.json`` under
``--out``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_latency_mmpose import (  # noqa: E402  (one MMPose worker, one test image, one input generator)
    BATCHES,
    BENCH_MODELS,
    MMPOSE_PYTHON,
    MMPoseWorker,
    inputs,
    test_image,
    time_once,
)

SIDES = ("onnxruntime", "sagepose", "mmpose")


def deterministic_checkpoint(name: str, path: Path) -> None:
    """A sagepose model's parameters filled by ``tests/weightgen.py`` (no MMPose here), saved for ``load``."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from weightgen import deterministic_weights

    from sagepose.models import build_model

    own = build_model(name).state_dict()
    weights = deterministic_weights([(k, tuple(v.shape)) for k, v in own.items() if v.is_floating_point()], seed=0)
    torch.save({**own, **weights}, path)


def bench_model(name: str, python: Path | None, threads: int, repeats: int) -> list[dict]:
    import torch

    import sagepose
    from sagepose.onnx_model import OnnxEstimator, export_onnx

    torch.set_num_threads(threads)
    mm = MMPoseWorker(python) if python else None
    try:
        with tempfile.TemporaryDirectory(prefix="sagepose-bench-onnx-") as tmp:
            weights = Path(tmp) / "weights.pth"
            if mm:
                mm.ask(op="setup", config=BENCH_MODELS[name], threads=threads, weights=str(weights))
            else:
                deterministic_checkpoint(name, weights)
            model = sagepose.load(name, checkpoint=weights)
            start = time.time()
            info = export_onnx(sagepose.load(name, checkpoint=weights, fuse=False), Path(tmp) / f"{name}.onnx",
                               dynamic_batch=True)
            export_s = time.time() - start
            runtime = OnnxEstimator(info["path"], threads=threads)
            image, boxes, image_name = test_image()
            x = {b: inputs(b, model.input_size) for b in BATCHES}
            with torch.no_grad():
                ref = model.network_heatmaps(x[8])
            diff = float((runtime.network_heatmaps(x[8]) - ref).abs().max() / ref.abs().max())
            cases = {f"network, batch {b}": dict(
                onnxruntime=lambda b=b: runtime.network_heatmaps(x[b]),
                sagepose=lambda b=b: model.network_heatmaps(x[b]),
                mmpose=dict(op="forward", batch=b, input_size=list(model.input_size))) for b in BATCHES}
            cases[f"predict {len(boxes)} boxes, flip"] = dict(
                onnxruntime=lambda: runtime.predict(image, boxes), sagepose=lambda: model.predict(image, boxes),
                mmpose=dict(op="predict"))
            times = {case: {side: [] for side in SIDES} for case in cases}
            with torch.no_grad():
                for r in range(repeats + 1):  # round 0 warms every side up (allocators, kernels, ORT's arena)
                    for case, fns in cases.items():
                        for side in SIDES:
                            if side == "mmpose":
                                if mm:
                                    ms = mm.ask(**fns[side])["ms"]
                                else:
                                    continue
                            else:
                                ms = time_once(fns[side])
                            if r:
                                times[case][side].append(ms)
                    print(f"  {name} round {r}/{repeats}", file=sys.stderr, flush=True)
    finally:
        if mm:
            mm.close()
    rows = []
    for case, by_side in times.items():
        best = {s: (min(v) if v else None) for s, v in by_side.items()}
        median = {s: (statistics.median(v) if v else None) for s, v in by_side.items()}
        rows.append(dict(model=name, case=case, image=image_name, export_seconds=round(export_s, 1),
                         onnx_bytes=info["bytes"], heatmap_diff_rel=diff,
                         **{f"{s}_ms": best[s] for s in SIDES}, **{f"{s}_median": median[s] for s in SIDES},
                         **{f"{s}_vs_onnxruntime": (best[s] / best["onnxruntime"] if best[s] else None)
                            for s in SIDES[1:]}))
    return rows


def table(rows: list[dict], header: str) -> str:
    f = lambda v, d=1: "--" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [header, "", "| model | case | onnxruntime ms | sagepose torch ms | MMPose ms | torch / ORT | MMPose / ORT "
             "| ORT - torch heatmaps (rel. to peak) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['case']} | {f(r['onnxruntime_ms'])} ({f(r['onnxruntime_median'])}) | "
                     f"{f(r['sagepose_ms'])} ({f(r['sagepose_median'])}) | {f(r['mmpose_ms'])} "
                     f"({f(r['mmpose_median'])}) | {f(r['sagepose_vs_onnxruntime'], 2)}x | "
                     f"{f(r['mmpose_vs_onnxruntime'], 2)}x | {r['heatmap_diff_rel']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=list(BENCH_MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per case (after one warm-up)")
    ap.add_argument("--mmpose-python", type=Path, default=MMPOSE_PYTHON)
    ap.add_argument("--no-mmpose", action="store_true", help="onnxruntime and sagepose only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx")
    args = ap.parse_args()
    python = None if args.no_mmpose else args.mmpose_python
    if python is not None and not python.is_file():
        sys.exit(f"{python}: no MMPose venv; run bash ../shared/peers/install_mmpose.sh first, or pass --no-mmpose")
    import onnxruntime
    import torch

    from sagepose.fileio import write_json_atomic, write_text_atomic

    rows = [row for name in args.models for row in bench_model(name, python, args.threads, args.repeats)]
    header = (f"CPU latency, {args.threads} threads (torch intra-op and onnxruntime intra-op), torch "
              f"{torch.__version__}, onnxruntime {onnxruntime.__version__}: best of {args.repeats} rounds, median in "
              "brackets; the three sides take turns within a round. Weights: tests/weightgen.py's deterministic "
              "ones" + (" through MMPose's worker" if python else " (no MMPose: --no-mmpose)") + ". onnxruntime: "
              "`sagepose export` (float32, any batch, opset 18) run by `sagepose.load('*.onnx')`; sagepose torch: "
              "`sagepose.load(name, checkpoint)` (fused for inference).")
    text = table(rows, header)
    print("\n" + text)
    write_text_atomic(args.out / "onnx.md", text)
    write_json_atomic(args.out / "onnx.json", {"header": header, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
