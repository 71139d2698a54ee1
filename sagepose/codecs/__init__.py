"""Keypoint codecs: keypoints (B, K, 2) in input-crop pixels <-> heatmaps (B, K, H, W), or SimCC's x and y logits
side by side (B, K, Wx + Wy) (:mod:`sagepose.codecs.simcc`).

``build_codec(dict(type="MSRAHeatmap", input_size=..., heatmap_size=..., sigma=...))``
takes MMPose's codec config one to one.
"""
from __future__ import annotations

import dataclasses
import difflib

from sagepose.codecs.heatmap import MSRAHeatmap, UDPHeatmap, flip_heatmaps, get_heatmap_maximum
from sagepose.codecs.simcc import SimCCLabel

CODECS = {"MSRAHeatmap": MSRAHeatmap, "UDPHeatmap": UDPHeatmap, "SimCCLabel": SimCCLabel}

__all__ = ["CODECS", "MSRAHeatmap", "SimCCLabel", "UDPHeatmap", "build_codec", "flip_heatmaps",
           "get_heatmap_maximum"]


def build_codec(cfg: dict) -> MSRAHeatmap | UDPHeatmap | SimCCLabel:
    """A codec from a config dict ``{"type": name, **arguments}``; unknown type or argument: ValueError."""
    args = dict(cfg)
    name = args.pop("type", None)
    if name not in CODECS:
        raise ValueError(f"build_codec: unknown codec type {name!r}; known types: {sorted(CODECS)}")
    cls = CODECS[name]
    known = [f.name for f in dataclasses.fields(cls)]
    for key in args:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"build_codec: {name} has no argument {key!r}{suggestion}; arguments: {known}")
    return cls(**args)
