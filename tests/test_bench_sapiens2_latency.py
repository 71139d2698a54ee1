"""benchmarks/bench_latency_sapiens2.py in its ``--quick`` mode: the official Sapiens2 code (a shrunk pose model)
and sagepose's, loaded from the same official-layout file, agree, every case is timed, and the table and json are
written; a disagreement stops the run. The times mean nothing at this size: the full run measures them.

Needs a git snapshot of facebookresearch/sapiens2 (the official code is the reference; a fresh clone has none):
skipped without it."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_latency_sapiens2",
                                                  REPO / "benchmarks" / "bench_latency_sapiens2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench():
    module = _bench()
    snapshot = module.official_tools().MIRROR
    if not Path(snapshot).is_dir() or shutil.which("git") is None:
        pytest.skip(f"no git snapshot of facebookresearch/sapiens2 at {snapshot} (the official code this benchmark "
                    "compares against; not part of a clone)")
    threads, modules = torch.get_num_threads(), set(sys.modules)
    yield module
    torch.set_num_threads(threads)  # main() sets the thread count for the process
    for name in set(sys.modules) - modules:  # the official files' stub packages
        if name == "sapiens" or name.startswith(("sapiens.", "sapiens2_official")):
            del sys.modules[name]


def test_the_quick_run_agrees_with_the_official_code_and_writes_its_table(bench, tmp_path):
    res = bench.main(["--quick", "--batch", "2", "--threads", "1", "--out", str(tmp_path / "s2")])
    rows = res["rows"]
    float32 = [r for r in rows if r["case"].startswith("float32")]
    assert [(r["case"], r["batch"]) for r in float32] == [
        ("float32, same call", 1), ("float32, same call", 2),
        ("float32, sagepose inference mode", 1), ("float32, sagepose inference mode", 2)]
    assert all(r["rel_diff"] <= bench.REL_BOUND and r["official_ms"] > 0 and r["sagepose_ms"] > 0 for r in float32)
    assert len(rows) == (8 if "timed" in res["bf16"] else 4)
    table = (tmp_path / "s2.md").read_text()
    assert "python benchmarks/bench_latency_sapiens2.py --quick" in table and "facebookresearch/sapiens2@" in table
    for case in {r["case"] for r in rows}:
        assert f"| {case} | 1 |" in table and f"| {case} | 2 |" in table
    saved = json.loads((tmp_path / "s2.json").read_text())
    assert saved["params"] == res["params"] > 0 and len(saved["rows"]) == len(rows)


def test_a_disagreement_stops_the_run(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "REL_BOUND", -1.0)  # any difference, even none, is too much
    with pytest.raises(SystemExit, match="float32, same call, batch 1: sagepose's heatmaps differ"):
        bench.main(["--quick", "--threads", "1", "--out", str(tmp_path / "s2")])
    assert not (tmp_path / "s2.md").exists()
