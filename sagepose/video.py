"""Keypoints on a video, fast: frames decoded on a background thread, the people of several frames in one forward
pass, boxes from a detector every k-th frame and from the previous frame's keypoints between, optional One-Euro
smoothing, and a results json per video.

* Boxes known for each frame up front (a detection json, a detector on every frame, or the whole frame): the
  frames are taken ``batch_frames`` at a time and all their people go through the network together
  (:meth:`~sagepose.models.estimator.TopDownPredictor.predict_many`).
* ``det_every=k`` > 1 with a detector: the detector on frames 0, k, 2k, ...; in between each person's box is the
  box of its previous keypoints scored above ``POSE_BOX_MIN_SCORE``, grown by ``POSE_BOX_PADDING`` (pose-guided
  boxes, as top-down trackers do). Each frame then waits for the one before, so frames go one at a time.
* ``smooth``: a :class:`OneEuroFilter` per person, people matched frame to frame by box IoU (a new person starts a
  new filter). Instances are not tracked across the output (the json lists each frame's people).

A frame the decoder cannot read in the middle of the file is skipped and counted (the rest are processed); reading
stops at the end, or after :data:`MAX_BAD_FRAMES` unreadable frames in a row.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sagepose.geometry import box_iou, keypoint_boxes

POSE_BOX_MIN_SCORE = 0.3  # a pose-guided box spans the previous frame's keypoints scored above this
POSE_BOX_PADDING = 1.25
POSE_BOX_MIN_HALF_SIZE = 4.0  # px
MATCH_IOU = 0.3
MAX_BAD_FRAMES = 30


# ---- reading ----------------------------------------------------------------------------------------------------
@dataclass
class FrameReader:
    """Frames of a video file decoded on a background thread into a queue of ``buffer`` frames: iterate for
    ``(index, frame)``; ``skipped`` counts the unreadable frames passed over, ``fps`` is the file's."""

    path: str
    buffer: int = 16
    skipped: int = 0
    fps: float = 25.0
    frame_count: int = 0
    _error: BaseException | None = field(default=None, repr=False)

    def __post_init__(self):
        self.path = str(self.path)
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            raise ValueError(f"{self.path}: cannot open video")
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap = cap

    def _decode(self, q: queue.Queue, stop: threading.Event) -> None:
        cap, index, bad = self._cap, 0, 0
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    if (self.frame_count and index >= self.frame_count) or bad >= MAX_BAD_FRAMES:
                        break
                    bad += 1
                    self.skipped += 1
                    index += 1
                    continue
                bad = 0
                q.put((index, frame))
                index += 1
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            cap.release()
            self.skipped -= bad  # a run of failures at the end is the end of the file, not skipped frames
            q.put(None)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        q: queue.Queue = queue.Queue(maxsize=self.buffer)
        stop = threading.Event()
        thread = threading.Thread(target=self._decode, args=(q, stop), daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)
            if self._error is not None:
                raise self._error


# ---- smoothing --------------------------------------------------------------------------------------------------
class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) on arrays: an adaptive low-pass whose cutoff rises
    with speed, ``min_cutoff + beta x |smoothed derivative|`` (Hz), so slow motion is smoothed and fast motion
    kept. ``__call__(x, t)``: ``x`` any shape, ``t`` in seconds."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or beta < 0 or d_cutoff <= 0:
            raise ValueError(f"One-Euro: min_cutoff and d_cutoff must be > 0 and beta >= 0, got {min_cutoff}, "
                             f"{beta}, {d_cutoff}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x.copy()
        dt = max(t - self.t, 1e-6)
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.copy()


def pose_boxes(keypoints: np.ndarray, scores: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """(N, K, 2), (N, K) -> (M, 4) xyxy float32: each person's keypoints scored above :data:`POSE_BOX_MIN_SCORE`,
    their box grown by :data:`POSE_BOX_PADDING` about its centre (each half side at least
    :data:`POSE_BOX_MIN_HALF_SIZE`), clipped to the image; a person with under two such keypoints is dropped."""
    boxes, counts = keypoint_boxes(keypoints, scores, POSE_BOX_MIN_SCORE, POSE_BOX_PADDING, POSE_BOX_MIN_HALF_SIZE)
    return np.clip(boxes[counts >= 2], 0, [image_wh[0], image_wh[1]] * 2).astype(np.float32).reshape(-1, 4)


class Smoother:
    """One :class:`OneEuroFilter` per person, people matched to the previous frame's by box IoU."""

    def __init__(self, **params):
        self.params = params
        OneEuroFilter(**params)  # refuse bad numbers now
        self.tracks: list[tuple[np.ndarray, OneEuroFilter]] = []

    def __call__(self, boxes: np.ndarray, keypoints: np.ndarray, t: float) -> np.ndarray:
        prev = np.array([b for b, _ in self.tracks], np.float32).reshape(-1, 4)
        iou = box_iou(boxes, prev) if len(prev) and len(boxes) else np.zeros((len(boxes), len(prev)))
        assigned: dict[int, int] = {}
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), max(len(prev), 1))
            if not len(prev) or iou[i, j] < MATCH_IOU:
                break
            if i not in assigned and j not in assigned.values():
                assigned[i] = j
        out, tracks = np.empty_like(keypoints), []
        for i in range(len(boxes)):
            f = self.tracks[assigned[i]][1] if i in assigned else OneEuroFilter(**self.params)
            out[i] = f(keypoints[i], t)
            tracks.append((boxes[i], f))
        self.tracks = tracks
        return out


