"""Person boxes for raw images: an ONNX detector run by onnxruntime, in the two layouts rtmlib runs.

* **end-to-end** (YOLOX / RTMDet exported by MMDeploy with NMS inside): outputs ``dets`` (1, N, 5) -- x1, y1, x2,
  y2 in the network input's pixels and a score -- and ``labels`` (1, N), the class of each (0: person).
* **raw YOLOX** (YOLOX's own export, no NMS): one output (1, A, 5 + C) over the anchor points of strides 8, 16 and
  32 (A = sum of (H / s) x (W / s)): centre offsets, log sizes, objectness and C class scores; decoded here
  (centre = (offset + grid) x stride, size = exp(log size) x stride, score = objectness x the person class's
  score) and NMS'd in numpy.

Preprocessing, as those exports expect: the image letterboxed into the network input (scaled by
``min(H / h, W / w)``, bilinear, placed at the top-left of a canvas of grey 114), BGR, float32 0-255 unless
``mean`` / ``std`` are given (RTMDet's MMDeploy files take them outside the graph: ``mean=(103.53, 116.28,
123.675), std=(57.375, 57.12, 58.395)``). Boxes come back in image pixels, clipped to the image, person class only,
above ``score_thr``, at most ``max_people``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from sagepose.errors import SagePoseError
from sagepose.geometry import box_iou

STRIDES = (8, 16, 32)
PAD_VALUE = 114
RTMDET_MEAN, RTMDET_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


class DetectorFileError(SagePoseError, ValueError):
    """An ONNX file that is not a detector of a known layout."""


def letterbox(image: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """BGR uint8 (h, w, 3) -> (H, W, 3) uint8: scaled by ``min(H / h, W / w)`` (bilinear) at the top-left of a
    canvas of grey :data:`PAD_VALUE`; and that scale (divide network pixels by it to get image pixels)."""
    H, W = size_hw
    h, w = image.shape[:2]
    ratio = min(H / h, W / w)
    new_w, new_h = max(1, int(w * ratio)), max(1, int(h * ratio))
    canvas = np.full((H, W, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, ratio


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes (M, 4) xyxy kept, best score first; a box whose IoU
    with a kept one exceeds ``iou_thr`` is dropped."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        order = rest[box_iou(boxes[i:i + 1], boxes[rest])[0] <= iou_thr]
    return np.array(keep, np.int64)


def yolox_anchor_grid(size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The anchor points of a YOLOX head on an (H, W) input: grid (A, 2) x, y cell indices and stride (A, 1),
    stride 8 first, row-major within a stride."""
    H, W = size_hw
    grids, strides = [], []
    for s in STRIDES:
        ys, xs = np.mgrid[0:H // s, 0:W // s]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((xs.size, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, size_hw: tuple[int, int], person_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw YOLOX outputs (A, 5 + C) -> boxes (A, 4) xyxy in network pixels and person scores (A,)."""
    grid, stride = yolox_anchor_grid(size_hw)
    raw = raw.astype(np.float32)
    centre = (raw[:, :2] + grid) * stride
    half = np.exp(raw[:, 2:4]) * stride / 2
    return np.concatenate([centre - half, centre + half], 1), raw[:, 4] * raw[:, 5 + person_class]


@dataclass
class Detections:
    """Person boxes of one image: (N, 4) xyxy image px and (N,) scores, best first."""

    boxes: np.ndarray
    scores: np.ndarray

    def as_array(self) -> np.ndarray:
        """(N, 5): x1, y1, x2, y2, score (what ``sagepose.infer`` takes per image)."""
        return np.concatenate([self.boxes, self.scores[:, None]], 1).astype(np.float32)


class Detector:
    """An ONNX person detector (see the module docstring): a file, or a name of :data:`sagepose.hub.DETECTORS`
    (rtmlib's public YOLOX files, fetched into the cache). ``layout``: ``"end2end"``, ``"yolox"`` or None (from
    the graph's outputs). ``device``/``threads`` as :class:`sagepose.onnx_model.OnnxEstimator`."""

    def __init__(self, path: str | os.PathLike, score_thr: float = 0.5, nms_thr: float = 0.45,
                 max_people: int = 100, mean=None, std=None, layout: str | None = None, device: str = "cpu",
                 threads: int | None = None, person_class: int = 0):
        from sagepose.onnx_model import execution_providers, require

        ort = require("onnxruntime")
        from sagepose import hub

        if str(path) in hub.DETECTORS:  # a named public file: downloaded once into the cache
            path = hub.fetch_detector(str(path))
        self.path = path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: detector file not found")
        if not 0 <= score_thr <= 1 or not 0 <= nms_thr <= 1 or max_people < 1:
            raise ValueError(f"{path}: score_thr and nms_thr must be in [0, 1] and max_people >= 1, got "
                             f"{score_thr}, {nms_thr}, {max_people}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(path, options, providers=execution_providers(device,
                                                                                    ort.get_available_providers(),
                                                                                    path))
        except SagePoseError:
            raise
        except Exception as e:  # onnxruntime's own error types are not exported
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DetectorFileError(f"{path}: onnxruntime cannot load it ({first[:300]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(v, int) for v in shape[2:]):
            raise DetectorFileError(f"{path}: a detector takes one (1, 3, H, W) image of fixed H, W; this graph "
                                    f"takes {[(i.name, i.shape) for i in inputs]}")
        self.input_name, self.size_hw = inputs[0].name, (shape[2], shape[3])
        self.layout = layout or self._layout(outputs)
        if self.layout not in ("end2end", "yolox"):
            raise ValueError(f"{path}: layout {layout!r}: 'end2end' or 'yolox'")
        self.score_thr, self.nms_thr, self.max_people = score_thr, nms_thr, max_people
        self.person_class = person_class
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)

    def _layout(self, outputs) -> str:
        names = [o.name for o in outputs]
        shapes = [list(o.shape) for o in outputs]
        if len(outputs) == 2 and len(shapes[0]) == 3 and shapes[0][-1] == 5 and len(shapes[1]) == 2:
            return "end2end"  # MMDeploy: dets (1, N, 5), labels (1, N)
        anchors = yolox_anchor_grid(self.size_hw)[0].shape[0]
        if len(outputs) == 1 and len(shapes[0]) == 3 and shapes[0][1] in (anchors, None, "") and \
                isinstance(shapes[0][2], int) and shapes[0][2] > 5:
            return "yolox"
        raise DetectorFileError(f"{self.path}: not a detector layout sagepose knows (outputs {list(zip(names, shapes))}"
                                f"); it runs MMDeploy end-to-end files (dets (1, N, 5) + labels (1, N)) and raw YOLOX "
                                f"(one (1, {anchors}, 5 + classes) output for a {self.size_hw[1]}x{self.size_hw[0]} "
                                "input)")

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        canvas, ratio = letterbox(image, self.size_hw)
        x = canvas.astype(np.float32)
        if self.mean is not None:
            x = (x - self.mean) / (self.std if self.std is not None else 1.0)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), ratio

    def __call__(self, image: np.ndarray) -> Detections:
        """Person boxes of a BGR uint8 (h, w, 3) image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        x, ratio = self.preprocess(image)
        outs = self.session.run(None, {self.input_name: x})
        if self.layout == "end2end":
            dets, labels = np.asarray(outs[0])[0].astype(np.float32), np.asarray(outs[1])[0]
            keep = (labels == self.person_class) & (dets[:, 4] > self.score_thr)
            boxes, scores = dets[keep, :4], dets[keep, 4]
            order = np.argsort(-scores, kind="stable")
        else:
            raw = np.asarray(outs[0])[0]
            if raw.shape[0] != yolox_anchor_grid(self.size_hw)[0].shape[0]:
                raise DetectorFileError(f"{self.path}: {raw.shape[0]} YOLOX predictions, expected one per anchor "
                                        f"point of strides {STRIDES} on {self.size_hw[1]}x{self.size_hw[0]}")
            boxes, scores = decode_yolox(raw, self.size_hw, self.person_class)
            keep = scores > self.score_thr
            boxes, scores = boxes[keep], scores[keep]
            order = nms(boxes, scores, self.nms_thr)
        order = order[: self.max_people]
        h, w = image.shape[:2]
        boxes = np.clip(boxes[order] / ratio, 0, [w, h, w, h]).astype(np.float32)
        scores = scores[order].astype(np.float32)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # empty once clipped: wholly outside
        return Detections(boxes[ok], scores[ok])

    def __repr__(self) -> str:
        return (f"Detector({self.path!r}, layout={self.layout}, input {self.size_hw[1]}x{self.size_hw[0]}, "
                f"score_thr={self.score_thr}, nms_thr={self.nms_thr})")
