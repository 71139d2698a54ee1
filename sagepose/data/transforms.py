"""Crop and augment: a person record -> one (in training, randomly augmented) fixed-size uint8 crop.

The semantics are MMPose 1.x's train pipeline ``GetBBoxCenterScale -> RandomFlip ->
RandomHalfBody -> RandomBBoxTransform -> TopdownAffine`` (same order, defaults and
distributions), but the image is touched once: the horizontal flip and every box
change are folded into a single 2x3 matrix and applied with ONE ``cv2.warpAffine``.

Flip: MMPose flips the whole image (``x -> W - 1 - x``), the box centre and the
keypoints (swapping left/right), then crops. Here the crop matrix ``M`` is built on
the flipped centre exactly as MMPose does and the image is warped with ``M @ F``,
``F`` being the mirror ``x -> W - 1 - x``; both sample the same source points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sagepose import geometry
from sagepose.config import DataConfig
from sagepose.data.coco import Record
from sagepose.keypoints import KeypointSchema


@dataclass(frozen=True)
class CropAugment:
    """Per-sample CPU augmentation and crop (MMPose's defaults).

    ``input_size`` is (w, h). Probabilities and ranges can be set to 0 / 1 to force
    or disable each step (tests do). The steps a run config sets (``data.flip_prob`` ...)
    take their defaults from :class:`~sagepose.config.DataConfig`, where they are written once.
    """

    schema: KeypointSchema
    input_size: tuple[int, int] = (192, 256)
    udp: bool = False
    padding: float = geometry.BBOX_PADDING
    flip_prob: float = DataConfig.flip_prob
    half_body_prob: float = DataConfig.half_body_prob
    half_body_min_total_keypoints: int = 9
    half_body_min_upper_keypoints: int = 2
    half_body_min_lower_keypoints: int = 3
    half_body_upper_prob: float = 0.7
    half_body_padding: float = 1.5
    shift_factor: float = DataConfig.shift_factor
    shift_prob: float = DataConfig.shift_prob
    scale_factor: tuple[float, float] = DataConfig.scale_factor
    scale_prob: float = 1.0
    rotate_factor: float = DataConfig.rotate_factor
    rotate_prob: float = DataConfig.rotate_prob

    def __call__(self, image_bgr: np.ndarray, record: Record, rng: np.random.Generator,
                 train: bool) -> Sample:
        """(H, W, 3) uint8 image + record -> :class:`Sample`; ``train=False`` gives the plain box crop."""
        return self.crop(image_bgr, record, *self.plan(record, rng, train, image_bgr.shape[1]))

    def plan(self, record: Record, rng: np.random.Generator, train: bool, width: int) -> tuple:
        """The random part, before any pixel: -> ``(center, scale, rotation, flip, keypoints, visible)``, the
        arguments of :meth:`crop` after the record (``width``: the full image's, for the flip)."""
        center, scale = geometry.box_to_center_scale(geometry.xywh_to_xyxy(record.bbox_xywh), self.padding)
        keypoints, visible = record.keypoints, record.visible
        flip, rotation = False, 0.0
        if train:
            flip = rng.random() < self.flip_prob
            if flip:
                center = np.array([width - 1 - center[0], center[1]], np.float32)
                keypoints, visible = geometry.flip_keypoints_lr(keypoints, visible, width,
                                                                self.schema.flip_indices)
            center, scale = self._half_body(keypoints, visible, center, scale, rng)
            center, scale, rotation = self._box_jitter(center, scale, rng)
        return center, scale, rotation, flip, keypoints, visible

    def reduction(self, scale) -> int:
        """The largest decode reduction (1, 2, 4 or 8) that keeps at least one decoded pixel per crop pixel for a
        crop of box ``scale`` (w, h image px): the box is at least that many times the crop on both sides."""
        w, h = self.input_size
        fixed = geometry.fix_aspect_ratio(scale, w / h)
        ratio = min(float(fixed[0]) / w, float(fixed[1]) / h)
        return next((f for f in (8, 4, 2) if ratio >= f), 1)

    def crop(self, image_bgr: np.ndarray, record: Record, center, scale, rotation: float, flip: bool,
             keypoints: np.ndarray | None = None, visible: np.ndarray | None = None, reduced: int = 1,
             width: int | None = None) -> Sample:
        """The deterministic part: crop box ``center`` / ``scale`` (of the flipped image if ``flip``).

        ``keypoints`` / ``visible`` (K, 2) / (K,) are already flipped when ``flip``; they
        default to the record's (flipped here if needed). ``reduced`` > 1: ``image_bgr`` is the image decoded at
        1/``reduced`` (:func:`sagepose.image.read_image_reduced`) and ``width`` the full image's; the geometry is
        the full image's, the warp reads the reduced one.
        """
        width = image_bgr.shape[1] if width is None else width
        if keypoints is None:
            keypoints, visible = record.keypoints, record.visible
            if flip:
                keypoints, visible = geometry.flip_keypoints_lr(keypoints, visible, width,
                                                                self.schema.flip_indices)
        w, h = self.input_size
        scale = geometry.fix_aspect_ratio(scale, w / h)
        matrix = geometry.crop_matrix(center, scale, rotation, self.input_size, self.udp)
        image_matrix = geometry.compose_affine(matrix, geometry.hflip_matrix(width)) if flip else matrix
        if reduced != 1:
            image_matrix = geometry.compose_affine(image_matrix, geometry.reduced_to_full_matrix(reduced))
        return Sample(
            crop=geometry.warp_image(image_bgr, image_matrix, self.input_size),
            keypoints=geometry.apply_affine(keypoints, matrix).astype(np.float32),
            visible=np.asarray(visible, np.float32).copy(),
            center=np.asarray(center, np.float32), scale=np.asarray(scale, np.float32),
            rotation=float(rotation), flipped=bool(flip), matrix=np.asarray(image_matrix, np.float32),
            image_id=record.image_id, bbox_score=record.bbox_score)

    def _half_body(self, keypoints, visible, center, scale, rng):
        """MMPose's RandomHalfBody: box of the labelled upper (or lower) joints, padded."""
        if visible.sum() < self.half_body_min_total_keypoints or rng.random() > self.half_body_prob:
            return center, scale
        upper = [i for i in self.schema.upper_body if visible[i] > 0]
        lower = [i for i in self.schema.lower_body if visible[i] > 0]
        prefer_upper = rng.random() < self.half_body_upper_prob
        upper_ok = len(upper) >= self.half_body_min_upper_keypoints
        lower_ok = len(lower) >= self.half_body_min_lower_keypoints
        if not (upper_ok or lower_ok):
            return center, scale
        ids = upper if (upper_ok and (prefer_upper or not lower_ok)) else lower
        pts = keypoints[ids]
        half_scale = (pts.max(axis=0) - pts.min(axis=0)) * self.half_body_padding
        if half_scale.max() <= 0:  # coincident joints: no box to crop
            return center, scale
        return pts.mean(axis=0).astype(np.float32), half_scale.astype(np.float32)

    def _box_jitter(self, center, scale, rng):
        """MMPose's RandomBBoxTransform: truncated-normal shift, resize and rotation."""
        v = _truncnorm(rng, 4)
        offset = v[:2] * self.shift_factor if rng.random() < self.shift_prob else np.zeros(2)
        lo, hi = self.scale_factor
        factor = v[2] * (hi - lo) * 0.5 + (hi + lo) * 0.5 if rng.random() < self.scale_prob else 1.0
        rotation = float(v[3] * self.rotate_factor) if rng.random() < self.rotate_prob else 0.0
        return ((center + offset * scale).astype(np.float32), (scale * factor).astype(np.float32),
                rotation)


@dataclass(frozen=True, eq=False)
class Sample:
    """One crop: ``crop`` (H, W, 3) uint8 BGR; ``keypoints`` (K, 2) float32 crop px; ``visible`` (K,).

    ``visible`` marks labelled joints only; joints that land outside the crop keep
    their weight here, the heatmap codec zeroes them (as MMPose's codecs do).
    ``center`` / ``scale`` (2,) are the crop box in the (flipped) image, ``matrix``
    (2, 3) the affine applied to the original image.
    """

    crop: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    flipped: bool
    matrix: np.ndarray
    image_id: int
    bbox_score: float


def _truncnorm(rng: np.random.Generator, n: int) -> np.ndarray:
    """n draws of a standard normal truncated to [-1, 1] (rejection; ~68% accepted)."""
    out = rng.standard_normal(n)
    bad = np.abs(out) > 1
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1
    return out.astype(np.float32)
