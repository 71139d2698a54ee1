"""Drawing one posed figure through a camera, and reading its keypoint visibility back.

Every part is drawn twice: in colour into the image and as ``label_base + part index``
into a uint8 label map, painter's-style from far to near. Visibility is then read
from the final label map (after other people and occluders are drawn), so a keypoint
is visible (v=2) only if the pixel under it shows one of the parts it belongs to.
Face landmarks additionally need their surface to face the camera (self-occlusion
by the head); shoulders and hips on the far side of the torso count as hidden by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sagepose.data.synth.body import FACE, Figure, P
from sagepose.data.synth.styles import Color, Palette

PARTS = (
    "torso",
    "pelvis",
    "neck",
    "head",
    "left_upper_arm",
    "left_forearm",
    "left_hand",
    "right_upper_arm",
    "right_forearm",
    "right_hand",
    "left_thigh",
    "left_shin",
    "left_foot",
    "right_thigh",
    "right_shin",
    "right_foot",
)
PART = {name: i for i, name in enumerate(PARTS)}
LABEL_STRIDE = 16  # label = 1 + person slot * LABEL_STRIDE + part index; 0 is background
OCCLUDER = 255

# (part, start point, end point, radii attribute of Proportions, outfit colour)
CAPSULES = [
    (f"{s}_{part}", f"{s}_{a}", f"{s}_{b}", radii, color)
    for s in ("left", "right")
    for part, a, b, radii, color in (
        ("upper_arm", "shoulder", "elbow", "upper_arm_r", "shirt"),
        ("forearm", "elbow", "wrist", "forearm_r", "sleeve"),
        ("hand", "wrist", "hand", "hand_r", "skin"),
        ("thigh", "hip", "knee", "thigh_r", "trousers"),
        ("shin", "knee", "ankle", "shin_r", "leg"),
        ("foot", "ankle", "toe", "foot_r", "shoes"),
    )
] + [("neck", "thorax", "head", "neck_r", "skin")]

# Keypoint -> (parts that may show it, minimum facing of its surface for face landmarks).
OWNERS: dict[str, tuple[tuple[str, ...], float | None]] = {
    "nose": (("head",), -0.2),
    "left_eye": (("head",), 0.1),
    "right_eye": (("head",), 0.1),
    "left_ear": (("head",), -0.35),
    "right_ear": (("head",), -0.35),
    "head_top": (("head",), None),
    "upper_neck": (("neck", "head"), None),
    "thorax": (("torso", "neck"), None),
    "pelvis": (("pelvis", "torso"), None),
} | {
    f"{s}_{j}": (tuple(f"{s}_{p}" if p not in ("torso", "pelvis") else p for p in parts), None)
    for s in ("left", "right")
    for j, parts in (
        ("shoulder", ("torso", "upper_arm")),
        ("elbow", ("upper_arm", "forearm")),
        ("wrist", ("forearm", "hand")),
        ("hip", ("pelvis", "thigh")),
        ("knee", ("thigh", "shin")),
        ("ankle", ("shin", "foot")),
    )
}
KEYPOINTS = tuple(OWNERS)  # the superset every schema is read from
FAR_SIDE = 0.6  # a shoulder / hip whose outward side faces away more than this is behind the torso
RIM = 0.85  # rim landmarks (head top, ears) are probed this far from the head centre, inside the head
LIGHT = np.array([-0.35, 0.55, 0.76])  # camera-space light direction (unit) for shading
_LIGHT_2D = np.array([-0.35, -0.55]) / np.hypot(0.35, 0.55)  # its direction in the image (y down)
TORSO_BEHIND = 0.03  # torso / pelvis sort slightly behind limbs at the same depth (limbs hang beside it)

# The same rules as arrays over KEYPOINTS, for one vectorised visibility pass.
_OWN = np.array([[part in OWNERS[k][0] for part in PARTS] for k in KEYPOINTS])
_MIN_FACING = np.array([-np.inf if OWNERS[k][1] is None else OWNERS[k][1] for k in KEYPOINTS])
_SIDED = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
_MIN_SIDE = np.array([-FAR_SIDE if k in _SIDED else -np.inf for k in KEYPOINTS])
_TORSO = np.array([part in ("torso", "pelvis") for part in PARTS])
_RIM = np.array([k in ("head_top", "left_ear", "right_ear") for k in KEYPOINTS])
_INDEX = np.array([P[k] for k in KEYPOINTS])
_CAP_A, _CAP_B = np.array([P[c[1]] for c in CAPSULES]), np.array([P[c[2]] for c in CAPSULES])


@dataclass(frozen=True)
class Outfit:
    """One person's colours; the same on both sides of the body (left/right must be learnt from shape)."""

    skin: Color
    shirt: Color
    trousers: Color
    shoes: Color
    hair: Color
    long_sleeves: bool
    shorts: bool
    hairline: float  # hair covers the head above this height on the unit head sphere (> 1: bald)

    def colors(self) -> dict[str, Color]:
        """Colour per CAPSULES key: the fields, plus sleeves and lower legs (skin when short)."""
        return dict(
            skin=self.skin,
            shirt=self.shirt,
            trousers=self.trousers,
            shoes=self.shoes,
            hair=self.hair,
            sleeve=self.shirt if self.long_sleeves else self.skin,
            leg=self.skin if self.shorts else self.trousers,
        )


