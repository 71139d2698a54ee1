"""Inference on an image, a folder of images or a video: COCO-format results json + rendered skeletons.

Boxes come from a detection json, an ONNX person detector (:mod:`sagepose.detect`, ``--detector``) or, without
either, the whole image/frame is one person box.
Two detection formats are read:

* COCO results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) together with a COCO
  json whose ``images`` give each ``file_name`` its ``image_id`` (``--images-json``), read by
  :func:`sagepose.data.coco.read_detections` as for evaluation;
* a plain mapping ``{"file_name": [[x1, y1, x2, y2, score], ...]}`` (for a video, keys are
  frame indices).

Results carry the images json's ``image_id`` when one is given (so ``COCO(gt).loadRes`` takes
them), else the input's index in the sorted folder (a video: the frame index). A box that is
non-finite, empty or inverted, or wholly outside its image is skipped and counted; so is an
unreadable image of a folder (a single unreadable image is an error).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def image_ids(images_json: str | Path) -> dict[str, int]:
    """{file name (without its folders): image id} of a COCO json's ``images``; inputs are matched by name."""
    from sagepose.data.coco import image_index, read_json

    path = str(images_json)
    ids: dict[str, int] = {}
    for image_id, img in image_index(path, read_json(path)).items():
        name = Path(img["file_name"]).name
        if ids.setdefault(name, image_id) != image_id:
            raise ValueError(f"{path}: images {ids[name]} and {image_id} are both named {name!r}; inputs are "
                             f"matched to images by file name")
    return ids


def load_boxes(det_json: str | Path, images_json: str | Path | None = None,
               score_thr: float = 0.0) -> dict[str, np.ndarray]:
    """Detection json -> {file name (or frame index as str): (N, 5) xyxy + score}."""
    from sagepose.data.coco import read_detections, read_json

    det_json = str(det_json)
    data = read_json(det_json)
    boxes: dict[str, list] = defaultdict(list)
    if isinstance(data, dict):
        for key, rows in data.items():
            if not isinstance(rows, list):
                raise ValueError(f"{det_json}: {key!r}: expected a list of boxes [[x1, y1, x2, y2(, score)], ...]")
            for i, row in enumerate(rows):
                if not isinstance(row, (list, tuple)) or len(row) not in (4, 5):
                    raise ValueError(f"{det_json}: {key!r} box {i}: expected [x1, y1, x2, y2(, score)]")
                row = list(row) + [1.0] * (5 - len(row))
                if row[4] >= score_thr:
                    boxes[str(key)].append(row)
    elif isinstance(data, list):
        if images_json is None:
            raise ValueError(f"{det_json}: COCO-results detections need --images-json to map image ids to files")
        image_ids(images_json)  # file names must tell the images apart
        for det in read_detections(det_json, str(images_json), score_thr):  # thresholded there
            x, y, w, h = (float(v) for v in det.bbox_xywh)
            boxes[Path(det.image["file_name"]).name].append([x, y, x + w, y + h, det.score])
    else:
        raise ValueError(f"{det_json}: expected a list (COCO results) or a mapping of file name to boxes")
    return {key: np.asarray(rows, np.float32).reshape(-1, 5) for key, rows in boxes.items()}


@dataclass
class InferenceRun:
    """What :func:`run_inference` did: the result rows, and what it skipped."""

    rows: list[dict]
    unreadable: list[str] = field(default_factory=list)  # images of a folder that could not be read
    skipped_boxes: Counter = field(default_factory=Counter)  # boxes not predicted on, by problem
    skipped_frames: Counter = field(default_factory=Counter)  # unreadable frames passed over, by video

    def summary(self) -> list[str]:
        """One line per kind of skip (none when nothing was skipped)."""
        lines = []
        if self.unreadable:
            n = len(self.unreadable)
            shown = ", ".join(self.unreadable[:5]) + (", ..." if n > 5 else "")
            lines.append(f"skipped {n} unreadable image{'s' * (n > 1)}: {shown}")
        if self.skipped_boxes:
            n = sum(self.skipped_boxes.values())
            parts = ", ".join(f"{k} {why}" for why, k in self.skipped_boxes.items())
            lines.append(f"skipped {n} box{'es' * (n > 1)}: {parts}")
        for name, n in self.skipped_frames.items():
            lines.append(f"{name}: skipped {n} unreadable frame{'s' * (n > 1)}, processed the rest")
        return lines


