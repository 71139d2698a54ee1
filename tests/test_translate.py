"""sagepose.translate and `sagepose translate`: the fixed converter on hand-computed results, the learned translator
against an analytic COCO -> MPII mapping (known linear combinations and offsets of the source joints), its files and
the command end to end."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from sagepose.cli.main import main
from sagepose.errors import DataError
from sagepose.keypoint_maps import keypoint_map
from sagepose.keypoints import COCO17, MPII16
from sagepose.translate.config import TranslatorConfig
from sagepose.translate.files import FILE_FORMAT, TranslatorFileError, load_translator, save_translator
from sagepose.translate.fit import augment_pairs, fit_affine_base, fit_translator
from sagepose.translate.model import Translator, translate_results
from sagepose.translate.pairs import training_pairs
from sagepose.translate.results import convert_results, person_frames

C = {n: i for i, n in enumerate(COCO17.keypoints)}
M = {n: i for i, n in enumerate(MPII16.keypoints)}

# a standing person in COCO-17 order, in a box-normalised frame (y down)
TEMPLATE = np.array([
    (0.0, -0.42), (-0.03, -0.45), (0.03, -0.45), (-0.06, -0.43), (0.06, -0.43),
    (-0.12, -0.30), (0.12, -0.30), (-0.17, -0.12), (0.17, -0.12), (-0.19, 0.04), (0.19, 0.04),
    (-0.08, 0.02), (0.08, 0.02), (-0.09, 0.25), (0.09, 0.25), (-0.09, 0.47), (0.09, 0.47)])


def mpii_truth(n: np.ndarray) -> np.ndarray:
    """(P, 17, 2) COCO joints in the normalised frame -> (P, 16, 2) MPII joints: the analytic truth the translator
    must learn (offsets, side mixtures, midpoints, and a head top extrapolated from nose and thorax)."""
    g = lambda name: n[:, C[name]]
    thorax = 0.5 * (g("left_shoulder") + g("right_shoulder"))
    out = {"pelvis": 0.5 * (g("left_hip") + g("right_hip")) + (0.0, -0.02), "thorax": thorax,
           "upper_neck": 0.7 * thorax + 0.3 * g("nose"), "head_top": g("nose") + 1.5 * (g("nose") - thorax)}
    for side, other in (("left", "right"), ("right", "left")):
        out[f"{side}_ankle"] = g(f"{side}_ankle") + (0.0, 0.03)
        out[f"{side}_knee"] = g(f"{side}_knee") + (0.02, 0.0)
        out[f"{side}_hip"] = 0.8 * g(f"{side}_hip") + 0.2 * g(f"{other}_hip") + (0.0, -0.03)
        out[f"{side}_wrist"] = g(f"{side}_wrist") + (0.0, -0.02)
        out[f"{side}_elbow"] = g(f"{side}_elbow")
        out[f"{side}_shoulder"] = 0.9 * g(f"{side}_shoulder") + 0.1 * g(f"{side}_hip")
    return np.stack([out[k] for k in MPII16.keypoints], 1)


def people(rng, centres, sizes):
    """COCO poses in image px (P, 17, 2), their scores (P, 17), the MPII truth in px (P, 16, 2), its labeled flags
    (head top and upper neck labeled only where the nose scores > 0.5) and the frame sizes (P,). Every score is
    > 0.05, so the frame is the box of all the keypoints, computed here on its own."""
    kp = centres[:, None] + sizes[:, None, None] * (TEMPLATE + rng.normal(0, 0.05, (len(sizes), 17, 2)))
    scores = rng.uniform(0.2, 1.0, kp.shape[:2])
    lo, hi = kp.min(1), kp.max(1)
    c, s = (lo + hi) / 2, (hi - lo).max(1)
    tgt = c[:, None] + s[:, None, None] * mpii_truth((kp - c[:, None]) / s[:, None, None])
    labeled = np.ones(tgt.shape[:2], bool)
    labeled[:, [M["head_top"], M["upper_neck"]]] = (scores[:, C["nose"]] > 0.5)[:, None]
    return kp, scores, tgt, labeled, s


def result(image_id, kp, scores, **extra):
    return dict(image_id=image_id, category_id=1, score=0.9,
                keypoints=np.concatenate([kp, scores[:, None]], 1).reshape(-1).tolist(), **extra)


def annotation(ann_id, image_id, kp, labeled, bbox=None, **extra):
    v = np.where(labeled, 2.0, 0.0)
    flat = np.concatenate([np.where(labeled[:, None], kp, 0.0), v[:, None]], 1).reshape(-1).tolist()
    if bbox is None:
        lo, hi = kp[labeled].min(0), kp[labeled].max(0)
        bbox = [*(lo - 0.05 * (hi - lo)).tolist(), *(1.1 * (hi - lo)).tolist()]
    return dict(id=ann_id, image_id=image_id, category_id=1, bbox=bbox, keypoints=flat, **extra)


N_IMAGES = 1000  # two people each: 2000 pairs


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory):
    """Labels (MPII) and predictions (COCO) of two people per image, left and right, predictions in shuffled order;
    plus one annotation with no labeled keypoint, one crowd annotation, one annotation on an image without
    predictions, one whose box overlaps no prediction and one whose only candidate overlaps it too little."""
    rng = np.random.default_rng(0)
    n = N_IMAGES
    centres = np.concatenate([rng.uniform((100, 200), (200, 440), (n, 2)), rng.uniform((440, 200), (540, 440), (n, 2))])
    kp, sc, tgt, lab, _ = people(rng, centres, rng.uniform(60, 150, 2 * n))
    images = [dict(id=i, file_name=f"{i}.jpg", width=640, height=640) for i in range(n + 2)]
    anns, preds = [], []
    for i in range(n):
        for p in rng.permutation([i, n + i]):
            preds.append(result(i, kp[p], sc[p]))
        anns += [annotation(len(anns) + 1, i, tgt[p], lab[p]) for p in (i, n + i)]
    anns.append(annotation(len(anns) + 1, 0, tgt[0], np.zeros(16, bool), bbox=[10, 10, 50, 50]))
    anns.append(dict(id=len(anns) + 1, image_id=0, category_id=1, bbox=[0, 0, 640, 640], iscrowd=1,
                     keypoints=[0] * 48))
    anns.append(annotation(len(anns) + 1, n, tgt[1], lab[1]))  # image n has no prediction
    anns.append(annotation(len(anns) + 1, 1, tgt[1], lab[1], bbox=[600, 600, 30, 30]))  # overlaps nothing
    # image n + 1: its one prediction's keypoint box and its one annotation's box overlap by IoU 0.25 < 0.3
    lo, hi = kp[2].min(0), kp[2].max(0)
    w, h = hi - lo
    preds.append(result(n + 1, kp[2], sc[2]))
    anns.append(annotation(len(anns) + 1, n + 1, tgt[2], lab[2], bbox=[lo[0] + 0.6 * w, lo[1], w, h]))
    labels = tmp_path_factory.mktemp("translate") / "labels.json"
    labels.write_text(json.dumps(dict(images=images, annotations=anns,
                                      categories=[dict(id=1, name="person", keypoints=list(MPII16.keypoints))])))
    preds_path = labels.with_name("predictions.json")
    preds_path.write_text(json.dumps(preds))
    return labels, preds_path, preds


@pytest.fixture(scope="module")
def fitted(pairs_data):
    labels, _, preds = pairs_data
    cfg = TranslatorConfig(epochs=60, seed=0)
    model, report = fit_translator(preds, str(labels), "coco", "mpii", cfg, midpoints=True)
    return model, report, cfg


@pytest.fixture(scope="module")
def held_out():
    rng = np.random.default_rng(1)
    kp, sc, tgt, lab, s = people(rng, rng.uniform(100, 540, (500, 2)), rng.uniform(60, 250, 500))
    return [result(i, kp[i], sc[i]) for i in range(500)], kp, sc, tgt, lab, s


def as_array(results, k):
    return np.array([r["keypoints"] for r in results], np.float64).reshape(len(results), k, 3)


# ---- the fixed converter ------------------------------------------------------------------------------------------
def hand_result():
    kp = np.array([(10.0 + i, 100.0 + 2 * i) for i in range(17)])
    sc = np.linspace(0.1, 0.9, 17)
    return result(7, kp, sc, bbox=[1, 2, 3, 4], file_name="a.jpg"), kp, sc


def test_convert_results_copies_and_midpoints_match_hand_values():
    r, kp, sc = hand_result()
    out = convert_results([r], keypoint_map("coco", "mpii", midpoints=True))
    got = np.asarray(out[0]["keypoints"]).reshape(16, 3)
    # MPII right_ankle <- COCO right_ankle (16): (26, 132), score 0.1 + 16 * 0.05
    np.testing.assert_allclose(got[M["right_ankle"]], (26.0, 132.0, 0.9))
    np.testing.assert_allclose(got[M["left_wrist"]], (19.0, 118.0, 0.55))  # COCO 9
    # pelvis: midpoint of the hips (11: (21, 122), 0.65; 12: (22, 124), 0.7), the smaller score
    np.testing.assert_allclose(got[M["pelvis"]], (21.5, 123.0, 0.65))
    # thorax: shoulders 5 (15, 110, 0.35) and 6 (16, 112, 0.4)
    np.testing.assert_allclose(got[M["thorax"]], (15.5, 111.0, 0.35))
    for joint in ("upper_neck", "head_top"):  # no COCO counterpart
        np.testing.assert_array_equal(got[M[joint]], (0.0, 0.0, 0.0))
    assert {k: out[0][k] for k in ("image_id", "category_id", "score", "bbox", "file_name")} == \
        {"image_id": 7, "category_id": 1, "score": 0.9, "bbox": [1, 2, 3, 4], "file_name": "a.jpg"}


def test_convert_results_without_midpoints_leaves_pelvis_and_thorax_empty():
    r, _, _ = hand_result()
    got = np.asarray(convert_results([r], keypoint_map("coco", "mpii"))[0]["keypoints"]).reshape(16, 3)
    for joint in ("pelvis", "thorax", "upper_neck", "head_top"):
        np.testing.assert_array_equal(got[M[joint]], (0.0, 0.0, 0.0))
    np.testing.assert_allclose(got[M["right_hip"]], (22.0, 124.0, 0.7))


def test_convert_results_refuses_a_result_of_another_schema_naming_it():
    r, _, _ = hand_result()
    bad = dict(r, keypoints=r["keypoints"][:42])
    with pytest.raises(DataError, match=r"P\.json: result 1 \(image 7\) has 42 keypoint values, expected 51"):
        convert_results([r, bad], keypoint_map("coco", "mpii"), where="P.json")
    with pytest.raises(DataError, match="bbox"):
        convert_results([dict(r, bbox=[1, 2, float("nan"), 4])], keypoint_map("coco", "mpii"))


def test_person_frames_use_the_bbox_else_the_scored_keypoints_else_all():
    kp = np.array([[(0.0, 0.0), (10.0, 4.0), (100.0, 100.0)]] * 3)
    sc = np.array([[0.9, 0.9, 0.01], [0.9, 0.9, 0.01], [0.0, 0.0, 0.0]])
    boxes = np.array([[10.0, 20.0, 30.0, 60.0], [np.nan] * 4, [np.nan] * 4])
    centres, sizes = person_frames(kp, sc, boxes)
    np.testing.assert_allclose(centres, [(25.0, 50.0), (5.0, 2.0), (50.0, 50.0)])
    np.testing.assert_allclose(sizes, [60.0, 10.0, 100.0])


# ---- the learned translator -----------------------------------------------------------------------------------------
def test_untrained_translator_is_the_fixed_map(held_out):
    results, kp, sc, *_ = held_out
    kmap = keypoint_map("coco", "mpii", midpoints=True)
    torch.manual_seed(0)
    got = as_array(translate_results(Translator(kmap, hidden=32, layers=2), results[:20]), 16)
    fixed = as_array(convert_results(results[:20], kmap), 16)
    cov = kmap.covered
    np.testing.assert_allclose(got[:, cov, :2], fixed[:, cov, :2], atol=2e-3)  # float32, 3 decimals
    assert (got[:, cov, 2] <= fixed[:, cov, 2] + 5e-4).all()  # the source's score x a probability


def test_pairs_are_matched_by_box_overlap_and_the_rest_counted(fitted):
    _, report, _ = fitted
    assert report["pairs"] == 2 * N_IMAGES
    assert report["skipped"] == {"without labeled keypoints": 1, "crowd": 1}
    assert report["unmatched"] == 3
    assert report["steps"] == 60 * 8


def test_translator_learns_an_analytic_mapping_far_better_than_the_fixed_map(fitted, held_out):
    model, report, _ = fitted
    results, kp, sc, tgt, lab, s = held_out
    kmap = model.kmap
    got = as_array(translate_results(model, results), 16)
    fixed = as_array(convert_results(results, kmap), 16)
    err = np.linalg.norm(got[..., :2] - tgt, axis=-1) / s[:, None]  # in box lengths
    fixed_err = np.linalg.norm(fixed[..., :2] - tgt, axis=-1) / s[:, None]
    cov = np.broadcast_to(kmap.covered, lab.shape) & lab
    assert fixed_err[cov].mean() > 0.02  # the offsets and mixtures the map cannot know
    assert err[cov].mean() < 0.15 * fixed_err[cov].mean()  # measured: 0.0013 against 0.0228
    assert err[lab].mean() < 0.01  # (0.0030) head top, upper neck: no source joint, learned from nose and shoulders
    assert abs(report["fixed_error"] - fixed_err[cov].mean()) < 0.003  # training pairs: the same distribution
    # labeled flags: head top labeled where the nose scores > 0.5; its score is mean score x sigmoid(logit)
    prob_head = got[:, M["head_top"], 2] / sc.mean(1)
    assert np.mean((prob_head > 0.5) == lab[:, M["head_top"]]) > 0.95
    # a copied joint always labeled: its source score x a probability near 1
    ratio = got[:, M["left_wrist"], 2] / sc[:, C["left_wrist"]]
    assert ratio.max() <= 1.0 + 3e-3 and ratio.mean() > 0.95  # scores written to 3 decimals


def test_fit_is_deterministic_given_the_seed(pairs_data):
    labels, _, preds = pairs_data
    fit = lambda seed: fit_translator(preds[:200], str(labels), "coco", "mpii",
                                      TranslatorConfig(hidden=32, layers=2, epochs=3, seed=seed))[0]
    a, b, c = fit(0), fit(0), fit(1)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.state_dict()["coords.0.weight"], c.state_dict()["coords.0.weight"])


def test_fit_without_any_pair_fails_naming_the_labels(pairs_data):
    labels, _, preds = pairs_data
    far = [dict(p, image_id=10_000) for p in preds[:4]]
    with pytest.raises(DataError, match="labels.json: no annotation pairs"):
        fit_translator(far, str(labels), "coco", "mpii", TranslatorConfig(epochs=1))


# ---- files ----------------------------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_equal_outputs_and_plain_data(fitted, held_out, tmp_path):
    model, report, cfg = fitted
    path = tmp_path / "t.pt"
    save_translator(path, model, cfg, "coco", "mpii", report)
    loaded = load_translator(path)
    assert translate_results(loaded, held_out[0][:50]) == translate_results(model, held_out[0][:50])
    raw = torch.load(path, weights_only=True)  # plain data only: no pickled classes
    assert raw["source"]["name"] == "coco" and raw["target"]["name"] == "mpii"
    assert raw["config"]["epochs"] == 60 and raw["report"]["pairs"] == 2 * N_IMAGES
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


class NotPlainData:
    pass


def test_load_translator_refuses_other_files_naming_them(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as f:
        pickle.dump({"format": FILE_FORMAT, "obj": NotPlainData()}, f, protocol=2)
    for path in (garbage, other, pickled):
        with pytest.raises(TranslatorFileError, match=f"{path}: not a sagepose translator file") as e:
            load_translator(path)
        assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.pt: translator file not found"):
        load_translator(tmp_path / "missing.pt")


# ---- the command ----------------------------------------------------------------------------------------------------
def test_cli_fit_and_apply_end_to_end(pairs_data, tmp_path, capsys):
    labels, preds_path, preds = pairs_data
    out = tmp_path / "t.pt"
    assert main(["translate", "fit", "--source", "coco", "--target", "mpii", "--predictions", str(preds_path),
                 "--labels", str(labels), "--out", str(out), "--epochs", "2", "--seed", "3"]) == 0
    assert f"{out}: translator coco -> mpii fit on 2000 pairs (3 annotations unmatched, 2 skipped)" in \
        capsys.readouterr().out
    assert torch.load(out, weights_only=True)["config"]["seed"] == 3

    small = tmp_path / "small.json"
    small.write_text(json.dumps(preds[:10]))
    learned = tmp_path / "learned.json"
    assert main(["translate", "apply", str(out), "--predictions", str(small), "--out", str(learned)]) == 0
    assert "10 results coco -> mpii" in capsys.readouterr().out
    rows = json.loads(learned.read_text())
    assert len(rows) == 10 and all(len(r["keypoints"]) == 48 for r in rows)
    assert [r["image_id"] for r in rows] == [p["image_id"] for p in preds[:10]]

    fixed = tmp_path / "fixed.json"
    assert main(["translate", "apply", "--fixed", "--source", "coco", "--target", "mpii", "--midpoints",
                 "--predictions", str(small), "--out", str(fixed)]) == 0
    assert "fixed map, 14 of 16 joints given" in capsys.readouterr().out
    row = np.asarray(json.loads(fixed.read_text())[0]["keypoints"]).reshape(16, 3)
    np.testing.assert_allclose(row[M["left_knee"]], np.asarray(preds[0]["keypoints"]).reshape(17, 3)[C["left_knee"]])


def test_cli_usage_errors_are_one_line(pairs_data, tmp_path, capsys):
    _, preds_path, _ = pairs_data
    q = str(tmp_path / "q.json")
    assert main(["translate", "apply", "--predictions", str(preds_path), "--out", q]) == 2
    assert "needs a translator file (T.pt) or --fixed" in capsys.readouterr().err
    assert main(["translate", "fit", "--source", "coco", "--predictions", str(preds_path), "--out", q]) == 2
    assert "translate fit needs --target, --labels" in capsys.readouterr().err
    assert main(["translate", "apply", str(tmp_path / "none.pt"), "--predictions", str(preds_path), "--out", q]) == 1
    assert "none.pt: translator file not found" in capsys.readouterr().err
    labels = str(pairs_data[0])
    assert main(["translate", "fit", "--source", "coco", "--target", "mpii", "--labels", labels, "--predictions",
                 str(preds_path), "--out", q, "--augment-flip", "1.5"]) == 2
    assert "--augment-flip must be in [0, 1]" in capsys.readouterr().err


def test_copy_covered_keeps_the_fixed_maps_joints_and_learns_the_rest(pairs_data, held_out, tmp_path):
    labels, _, preds = pairs_data
    cfg = TranslatorConfig(epochs=20, seed=0, refine_covered=False)
    model, _ = fit_translator(preds[:600], str(labels), "coco", "mpii", cfg, midpoints=True)
    results = held_out[0][:50]
    got = as_array(translate_results(model, results), 16)
    fixed = as_array(convert_results(results, model.kmap), 16)
    covered = model.kmap.covered
    np.testing.assert_allclose(got[:, covered, :2], fixed[:, covered, :2], atol=1e-3)  # copies, to rounding
    assert np.abs(got[:, ~covered, :2]).min() > 0  # head top and upper neck: placed by the network
    path = tmp_path / "copy.pt"
    save_translator(path, model, cfg, "coco", "mpii", {})
    again = as_array(translate_results(load_translator(path), results), 16)
    np.testing.assert_allclose(again, got)


# ---- the affine base and pair augmentation -----------------------------------------------------------------------
def test_the_affine_base_recovers_the_head_joints_analytic_combinations(pairs_data):
    """Head top = 2.5 nose - 0.75 (left + right shoulder), upper neck = 0.3 nose + 0.35 (left + right shoulder):
    combinations whose weights sum to 1, found in closed form from the pairs."""
    labels, _, preds = pairs_data
    arrays, _ = training_pairs(preds, str(labels), COCO17, MPII16)
    free = np.zeros(16, bool)
    free[[M["head_top"], M["upper_neck"], M["left_ankle"]]] = True
    w = fit_affine_base(arrays["src"], arrays["tgt"], arrays["tgt_labeled"], free, ridge=1e-12)
    expect = {"head_top": {"nose": 2.5, "left_shoulder": -0.75, "right_shoulder": -0.75},
              "upper_neck": {"nose": 0.3, "left_shoulder": 0.35, "right_shoulder": 0.35}}
    for joint, weights in expect.items():
        want = np.zeros(17)
        for name, v in weights.items():
            want[C[name]] = v
        np.testing.assert_allclose(w[M[joint]], want, atol=1e-6)
    assert abs(w[M["left_ankle"]].sum() - 1) < 1e-9  # an offset no combination gives: still a combination
    assert not w[~free].any()


def test_pair_augmentation_turns_and_mirrors_source_and_target_together(held_out):
    _, kp, sc, tgt, lab, s = held_out
    src = torch.as_tensor((kp[:8] - kp[:8].mean(1, keepdims=True)) / s[:8, None, None], dtype=torch.float32)
    truth = lambda x: torch.as_tensor(mpii_truth(x.numpy().astype(np.float64)), dtype=torch.float32)
    batch = (src, torch.as_tensor(sc[:8], dtype=torch.float32), truth(src), torch.ones(8, 16, dtype=torch.bool))
    cfg = TranslatorConfig(augment_rotate=90.0, augment_flip=1.0)
    flips = torch.as_tensor(COCO17.flip_indices), torch.as_tensor(MPII16.flip_indices)
    a_src, a_sc, a_tgt, _ = augment_pairs(batch, torch.Generator().manual_seed(0), cfg, *flips)
    # head top and upper neck are combinations of the source joints: they follow any turn and mirror exactly
    head = [M["head_top"], M["upper_neck"]]
    torch.testing.assert_close(a_tgt[:, head], truth(a_src)[:, head], atol=1e-5, rtol=0)
    # mirrored: the left wrist's score is the right one's; distances within each person are kept
    torch.testing.assert_close(a_sc[:, C["left_wrist"]], batch[1][:, C["right_wrist"]])
    torch.testing.assert_close(torch.cdist(a_src, a_tgt).sort(-1).values.sum(-1).sort(-1).values,
                               torch.cdist(src, batch[2]).sort(-1).values.sum(-1).sort(-1).values, atol=1e-4, rtol=0)


def test_a_file_from_before_the_affine_base_loads_with_none(fitted, held_out, tmp_path):
    model, report, cfg = fitted
    path = tmp_path / "old.pt"
    save_translator(path, model, cfg, "coco", "mpii", report)
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["base_weights"]
    torch.save(raw, path)
    assert not load_translator(path).base_weights.any()


def test_cli_fit_with_pair_augmentation_writes_its_settings(pairs_data, tmp_path, capsys):
    labels, preds_path, _ = pairs_data
    out = tmp_path / "aug.pt"
    assert main(["translate", "fit", "--source", "coco", "--target", "mpii", "--labels", str(labels), "--predictions",
                 str(preds_path), "--out", str(out), "--epochs", "2", "--augment-rotate", "30", "--augment-flip",
                 "0.5", "--no-affine-base"]) == 0
    raw = torch.load(out, weights_only=True)
    assert raw["config"]["augment_rotate"] == 30.0 and raw["config"]["augment_flip"] == 0.5
    assert not raw["config"]["affine_base"] and not raw["state_dict"]["base_weights"].any()
    assert torch.isfinite(raw["state_dict"]["coords.0.weight"]).all()
