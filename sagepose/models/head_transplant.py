"""A new skeleton's head from an old one: each output channel whose joint the init checkpoint also predicts starts
from the checkpoint's channel, the others keep their initialisation.

Fine-tuning a pose model to another keypoint set (Sapiens' 308 Goliath points -> COCO-17, COCO -> a rig that shares
some joints) keeps the whole network but the final layer, whose rows are one (or, for the fusion head's offsets, two)
per joint. :func:`transplant_head` copies those rows joint by joint, so a COCO-17 model built from a Goliath
checkpoint predicts, before any training, exactly the Goliath model's heatmaps for those 17 joints.

Which checkpoint joint a model joint comes from (:func:`channel_sources`): an explicit ``model.head_map`` entry
(``{model joint: checkpoint joint}``) first; else :func:`sagepose.keypoint_maps.keypoint_map` -- the equivalence table
(``keypoint_sets.JOINT_EQUIVALENCES``), extended here by the ``*_TO_COCO17`` tables (Goliath's 17 COCO joints), or
identical names between schemas the table does not list. Midpoints are no channels and are not used.

What the checkpoint's channels mean (:func:`source_schema`): the schema a sagepose checkpoint stores; for a file
that stores none (MMPose, ViTPose, Sapiens ``.pth``), the built-in schema its head's channel count names
unambiguously (:data:`SCHEMA_BY_COUNT`), else ``kp0 .. kp{K-1}`` (:func:`sagepose.keypoints.generic_schema`),
which only a ``model.head_map`` can match. A file storing no schema whose head already has the model's channel
count loads as it is (the behaviour before transplants).

A head whose keypoints attend to each other (RTMPose's RTMCC head: ``joints_attend``) predicts a joint from the
whole joint set, so its copied rows reproduce the checkpoint only for the checkpoint's own joints, each once, in any
order (in its order where the attention is positional): :func:`carries_over`. For any other joint set the copy is
no transplant (an RTMPose fitted to six mirror-mouse frames to ~2 px: 6 of its joints copied into an 8-joint head
moved 38 px, median, from its predictions; ``tests/test_rtmpose_pieces.py``) and it is not made.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sagepose import keypoint_sets
from sagepose.keypoint_maps import MappingError, keypoint_map
from sagepose.keypoints import KeypointSchema, generic_schema, load_schema, schema_from_dict

# the final layers of the heads (sagepose names) and the output rows each gives per joint: the plain heatmap
# heads' final conv; the fusion head's heatmap, offset (x, y per joint, rows 2j and 2j + 1) and log-variance convs
HEAD_OUTPUTS = {"head.final_conv": 1, "head.heatmap": 1, "head.offset": 2, "head.log_var": 1}
# the built-in schema a bare head's channel count names (17 is also posetrack18's count: COCO's joints by name)
SCHEMA_BY_COUNT = {17: "coco", 16: "mpii", 133: "coco_wholebody", 308: "goliath"}
# {schema: its index of each COCO-17 joint, in COCO's order}: correspondences beyond JOINT_EQUIVALENCES' rows
TO_COCO17 = {"goliath": keypoint_sets.GOLIATH_TO_COCO17}


def stored_schema(raw, source: str = "checkpoint") -> KeypointSchema | None:
    """The keypoint schema a checkpoint stores (a training ``.ckpt``'s ``hyper_parameters["schema"]``, a converted
    file's ``sagepose["schema"]``), or None if it stores none (:func:`sagepose.recipe.checkpoint_schema`)."""
    if not isinstance(raw, dict):
        return None
    meta = raw.get("sagepose") if isinstance(raw.get("sagepose"), dict) else {}
    hparams = raw.get("hyper_parameters") if isinstance(raw.get("hyper_parameters"), dict) else {}
    stored = hparams.get("schema") or meta.get("schema")
    if not isinstance(stored, dict):
        return None
    return schema_from_dict(stored, where=f"{source}: its stored keypoint schema")


def head_outputs(sd: Mapping[str, torch.Tensor]) -> int | None:
    """The joint count a (sagepose-named) state dict's head predicts, or None if it holds no head."""
    for prefix, rows in HEAD_OUTPUTS.items():
        if f"{prefix}.weight" in sd:
            return int(sd[f"{prefix}.weight"].shape[0]) // rows
    return None


def source_schema(raw, sd: Mapping[str, torch.Tensor], target: KeypointSchema, source: str = "checkpoint",
                  mapped: bool = False) -> KeypointSchema | None:
    """What the checkpoint's head channels mean (see the module doc); None: no head, or one to load as it is (a
    file storing no schema, with the model's channel count, unless ``mapped``: a ``model.head_map`` is given)."""
    k = head_outputs(sd)
    if k is None:
        return None
    stored = stored_schema(raw, source)
    if stored is not None:
        return stored if stored.num_keypoints == k else generic_schema(k)
    if k == target.num_keypoints and not mapped:
        return None
    return load_schema(SCHEMA_BY_COUNT[k]) if k in SCHEMA_BY_COUNT else generic_schema(k)


def _equivalences() -> tuple[dict, ...]:
    """JOINT_EQUIVALENCES with each :data:`TO_COCO17` schema's joints added to the rows of their COCO joints."""
    coco, extra = load_schema("coco").keypoints, {}
    for name, table in TO_COCO17.items():
        for c, i in enumerate(table):
            extra.setdefault(coco[c], {})[name] = load_schema(name).keypoints[i]
    rows = [dict(row, **extra.pop(row["coco"], {})) if "coco" in row else dict(row)
            for row in keypoint_sets.JOINT_EQUIVALENCES]
    return (*rows, *({"coco": joint, **more} for joint, more in extra.items()))


def channel_sources(source: KeypointSchema, target: KeypointSchema,
                    head_map: Mapping[str, str] | None = None) -> list[int | None]:
    """For each ``target`` joint, the ``source`` joint whose channel it starts from, or None (a new channel).
    ``head_map`` (``{target joint: source joint}``) decides for the joints it names; a name neither schema has
    raises :class:`~sagepose.keypoint_maps.MappingError` naming it."""
    head_map = dict(head_map or {})
    for new, old in head_map.items():
        if new not in target.keypoints:
            raise MappingError(f"model.head_map: {new!r} is not a keypoint of schema {target.name}")
        if old not in source.keypoints:
            raise MappingError(f"model.head_map: {new!r} <- {old!r}: the checkpoint's schema {source.name} has no "
                               f"keypoint {old!r}")
    try:
        found = keypoint_map(source, target, equivalences=_equivalences()).sources
    except MappingError:  # no joint in common
        found = ((),) * target.num_keypoints
    return [source.index(head_map[j]) if j in head_map else (s[0] if s else None)
            for j, s in zip(target.keypoints, found)]


def carries_over(head: nn.Module, sources: list[int | None], num_source: int) -> bool:
    """Whether copying the checkpoint's rows ``sources`` (:func:`channel_sources`) makes ``head`` predict those joints
    as the checkpoint does: always for a head that computes each joint apart (heatmap heads); for one whose joints
    attend to each other only when ``sources`` is the checkpoint's ``num_source`` joints, each once -- in their order
    where :attr:`~sagepose.models.rtmcc_head.RTMCCHead.joint_order_matters`."""
    if not getattr(head, "joints_attend", False):
        return True
    if head.joint_order_matters:
        return list(sources) == list(range(num_source))
    return None not in sources and sorted(sources) == list(range(num_source))


def transplant_head(model: nn.Module, sd: Mapping[str, torch.Tensor], sources: list[int | None],
                    init: Mapping[str, torch.Tensor]) -> int:
    """Set the model's final head layers: joint ``t``'s rows from the checkpoint's joint ``sources[t]``, the others
    from ``init`` (the layers' values before the checkpoint loaded). Returns the number of joints copied."""
    own = model.state_dict()
    for prefix, rows in HEAD_OUTPUTS.items():
        for part in ("weight", "bias"):
            key = f"{prefix}.{part}"
            if key not in own:
                continue
            if key not in sd or sd[key].shape[1:] != own[key].shape[1:]:
                raise MappingError(f"{key}: the checkpoint's {tuple(sd[key].shape) if key in sd else 'none'} does "
                                   f"not fit the model's {tuple(own[key].shape)} beyond the joint rows")
            value = init[key].clone()
            for t, s in enumerate(sources):
                if s is not None:
                    value[t * rows:(t + 1) * rows] = sd[key][s * rows:(s + 1) * rows]
            own[key].copy_(value)
    return sum(s is not None for s in sources)


def init_head(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's final head layers (:data:`HEAD_OUTPUTS`), to keep for channels no joint gives."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[0] in HEAD_OUTPUTS}
