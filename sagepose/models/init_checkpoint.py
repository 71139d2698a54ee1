"""``model.init_checkpoint``: the weights a training run starts from, put on a freshly built model
(:func:`sagepose.models.zoo.build_model_from_config` calls :func:`load_init_checkpoint`).

The backbone loads strictly; the head as far as the keypoint sets allow (a new skeleton's head from the old one,
:mod:`sagepose.models.head_transplant`); a :mod:`sagepose.hub` name is its published file; an adapter run's
checkpoint is its base, then the adapters (:mod:`sagepose.models.lora`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from sagepose import hub
from sagepose.keypoint_maps import MappingError
from sagepose.models import head_transplant
from sagepose.models.checkpoint import CheckpointMismatchError, convert_state_dict, load_checkpoint, read_checkpoint
from sagepose.models.estimator import TopDownEstimator
from sagepose.models.lora import adapter_meta, add_adapters, load_adapters


def load_init_checkpoint(model: TopDownEstimator, init, head_map: dict | None, lora: dict) -> bool:
    """``model.init_checkpoint``: the backbone strictly, the head as far as the keypoint sets allow. A name of
    :data:`sagepose.hub.WEIGHTS` that is no file (``sapiens2-1b``) is that published file, fetched once. An adapter
    run's checkpoint (a stage a semi-supervised run starts from) is its base, then ``lora``'s adapters, then its
    weights on them; returns whether it put adapters on."""
    if isinstance(init, str) and init in hub.WEIGHTS and not Path(init).exists():
        init = hub.fetch(init)
    raw = read_checkpoint(init)
    meta = adapter_meta(raw)
    if meta is not None:
        if not lora.get("rank"):
            raise CheckpointMismatchError(f"{init}: an adapter run's checkpoint (adapters and trained parts, no "
                                          "base): continue with its model.lora, or fold them into its base first "
                                          f"(sagepose convert {init} MERGED --merge) and start from that")
        load_init_checkpoint(model, meta["base"], head_map, {})
        add_adapters(model, **lora)
        load_adapters(model, raw, str(init), lora.get("train_blocks", 0))
        return True
    sd = convert_state_dict(raw, None, str(init))[0]
    source = head_transplant.source_schema(raw, sd, model.schema, str(init), mapped=bool(head_map))
    before = head_transplant.init_head(model)
    missing, unexpected, shaped = load_checkpoint(model, raw, strict=False)
    head_shaped = [k for k in shaped if k.startswith("head.")]
    stray = [k for k in missing if not k.startswith("head.")] + unexpected + [k for k in shaped
                                                                             if not k.startswith("head.")]
    if stray:
        raise CheckpointMismatchError(f"{init}: init checkpoint does not match the backbone: {stray}")
    target = model.schema
    if source is None or (source.keypoints == target.keypoints and not head_map):
        return False
    layers = {k.split(":")[0].rsplit(".", 1)[0] for k in head_shaped}
    finals = [k for k in before if k.endswith(".weight")]
    fits = all(k in sd and sd[k].shape[1:] == before[k].shape[1:] for k in finals)  # all but the joint rows
    if not finals or not fits or not layers <= set(head_transplant.HEAD_OUTPUTS):
        warnings.warn(f"{init}: the backbone loaded; the head is new -- the checkpoint's differs beyond its final "
                      f"layer ({', '.join(head_shaped)}); those layers start from their initialisation", stacklevel=3)
        return False
    sources = head_transplant.channel_sources(source, target, head_map)
    n = sum(s is not None for s in sources)
    if n and not head_transplant.carries_over(model.head, sources, source.num_keypoints):
        why = (f"{type(model.head).__name__}'s joints attend to each other, so copying {n} of {target.name}'s "
               f"{target.num_keypoints} joints from {source.name}'s {source.num_keypoints} would not predict them as "
               "the checkpoint does (only its own joint set, each once, does)")
        if head_map:
            raise MappingError(f"model.head_map: {init}: {why}; map each of its joints to one of yours, or leave "
                               "model.head_map empty (the head's final conv then starts new)")
        head_transplant.transplant_head(model, sd, [None] * len(sources), before)
        warnings.warn(f"{init}: the backbone and the head's shared layers loaded; its final conv is new: {why}",
                      stacklevel=3)
        return False
    n = head_transplant.transplant_head(model, sd, sources, before)
    line = f"head: {n} of {target.num_keypoints} channels from the checkpoint ({target.name} <- {source.name})"
    if n:
        print(line, flush=True)
    elif head_shaped:
        warnings.warn(f"{init}: {line}; the backbone loaded; the head is new -- the checkpoint's is shaped for "
                      f"another keypoint count than schema {target.name} ({target.num_keypoints}): "
                      f"{', '.join(head_shaped)}; those layers start from their initialisation", stacklevel=3)
    else:
        warnings.warn(f"{init}: {line}; the backbone loaded; the head is new -- no joint of {source.name} is one "
                      f"of {target.name}'s (model.head_map names them); it starts from its initialisation",
                      stacklevel=3)
    return False
