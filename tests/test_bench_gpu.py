"""benchmarks/bench_gpu.py in its CPU mode: every part runs end to end (tiny model, a few steps), the table has each
row and the json every figure. The figures themselves mean nothing on a CPU: the GPU run is what measures them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_smoke_run_fills_every_row(tmp_path):
    res = _bench().main(["--cpu", "--steps", "1", "--warmup", "1", "--out", str(tmp_path), "--data-dir",
                         str(tmp_path / "data"), "--recipes", "finetune_vitpose_b_4gb"])
    table = (tmp_path / "gpu.md").read_text()
    for row in ("train step, synthetic tensors", "train end to end from JPEGs", "inference, boxes given, from JPEGs "
                "(eager)", "inference, boxes given, from JPEGs (compiled)", "finetune_vitpose_b_4gb"):
        assert row in table, row
    saved = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert saved["e2e"]["eager"]["img_s"] > 0 and saved["e2e"]["compiled"]["img_s"] > 0
    assert saved["infer"]["eager"]["people"] > 0 and saved["infer"]["eager"]["ceiling_img_s"] > 0
    assert res["memory"][0]["peak"] > 0 and res["memory"][0]["measured"] == "CPU proxy"


def test_without_cuda_and_without_cpu_it_says_so():
    bench = _bench()
    if bench.torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--parts", "train"])
