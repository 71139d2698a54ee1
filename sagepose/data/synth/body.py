"""Articulated 3D figure: proportions and forward kinematics from joint angles.

Body frame, in units of standing height, origin at the pelvis: ``x`` = the person's
left, ``y`` = up, ``z`` = forward (the way the person faces). Angles are degrees.
Limbs are posed for the left side and mirrored (x -> -x) for the right, so both sides
share one set of joint-angle conventions (see :mod:`sagepose.data.synth.poses`). The
camera (yaw, tilt, roll, scale) is applied by the renderer; nothing here knows pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sagepose.data.synth.poses import SIDED

# Named 3D points of a posed figure, in this order.
POINTS = (
    "pelvis",
    "thorax",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "left_hand",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "right_hand",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_toe",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_toe",
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "head_top",
    "upper_neck",
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


def _cs(deg: float) -> tuple[float, float]:
    rad = math.radians(deg)
    return math.cos(rad), math.sin(rad)


def _rx(deg: float) -> np.ndarray:
    """Flexion: turns a downward vector (0, -1, 0) forward, towards +z."""
    c, s = _cs(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def _ry(deg: float) -> np.ndarray:
    c, s = _cs(deg)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(deg: float) -> np.ndarray:
    """Abduction: turns a downward vector (0, -1, 0) towards +x (the left side)."""
    c, s = _cs(deg)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_UP = np.array([0.0, 1.0, 0.0])
_MIRROR = np.array([-1.0, 1.0, 1.0])


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
    pts = {"pelvis": np.zeros(3)}
    spine = _rz(pose["torso_side"]) @ _rx(-pose["torso_pitch"])  # lean forward / sideways from the pelvis
    upper = spine @ _ry(pose["torso_twist"])
    pts["thorax"] = spine @ (_UP * props.spine)
    head_axes = upper @ _ry(pose["head_yaw"]) @ _rx(-pose["head_pitch"]) @ _rz(pose["head_roll"])
    pts["head"] = pts["thorax"] + upper @ np.array([0.0, props.neck, 0.012])
    for side, mirror in (("left", np.ones(3)), ("right", _MIRROR)):
        a = {k: pose[f"{side}_{k}"] for k in SIDED}
        # a rotation's columns are the images of the axes: R @ (0, -1, 0) == -R[:, 1]
        arm = _rx(a["shoulder_flex"]) @ _rz(a["shoulder_abd"]) @ _ry(-a["arm_twist"])
        fore = arm @ _rx(a["elbow"])
        shoulder = pts["thorax"] + upper @ (mirror * [props.shoulder_width, 0.0, 0.0])
        pts[f"{side}_shoulder"] = shoulder
        pts[f"{side}_elbow"] = elbow = shoulder - upper @ (mirror * arm[:, 1]) * props.upper_arm
        pts[f"{side}_wrist"] = wrist = elbow - upper @ (mirror * fore[:, 1]) * props.forearm
        pts[f"{side}_hand"] = wrist - upper @ (mirror * fore[:, 1]) * props.hand
        leg = _rx(a["hip_flex"]) @ _rz(a["hip_abd"]) @ _ry(-a["leg_twist"])
        shin = leg @ _rx(-a["knee"])
        pts[f"{side}_hip"] = hip = mirror * np.array([props.hip_width, 0.0, 0.0])
        pts[f"{side}_knee"] = knee = hip - mirror * leg[:, 1] * props.thigh
        pts[f"{side}_ankle"] = ankle = knee - mirror * shin[:, 1] * props.shin
        pts[f"{side}_toe"] = ankle + mirror * (shin @ _rx(-a["ankle"]))[:, 2] * props.foot
    radii = np.asarray(props.head)
    for name, offset in zip(FACE, (_FACE_DIRS * _FACE_OUT[:, None] * radii) @ head_axes.T):
        pts[name] = pts["head"] + offset
    normals = _FACE_DIRS / radii  # ellipsoid normals at the landmarks, head frame
    normals = (normals / np.linalg.norm(normals, axis=1, keepdims=True)) @ head_axes.T
    pts["head_top"] = pts["head"] + head_axes @ (_UP * radii[1])
    pts["upper_neck"] = pts["thorax"] + UPPER_NECK * (pts["head"] - pts["thorax"])
    rings = np.stack(
        [
            _ring(pts["thorax"] + upper @ [0, -0.02, 0], upper, props.chest[0], props.chest[1] * 0.8),
            _ring(pts["thorax"] + upper @ [0, -0.10, 0], upper, props.chest[0] * 0.95, props.chest[1]),
            _ring(spine @ (_UP * 0.11), spine, *props.waist),
            _ring(np.array([0.0, -0.02, 0.0]), np.eye(3), *props.hips),
            _ring(np.array([0.0, -0.075, 0.0]), np.eye(3), props.hips[0] * 0.6, props.hips[1] * 0.7),
        ]
    )
    return Figure(
        points=np.stack([pts[n] for n in POINTS]),
        face_normals=normals,
        head_axes=head_axes,
        rings=rings,
        props=props,
    )
