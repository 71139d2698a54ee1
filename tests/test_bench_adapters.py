"""benchmarks/bench_adapters.py: the table's arithmetic, and a --quick synthetic run of both modes (same steps, the
adapter runs' checkpoints holding adapters and no frozen base)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_adapters

    return bench_adapters


def test_table_means_seeds_and_compares_each_mode_with_full():
    bench = _bench()
    rows = [{"arm": "semi", "mode": m, "seed": s, "pixel_error": e, "train_minutes": 1.0, "steps": 10}
            for m, s, e in [("full", 0, 8.0), ("full", 1, 10.0), ("adapters", 0, 12.0), ("adapters", 1, 15.0)]]
    text = bench.table("header", rows, "pixel_error", {"full": (100, 100), "adapters": (20, 110)})
    assert "| semi | full | 0.000M of 0.000M | 9.000 | 0: 8.000, 1: 10.000 | -- |" in text
    assert "| semi | adapters | 0.000M of 0.000M | 13.500 | 0: 12.000, 1: 15.000 | 1.500x |" in text
    ap = [{**r, "AP": r["pixel_error"] / 20} for r in rows]
    assert "| 0.675 | 0: 0.600, 1: 0.750 | +0.225 |" in bench.table("h", ap, "AP", {"full": (1, 1), "adapters": (1, 1)})


def test_quick_synthetic_run_trains_both_modes_the_same_steps(tmp_path):
    bench = _bench()
    rows = bench.main(["--part", "synthetic", "--quick", "--seeds", "0", "--out", str(tmp_path)])["synthetic"]
    assert [(r["arm"], r["mode"]) for r in rows] == [("supervised", "full"), ("semi", "full"),
                                                     ("supervised", "adapters"), ("semi", "adapters")]
    assert {r["steps"] for r in rows} == {bench.QUICK["steps"]}
    text = (tmp_path / "adapters_synthetic.md").read_text()
    assert "| semi | adapters |" in text and "model.lora.rank=16" in text
    assert len(json.loads((tmp_path / "adapters_synthetic.json").read_text())["rows"]) == 4
    for r in rows:
        state = torch.load(Path(r["out"]) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        adapted = any(k.endswith("lora_b") for k in state)
        assert adapted == (r["mode"] == "adapters")
        assert not adapted or not any(k.endswith("blocks.0.attn.qkv.weight") for k in state)  # no frozen base
