"""Video frames/s of sagepose vs MMPose 1.3.2's per-frame ``inference_topdown``, same model, weights, video and boxes,
measured side by side in one run (issue 14, section 4; floor: sagepose >= 2x MMPose's frames/s on 2 CPU threads).

    python benchmarks/bench_video.py [--model vitpose-s] [--threads 2] [--repeats 3] [--frames 120]
        [--out benchmarks/results/video]

Videos: PoseTrack18's clip in ``../shared/realdata`` (5 frames; each frame's box: the whole frame) and a longer
synthetic one (``--frames`` frames of the generator's people, 640x480, written as an MJPG AVI; boxes: its ground
truth). Both sides decode the file themselves. MMPose (``bench_latency_mmpose.py``'s worker, in the peers venv)
runs ``inference_topdown`` frame by frame with flip test, as its demo does; sagepose runs
``sagepose.video.predict_video`` -- frames decoded on a background thread, the people of ``--batch-frames``
frames in one forward pass -- on the same weights (MMPose's model filled with ``tests/weightgen.py``'s
deterministic weights, loaded strictly by sagepose) in float32, and -- on CPUs with native bf16 (AVX512-BF16 /
AMX) -- again with ``dtype="bfloat16"`` as a second row (MMPose in float32 throughout). The arms take turns, one
whole pass each per round; best and median of ``--repeats`` rounds. Writes ``video.md`` / ``video.json`` under
``--out``, the machine named in the header (CPU, family / model, native bf16, load average): the ratio is the
machine's as much as the code's (docs/benchmarks.md#video).
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
from bench_latency_mmpose import MMPOSE_PYTHON, MMPoseWorker  # noqa: E402  (the one MMPose worker)
from machine import describe_machine  # noqa: E402

POSETRACK = ROOT.parent / "shared" / "realdata" / "posetrack18" / "videos" / "000001_mpiinew_test" / \
    "000001_mpiinew_test.mp4"
# MMPose configs under configs/body_2d_keypoint/ (as bench_latency_mmpose.BENCH_MODELS names them)
CONFIGS = {"vitpose-s": "topdown_heatmap/coco/td-hm_ViTPose-small_8xb64-210e_coco-256x192.py",
           "vitpose-b": "topdown_heatmap/coco/td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
           "hrnet-w32": "topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"}


def synthetic_video(folder: Path, frames: int) -> tuple[Path, dict]:
    """``frames`` synthetic images (the generator's people) as an MJPG AVI, and {frame index: its GT boxes}."""
    import cv2

    from sagepose.data.coco import read_json
    from sagepose.data.synth import generate_dataset

    labels = generate_dataset(folder / "synth", frames, seed=0, split="val", image_size=(640, 480))
    data = read_json(str(labels))
    images = sorted(data["images"], key=lambda im: im["id"])
    writer = cv2.VideoWriter(str(folder / "synthetic.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480))
    boxes = {}
    for i, im in enumerate(images):
        writer.write(cv2.imread(str(Path(labels).parent / im["file_name"])))
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        boxes[str(i)] = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], 1.0]
                         for a in anns]
    writer.release()
    return folder / "synthetic.avi", boxes


