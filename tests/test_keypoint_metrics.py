"""sagepose.eval.keypoint_metrics against MMPose 1.3.2's numbers (goldens from tools/make_metric_goldens.py) and
against hand-computed cases."""
from pathlib import Path

import numpy as np
import pytest

from sagepose.eval import auc, epe, pck, pckh

GOLDEN = Path(__file__).parent / "data" / "metrics_goldens" / "keypoint_metrics.npz"
MPII_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "PCKh", "PCKh@0.1")
MPII_GROUPS = {"Head": (9,), "Shoulder": (13, 12), "Elbow": (14, 11), "Wrist": (15, 10), "Hip": (3, 2),
               "Knee": (4, 1), "Ankle": (5, 0)}


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as g:
        return {key: g[key] for key in g.files}


def cases(g, prefix):
    n = len({key.split("/")[1] for key in g if key.startswith(prefix + "/")})
    return [{key.split("/")[2]: value for key, value in g.items() if key.startswith(f"{prefix}/{i}/")}
            for i in range(n)]


# ---- MMPose goldens ----

def test_pck_equals_mmpose_keypoint_pck_accuracy(golden):
    for c in cases(golden, "pck"):
        r = pck(c["pred"], c["gt"], c["mask"], float(c["thr"]), c["norm"])
        ref = c["acc"]
        assert np.array_equal(np.isnan(r.per_joint), ref == -1)  # NaN exactly where MMPose reports -1
        np.testing.assert_allclose(r.per_joint[ref != -1], ref[ref != -1], rtol=0, atol=1e-6)
        assert r.count == int(c["cnt"])
        if r.count:
            assert abs(r.mean - float(c["avg"])) <= 1e-6
        else:  # MMPose's 0.0 over nothing
            assert np.isnan(r.mean) and float(c["avg"]) == 0.0


def test_epe_and_auc_equal_mmpose(golden):
    for c in cases(golden, "pck"):
        got_epe = epe(c["pred"], c["gt"], c["mask"])
        got_auc = auc(c["pred"], c["gt"], c["mask"], float(c["auc_norm"]), int(c["auc_thrs"]))
        if c["mask"].any():
            assert abs(got_epe - float(c["epe"])) <= 1e-6
            assert abs(got_auc - float(c["auc"])) <= 1e-6
        else:
            assert np.isnan(got_epe) and np.isnan(got_auc) and float(c["epe"]) == float(c["auc"]) == 0.0


def test_pckh_equals_mmpose_mpii_pck_accuracy(golden):
    names = None
    for c in cases(golden, "mpii"):
        t = pckh(c["pred"], c["gt"], c["visible"], c["head_size"], float(c["thr"]))
        names = list(t["per_joint"])
        ref_joint = c["per_joint"]
        for j, name in enumerate(names):
            if ref_joint[j] == -100:
                assert t["per_joint"][name] is None
            else:
                assert abs(t["per_joint"][name] - ref_joint[j]) <= 1e-6
        ref = dict(zip(MPII_KEYS, c["table"]))
        assert abs(t["PCKh"] - ref["PCKh"]) <= 1e-6
        assert abs(t["PCKh@0.1"] - ref["PCKh@0.1"]) <= 1e-6
        for group, joints in MPII_GROUPS.items():
            unlabeled = [j for j in joints if not c["visible"][:, j].any()]
            if not unlabeled:
                assert abs(t[group] - ref[group]) <= 1e-6, group
            elif len(unlabeled) == len(joints):
                assert t[group] is None
            else:  # MMPose averages in -100 for the unlabeled side; sagepose keeps the labeled side alone
                assert abs(t[group] - (2 * ref[group] + 100)) <= 1e-6, group
    assert names[9] == "head_top" and names[6:8] == ["pelvis", "thorax"]


def test_golden_cases_cover_the_edge_cases(golden):
    pcks, mpiis = cases(golden, "pck"), cases(golden, "mpii")
    assert any((c["acc"] == -1).any() and c["mask"].any() for c in pcks)  # a joint never labeled
    assert any((~c["mask"].any(axis=1)).any() for c in pcks)  # an instance with nothing labeled
    assert any((c["norm"] == 0).any() for c in pcks)  # a zero norm factor
    assert any((~c["visible"].any(axis=0)).any() for c in mpiis)
    assert len({float(c["thr"]) for c in pcks}) >= 3


