"""Several datasets with their own keypoint sets as one training set (``data.datasets``): the plan, and the datasets.

The plan (:func:`plan_datasets`, pure data): which outputs the model has, and how each dataset maps onto them.

    data.union = merged | concatenated -> the union schema of the datasets' schemas (sagepose.keypoint_maps)
    data.union = convert               -> model.schema; each dataset mapped into it (copies and midpoints)
    each dataset: its records in its own schema -> crops -> keypoints carried into the outputs, with a mask of the
                  outputs it labels; batches mix the datasets by their weights (train/sampling.MixingSampler)
    validation: each dataset's val set in its own schema and metric, from the outputs that give its joints
                (a union's slice of it; in convert mode, the datasets whose every joint the target schema has)

``model.heads=per_dataset`` gives each dataset a head of its own (:class:`sagepose.models.heads.PerDatasetHeads`).
The loaders over these datasets are built with every other loader, in :mod:`sagepose.train.loaders`.

Each member's records are read and cropped in the member's own schema (its flips, its half-body split); a
:class:`MemberDataset` then carries the keypoints into the model's outputs with the member's
:class:`~sagepose.keypoint_maps.KeypointMap` and adds ``labeled``: the model outputs the member annotates. The
loss covers those only (their weight is the codec's; every other output has weight 0, whatever its target).
:class:`ConcatMembers` puts the members side by side in one index space (member ``m``'s sample ``i`` is
``offset[m] + i``: the key of its augmentation, unique across members); which of them an epoch draws, and how
often, is the sampler's business (:class:`sagepose.train.sampling.MixingSampler`).
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sagepose.config import Config, DatasetConfig
from sagepose.data.coco import load_coco
from sagepose.data.dataset import TopDownDataset
from sagepose.data.mpii import load_mpii
from sagepose.keypoint_maps import KeypointMap, UnionSchema, keypoint_map, union_schema
from sagepose.keypoints import KeypointSchema, load_schema

# per-sample entries that stay in the member's own schema: validation pairs them with its labels
_OWN_SCHEMA = ("gt_keypoints", "gt_visible")


@dataclass(frozen=True)
class Member:
    """One dataset of the run: ``to_model`` carries its joints into the model's outputs; ``from_model`` takes its
    joints back out of them, or is None when the outputs do not hold every one of its joints (then it is trained
    on, not scored)."""

    config: DatasetConfig
    schema: KeypointSchema
    to_model: KeypointMap
    from_model: KeypointMap | None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class DatasetPlan:
    schema: KeypointSchema  # the model's outputs
    members: tuple[Member, ...]
    union: UnionSchema | None  # merged / concatenated runs

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def scored(self) -> list[int]:
        """The members scored on their val sets."""
        return [i for i, m in enumerate(self.members) if m.config.val_json and m.from_model is not None]


def _index_maps(union: UnionSchema, m: int) -> tuple[KeypointMap, KeypointMap]:
    idx = union.indices[m]
    member = union.members[m]
    where = {u: i for i, u in enumerate(idx)}
    to_union = tuple((where[j],) if j in where else () for j in range(union.schema.num_keypoints))
    return (KeypointMap(member, union.schema, to_union), KeypointMap(union.schema, member, tuple((u,) for u in idx)))


def plan_datasets(cfg: Config, schema: KeypointSchema | None = None) -> DatasetPlan:
    """The plan of ``cfg.data.datasets``; ``schema``: the model's outputs as a checkpoint stores them (checked
    against the plan's, so a checkpoint is scored only with the datasets it was trained for)."""
    d = cfg.data
    schemas = [load_schema(ds.schema) for ds in d.datasets]
    if d.union == "convert":
        target = load_schema(cfg.model.schema)
        union = None
        members = []
        for ds, s in zip(d.datasets, schemas):
            back = keypoint_map(target, s)  # scored only where the target has every joint of it
            members.append(Member(ds, s, keypoint_map(s, target, midpoints=True), back if back.covered.all() else None))
        out = target
    else:
        union = union_schema(schemas, mode=d.union, names=[ds.name for ds in d.datasets])
        members = [Member(ds, s, *_index_maps(union, i)) for i, (ds, s) in enumerate(zip(d.datasets, schemas))]
        out = union.schema
    if schema is not None and tuple(schema.keypoints) != tuple(out.keypoints):
        raise ValueError(f"the checkpoint's outputs ({schema.name}, {schema.num_keypoints} keypoints) are not this "
                         f"run's ({out.name}, {out.num_keypoints}): data.datasets / data.union differ from training")
    return DatasetPlan(schema if schema is not None else out, tuple(members), union)


def member_records(member: Member, split: str) -> list:
    """A dataset's ``train`` or ``val`` records, read in its format."""
    return read_member(member.config, member.schema, split)


class MemberDataset(torch.utils.data.Dataset):
    """A member's :class:`TopDownDataset` with its keypoints in the model's outputs (``kmap``: member -> model),
    plus ``member`` (its position in the run's datasets) and ``labeled`` (K_model,) bool. Training samples drop
    ``gt_keypoints`` / ``gt_visible``, which differ in size between members (validation keeps a member alone)."""

    def __init__(self, dataset: TopDownDataset, kmap: KeypointMap, member: int, train: bool = True):
        self.dataset, self.kmap, self.member, self.train = dataset, kmap, member, train
        self.labeled = kmap.covered

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        s = self.dataset[index]
        kp, vis = self.kmap.apply(s["keypoints"], s["visible"])
        s["keypoints"], s["visible"] = kp.astype(np.float32), vis.astype(np.float32)
        s["labeled"], s["member"] = self.labeled, np.int64(self.member)
        if self.train:
            for key in _OWN_SCHEMA:
                s.pop(key, None)
        return s


class ConcatMembers(torch.utils.data.Dataset):
    """Members one after another; each sample's ``index`` becomes its position here (unique over members)."""

    def __init__(self, members: Sequence[MemberDataset]):
        if not members:
            raise ValueError("ConcatMembers: no datasets")
        self.members = list(members)
        self.sizes = [len(m) for m in self.members]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        for m in self.members:
            m.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """-> (member, index within it)."""
        if not 0 <= index < len(self):
            raise IndexError(f"ConcatMembers: index {index} out of range for {len(self)} samples")
        m = bisect.bisect_right(self.offsets, index) - 1
        return m, index - int(self.offsets[m])

    def __getitem__(self, index: int) -> dict:
        m, i = self.locate(int(index))
        s = self.members[m][i]
        s["index"] = int(index)
        return s


def read_member(c, schema, split: str) -> list:
    """A ``data.datasets`` entry's ``train`` or ``val`` records, read in its format (``c``: its config; ``schema``:
    its keypoint schema, for a COCO-format file); the one reader of training and the pre-flight check."""
    path = c.train_json if split == "train" else c.val_json
    if c.format == "mpii":
        return load_mpii(path, image_root=c.image_root, headboxes=c.head_boxes if split == "val" else None)
    return load_coco(path, schema=schema, image_root=c.image_root, mode=split)
