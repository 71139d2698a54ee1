"""Multi-dataset runs: mixing by weight, per-sample label masks, per-dataset heads, each val set in its own metric."""
import json

import numpy as np
import pytest
import torch

from sagepose.config import ConfigError, load_config
from sagepose.keypoint_maps import union_schema
from sagepose.keypoints import COCO17, MPII16
from sagepose.models.heads import HeatmapHead, PerDatasetHeads, per_dataset_heads
from sagepose.train.losses import heatmap_mse
from sagepose.train.sampling import MixingSampler

TINY = ["model.name=vit-tiny", "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}",
        "data.batch_size=8", "data.val_batch_size=16", "data.num_workers=0", "trainer.progress_bar=false",
        "trainer.accelerator=cpu"]


def test_mixing_sampler_gives_each_dataset_its_weighted_share():
    s = MixingSampler([10, 30], [3.0, 1.0], seed=0)
    order = s.order()
    assert len(order) == 40
    first = order[order < 10]
    assert len(first) == 20  # 3 x 10 against 1 x 30: half the epoch
    assert np.bincount(first, minlength=10).tolist() == [2] * 10  # every sample of it twice
    second = order[order >= 10]
    assert len(second) == 20 and len(set(second.tolist())) == 20  # half of the other's samples, none twice
    again = MixingSampler([10, 30], [3.0, 1.0], seed=0)
    np.testing.assert_array_equal(again.order(), order)  # a function of (seed, epoch)
    again.set_epoch(1)
    assert not np.array_equal(again.order(), order)
    ranks = [MixingSampler([10, 30], [3.0, 1.0], seed=0, rank=r, world_size=3).indices() for r in range(3)]
    # the ranks deal out the one epoch, padded to 3 x 14 with its first two draws
    assert sorted(np.concatenate(ranks).tolist()) == sorted(order.tolist() + order[:2].tolist())
    with pytest.raises(ValueError, match="must be positive"):
        MixingSampler([10, 0], [1.0, 1.0])


