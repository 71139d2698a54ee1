"""benchmarks/bench_ssl.py: the mouse split, the table's arithmetic, the equal-steps guard, and a --quick smoke run."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sagepose.errors import SagePoseError

REPO = Path(__file__).resolve().parents[1]
MOUSE = REPO.parent / "shared" / "realdata" / "mirror-mouse"


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
    assert "Floor met" in text  # 8.5 <= 0.9 * 11 = 9.9


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


@pytest.mark.skipif(not (MOUSE / "CollectedData.csv").is_file(), reason="mirror-mouse data not present")
def test_mouse_split_is_30_train_and_the_rest_test_disjoint(tmp_path):
    bench = _bench()
    with open(MOUSE / "CollectedData.csv", newline="") as f:
        frames = sorted(row[0] for row in list(csv.reader(f))[3:])  # 3 header rows: scorer, bodyparts, coords
    train_json, test_json, n = bench.mouse_split(MOUSE, tmp_path)
    train, test = json.loads(Path(train_json).read_text()), json.loads(Path(test_json).read_text())
    names = [{im["file_name"] for im in d["images"]} for d in (train, test)]
    assert n == len(frames) == 90
    assert len(names[0]) == 30 and len(names[1]) == 60 and not names[0] & names[1]
    assert names[0] | names[1] == set(frames)
    assert train["categories"] == test["categories"]
    assert len(train["annotations"]) == 30 and len(test["annotations"]) == 60
    # the fixed split: a seed-0 permutation of the frames sorted by file name
    order = np.random.default_rng(0).permutation(len(frames))
    assert names[0] == {frames[i] for i in order[:30]}


def test_missing_mouse_root_is_one_clear_error(tmp_path):
    bench = _bench()
    with pytest.raises(SagePoseError, match="CollectedData.csv: not found"):
        bench.mouse_split(tmp_path / "nowhere", tmp_path)


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