def whole_frame_boxes(path: Path) -> dict:
    import cv2

    cap, out, n = cv2.VideoCapture(str(path)), {}, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out[str(n)] = [[0, 0, frame.shape[1], frame.shape[0], 1.0]]
        n += 1
    cap.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vitpose-s", choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=120, help="frames of the synthetic video")
    ap.add_argument("--batch-frames", type=int, default=8)
    ap.add_argument("--mmpose-python", type=Path, default=MMPOSE_PYTHON)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "video")
    args = ap.parse_args()
    if not args.mmpose_python.is_file():
        sys.exit(f"{args.mmpose_python}: no MMPose venv; run bash ../shared/peers/install_mmpose.sh first")
    import numpy as np
    import torch

    import sagepose
    from sagepose.fileio import write_json_atomic, write_text_atomic
    from sagepose.models.inference import native_bf16
    from sagepose.video import predict_video

    torch.set_num_threads(args.threads)
    machine = describe_machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sagepose-bench-video-") as tmp:
        tmp = Path(tmp)
        videos = []
        if POSETRACK.is_file():
            videos.append(("PoseTrack18 clip, whole-frame box", POSETRACK, whole_frame_boxes(POSETRACK)))
        path, boxes = synthetic_video(tmp, args.frames)
        videos.append((f"synthetic, {args.frames} frames 640x480, GT boxes", path, boxes))
        mm = MMPoseWorker(args.mmpose_python)
        try:
            mm.ask(op="setup", config=CONFIGS[args.model], threads=args.threads, weights=str(tmp / "w.pth"))
            dtypes = ["float32"] + (["bfloat16"] if native_bf16(torch.device("cpu")) else [])
            models = {d: sagepose.load(args.model, checkpoint=tmp / "w.pth", dtype=d) for d in dtypes}
            for label, video, boxes in videos:
                arrays = {k: np.asarray(v, np.float32).reshape(-1, 5) for k, v in boxes.items()}
                people = sum(len(v) for v in arrays.values())
                theirs, ours = [], {d: [] for d in dtypes}
                for r in range(args.repeats + 1):  # round 0: warm-up
                    reply = mm.ask(op="video", path=str(video), boxes=boxes)
                    if r:
                        theirs.append(reply["frames"] / (reply["ms"] / 1000.0))
                    line = f"  {label} round {r}/{args.repeats}: MMPose {reply['frames'] / (reply['ms'] / 1000):.2f}"
                    for d, model in models.items():
                        start = time.perf_counter()
                        run = predict_video(model, video, batch_frames=args.batch_frames,
                                            boxes_of=lambda k, f, a=arrays: a.get(k, np.zeros((0, 5))))
                        fps = len(run.frames) / (time.perf_counter() - start)
                        if r:
                            ours[d].append(fps)
                        line += f", sagepose {d} {fps:.2f}"
                    print(line + " frames/s", file=sys.stderr, flush=True)
                for d in dtypes:
                    rows.append(dict(video=label, frames=len(run.frames), people=people, model=args.model, dtype=d,
                                     mmpose_fps=max(theirs), sagepose_fps=max(ours[d]),
                                     ratio=max(ours[d]) / max(theirs),
                                     mmpose_fps_median=statistics.median(theirs),
                                     sagepose_fps_median=statistics.median(ours[d]),
                                     ratio_median=statistics.median(ours[d]) / statistics.median(theirs)))
        finally:
            mm.close()
    header = (f"Video frames/s, {args.model} (MMPose's config, deterministic weights), flip test, {args.threads} "
              f"threads, torch {torch.__version__}: best of {args.repeats} alternating passes (median in brackets). "
              "MMPose (float32): decode + `inference_topdown` per frame; sagepose: `predict_video` (decode thread, "
              f"{args.batch_frames} frames a forward pass). Machine: {machine} at the start, "
              f"{describe_machine().rpartition('load ')[2]} at the end.")
    lines = [header, "", "| video | frames | people | sagepose dtype | MMPose frames/s | sagepose frames/s | "
             "sagepose / MMPose |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['video']} | {r['frames']} | {r['people']} | {r['dtype']} | {r['mmpose_fps']:.2f} "
                     f"({r['mmpose_fps_median']:.2f}) | {r['sagepose_fps']:.2f} ({r['sagepose_fps_median']:.2f}) | "
                     f"{r['ratio']:.2f}x ({r['ratio_median']:.2f}x) |")
    for d in dict.fromkeys(r["dtype"] for r in rows):
        met = all(r["ratio"] >= 2.0 for r in rows if r["dtype"] == d)
        lines += ["", f"Floor (sagepose >= 2x MMPose's frames/s on every video), sagepose in {d}: "
                  f"{'met' if met else 'NOT met'}."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    write_text_atomic(args.out / "video.md", text)
    write_json_atomic(args.out / "video.json", {"header": header, "machine": machine, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
