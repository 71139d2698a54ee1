"""Heatmap codecs: MSRA Gaussians (optionally DARK), UDP Gaussians, and flip-test fusion.

Every function works on whole batches in torch: ``keypoints (B, K, 2)`` in input-crop
pixels <-> ``heatmaps (B, K, H, W)``. The numbers equal MMPose 1.3.2's codecs (which
run one instance at a time in numpy), quirks included; each kept quirk is marked
"parity". Sizes are ``(w, h)`` as in MMPose configs. The codec classes hold MMPose's constructor
arguments and the heatmap <-> input pixel maps; the targets they draw are :mod:`sagepose.codecs.gaussian`'s,
the decode steps :mod:`sagepose.codecs.decode`'s (bounded where MMPose's is not; ``decode_impl="mmpose"``:
:mod:`sagepose.codecs.reference`, MMPose's exact arithmetic).

References: Xiao et al. 2018 (MSRA heatmaps), Zhang et al. 2020 (DARK), Huang et al.
2020 (UDP).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from sagepose.codecs import reference
from sagepose.codecs.decode import (
    NEWTON_TRUST_RADIUS,
    bounded_locations,
    dark_derivatives,
    finite_or_zero,
    heatmap_argmax,
    negative_definite,
    refine_dark,
    refine_dark_udp,
    refine_quarter_pixel,
    step_within,
    udp_derivatives,
)
from sagepose.codecs.gaussian import continuous_gaussian_heatmaps, window_gaussian_heatmaps


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    """A tensor view of ``x`` and whether it came in as numpy (to hand numpy back)."""
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.asarray(x)), True


def _float(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; everything else is computed in float32."""
    return x if x.dtype == torch.float64 else x.float()


def get_heatmap_maximum(heatmaps):
    """heatmaps (B, K, H, W) -> locations (B, K, 2) as (x, y) heatmap pixels, values (B, K).

    The first maximum in row-major order (:func:`heatmap_argmax`); where the maximum is <= 0
    the location is (-1, -1), as MMPose marks it. Accepts torch tensors or numpy arrays.
    """
    hm, from_numpy = _as_tensor(heatmaps)
    locs, vals = heatmap_argmax(hm)
    locs = locs.to(_float(hm).dtype)
    locs = torch.where((vals <= 0)[..., None], torch.full_like(locs, -1), locs)
    return (locs.numpy(), vals.numpy()) if from_numpy else (locs, vals)


def _check_heatmaps(hm: torch.Tensor, heatmap_size: tuple[int, int], codec: str) -> None:
    if hm.ndim != 4 or tuple(hm.shape[-2:]) != (heatmap_size[1], heatmap_size[0]):
        raise ValueError(f"{codec}.decode: expected heatmaps (B, K, {heatmap_size[1]}, {heatmap_size[0]}), "
                         f"got {tuple(hm.shape)}")


def _encode_inputs(keypoints, visible, codec: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    kp, from_numpy = _as_tensor(keypoints)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"{codec}.encode: expected keypoints (B, K, 2), got {tuple(kp.shape)}")
    if visible is None:
        vis = torch.ones(kp.shape[:2], dtype=torch.float32, device=kp.device)
    else:
        vis = _as_tensor(visible)[0].to(device=kp.device, dtype=torch.float32)
        if vis.shape != kp.shape[:2]:
            raise ValueError(f"{codec}.encode: visible {tuple(vis.shape)} does not match keypoints "
                             f"{tuple(kp.shape)}")
    return _float(kp), vis, from_numpy


def _encode_outputs(heatmaps: torch.Tensor, weights: torch.Tensor, to_numpy: bool):
    heatmaps, weights = heatmaps.float(), weights.float()
    return (heatmaps.numpy(), weights.numpy()) if to_numpy else (heatmaps, weights)


def _check_decode_impl(impl: str, codec: str) -> None:
    if impl not in ("batched", "mmpose"):
        raise ValueError(f"{codec}: decode_impl must be 'batched' (torch, any device) or 'mmpose' (numpy + "
                         f"OpenCV with MMPose's exact float operations), got {impl!r}")


