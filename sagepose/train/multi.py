"""Multi-dataset runs (``data.datasets``): which outputs the model has, and how each dataset maps onto them.

    data.union = merged | concatenated -> the union schema of the datasets' schemas (sagepose.keypoint_maps)
    data.union = convert               -> model.schema; each dataset mapped into it (copies and midpoints)
    each dataset: its records in its own schema -> crops -> keypoints carried into the outputs, with a mask of the
                  outputs it labels; batches mix the datasets by their weights (train/sampling.MixingSampler)
    validation: each dataset's val set in its own schema and metric, from the outputs that give its joints
                (a union's slice of it; in convert mode, the datasets whose every joint the target schema has)

``model.heads=per_dataset`` gives each dataset a head of its own (:class:`sagepose.models.heads.PerDatasetHeads`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sagepose.config import Config, DatasetConfig
from sagepose.keypoint_maps import KeypointMap, UnionSchema, keypoint_map, union_schema
from sagepose.keypoints import KeypointSchema, load_schema


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
    from sagepose.data.multi import read_member

    return read_member(member.config, member.schema, split)


def build_multi_loaders(cfg: Config, plan: DatasetPlan, model, train: bool = True, val: bool = True, rank: int = 0,
                        world_size: int = 1) -> dict:
    """``{"train": one loader over every dataset with train_json, mixed by weight; "val": [one loader per scored
    member]}`` (rank ``rank``'s shards, as :func:`sagepose.train.run.build_loaders`)."""
    from sagepose.data import TopDownDataset, TopDownSampler
    from sagepose.data.multi import ConcatMembers, MemberDataset
    from sagepose.train.run import SAMPLER_AUGMENT_FIELDS, loader_options
    from sagepose.train.sampling import MixingSampler, ResumableLoader, ShardSampler

    d, seed = cfg.data, cfg.trainer.seed
    common = dict(input_size=tuple(model.input_size), udp=model.codec.udp)
    workers = loader_options(cfg)
    loaders: dict = {}
    if train:
        augment = {name: getattr(d, name) for name in SAMPLER_AUGMENT_FIELDS}
        parts, weights = [], []
        for i, m in enumerate(plan.members):
            if not m.config.train_json:
                continue
            records = member_records(m, "train")
            ds = TopDownDataset(records, TopDownSampler(schema=m.schema, **common, **augment), train=True,
                                seed=seed + 7919 * i, cache_images=d.cache_images,  # members draw apart
                                reduced_decode=d.reduced_decode)
            parts.append(MemberDataset(ds, m.to_model, i))
            weights.append(m.config.weight)
        if not parts:
            raise ValueError("data.datasets: no dataset has a train_json")
        ds = ConcatMembers(parts)
        sampler = MixingSampler(ds.sizes, weights, seed=seed, rank=rank, world_size=world_size)
        loaders["train"] = ResumableLoader(ds, sampler, batch_size=d.batch_size, drop_last=len(sampler) > d.batch_size,
                                           generator=torch.Generator().manual_seed(seed), **workers)
    if val:
        loaders["val"] = []
        for i in plan.scored():
            m = plan.members[i]
            records = member_records(m, "val")
            ds = MemberDataset(TopDownDataset(records, TopDownSampler(schema=m.schema, **common), train=False,
                                              seed=seed, test_scales=model.test_scales,
                                              reduced_decode=d.reduced_decode), m.to_model, i, train=False)
            shard = ShardSampler(len(ds), shuffle=False, rank=rank, world_size=world_size, pad=False)
            loaders["val"].append(torch.utils.data.DataLoader(ds, batch_size=d.val_batch_size, sampler=shard,
                                                              **workers))
    return loaders
