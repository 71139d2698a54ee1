"""Inference on an image, a folder of images or a video: COCO-format results json + rendered skeletons.

Boxes come from a detection json, an ONNX person detector (:mod:`sagepose.detect`, ``--detector``) or, without
either, the whole image/frame is one person box.
Two detection formats are read (by :mod:`sagepose.data.detections`):

* COCO results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) together with a COCO
  json whose ``images`` give each ``file_name`` its ``image_id`` (``--images-json``), read by
  :func:`sagepose.data.detections.read_detections` as for evaluation;
* a plain mapping ``{"file_name": [[x1, y1, x2, y2, score], ...]}`` (for a video, keys are
  frame indices).

Results carry the images json's ``image_id`` when one is given (so ``COCO(gt).loadRes`` takes
them), else the input's index in the sorted folder (a video: the frame index). A box that is
non-finite, empty or inverted, or wholly outside its image is skipped and counted; so is an
unreadable image of a folder (a single unreadable image is an error).

``fmt="dlc"`` also writes DeepLabCut's table per video and per image folder (:func:`write_dlc`). Every file a run
writes is listed in ``OUT/.sagepose-run.json``, so that a run told to replace a folder's previous one removes
exactly what that one wrote (:func:`clear_previous_run`).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
FORMATS = ("coco", "dlc")
RUN_RECORD = ".sagepose-run.json"  # the files a run wrote into its folder, relative to it


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
    """Detection json -> {file name (or frame index as str): (N, 5) xyxy + score}, read by
    :mod:`sagepose.data.detections` (a mapping by :func:`read_box_mapping`, COCO results by
    :func:`read_detections`, keyed by each image's file name without its folders)."""
    from sagepose.data.coco import read_json
    from sagepose.data.detections import read_box_mapping, read_detections

    det_json = str(det_json)
    data = read_json(det_json)
    if isinstance(data, dict):
        boxes = read_box_mapping(det_json, data, score_thr)
    elif isinstance(data, list):
        if images_json is None:
            raise ValueError(f"{det_json}: COCO-results detections need --images-json to map image ids to files")
        image_ids(images_json)  # file names must tell the images apart
        boxes = defaultdict(list)
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
    # per video / image folder (its name): (image file name or frame index, that image's rows), in order
    tables: dict[str, list[tuple[str | int, list[dict]]]] = field(default_factory=dict)
    whole_image: bool = False  # no boxes given: each image / frame was one person box
    score_thr: float = 0.3  # the keypoint score a render draws above
    rendered: bool = True
    written: list[Path] = field(default_factory=list)  # the files written, besides the renders

    def summary(self) -> list[str]:
        """One line per kind of skip, and one for each thing the user should know about the poses: that each
        image was taken as one person (no boxes), that no keypoint of some poses scored above the threshold."""
        lines = []
        if self.whole_image and self.tables:
            frames = sum(len(t) for t in self.tables.values() if isinstance(t[0][0], int))
            images = sum(len(t) for t in self.tables.values()) - frames
            what = " and ".join(f"{n} {kind}{'s' * (n != 1)}" for n, kind in ((images, "image"), (frames, "frame"))
                                if n)
            lines.append(f"no person boxes given: each image / frame was taken as one person ({_count(self.rows)} "
                         f"from {what}); for several people per image pass --detector (e.g. yolox-m-humanart) or "
                         "--det-json")
        scores = [r["keypoints"][2::3] for r in self.rows]
        faint = [max(sc) for sc in scores if max(sc) <= self.score_thr]
        if faint:
            top, faint = max(faint), len(faint)
            shown = "; the renders show no joints for them" if self.rendered else ""
            lines.append(f"no keypoint scored above --kpt-thr {self.score_thr:g} in {faint} of {len(scores)} "
                         f"poses{shown} -- lower --kpt-thr (scores max {top:.2g})")
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


def _count(rows: list) -> str:
    return f"{len(rows)} pose{'s' * (len(rows) != 1)}"


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
                  detector=None, video: dict | None = None, fmt: str = "coco",
                  scorer: str = "sagepose") -> InferenceRun:
    """Predict on ``source`` (image, folder or video); write ``OUT/results.json`` and ``OUT/vis/``.

    Person boxes: ``boxes`` (:func:`load_boxes`), or a ``detector`` run on each image / frame
    (:class:`sagepose.detect.Detector`), or else the whole image as one box. A video goes through
    :func:`sagepose.video.predict_video` with the options in ``video`` (``det_every``, ``batch_frames``,
    ``smooth``, ``progress``) and also gets ``OUT/NAME.json``, its frames' people. ``fmt="dlc"``: also
    DeepLabCut's table per video and per image folder (:func:`write_dlc`; ``scorer`` its scorer).

    ``ids`` ({file name: image id}, :func:`image_ids`) gives each image its dataset id; without it an
    image's id is its index in the sorted folder. Returns the COCO-format result rows (one per person,
    with ``file_name`` and ``bbox`` added) and what was skipped: unreadable images of a folder (a single
    unreadable image is an error), boxes that are not finite, empty or inverted, or wholly outside.
    The folder is written as it is: the caller picks a fresh one or clears a previous run's files
    (:func:`clear_previous_run`).
    """
    from sagepose.fileio import write_json_atomic
    from sagepose.image import ImageReadError, read_image
    from sagepose.viz import draw_poses

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    run = InferenceRun(rows=[], whole_image=boxes is None and detector is None, score_thr=score_thr,
                       rendered=render)
    boxes_of = box_source(boxes, detector)
    inputs = list_inputs(source)
    images = []  # the images' table: (file name, rows)
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
        these = _result_rows(pred, b, file_idx if ids is None else ids[path.name], path.name) if len(b) else []
        run.rows.extend(these)
        images.append((path.name, these))
        if render:
            vis = image if pred is None else draw_poses(image, pred.keypoints, pred.scores, model.schema,
                                                        score_thr, boxes=b[:, :4])
            cv2.imwrite(str(out / "vis" / f"{path.stem}.png"), vis)
    if images:  # one table for a folder's images (named after it), or for a single image
        run.tables[Path(source).resolve().name if Path(source).is_dir() else Path(source).stem] = images
    run.written.append(write_json_atomic(out / "results.json", run.rows))
    if fmt == "dlc":
        run.written.extend(write_dlc(run.tables, out, model.schema.keypoints, scorer))
    record = sorted({str(p.relative_to(out)) for p in run.written} | {"vis"})
    write_json_atomic(out / RUN_RECORD, dict(command="infer", outputs=record), indent=1)
    return run