def test_unlabeled_outputs_get_no_gradient():
    # an MPII sample in the COCO+MPII union labels none of COCO's face joints: whatever the model predicts there,
    # the loss must not pull on it (a mask, not a zero target)
    from sagepose.data.multi import MemberDataset, _index_maps

    u = union_schema(["coco", "mpii"])
    to_union, _ = _index_maps(u, 1)

    class One(torch.utils.data.Dataset):
        def set_epoch(self, e):
            pass

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"keypoints": np.full((16, 2), 20.0, np.float32), "visible": np.ones(16, np.float32),
                    "gt_keypoints": np.zeros((16, 2), np.float32), "gt_visible": np.ones(16, np.float32)}

    s = MemberDataset(One(), to_union, member=1)[0]
    assert s["keypoints"].shape == (21, 2) and "gt_keypoints" not in s
    face = [COCO17.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
    assert not s["labeled"][face].any() and s["labeled"].sum() == 16
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(1, 21, 16, 12, generator=g, requires_grad=True)
    weights = torch.ones(1, 21) * torch.as_tensor(s["labeled"], dtype=torch.float32)
    loss, _ = heatmap_mse(pred, torch.rand(1, 21, 16, 12, generator=g), weights)
    loss.backward()
    assert pred.grad[0, face].abs().sum() == 0
    head_top = u.schema.keypoints.index("head_top")
    assert pred.grad[0, head_top].abs().sum() > 0


def test_per_dataset_heads_route_each_sample_and_start_as_the_shared_head():
    torch.manual_seed(0)
    u = union_schema(["coco", "mpii"])
    shared = HeatmapHead(8, 21, deconv_channels=(8,)).eval()
    heads = per_dataset_heads(shared, u).eval()
    x = torch.randn(4, 8, 6, 5)
    with torch.no_grad():
        ref = shared(x)
        only_mpii = heads(x, dataset=1)
        routed = heads(x, dataset=torch.tensor([0, 1, 1, 0]))
        union = heads(x)  # after routed calls: every head, nothing of their routing left behind
    mpii = list(u.indices[1])
    torch.testing.assert_close(only_mpii[:, mpii], ref[:, mpii])  # the cut rows: the shared head's
    other = [j for j in range(21) if j not in mpii]
    assert only_mpii[:, other].abs().sum() == 0
    for b, m in enumerate([0, 1, 1, 0]):
        idx = list(u.indices[m])
        torch.testing.assert_close(routed[b, idx], ref[b, idx])
        rest = [j for j in range(21) if j not in idx]
        assert routed[b, rest].abs().sum() == 0
    torch.testing.assert_close(union, ref)  # every union channel from a head cut from the shared one
    assert isinstance(heads, PerDatasetHeads) and heads.heads[1].final_conv.out_channels == 16


def test_config_refuses_what_a_multi_dataset_run_cannot_use():
    two = "data.datasets=[{'name': 'a', 'schema': 'coco'}, {'name': 'a', 'schema': 'mpii'}]"
    with pytest.raises(ConfigError, match="distinct"):
        load_config(None, [two])
    one = "data.datasets=[{'name': 'a', 'schema': 'coco'}]"
    with pytest.raises(ConfigError, match="leave data.train_json"):
        load_config(None, [one, "data.train_json=x.json"])
    with pytest.raises(ConfigError, match="one head"):
        load_config(None, [one, "data.union=convert", "model.heads=per_dataset"])
    with pytest.raises(ConfigError, match="needs data.datasets"):
        load_config(None, ["model.heads=per_dataset"])
    with pytest.raises(ConfigError, match=r"data.datasets\[0\].schema"):
        load_config(None, ["data.datasets=[{'name': 'a', 'schema': 'cocoo'}]"])
    with pytest.raises(ConfigError, match="weight"):
        load_config(None, ["data.datasets=[{'name': 'a', 'weight': 0.0}]"])


@pytest.fixture(scope="module")
def three_sets(tmp_path_factory):
    from sagepose.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("multi")
    sets = {}
    for name, style in (("coco", "default"), ("mpii", "sports"), ("aic", "indoor")):
        tr = generate_dataset(root / name, 16, seed=1, split="train", schema=name, style=style, workers=1)
        va = generate_dataset(root / name, 6, seed=2, split="val", schema=name, style=style, workers=1)
        sets[name] = {"name": name, "schema": name, "train_json": str(tr), "val_json": str(va)}
    return root, sets


@pytest.mark.parametrize("union,heads", [("merged", "shared"), ("concatenated", "per_dataset"), ("convert", "shared")])
def test_a_multi_dataset_run_trains_and_scores_each_dataset_in_its_own_schema(three_sets, union, heads):
    from sagepose.train.run import fit, test

    root, sets = three_sets
    out = root / f"run-{union}-{heads}"
    cfg = load_config(None, [f"data.datasets={list(sets.values())!r}", f"data.union={union}", f"model.heads={heads}",
                             "trainer.max_epochs=1", "trainer.val_every_epochs=1", f"trainer.out_dir={out}", *TINY])
    summary = fit(cfg)
    from sagepose.data import load_coco

    persons = sum(len(load_coco(d["train_json"], schema=d["schema"], mode="train")) for d in sets.values())
    assert summary["steps"] == persons // 8  # one epoch of every dataset's people (weights 1)
    metrics = test(cfg, summary["last_checkpoint"], out / "test")
    scored = ["coco"] if union == "convert" else ["coco", "mpii", "aic"]  # convert: COCO-17 has no MPII head_top
    assert [k for k in metrics if isinstance(metrics[k], dict)] == scored
    for name in scored:
        preds = json.loads((out / "test" / f"predictions-{name}.json").read_text())
        k = {"coco": 17, "mpii": 16, "aic": 14}[name]
        assert preds and all(len(p["keypoints"]) == 3 * k for p in preds)  # each in its own schema
        assert metrics[name]["instances"] == len(json.loads(open(sets[name]["val_json"]).read())["annotations"])
        assert "AP" in metrics[name] and metrics[name]["pixel_error"] > 0
    stored = torch.load(summary["last_checkpoint"], weights_only=True, map_location="cpu")
    n = {"merged": 23, "concatenated": 17 + 16 + 14, "convert": 17}[union]
    assert len(stored["hyper_parameters"]["schema"]["keypoints"]) == n
    # loaded for inference (one head per dataset rebuilt from the checkpoint): a dataset's view predicts what
    # validation scored for it, in its schema
    import sagepose
    from sagepose.api import dataset_view

    if union == "convert":
        with pytest.raises(ValueError, match="do not hold every keypoint of dataset 'mpii'"):
            dataset_view(sagepose.load(summary["last_checkpoint"]), summary["last_checkpoint"], "mpii")
        return
    labels = json.loads(open(sets["mpii"]["val_json"]).read())
    ann, image = labels["annotations"][0], labels["images"][0]
    x, y, w, h = ann["bbox"]
    for fuse in (False, True):
        view = dataset_view(sagepose.load(summary["last_checkpoint"], fuse=fuse), summary["last_checkpoint"], "mpii")
        got = view.predict(str(root / "mpii" / image["file_name"]), np.array([[x, y, x + w, y + h]]))
        assert got.keypoints.shape == (1, 16, 2) and view.schema == MPII16
        preds = json.loads((out / "test" / "predictions-mpii.json").read_text())
        kp = [np.reshape(p["keypoints"], (16, 3)) for p in preds if p["image_id"] == ann["image_id"]]
        best = min(kp, key=lambda k: np.abs(k[:, :2] - got.keypoints[0]).max())
        np.testing.assert_allclose(best[:, :2], got.keypoints[0], atol=0.05 if fuse else 1e-3)
        np.testing.assert_allclose(best[:, 2], got.scores[0], atol=1e-2 if fuse else 1e-3)  # json: 3 decimals


def test_an_mpii_format_member_reads_mmpose_json(realdata):
    from sagepose.data.multi import member_records, plan_datasets

    ann = str(realdata / "mpii" / "test_mpii.json")
    cfg = load_config(None, [f"data.datasets=[{{'name': 'mpii', 'schema': 'mpii', 'format': 'mpii', "
                             f"'train_json': {ann!r}}}, {{'name': 'coco', 'schema': 'coco'}}]"])
    plan = plan_datasets(cfg)
    records = member_records(plan.members[0], "train")
    assert records and records[0].keypoints.shape == (16, 2)
    assert plan.schema.num_keypoints == 21
    with pytest.raises(ConfigError, match="schema mpii"):
        load_config(None, ["data.datasets=[{'name': 'm', 'schema': 'coco', 'format': 'mpii'}]"])


def test_the_coco_aic_mpii_recipe_builds_the_23_keypoint_union_with_a_head_per_dataset():
    from sagepose.data.multi import plan_datasets

    cfg = load_config("multi_vitpose_b_coco_aic_mpii_256x192")
    plan = plan_datasets(cfg)
    assert plan.schema.num_keypoints == 23 and cfg.model.heads == "per_dataset"
    assert [m.config.format for m in plan.members] == ["coco", "coco", "mpii"]
    assert plan.scored() == [0, 2]  # AIC trains, COCO and MPII are scored


def test_a_multi_dataset_run_resumes_exactly(three_sets):
    # two epochs in one go == one epoch, then resumed for the second (mixing order, augmentation, heads, optimizer);
    # a step schedule with its milestone beyond the run, so the learning rate does not depend on the planned length
    from sagepose.train.run import fit

    root, sets = three_sets
    base = [f"data.datasets={list(sets.values())!r}", "data.union=merged", "model.heads=per_dataset",
            "trainer.val_every_epochs=100", "optim.schedule=step", "optim.milestones=[100]", "optim.warmup_iters=2",
            "data.photometric_prob=0.5", *TINY]
    whole = fit(load_config(None, [*base, "trainer.max_epochs=2", f"trainer.out_dir={root / 'whole'}"]))
    fit(load_config(None, [*base, "trainer.max_epochs=1", f"trainer.out_dir={root / 'parts'}"]))
    parts = fit(load_config(None, [*base, "trainer.max_epochs=2", f"trainer.out_dir={root / 'parts'}"]), resume=True)
    assert parts["resumed_from"] and parts["steps"] == whole["steps"]
    a = torch.load(whole["last_checkpoint"], weights_only=True, map_location="cpu")["state_dict"]
    b = torch.load(parts["last_checkpoint"], weights_only=True, map_location="cpu")["state_dict"]
    assert a.keys() == b.keys() and any(".heads.2." in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
