"""Rendered skeletons: keypoints and limbs drawn on a BGR image with OpenCV."""
from __future__ import annotations

import cv2
import numpy as np

from sagepose.keypoints import KeypointSchema


def joint_colors(num_keypoints: int) -> np.ndarray:
    """(K, 3) uint8 BGR: one colour per joint, hues spread evenly round the colour wheel."""
    hues = (np.arange(num_keypoints) * 180 // max(num_keypoints, 1)).astype(np.uint8)  # OpenCV's hue: 0-179
    hsv = np.stack([hues, np.full_like(hues, 230), np.full_like(hues, 255)], -1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def draw_poses(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, schema: KeypointSchema,
               score_thr: float = 0.3, boxes: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """Copy of ``image`` (H, W, 3 BGR) with poses drawn: keypoints (N, K, 2), scores (N, K), boxes (N, 4) xyxy.

    Each joint has its colour (:func:`joint_colors`), each limb of ``schema.skeleton`` the mean of its two joints';
    joints scored at or below ``score_thr`` are not drawn. Without a skeleton (a DeepLabCut import's default) the
    points are drawn twice as large, so they show at any image size."""
    out = image.copy()
    h, w = out.shape[:2]
    r = radius or max(2, round(min(h, w) / 160)) * (1 if schema.skeleton else 2)
    thick = max(1, r // 2 + 1)
    colors = joint_colors(len(schema.keypoints)).astype(int)
    for n in range(len(keypoints)):
        pts, shown = np.round(keypoints[n]).astype(int).tolist(), scores[n] > score_thr
        if boxes is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[n][:4])
            cv2.rectangle(out, (x1, y1), (x2, y2), (200, 200, 200), 1, cv2.LINE_AA)
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                color = ((colors[a] + colors[b]) // 2).tolist()
                cv2.line(out, tuple(pts[a]), tuple(pts[b]), color, thick, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            cv2.circle(out, tuple(pts[k]), r, colors[k].tolist(), -1, cv2.LINE_AA)
            cv2.circle(out, tuple(pts[k]), r, (20, 20, 20), 1, cv2.LINE_AA)
    return out