def clear_previous_run(out_dir: str | Path) -> list[Path]:
    """Remove what an earlier :func:`run_inference` wrote into ``out_dir`` (the files its record lists, and
    ``results.json`` and ``vis/`` by name for a folder without one), so that a run replacing it leaves nothing
    of it behind; anything else in the folder stays. -> the paths removed."""
    import json

    from sagepose.fileio import remove_outputs

    out = Path(out_dir)
    names = {"results.json", "vis"}
    try:
        names |= set(json.loads((out / RUN_RECORD).read_text())["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    removed = remove_outputs(out, sorted(names))
    (out / RUN_RECORD).unlink(missing_ok=True)
    return removed


def dlc_name(stem: str, scorer: str) -> str:
    """DeepLabCut's file name for a video's (or folder's) table: ``<stem>DLC_<scorer>.csv`` (its own analysis writes
    ``<video stem><scorer>.h5`` with a scorer starting ``DLC_``; tools find the tables by that marker)."""
    return f"{stem}DLC_{scorer}.csv"


def write_dlc(tables: dict[str, list[tuple[str | int, list[dict]]]], out_dir: str | Path,
              bodyparts: tuple[str, ...] | list[str], scorer: str) -> list[Path]:
    """One CSV per video / image folder in DeepLabCut's layout: header rows ``scorer``, [``individuals``],
    ``bodyparts``, ``coords`` (``x``, ``y``, ``likelihood`` per bodypart), then one row per frame (the frame
    index) or image (its file name), the values those of ``results.json``.

    A table where no frame holds more than one pose has DeepLabCut's single-animal header (3 rows,
    ``pandas.read_csv(f, header=[0, 1, 2], index_col=0)``); one where some frame holds several, its multi-animal
    header (4 rows, ``header=[0, 1, 2, 3]``) with individuals ``individual1``, ``individual2``, ... in each frame's
    order of the results (people are not tracked across frames). A frame with no pose, or fewer than the
    individuals, has empty cells (NaN); a video's unreadable frames are such rows too, so row n is frame n."""
    import csv

    from sagepose.fileio import atomic_open

    written = []
    k = len(bodyparts)
    for stem, entries in tables.items():
        if entries and isinstance(entries[0][0], int):  # a video: every frame index up to the last one read
            by_index = dict(entries)
            entries = [(i, by_index.get(i, [])) for i in range(max(by_index) + 1)]
        people = max((len(rows) for _, rows in entries), default=0)
        header = [["scorer", *[scorer] * (3 * k * max(people, 1))]]
        if people > 1:
            header.append(["individuals", *(f"individual{i + 1}" for i in range(people) for _ in range(3 * k))])
        header.append(["bodyparts", *(name for _ in range(max(people, 1)) for name in bodyparts for _ in range(3))])
        header.append(["coords", *["x", "y", "likelihood"] * (k * max(people, 1))])
        path = Path(out_dir) / dlc_name(stem, scorer)
        with atomic_open(path, "w", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerows(header)
            for label, rows in entries:
                cells = [v for r in rows for v in r["keypoints"]]
                writer.writerow([label, *cells, *[""] * (3 * k * max(people, 1) - len(cells))])
        written.append(path)
    return written


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
    table = done.tables.setdefault(path.stem, [])
    for index, b, pred in run.frames:
        these = _result_rows(pred, b, index, f"{path.name}#{index}") if len(b) else []
        rows.extend(these)
        table.append((index, these))
        frames.append(dict(frame=index, instances=[dict(bbox=[round(float(v), 2) for v in box[:4]],
                                                        keypoints=r["keypoints"], score=r["score"])
                                                   for box, r in zip(b, these)]))
    if run.skipped_frames:
        done.skipped_frames[path.name] = run.skipped_frames
    done.written.append(out / f"{path.stem}.json")
    write_json_atomic(out / f"{path.stem}.json", dict(video=path.name, fps=run.fps, frames_read=len(run.frames),
                                                      frames_skipped=run.skipped_frames,
                                                      frames_per_second=round(run.frames_per_second, 2),
                                                      frames=frames))
    return rows
