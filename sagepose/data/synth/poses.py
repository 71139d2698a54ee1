"""Pose distributions: joint angles (degrees) per pose kind, within anatomical limits.

A pose is a flat dict ``{"torso_pitch": ..., "left_knee": ..., ...}`` read by
:func:`sagepose.data.synth.body.pose_figure`. Each kind (standing, walking, sitting,
...) is one small sampler; every sample gets Gaussian jitter and is clipped to
:data:`LIMITS`, so even the widest style never bends a knee forwards.
"""

from __future__ import annotations

import numpy as np

# Joint-angle limits (degrees). Flexion raises a limb forward, abduction sideways,
# twist is internal rotation about the limb axis; knees bend backward, elbows forward.
LIMITS: dict[str, tuple[float, float]] = {
    "torso_pitch": (-20, 70),
    "torso_side": (-30, 30),
    "torso_twist": (-40, 40),
    "head_yaw": (-70, 70),
    "head_pitch": (-35, 40),
    "head_roll": (-25, 25),
    "shoulder_flex": (-60, 180),
    "shoulder_abd": (-10, 175),
    "elbow": (0, 150),
    "arm_twist": (-60, 90),
    "hip_flex": (-30, 125),
    "hip_abd": (-15, 50),
    "knee": (0, 150),
    "leg_twist": (-30, 45),
    "ankle": (-25, 45),
}
SIDED = (
    "shoulder_flex",
    "shoulder_abd",
    "elbow",
    "arm_twist",
    "hip_flex",
    "hip_abd",
    "knee",
    "leg_twist",
    "ankle",
)


_RANGE = LIMITS | {f"{s}_{k}": LIMITS[k] for k in SIDED for s in ("left", "right")}  # every pose key


