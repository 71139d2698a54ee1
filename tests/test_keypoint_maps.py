"""Union schemas and maps between schemas (sagepose.keypoint_maps): sizes the literature uses, names, flips, masks."""
import numpy as np
import pytest

from sagepose.keypoint_maps import MappingError, keypoint_map, union_schema
from sagepose.keypoints import AIC14, COCO17, MPII16, KeypointSchema


def test_merged_unions_have_the_published_sizes():
    # the seeds' COCO+MPII ViTPose-B: 21 union keypoints (COCO-17 + MPII's pelvis, thorax, upper_neck, head_top);
    # COCO+MPII+AIC: 23 (AIC's head_top and neck their own outputs)
    u2 = union_schema(["coco", "mpii"])
    assert u2.schema.num_keypoints == 21
    assert set(u2.schema.keypoints[17:]) == {"pelvis", "thorax", "upper_neck", "head_top"}
    u3 = union_schema(["coco", "mpii", "aic"])
    assert u3.schema.num_keypoints == 23
    assert set(u3.schema.keypoints[21:]) == {"aic_head_top", "neck"}
    assert union_schema(["coco", "mpii"], mode="concatenated").schema.num_keypoints == 33


@pytest.mark.parametrize("mode", ["merged", "concatenated"])
def test_union_indices_flips_and_masks_follow_the_members(mode):
    u = union_schema(["coco", "mpii", "aic"], mode=mode)
    names = u.schema.keypoints
    for m, s in enumerate(u.members):
        idx = u.indices[m]
        assert len(set(idx)) == s.num_keypoints
        for i, joint in enumerate(s.keypoints):  # each union output carries the member joint's name
            assert names[idx[i]] in (joint, f"{u.names[m]}_{joint}")
        flip = u.schema.flip_indices
        for a, b in s.flip_pairs:  # the union mirrors what each member mirrors
            assert flip[idx[a]] == idx[b] and flip[idx[b]] == idx[a]
        assert u.labeled(m).sum() == s.num_keypoints
    lsh = [i for i, n in enumerate(names) if n.endswith("left_shoulder")]
    assert len(lsh) == (1 if mode == "merged" else 3)
    assert u.schema.has_sigmas


def test_to_union_and_back_is_the_identity_and_masks_the_rest():
    u = union_schema(["coco", "mpii"])
    rng = np.random.default_rng(0)
    kp, vis = rng.uniform(0, 100, (5, 16, 2)), rng.integers(0, 2, (5, 16)).astype(float)
    ukp, uvis = u.to_union(1, kp, vis)
    assert ukp.shape == (5, 21, 2)
    np.testing.assert_array_equal(u.from_union(1, ukp, axis=-2), kp)
    np.testing.assert_array_equal(u.from_union(1, uvis), vis)
    face = [COCO17.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
    assert not uvis[:, face].any()  # MPII labels no face joint


def test_coco_to_mpii_copies_limbs_and_takes_midpoints():
    kp = np.arange(34, dtype=float).reshape(17, 2)
    vis = np.ones(17)
    vis[COCO17.index("right_hip")] = 0
    m = keypoint_map("coco", "mpii", midpoints=True)
    out, out_vis = m.apply(kp, vis)
    for name in ("left_knee", "right_wrist", "left_shoulder"):
        np.testing.assert_array_equal(out[MPII16.index(name)], kp[COCO17.index(name)])
    thorax = 0.5 * (kp[COCO17.index("left_shoulder")] + kp[COCO17.index("right_shoulder")])
    np.testing.assert_array_equal(out[MPII16.index("thorax")], thorax)
    assert out_vis[MPII16.index("thorax")] == 1 and out_vis[MPII16.index("pelvis")] == 0  # one hip unlabeled
    assert out_vis[MPII16.index("head_top")] == 0 and not out[MPII16.index("head_top")].any()
    assert keypoint_map("coco", "mpii").covered.sum() == 12  # without midpoints: the twelve limb joints


def test_torch_apply_equals_numpy():
    torch = pytest.importorskip("torch")
    m = keypoint_map("coco", "aic", midpoints=True)
    rng = np.random.default_rng(1)
    kp, vis = rng.normal(size=(3, 17, 2)), rng.uniform(size=(3, 17))
    ref = m.apply(kp, vis)
    got = m.apply_torch(torch.from_numpy(kp), torch.from_numpy(vis))
    np.testing.assert_allclose(got[0].numpy(), ref[0])
    np.testing.assert_allclose(got[1].numpy(), ref[1])
    assert AIC14.keypoints[int(np.flatnonzero(~m.covered)[0])] == "head_top"


def test_custom_schemas_match_by_name_and_errors_say_why():
    a = KeypointSchema(name="rig_a", keypoints=("snout", "tail", "paw_l", "paw_r"), flip_pairs=((2, 3),))
    b = KeypointSchema(name="rig_b", keypoints=("tail", "snout", "ear"))
    u = union_schema([a, b])
    assert u.schema.keypoints == ("snout", "tail", "paw_l", "paw_r", "ear")
    assert keypoint_map(a, b).sources == ((1,), (0,), ())
    with pytest.raises(MappingError, match="no keypoint of schema rig_a"):
        keypoint_map(a, "coco")
    with pytest.raises(MappingError, match="distinct names"):
        union_schema(["coco", "coco"])
    with pytest.raises(MappingError, match="unknown union mode"):
        union_schema(["coco"], mode="stacked")
