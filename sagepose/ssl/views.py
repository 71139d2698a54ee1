"""Views of an unlabeled crop, drawn on the device: a random affine about the crop centre, then appearance jitter.

Frames. A base crop is the (H, W) model-input crop of one unlabeled instance. A view is that crop warped by
an affine ``A`` (B, 2, 3) that maps base-crop input pixels to view input pixels; pixel centres sit at integer
coordinates (``grid_sample(align_corners=True)``), rotation and zoom turn about the crop centre
((W - 1) / 2, (H - 1) / 2), a flip mirrors x -> W - 1 - x (as a UDP crop's flip does).

Randomness. A view's draws come from its own key, a hash of (the sample's key, the view's ``stream``), so the
same sample gets the same views on any device, rank or batch split (the sample keys are
:func:`sagepose.data.batch_aug.sample_keys`); the geometry is draw stream 100 of that key, the photometric and
dropout draws are ``batch_aug``'s own streams of it. The pixel operations are ``batch_aug``'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sagepose.data import batch_aug
from sagepose.data.batch_aug import CoarseDropoutConfig, DegradeConfig, PhotometricConfig

_GEOMETRY_STREAM = 100  # the draw stream of a view key that holds its geometry (batch_aug uses 1-3)
_VIEW_HASH_BASE = 100  # view keys hash (sample key, 100 + stream): no clash with the run seeds of sample_keys


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


# Teacher views: a jitter small enough that the teacher sees crops like the ones it was trained on (its
# predictions stay in distribution), large enough that the two weak views differ and their fusion averages out
# the errors of either; no flip, so the teacher's channels keep their meaning.
WEAK = ViewParams(rotate=10.0, scale=(0.9, 1.1), shift=0.05, flip_prob=0.0)
# Student views: about a third of the supervised recipe's rotation (data.rotate_factor 80) and half its zoom
# range (data.scale_factor 0.5-1.5): strong enough that agreeing with the teacher teaches invariance, mild enough
# that most joints stay inside the view (a joint that leaves it is masked out by its lost probability mass).
STRONG = ViewParams(rotate=30.0, scale=(0.75, 1.25), shift=0.1, flip_prob=0.5)

# Appearance jitter. Weak: MMPose's photometric distortion at half its ranges; strong: its full ranges more often,
# then coarse dropout (Albumentations' CoarseDropout sizes). Runs replace ``p`` from the config
# (``dataclasses.replace(WEAK_PHOTOMETRIC, p=...)``).
WEAK_PHOTOMETRIC = PhotometricConfig(p=0.5, brightness_delta=16.0, contrast_range=(0.75, 1.25),
                                     saturation_range=(0.75, 1.25), hue_delta=9)
STRONG_PHOTOMETRIC = PhotometricConfig(p=0.8)
STRONG_DROPOUT = CoarseDropoutConfig(p=0.5)


def view_keys(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Sample keys (B,) int64 -> (B,) int64 keys of view ``stream``: independent for different streams."""
    return batch_aug.sample_keys(_VIEW_HASH_BASE + int(stream), 0, keys.long())


