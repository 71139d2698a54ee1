"""The one geometry module: boxes, center/scale, affine crops, flips.

Conventions (those of MMPose 1.x, so published numbers reproduce):

* A box is ``(x1, y1, x2, y2)`` in image pixels, or COCO's ``(x, y, w, h)``.
* ``center`` is the box centre ``(cx, cy)``; ``scale`` is the crop size ``(w, h)`` in
  image pixels -- the box size times :data:`BBOX_PADDING`, then widened or heightened
  to the model's input aspect ratio. (No HRNet-style ``/200``: scales are pixels.)
* Crops are taken with ONE affine matrix per sample: :func:`warp_matrix` for MSRA
  configs, :func:`udp_warp_matrix` for UDP ones. UDP maps pixel centres with the
  ``(size - 1)`` convention (Huang et al., CVPR 2020); it is fixed here once.
* Predictions go back to the image with :func:`crop_to_image`, the inverse of the
  test-time (rotation-free) crop, in MMPose's form ``kp / input * scale + center - scale / 2``
  for both codecs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

BBOX_PADDING = 1.25  # MMPose's default `padding` in bbox_xyxy2cs / GetBBoxCenterScale
# MPII's head-size normalisation: 0.6 x the diagonal of the annotated head box (the MPII toolkit's SC_BIAS).
MPII_HEAD_SC_BIAS = 0.6


def xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    box = np.asarray(box, np.float32)
    return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:4]], axis=-1)


def mpii_head_size(headboxes) -> np.ndarray:
    """(N, 2, 2) ``[[x1, y1], [x2, y2]]`` or (N, 4) ``x1, y1, x2, y2`` MPII head boxes -> (N,) head sizes:
    0.6 x the box diagonal (``MPII_HEAD_SC_BIAS``), the unit of PCKh."""
    b = np.asarray(headboxes, np.float64)
    if b.ndim == 3 and b.shape[1:] == (2, 2):
        b = b.reshape(len(b), 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"mpii_head_size: head boxes {b.shape} must be (N, 2, 2) or (N, 4)")
    return MPII_HEAD_SC_BIAS * np.linalg.norm(b[:, 2:] - b[:, :2], axis=1)


BOX_NONFINITE = "non-finite coordinates"
BOX_EMPTY = "empty or inverted (x2 <= x1 or y2 <= y1)"
BOX_OUTSIDE = "wholly outside the image"


def check_boxes(boxes, image_size=None, fmt: str = "xyxy", where: str = "bboxes",
                strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) boxes in ``fmt`` ('xyxy' or 'xywh') -> (N, 4) float32 xyxy, (N,) problem of each box ('' if none).

    The one box validation: a box needs finite coordinates, x2 > x1 and y2 > y1, and some overlap with
    the image of ``image_size`` (w, h), or (N, 2) one per box; ``None`` skips that test. ``strict``
    raises ValueError at the first bad box, naming ``where``, the box index and the problem; otherwise
    the caller skips the bad boxes and counts them by problem (:data:`BOX_NONFINITE`, ...).
    """
    fields = {"xyxy": "x1, y1, x2, y2", "xywh": "x, y, w, h"}
    if fmt not in fields:
        raise ValueError(f"{where}: box format must be 'xyxy' or 'xywh', got {fmt!r}")
    try:
        given = np.asarray(boxes, np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: expected (N, 4) numeric boxes: {e}") from None
    if given.ndim == 1 and given.size in (0, 4):
        given = given.reshape(-1, 4)
    if given.ndim != 2 or given.shape[1] != 4:
        raise ValueError(f"{where}: expected (N, 4) boxes [{fields[fmt]}], got shape {given.shape}")
    xyxy = xywh_to_xyxy(given) if fmt == "xywh" else given
    problems = np.full(len(xyxy), "", object)
    finite = np.isfinite(xyxy).all(1)
    with np.errstate(invalid="ignore"):
        empty = ~((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))
        if image_size is not None:
            size = np.broadcast_to(np.asarray(image_size, np.float32), (len(xyxy), 2))
            outside = (xyxy[:, 2] <= 0) | (xyxy[:, 3] <= 0) | (xyxy[:, 0] >= size[:, 0]) | (xyxy[:, 1] >= size[:, 1])
            problems[outside] = BOX_OUTSIDE
    problems[empty] = BOX_EMPTY
    problems[~finite] = BOX_NONFINITE
    bad = np.flatnonzero(problems != "")
    if strict and bad.size:
        i = int(bad[0])
        extra = f" of size {tuple(int(v) for v in size[i])}" if problems[i] == BOX_OUTSIDE else ""
        raise ValueError(f"{where}: box {i} {given[i].tolist()} ({fmt}): {problems[i]}{extra}")
    return xyxy, problems


def box_to_center_scale(box_xyxy: np.ndarray, padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4) xyxy boxes -> centers (..., 2), scales (..., 2) = box size * padding."""
    box = np.asarray(box_xyxy, np.float32)
    center = (box[..., :2] + box[..., 2:4]) * 0.5
    scale = (box[..., 2:4] - box[..., :2]) * padding
    return center, scale


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow the short side of (..., 2) scales (w, h) so that w / h == aspect_ratio."""
    scale = np.asarray(scale, np.float32)
    w, h = scale[..., 0], scale[..., 1]
    wide = w > h * aspect_ratio
    return np.stack([np.where(wide, w, h * aspect_ratio), np.where(wide, w / aspect_ratio, h)],
                    axis=-1).astype(np.float32)


def _rotate(pt: np.ndarray, rad: float) -> np.ndarray:
    s, c = math.sin(rad), math.cos(rad)
    return np.array([c * pt[0] - s * pt[1], s * pt[0] + c * pt[1]])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]])


