"""benchmarks/bench_ssl.py: the mouse split, the table's arithmetic, the equal-steps guard, and a --quick smoke run."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sagepose.errors import SagePoseError

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ssl", REPO / "benchmarks" / "bench_ssl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(arm, seed, err, steps=5, minutes=1.0):
    return {"arm": arm, "seed": seed, "pixel_error": err, "train_minutes": minutes, "wall_minutes": minutes + 0.5,
            "steps": steps, "out": ""}


def test_table_means_seeds_and_divides_semi_by_supervised():
    bench = _bench()
    plan = {"metric": "pixel_error", "header": "mouse"}
    rows = [_row("supervised", 0, 10.0), _row("supervised", 1, 12.0), _row("semi", 0, 8.0), _row("semi", 1, 9.0)]
    text = bench.table(plan, rows)
    sup_line = next(line for line in text.splitlines() if line.startswith("| supervised |"))
    semi_line = next(line for line in text.splitlines() if line.startswith("| semi |"))
    assert "| 11.000 | 0: 10.000, 1: 12.000 | -- |" in sup_line
    assert f"| 8.500 | 0: 8.000, 1: 9.000 | {8.5 / 11:.3f} |" in semi_line  # 0.773
    assert semi_line.endswith("| 1.00 | 1.50 | 5 |")
    assert f"semi / supervised = {8.5 / 11:.3f} (<= 0.9: gains)" in text


def test_table_reports_an_unmet_ap_floor_as_gain():
    bench = _bench()
    rows = [{**_row("supervised", 0, None), "AP": 0.40}, {**_row("semi", 0, None), "AP": 0.42}]
    text = bench.table({"metric": "AP", "header": "synthetic"}, rows)
    assert "| semi | 0.420 | 0: 0.420 | +0.020 |" in text
    assert "Floor NOT met" in text  # 0.42 < 0.40 + 0.03


def test_unequal_steps_stop_the_bench_naming_the_run():
    bench = _bench()
    bench.check_equal_steps([_row("supervised", 0, 1.0, steps=7), _row("semi", 0, 1.0, steps=7)], 7)
    with pytest.raises(SagePoseError, match="semi seed 1: 6"):
        bench.check_equal_steps([_row("supervised", 0, 1.0, steps=7), _row("semi", 1, 1.0, steps=6)], 7)


def _labels(path: Path, frames: int) -> str:
    coco = {"images": [{"id": i + 1, "file_name": f"f{(i * 7) % frames:03d}.png", "width": 10, "height": 10}
                       for i in range(frames)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "bbox": [0, 0, 10, 10], "keypoints": [1, 1, 2],
                             "num_keypoints": 1} for i in range(frames)],
            "categories": [{"id": 1, "name": "mouse", "keypoints": ["nose"], "skeleton": []}]}
    path.write_text(json.dumps(coco))
    return str(path)


def test_real_split_is_train_val_test_disjoint_and_fixed(tmp_path):
    bench = _bench()
    split = bench.real_split(_labels(tmp_path / "labels.json", 90), 30, tmp_path / "split")
    parts = {k: json.loads(Path(split[k]).read_text()) for k in ("train", "val", "test")}
    names = {k: [im["file_name"] for im in d["images"]] for k, d in parts.items()}
    assert split["counts"] == {"train": 30, "val": 10, "test": 50} and split["frames"] == 90
    assert set().union(*names.values()) == {f"f{i:03d}.png" for i in range(90)}
    assert not (set(names["train"]) & set(names["val"]) or set(names["train"]) & set(names["test"]))
    order = np.random.default_rng(0).permutation(90)  # the fixed split: seed-0 permutation of the sorted names
    assert set(names["train"]) == {f"f{i:03d}.png" for i in order[:30]}
    assert all(len(d["annotations"]) == len(d["images"]) for d in parts.values())
    small = bench.real_split(_labels(tmp_path / "small.json", 42), 30, tmp_path / "small")
    assert small["counts"] == {"train": 30, "val": 4, "test": 8}  # val shrinks to leave a test set


def test_frames_left_without_labels_are_not_split(tmp_path):
    bench = _bench()
    path = tmp_path / "labels.json"
    coco = json.loads(Path(_labels(path, 60)).read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] > 12]  # 12 frames: the animal out of view
    path.write_text(json.dumps(coco))
    split = bench.real_split(str(path), 30, tmp_path / "split")
    assert split["frames"] == 48 and split["counts"] == {"train": 30, "val": 6, "test": 12}
    parts = [json.loads(Path(split[k]).read_text()) for k in ("train", "val", "test")]
    assert all(len(d["annotations"]) == len(d["images"]) for d in parts)


def test_too_few_frames_for_a_split_is_one_clear_error(tmp_path):
    bench = _bench()
    with pytest.raises(SagePoseError, match="too few to validate and test on"):
        bench.real_split(_labels(tmp_path / "labels.json", 32), 30, tmp_path / "split")


def test_table_compares_semi_with_supervised_given_the_same_steps():
    bench = _bench()
    gap = {"difference": 0.27, "p_worse": 0.45, "frames": 10}  # worse on val within chance: stage 1 kept
    rows = [_row("supervised", 0, 10.0, steps=1000),
            {**_row("semi", 0, 8.0, steps=1500), "best_is_start": False, "val_gap": gap},
            {**_row("supervised_more", 0, 9.0, steps=1500), "best_is_start": True},
            _row("supervised_same_steps", 0, 9.5, steps=1500)]
    text = bench.table({"metric": "pixel_error", "header": "mouse"}, rows)
    semi_line = next(line for line in text.splitlines() if line.startswith("| semi |"))
    assert f"| {8 / 10:.3f} | {8 / 9.5:.3f} | {8 / 9:.3f} | 0 of 1 | 0: +0.27 (0.45) |" in semi_line
    assert f"semi / supervised_same_steps = {8 / 9.5:.3f} (<= 0.9: gains)" in text


@pytest.mark.slow
def test_quick_synthetic_run_writes_table_json_and_png_with_equal_steps(tmp_path):
    bench = _bench()
    results = bench.main(["--part", "synthetic", "--quick", "--seeds", "0", "--out", str(tmp_path)])
    rows = results["synthetic"]
    assert [r["arm"] for r in rows] == ["supervised", "semi"]
    assert {r["steps"] for r in rows} == {bench.QUICK["steps"]}
    text = (tmp_path / "ssl_synthetic.md").read_text()
    assert "| supervised |" in text and "| semi |" in text and "gain vs sup" in text
    saved = json.loads((tmp_path / "ssl_synthetic.json").read_text())
    assert [r["arm"] for r in saved["rows"]] == ["supervised", "semi"]
    assert all(0.0 <= r["AP"] <= 1.0 and r["pixel_error"] > 0 for r in saved["rows"])
    image = cv2.imread(str(tmp_path / "ssl_synthetic.png"))
    assert image is not None and image.shape[1] == 4 * 320 and image.shape[0] > 2 * 256  # bars over 2 x 4 frames
    for r in rows:  # each arm was tested on its own last checkpoint
        assert Path(r["checkpoint"]).name == "last.ckpt" and Path(r["checkpoint"]).parent.parent == Path(r["out"])


@pytest.mark.slow
def test_real_part_runs_every_arm_as_a_user_would_with_equal_steps(tmp_path):
    """run_real on tiny synthetic data: semi's stage 0 is the supervised arm, semi / supervised_more /
    supervised_same_steps train the same steps, each tested on its best.ckpt."""
    from sagepose.data.synth import generate_dataset

    bench = _bench()
    train = generate_dataset(tmp_path / "data", 6, seed=1, split="train")
    val = generate_dataset(tmp_path / "data", 2, seed=2, split="val")
    test = generate_dataset(tmp_path / "data", 2, seed=3, split="test")
    unlabeled = generate_dataset(tmp_path / "unlabeled", 4, seed=4, split="train")
    out = tmp_path / "bench"
    out.mkdir()
    (out / "stage0.yaml").write_text(bench.QUICK_STAGE0)
    common = [f"data.train_json={train}", f"data.val_json={val}", "model.schema=coco", "trainer.progress_bar=False",
              "trainer.max_steps=2", *bench.QUICK["overrides"]]
    plan = {"name": "tiny", "common": common, "test_json": str(test), "rows": ["semi"],
            "semi": [f"ssl.unlabeled={unlabeled}", f"ssl.warm_start={out / 'stage0.yaml'}", "ssl.lambda_temporal=0"]}
    rows = bench.run_real(plan, [0], out)
    assert [r["arm"] for r in rows] == ["supervised", "semi", "semi_stage1", "supervised_more",
                                        "supervised_same_steps"]
    steps = {r["arm"]: r["steps"] for r in rows}
    assert steps == {"supervised": 3, "semi": 5, "semi_stage1": 5, "supervised_more": 5, "supervised_same_steps": 5}
    semi = next(r for r in rows if r["arm"] == "semi")  # stage 1 (2 steps, val every 500) still scored at its end
    assert semi["best_is_start"] in (True, False) and semi["val_start"] is not None
    summary = json.loads((out / "semi-seed0" / "train_summary.json").read_text())
    assert summary["best_val_AP"] is not None
    for r in rows:
        assert Path(r["out"], "metrics.json").is_file() and r["pixel_error"] > 0
