"""Heatmap decode time per 1000 instances of 17x64x48: sagepose (batched torch) vs MMPose 1.3.2 (numpy).

Run with the MMPose peer venv so both import (sagepose is taken from this checkout):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python benchmarks/bench_codecs.py [--instances 1000] [--threads 1]

Without MMPose importable it times sagepose alone. With CUDA available it adds a GPU column.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "peers"))  # MMPose's import shim

import torch  # noqa: E402

from sagepose.codecs import MSRAHeatmap, UDPHeatmap  # noqa: E402

CODECS = {  # name: (sagepose codec, MMPose constructor arguments)
    "MSRA": (MSRAHeatmap(), dict(type="MSRAHeatmap", unbiased=False)),
    "DARK": (MSRAHeatmap(unbiased=True), dict(type="MSRAHeatmap", unbiased=True)),
    "UDP": (UDPHeatmap(), dict(type="UDPHeatmap")),
}


def load_mmpose():
    """MMPose's codec classes, or None when it is not importable from this interpreter."""
    try:
        import compat  # noqa: F401  (shim that must precede mmpose)
        from mmpose.codecs import MSRAHeatmap as MMSRA
        from mmpose.codecs import UDPHeatmap as MUDP
    except ImportError:
        return None
    return {"MSRAHeatmap": MMSRA, "UDPHeatmap": MUDP}


def sample_heatmaps(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 17, 64, 48) float32: DARK targets at random keypoints plus a little noise, like trained outputs."""
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(n, 17, 2, generator=g) * torch.tensor([192.0, 256.0])
    heatmaps, _ = MSRAHeatmap(unbiased=True).encode(keypoints, torch.ones(n, 17))
    return heatmaps + 0.02 * torch.randn(heatmaps.shape, generator=g)


def best_of(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (MMPose's numpy loop uses one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    heatmaps = sample_heatmaps(args.instances)
    per_1000 = 1000 / args.instances
    mmpose = load_mmpose()
    cuda = torch.cuda.is_available()

    header = f"{'codec':<6}{'sagepose CPU ms':>17}"
    header += f"{'sagepose CUDA ms':>18}" if cuda else ""
    header += f"{'MMPose ms':>12}{'MMPose / sagepose CPU':>23}" if mmpose else ""
    print(f"decode of {args.instances} x 17x64x48, per 1000 instances, best of {args.repeats}; "
          f"torch {torch.__version__}, {args.threads} CPU thread(s)")
    print(header)
    for name, (codec, mm_cfg) in CODECS.items():
        codec.decode(heatmaps[:8])  # warm-up
        ours = best_of(lambda c=codec: c.decode(heatmaps), args.repeats) * per_1000 * 1e3
        row = f"{name:<6}{ours:>17.1f}"
        if cuda:
            on_gpu = heatmaps.cuda()
            codec.decode(on_gpu)
            gpu = best_of(lambda c=codec, x=on_gpu: c.decode(x), args.repeats, torch.cuda.synchronize)
            row += f"{gpu * per_1000 * 1e3:>18.2f}"
        if mmpose:
            cfg = dict(mm_cfg)
            ref = mmpose[cfg.pop("type")](input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0, **cfg)
            arrays = heatmaps.numpy()
            theirs = best_of(lambda r=ref, x=arrays: [r.decode(a) for a in x], args.repeats) * per_1000 * 1e3
            row += f"{theirs:>12.1f}{theirs / ours:>22.1f}x"
        print(row)


if __name__ == "__main__":
    main()
