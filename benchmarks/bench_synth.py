"""Single-core throughput of the synthetic dataset generator.

    python benchmarks/bench_synth.py [--num 200] [--repeats 5] [--style default] [--size 320 256]

Prints images/s of ``render_image`` alone and of ``generate_dataset`` (render + JPEG
encode + file write + json), on one core (OpenCV pinned to one thread), timed by this
process's CPU time. Each is run ``--repeats`` times; the median and the best repeat
are shown (as ``timeit`` does, the best is the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import cv2
import numpy as np

from sagepose.data.synth import STYLES, generate_dataset, render_image


def _rates(num: int, repeats: int, fn) -> tuple[float, float]:
    """(median, best) images/s of ``fn(repeat)`` rendering ``num`` images."""
    rates = []
    for r in range(repeats):
        cpu = time.process_time()
        fn(r)
        rates.append(num / (time.process_time() - cpu))
    return statistics.median(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=200, help="images per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--style", default="default", choices=sorted(STYLES))
    parser.add_argument("--size", type=int, nargs=2, default=(320, 256), metavar=("W", "H"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    size = tuple(args.size)
    render_image(np.random.default_rng(0), style=args.style, image_size=size)  # warm caches

    def render(r: int) -> None:
        for i in range(args.num):
            render_image(np.random.default_rng([r, i]), style=args.style, image_size=size)

    def generate(r: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            generate_dataset(tmp, args.num, seed=r, style=args.style, image_size=size)

    label = f"{args.style} {size[0]}x{size[1]}, {args.repeats} x {args.num} images"
    for name, fn in (("render_image", render), ("generate_dataset", generate)):
        median, best = _rates(args.num, args.repeats, fn)
        print(f"{name:16s} {label}: {median:6.1f} images/s median, {best:6.1f} best (1 core)")


if __name__ == "__main__":
    main()
