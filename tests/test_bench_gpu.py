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


@pytest.mark.parametrize("recipe", ["finetune_vitpose_b_24gb_ssl", "finetune_sapiens2_1b_24gb_lora_ssl"])
def test_a_semi_supervised_recipe_trains_in_the_memory_part(recipe, tmp_path):
    """bench_memory's GPU path (what bench_gpu's memory part runs per recipe) trains the semi-supervised recipes too:
    their unlabeled source is the synthetic people's boxes, no stage 0 first. Here a tiny model, on the CPU."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_memory

    from sagepose.configs import resolve_config
    from sagepose.data.synth import generate_dataset
    from sagepose.train.run import fit

    generate_dataset(tmp_path / "data", 4, seed=0, split="train")
    arch = ("model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}" if "vitpose" in recipe else
            "model.arch={'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64, "
            "'num_storage_tokens': 1, 'deconv_channels': (16, 16), 'conv_channels': (16,)}")
    cfg = bench_memory.recipe_run_config(
        Path(resolve_config(recipe)), tmp_path / "data", str(tmp_path / "run"), 1,
        [arch, "model.input_size=[48, 64]", "trainer.accelerator=cpu", "trainer.precision=32-true",
         "data.num_workers=0", "trainer.accumulate_grad_batches=1", "optim.fused=false"])
    assert cfg.ssl.mode == "semi" and cfg.ssl.unlabeled and cfg.ssl.warm_start is None
    assert fit(cfg)["steps"] == 1