def warp_matrix(center: Sequence[float], scale: Sequence[float], rot: float,
                output_size: tuple[int, int], shift: tuple[float, float] = (0.0, 0.0),
                inv: bool = False) -> np.ndarray:
    """2x3 affine taking the (rotated) crop ``center +- scale / 2`` to an ``output_size`` (w, h) image.

    Built from three point pairs exactly as MMPose's ``get_warp_matrix`` (fixed aspect
    ratio), in float32, so crops are bit-compatible with the reference.
    """
    center = np.asarray(center, np.float64)
    scale = np.asarray(scale, np.float64)
    shift = np.asarray(shift, np.float64)
    dst_w, dst_h = output_size
    rad = math.radians(rot)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center + scale * shift
    src[1] = center + _rotate(np.array([scale[0] * -0.5, 0.0]), rad) + scale * shift
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = [0.0, dst_h * 0.5]
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def udp_warp_matrix(center: Sequence[float], scale: Sequence[float], rot: float,
                    output_size: tuple[int, int]) -> np.ndarray:
    """UDP's unbiased 2x3 affine: pixel centres map with (output - 1) / scale (MMPose's get_udp_warp_matrix)."""
    # MMPose's get_udp_warp_matrix evaluates in float32 (numpy 2 promotion); the same order of
    # operations gives bit-identical matrices, hence identical crops.
    c = np.asarray(center, np.float32)
    s = np.asarray(scale, np.float32)
    rad = math.radians(rot)
    cos, sin = np.float32(math.cos(rad)), np.float32(math.sin(rad))
    sx = np.float32(output_size[0] - 1) / s[0]
    sy = np.float32(output_size[1] - 1) / s[1]
    half = np.float32(0.5)
    m = np.zeros((2, 3), np.float32)
    m[0, 0], m[0, 1] = cos * sx, -sin * sx
    m[0, 2] = sx * (-half * (c[0] * 2) * cos + half * (c[1] * 2) * sin + half * s[0])
    m[1, 0], m[1, 1] = sin * sy, cos * sy
    m[1, 2] = sy * (-half * (c[0] * 2) * sin - half * (c[1] * 2) * cos + half * s[1])
    return m


def crop_matrix(center, scale, rot, output_size, udp: bool) -> np.ndarray:
    """The crop affine for a codec family: UDP's unbiased one or MSRA's three-point one."""
    if udp:
        return udp_warp_matrix(center, scale, rot, output_size)
    return warp_matrix(center, scale, rot, output_size)


