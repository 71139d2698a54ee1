"""Rendered skeletons: keypoints and limbs drawn on a BGR image with OpenCV."""
from __future__ import annotations

import cv2
import numpy as np

from sagepose.keypoints import KeypointSchema

_LEFT, _RIGHT, _CENTER = (0, 200, 255), (255, 128, 0), (60, 220, 60)  # BGR


def _side(name: str):
    if name.startswith(("left", "l_")):
        return _LEFT
    if name.startswith(("right", "r_")):
        return _RIGHT
    return _CENTER


def draw_poses(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, schema: KeypointSchema,
               score_thr: float = 0.3, boxes: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """Copy of ``image`` (H, W, 3 BGR) with poses drawn: keypoints (N, K, 2), scores (N, K), boxes (N, 4) xyxy."""
    out = image.copy()
    h, w = out.shape[:2]
    r = radius or max(2, round(min(h, w) / 160))
    thick = max(1, r // 2 + 1)
    for n in range(len(keypoints)):
        kp, sc = keypoints[n], scores[n]
        if boxes is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[n][:4])
            cv2.rectangle(out, (x1, y1), (x2, y2), (200, 200, 200), 1, cv2.LINE_AA)
        for a, b in schema.skeleton:
            if sc[a] > score_thr and sc[b] > score_thr:
                color = _side(schema.keypoints[a]) if _side(schema.keypoints[a]) == _side(
                    schema.keypoints[b]) else _CENTER
                pa = tuple(int(round(v)) for v in kp[a])
                pb = tuple(int(round(v)) for v in kp[b])
                cv2.line(out, pa, pb, color, thick, cv2.LINE_AA)
        for k in range(len(kp)):
            if sc[k] > score_thr:
                c = tuple(int(round(v)) for v in kp[k])
                cv2.circle(out, c, r, _side(schema.keypoints[k]), -1, cv2.LINE_AA)
                cv2.circle(out, c, r, (20, 20, 20), 1, cv2.LINE_AA)
    return out
