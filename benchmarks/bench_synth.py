"""Single-core throughput of the synthetic dataset generator.

    python benchmarks/bench_synth.py [--num 300] [--style default] [--size 320 256]

Prints images/s of ``render_image`` alone and of ``generate_dataset`` (render + JPEG
encode + write + json), both on one core (OpenCV pinned to one thread). Images/s are
given by wall clock and by this process's CPU time; on a shared machine the latter
is the fair single-core figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np

from sagepose.data.synth import STYLES, generate_dataset, render_image


def _rate(num: int, fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return num / (time.perf_counter() - wall), num / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--style", default="default", choices=sorted(STYLES))
    parser.add_argument("--size", type=int, nargs=2, default=(320, 256), metavar=("W", "H"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    size = tuple(args.size)
    render_image(np.random.default_rng(0), style=args.style, image_size=size)  # warm caches

    def render_all():
        for i in range(args.num):
            render_image(np.random.default_rng([0, i]), style=args.style, image_size=size)

    wall, cpu = _rate(args.num, render_all)
    print(f"render_image     {args.style} {size[0]}x{size[1]}: {wall:7.1f} img/s wall, {cpu:7.1f} img/s CPU")
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = _rate(
            args.num, lambda: generate_dataset(tmp, args.num, style=args.style, image_size=size)
        )
    print(f"generate_dataset {args.style} {size[0]}x{size[1]}: {wall:7.1f} img/s wall, {cpu:7.1f} img/s CPU")


if __name__ == "__main__":
    main()
