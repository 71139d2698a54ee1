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


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="trainer.max_epochs: expected an integer"):
        load_config(None, ["trainer.max_epochs=1.5"])


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
