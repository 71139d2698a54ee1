"""Typed configs: YAML + key=value overrides, literal parsing, did-you-mean on typos."""
from __future__ import annotations

import pytest

from sagepose.config import ConfigError, dump_config, load_config, parse_value, replace
from sagepose.configs import CONFIG_DIR, resolve_config


def test_overrides_are_parsed_as_literals_and_typed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: vit-tiny\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(p, ["optim.lr=2e-4", "data.scale_factor=[0.7, 1.3]", "trainer.max_epochs=3",
                          "model.codec={'sigma': 3}", "data.det_json=null"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.scale_factor == (0.7, 1.3)
    assert cfg.trainer.max_epochs == 3
    assert cfg.model.codec == {"sigma": 3}
    assert cfg.data.det_json is None


def test_unknown_key_fails_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'layer_decay'"):
        load_config(None, ["optim.layer_decy=0.75"])
    p = tmp_path / "typo.yaml"
    p.write_text("optim:\n  decay_multi: 0.0\n")
    with pytest.raises(ConfigError, match="typo.yaml.*unknown key 'decay_multi'"):
        load_config(p)


def test_wrong_type_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"^override trainer.max_epochs=1.5: expected an integer"):
        load_config(None, ["trainer.max_epochs=1.5"])
    p = tmp_path / "bad.yaml"
    p.write_text("trainer:\n  max_epochs: 1.5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: trainer.max_epochs: expected an integer"):
        load_config(p)


def test_an_override_error_names_the_override_not_the_yaml_file(tmp_path):
    p = tmp_path / "recipe.yaml"
    p.write_text("optim:\n  lr: 1.0e-3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["trainer.max_epochs=3", "optim.lrr=1"])
    assert str(e.value) == "override optim.lrr=1: unknown key 'lrr'; did you mean 'lr'?"
    with pytest.raises(ConfigError) as e:
        load_config(p, ["data.batch_size=-4"])
    assert str(e.value) == "override data.batch_size=-4: must be at least 1"
    p.write_text("data:\n  batch_size: -4\n")  # the same value from the file is blamed on the file
    with pytest.raises(ConfigError, match=r"recipe.yaml: data.batch_size=-4: must be at least 1"):
        load_config(p)


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=-4", "must be at least 1"),
    ("optim.schedule=cosin", "unknown schedule 'cosin'; did you mean 'cosine'?"),
    ("model.name=vit-tiniest", "unknown model 'vit-tiniest'; did you mean 'vit-tiny'?"),
    ("trainer.precision=bf16-mixd", "unknown precision 'bf16-mixd'; did you mean 'bf16-mixed'?"),
    ("model.heatmap_output=softmx", "unknown heatmap output 'softmx'; did you mean 'softmax'?"),
    ("model.schema=mpi", "unknown keypoint schema 'mpi'; did you mean 'mpii'?"),
    ("trainer.strategy=dpp", "unknown strategy 'dpp'; did you mean 'ddp'?"),
    ("trainer.accelerator=gpuu", "unknown accelerator 'gpuu'; did you mean 'gpu'?"),
    ("data.flip_prob=1.5", "a probability must be in [0, 1]"),
    ("optim.lr=0", "must be positive"),
    ("ssl.style_mix_prob=2", "a probability must be in [0, 1]"),
    ("ssl.style_mix_ratio=[0.8,0.2]", "must be (low, high) with 0 <= low <= high <= 1"),
    ("ssl.style_mix_band=0", "must be in (0, 1]"),
])
def test_values_are_validated_when_the_config_loads(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("demo_tiny_vit", [override])
    assert str(e.value) == f"override {override}: {message}"
    assert e.value.key == override.split("=")[0]


def test_valid_choices_outside_the_fast_path_are_accepted():
    cfg = load_config(None, ["trainer.strategy=ddp_spawn", "trainer.precision=bf16-mixed", "model.schema=aic"])
    assert cfg.trainer.strategy == "ddp_spawn" and cfg.model.schema == "aic"


def test_load_config_resolves_bundled_recipe_names():
    by_name = load_config("demo_tiny_vit", ["trainer.max_epochs=1"])
    assert by_name == load_config(CONFIG_DIR / "demo_tiny_vit.yaml", ["trainer.max_epochs=1"])
    assert by_name.model.heatmap_output == "softmax" and by_name.trainer.max_epochs == 1
    with pytest.raises(ConfigError, match="demo_tiny_vitt: no such config file or bundled recipe"):
        load_config("demo_tiny_vitt")


def test_config_errors_are_sagepose_errors_and_value_errors():
    from sagepose.errors import SagePoseError

    with pytest.raises(SagePoseError):
        load_config(None, ["optim.lrr=1"])
    assert issubclass(ConfigError, ValueError)


def test_parse_value_never_evaluates_code():
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"
    assert parse_value("true") is True and parse_value("3") == 3 and parse_value("a/b.json") == "a/b.json"


def test_every_bundled_recipe_loads_and_round_trips(tmp_path):
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert "demo_tiny_vit" in names
    for name in names:
        cfg = load_config(resolve_config(name))
        dumped = tmp_path / f"{name}.yaml"
        dumped.write_text(dump_config(cfg))
        assert load_config(dumped) == cfg


def test_replace_changes_only_named_fields():
    cfg = load_config(None)
    new = replace(cfg, trainer={"max_epochs": 1})
    assert new.trainer.max_epochs == 1 and new.optim == cfg.optim