# ---- analytic cases ----

def grid(n=3, k=5, seed=0):
    return np.random.default_rng(seed).uniform(0, 100, (n, k, 2))


def test_perfect_prediction_scores_one_and_auc_misses_only_threshold_zero():
    gt = grid()
    mask = np.ones(gt.shape[:2], bool)
    r = pck(gt, gt, mask, 0.05, 10.0)
    assert np.all(r.per_joint == 1.0) and r.mean == 1.0 and r.count == 5
    assert epe(gt, gt, mask) == 0.0
    # thresholds 0, 0.05, ..., 0.95 with a strict "<": a zero distance fails only threshold 0
    assert auc(gt, gt, mask, 10.0) == pytest.approx(19 / 20, abs=1e-12)
    assert auc(gt, gt, mask, 10.0, num_thrs=4) == pytest.approx(3 / 4, abs=1e-12)


def test_a_3_4_5_offset_gives_epe_5_and_pck_strictly_below_the_threshold():
    gt = grid()
    pred = gt + np.array([3.0, 4.0])
    mask = np.ones(gt.shape[:2], bool)
    assert epe(pred, gt, mask) == pytest.approx(5.0, abs=1e-6)
    # normalised distance 5 / 10 = 0.5: not correct at 0.5 (strict), correct just above
    assert pck(pred, gt, mask, 0.5, 10.0).mean == 0.0
    assert pck(pred, gt, mask, 0.5001, 10.0).mean == 1.0
    # AUC: thresholds i/20 above 0.5 are i = 11..19
    assert auc(pred, gt, mask, 10.0) == pytest.approx(9 / 20, abs=1e-12)


def test_masked_out_joints_do_not_count():
    gt = grid(2, 3)
    pred = gt + np.array([3.0, 4.0])
    pred[0, 1] += 1000.0
    mask = np.ones((2, 3), bool)
    mask[0, 1] = False
    assert epe(pred, gt, mask) == pytest.approx(5.0, abs=1e-6)
    r = pck(pred, gt, mask, 1.0, 10.0)
    assert r.per_joint.tolist() == [1.0, 1.0, 1.0]
    mask[:, 2] = False
    r = pck(pred, gt, mask, 1.0, 10.0)
    assert np.isnan(r.per_joint[2]) and r.count == 2 and r.mean == 1.0


def test_pck_per_joint_fractions_and_per_axis_norm():
    gt = np.zeros((4, 2, 2))
    pred = gt.copy()
    # joint 0: x offsets 2, 6, 2, 6 px with x-norm 10 -> 0.2, 0.6, 0.2, 0.6; joint 1: y offsets over y-norm 5
    pred[:, 0, 0] = [2, 6, 2, 6]
    pred[:, 1, 1] = [1, 1, 1, 4]  # 0.2, 0.2, 0.2, 0.8
    r = pck(pred, gt, np.ones((4, 2)), 0.5, np.array([[10.0, 5.0]] * 4))
    assert r.per_joint.tolist() == [0.5, 0.75] and r.mean == pytest.approx(0.625)
    # a (N,) norm factor is the same on both axes
    assert pck(pred, gt, np.ones((4, 2)), 0.5, np.full(4, 10.0)).per_joint.tolist() == [0.5, 1.0]


def test_a_zero_norm_factor_leaves_the_instance_out_and_a_negative_one_is_refused():
    gt = np.zeros((2, 1, 2))
    pred = gt + np.array([[[9.0, 0.0]], [[1.0, 0.0]]])
    norm = np.array([[10.0, 0.0], [10.0, 10.0]])  # instance 0 has a zero factor: only instance 1 counts
    assert pck(pred, gt, np.ones((2, 1)), 0.5, norm).per_joint.tolist() == [1.0]
    with pytest.raises(ValueError, match="norm_factor"):
        pck(pred, gt, np.ones((2, 1)), 0.5, -np.ones((2, 2)))