def _as_affine(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = a.float()
    return a[:, :, :2], a[:, :, 2:]


def invert_affine(A: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affines -> their inverses (B, 2, 3) float32, in closed form (any autocast is ignored)."""
    with torch.autocast(A.device.type, enabled=False):
        m, t = _as_affine(A)
        a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        det = a * d - b * c
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
        return torch.cat([inv, -inv @ t], dim=2)


def compose(A_outer: torch.Tensor, A_inner: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) x (B, 2, 3) -> the affine applying ``A_inner`` first, then ``A_outer`` (float32)."""
    with torch.autocast(A_outer.device.type, enabled=False):
        mo, to = _as_affine(A_outer)
        mi, ti = _as_affine(A_inner)
        return torch.cat([mo @ mi, mo @ ti + to], dim=2)


def relative_affine(A_from: torch.Tensor, A_to: torch.Tensor) -> torch.Tensor:
    """Affines base -> view ``from`` and base -> view ``to`` -> the one mapping view ``from`` px -> view ``to`` px."""
    return compose(A_to, invert_affine(A_from))


def apply_affine(A: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affines, points (B, N, 2) -> (B, N, 2) mapped points (float32)."""
    with torch.autocast(A.device.type, enabled=False):
        m, t = _as_affine(A)
        return points.float() @ m.transpose(1, 2) + t.transpose(1, 2)


def sampling_theta(A_inv: torch.Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> torch.Tensor:
    """Pixel affines output px -> source px (B, 2, 3) -> ``F.affine_grid`` thetas (align_corners=True).

    ``src_size`` / ``dst_size`` are (w, h) of the sampled and the produced image; normalised coordinates are
    n = 2 x / (w - 1) - 1, so the theta is N_src o A_inv o N_dst^-1.
    """
    (ws, hs), (wd, hd) = src_size, dst_size
    dev = A_inv.device
    n_src = torch.tensor([[2.0 / (ws - 1), 0.0, -1.0], [0.0, 2.0 / (hs - 1), -1.0]], device=dev)
    n_dst_inv = torch.tensor([[(wd - 1) / 2.0, 0.0, (wd - 1) / 2.0], [0.0, (hd - 1) / 2.0, (hd - 1) / 2.0]],
                             device=dev)
    b = A_inv.shape[0]
    return compose(compose(n_src.expand(b, 2, 3), A_inv), n_dst_inv.expand(b, 2, 3))


def sample_view_affines(keys: torch.Tensor, input_size: tuple[int, int], params: ViewParams,
                        stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """keys (B,) int64, input_size (W, H) -> A (B, 2, 3) float32 base px -> view px, flipped (B,) bool, zoom (B,).

    A = F o T(c + t) o zoom R(angle) o T(-c): rotation (positive angles turn the content clockwise on screen, y
    pointing down) and zoom about the crop centre c, then the shift t, then the mirror F: x -> W - 1 - x where
    ``flipped``. ``zoom`` is the view's pixels per base-crop pixel.
    """
    w, h = (int(s) for s in input_size)
    u = batch_aug.uniform(view_keys(keys, stream), _GEOMETRY_STREAM, 5)
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


def warp_images(images: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) 0-255 uint8 or float, A (B, 2, 3) base px -> view px -> (B, H, W, C) float32 0-255.

    One batched bilinear ``grid_sample``, zeros outside the base crop; the grid is computed in float32 whatever
    the autocast.
    """
    b, h, w, c = images.shape
    with torch.autocast(images.device.type, enabled=False):
        theta = sampling_theta(invert_affine(A.to(images.device)), (w, h), (w, h))
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=True)
        x = images.float().permute(0, 3, 1, 2)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.permute(0, 2, 3, 1).contiguous()


def make_views(crops: torch.Tensor, keys: torch.Tensor, params: ViewParams, stream: int,
               photometric_cfg: PhotometricConfig | None = None, dropout_cfg: CoarseDropoutConfig | None = None,
               degrade_cfg: DegradeConfig | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """crops (B, H, W, 3) uint8 BGR, keys (B,) -> views (B, H, W, 3) float 0-255, A (B, 2, 3), flipped (B,), zoom (B,).

    The view's warp, then ``batch_aug.photometric``, ``batch_aug.degrade`` and ``batch_aug.coarse_dropout`` (each
    when its config is given) with the view's own key; ``A``, ``flipped`` and ``zoom`` are :func:`sample_view_affines`'.
    """
    b, h, w, _ = crops.shape
    keys = keys.to(crops.device)
    A, flipped, zoom = sample_view_affines(keys, (w, h), params, stream)
    views = warp_images(crops, A)
    vkeys = view_keys(keys, stream)
    if photometric_cfg is not None:
        views = batch_aug.photometric(views, vkeys, photometric_cfg)
    if degrade_cfg is not None:
        views = batch_aug.degrade(views, vkeys, degrade_cfg)
    if dropout_cfg is not None:
        views = batch_aug.coarse_dropout(views, vkeys, dropout_cfg)
    return views, A, flipped, zoom
