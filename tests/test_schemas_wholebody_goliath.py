"""COCO-WholeBody 133 and Sapiens' Goliath 308 schemas: counts, flips, the Goliath -> COCO-17 map, MMPose's metainfo
(golden from tools/make_schema_goldens.py) and the dict round trip."""
import json
import re
from pathlib import Path

import pytest

from sagepose.keypoints import (
    COCO17,
    COCO_WHOLEBODY133,
    GOLIATH308,
    GOLIATH_TO_COCO17,
    load_schema,
    schema_from_dict,
    schema_to_dict,
)

GOLDEN = Path(__file__).parent / "data" / "schema_goldens" / "coco_wholebody.json"
BOTH = [COCO_WHOLEBODY133, GOLIATH308]


def _mirror_names(name: str) -> set[str]:
    """Independent of the module: the names ``name`` has on the other side (left_/right_, l_/r_, _of_l_/_of_r_)."""
    out = set()
    for a, b in (("left", "right"), ("right", "left"), ("l", "r"), ("r", "l")):
        out.add(re.sub(rf"(^|_){a}(_)", rf"\g<1>{b}\2", name, count=1))
    out.discard(name)
    return out


def test_registered_under_their_names_with_the_published_counts():
    assert load_schema("coco_wholebody") is COCO_WHOLEBODY133 and load_schema("goliath") is GOLIATH308
    assert load_schema("goliath") is GOLIATH308
    assert COCO_WHOLEBODY133.num_keypoints == 133 and GOLIATH308.num_keypoints == 308
    assert len(COCO_WHOLEBODY133.sigmas) == 133 and len(GOLIATH308.sigmas) == 308
    assert set(COCO_WHOLEBODY133.joint_weights) == {1.0} and set(GOLIATH308.joint_weights) == {1.0}
    assert not any(n.startswith("teeth") for n in GOLIATH308.keypoints)  # Sapiens drops its 36 teeth points


@pytest.mark.parametrize("schema", BOTH, ids=lambda s: s.name)
def test_flip_pairs_are_disjoint_pairs_of_distinct_indices_and_flip_is_an_involution(schema):
    flat = [i for p in schema.flip_pairs for i in p]
    assert all(a != b for a, b in schema.flip_pairs)
    assert len(flat) == len(set(flat))  # each joint in at most one pair
    idx = schema.flip_indices
    assert sorted(idx) == list(range(schema.num_keypoints))
    assert [idx[i] for i in idx] == list(range(schema.num_keypoints))


@pytest.mark.parametrize("schema", BOTH, ids=lambda s: s.name)
def test_flip_pairs_with_side_names_pair_a_name_with_its_mirror(schema):
    names = schema.keypoints
    for a, b in schema.flip_pairs:
        if names[a].startswith("face-"):  # COCO-WholeBody's face points are numbered, not sided
            continue
        assert names[b] in _mirror_names(names[a]), (names[a], names[b])


def test_goliath_leaves_only_the_eyebrows_of_its_sided_names_unflipped():
    paired = {i for p in GOLIATH308.flip_pairs for i in p}
    sided = {i for i, n in enumerate(GOLIATH308.keypoints) if set(_mirror_names(n)) & set(GOLIATH308.keypoints)}
    assert {GOLIATH308.keypoints[i] for i in sided - paired} == {
        f"{part}_of_{s}_eyebrow" for s in "lr" for part in (
            "upper_startpoint", "lower_startpoint", "end", "upper_midpoint_1", "lower_midpoint_1", "upper_midpoint_2",
            "upper_midpoint_3", "lower_midpoint_2", "lower_midpoint_3")}
    assert len(GOLIATH308.flip_pairs) == 125


def test_coco_wholebody_equals_mmpose_metainfo():
    g = json.loads(GOLDEN.read_text())
    s = COCO_WHOLEBODY133
    assert g["dataset_name"] == s.name
    assert list(s.keypoints) == g["keypoints"]
    assert s.flip_indices == g["flip_indices"]
    assert [list(p) for p in s.skeleton] == g["skeleton_links"]
    assert list(s.sigmas) == pytest.approx(g["sigmas"], abs=0)
    assert list(s.joint_weights) == g["joint_weights"]
    assert set(g["upper_body_ids"]) <= set(s.upper_body)
    assert set(s.lower_body) == set(g["lower_body_ids"])  # hips, knees, ankles, feet


def test_goliath_sigmas_follow_sapiens_rules():
    wb = dict(zip(COCO_WHOLEBODY133.keypoints, COCO_WHOLEBODY133.sigmas))
    sig = dict(zip(GOLIATH308.keypoints, GOLIATH308.sigmas))
    shared = [n for n in GOLIATH308.keypoints if n in wb]
    assert len(shared) == 17 + 6 + 30  # body, feet, 3 finger joints x 5 fingers x 2 hands
    assert all(sig[n] == wb[n] for n in shared)
    assert sig["neck"] == sig["left_acromion"] == 0.079 and sig["right_olecranon"] == 0.072
    assert sig["left_thumb_third_joint"] == 0.022 and sig["right_pinky_finger_third_joint"] == 0.02
    assert sig["tip_of_chin"] == 0.010 and sig["r_center_of_pupil"] == 0.010


def test_goliath_to_coco17_sends_each_coco_joint_to_the_same_named_goliath_joint():
    assert len(GOLIATH_TO_COCO17) == 17
    assert [GOLIATH308.keypoints[i] for i in GOLIATH_TO_COCO17] == list(COCO17.keypoints)
    assert GOLIATH_TO_COCO17[9] == 62 and GOLIATH_TO_COCO17[10] == 41  # the wrists (REFERENCE-FACTS)
    # flipping commutes with the map: a COCO pair maps onto a Goliath pair
    gflip = GOLIATH308.flip_indices
    assert [gflip[GOLIATH_TO_COCO17[c]] for c in range(17)] == [GOLIATH_TO_COCO17[c] for c in COCO17.flip_indices]


@pytest.mark.parametrize("schema", BOTH, ids=lambda s: s.name)
def test_schema_dict_round_trip(schema):
    d = json.loads(json.dumps(schema_to_dict(schema)))  # through plain JSON, as a checkpoint stores it
    assert schema_from_dict(d) == schema


@pytest.mark.parametrize("schema", BOTH, ids=lambda s: s.name)
def test_skeleton_links_are_distinct_in_range_and_connect_the_body(schema):
    assert len(schema.skeleton) == 65 == len({tuple(sorted(p)) for p in schema.skeleton})
    # hands hang off the wrist in Goliath; COCO-WholeBody's hand trees start at a hand root unlinked to the body
    root = "right_wrist" if schema is GOLIATH308 else "right_hand_root"
    adj = {}
    for a, b in schema.skeleton:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)

    def reach(name):
        seen, todo = {schema.index(name)}, [schema.index(name)]
        while todo:
            for j in adj.get(todo.pop(), ()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    assert schema.index("left_ankle") in reach("nose") and schema.index("right_heel") in reach("nose")
    assert schema.index("right_pinky_finger4") in reach(root) and schema.index("right_thumb4") in reach(root)
