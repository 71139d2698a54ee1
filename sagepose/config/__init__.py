"""Typed run configuration: frozen nested dataclasses <- YAML <- ``key=value`` overrides.

    cfg = load_config("configs/vitpose_b_coco_256x192.yaml", ["optim.lr=1e-4", "trainer.max_epochs=5"])

Values on the command line are parsed with ``ast.literal_eval`` (never ``eval``); strings
that are not Python literals stay strings. An unknown key fails with a "did you mean",
so a typo never silently does nothing.

``sections.py``: the dataclasses and their defaults; ``parse.py``: plain data <-> a typed config and the overrides;
``validation.py``: ``validate``; ``loading.py``: ``load_config``. Import every name from here.
"""
from sagepose.config.loading import load_config
from sagepose.config.parse import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    dump_config,
    parse_value,
    replace,
    to_dict,
)
from sagepose.config.sections import (
    Config,
    DataConfig,
    DatasetConfig,
    DistillConfig,
    FusionLossWeights,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    SSLConfig,
    TrainerConfig,
    ViewConfig,
)
from sagepose.config.validation import (
    ACCELERATORS,
    COMPILE_MODES,
    CONSISTENCIES,
    DATASET_FORMATS,
    HEAD_LAYOUTS,
    HEATMAP_OUTPUTS,
    KEEP_START_RULES,
    PRECISIONS,
    SCHEDULES,
    SSL_MODES,
    UNION_MODES,
    validate,
)

__all__ = [
    "ACCELERATORS", "COMPILE_MODES", "CONSISTENCIES", "DATASET_FORMATS", "HEAD_LAYOUTS", "HEATMAP_OUTPUTS",
    "KEEP_START_RULES", "PRECISIONS", "SCHEDULES", "SSL_MODES", "UNION_MODES",
    "Config", "ConfigError", "DataConfig", "DatasetConfig", "FusionLossWeights", "LoraConfig", "ModelConfig",
    "DistillConfig", "OptimConfig", "SSLConfig", "TrainerConfig", "ViewConfig",
    "apply_overrides", "config_from_dict", "dump_config", "load_config", "parse_value", "replace",
    "to_dict", "validate",
]
