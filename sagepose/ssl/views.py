"""Views of an unlabeled crop, drawn on the device: a random affine about the crop centre, then appearance jitter.

Frames. A base crop is the (H, W) model-input crop of one unlabeled instance. A view is that crop warped by
an affine ``A`` (B, 2, 3) that maps base-crop input pixels to view input pixels; pixel centres sit at integer
coordinates (``grid_sample(align_corners=True)``), rotation and zoom turn about the crop centre
((W - 1) / 2, (H - 1) / 2), a flip mirrors x -> W - 1 - x (as a UDP crop's flip does). The affine algebra is
:mod:`sagepose.geometry`'s torch helpers (``invert_affine_torch``, ``relative_affine_torch``, ...).

Randomness. A view's draws come from its own key, a hash of (the sample's key, the view's stream: the constants
below), so the same sample gets the same views on any device, rank or batch split (the sample keys are
:func:`sagepose.data.batch_aug.sample_keys`); the geometry is draw stream :data:`GEOMETRY_DRAW` of that key, the
photometric, degradation and dropout draws are ``batch_aug``'s own streams of it. The pixel operations are
``batch_aug``'s.

Defaults. What each kind of view does by default is the config's (``ssl.weak`` / ``ssl.strong``,
:class:`sagepose.config.ViewConfig`); :func:`weak_view` / :func:`strong_view` turn one into a :class:`ViewSpec`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sagepose import geometry
from sagepose.config import ViewConfig
from sagepose.data import batch_aug
from sagepose.data.batch_aug import CoarseDropoutConfig, DegradeConfig, PhotometricConfig

# ---- the random streams of an unlabeled sample, in one place ------------------------------------------------------
# The sample's key: batch_aug.sample_keys(trainer.seed + UNLABELED_SEED_OFFSET, epoch, dataset index).
UNLABELED_SEED_OFFSET = 0x5EED  # unlabeled sample keys differ from labeled ones of the same index
# Each view of a sample draws from view_keys(sample key, stream), one stream per view of the step:
TEACHER_STREAM = 0  # weak teacher view v (0, or 0 and 1 with ssl.fusion): stream TEACHER_STREAM + v
STUDENT_STREAM = 2  # strong student view m: stream STUDENT_STREAM + m; the temporal term draws the next frame's
#                     view from STUDENT_STREAM too, so both frames get the first student view's affine and look
VIEW_KEY_SALT = 100  # view keys hash (sample key, VIEW_KEY_SALT + stream): apart from the run seeds of sample_keys
# Within a view key, batch_aug's draw streams (1-6: photometric, dropout, noise, ...) seed the view's appearance;
# this one its affine:
GEOMETRY_DRAW = 100


@dataclass(frozen=True)
class ViewParams:
    """The random affine of one kind of view: rotation uniform in +-``rotate`` degrees, zoom uniform in
    ``scale``, shift uniform in +-``shift`` of the crop side per axis, a mirror with probability ``flip_prob``."""

    rotate: float
    scale: tuple[float, float]
    shift: float
    flip_prob: float

    def __post_init__(self):
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"ViewParams.scale must satisfy 0 < lo <= hi, got {self.scale}")
        if self.rotate < 0 or self.shift < 0 or not 0 <= self.flip_prob <= 1:
            raise ValueError(f"ViewParams: need rotate >= 0, shift >= 0, 0 <= flip_prob <= 1, got {self}")


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view as :func:`make_views` draws it: the affine, then each appearance step whose config is
    given (None: off) -- ``batch_aug.photometric``, ``batch_aug.degrade``, ``batch_aug.coarse_dropout``."""

    geometry: ViewParams
    photometric: PhotometricConfig | None = None
    degrade: DegradeConfig | None = None
    dropout: CoarseDropoutConfig | None = None


# The teacher's photometric jitter: MMPose's photometric distortion at half its ranges (the student's takes the full
# ranges, PhotometricConfig's defaults). How often each step applies is the config's.
WEAK_PHOTOMETRIC_RANGES = dict(brightness_delta=16.0, contrast_range=(0.75, 1.25), saturation_range=(0.75, 1.25),
                               hue_delta=9)


def _view_params(v: ViewConfig) -> ViewParams:
    return ViewParams(rotate=v.rotate, scale=tuple(v.scale), shift=v.shift, flip_prob=v.flip_prob)


def weak_view(v: ViewConfig) -> ViewSpec:
    """The teacher's views (``ssl.weak``): a jitter small enough that the teacher sees crops like the ones it was
    trained on (its predictions stay in distribution), large enough that two weak views differ and combining them
    averages out the errors of either; by default no flip, so the teacher's channels keep their meaning. Then the
    photometric distortion at half ranges; no degradation or dropout (``ssl.weak``'s ``coarse_dropout_prob``,
    ``blur_prob`` and ``noise_prob`` are not read)."""
    photometric = (PhotometricConfig(p=v.photometric_prob, **WEAK_PHOTOMETRIC_RANGES)
                   if v.photometric_prob > 0 else None)
    return ViewSpec(_view_params(v), photometric=photometric)