def sample_outfit(rng: np.random.Generator, palette: Palette) -> Outfit:
    """Palette entries with +-15% brightness, sleeve and trouser lengths, a hairline (5% bald)."""

    def pick(colors: tuple[Color, ...]) -> Color:
        k = rng.uniform(0.85, 1.15)
        return tuple(min(int(c * k), 255) for c in colors[rng.integers(len(colors))])

    return Outfit(
        skin=pick(palette.skin),
        shirt=pick(palette.shirts),
        trousers=pick(palette.trousers),
        shoes=pick(palette.shoes),
        hair=pick(palette.hair),
        long_sleeves=bool(rng.random() < 0.5),
        shorts=bool(rng.random() < 0.2),
        hairline=1.5 if rng.random() < 0.05 else rng.uniform(0.25, 0.55),
    )


@dataclass(frozen=True)
class View:
    """Camera for one person: body yaw, camera tilt (looking down), in-plane roll; pixels per height unit."""

    yaw: float
    tilt: float
    roll: float
    scale: float
    center: tuple[float, float]  # image position of the pelvis

    def rotation(self) -> np.ndarray:
        """Body frame -> camera frame (x right, y up, z towards the viewer)."""
        y, t, r = np.radians([self.yaw, self.tilt, self.roll])
        yaw = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        tilt = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
        roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return roll @ tilt @ yaw

    def project(self, points: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) body-frame points -> image xy (..., 2) px, depth (...) towards the viewer."""
        cam = points @ rot.T
        xy = np.stack(
            [self.center[0] + self.scale * cam[..., 0], self.center[1] - self.scale * cam[..., 1]], -1
        )
        return xy, cam[..., 2]


@dataclass(frozen=True)
class Projected:
    """A figure seen through its view: what visibility needs after drawing."""

    xy: np.ndarray  # (len(POINTS), 2) image px
    facing: np.ndarray  # (len(KEYPOINTS),) camera-facing component of the landmark's surface (face,
    #                    shoulders, hips: their outward side), 0 for the others
    extent: tuple[int, int, int, int]  # x0, y0, x1, y1 px bounds of everything drawn (unclipped)
    head_box: tuple[float, float, float, float]  # x1, y1, x2, y2 px: see :func:`head_box`


_ARC = 6  # points per rounded capsule end
_T = np.linspace(-np.pi / 2, np.pi / 2, _ARC)
SHIFT = 4  # OpenCV sub-pixel bits


def _capsule_polygons(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """(C, 2) ends + (C,) radii -> (C, 2 * _ARC, 2) convex outlines of tapered rounded capsules."""
    d = b - a
    length = np.linalg.norm(d, axis=1)
    u = np.where(length[:, None] > 1e-6, d / np.maximum(length, 1e-6)[:, None], [1.0, 0.0])
    n = np.stack([-u[:, 1], u[:, 0]], 1)
    fat = length < np.abs(ra - rb)  # foreshortened to a disc: one radius keeps the outline convex
    ra, rb = np.where(fat, np.maximum(ra, rb), ra), np.where(fat, np.maximum(ra, rb), rb)
    c, s = np.cos(_T)[None, :, None], np.sin(_T)[None, :, None]
    end_b = b[:, None] + rb[:, None, None] * (c * u[:, None] + s * n[:, None])
    end_a = a[:, None] + ra[:, None, None] * (-c * u[:, None] - s * n[:, None])
    return np.concatenate([end_b, end_a], 1)


def _fill(img, labels, ipts: np.ndarray, highlight: np.ndarray | None, color: Color, label: int) -> None:
    """Fill a convex outline (fixed-point, SHIFT bits): antialiased colour, darker edge, lit stripe, label."""
    cv2.fillConvexPoly(img, ipts, color, cv2.LINE_AA, SHIFT)
    if highlight is not None:
        cv2.fillConvexPoly(
            img, highlight, tuple(min(int(1.2 * v) + 12, 255) for v in color), cv2.LINE_AA, SHIFT
        )
    cv2.polylines(img, [ipts], True, tuple(int(0.6 * v) for v in color), 1, cv2.LINE_AA, SHIFT)
    cv2.fillConvexPoly(labels, ipts, label, cv2.LINE_8, SHIFT)


def _draw_head(img, labels, center, axes, radii, outfit: Outfit, label: int) -> None:
    """Ray-cast the head ellipsoid (orthographic) for skin, hair, eyes, brows, mouth and ears."""
    h, w = labels.shape
    ext = np.sqrt(((axes * radii) ** 2).sum(1))[:2]  # half extents of the silhouette along x, y
    x0, x1 = int(max(center[0] - ext[0] - 1, 0)), int(min(center[0] + ext[0] + 2, w))
    y0, y1 = int(max(center[1] - ext[1] - 1, 0)), int(min(center[1] + ext[1] + 2, h))
    if x1 <= x0 or y1 <= y0:
        return
    gx, gy = (np.arange(x0, x1) - center[0])[None], (center[1] - np.arange(y0, y1))[:, None]
    basis = axes.T / radii[:, None]  # camera -> unit-sphere head coordinates
    wl, wu, wf = (basis[k, 0] * gx + basis[k, 1] * gy for k in range(3))
    v = basis[:, 2]
    wv, vv = wl * v[0] + wu * v[1] + wf * v[2], float(v @ v)
    disc = wv * wv - vv * (wl * wl + wu * wu + wf * wf - 1.0)
    ys, xs = np.nonzero(disc >= 0)  # the silhouette; everything below is per silhouette pixel
    if len(ys) == 0:
        return
    wl, wu, wf, wv = wl[ys, xs], wu[ys, xs], wf[ys, xs], wv[ys, xs]
    t = (np.sqrt(disc[ys, xs]) - wv) / vv  # depth of the near surface point
    ql, qu, qf = wl + v[0] * t, wu + v[1] * t, wf + v[2] * t
    light = axes.T @ LIGHT  # the light in head coordinates; the sphere normal stands in for the ellipsoid's
    shade = 0.55 + 0.45 * np.clip(light[0] * ql + light[1] * qu + light[2] * qf, 0, 1)
    side = np.abs(ql)  # eyes, brows and ears are mirror-symmetric
    ear = side > 0.9
    kind = ear.astype(np.intp)  # indexes the colours below
    if outfit.hairline < 1:
        kind[((qu > outfit.hairline) | ((qf < 0.05) & (qu > -0.55))) & ~(ear & (qu < 0.3))] = 2
    front = qf > 0.3
    kind[front & (np.abs(side - 0.36) < 0.15) & (np.abs(qu - 0.33) < 0.05)] = 2  # brows
    kind[front & (side < 0.22) & (np.abs(qu + 0.47) < 0.05)] = 3  # mouth
    kind[front & ((side - 0.36) ** 2 + (qu - 0.12) ** 2 < 0.012)] = 4  # eyes
    skin = np.asarray(outfit.skin, np.float32)
    colors = np.stack(
        [skin, 0.85 * skin, np.float32(outfit.hair), np.float32((60, 50, 150)), np.float32((35, 25, 20))]
    )
    img[y0 + ys, x0 + xs] = (colors[kind] * shade[:, None]).astype(np.uint8)
    labels[y0 + ys, x0 + xs] = label


def head_box(center: np.ndarray, axes: np.ndarray, radii: np.ndarray, nose: np.ndarray | None, nose_r: float):
    """The tight box ``(x1, y1, x2, y2)`` image px of what is drawn as the head (MPII's head rectangle).

    ``axes`` (3, 3) columns: the head's left / up / forward directions in camera space; ``radii`` (3,) its
    ellipsoid radii in px. The orthographic silhouette of the ellipsoid reaches ``sqrt(sum_k (axes[i, k] r_k)^2)``
    from ``center`` along image axis ``i``; the nose disc (``nose``: its centre, None when the face is turned
    away and it is not drawn) of radius ``nose_r`` may stick out of it in profile. The box is of the whole head
    as drawn, before anything in front covers it, and is not clipped to the image.
    """
    ext = np.sqrt(((axes * radii) ** 2).sum(1))[:2]
    lo, hi = center - ext, center + ext
    if nose is not None:
        lo, hi = np.minimum(lo, nose - nose_r), np.maximum(hi, nose + nose_r)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def draw_person(
    img: np.ndarray, labels: np.ndarray, fig: Figure, view: View, outfit: Outfit, slot: int
) -> Projected:
    """Draw one figure far-to-near into ``img`` (BGR) and ``labels``; return its projection."""
    rot = view.rotation()
    xy, depth = view.project(fig.points, rot)
    s, props = view.scale, fig.props
    base = 1 + slot * LABEL_STRIDE
    items = []  # (depth, draw order, kind, payload)
    radii = [getattr(props, c[3]) for c in CAPSULES]
    ra = np.array([r[0] if isinstance(r, tuple) else r for r in radii]) * s
    rb = np.array([r[1] if isinstance(r, tuple) else r * 0.9 for r in radii]) * s
    a, b = xy[_CAP_A], xy[_CAP_B]
    # each capsule and its lit side (a thinner capsule shifted towards the light), in one batch
    both = _capsule_polygons(
        np.concatenate([a, a + _LIGHT_2D * 0.4 * ra[:, None]]),
        np.concatenate([b, b + _LIGHT_2D * 0.4 * rb[:, None]]),
        np.concatenate([ra, 0.4 * ra]),
        np.concatenate([rb, 0.4 * rb]),
    )
    polys, lit = np.split(np.round(both * (1 << SHIFT)).astype(np.int32), 2)
    cap_depth = 0.5 * (depth[_CAP_A] + depth[_CAP_B])
    colors = outfit.colors()
    for i, (part, _, _, _, color) in enumerate(CAPSULES):
        items.append((cap_depth[i], i, part, (polys[i], lit[i]), colors[color]))
    rings_xy, rings_depth = view.project(fig.rings, rot)
    for part, rows, color in (("torso", [0, 1, 2], outfit.shirt), ("pelvis", [2, 3, 4], outfit.trousers)):
        hull = cv2.convexHull(rings_xy[rows].reshape(-1, 2).astype(np.float32))[:, 0]
        items.append(
            (
                rings_depth[rows].mean() - TORSO_BEHIND,
                -1,
                part,
                (np.round(hull * (1 << SHIFT)).astype(np.int32), None),
                color,
            )
        )
    head_depth = depth[P["head"]] + 0.02
    items.append((head_depth, 99, "head", None, None))
    face_facing = (fig.face_normals @ rot.T)[:, 2]
    head_axes, head_radii = rot @ fig.head_axes, np.asarray(props.head) * s
    nose_r = 0.22 * props.head[2] * s
    shows_nose = face_facing[0] > OWNERS["nose"][1]
    for _, _, part, poly, color in sorted(items, key=lambda t: (t[0], t[1])):
        if part != "head":
            _fill(img, labels, *poly, color, base + PART[part])
            continue
        _draw_head(img, labels, xy[P["head"]], head_axes, head_radii, outfit, base + PART["head"])
        if shows_nose:
            nose = np.round(xy[P["nose"]] * (1 << SHIFT)).astype(np.int32)
            r = int(round(nose_r * (1 << SHIFT)))
            skin = tuple(int(0.8 * c) for c in outfit.skin)
            cv2.circle(img, nose, r, skin, -1, cv2.LINE_AA, SHIFT)
            cv2.circle(labels, nose, r, base + PART["head"], -1, cv2.LINE_8, SHIFT)
    facing = np.zeros(len(KEYPOINTS))
    facing[[KEYPOINTS.index(k) for k in FACE]] = face_facing
    across = fig.points[P["left_shoulder"]] - fig.points[P["right_shoulder"]]
    shoulders = (rot @ across)[2] / np.linalg.norm(across)  # camera-facing component of the chest's left
    for name, value in (
        ("left_shoulder", shoulders),
        ("right_shoulder", -shoulders),
        ("left_hip", rot[2, 0]),
        ("right_hip", -rot[2, 0]),
    ):
        facing[KEYPOINTS.index(name)] = value
    pad = max(props.head) * s + 2
    lo, hi = np.floor(xy.min(0) - pad), np.ceil(xy.max(0) + pad)
    return Projected(
        xy=xy,
        facing=facing,
        extent=(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])),
        head_box=head_box(xy[P["head"]], head_axes, head_radii, xy[P["nose"]] if shows_nose else None, nose_r),
    )


def visibility(labels: np.ndarray, proj: Projected, slot: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of :data:`KEYPOINTS` -> xy (K, 2) float32, v (K,) int64 in {0, 1, 2} (COCO semantics)."""
    h, w = labels.shape
    xy = proj.xy[_INDEX].astype(np.float32)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
    head = proj.xy[P["head"]]
    probe = np.where(_RIM[:, None], head + RIM * (xy - head), xy)
    px = np.clip(np.round(probe[:, 0]), 0, w - 1).astype(np.intp)
    py = np.clip(np.round(probe[:, 1]), 0, h - 1).astype(np.intp)
    shown = labels[py, px].astype(np.int64) - (1 + slot * LABEL_STRIDE)
    part = np.clip(shown, 0, LABEL_STRIDE - 1)
    visible = (shown >= 0) & (shown < LABEL_STRIDE) & _OWN[np.arange(len(KEYPOINTS)), part]
    visible &= proj.facing > _MIN_FACING
    visible &= ~_TORSO[part] | (proj.facing > _MIN_SIDE)
    v = np.where(inside, np.where(visible, 2, 1), 0)
    xy[v == 0] = 0.0
    return xy, v
