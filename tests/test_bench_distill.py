"""benchmarks/bench_distill.py: the table's arithmetic, and a --quick synthetic run (teacher, supervised and
distilled students the same steps; each exported to ONNX and timed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_distill

    return bench_distill


def test_table_means_seeds_and_compares_with_the_teacher_and_the_supervised_student():
    bench = _bench()
    rows = [{"arm": a, "seed": s, "pixel_error": e, "best_ms": ms, "params": n}
            for a, s, e, ms, n in [("teacher", 0, 8.0, 4.0, 1000), ("teacher", 1, 10.0, 4.0, 1000),
                                   ("student_supervised", 0, 12.0, 1.0, 100), ("student_supervised", 1, 12.0, 1.0, 100),
                                   ("student_distilled", 0, 9.0, 1.0, 100), ("student_distilled", 1, 9.0, 1.0, 100)]]
    text = bench.table("h", rows)
    assert "| teacher | 9.000 (8.000, 10.000) | 1.00x | 0.75x | 1,000 | 4.000 | 1.00x |" in text
    assert "| student_distilled | 9.000 (9.000, 9.000) | 1.00x | 0.75x | 100 | 1.000 | 4.00x |" in text
    ap = [{**{k: v for k, v in r.items() if k != "pixel_error"}, "AP": r["pixel_error"] / 20} for r in rows]
    assert "| student_distilled | 0.450 (0.450, 0.450) | +0.000 | -0.150 |" in bench.table("h", ap)


@pytest.mark.slow
def test_quick_synthetic_run_trains_three_arms_the_same_steps(tmp_path):
    pytest.importorskip("onnxruntime")
    bench = _bench()
    rows = bench.main(["--part", "synthetic", "--quick", "--seeds", "0", "--out", str(tmp_path)])["synthetic"]
    assert [r["arm"] for r in rows] == ["teacher", "student_supervised", "student_distilled"]
    assert {r["steps"] for r in rows} == {bench.QUICK["steps"]}
    assert all(r["best_ms"] > 0 for r in rows)
    config = (tmp_path / "synthetic" / "student_distilled-seed0" / "config.yaml").read_text()
    assert "teacher-seed0" in config and "fusion: false" in config
    assert len(json.loads((tmp_path / "distill_synthetic.json").read_text())) == 3
