"""The teacher's heatmaps carried into a student view's heatmap frame: one function, one ``grid_sample``.

Heatmap pixels relate to input pixels by a per-axis scale (sx, sy) = heatmap px per input px, with no offset
(MSRA: hm / input; UDP: (hm - 1) / (input - 1); the codec's ``heatmap_scale``), so
an input-pixel affine A becomes S A S^-1 in heatmap pixels, S = diag(sx, sy)
(:func:`sagepose.geometry.rescale_affine_torch`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from sagepose import geometry


def warp_heatmaps(maps: torch.Tensor, A_rel: torch.Tensor, flipped: torch.Tensor, flip_indices: Sequence[int],
                  hm_scale, mass_preserving: bool = False) -> torch.Tensor:
    """maps (B, K, h, w) in the teacher view, A_rel (B, 2, 3) teacher-view input px -> student-view input px,
    flipped (B,) bool (the student mirrored relative to the teacher), flip_indices (K,), hm_scale (sx, sy)
    -> (B, K, h, w) float32 in the student view's heatmap frame.

    Student pixel q takes the teacher's value at A_hm^-1 q (bilinear, zeros outside the teacher's map), the
    inverse computed in float32 whatever the autocast; one ``grid_sample`` for all B*K maps (the K channels of a
    sample share its grid). Where ``flipped``, warped channel k becomes student channel ``flip_indices[k]``: a
    mirrored view sees the left ear where the right one was. ``mass_preserving`` divides by |det A_rel| so a
    probability map keeps its mass under zoom (a student zoomed by s spreads one teacher pixel over s^2 pixels):
    the warped mass is then the fraction that stayed inside the view. Leave it off for peak-1 heatmaps.
    """
    b, k, h, w = maps.shape
    if len(flip_indices) != k:
        raise ValueError(f"warp_heatmaps: flip_indices has {len(flip_indices)} entries for {k} keypoint maps")
    with torch.autocast(maps.device.type, enabled=False):
        A_rel = A_rel.to(maps.device).float()
        out = geometry.warp_affine_torch(maps, geometry.rescale_affine_torch(A_rel, hm_scale))
        if mass_preserving:
            det = A_rel[:, 0, 0] * A_rel[:, 1, 1] - A_rel[:, 0, 1] * A_rel[:, 1, 0]
            out = out / det.abs()[:, None, None, None]
    perm = torch.as_tensor(flip_indices, dtype=torch.long, device=maps.device)
    source_of = torch.argsort(perm)  # student channel j comes from warped channel k with flip_indices[k] == j
    return torch.where(flipped.to(maps.device).view(b, 1, 1, 1), out[:, source_of], out)