def _uniform(rng, ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """One uniform draw per named range, in a single generator call."""
    lo, hi = np.array(list(ranges.values()), np.float64).T
    return dict(zip(ranges, (lo + (hi - lo) * rng.random(len(lo))).tolist()))


def _sides(rng, **ranges) -> dict[str, float]:
    """Independent uniform draws per side: ``knee=(0, 12)`` -> left_knee, right_knee."""
    return _uniform(rng, {f"{s}_{k}": r for k, r in ranges.items() for s in ("left", "right")})


def _upright(rng) -> dict[str, float]:
    return _uniform(
        rng,
        dict(
            torso_pitch=(-5, 10),
            torso_side=(-5, 5),
            torso_twist=(-10, 10),
            head_yaw=(-35, 35),
            head_pitch=(-10, 15),
            head_roll=(-8, 8),
        ),
    )


def _stand(rng) -> dict[str, float]:
    pose = _upright(rng) | _sides(
        rng,
        shoulder_flex=(-15, 25),
        shoulder_abd=(4, 25),
        elbow=(0, 45),
        arm_twist=(-10, 40),
        hip_flex=(-5, 10),
        hip_abd=(0, 12),
        knee=(0, 10),
        leg_twist=(-5, 20),
        ankle=(0, 12),
    )
    if rng.random() < 0.4:  # weight on one leg
        pose["left_knee" if rng.random() < 0.5 else "right_knee"] = rng.uniform(10, 30)
    return pose


def _walk(rng) -> dict[str, float]:
    pose = _stand(rng)
    run = rng.random() < 0.3
    swing = rng.uniform(25, 45) if run else rng.uniform(12, 30)
    phase = np.sin(rng.uniform(0, 2 * np.pi))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        hip = sign * swing * phase
        pose[f"{side}_hip_flex"] = hip
        pose[f"{side}_knee"] = rng.uniform(0, 15) + (rng.uniform(20, 70 if run else 45) if hip < 0 else 0)
        pose[f"{side}_shoulder_flex"] = -0.8 * hip
        pose[f"{side}_elbow"] = rng.uniform(70, 100) if run else rng.uniform(5, 40)
    pose["torso_pitch"] = rng.uniform(5, 20) if run else rng.uniform(0, 8)
    return pose


def _arms_up(rng) -> dict[str, float]:
    pose = _stand(rng)
    for side in ("left", "right"):
        choice = rng.integers(5)
        if choice == 0:  # overhead
            flex, abd, elbow = rng.uniform(140, 180), rng.uniform(0, 30), rng.uniform(0, 30)
        elif choice == 1:  # sideways
            flex, abd, elbow = rng.uniform(-10, 20), rng.uniform(70, 110), rng.uniform(0, 40)
        elif choice == 2:  # forward, pointing / holding
            flex, abd, elbow = rng.uniform(60, 110), rng.uniform(0, 30), rng.uniform(0, 90)
        elif choice == 3:  # waving / hand near head
            flex, abd, elbow = rng.uniform(20, 90), rng.uniform(60, 120), rng.uniform(60, 140)
        else:  # left as standing
            continue
        pose[f"{side}_shoulder_flex"], pose[f"{side}_shoulder_abd"], pose[f"{side}_elbow"] = flex, abd, elbow
    return pose


def _sit(rng) -> dict[str, float]:
    return (
        _upright(rng)
        | _sides(
            rng,
            shoulder_flex=(0, 45),
            shoulder_abd=(0, 20),
            elbow=(20, 100),
            arm_twist=(0, 60),
            hip_flex=(70, 100),
            hip_abd=(0, 25),
            knee=(65, 110),
            leg_twist=(-10, 25),
            ankle=(-5, 20),
        )
        | dict(torso_pitch=rng.uniform(-15, 20))
    )


def _crouch(rng) -> dict[str, float]:
    return (
        _upright(rng)
        | _sides(
            rng,
            shoulder_flex=(10, 80),
            shoulder_abd=(0, 30),
            elbow=(20, 110),
            arm_twist=(0, 50),
            hip_flex=(90, 125),
            hip_abd=(5, 35),
            knee=(100, 150),
            leg_twist=(0, 30),
            ankle=(-25, 0),
        )
        | dict(torso_pitch=rng.uniform(20, 55), head_pitch=rng.uniform(-30, 0))
    )


def _kneel(rng) -> dict[str, float]:
    pose = _sit(rng) | dict(torso_pitch=rng.uniform(-5, 15))
    up, down = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    pose[f"{up}_hip_flex"], pose[f"{up}_knee"] = rng.uniform(70, 100), rng.uniform(70, 100)
    pose[f"{down}_hip_flex"], pose[f"{down}_knee"] = rng.uniform(-15, 10), rng.uniform(80, 120)
    return pose


def _lie(rng) -> dict[str, float]:
    pose = _stand(rng) | _sides(
        rng, shoulder_flex=(-20, 180), elbow=(0, 90), hip_flex=(-10, 60), knee=(0, 80)
    )
    return pose | dict(head_yaw=rng.uniform(-60, 60))


def _random(rng) -> dict[str, float]:
    """Anything within the joint limits (sports, dancing, falls)."""
    return _uniform(rng, {k: r for k, r in _RANGE.items() if k not in SIDED})


POSE_KINDS = {
    "stand": _stand,
    "walk": _walk,
    "arms_up": _arms_up,
    "sit": _sit,
    "crouch": _crouch,
    "kneel": _kneel,
    "lie": _lie,
    "random": _random,
}
JITTER = 4.0  # degrees of Gaussian jitter on every angle, times the style's pose_spread


def sample_pose(rng: np.random.Generator, kind: str, spread: float = 1.0) -> dict[str, float]:
    """Joint angles (degrees) of a pose of ``kind``, jittered by ``spread``, clipped to :data:`LIMITS`."""
    try:
        pose = POSE_KINDS[kind](rng)
    except KeyError:
        raise KeyError(f"unknown pose kind {kind!r}; known: {sorted(POSE_KINDS)}") from None
    names = sorted(pose)
    lo, hi = np.array([_RANGE[n] for n in names]).T
    angles = np.clip(
        np.array([pose[n] for n in names]) + rng.normal(0.0, JITTER * spread, len(names)), lo, hi
    )
    return dict(zip(names, angles.tolist()))
