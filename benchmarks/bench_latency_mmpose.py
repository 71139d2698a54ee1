"""CPU latency of sagepose vs MMPose 1.3.2 on identical weights, measured side by side in one run.

    python benchmarks/bench_latency_mmpose.py [--models vitpose-b ...] [--threads 2] [--repeats 5]

MMPose lives in its own venv (../shared/peers), so this script starts itself a second time with
that interpreter as a *worker* (``--worker``). The worker builds MMPose's model from its config,
fills it with ``tests/weightgen.py``'s deterministic weights (strict load) and saves them; this
side loads that file strictly through sagepose's MMPose import. Then the two sides take turns --
one timed call each per round, never at the same time -- so load from other processes on the
machine hits both alike. Timed: the network forward at batch 1 and 8 (normalised input ->
heatmaps), and end to end on one image with flip test (sagepose ``predict`` vs MMPose's
``inference_topdown``: crop, normalise, both passes, fusion, decode, back to image pixels), and that
again with ``sagepose.load(..., exact=True)`` (MMPose's arithmetic operation for operation, its outputs
bit for bit) and, on CPUs with native bf16, with ``dtype="bfloat16"`` (against MMPose in float32).
Reported: the best time of the rounds (other processes only ever add time, so on a shared machine
the minimum is the steadiest estimate) and its ratio, with medians beside them, and the median of the
per-round ratios (the two calls of a round run back to back, so slow drifts of the machine cancel).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers"
MMPOSE_PYTHON = Path.home() / ".cache" / "sagepose-peers" / "mmpose-venv" / "bin" / "python"
REAL_IMAGE = ROOT / "tests" / "data" / "realdata" / "coco" / "000000196141.jpg"
REAL_BOXES_XYXY = [[247.76, 74.23, 417.43, 375.01], [453.77, 206.81, 631.0, 417.68]]  # its 2 GT people

# One row per benchmarked model: sagepose zoo name -> MMPose config under configs/body_2d_keypoint/ (the same
# architecture and codec; RTMPose's "network" output is its x and y SimCC logits in place of heatmaps).
BENCH_MODELS = {
    "vitpose-b": "topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    "hrnet-w32": "topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
    "hrformer-b": "topdown_heatmap/coco/td-hm_hrformer-base_8xb32-210e_coco-256x192.py",
    "rtmpose-t": "rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py",
    "rtmpose-m": "rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
}
BATCHES = (1, 8)


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def test_image():
    """The real COCO image and its two person boxes, or the synthetic image and its box."""
    import cv2
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from weightgen import SYNTHETIC_BOX_XYXY, synthetic_image

    if REAL_IMAGE.is_file():
        return cv2.imread(str(REAL_IMAGE)), np.array(REAL_BOXES_XYXY, np.float32), REAL_IMAGE.name
    return synthetic_image(), np.array([SYNTHETIC_BOX_XYXY], np.float32), "synthetic"


def inputs(batch: int, size_wh: tuple[int, int]):
    import torch

    w, h = size_wh
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))


# ------------------------------------------------------------------------------------------------ MMPose side


def worker() -> None:
    """Serve timing requests for one MMPose model: JSON lines in on stdin, JSON lines out on stdout."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # MMPose's own prints must not reach the protocol stream
    sys.path.insert(0, str(PEERS))
    import compat  # noqa: F401  (mmcv-lite / torchvision shims; must precede mmpose)
    import mmpose
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpose.apis import inference_topdown, init_model

    sys.path.insert(0, str(ROOT / "tests"))
    from weightgen import deterministic_weights

    init_default_scope("mmpose")
    model, image, boxes = None, None, None
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "setup":
            torch.set_num_threads(req["threads"])
            cfg_dir = Path(mmpose.__file__).parent / ".mim" / "configs" / "body_2d_keypoint"
            cfg = Config.fromfile(str(cfg_dir / req["config"]))
            cfg.model.backbone.init_cfg = None
            model = init_model(cfg, checkpoint=None, device="cpu").eval()
            own = model.state_dict()
            weights = deterministic_weights([(k, tuple(v.shape)) for k, v in own.items()], seed=0)
            # integer buffers other than BN counters are constants of the architecture (HRFormer's window
            # index), not weights: MMPose keeps its own and the file leaves them out
            constants = {k: v for k, v in own.items() if not v.is_floating_point() and "num_batches" not in k}
            model.load_state_dict({**weights, **constants}, strict=True)
            torch.save({k: v for k, v in weights.items() if k not in constants}, req["weights"])
            image, boxes, _ = test_image()
            size = tuple(cfg.codec.input_size)
            reply = dict(params=sum(p.numel() for p in model.parameters()), input_size=size,
                         flip_test=bool(cfg.model.test_cfg.get("flip_test")), mmpose=mmpose.__version__)
        elif req["op"] == "forward":  # TopdownPoseEstimator._forward: backbone (+ neck) + head -> heatmaps / SimCC
            x = inputs(req["batch"], tuple(req["input_size"]))
            with torch.no_grad():
                start = time.perf_counter()
                model._forward(x)
                reply = dict(ms=(time.perf_counter() - start) * 1000.0)
        elif req["op"] == "video":  # a video frame by frame, as MMPose's demo does: decode, inference_topdown
            import cv2
            import numpy as np

            cap, n = cv2.VideoCapture(req["path"]), 0
            with torch.no_grad():
                start = time.perf_counter()
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    b = np.asarray(req["boxes"][str(n)], np.float32).reshape(-1, 5)[:, :4]
                    if len(b):
                        inference_topdown(model, frame, bboxes=b, bbox_format="xyxy")
                    n += 1
                reply = dict(ms=(time.perf_counter() - start) * 1000.0, frames=n)
            cap.release()
        elif req["op"] == "predict":
            with torch.no_grad():
                start = time.perf_counter()
                inference_topdown(model, image, bboxes=boxes, bbox_format="xyxy")
                reply = dict(ms=(time.perf_counter() - start) * 1000.0)
        else:
            return
        out.write(json.dumps(reply) + "\n")