def _per_instance(refine, locs: torch.Tensor, heatmaps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Run a :mod:`sagepose.codecs.reference` refinement on each instance's float32 maps, on the CPU."""
    hm = heatmaps.detach().float().cpu().numpy()
    pos = locs.detach().float().cpu().numpy()
    out = np.stack([refine(pos[b], hm[b], kernel_size) for b in range(len(hm))]) if len(hm) else pos
    return torch.from_numpy(out).to(locs.device)


def _sizes(size: Sequence[int]) -> tuple[int, int]:
    w, h = (int(s) for s in size)
    return w, h


@dataclass(frozen=True)
class MSRAHeatmap:
    """Gaussian heatmaps of Xiao et al. 2018; ``unbiased=True`` switches to DARK encode + decode.

    encode: keypoints (B, K, 2) input pixels, visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K).
    decode: heatmaps (B, K, H, W) -> keypoints (B, K, 2) input pixels, scores (B, K).
    """

    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    unbiased: bool = False
    blur_kernel_size: int = 11
    decode_impl: str = "batched"  # or "mmpose": DARK with MMPose's exact float ops (sagepose.codecs.reference)

    udp: ClassVar[bool] = False
    shift_heatmap_default: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "input_size", _sizes(self.input_size))
        object.__setattr__(self, "heatmap_size", _sizes(self.heatmap_size))
        _check_decode_impl(self.decode_impl, "MSRAHeatmap")

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        # MMPose keeps input / heatmap as a float32 array.
        ratio = np.float32(np.array(self.input_size) / np.array(self.heatmap_size))
        return torch.from_numpy(ratio).to(dtype=like.dtype, device=like.device)

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints (..., 2) in input pixels -> heatmap pixels, as :meth:`encode` places them."""
        return keypoints / self._scale(keypoints)

    @property
    def heatmap_scale(self) -> torch.Tensor:
        """(2,) float32 (sx, sy): heatmap pixels per input pixel, the factor :meth:`to_heatmap` applies (no offset):
        heatmap / input, as MMPose's float32 ratio gives it."""
        return 1.0 / self._scale(torch.ones(2))

    def to_input(self, locs: torch.Tensor) -> torch.Tensor:
        """locations (..., 2) in heatmap pixels -> input pixels, as :meth:`decode` maps them."""
        return locs * self._scale(locs)

    def encode(self, keypoints, visible=None):
        """keypoints (B, K, 2), visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K) float32."""
        kp, vis, to_numpy = _encode_inputs(keypoints, visible, "MSRAHeatmap")
        kp = self.to_heatmap(kp)
        if self.unbiased:
            heatmaps, weights = continuous_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma)
        else:
            heatmaps, weights = window_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma,
                                                         subpixel=False)
        return _encode_outputs(heatmaps, weights, to_numpy)

    def well_posed(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """heatmaps (B, K, H, W) -> (B, K) bool: where the sub-pixel location is well-posed, so the default decode
        equals MMPose's. DARK: MMPose's Newton step goes to a peak of the local model and stays inside the trust
        region (or MMPose takes none, within 2 px of the border); elsewhere -- a flat, noisy or saddle-shaped map
        -- the default decode keeps the argmax or clamps the step. The plain decode (argmax and quarter pixel) is
        well-posed everywhere."""
        hm = finite_or_zero(_float(_as_tensor(heatmaps)[0]))
        locs, _ = get_heatmap_maximum(hm)
        if not self.unbiased:
            return torch.ones(locs.shape[:2], dtype=torch.bool, device=locs.device)
        gx, gy, hxx, hyy, hxy, inside = dark_derivatives(locs, hm, self.blur_kernel_size)
        peak = negative_definite(hxx, hyy, hxy) & step_within(gx, gy, hxx, hyy, hxy, NEWTON_TRUST_RADIUS)
        return ~inside | peak

    def decode(self, heatmaps):
        """heatmaps (B, K, H, W) -> keypoints (B, K, 2) in input pixels, scores (B, K) = heatmap maxima."""
        hm, to_numpy = _as_tensor(heatmaps)
        _check_heatmaps(hm, self.heatmap_size, "MSRAHeatmap")
        exact = self.decode_impl == "mmpose"
        hm = _float(hm) if exact else finite_or_zero(_float(hm))
        locs, scores = get_heatmap_maximum(hm)
        if self.unbiased and exact:
            locs = _per_instance(reference.refine_dark_mmpose, locs, hm, self.blur_kernel_size)
        elif self.unbiased:
            locs = refine_dark(locs, hm, self.blur_kernel_size, NEWTON_TRUST_RADIUS)
            locs = bounded_locations(locs, self.heatmap_size)
        else:
            locs = refine_quarter_pixel(locs, hm)
        keypoints = self.to_input(locs)
        return (keypoints.numpy(), scores.numpy()) if to_numpy else (keypoints, scores)


@dataclass(frozen=True)
class UDPHeatmap:
    """Unbiased Data Processing heatmaps (Huang et al. 2020): pixel centres map with (size - 1).

    encode: keypoints (B, K, 2) input pixels, visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K).
    decode: heatmaps (B, K, H, W) -> keypoints (B, K, 2) input pixels, scores (B, K).
    ``decode_scale="mmpose"`` maps heatmap to input pixels with input / (hm - 1), as
    MMPose does -- kept as the default so published APs reproduce; ``"unbiased"`` uses
    (input - 1) / (hm - 1), the exact inverse of encode.
    """

    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    blur_kernel_size: int = 11
    decode_scale: str = "mmpose"
    decode_impl: str = "batched"  # or "mmpose": MMPose's exact float ops (sagepose.codecs.reference)

    udp: ClassVar[bool] = True
    shift_heatmap_default: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "input_size", _sizes(self.input_size))
        object.__setattr__(self, "heatmap_size", _sizes(self.heatmap_size))
        if self.decode_scale not in ("mmpose", "unbiased"):
            raise ValueError(f"UDPHeatmap: decode_scale must be 'mmpose' or 'unbiased', "
                             f"got {self.decode_scale!r}")
        _check_decode_impl(self.decode_impl, "UDPHeatmap")
        frac = (3 * self.sigma) % 1.0
        if 1e-6 < frac < 0.5 - 1e-6:
            warnings.warn(f"UDPHeatmap(sigma={self.sigma}): MMPose's UDP encoder, reproduced here, centres "
                          f"the Gaussian 1 heatmap px up-left of the keypoint when 3*sigma has a fractional "
                          f"part in (0, 0.5) (here {frac:.2f}); pick e.g. sigma 0.5, 1, 1.5, 2, 3", stacklevel=3)

    def _encode_scale(self, like: torch.Tensor) -> torch.Tensor:
        # MMPose keeps (input - 1) / (heatmap - 1) as a float32 array.
        ratio = np.float32((np.array(self.input_size) - 1) / (np.array(self.heatmap_size) - 1))
        return torch.from_numpy(ratio).to(dtype=like.dtype, device=like.device)

    def to_heatmap(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints (..., 2) in input pixels -> heatmap pixels, as :meth:`encode` places them."""
        return keypoints / self._encode_scale(keypoints)

    @property
    def heatmap_scale(self) -> torch.Tensor:
        """(2,) float32 (sx, sy): heatmap pixels per input pixel, the factor :meth:`to_heatmap` applies (no offset):
        (heatmap - 1) / (input - 1), as MMPose's float32 ratio gives it."""
        return 1.0 / self._encode_scale(torch.ones(2))

    def to_input(self, locs: torch.Tensor) -> torch.Tensor:
        """locations (..., 2) in heatmap pixels -> input pixels, as :meth:`decode` maps them (``decode_scale``)."""
        if self.decode_scale == "unbiased":
            return locs * self._encode_scale(locs)
        w, h = self.heatmap_size
        return locs / torch.tensor([w - 1, h - 1], dtype=locs.dtype, device=locs.device) \
            * torch.tensor(self.input_size, dtype=locs.dtype, device=locs.device)

    def encode(self, keypoints, visible=None):
        """keypoints (B, K, 2), visible (B, K) -> heatmaps (B, K, H, W) float32, weights (B, K) float32."""
        kp, vis, to_numpy = _encode_inputs(keypoints, visible, "UDPHeatmap")
        kp = self.to_heatmap(kp)
        heatmaps, weights = window_gaussian_heatmaps(kp, vis, self.heatmap_size, self.sigma, subpixel=True)
        return _encode_outputs(heatmaps, weights, to_numpy)

    def well_posed(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """heatmaps (B, K, H, W) -> (B, K) bool: where the sub-pixel location is well-posed, so the default decode
        equals MMPose's: the map has a positive value and MMPose's Newton step goes to a peak of the local model
        (or from the map's edge) and stays inside the trust region. Elsewhere -- a flat, noisy or saddle-shaped
        map -- the default decode keeps the argmax or clamps the step."""
        hm = finite_or_zero(_float(_as_tensor(heatmaps)[0]))
        locs, _ = get_heatmap_maximum(hm)
        gx, gy, hxx, hyy, hxy, edge = udp_derivatives(locs, hm, self.blur_kernel_size)
        within = step_within(gx, gy, hxx, hyy, hxy, NEWTON_TRUST_RADIUS)
        return (locs[..., 0] >= 0) & (negative_definite(hxx, hyy, hxy) | edge) & within

    def decode(self, heatmaps):
        """heatmaps (B, K, H, W) -> keypoints (B, K, 2) in input pixels, scores (B, K) = heatmap maxima."""
        hm, to_numpy = _as_tensor(heatmaps)
        _check_heatmaps(hm, self.heatmap_size, "UDPHeatmap")
        exact = self.decode_impl == "mmpose"
        hm = _float(hm) if exact else finite_or_zero(_float(hm))
        locs, scores = get_heatmap_maximum(hm)
        if exact:  # the step and the scaling in float64, as MMPose
            locs = _per_instance(reference.refine_dark_udp_mmpose, locs, hm, self.blur_kernel_size).double()
        else:
            locs = refine_dark_udp(locs, hm, self.blur_kernel_size, NEWTON_TRUST_RADIUS)
            locs = bounded_locations(locs, self.heatmap_size)
        keypoints = self.to_input(locs).to(hm.dtype)
        return (keypoints.numpy(), scores.numpy()) if to_numpy else (keypoints, scores)


def flip_heatmaps(heatmaps, flip_indices: Sequence[int], shift_heatmap: bool):
    """heatmaps (B, K, H, W) of the mirrored input -> (B, K, H, W) aligned with the plain input's heatmaps.

    Mirrors along W, swaps left / right channels, and with ``shift_heatmap`` moves the
    maps right by one pixel (column 0 kept), MMPose's ``flip_mode='heatmap'``; MSRA
    crops need the shift, UDP crops do not. The caller averages the result with the
    plain heatmaps.
    """
    hm, from_numpy = _as_tensor(heatmaps)
    if len(flip_indices) != hm.shape[1]:
        raise ValueError(f"flip_heatmaps: {len(flip_indices)} flip indices for {hm.shape[1]} channels")
    out = hm.flip(-1)[:, list(flip_indices)]
    if shift_heatmap:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out.numpy() if from_numpy else out
