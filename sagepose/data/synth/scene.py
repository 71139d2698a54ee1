"""One synthetic image: background, 1..N posed people with occluders, camera effects, COCO annotations.

The image depends only on the generator and the style -- never on the schema -- so
the same seed renders the same pixels and the same people for COCO, MPII and AIC;
the schema only chooses which of the figure's landmarks are written out.
"""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, replace
from itertools import accumulate

import numpy as np

from sagepose.data.synth.body import Figure, pose_figure, sample_proportions
from sagepose.data.synth.poses import sample_pose
from sagepose.data.synth.render import (
    KEYPOINTS,
    LABEL_STRIDE,
    Outfit,
    Projected,
    View,
    draw_person,
    sample_outfit,
    visibility,
)
from sagepose.data.synth.scenery import add_occluder, background, camera_effects
from sagepose.data.synth.styles import STYLES, SynthStyle, get_style
from sagepose.keypoints import KeypointSchema, load_schema

ALIASES = {"neck": "upper_neck", "top_head": "head_top"}  # schema names -> figure landmark names
TRUNCATION = 0.2  # up to this fraction of a person's extent may fall outside the frame
MIN_HEIGHT = 12  # px: people whose visible pixels are shorter are left unannotated
MIN_VISIBLE = 3  # people with fewer visible landmarks are too hidden to annotate
MAX_PEOPLE = 254 // LABEL_STRIDE


@dataclass(frozen=True)
class _Person:
    figure: Figure
    view: View
    outfit: Outfit


def _sample_person(
    rng: np.random.Generator, style: SynthStyle, w: int, h: int, tilt: float, camera_roll: float
) -> _Person:
    """A posed, dressed figure at a random yaw and size; at most TRUNCATION of it leaves the frame."""
    kinds, weights = zip(*style.poses)
    cumulative = list(accumulate(weights))
    kind = kinds[min(bisect(cumulative, rng.random() * cumulative[-1]), len(kinds) - 1)]
    figure = pose_figure(sample_pose(rng, kind, style.pose_spread), sample_proportions(rng))
    roll = (
        ((90.0 if rng.random() < 0.5 else -90.0) + rng.normal(0, 15))
        if kind == "lie"
        else rng.normal(0, style.roll_std)
    )
    view = View(
        yaw=rng.uniform(0, 360),
        tilt=tilt,
        roll=roll + camera_roll,
        scale=rng.uniform(*style.scale) * h,
        center=(0.0, 0.0),
    )
    xy, _ = view.project(figure.points, view.rotation())
    pad = max(figure.props.head) * view.scale
    lo, hi = xy.min(0) - pad, xy.max(0) + pad
    size = hi - lo
    center = []
    for axis, limit in ((0, w), (1, h)):
        a, b = -TRUNCATION * size[axis], limit - (1 - TRUNCATION) * size[axis]
        center.append(rng.uniform(min(a, b), max(a, b)) - lo[axis])
    view = replace(view, center=(float(center[0]), float(center[1])))
    return _Person(figure, view, sample_outfit(rng, style.palette))


def schema_indices(schema: KeypointSchema) -> list[int]:
    """Positions in the figure's landmark list (render.KEYPOINTS) of each keypoint of ``schema``."""
    missing = [n for n in schema.keypoints if ALIASES.get(n, n) not in KEYPOINTS]
    if missing:
        raise ValueError(f"schema {schema.name}: the synthetic figure has no landmark for {missing}")
    return [KEYPOINTS.index(ALIASES.get(n, n)) for n in schema.keypoints]


def _annotate(labels: np.ndarray, proj: Projected, slot: int, indices: list[int]) -> dict | None:
    h, w = labels.shape
    x0, y0, x1, y1 = (
        max(proj.extent[0], 0),
        max(proj.extent[1], 0),
        min(proj.extent[2] + 1, w),
        min(proj.extent[3] + 1, h),
    )
    if x1 <= x0 or y1 <= y0:
        return None
    crop = labels[y0:y1, x0:x1].astype(np.int16) - (1 + slot * LABEL_STRIDE)
    mask = (crop >= 0) & (crop < LABEL_STRIDE)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0 or rows[-1] - rows[0] + 1 < MIN_HEIGHT:
        return None
    xy, v = visibility(labels, proj, slot)
    if np.count_nonzero(v == 2) < MIN_VISIBLE:
        return None
    keypoints = np.concatenate([xy, v[:, None].astype(np.float32)], 1)[indices]
    bbox = [
        float(x0 + cols[0]),
        float(y0 + rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]
    return dict(
        keypoints=keypoints.astype(np.float32),
        bbox=bbox,
        area=float(np.count_nonzero(mask)),
        head_box=list(proj.head_box),
    )


def render_image(
    rng: np.random.Generator,
    style: SynthStyle | str = STYLES["default"],
    image_size: tuple[int, int] = (320, 256),
    schema: str | KeypointSchema = "coco",
) -> tuple[np.ndarray, list[dict]]:
    """Render one image and annotate its people.

    Returns ``img_bgr`` (H, W, 3) uint8 and one dict per annotated person:
    ``keypoints`` (K, 3) float32 ``[x, y, v]`` in ``schema`` order (v=0: outside the
    image, written as (0, 0); v=1: labelled but hidden; v=2: visible), ``bbox``
    ``[x, y, w, h]`` tight around the person's visible pixels, ``area`` their count, ``head_box``
    ``[x1, y1, x2, y2]`` px the tight box of the whole rendered head, occluded parts included and not
    clipped to the image (:func:`sagepose.data.synth.render.head_box`; MPII's head rectangle, the unit of PCKh).
    """
    style, indices = get_style(style), schema_indices(load_schema(schema))
    w, h = image_size
    img = background(rng, style, h, w)
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    labels = np.zeros((h, w), np.uint8)
    tilt, camera_roll = rng.uniform(*style.tilt), rng.normal(0, style.camera_roll)
    count = min(int(rng.integers(style.people[0], style.people[1] + 1)), MAX_PEOPLE)
    people = sorted(
        (_sample_person(rng, style, w, h, tilt, camera_roll) for _ in range(count)),
        key=lambda p: p.view.scale,
    )  # the nearer (larger) are drawn later
    projected = [draw_person(img, labels, p.figure, p.view, p.outfit, slot) for slot, p in enumerate(people)]
    for proj in projected:
        if rng.random() < style.occluder_rate:
            add_occluder(img, labels, rng, proj.extent)
    image = camera_effects(img, rng, style)
    persons = [_annotate(labels, proj, slot, indices) for slot, proj in enumerate(projected)]
    return image, [p for p in persons if p is not None]