class MMPoseWorker:
    def __init__(self, python: Path):
        self.proc = subprocess.Popen([str(python), __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"MMPose worker died (exit code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def close(self):
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ both sides


def bench_model(name: str, config: str, python: Path, threads: int, repeats: int) -> list[dict]:
    import torch

    import sagepose
    from sagepose.models.inference import native_bf16

    torch.set_num_threads(threads)
    mm = MMPoseWorker(python)
    try:
        with tempfile.TemporaryDirectory(prefix="sagepose-bench-") as tmp:
            info = mm.ask(op="setup", config=config, threads=threads, weights=str(Path(tmp) / "mmpose.pth"))
            # identical weights, every key (strict); load fuses the model for inference, as users get it
            model = sagepose.load(name, checkpoint=Path(tmp) / "mmpose.pth")
            exact = sagepose.load(name, checkpoint=Path(tmp) / "mmpose.pth", exact=True)  # MMPose's arithmetic
            # bfloat16 only where the CPU computes it natively (AVX512-BF16 / AMX); elsewhere it is emulated, slow
            bf16 = (sagepose.load(name, checkpoint=Path(tmp) / "mmpose.pth", dtype="bfloat16")
                    if native_bf16(torch.device("cpu")) else None)
        assert tuple(model.input_size) == tuple(info["input_size"]), (model.input_size, info["input_size"])
        assert model.flip_test == info["flip_test"]
        image, boxes, image_name = test_image()
        cases = {f"forward, batch {b}": (dict(op="forward", batch=b, input_size=info["input_size"]),
                                         lambda b=b: model(x_by_batch[b])) for b in BATCHES}
        x_by_batch = {b: inputs(b, model.input_size) for b in BATCHES}
        flip = "flip" if model.flip_test else "no flip"
        cases[f"predict {len(boxes)} boxes, {flip}"] = (dict(op="predict"), lambda: model.predict(image, boxes))
        cases["  same, exact=True"] = (dict(op="predict"), lambda: exact.predict(image, boxes))
        if bf16 is not None:
            cases["  same, dtype=bfloat16"] = (dict(op="predict"), lambda: bf16.predict(image, boxes))
        times = {case: ([], []) for case in cases}
        with torch.no_grad():
            for req, ours in cases.values():  # warm up both (allocator, oneDNN primitives)
                mm.ask(**req)
                ours()
            for r in range(repeats):
                for case, (req, ours) in cases.items():
                    times[case][0].append(mm.ask(**req)["ms"])
                    times[case][1].append(time_once(ours))
                    print(f"  {name} round {r + 1}/{repeats}, {case}: MMPose {times[case][0][-1]:.0f} ms, "
                          f"sagepose {times[case][1][-1]:.0f} ms", file=sys.stderr, flush=True)
    finally:
        mm.close()
    rows = []
    for case, (theirs, ours) in times.items():
        rows.append(dict(model=name, case=case, mmpose_ms=min(theirs), sagepose_ms=min(ours),
                         speedup=min(theirs) / min(ours), mmpose_median=statistics.median(theirs),
                         sagepose_median=statistics.median(ours),
                         speedup_median=statistics.median(theirs) / statistics.median(ours),
                         speedup_paired=statistics.median(t / o for t, o in zip(theirs, ours)), image=image_name))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=list(BENCH_MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per case (after one warm-up)")
    ap.add_argument("--mmpose-python", type=Path, default=MMPOSE_PYTHON)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    if not args.mmpose_python.is_file():
        sys.exit(f"{args.mmpose_python}: no MMPose venv; run bash ../shared/peers/install_mmpose.sh first")
    sys.path.insert(0, str(ROOT))
    import torch
    from machine import describe_machine

    machine = describe_machine()
    rows = [row for name in args.models
            for row in bench_model(name, BENCH_MODELS[name], args.mmpose_python, args.threads, args.repeats)]
    print(f"\nCPU latency, {args.threads} threads, torch {torch.__version__}: best of {args.repeats} alternating "
          f"rounds (median in brackets); speed-up = MMPose / sagepose of the best times (of the medians), and the "
          f"median of the per-round ratios (each round's two calls run back to back, so machine drift cancels). "
          f"Machine: {machine} at the start, {describe_machine().rpartition('load ')[2]} at the end.")
    print(f"{'model':<11} {'case':<24} {'MMPose ms':>18} {'sagepose ms':>18} {'speed-up':>16} {'per-round':>9}")
    for r in rows:
        print(f"{r['model']:<11} {r['case']:<24} {r['mmpose_ms']:>8.1f} ({r['mmpose_median']:>7.1f}) "
              f"{r['sagepose_ms']:>8.1f} ({r['sagepose_median']:>7.1f}) {r['speedup']:>6.2f}x "
              f"({r['speedup_median']:.2f}x) {r['speedup_paired']:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