# ---- the loop ---------------------------------------------------------------------------------------------------
@dataclass
class VideoRun:
    """What :func:`predict_video` did: per frame ``(index, boxes (N, 5), Prediction)``, the frames read and skipped,
    and the measured frames/s (decode + boxes + network + smoothing, without rendering)."""

    frames: list = field(default_factory=list)
    skipped_frames: int = 0
    fps: float = 25.0
    frames_per_second: float = 0.0


def predict_video(model, path: str | Path, boxes_of: Callable | None = None, detector=None, det_every: int = 1,
                  batch_frames: int = 8, smooth: dict | None = None, on_frame: Callable | None = None,
                  progress: bool = False, usable: Callable | None = None) -> VideoRun:
    """Keypoints of the people of every frame of the video ``path`` (see the module docstring).

    ``boxes_of(key, frame) -> (N, 5)``: the boxes of frame ``str(index)`` (a detection json's, the whole frame's);
    ``detector``: person boxes found on the frames (every ``det_every``-th, pose-guided between); ``smooth``: One-Euro
    parameters (``min_cutoff``, ``beta``, ``d_cutoff``) or None; ``usable(boxes, frame)``: drops the boxes no
    prediction can use (:func:`sagepose.infer.run_inference` counts them); ``on_frame(index, frame, boxes,
    prediction, fps)``: called in order (rendering; ``fps``: the file's); ``progress``: a line of frames/s on
    stderr every 2 s."""
    from sagepose.models.estimator import Prediction

    if det_every < 1 or batch_frames < 1:
        raise ValueError(f"det_every and batch_frames must be >= 1, got {det_every}, {batch_frames}")
    if det_every > 1 and detector is None:
        raise ValueError("det_every > 1 takes boxes from a detector every k-th frame: give a detector")
    reader = FrameReader(str(path))
    run = VideoRun(fps=reader.fps)
    smoother = Smoother(**smooth) if smooth is not None else None
    usable = usable or (lambda b, frame: b)
    K = model.schema.num_keypoints
    start = last_report = time.perf_counter()

    def emit(items):
        nonlocal last_report
        for index, frame, b, pred in items:
            if smoother is not None and len(b):
                pred = Prediction(smoother(b[:, :4], pred.keypoints, index / run.fps).astype(np.float32),
                                  pred.scores)
            run.frames.append((index, b, pred))
            if on_frame is not None:
                on_frame(index, frame, b, pred, run.fps)
        now = time.perf_counter()
        if progress and now - last_report > 2.0:
            last_report = now
            total = f"/{reader.frame_count}" if reader.frame_count else ""
            print(f"{Path(path).name}: {len(run.frames)}{total} frames, {len(run.frames) / (now - start):.1f} "
                  "frames/s", file=sys.stderr, flush=True)

    def boxes_for(index, frame, previous):
        if detector is not None and (det_every == 1 or index % det_every == 0 or previous is None):
            return usable(detector(frame).as_array(), frame)
        if detector is not None:  # pose-guided: last frame's people, at their box's score
            b = pose_boxes(previous.keypoints, previous.scores, frame.shape[1::-1])
            return usable(np.concatenate([b, np.ones((len(b), 1), np.float32)], 1), frame)
        return usable(boxes_of(str(index), frame), frame)

    if det_every == 1:  # every frame's boxes known up front: batch frames
        pending = []
        for index, frame in reader:
            pending.append((index, frame, boxes_for(index, frame, None)))
            if len(pending) == batch_frames:
                preds = model.predict_many([f for _, f, _ in pending], [b[:, :4] for _, _, b in pending])
                emit([(i, f, b, p) for (i, f, b), p in zip(pending, preds)])
                pending = []
        if pending:
            preds = model.predict_many([f for _, f, _ in pending], [b[:, :4] for _, _, b in pending])
            emit([(i, f, b, p) for (i, f, b), p in zip(pending, preds)])
    else:
        previous = None
        for index, frame in reader:
            b = boxes_for(index, frame, previous)
            pred = model.predict_many([frame], [b[:, :4]])[0] if len(b) else Prediction(
                np.zeros((0, K, 2), np.float32), np.zeros((0, K), np.float32))
            emit([(index, frame, b, pred)])
            previous = pred if len(b) else None
    run.skipped_frames = reader.skipped
    elapsed = time.perf_counter() - start
    run.frames_per_second = len(run.frames) / elapsed if elapsed > 0 else 0.0
    return run
