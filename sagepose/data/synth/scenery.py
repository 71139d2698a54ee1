"""Everything in a synthetic image that is not a person: backgrounds, clutter, occluders, camera effects.

All functions draw from the ``np.random.Generator`` they are given. Backgrounds are
built at low resolution and resized where possible, which keeps a 320x256 frame
well under a millisecond or two on one core.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from sagepose.data.synth.render import OCCLUDER
from sagepose.data.synth.styles import SynthStyle


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    """A random colour, partly desaturated towards its grey so scenes are not all neon."""
    u = rng.random(4).tolist()  # scalar Python maths: this runs ~10 times per image
    r, g, b = (lo + (hi - lo) * x for x in u[:3])
    grey, sat = (r + g + b) / 3, 0.2 + 0.8 * u[3]
    return int(grey + sat * (r - grey)), int(grey + sat * (g - grey)), int(grey + sat * (b - grey))


def _gradient(rng, h, w) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    small = (
        np.asarray(_color(rng), np.float32) * (1 - t[..., None])
        + np.asarray(_color(rng), np.float32) * t[..., None]
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _clouds(rng, h, w, base: tuple[int, int, int] | None = None) -> np.ndarray:
    """Low-frequency colour noise around ``base``: two octaves of random grids, bicubically upsampled."""
    base = np.asarray(base or _color(rng, 40, 220), np.float32)
    octaves = []
    for cells, amp in (
        (int(rng.integers(2, 6)), rng.uniform(20, 50)),
        (int(rng.integers(8, 20)), rng.uniform(5, 20)),
    ):
        grid = rng.normal(0, amp, (cells, max(2, cells * w // h), 3)).astype(np.float32)
        grid = grid * 0.4 + grid.mean(2, keepdims=True) * 0.6  # mostly brightness, some hue
        octaves.append(
            cv2.resize(grid + base if not octaves else grid, (w, h), interpolation=cv2.INTER_CUBIC)
        )
    octaves[0] += octaves[1]
    return octaves[0]


def _tiled(pattern: np.ndarray, matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    """Repeat a small periodic ``pattern`` over the image; ``matrix`` maps image px -> pattern px."""
    warp = cv2.warpPerspective if matrix.shape[0] == 3 else cv2.warpAffine
    return warp(
        pattern, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP
    )


def _stripes(rng, h, w, contrast: float = 1.0) -> np.ndarray:
    angle, period = rng.uniform(0, np.pi), rng.uniform(0.05, 0.3) * h  # period of one stripe pair
    t = np.arange(64, dtype=np.float32) / 64
    wave = (t >= 0.5).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * np.sin(2 * np.pi * t)
    a, b = np.asarray(_color(rng), np.float32), np.asarray(_color(rng), np.float32)
    pattern = (a + contrast * (b - a) * wave[:, None])[None]
    k = 64 / period
    return _tiled(pattern, np.float32([[k * np.cos(angle), k * np.sin(angle), 0], [0, 0, 0]]), h, w)


def _tile_pattern(rng) -> np.ndarray:
    """One period of a checkerboard or of grouted tiles, 32x32 px."""
    a, b = np.asarray(_color(rng, 60, 240), np.float32), np.asarray(_color(rng, 60, 240), np.float32)
    idx = np.arange(32) // 16
    if rng.random() < 0.5:
        return np.where(((idx[:, None] + idx[None]) % 2)[..., None] > 0, a, b).astype(np.float32)
    grout = (np.arange(32) % 16) < 2
    return np.where((grout[:, None] | grout[None])[..., None], b * 0.5, a).astype(np.float32)


def _floor_matrix(rng, h: int, w: int, horizon: float, tile: float) -> np.ndarray:
    """Image px -> pattern px for a ground plane whose far edge is at ``horizon`` (fraction of h)."""
    spread = rng.uniform(0.2, 0.45) * w
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[spread, h * horizon], [w - spread, h * horizon], [w * 1.6, h], [-w * 0.6, h]])
    return np.diag([16 / tile, 16 / tile, 1.0]) @ np.linalg.inv(cv2.getPerspectiveTransform(src, dst))


def _tiles(rng, h, w) -> np.ndarray:
    tile = rng.uniform(0.05, 0.16) * h
    if rng.random() < 0.5:  # a floor seen in perspective
        return _tiled(_tile_pattern(rng), _floor_matrix(rng, h, w, rng.uniform(-0.5, 0.0), tile), h, w)
    k = 16 / tile
    return _tiled(
        _tile_pattern(rng), np.float32([[k, 0, rng.uniform(0, 32)], [0, k, rng.uniform(0, 32)]]), h, w
    )


def _room(rng, h, w) -> np.ndarray:
    out = _stripes(rng, h, w, contrast=0.25)  # wallpaper
    horizon = int(h * rng.uniform(0.35, 0.7))
    tile = rng.uniform(0.05, 0.16) * h
    out[horizon:] = _tiled(_tile_pattern(rng), _floor_matrix(rng, h, w, horizon / h, tile), h, w)[horizon:]
    for _ in range(int(rng.integers(0, 3))):  # doors, windows, cupboards
        x0, y0 = rng.uniform(0, w), rng.uniform(0, horizon)
        size = (rng.uniform(0.06, 0.3) * w, rng.uniform(0.1, 0.5) * h)
        cv2.rectangle(out, (int(x0), int(y0)), (int(x0 + size[0]), int(y0 + size[1])), _color(rng), -1)
    return out


def _outdoor(rng, h, w) -> np.ndarray:
    horizon = int(h * rng.uniform(0.15, 0.6))
    sky = np.linspace(0, 1, max(horizon, 1), dtype=np.float32)[:, None, None]
    top, bottom = np.asarray(_color(rng, 120, 256), np.float32), np.float32([235, 215, 190])
    out = _clouds(rng, h, w, base=_color(rng, 40, 160))  # ground
    sky = top * (1 - sky) + bottom * sky
    out[:horizon] = cv2.resize(sky, (w, len(sky)), interpolation=cv2.INTER_NEAREST)[:horizon]
    for _ in range(int(rng.integers(0, 6))):  # buildings and trees along the horizon
        x0, width, height = rng.uniform(-0.1, 1) * w, rng.uniform(0.05, 0.25) * w, rng.uniform(0.05, 0.6) * h
        cv2.rectangle(
            out, (int(x0), int(horizon - height)), (int(x0 + width), horizon), _color(rng, 30, 200), -1
        )
    return out


def _shapes(rng, h, w) -> np.ndarray:
    out = _gradient(rng, h, w)
    add_clutter(out, rng, int(rng.integers(8, 20)))
    return out


BACKGROUNDS = {
    "gradient": _gradient,
    "clouds": _clouds,
    "stripes": _stripes,
    "tiles": _tiles,
    "room": _room,
    "outdoor": _outdoor,
    "shapes": _shapes,
}


def background(rng: np.random.Generator, style: SynthStyle, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 BGR background of a kind from ``style.backgrounds``, plus clutter.

    The backdrop is rendered at half resolution and upsampled (4x cheaper, and a
    slightly soft background is what a camera focused on people sees); clutter is sharp.
    """
    kind = style.backgrounds[rng.integers(len(style.backgrounds))]
    try:
        make = BACKGROUNDS[kind]
    except KeyError:
        raise KeyError(
            f"style {style.name}: unknown background {kind!r}; known: {sorted(BACKGROUNDS)}"
        ) from None
    out = cv2.resize(make(rng, (h + 1) // 2, (w + 1) // 2), (w, h), interpolation=cv2.INTER_LINEAR)
    add_clutter(out, rng, int(rng.integers(style.clutter[0], style.clutter[1] + 1)))
    return out


def add_clutter(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Random discs, boxes, polygons and sticks (limb-like distractors) drawn in place."""
    h, w = img.shape[:2]
    for _ in range(count):
        kind, color = rng.integers(4), _color(rng)
        cx, cy, size = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 0.25 * min(h, w))
        if kind == 0:
            cv2.circle(img, (int(cx), int(cy)), int(size / 2), color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(
                img, (int(cx), int(cy)), (int(cx + size), int(cy + size * rng.uniform(0.3, 2))), color, -1
            )
        elif kind == 2:
            pts = np.stack([cx + rng.uniform(-size, size, 5), cy + rng.uniform(-size, size, 5)], 1)
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
        else:
            angle = rng.uniform(0, np.pi)
            end = (int(cx + size * np.cos(angle)), int(cy + size * np.sin(angle)))
            cv2.line(img, (int(cx), int(cy)), end, color, int(rng.integers(2, 8)), cv2.LINE_AA)


def add_occluder(
    img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, box: tuple[float, ...]
) -> None:
    """Draw one box / ellipse / blob / bar over part of ``box`` (x0, y0, x1, y1); label it OCCLUDER."""
    x0, y0, x1, y1 = box
    size = rng.uniform(0.15, 0.5) * max(y1 - y0, x1 - x0, 8)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    kind = rng.integers(4)
    if kind == 0:  # box, possibly rotated
        rect = ((cx, cy), (size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)), rng.uniform(-30, 30))
        pts = cv2.boxPoints(rect)
    elif kind == 1:  # ellipse
        pts = cv2.ellipse2Poly(
            (int(cx), int(cy)),
            (int(size * rng.uniform(0.3, 0.7)), int(size * rng.uniform(0.3, 0.7))),
            int(rng.uniform(0, 180)),
            0,
            360,
            10,
        ).astype(np.float32)
    elif kind == 2:  # blob: a star-shaped polygon with random radii
        t = np.sort(rng.uniform(0, 2 * np.pi, 9))
        r = size * rng.uniform(0.3, 0.7, 9)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    else:  # pole or railing across the figure
        thick = size * rng.uniform(0.12, 0.3)
        pts = (
            np.float32(
                [
                    [cx - thick, -10],
                    [cx + thick, -10],
                    [cx + thick, labels.shape[0] + 10],
                    [cx - thick, labels.shape[0] + 10],
                ]
            )
            if rng.random() < 0.5
            else np.float32(
                [
                    [-10, cy - thick],
                    [labels.shape[1] + 10, cy - thick],
                    [labels.shape[1] + 10, cy + thick],
                    [-10, cy + thick],
                ]
            )
        )
    ipts = [np.round(pts).astype(np.int32)]
    color = _color(rng)
    cv2.fillPoly(img, ipts, color, cv2.LINE_AA)
    cv2.polylines(img, ipts, True, tuple(0.6 * c for c in color), 1, cv2.LINE_AA)
    cv2.fillPoly(labels, ipts, OCCLUDER, cv2.LINE_8)


@lru_cache(maxsize=4)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, larger than the image; each image takes a random window of it.

    Drawing fresh per-pixel normals costs more than rendering the rest of the image;
    a shifted, sign-flipped window of a constant field is as good for sensor noise.
    """
    return np.random.default_rng(0x5EED).standard_normal((h + 64, w + 64, 3), dtype=np.float32)


def camera_effects(img: np.ndarray, rng: np.random.Generator, style: SynthStyle) -> np.ndarray:
    """uint8 BGR image -> uint8 after contrast, uneven lighting with a colour cast, blur and sensor noise."""
    h, w = img.shape[:2]
    contrast = rng.uniform(*style.contrast)
    cast = rng.uniform(*style.brightness) * rng.uniform(0.92, 1.08, 3)
    light = rng.uniform(0.75, 1.25, (3, 4, 1)) * cast  # a smooth light field with a colour cast
    # one full-size (h, w, 3) field: broadcasting a (3,) or (h, w, 1) operand is many times slower
    light = cv2.resize(light.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    mean = float(np.mean(cv2.mean(img)[:3]))
    lut = np.clip((np.arange(256, dtype=np.float32) - mean) * contrast + mean, 0, 255).astype(np.uint8)
    out = cv2.LUT(img, lut).astype(np.float32)
    out *= light
    if rng.random() < style.motion_blur_prob:
        length, angle = int(rng.integers(3, 10)), rng.uniform(0, 180)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6))
    elif rng.random() < style.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, style.blur))
    oy, ox = rng.integers(0, 64, 2)
    out += _noise_bank(h, w)[oy : oy + h, ox : ox + w] * (rng.uniform(-style.noise, style.noise))
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