def test_bad_shapes_are_refused_with_the_function_name():
    gt = grid()
    with pytest.raises(ValueError, match="pck: pred"):
        pck(gt[..., :1], gt, np.ones((3, 5)), 0.5, 1.0)
    with pytest.raises(ValueError, match=r"epe: mask \(3, 4\)"):
        epe(gt, gt, np.ones((3, 4)))
    with pytest.raises(ValueError, match="auc: norm_factor must be a scalar"):
        auc(gt, gt, np.ones((3, 5)), np.ones(3))
    with pytest.raises(ValueError, match="pckh: MPII has 16 joints"):
        pckh(gt, gt, np.ones((3, 5)), np.ones(3))


def mpii(n=2, head=10.0, seed=1):
    gt1 = np.random.default_rng(seed).uniform(1, 300, (n, 16, 2))  # 1-based labels
    return gt1, gt1 - 1.0, np.full(n, head)  # labels, a perfect 0-based prediction, head sizes


def test_pckh_adds_one_to_the_0_based_predictions():
    gt1, pred0, head = mpii()
    vis = np.ones((2, 16), bool)
    t = pckh(pred0, gt1, vis, head)
    assert all(t[k] == pytest.approx(100.0, abs=1e-9) for k in MPII_KEYS)  # the means are weighted sums
    assert all(v == 100.0 for v in t["per_joint"].values())
    # comparing the 0-based prediction as if 1-based: off by (1, 1) = 1.41 px, 0.141 of a 10 px head
    t = pckh(pred0, gt1, vis, head, pred_offset=0.0)
    assert t["PCKh"] == pytest.approx(100.0, abs=1e-9) and t["PCKh@0.1"] == 0.0
    assert pckh(gt1, gt1, vis, head, pred_offset=0.0)["PCKh@0.1"] == pytest.approx(100.0, abs=1e-9)


def test_pckh_table_by_hand():
    gt1, pred0, head = mpii(n=2, head=10.0)
    vis = np.ones((2, 16), bool)
    pred0[:, 10] += [4.0, 0.0]  # right wrist 0.4 head sizes off: correct at 0.5, wrong at 0.1
    pred0[:, 15] += [0.0, 6.0]  # left wrist 0.6: wrong
    pred0[:, 6:8] += 50.0  # pelvis and thorax wrong: outside the mean
    t = pckh(pred0, gt1, vis, head)
    assert t["Wrist"] == 50.0 and t["Head"] == 100.0 and t["Ankle"] == 100.0
    assert t["per_joint"]["pelvis"] == 0.0 and t["per_joint"]["right_wrist"] == 100.0
    assert t["PCKh"] == pytest.approx(100 * 13 / 14, abs=1e-9)  # 14 joints in the mean, one of them wrong
    assert t["PCKh@0.1"] == pytest.approx(100 * 12 / 14, abs=1e-4)  # float32, as MMPose


def test_pckh_weights_joints_by_how_often_they_are_labeled():
    gt1, pred0, head = mpii(n=2, head=10.0)
    vis = np.ones((2, 16), bool)
    vis[1] = False
    vis[1, 9] = True  # instance 1 labels only its head top, and predicts it 2 head sizes off
    pred0[1, 9] += 20.0
    t = pckh(pred0, gt1, vis, head)
    assert t["Head"] == 50.0
    assert t["PCKh"] == pytest.approx(100 * 14 / 15, abs=1e-9)  # 15 labeled joints counted, 14 correct


def test_pckh_unlabeled_joint_is_none_and_its_group_keeps_the_other_side():
    gt1, pred0, head = mpii()
    vis = np.ones((2, 16), bool)
    vis[:, 0] = False  # right ankle never labeled
    vis[:, 9] = False  # head top never labeled
    t = pckh(pred0, gt1, vis, head)
    assert t["per_joint"]["right_ankle"] is None and t["Ankle"] == 100.0 and t["Head"] is None
    assert t["PCKh"] == pytest.approx(100.0, abs=1e-9)


def test_pckh_refuses_a_non_positive_head_size():
    gt1, pred0, head = mpii()
    head[1] = 0.0
    with pytest.raises(ValueError, match="head size of instance 1"):
        pckh(pred0, gt1, np.ones((2, 16)), head)