def _whole(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return np.array([[0, 0, w, h, 1.0]], np.float32)


def _usable(boxes: np.ndarray, image: np.ndarray, skipped: Counter) -> np.ndarray:
    """The (N, 5) boxes a prediction can use on ``image``; the others are counted in ``skipped``."""
    from sagepose.geometry import check_boxes

    _, problems = check_boxes(boxes[:, :4], image.shape[1::-1], strict=False)
    skipped.update(p for p in problems if p)
    return boxes[problems == ""]


def _result_rows(pred, boxes: np.ndarray, image_id, file_name: str) -> list[dict]:
    from sagepose.eval.coco import instance_scores

    scores = instance_scores(pred.scores, boxes[:, 4])
    rows = []
    for n in range(len(boxes)):
        flat = np.concatenate([pred.keypoints[n], pred.scores[n][:, None]], 1).reshape(-1)
        x1, y1, x2, y2 = (float(v) for v in boxes[n, :4])
        rows.append(dict(image_id=image_id, file_name=file_name, category_id=1,
                         bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         keypoints=[round(float(v), 3) for v in flat], score=float(scores[n])))
    return rows


def list_inputs(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def box_source(boxes: dict[str, np.ndarray] | None = None, detector=None):
    """``(key, image) -> (N, 5)`` boxes + scores: the detection json's entry for ``key`` (a file name or a frame
    index; none: no boxes), else the ``detector``'s (:class:`sagepose.detect.Detector`), else the whole image."""
    if boxes is not None and detector is not None:
        raise ValueError("boxes come from a detection json or a detector, not both")
    if boxes is not None:
        return lambda key, image: boxes.get(key, np.zeros((0, 5), np.float32))
    if detector is not None:
        return lambda key, image: detector(image).as_array()
    return lambda key, image: _whole(image)


def run_inference(model, source: str | Path, out_dir: str | Path, boxes: dict[str, np.ndarray] | None = None,
                  render: bool = True, score_thr: float = 0.3, ids: dict[str, int] | None = None,
                  detector=None, video: dict | None = None) -> InferenceRun:
    """Predict on ``source`` (image, folder or video); write ``OUT/results.json`` and ``OUT/vis/``.

    Person boxes: ``boxes`` (:func:`load_boxes`), or a ``detector`` run on each image / frame
    (:class:`sagepose.detect.Detector`), or else the whole image as one box. A video goes through
    :func:`sagepose.video.predict_video` with the options in ``video`` (``det_every``, ``batch_frames``,
    ``smooth``, ``progress``) and also gets ``OUT/NAME.json``, its frames' people.

    ``ids`` ({file name: image id}, :func:`image_ids`) gives each image its dataset id; without it an
    image's id is its index in the sorted folder. Returns the COCO-format result rows (one per person,
    with ``file_name`` and ``bbox`` added) and what was skipped: unreadable images of a folder (a single
    unreadable image is an error), boxes that are not finite, empty or inverted, or wholly outside.
    """
    from sagepose.fileio import write_json_atomic
    from sagepose.image import ImageReadError, read_image
    from sagepose.viz import draw_poses

    out = Path(out_dir)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    run = InferenceRun(rows=[])
    boxes_of = box_source(boxes, detector)
    inputs = list_inputs(source)
    for file_idx, path in enumerate(inputs):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            run.rows.extend(_run_video(model, path, out, boxes_of, render, score_thr, run,
                                       video=dict(video or {}, detector=detector)))
            continue
        if ids is not None and path.name not in ids:
            raise ValueError(f"{path}: no image of this name in the images json")
        try:
            image = read_image(path)
        except ImageReadError:
            if not Path(source).is_dir():
                raise
            run.unreadable.append(str(path))
            continue
        b = _usable(boxes_of(path.name, image), image, run.skipped_boxes)
        pred = model.predict(image, b[:, :4]) if len(b) else None
        if pred is not None:
            run.rows.extend(_result_rows(pred, b, file_idx if ids is None else ids[path.name], path.name))
        if render:
            vis = image if pred is None else draw_poses(image, pred.keypoints, pred.scores, model.schema,
                                                        score_thr, boxes=b[:, :4])
            cv2.imwrite(str(out / "vis" / f"{path.stem}.png"), vis)
    write_json_atomic(out / "results.json", run.rows)
    return run


def _run_video(model, path: Path, out: Path, boxes_of, render: bool, score_thr: float, done: InferenceRun,
               video: dict | None = None) -> list[dict]:
    """One video through :func:`sagepose.video.predict_video`: its COCO rows (image id: the frame index), a json
    per video (``OUT/NAME.json``: each frame's people), the rendered ``OUT/vis/NAME.mp4``."""
    from sagepose.fileio import write_json_atomic
    from sagepose.video import predict_video
    from sagepose.viz import draw_poses

    opts = dict(video or {})
    detector = opts.pop("detector", None)
    writer = None

    def on_frame(index, frame, b, pred, fps):
        nonlocal writer
        if not render:
            return
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out / "vis" / f"{path.stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                     fps, (w, h))
        writer.write(frame if not len(b) else draw_poses(frame, pred.keypoints, pred.scores, model.schema, score_thr,
                                                         boxes=b[:, :4]))

    try:
        run = predict_video(model, path, boxes_of=boxes_of, detector=detector, on_frame=on_frame,
                            usable=lambda b, frame: _usable(b, frame, done.skipped_boxes), **opts)
    finally:
        if writer is not None:
            writer.release()
    rows, frames = [], []
    for index, b, pred in run.frames:
        these = _result_rows(pred, b, index, f"{path.name}#{index}") if len(b) else []
        rows.extend(these)
        frames.append(dict(frame=index, instances=[dict(bbox=[round(float(v), 2) for v in box[:4]],
                                                        keypoints=r["keypoints"], score=r["score"])
                                                   for box, r in zip(b, these)]))
    if run.skipped_frames:
        done.skipped_frames[path.name] = run.skipped_frames
    write_json_atomic(out / f"{path.stem}.json", dict(video=path.name, fps=run.fps, frames_read=len(run.frames),
                                                      frames_skipped=run.skipped_frames,
                                                      frames_per_second=round(run.frames_per_second, 2),
                                                      frames=frames))
    return rows
