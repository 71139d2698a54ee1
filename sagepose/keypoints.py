"""Keypoint schemas as data: names, flip pairs, skeleton, OKS sigmas, joint weights.

A schema is one frozen dataclass; adding a custom skeleton means writing one such
object (or one YAML block read by :func:`schema_from_dict`), nothing else. The
numbers for the public datasets are those of MMPose's dataset metainfo files, so
evaluation and loss weighting match published results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    joint_weights: tuple[float, ...]
    upper_body: tuple[int, ...] = field(default=())
    # (schema name, another name a released annotation file uses for that keypoint)
    aliases: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        k = len(self.keypoints)
        for what in ("sigmas", "joint_weights"):
            if len(getattr(self, what)) != k:
                raise ValueError(f"schema {self.name}: {what} has {len(getattr(self, what))} entries, "
                                 f"expected {k}")
        for a, b in (*self.flip_pairs, *self.skeleton):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"schema {self.name}: index pair ({a}, {b}) out of range for {k} keypoints")
        if len(set(self.keypoints)) != k:
            raise ValueError(f"schema {self.name}: duplicate keypoint names")
        for name, _ in self.aliases:
            if name not in self.keypoints:
                raise ValueError(f"schema {self.name}: alias for unknown keypoint {name!r}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_indices(self) -> list[int]:
        """Permutation that maps each joint to its mirror (identity for centre joints)."""
        idx = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            idx[a], idx[b] = b, a
        return idx

    @property
    def lower_body(self) -> tuple[int, ...]:
        upper = set(self.upper_body)
        return tuple(i for i in range(self.num_keypoints) if i not in upper)

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"schema {self.name} has no keypoint {name!r}") from None

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, np.float64)

    def name_mismatches(self, names) -> list[tuple[int, str, str]]:
        """(position, schema name, given name) where a dataset's keypoint names (in order) differ from this schema's.

        Names are compared up to case, spaces, hyphens and underscores ('Head top' is 'head_top'), and an
        alias of the schema's counts as its name; ``names`` has one per keypoint of the schema. A schema
        named only by placeholders (``kp0``, ``kp1``, ...: a bare keypoint count) matches any names.
        """
        if len(names) != self.num_keypoints:
            raise ValueError(f"schema {self.name} has {self.num_keypoints} keypoints, got {len(names)} names")
        if self.keypoints == tuple(f"kp{i}" for i in range(self.num_keypoints)):
            return []
        known = {name: {_plain(name)} for name in self.keypoints}
        for name, alias in self.aliases:
            known[name].add(_plain(alias))
        return [(i, a, str(b)) for i, (a, b) in enumerate(zip(self.keypoints, names)) if _plain(b) not in known[a]]


def _plain(name) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


COCO17 = KeypointSchema(
    name="coco",
    keypoints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
               "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
              (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
)

MPII16 = KeypointSchema(
    name="mpii",
    keypoints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
               "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
               "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12),
              (12, 11), (11, 10), (8, 13), (13, 14), (14, 15)),
    sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072,
            0.179, 0.179, 0.072, 0.062),
    joint_weights=(1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

AIC14 = KeypointSchema(
    name="aic",
    keypoints=("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
               "left_ankle", "head_top", "neck"),
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 9), (7, 10), (8, 11)),
    skeleton=((2, 1), (1, 0), (0, 13), (13, 3), (3, 4), (4, 5), (8, 7), (7, 6), (6, 9), (9, 10),
              (10, 11), (12, 13), (0, 6), (3, 9)),
    sigmas=(0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
            0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173),
    joint_weights=(1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5, 1.0, 1.0),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

CROWDPOSE14 = KeypointSchema(
    name="crowdpose",
    keypoints=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
               "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
               "right_ankle", "top_head", "neck"),
    aliases=(("top_head", "head"),),  # MMPose's name vs the CrowdPose json's
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeleton=((10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3),
              (2, 4), (3, 5), (12, 13), (1, 13), (0, 13)),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
            0.079, 0.079),
    # MMPose's crowdpose metainfo weights, kept verbatim for parity.
    joint_weights=(0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

SCHEMAS: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, MPII16, AIC14, CROWDPOSE14)}


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    if isinstance(name, KeypointSchema):
        return name
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint schema {name!r}; known: {sorted(SCHEMAS)}") from None


def schema_from_dict(d: dict) -> KeypointSchema:
    """Build a custom schema from a plain dict (e.g. a YAML block)."""
    k = len(d["keypoints"])
    return KeypointSchema(
        name=d["name"],
        keypoints=tuple(d["keypoints"]),
        flip_pairs=tuple(tuple(p) for p in d.get("flip_pairs", ())),
        skeleton=tuple(tuple(p) for p in d.get("skeleton", ())),
        sigmas=tuple(d.get("sigmas", (0.05,) * k)),
        joint_weights=tuple(d.get("joint_weights", (1.0,) * k)),
        upper_body=tuple(d.get("upper_body", ())),
        aliases=tuple(tuple(p) for p in d.get("aliases", ())),
    )