def warp_image(img: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The one per-sample warp: bilinear, constant black border (as MMPose's TopdownAffine)."""
    return cv2.warpAffine(img, matrix, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 affine matrix."""
    pts = np.asarray(points, np.float32)
    m = np.asarray(matrix, np.float32)
    return pts @ m[:, :2].T + m[:, 2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine applying ``inner`` first, then ``outer`` (float64)."""
    a = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def reduced_to_full_matrix(factor: int) -> np.ndarray:
    """2x3 affine from an image decoded at 1/``factor`` (:func:`sagepose.image.read_image_reduced`: block means) to
    the full image's pixels: ``x = factor * x_r + (factor - 1) / 2``."""
    off = (factor - 1) / 2.0
    return np.array([[float(factor), 0.0, off], [0.0, float(factor), off]])


def hflip_matrix(width: float) -> np.ndarray:
    """2x3 affine of a horizontal image flip, ``x' = width - 1 - x`` (cv2.flip / flip_keypoints_lr)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


# The same affine algebra in torch, batched: (B, 2, 3) matrices mapping pixel (x, y) to A[:, :2] (x, y) + A[:, 2],
# pixel centres at integer coordinates. Computed in float32 whatever the inputs' dtype or the autocast (a bf16
# inverse would move a point by pixels). The semi-supervised views (ssl/views.py) and the teacher's heatmap warp
# (ssl/warp.py) use them.


def _split_affine(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A = A.float()
    return A[:, :, :2], A[:, :, 2:]


def invert_affine_torch(A: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affines -> their inverses (B, 2, 3) float32, in closed form."""
    with torch.autocast(A.device.type, enabled=False):
        m, t = _split_affine(A)
        a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        det = a * d - b * c
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
        return torch.cat([inv, -inv @ t], dim=2)


def compose_affine_torch(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) x (B, 2, 3) -> the affines applying ``inner`` first, then ``outer`` (float32)."""
    with torch.autocast(outer.device.type, enabled=False):
        mo, to = _split_affine(outer)
        mi, ti = _split_affine(inner)
        return torch.cat([mo @ mi, mo @ ti + to], dim=2)


def relative_affine_torch(A_from: torch.Tensor, A_to: torch.Tensor) -> torch.Tensor:
    """Affines base -> frame ``from`` and base -> frame ``to`` (B, 2, 3) -> the one mapping frame ``from`` px to
    frame ``to`` px, ``A_to o A_from^-1`` (float32)."""
    return compose_affine_torch(A_to, invert_affine_torch(A_from))


def apply_affine_torch(points: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Points (B, N, 2) through affines (B, 2, 3) -> (B, N, 2) float32 (:func:`apply_affine`, batched)."""
    with torch.autocast(A.device.type, enabled=False):
        m, t = _split_affine(A)
        return points.float() @ m.transpose(1, 2) + t.transpose(1, 2)


def rescale_affine_torch(A: torch.Tensor, scale) -> torch.Tensor:
    """Affines (B, 2, 3) in one pixel frame -> the same maps in a frame scaled by ``scale`` (sx, sy) per axis with no
    offset (input px -> heatmap px), S A S^-1 with S = diag(sx, sy) (float32)."""
    s = torch.as_tensor(scale, dtype=torch.float32, device=A.device).reshape(2)
    A = A.float()
    m = A[:, :, :2] * s[None, :, None] / s[None, None, :]
    return torch.cat([m, A[:, :, 2:] * s[None, :, None]], dim=2)


def affine_grid_theta(A_inv: torch.Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> torch.Tensor:
    """Pixel affines output px -> source px (B, 2, 3) -> ``F.affine_grid`` thetas (``align_corners=True``).

    ``src_size`` / ``dst_size`` are (w, h) of the sampled and the produced image; normalised coordinates are
    n = 2 x / (w - 1) - 1, so the theta is N_src o A_inv o N_dst^-1.
    """
    (ws, hs), (wd, hd) = src_size, dst_size
    dev = A_inv.device
    n_src = torch.tensor([[2.0 / (ws - 1), 0.0, -1.0], [0.0, 2.0 / (hs - 1), -1.0]], device=dev)
    n_dst_inv = torch.tensor([[(wd - 1) / 2.0, 0.0, (wd - 1) / 2.0], [0.0, (hd - 1) / 2.0, (hd - 1) / 2.0]],
                             device=dev)
    b = A_inv.shape[0]
    return compose_affine_torch(compose_affine_torch(n_src.expand(b, 2, 3), A_inv), n_dst_inv.expand(b, 2, 3))


def warp_affine_torch(maps: torch.Tensor, A: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, C, h, w) maps, affines (B, 2, 3) source px -> output px -> (B, C, h, w) float32 output (``out_size``
    (w, h) if given): output pixel q takes the source's value at A^-1 q, bilinear, zeros outside
    (:func:`warp_image`'s border, batched; one ``grid_sample`` for all B x C maps, the C channels of a sample sharing
    its grid)."""
    b, c, h, w = maps.shape
    wo, ho = (w, h) if out_size is None else (int(out_size[0]), int(out_size[1]))
    with torch.autocast(maps.device.type, enabled=False):
        theta = affine_grid_theta(invert_affine_torch(A.to(maps.device)), (w, h), (wo, ho))
        grid = F.affine_grid(theta, [b, c, ho, wo], align_corners=True)
        return F.grid_sample(maps.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def fit_affine(src_size: tuple[int, int], dst_size: tuple[int, int], udp: bool) -> np.ndarray:
    """(2, 3) float32: a crop of ``src_size`` (w, h) px scaled uniformly to fit ``dst_size``, centred -- the relation
    between two crops of one box at two resolutions (:func:`crop_matrix`'s conventions: UDP maps pixel centres
    0..w-1 onto 0..w'-1, the plain crop scales x by w' / w)."""
    (ws, hs), (wd, hd) = src_size, dst_size
    off = 1.0 if udp else 0.0
    s = min((wd - off) / (ws - off), (hd - off) / (hs - off))
    tx, ty = ((wd - off) - s * (ws - off)) / 2.0, ((hd - off) - s * (hs - off)) / 2.0
    return np.array([[s, 0.0, tx], [0.0, s, ty]], np.float32)


def crop_to_image(keypoints, input_size: tuple[int, int], center, scale):
    """Keypoints (N, K, 2) in crop pixels -> image pixels, for rotation-free test crops.

    Works for numpy arrays and torch tensors; ``center`` / ``scale`` are (N, 2).
    MMPose applies this same linear map for MSRA and UDP crops alike (so a UDP
    round trip carries its known ~0.5 px quirk; kept for parity).
    """
    if isinstance(keypoints, torch.Tensor):
        size = torch.as_tensor(input_size, dtype=keypoints.dtype, device=keypoints.device)
        center = torch.as_tensor(center, dtype=keypoints.dtype, device=keypoints.device)[:, None]
        scale = torch.as_tensor(scale, dtype=keypoints.dtype, device=keypoints.device)[:, None]
    else:  # in float64 if the keypoints are, else float32
        dtype = np.float64 if np.asarray(keypoints).dtype == np.float64 else np.float32
        size = np.asarray(input_size, dtype)
        center = np.asarray(center, dtype)[:, None]
        scale = np.asarray(scale, dtype)[:, None]
    return keypoints / size * scale + center - 0.5 * scale


def flip_keypoints_lr(keypoints: np.ndarray, visible: np.ndarray, width: float,
                      flip_indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (..., K, 2) keypoints in an image of ``width`` px and swap left/right joints.

    Uses MMPose's ``flip_keypoints`` convention ``x' = width - 1 - x``.
    """
    kp = np.asarray(keypoints, np.float32)[..., flip_indices, :].copy()
    vis = np.asarray(visible)[..., flip_indices].copy()
    kp[..., 0] = width - 1 - kp[..., 0]
    return kp, vis


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 4), (N, 4) xyxy boxes -> (M, N) intersection over union (0 where both are empty)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_boxes(keypoints: np.ndarray, scores: np.ndarray, min_score: float, padding: float = 1.0,
                   min_half_size: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) keypoints, (N, K) scores -> boxes (N, 4) xyxy and counts (N,): each instance's box spans its
    keypoints scored above ``min_score`` (all its keypoints where none is), grown ``padding`` times about its centre
    with each half side at least ``min_half_size``; ``counts`` is how many keypoints scored above ``min_score`` (a
    caller that needs some drops the rest). Unpadded (1, 0), a box is the keypoints' extent exactly."""
    use = np.asarray(scores) > min_score
    counts = use.sum(1)
    use = np.where(use.any(1, keepdims=True), use, True)[..., None]
    lo = np.where(use, keypoints, np.inf).min(1)
    hi = np.where(use, keypoints, -np.inf).max(1)
    if padding != 1.0 or min_half_size > 0:
        centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2 * padding, min_half_size)
        lo, hi = centre - half, centre + half
    return np.concatenate([lo, hi], 1), counts
