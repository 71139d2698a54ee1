"""Keypoint schemas as data: names, flip pairs, skeleton, OKS sigmas, joint weights.

A schema is one frozen dataclass; adding a custom skeleton means writing one such
object (or one YAML block read by :func:`schema_from_dict`), nothing else. The
numbers for the public datasets are those of MMPose's dataset metainfo files, so
evaluation and loss weighting match published results.

A schema can also come from data (:func:`load_schema`): a COCO keypoint json's category or a YAML
file. OKS sigmas are optional (``sigmas=()``: none, so no OKS AP -- pixel metrics only); flip pairs
missing from a file are inferred from left/right names (:func:`infer_flip_pairs`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sagepose.errors import SagePoseError


class SchemaError(SagePoseError, ValueError):
    """A schema spec that names no built-in schema or readable schema file, or a file whose schema is unusable;
    the message starts with the spec or the file."""


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based index pairs
    sigmas: tuple[float, ...] = ()  # OKS sigmas; () = none (no OKS AP for this schema)
    joint_weights: tuple[float, ...] = ()  # () = all ones
    upper_body: tuple[int, ...] = field(default=())
    # (schema name, another name a released annotation file uses for that keypoint)
    aliases: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        k = len(self.keypoints)
        if not self.joint_weights:
            object.__setattr__(self, "joint_weights", (1.0,) * k)
        for what in ("sigmas", "joint_weights"):
            if what == "sigmas" and not self.sigmas:
                continue
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

    @property
    def has_sigmas(self) -> bool:
        """Whether the schema has OKS sigmas (then COCO OKS AP can score it)."""
        return bool(self.sigmas)

    def sigmas_array(self) -> np.ndarray:
        if not self.sigmas:
            raise ValueError(f"schema {self.name} has no OKS sigmas: OKS AP and OKS-NMS do not apply to it "
                             "(pixel metrics do); give 'sigmas' in its schema file to enable them")
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

# COCO-WholeBody (Jin et al., ECCV 2020): body 17 + feet 6 + face 68 + left hand 21 + right hand 21, as MMPose 1.3.2's
# configs/_base_/datasets/coco_wholebody.py (joint weights all 1 there). upper_body: the body's upper joints (0-10)
# plus face and hands; MMPose's own upper_body_ids hold only 0-10 (face and hands have no type there).
COCO_WHOLEBODY133 = KeypointSchema(
    name="coco_wholebody",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
        "left_ankle", "right_ankle", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
        "right_small_toe", "right_heel", "face-0", "face-1", "face-2", "face-3", "face-4", "face-5", "face-6",
        "face-7", "face-8", "face-9", "face-10", "face-11", "face-12", "face-13", "face-14", "face-15", "face-16",
        "face-17", "face-18", "face-19", "face-20", "face-21", "face-22", "face-23", "face-24", "face-25",
        "face-26", "face-27", "face-28", "face-29", "face-30", "face-31", "face-32", "face-33", "face-34",
        "face-35", "face-36", "face-37", "face-38", "face-39", "face-40", "face-41", "face-42", "face-43",
        "face-44", "face-45", "face-46", "face-47", "face-48", "face-49", "face-50", "face-51", "face-52",
        "face-53", "face-54", "face-55", "face-56", "face-57", "face-58", "face-59", "face-60", "face-61",
        "face-62", "face-63", "face-64", "face-65", "face-66", "face-67", "left_hand_root", "left_thumb1",
        "left_thumb2", "left_thumb3", "left_thumb4", "left_forefinger1", "left_forefinger2", "left_forefinger3",
        "left_forefinger4", "left_middle_finger1", "left_middle_finger2", "left_middle_finger3",
        "left_middle_finger4", "left_ring_finger1", "left_ring_finger2", "left_ring_finger3", "left_ring_finger4",
        "left_pinky_finger1", "left_pinky_finger2", "left_pinky_finger3", "left_pinky_finger4", "right_hand_root",
        "right_thumb1", "right_thumb2", "right_thumb3", "right_thumb4", "right_forefinger1", "right_forefinger2",
        "right_forefinger3", "right_forefinger4", "right_middle_finger1", "right_middle_finger2",
        "right_middle_finger3", "right_middle_finger4", "right_ring_finger1", "right_ring_finger2",
        "right_ring_finger3", "right_ring_finger4", "right_pinky_finger1", "right_pinky_finger2",
        "right_pinky_finger3", "right_pinky_finger4"),
    flip_pairs=(
        (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 20), (18, 21), (19, 22),
        (23, 39), (24, 38), (25, 37), (26, 36), (27, 35), (28, 34), (29, 33), (30, 32), (40, 49), (41, 48),
        (42, 47), (43, 46), (44, 45), (54, 58), (55, 57), (59, 68), (60, 67), (61, 66), (62, 65), (63, 70),
        (64, 69), (71, 77), (72, 76), (73, 75), (78, 82), (79, 81), (83, 87), (84, 86), (88, 90), (91, 112),
        (92, 113), (93, 114), (94, 115), (95, 116), (96, 117), (97, 118), (98, 119), (99, 120), (100, 121),
        (101, 122), (102, 123), (103, 124), (104, 125), (105, 126), (106, 127), (107, 128), (108, 129), (109, 130),
        (110, 131), (111, 132)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
        (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (15, 17), (15, 18), (15, 19), (16, 20), (16, 21),
        (16, 22), (91, 92), (92, 93), (93, 94), (94, 95), (91, 96), (96, 97), (97, 98), (98, 99), (91, 100),
        (100, 101), (101, 102), (102, 103), (91, 104), (104, 105), (105, 106), (106, 107), (91, 108), (108, 109),
        (109, 110), (110, 111), (112, 113), (113, 114), (114, 115), (115, 116), (112, 117), (117, 118), (118, 119),
        (119, 120), (112, 121), (121, 122), (122, 123), (123, 124), (112, 125), (125, 126), (126, 127), (127, 128),
        (112, 129), (129, 130), (130, 131), (131, 132)),
    sigmas=(
        0.026000000536441803, 0.02500000037252903, 0.02500000037252903, 0.03500000014901161, 0.03500000014901161,
        0.07900000363588333, 0.07900000363588333, 0.07199999690055847, 0.07199999690055847, 0.06199999898672104,
        0.06199999898672104, 0.10700000077486038, 0.10700000077486038, 0.08699999749660492, 0.08699999749660492,
        0.08900000154972076, 0.08900000154972076, 0.06800000369548798, 0.06599999964237213, 0.06599999964237213,
        0.09200000017881393, 0.09399999678134918, 0.09399999678134918, 0.041999999433755875, 0.0430000014603138,
        0.04399999976158142, 0.0430000014603138, 0.03999999910593033, 0.03500000014901161, 0.03099999949336052,
        0.02500000037252903, 0.019999999552965164, 0.023000000044703484, 0.028999999165534973, 0.03200000151991844,
        0.03700000047683716, 0.03799999877810478, 0.0430000014603138, 0.04100000113248825, 0.04500000178813934,
        0.013000000268220901, 0.012000000104308128, 0.010999999940395355, 0.010999999940395355,
        0.012000000104308128, 0.012000000104308128, 0.010999999940395355, 0.010999999940395355,
        0.013000000268220901, 0.014999999664723873, 0.008999999612569809, 0.007000000216066837,
        0.007000000216066837, 0.007000000216066837, 0.012000000104308128, 0.008999999612569809, 0.00800000037997961,
        0.01600000075995922, 0.009999999776482582, 0.017000000923871994, 0.010999999940395355, 0.008999999612569809,
        0.010999999940395355, 0.008999999612569809, 0.007000000216066837, 0.013000000268220901, 0.00800000037997961,
        0.010999999940395355, 0.012000000104308128, 0.009999999776482582, 0.03400000184774399, 0.00800000037997961,
        0.00800000037997961, 0.008999999612569809, 0.00800000037997961, 0.00800000037997961, 0.007000000216066837,
        0.009999999776482582, 0.00800000037997961, 0.008999999612569809, 0.008999999612569809, 0.008999999612569809,
        0.007000000216066837, 0.007000000216066837, 0.00800000037997961, 0.010999999940395355, 0.00800000037997961,
        0.00800000037997961, 0.00800000037997961, 0.009999999776482582, 0.00800000037997961, 0.028999999165534973,
        0.02199999988079071, 0.03500000014901161, 0.03700000047683716, 0.04699999839067459, 0.026000000536441803,
        0.02500000037252903, 0.024000000208616257, 0.03500000014901161, 0.017999999225139618, 0.024000000208616257,
        0.02199999988079071, 0.026000000536441803, 0.017000000923871994, 0.020999999716877937, 0.020999999716877937,
        0.03200000151991844, 0.019999999552965164, 0.01899999938905239, 0.02199999988079071, 0.03099999949336052,
        0.028999999165534973, 0.02199999988079071, 0.03500000014901161, 0.03700000047683716, 0.04699999839067459,
        0.026000000536441803, 0.02500000037252903, 0.024000000208616257, 0.03500000014901161, 0.017999999225139618,
        0.024000000208616257, 0.02199999988079071, 0.026000000536441803, 0.017000000923871994, 0.020999999716877937,
        0.020999999716877937, 0.03200000151991844, 0.019999999552965164, 0.01899999938905239, 0.02199999988079071,
        0.03099999949336052),
    upper_body=(*range(11), *range(23, 133)),
)

# Sapiens' Goliath set (Khirodkar et al., ECCV 2024; sapiens pose/configs/_base_/datasets/goliath.py): 344 points
# less the 36 teeth = 308: body 15 (COCO's 17 without the wrists), feet 6, right hand 20 + right wrist, left hand 20
# + left wrist, 7 extra (olecranon, cubital fossa, acromion, neck), face 238 (incl. ears, irises, pupils).
# Flip pairs are Sapiens' swaps; kept for parity: it gives the 18 eyebrow points (9 a side) no swap. Sigmas as Sapiens
# computes them: COCO-WholeBody's for the names both sets share, its custom values for the finger joints next to the
# palm ("*_third_joint") and the 7 extra points, 0.010 for the rest (the face). upper_body: all but hips, knees,
# ankles and feet (indices 9-20).
GOLIATH308 = KeypointSchema(
    name="goliath",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
        "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
        "right_thumb4", "right_thumb3", "right_thumb2", "right_thumb_third_joint", "right_forefinger4",
        "right_forefinger3", "right_forefinger2", "right_forefinger_third_joint", "right_middle_finger4",
        "right_middle_finger3", "right_middle_finger2", "right_middle_finger_third_joint", "right_ring_finger4",
        "right_ring_finger3", "right_ring_finger2", "right_ring_finger_third_joint", "right_pinky_finger4",
        "right_pinky_finger3", "right_pinky_finger2", "right_pinky_finger_third_joint", "right_wrist",
        "left_thumb4", "left_thumb3", "left_thumb2", "left_thumb_third_joint", "left_forefinger4",
        "left_forefinger3", "left_forefinger2", "left_forefinger_third_joint", "left_middle_finger4",
        "left_middle_finger3", "left_middle_finger2", "left_middle_finger_third_joint", "left_ring_finger4",
        "left_ring_finger3", "left_ring_finger2", "left_ring_finger_third_joint", "left_pinky_finger4",
        "left_pinky_finger3", "left_pinky_finger2", "left_pinky_finger_third_joint", "left_wrist", "left_olecranon",
        "right_olecranon", "left_cubital_fossa", "right_cubital_fossa", "left_acromion", "right_acromion", "neck",
        "center_of_glabella", "center_of_nose_root", "tip_of_nose_bridge", "midpoint_1_of_nose_bridge",
        "midpoint_2_of_nose_bridge", "midpoint_3_of_nose_bridge", "center_of_labiomental_groove", "tip_of_chin",
        "upper_startpoint_of_r_eyebrow", "lower_startpoint_of_r_eyebrow", "end_of_r_eyebrow",
        "upper_midpoint_1_of_r_eyebrow", "lower_midpoint_1_of_r_eyebrow", "upper_midpoint_2_of_r_eyebrow",
        "upper_midpoint_3_of_r_eyebrow", "lower_midpoint_2_of_r_eyebrow", "lower_midpoint_3_of_r_eyebrow",
        "upper_startpoint_of_l_eyebrow", "lower_startpoint_of_l_eyebrow", "end_of_l_eyebrow",
        "upper_midpoint_1_of_l_eyebrow", "lower_midpoint_1_of_l_eyebrow", "upper_midpoint_2_of_l_eyebrow",
        "upper_midpoint_3_of_l_eyebrow", "lower_midpoint_2_of_l_eyebrow", "lower_midpoint_3_of_l_eyebrow",
        "l_inner_end_of_upper_lash_line", "l_outer_end_of_upper_lash_line", "l_centerpoint_of_upper_lash_line",
        "l_midpoint_2_of_upper_lash_line", "l_midpoint_1_of_upper_lash_line", "l_midpoint_6_of_upper_lash_line",
        "l_midpoint_5_of_upper_lash_line", "l_midpoint_4_of_upper_lash_line", "l_midpoint_3_of_upper_lash_line",
        "l_outer_end_of_upper_eyelid_line", "l_midpoint_6_of_upper_eyelid_line",
        "l_midpoint_2_of_upper_eyelid_line", "l_midpoint_5_of_upper_eyelid_line",
        "l_centerpoint_of_upper_eyelid_line", "l_midpoint_4_of_upper_eyelid_line",
        "l_midpoint_1_of_upper_eyelid_line", "l_midpoint_3_of_upper_eyelid_line",
        "l_midpoint_6_of_upper_crease_line", "l_midpoint_2_of_upper_crease_line",
        "l_midpoint_5_of_upper_crease_line", "l_centerpoint_of_upper_crease_line",
        "l_midpoint_4_of_upper_crease_line", "l_midpoint_1_of_upper_crease_line",
        "l_midpoint_3_of_upper_crease_line", "r_inner_end_of_upper_lash_line", "r_outer_end_of_upper_lash_line",
        "r_centerpoint_of_upper_lash_line", "r_midpoint_1_of_upper_lash_line", "r_midpoint_2_of_upper_lash_line",
        "r_midpoint_3_of_upper_lash_line", "r_midpoint_4_of_upper_lash_line", "r_midpoint_5_of_upper_lash_line",
        "r_midpoint_6_of_upper_lash_line", "r_outer_end_of_upper_eyelid_line", "r_midpoint_3_of_upper_eyelid_line",
        "r_midpoint_1_of_upper_eyelid_line", "r_midpoint_4_of_upper_eyelid_line",
        "r_centerpoint_of_upper_eyelid_line", "r_midpoint_5_of_upper_eyelid_line",
        "r_midpoint_2_of_upper_eyelid_line", "r_midpoint_6_of_upper_eyelid_line",
        "r_midpoint_3_of_upper_crease_line", "r_midpoint_1_of_upper_crease_line",
        "r_midpoint_4_of_upper_crease_line", "r_centerpoint_of_upper_crease_line",
        "r_midpoint_5_of_upper_crease_line", "r_midpoint_2_of_upper_crease_line",
        "r_midpoint_6_of_upper_crease_line", "l_inner_end_of_lower_lash_line", "l_outer_end_of_lower_lash_line",
        "l_centerpoint_of_lower_lash_line", "l_midpoint_2_of_lower_lash_line", "l_midpoint_1_of_lower_lash_line",
        "l_midpoint_6_of_lower_lash_line", "l_midpoint_5_of_lower_lash_line", "l_midpoint_4_of_lower_lash_line",
        "l_midpoint_3_of_lower_lash_line", "l_outer_end_of_lower_eyelid_line", "l_midpoint_6_of_lower_eyelid_line",
        "l_midpoint_2_of_lower_eyelid_line", "l_midpoint_5_of_lower_eyelid_line",
        "l_centerpoint_of_lower_eyelid_line", "l_midpoint_4_of_lower_eyelid_line",
        "l_midpoint_1_of_lower_eyelid_line", "l_midpoint_3_of_lower_eyelid_line", "r_inner_end_of_lower_lash_line",
        "r_outer_end_of_lower_lash_line", "r_centerpoint_of_lower_lash_line", "r_midpoint_1_of_lower_lash_line",
        "r_midpoint_2_of_lower_lash_line", "r_midpoint_3_of_lower_lash_line", "r_midpoint_4_of_lower_lash_line",
        "r_midpoint_5_of_lower_lash_line", "r_midpoint_6_of_lower_lash_line", "r_outer_end_of_lower_eyelid_line",
        "r_midpoint_3_of_lower_eyelid_line", "r_midpoint_1_of_lower_eyelid_line",
        "r_midpoint_4_of_lower_eyelid_line", "r_centerpoint_of_lower_eyelid_line",
        "r_midpoint_5_of_lower_eyelid_line", "r_midpoint_2_of_lower_eyelid_line",
        "r_midpoint_6_of_lower_eyelid_line", "tip_of_nose", "bottom_center_of_nose", "r_outer_corner_of_nose",
        "l_outer_corner_of_nose", "inner_corner_of_r_nostril", "outer_corner_of_r_nostril",
        "upper_corner_of_r_nostril", "inner_corner_of_l_nostril", "outer_corner_of_l_nostril",
        "upper_corner_of_l_nostril", "r_outer_corner_of_mouth", "l_outer_corner_of_mouth", "center_of_cupid_bow",
        "center_of_lower_outer_lip", "midpoint_1_of_upper_outer_lip", "midpoint_2_of_upper_outer_lip",
        "midpoint_1_of_lower_outer_lip", "midpoint_2_of_lower_outer_lip", "midpoint_3_of_upper_outer_lip",
        "midpoint_4_of_upper_outer_lip", "midpoint_5_of_upper_outer_lip", "midpoint_6_of_upper_outer_lip",
        "midpoint_3_of_lower_outer_lip", "midpoint_4_of_lower_outer_lip", "midpoint_5_of_lower_outer_lip",
        "midpoint_6_of_lower_outer_lip", "r_inner_corner_of_mouth", "l_inner_corner_of_mouth",
        "center_of_upper_inner_lip", "center_of_lower_inner_lip", "midpoint_1_of_upper_inner_lip",
        "midpoint_2_of_upper_inner_lip", "midpoint_1_of_lower_inner_lip", "midpoint_2_of_lower_inner_lip",
        "midpoint_3_of_upper_inner_lip", "midpoint_4_of_upper_inner_lip", "midpoint_5_of_upper_inner_lip",
        "midpoint_6_of_upper_inner_lip", "midpoint_3_of_lower_inner_lip", "midpoint_4_of_lower_inner_lip",
        "midpoint_5_of_lower_inner_lip", "midpoint_6_of_lower_inner_lip", "l_top_end_of_inferior_crus",
        "l_top_end_of_superior_crus", "l_start_of_antihelix", "l_end_of_antihelix", "l_midpoint_1_of_antihelix",
        "l_midpoint_1_of_inferior_crus", "l_midpoint_2_of_antihelix", "l_midpoint_3_of_antihelix",
        "l_point_1_of_inner_helix", "l_point_2_of_inner_helix", "l_point_3_of_inner_helix",
        "l_point_4_of_inner_helix", "l_point_5_of_inner_helix", "l_point_6_of_inner_helix",
        "l_point_7_of_inner_helix", "l_highest_point_of_antitragus", "l_bottom_point_of_tragus",
        "l_protruding_point_of_tragus", "l_top_point_of_tragus", "l_start_point_of_crus_of_helix",
        "l_deepest_point_of_concha", "l_tip_of_ear_lobe", "l_midpoint_between_22_15",
        "l_bottom_connecting_point_of_ear_lobe", "l_top_connecting_point_of_helix", "l_point_8_of_inner_helix",
        "r_top_end_of_inferior_crus", "r_top_end_of_superior_crus", "r_start_of_antihelix", "r_end_of_antihelix",
        "r_midpoint_1_of_antihelix", "r_midpoint_1_of_inferior_crus", "r_midpoint_2_of_antihelix",
        "r_midpoint_3_of_antihelix", "r_point_1_of_inner_helix", "r_point_8_of_inner_helix",
        "r_point_3_of_inner_helix", "r_point_4_of_inner_helix", "r_point_5_of_inner_helix",
        "r_point_6_of_inner_helix", "r_point_7_of_inner_helix", "r_highest_point_of_antitragus",
        "r_bottom_point_of_tragus", "r_protruding_point_of_tragus", "r_top_point_of_tragus",
        "r_start_point_of_crus_of_helix", "r_deepest_point_of_concha", "r_tip_of_ear_lobe",
        "r_midpoint_between_22_15", "r_bottom_connecting_point_of_ear_lobe", "r_top_connecting_point_of_helix",
        "r_point_2_of_inner_helix", "l_center_of_iris", "l_border_of_iris_3", "l_border_of_iris_midpoint_1",
        "l_border_of_iris_12", "l_border_of_iris_midpoint_4", "l_border_of_iris_9", "l_border_of_iris_midpoint_3",
        "l_border_of_iris_6", "l_border_of_iris_midpoint_2", "r_center_of_iris", "r_border_of_iris_3",
        "r_border_of_iris_midpoint_1", "r_border_of_iris_12", "r_border_of_iris_midpoint_4", "r_border_of_iris_9",
        "r_border_of_iris_midpoint_3", "r_border_of_iris_6", "r_border_of_iris_midpoint_2", "l_center_of_pupil",
        "l_border_of_pupil_3", "l_border_of_pupil_midpoint_1", "l_border_of_pupil_12",
        "l_border_of_pupil_midpoint_4", "l_border_of_pupil_9", "l_border_of_pupil_midpoint_3",
        "l_border_of_pupil_6", "l_border_of_pupil_midpoint_2", "r_center_of_pupil", "r_border_of_pupil_3",
        "r_border_of_pupil_midpoint_1", "r_border_of_pupil_12", "r_border_of_pupil_midpoint_4",
        "r_border_of_pupil_9", "r_border_of_pupil_midpoint_3", "r_border_of_pupil_6",
        "r_border_of_pupil_midpoint_2"),
    flip_pairs=(
        (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 18), (16, 19), (17, 20), (21, 42),
        (22, 43), (23, 44), (24, 45), (25, 46), (26, 47), (27, 48), (28, 49), (29, 50), (30, 51), (31, 52),
        (32, 53), (33, 54), (34, 55), (35, 56), (36, 57), (37, 58), (38, 59), (39, 60), (40, 61), (41, 62),
        (63, 64), (65, 66), (67, 68), (96, 120), (97, 121), (98, 122), (99, 124), (100, 123), (101, 128),
        (102, 127), (103, 126), (104, 125), (105, 129), (106, 136), (107, 135), (108, 134), (109, 133), (110, 132),
        (111, 131), (112, 130), (113, 143), (114, 142), (115, 141), (116, 140), (117, 139), (118, 138), (119, 137),
        (144, 161), (145, 162), (146, 163), (147, 165), (148, 164), (149, 169), (150, 168), (151, 167), (152, 166),
        (153, 170), (154, 177), (155, 176), (156, 175), (157, 174), (158, 173), (159, 172), (160, 171), (180, 181),
        (182, 185), (183, 186), (184, 187), (188, 189), (204, 205), (220, 246), (221, 247), (222, 248), (223, 249),
        (224, 250), (225, 251), (226, 252), (227, 253), (228, 254), (229, 271), (230, 256), (231, 257), (232, 258),
        (233, 259), (234, 260), (235, 261), (236, 262), (237, 263), (238, 264), (239, 265), (240, 266), (241, 267),
        (242, 268), (243, 269), (244, 270), (245, 255), (272, 281), (273, 282), (274, 283), (275, 284), (276, 285),
        (277, 286), (278, 287), (279, 288), (280, 289), (290, 299), (291, 300), (292, 301), (293, 302), (294, 303),
        (295, 304), (296, 305), (297, 306), (298, 307)),
    skeleton=(
        (13, 11), (11, 9), (14, 12), (12, 10), (9, 10), (5, 9), (6, 10), (5, 6), (5, 7), (6, 8), (7, 62), (8, 41),
        (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (13, 15), (13, 16), (13, 17), (14, 18), (14, 19),
        (14, 20), (62, 45), (45, 44), (44, 43), (43, 42), (62, 49), (49, 48), (48, 47), (47, 46), (62, 53),
        (53, 52), (52, 51), (51, 50), (62, 57), (57, 56), (56, 55), (55, 54), (62, 61), (61, 60), (60, 59),
        (59, 58), (41, 24), (24, 23), (23, 22), (22, 21), (41, 28), (28, 27), (27, 26), (26, 25), (41, 32),
        (32, 31), (31, 30), (30, 29), (41, 36), (36, 35), (35, 34), (34, 33), (41, 40), (40, 39), (39, 38),
        (38, 37)),
    sigmas=(
        0.026000000536441803, 0.02500000037252903, 0.02500000037252903, 0.03500000014901161, 0.03500000014901161,
        0.07900000363588333, 0.07900000363588333, 0.07199999690055847, 0.07199999690055847, 0.10700000077486038,
        0.10700000077486038, 0.08699999749660492, 0.08699999749660492, 0.08900000154972076, 0.08900000154972076,
        0.06800000369548798, 0.06599999964237213, 0.06599999964237213, 0.09200000017881393, 0.09399999678134918,
        0.09399999678134918, 0.04699999839067459, 0.03700000047683716, 0.03500000014901161, 0.022,
        0.03500000014901161, 0.024000000208616257, 0.02500000037252903, 0.026, 0.026000000536441803,
        0.02199999988079071, 0.024000000208616257, 0.018, 0.03200000151991844, 0.020999999716877937,
        0.020999999716877937, 0.017, 0.03099999949336052, 0.02199999988079071, 0.01899999938905239, 0.02,
        0.06199999898672104, 0.04699999839067459, 0.03700000047683716, 0.03500000014901161, 0.022,
        0.03500000014901161, 0.024000000208616257, 0.02500000037252903, 0.026, 0.026000000536441803,
        0.02199999988079071, 0.024000000208616257, 0.018, 0.03200000151991844, 0.020999999716877937,
        0.020999999716877937, 0.017, 0.03099999949336052, 0.02199999988079071, 0.01899999938905239, 0.02,
        0.06199999898672104, 0.072, 0.072, 0.072, 0.072, 0.079, 0.079, 0.079, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01),
    upper_body=(*range(9), *range(21, 308)),
)

# Goliath-308 index of each COCO-17 keypoint, in COCO's order: Sapiens' goliath.py matches the two sets by keypoint
# name (its coco_wholebody_to_goliath_mapping, of which COCO's 17 body names are the first entries); the wrists sit
# at 62 (left) and 41 (right).
GOLIATH_TO_COCO17: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 62, 41, 9, 10, 11, 12, 13, 14)

# PoseTrack18: COCO-17 with the eyes replaced by head_bottom / head_top; names, swaps, skeleton links, weights and
# sigmas from MMPose 1.3.2's configs/_base_/datasets/posetrack18.py
POSETRACK18 = KeypointSchema(
    name="posetrack18",
    keypoints=("nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder",
               "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
               "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
              (6, 8), (7, 9), (8, 10), (0, 1), (0, 2), (1, 5), (1, 6)),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
)


SCHEMAS: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, MPII16, AIC14, CROWDPOSE14, POSETRACK18,
                                                            COCO_WHOLEBODY133, GOLIATH308)}


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    if isinstance(name, KeypointSchema):
        return name
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint schema {name!r}; known: {sorted(SCHEMAS)}") from None


SCHEMA_KEYS = ("name", "keypoints", "flip_pairs", "skeleton", "sigmas", "joint_weights", "upper_body", "aliases")


def schema_from_dict(d: dict, where: str = "schema", infer_flips: bool = False) -> KeypointSchema:
    """Build a custom schema from a plain dict (e.g. a YAML block): ``name``, ``keypoints`` (names), and optionally
    ``flip_pairs`` / ``skeleton`` (pairs of 0-based indices or of names), ``sigmas`` (OKS; absent: none),
    ``joint_weights`` (absent: ones), ``upper_body`` (indices or names), ``aliases``.

    ``infer_flips``: without a ``flip_pairs`` entry, pair left/right names (:func:`infer_flip_pairs`); otherwise
    a schema without one has none. Errors are :class:`SchemaError` s starting with ``where``.
    """
    if not isinstance(d, dict):
        raise SchemaError(f"{where}: expected a mapping with 'name' and 'keypoints', got {type(d).__name__}")
    unknown = sorted(set(d) - set(SCHEMA_KEYS))
    if unknown:
        raise SchemaError(f"{where}: unknown schema keys {unknown}; known: {list(SCHEMA_KEYS)}")
    for key in ("name", "keypoints"):
        if key not in d:
            raise SchemaError(f"{where}: missing {key!r}")
    names = d["keypoints"]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise SchemaError(f"{where}: 'keypoints' must be a non-empty list of names, got {names!r}")
    names = tuple(names)

    def index(value, key: str) -> int:
        if isinstance(value, str):
            if value not in names:
                raise SchemaError(f"{where}: {key} names {value!r}, which is not one of its keypoints")
            return names.index(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise SchemaError(f"{where}: {key} entries are keypoint names or 0-based indices, got {value!r}")

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        out = []
        for p in d.get(key) or ():
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise SchemaError(f"{where}: {key} entries are pairs, got {p!r}")
            out.append((index(p[0], key), index(p[1], key)))
        return tuple(out)

    flip_pairs = pairs("flip_pairs") if "flip_pairs" in d or not infer_flips else infer_flip_pairs(names)
    try:
        return KeypointSchema(
            name=str(d["name"]), keypoints=names, flip_pairs=flip_pairs, skeleton=pairs("skeleton"),
            sigmas=tuple(float(v) for v in d.get("sigmas") or ()),
            joint_weights=tuple(float(v) for v in d.get("joint_weights") or ()),
            upper_body=tuple(index(v, "upper_body") for v in d.get("upper_body") or ()),
            aliases=tuple(tuple(p) for p in d.get("aliases") or ()))
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{where}: {e}") from None


def schema_to_dict(schema: KeypointSchema) -> dict:
    """A schema as plain data (lists, numbers, strings): what a checkpoint stores; :func:`schema_from_dict` reads
    it back to an equal schema."""
    def plain(x):
        return [plain(v) for v in x] if isinstance(x, (list, tuple)) else x
    return {k: plain(v) for k, v in asdict(schema).items()}


# ---- left/right names -------------------------------------------------------------------------------------
# Tokens of a name: a capital run not followed by a lowercase letter ("LH" in paw1LH, "L" in earL), a word
# with an optional capital ("Ear", "paw"), a digit run. Separators (_ - . space) split tokens.
_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SIDE_WORD = re.compile(r"left|right", re.IGNORECASE)
_SWAP = {"l": "r", "r": "l", "L": "R", "R": "L"}


def _mirror_candidates(name: str) -> set[str]:
    """Names (lower case) ``name`` would have on the other side: each ``left`` / ``right`` swapped (any case,
    anywhere: ``leftear``, ``ear_left``), each one-letter token ``l`` / ``r`` (``l_paw``, ``earL``), and each
    ``L`` / ``R`` inside a capital run (``paw1LH`` -> ``paw1RH``), one swap at a time."""
    out = set()
    for m in _SIDE_WORD.finditer(name):
        other = "right" if m.group().lower() == "left" else "left"
        out.add((name[:m.start()] + other + name[m.end():]).lower())
    for m in _TOKEN.finditer(name):
        tok = m.group()
        if tok.lower() in ("l", "r") or tok.isupper():
            for j, ch in enumerate(tok):
                if ch in _SWAP:
                    pos = m.start() + j
                    out.add((name[:pos] + _SWAP[ch] + name[pos + 1:]).lower())
    out.discard(name.lower())
    return out


def infer_flip_pairs(names) -> tuple[tuple[int, int], ...]:
    """Left/right pairs of keypoint ``names`` -> 0-based index pairs ``(i, j)``, ``i < j``, sorted.

    A name's mirror is the other name obtained by one side swap (see :func:`_mirror_candidates`:
    ``left_ear``/``right_ear``, ``leftear``/``rightear``, ``ear_left``, ``l_paw``/``r_paw``, ``earL``/``earR``,
    ``paw1LH``/``paw1RH``), compared case-insensitively. When no name matches exactly, names are compared with
    their digits removed (mirror-mouse's ``paw1LH_top`` / ``paw4RH_top`` number the paws 1-4 around the body).
    Two names pair only when each is the other's one match: a name with several candidates (ambiguous) or none
    stays unpaired, as do centre joints.
    """
    names = [str(n) for n in names]
    lower = [n.lower() for n in names]
    undigit = [re.sub(r"\d+", "", n) for n in lower]

    def partner(i: int) -> int | None:
        cands = _mirror_candidates(names[i])
        exact = [j for j in range(len(names)) if j != i and lower[j] in cands]
        if exact:
            return exact[0] if len(exact) == 1 else None
        loose = {re.sub(r"\d+", "", c) for c in cands}
        near = [j for j in range(len(names)) if j != i and undigit[j] in loose]
        return near[0] if len(near) == 1 else None

    found = [partner(i) for i in range(len(names))]
    return tuple((i, j) for i, j in enumerate(found) if j is not None and i < j and found[j] == i)


def parse_name_pairs(text: str, names, sep: str, what: str = "pairs") -> tuple[tuple[int, int], ...]:
    """``"a:b,c:d"`` (``sep`` ``":"``; skeletons ``"a-b,b-c"`` with ``"-"``) over keypoint ``names`` -> 0-based
    index pairs. A name may itself contain ``sep``: the item is split where both sides are names. Unknown or
    ambiguous items are a ValueError naming the item."""
    names = list(names)
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        splits = [(item[:m.start()].strip(), item[m.end():].strip()) for m in re.finditer(re.escape(sep), item)]
        ok = [(a, b) for a, b in splits if a in names and b in names]
        if len(ok) != 1:
            why = "ambiguous" if ok else f"expected NAME{sep}NAME with both among the keypoints {names}"
            raise ValueError(f"{what} {item!r}: {why}")
        out.append((names.index(ok[0][0]), names.index(ok[0][1])))
    return tuple(out)


# ---- schemas from files -----------------------------------------------------------------------------------
def load_schema(spec) -> KeypointSchema:
    """A schema from a built-in name (:data:`SCHEMAS`), a COCO keypoint json, a YAML schema file, a dict
    (:func:`schema_from_dict`) or a schema (returned as is).

    * COCO json (``.json``): its category with ``keypoints`` (one, or several with the same names); name: the
      category's; ``skeleton`` is 1-based in COCO's official files and 0-based in others: it is read as 1-based
      when an index equals K or none is 0 (a 0-based skeleton that never uses keypoint 0 reads as 1-based:
      write such a one 1-based, as sagepose's DLC import does); ``flip_pairs`` (pairs of names or 0-based
      indices) when the category has them, else inferred from the names (:func:`infer_flip_pairs`);
      ``sigmas`` / ``joint_weights`` when it has them (no sigmas: pixel metrics only). The whole file is read.
    * YAML (``.yaml`` / ``.yml``): what :func:`schema_from_dict` reads, at the top level or under a top-level
      ``schema:`` key; ``name`` defaults to the file's stem, absent ``flip_pairs`` are inferred from the names.

    Errors (:class:`SchemaError`) name the spec or the file.
    """
    if isinstance(spec, KeypointSchema):
        return spec
    if isinstance(spec, dict):
        return schema_from_dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise SchemaError(f"schema {spec!r}: expected a built-in name, a path or a mapping")
    key = os.fspath(spec)
    if key in SCHEMAS:
        return SCHEMAS[key]
    path = Path(key)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SchemaError(f"schema {key!r}: not a built-in schema ({', '.join(sorted(SCHEMAS))}) nor a "
                          ".json / .yaml schema file")
    if not path.is_file():
        raise SchemaError(f"{key}: schema file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{key}: cannot read the schema file ({e})") from None
    if suffix == ".json":
        return _schema_from_coco(key, text)
    return _schema_from_yaml(key, text)


def _schema_from_yaml(path: str, text: str) -> KeypointSchema:
    import yaml  # deferred: only YAML schema files need it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SchemaError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("schema"), dict):
        data = data["schema"]
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a schema mapping (name, keypoints, ...), or one under 'schema:'")
    return schema_from_dict({"name": Path(path).stem, **data}, where=path, infer_flips=True)


def _schema_from_coco(path: str, text: str) -> KeypointSchema:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not valid JSON: {e}") from None
    cats = [c for c in (data.get("categories") or []) if isinstance(c, dict) and c.get("keypoints")] \
        if isinstance(data, dict) else []
    if not cats:
        raise SchemaError(f"{path}: no category with 'keypoints' names: not a COCO keypoint json")
    cat = cats[0]
    if any(list(c["keypoints"]) != list(cat["keypoints"]) for c in cats[1:]):
        raise SchemaError(f"{path}: {len(cats)} categories with different keypoint names; one schema needs one list")
    names, k = list(cat["keypoints"]), len(cat["keypoints"])
    skeleton = cat.get("skeleton") or []
    where = f"{path}: category {cat.get('id', '?')}"
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in skeleton):
        raise SchemaError(f"{where}: 'skeleton' must be pairs of keypoint indices")
    flat = [v for p in skeleton for v in p]
    if flat and (k in flat or 0 not in flat):  # COCO's official files number keypoints from 1
        skeleton = [[a - 1, b - 1] for a, b in skeleton]
    d = {"name": str(cat.get("name") or Path(path).stem), "keypoints": names, "skeleton": skeleton}
    for key in ("flip_pairs", "sigmas", "joint_weights", "upper_body"):
        if key in cat:
            d[key] = cat[key]
    return schema_from_dict(d, where=where, infer_flips=True)
