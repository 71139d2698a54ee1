"""Articulated 3D figure: proportions and forward kinematics from joint angles.

Body frame, in units of standing height, origin at the pelvis: ``x`` = the person's
left, ``y`` = up, ``z`` = forward (the way the person faces). Angles are degrees.
Limbs are posed for the left side and mirrored (x -> -x) for the right, so both sides
share one set of joint-angle conventions (see :mod:`sagepose.data.synth.poses`). The
camera (yaw, tilt, roll, scale) is applied by the renderer; nothing here knows pixels.

Derived landmarks are geometric, so every schema reads the same figure: the pelvis
(origin) is the hip midpoint, the thorax the shoulder midpoint, ``upper_neck`` lies
:data:`UPPER_NECK` of the way from the thorax to the head centre, and ``head_top`` is
the top of the head ellipsoid along the head's own up axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Named 3D points of a posed figure, in this order.
_LIMB_POINTS = ("shoulder", "elbow", "wrist", "hand", "hip", "knee", "ankle", "toe")
POINTS = (
    ("pelvis", "thorax", "head")
    + tuple(f"{side}_{p}" for p in _LIMB_POINTS for side in ("left", "right"))
    + ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top", "upper_neck")
)
P = {name: i for i, name in enumerate(POINTS)}

# Face landmarks as directions on the unit head sphere (head frame), and how far
# out they sit (the nose protrudes). Left/right mirror each other.
FACE = {
    "nose": ((0.0, -0.15, 1.0), 1.12),
    "left_eye": ((0.36, 0.12, 0.92), 1.0),
    "right_eye": ((-0.36, 0.12, 0.92), 1.0),
    "left_ear": ((1.0, 0.02, -0.12), 1.0),
    "right_ear": ((-1.0, 0.02, -0.12), 1.0),
}
_FACE_DIRS = (
    np.array([d for d, _ in FACE.values()]) / np.linalg.norm([d for d, _ in FACE.values()], axis=1)[:, None]
)
_FACE_OUT = np.array([out for _, out in FACE.values()])
UPPER_NECK = 0.6  # upper_neck sits this far from the thorax towards the head centre
RING = 12  # points per torso cross-section ellipse


@dataclass(frozen=True)
class Proportions:
    """Segment lengths and radii in units of standing height."""

    hip_width: float = 0.085  # half distance between hip joints
    shoulder_width: float = 0.105
    spine: float = 0.29  # pelvis -> thorax
    neck: float = 0.095  # thorax -> head centre
    upper_arm: float = 0.175
    forearm: float = 0.15
    hand: float = 0.065
    thigh: float = 0.245
    shin: float = 0.245
    foot: float = 0.10
    head: tuple[float, float, float] = (0.056, 0.07, 0.064)  # ellipsoid radii (left, up, forward)
    upper_arm_r: tuple[float, float] = (0.032, 0.026)
    forearm_r: tuple[float, float] = (0.027, 0.02)
    thigh_r: tuple[float, float] = (0.054, 0.037)
    shin_r: tuple[float, float] = (0.038, 0.027)
    hand_r: float = 0.021
    foot_r: float = 0.022
    neck_r: float = 0.027
    chest: tuple[float, float] = (0.112, 0.065)  # torso half-width, half-depth at the chest
    waist: tuple[float, float] = (0.098, 0.06)
    hips: tuple[float, float] = (0.11, 0.07)


def sample_proportions(rng: np.random.Generator) -> Proportions:
    """Default proportions with per-person variation (build, limb lengths, head size)."""
    base = Proportions()
    build = rng.uniform(0.85, 1.2)  # girth
    shoulders, hips = rng.uniform(0.9, 1.12), rng.uniform(0.9, 1.12)
    arms, legs, head = rng.uniform(0.94, 1.06), rng.uniform(0.94, 1.06), rng.uniform(0.92, 1.1)
    g = lambda t, k: tuple(v * k for v in t)
    return Proportions(
        hip_width=base.hip_width * hips,
        shoulder_width=base.shoulder_width * shoulders,
        spine=base.spine,
        neck=base.neck,
        upper_arm=base.upper_arm * arms,
        forearm=base.forearm * arms,
        hand=base.hand,
        thigh=base.thigh * legs,
        shin=base.shin * legs,
        foot=base.foot,
        head=g(base.head, head),
        upper_arm_r=g(base.upper_arm_r, build),
        forearm_r=g(base.forearm_r, build),
        thigh_r=g(base.thigh_r, build),
        shin_r=g(base.shin_r, build),
        hand_r=base.hand_r,
        foot_r=base.foot_r,
        neck_r=base.neck_r * build,
        chest=(base.chest[0] * shoulders, base.chest[1] * build),
        waist=g(base.waist, build),
        hips=(base.hips[0] * hips, base.hips[1] * build),
    )


# R(deg) = I + (cos - 1) * A + sin * B for rotations about x, y, z, with the conventions
# x: flexion turns a downward vector (0, -1, 0) forward (+z); z: abduction turns it to +x.
_ROT_A = {"x": np.diag([0.0, 1, 1]), "y": np.diag([1.0, 0, 1]), "z": np.diag([1.0, 1, 0])}
_ROT_B = {
    "x": np.array([[0.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
    "y": np.array([[0.0, 0, 1], [0, 0, 0], [-1, 0, 0]]),
    "z": np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 0]]),
}
# every rotation of a figure, computed in one batch: torso and head, then 9 per side
_TORSO_AXES = "zxyyxz"  # side bend, pitch, twist; head yaw, pitch, roll
_LIMB_AXES = "xzyxxzyxx"  # shoulder flex, abd, twist, elbow; hip flex, abd, twist, knee; ankle
_AXES = _TORSO_AXES + _LIMB_AXES * 2
_A, _B = np.stack([_ROT_A[a] for a in _AXES]), np.stack([_ROT_B[a] for a in _AXES])
_LIMB_ANGLES = (
    ("shoulder_flex", 1), ("shoulder_abd", 1), ("arm_twist", -1), ("elbow", 1),
    ("hip_flex", 1), ("hip_abd", 1), ("leg_twist", -1), ("knee", -1), ("ankle", -1),
)  # fmt: skip
_MIRROR = np.array([[1.0, 1, 1], [-1, 1, 1]])  # left, right: the right side is the left mirrored in x


def _rotations(pose: dict[str, float]) -> np.ndarray:
    """(len(_AXES), 3, 3) rotation matrices of ``pose`` in the order of :data:`_AXES`."""
    deg = [pose["torso_side"], -pose["torso_pitch"], pose["torso_twist"]]
    deg += [pose["head_yaw"], -pose["head_pitch"], pose["head_roll"]]
    deg += [sign * pose[f"{side}_{name}"] for side in ("left", "right") for name, sign in _LIMB_ANGLES]
    rad = np.radians(deg)[:, None, None]
    return np.eye(3) + (np.cos(rad) - 1) * _A + np.sin(rad) * _B


@dataclass(frozen=True)
class Figure:
    """A posed figure in the body frame.

    ``points`` (len(POINTS), 3); ``face_normals`` (5, 3) outward normals of the FACE
    landmarks; ``head_axes`` (3, 3) columns = the head's left/up/forward directions;
    ``rings`` (5, RING, 3) torso cross-sections: shoulders, chest, waist, hips, crotch.
    """

    points: np.ndarray
    face_normals: np.ndarray
    head_axes: np.ndarray
    rings: np.ndarray
    props: Proportions


_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, RING, endpoint=False)),
        np.zeros(RING),
        np.sin(np.linspace(0, 2 * np.pi, RING, endpoint=False)),
    ],
    1,
)


def _ring(center, axes, half_width, half_depth) -> np.ndarray:
    return center + (_CIRCLE * (half_width, 1.0, half_depth)) @ axes.T


def pose_figure(pose: dict[str, float], props: Proportions) -> Figure:
    """Forward kinematics: joint angles + proportions -> 3D points of every named part."""
    rot = _rotations(pose)
    spine = rot[0] @ rot[1]  # lean sideways / forward from the pelvis
    upper = spine @ rot[2]  # chest, twisted against the hips
    head_axes = upper @ rot[3] @ rot[4] @ rot[5]
    thorax = spine[:, 1] * props.spine
    head = thorax + upper @ np.array([0.0, props.neck, 0.012])
    limb = rot[6:].reshape(2, 9, 3, 3)  # left, right; a rotation's columns are its images of the axes
    arm = limb[:, 0] @ limb[:, 1] @ limb[:, 2]
    fore = arm @ limb[:, 3]
    leg = limb[:, 4] @ limb[:, 5] @ limb[:, 6]
    shin = leg @ limb[:, 7]
    foot = shin @ limb[:, 8]
    shoulder = thorax + (_MIRROR * [props.shoulder_width, 0.0, 0.0]) @ upper.T
    elbow = shoulder - (_MIRROR * arm[:, :, 1]) @ upper.T * props.upper_arm  # R @ (0, -1, 0) = -R[:, 1]
    wrist = elbow - (_MIRROR * fore[:, :, 1]) @ upper.T * props.forearm
    hand = wrist - (_MIRROR * fore[:, :, 1]) @ upper.T * props.hand
    hip = _MIRROR * [props.hip_width, 0.0, 0.0]
    knee = hip - _MIRROR * leg[:, :, 1] * props.thigh
    ankle = knee - _MIRROR * shin[:, :, 1] * props.shin
    toe = ankle + _MIRROR * foot[:, :, 2] * props.foot
    radii = np.asarray(props.head)
    face = head + (_FACE_DIRS * _FACE_OUT[:, None] * radii) @ head_axes.T
    normals = _FACE_DIRS / radii  # ellipsoid normals at the landmarks, head frame
    normals = (normals / np.linalg.norm(normals, axis=1, keepdims=True)) @ head_axes.T
    head_top = head + head_axes[:, 1] * radii[1]
    upper_neck = thorax + UPPER_NECK * (head - thorax)
    rings = np.stack(
        [
            _ring(thorax - upper[:, 1] * 0.02, upper, props.chest[0], props.chest[1] * 0.8),
            _ring(thorax - upper[:, 1] * 0.10, upper, props.chest[0] * 0.95, props.chest[1]),
            _ring(spine[:, 1] * 0.11, spine, *props.waist),
            _ring(np.array([0.0, -0.02, 0.0]), np.eye(3), *props.hips),
            _ring(np.array([0.0, -0.075, 0.0]), np.eye(3), props.hips[0] * 0.6, props.hips[1] * 0.7),
        ]
    )
    return Figure(
        points=np.concatenate(
            [
                [np.zeros(3), thorax, head],
                shoulder,
                elbow,
                wrist,
                hand,
                hip,
                knee,
                ankle,
                toe,
                face,
                [head_top, upper_neck],
            ]
        ),
        face_normals=normals,
        head_axes=head_axes,
        rings=rings,
        props=props,
    )
