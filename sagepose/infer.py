"""Inference on an image, a folder of images or a video: COCO-format results json + rendered skeletons.

Boxes come from a detection json or, without one, the whole image/frame is one person box.
Two detection formats are read:

* COCO results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) together with a COCO
  json whose ``images`` give each ``file_name`` its ``image_id`` (``--images-json``);
* a plain mapping ``{"file_name": [[x1, y1, x2, y2, score], ...]}`` (for a video, keys are
  frame indices).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def load_boxes(det_json: str | Path, images_json: str | Path | None = None,
               score_thr: float = 0.0) -> dict[str, np.ndarray]:
    """Detection json -> {file name (or frame index as str): (N, 5) xyxy + score}."""
    det_json = Path(det_json)
    try:
        data = json.loads(det_json.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{det_json}: not valid JSON: {e}") from None
    boxes: dict[str, list] = defaultdict(list)
    if isinstance(data, dict):
        for key, rows in data.items():
            for i, row in enumerate(rows):
                if len(row) not in (4, 5):
                    raise ValueError(f"{det_json}: {key!r} box {i}: expected [x1, y1, x2, y2(, score)]")
                boxes[str(key)].append(list(row) + [1.0] * (5 - len(row)))
    elif isinstance(data, list):
        if images_json is None:
            raise ValueError(f"{det_json}: COCO-results detections need --images-json to map image ids to files")
        images = json.loads(Path(images_json).read_text()).get("images", [])
        names = {im["id"]: Path(im["file_name"]).name for im in images}
        for i, det in enumerate(data):
            if det.get("category_id", 1) != 1:
                continue
            if "bbox" not in det or "image_id" not in det:
                raise ValueError(f"{det_json}: detection {i}: missing 'bbox' or 'image_id'")
            if det["image_id"] not in names:
                raise ValueError(f"{det_json}: detection {i}: image_id {det['image_id']} not in {images_json}")
            x, y, w, h = det["bbox"]
            boxes[names[det["image_id"]]].append([x, y, x + w, y + h, det.get("score", 1.0)])
    else:
        raise ValueError(f"{det_json}: expected a list (COCO results) or a mapping of file name to boxes")
    out = {}
    for key, rows in boxes.items():
        arr = np.asarray(rows, np.float32).reshape(-1, 5)
        out[key] = arr[arr[:, 4] >= score_thr]
    return out


def _whole(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return np.array([[0, 0, w, h, 1.0]], np.float32)


def _result_rows(pred, boxes: np.ndarray, image_id, file_name: str) -> list[dict]:
    rows = []
    for n in range(len(boxes)):
        flat = np.concatenate([pred.keypoints[n], pred.scores[n][:, None]], 1).reshape(-1)
        x1, y1, x2, y2, s = (float(v) for v in boxes[n])
        rows.append(dict(image_id=image_id, file_name=file_name, category_id=1,
                         bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         keypoints=[round(float(v), 3) for v in flat],
                         score=float(s * pred.scores[n].mean())))
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


def run_inference(model, source: str | Path, out_dir: str | Path, boxes: dict[str, np.ndarray] | None = None,
                  render: bool = True, score_thr: float = 0.3) -> list[dict]:
    """Predict on ``source`` (image, folder or video); write ``OUT/results.json`` and ``OUT/vis/``.

    Returns the COCO-format result rows (one per person, with ``file_name`` and ``bbox`` added).
    """
    from sagepose.data.coco import read_image
    from sagepose.fileio import write_json_atomic
    from sagepose.viz import draw_poses

    out = Path(out_dir)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for file_idx, path in enumerate(list_inputs(source)):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            rows.extend(_run_video(model, path, out, boxes, render, score_thr))
            continue
        image = read_image(path)
        b = boxes.get(path.name, np.zeros((0, 5), np.float32)) if boxes is not None else _whole(image)
        pred = model.predict(image, b[:, :4]) if len(b) else None
        if pred is not None:
            rows.extend(_result_rows(pred, b, file_idx, path.name))
        if render:
            vis = image if pred is None else draw_poses(image, pred.keypoints, pred.scores, model.schema,
                                                        score_thr, boxes=b[:, :4])
            cv2.imwrite(str(out / "vis" / f"{path.stem}.png"), vis)
    write_json_atomic(out / "results.json", rows)
    return rows


def _run_video(model, path: Path, out: Path, boxes, render: bool, score_thr: float) -> list[dict]:
    from sagepose.viz import draw_poses

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    rows = []
    frame_idx = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            b = boxes.get(str(frame_idx), np.zeros((0, 5), np.float32)) if boxes is not None else _whole(frame)
            pred = model.predict(frame, b[:, :4]) if len(b) else None
            if pred is not None:
                rows.extend(_result_rows(pred, b, frame_idx, f"{path.name}#{frame_idx}"))
            if render:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(out / "vis" / f"{path.stem}.mp4"),
                                             cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(frame if pred is None else draw_poses(frame, pred.keypoints, pred.scores,
                                                                   model.schema, score_thr, boxes=b[:, :4]))
            frame_idx += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return rows
