"""trainer.compile: every family's forward is one graph for torch.compile (no graph breaks), and a compiled run
trains as the eager one does, with checkpoints under the plain names."""
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sagepose.config import ConfigError, load_config
from sagepose.data.synth import generate_dataset
from sagepose.models import build_model
from sagepose.train.checks import check_run
from sagepose.train.run import fit

SMALL_VIT = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64)
SMALL_HR = dict(widths=(8, 16, 24, 32), num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)
# every family the zoo builds, shrunk (the same modules, fewer and narrower)
FAMILIES = {
    "vitpose-b": dict(arch=SMALL_VIT, input_size=(48, 64)),
    "vitpose-s-simple": dict(arch=SMALL_VIT, input_size=(48, 64)),
    "sapiens-0.3b": dict(arch=dict(SMALL_VIT, deconv_channels=(16, 16), conv_channels=(16, 16)), input_size=(48, 64)),
    "hrnet-w32": dict(arch=SMALL_HR, input_size=(64, 64)),
    "hrformer-s": dict(arch=dict(SMALL_HR, num_heads=(1, 2, 2, 4)), input_size=(64, 64)),
    "vit-tiny": dict(heatmap_output="softmax"),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_training_forward_of_every_family_is_one_graph(name):
    torch.manual_seed(0)
    stochastic_depth = {} if name.startswith("hrnet") else {"drop_path_rate": 0.1}  # HRNet has none
    model = build_model(name, **stochastic_depth, **FAMILIES[name]).train()
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 8, seed=3, split="train")
    return root


class Weights(Callback):
    def on_train_end(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.compiled = getattr(pl_module.model, "_compiled_call_impl", None) is not None


def _cfg(data, out, *extra):
    return load_config(None, [
        f"data.train_json={data / 'train.json'}", f"trainer.out_dir={out}", "model.name=vit-tiny",
        "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2, 'mlp_dim': 64}", "data.batch_size=8",
        "data.num_workers=0", "optim.warmup_iters=0", "optim.lr=1e-3", "trainer.max_steps=3",
        "trainer.progress_bar=false", "trainer.accelerator=cpu", "data.rotate_prob=0", *extra])


def test_a_compiled_run_trains_as_the_eager_one(data, tmp_path):
    """aot_eager: dynamo's graph and AOTAutograd's joint forward-backward, run by eager kernels -- what
    compiling changes about the step, without the inductor code generation a CPU test cannot afford."""
    torch._dynamo.reset()
    states = {}
    for arm, extra in (("eager", []), ("compiled", ["trainer.compile=true", "trainer.compile_backend=aot_eager"])):
        cap = Weights()
        summary = fit(_cfg(data, tmp_path / arm, *extra), callbacks=[cap])
        assert summary["steps"] == 3 and cap.compiled == (arm == "compiled")
        states[arm] = cap.state
    assert states["eager"].keys() == states["compiled"].keys()  # no _orig_mod. prefixes
    diff = max((states["eager"][k].float() - states["compiled"][k].float()).abs().max().item() for k in states["eager"])
    moved = max((states["eager"][k].float()).abs().max().item() for k in states["eager"])
    assert diff < 1e-4 and moved > 0, diff
    ckpt = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


def test_compile_with_fsdp_is_refused_in_one_line(data, tmp_path):
    with pytest.raises(ConfigError, match="trainer.compile with trainer.strategy=fsdp"):
        check_run(_cfg(data, tmp_path, "trainer.compile=true", "trainer.strategy=fsdp"))
    with pytest.raises(ConfigError, match="trainer.compile_mode"):
        check_run(_cfg(data, tmp_path, "trainer.compile_mode=fastest"))