def strong_view(v: ViewConfig) -> ViewSpec:
    """The student's views (``ssl.strong``; by default about a third of the supervised recipe's rotation and half its
    zoom range: strong enough that agreeing with the teacher teaches invariance, mild enough that most joints stay
    inside the view -- a joint that leaves it is masked out by its lost probability mass). Then MMPose's full
    photometric distortion, camera degradation and coarse dropout (Albumentations' sizes), each where its
    probability is above 0."""
    degrade = (DegradeConfig(blur_prob=v.blur_prob, noise_prob=v.noise_prob)
               if v.blur_prob > 0 or v.noise_prob > 0 else None)
    return ViewSpec(_view_params(v),
                    photometric=PhotometricConfig(p=v.photometric_prob) if v.photometric_prob > 0 else None,
                    degrade=degrade,
                    dropout=CoarseDropoutConfig(p=v.coarse_dropout_prob) if v.coarse_dropout_prob > 0 else None)


class Views(NamedTuple):
    """A batch of views (:func:`make_views`)."""

    images: torch.Tensor  # (B, H, W, 3) float 0-255
    affine: torch.Tensor  # (B, 2, 3) float32, base-crop input px -> view input px
    flipped: torch.Tensor  # (B,) bool: the view is mirrored
    zoom: torch.Tensor  # (B,) the view's pixels per base-crop pixel


def view_keys(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Sample keys (B,) int64 -> (B,) int64 keys of view ``stream``: independent for different streams."""
    return batch_aug.sample_keys(VIEW_KEY_SALT + int(stream), 0, keys.long())


def sample_view_affines(keys: torch.Tensor, input_size: tuple[int, int], params: ViewParams,
                        stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """keys (B,) int64, input_size (W, H) -> A (B, 2, 3) float32 base px -> view px, flipped (B,) bool, zoom (B,).

    A = F o T(c + t) o zoom R(angle) o T(-c): rotation (positive angles turn the content clockwise on screen, y
    pointing down) and zoom about the crop centre c, then the shift t, then the mirror F: x -> W - 1 - x where
    ``flipped``. ``zoom`` is the view's pixels per base-crop pixel.
    """
    w, h = (int(s) for s in input_size)
    u = batch_aug.uniform(view_keys(keys, stream), GEOMETRY_DRAW, 5)
    angle = (2.0 * u[:, 0] - 1.0) * math.radians(params.rotate)
    zoom = params.scale[0] + (params.scale[1] - params.scale[0]) * u[:, 1]
    tx = (2.0 * u[:, 2] - 1.0) * params.shift * w
    ty = (2.0 * u[:, 3] - 1.0) * params.shift * h
    flipped = u[:, 4] < params.flip_prob
    cos, sin = zoom * torch.cos(angle), zoom * torch.sin(angle)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    x_row = torch.stack([cos, -sin, cx + tx - cos * cx + sin * cy], -1)
    y_row = torch.stack([sin, cos, cy + ty - sin * cx - cos * cy], -1)
    mirror = torch.tensor([-1.0, -1.0, -1.0], device=keys.device), torch.tensor([0.0, 0.0, w - 1.0], device=keys.device)
    x_row = torch.where(flipped[:, None], x_row * mirror[0] + mirror[1], x_row)  # x' -> W - 1 - x'
    return torch.stack([x_row, y_row], 1), flipped, zoom


def warp_images(images: torch.Tensor, A: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, H, W, C) 0-255 uint8 or float, A (B, 2, 3) base px -> view px -> (B, H, W, C) float32 0-255 (H, W from
    ``out_size`` (w, h) if given).

    One batched bilinear ``grid_sample`` (:func:`sagepose.geometry.warp_affine_torch`), zeros outside the base crop,
    in float32 whatever the autocast.
    """
    return geometry.warp_affine_torch(images.permute(0, 3, 1, 2), A, out_size).permute(0, 2, 3, 1).contiguous()


def make_views(crops: torch.Tensor, keys: torch.Tensor, spec: ViewSpec, stream: int,
               out_size: tuple[int, int] | None = None, udp: bool = False) -> Views:
    """crops (B, H, W, 3) uint8 BGR, keys (B,) -> :class:`Views` of kind ``spec``, drawn from view stream ``stream``.

    The view's warp, then ``batch_aug.photometric``, ``batch_aug.degrade`` and ``batch_aug.coarse_dropout`` (each
    when ``spec`` gives its config) with the view's own key; ``affine``, ``flipped`` and ``zoom`` are
    :func:`sample_view_affines`'. ``out_size`` (w, h): views of another resolution than the crops (distillation's
    teacher and student), the crop fitted into it (:func:`sagepose.geometry.fit_affine` with ``udp``) after the
    view's affine; ``affine`` and ``zoom`` include that fit.
    """
    b, h, w, _ = crops.shape
    keys = keys.to(crops.device)
    A, flipped, zoom = sample_view_affines(keys, (w, h), spec.geometry, stream)
    if out_size is not None and tuple(out_size) != (w, h):
        fit = torch.from_numpy(geometry.fit_affine((w, h), out_size, udp)).to(A.device)
        A = geometry.compose_affine_torch(fit.expand(b, 2, 3), A)
        zoom = zoom * fit[0, 0]
    images = warp_images(crops, A, out_size)
    vkeys = view_keys(keys, stream)
    if spec.photometric is not None:
        images = batch_aug.photometric(images, vkeys, spec.photometric)
    if spec.degrade is not None:
        images = batch_aug.degrade(images, vkeys, spec.degrade)
    if spec.dropout is not None:
        images = batch_aug.coarse_dropout(images, vkeys, spec.dropout)
    return Views(images, A, flipped, zoom)
