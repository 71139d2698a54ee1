"""User-facing entry point: ``sagepose.load(name_or_config, checkpoint, device)``."""
from __future__ import annotations

import os
from pathlib import Path

from sagepose.models.checkpoint import load_checkpoint
from sagepose.models.estimator import TopDownEstimator
from sagepose.models.zoo import MODELS, build_model, build_model_from_config


def load(name_or_config, checkpoint: str | os.PathLike | dict | None = None,
         device: str = "cpu") -> TopDownEstimator:
    """A ready-to-predict model in eval mode, with optional weights loaded strictly.

    ``name_or_config``: a zoo name (``"vitpose-b"``), a YAML config path, a loaded
    :class:`sagepose.config.Config`, or a model-config dict (see ``build_model_from_config``).
    ``checkpoint``: a sagepose checkpoint (Lightning ``.ckpt`` or a plain state dict), an MMPose
    or an official ViTPose file; the format is detected from its keys.
    """
    if hasattr(name_or_config, "model"):  # a loaded Config
        model = build_model_from_config(name_or_config.model)
    elif isinstance(name_or_config, dict):
        model = build_model_from_config(name_or_config)
    elif str(name_or_config) in MODELS:
        model = build_model(str(name_or_config))
    elif Path(name_or_config).suffix in (".yaml", ".yml"):
        from sagepose.config import load_config  # deferred: only config users need it

        model = build_model_from_config(load_config(name_or_config).model)
    else:
        raise ValueError(f"{name_or_config!r} is neither a zoo model ({', '.join(sorted(MODELS))}) "
                         "nor a .yaml config")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=True)
    return model.to(device).eval()
