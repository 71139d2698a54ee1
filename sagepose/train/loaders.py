"""Every DataLoader of a run, built in one place: the supervised train and val loaders (one dataset, or the mixed
loader and per-dataset val loaders of ``data.datasets``), the unlabeled loader of semi-supervised training, and the
Lightning DataModules that hand them to the Trainer once each rank knows its place.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader

from sagepose.config import Config
from sagepose.data import CropAugment, TopDownDataset, UnlabeledDataset, collate, load_coco, load_detections
from sagepose.data.multi import ConcatMembers, DatasetPlan, MemberDataset, member_records, plan_datasets
from sagepose.data.unlabeled_sources import load_unlabeled
from sagepose.train.sampling import MixingSampler, ResumableLoader, ShardSampler

# DataConfig fields that are CropAugment arguments of the same name
CROP_AUGMENT_FIELDS = ("flip_prob", "half_body_prob", "scale_factor", "rotate_factor", "rotate_prob",
                           "shift_factor", "shift_prob")


def uses_cuda(cfg: Config) -> bool:
    """Whether the run trains on CUDA GPUs (``trainer.accelerator`` gpu / cuda, or auto with one present)."""
    a = cfg.trainer.accelerator
    return a in ("gpu", "cuda") or (a == "auto" and torch.cuda.is_available())


def loader_options(cfg: Config) -> dict:
    """The DataLoader arguments every loader of a run shares: ``data.num_workers`` processes kept between epochs,
    the collate, batches in page-locked memory when they go to a GPU (``data.pin_memory``; Lightning's copy to the
    device is then asynchronous) and ``data.prefetch_factor`` batches in flight per worker."""
    d = cfg.data
    options = dict(num_workers=d.num_workers, collate_fn=collate, persistent_workers=d.num_workers > 0,
                   pin_memory=uses_cuda(cfg) if d.pin_memory is None else d.pin_memory)
    if d.num_workers > 0:
        options["prefetch_factor"] = d.prefetch_factor
    return options


def build_loaders(cfg: Config, model, train: bool = True, rank: int = 0, world_size: int = 1, val: bool = True):
    """Train and val DataLoaders for a top-down model (val on GT boxes, or on ``data.det_json``).

    Each is rank ``rank``'s shard of ``world_size``: training shards are padded to equal length and
    resumable mid-epoch (:class:`ResumableLoader`); val shards are uneven and hold each instance once.
    """
    d = cfg.data
    if d.datasets:
        return build_multi_loaders(cfg, plan_datasets(cfg, model.schema), model, train=train, val=val, rank=rank,
                                   world_size=world_size)
    schema = model.schema
    common = dict(schema=schema, input_size=tuple(model.input_size), udp=model.codec.udp)
    workers = loader_options(cfg)
    loaders = {}
    if train:
        if not d.train_json:
            raise ValueError("data.train_json is not set")
        augment = {name: getattr(d, name) for name in CROP_AUGMENT_FIELDS}
        crop = CropAugment(**common, **augment)
        records = load_coco(d.train_json, schema=schema, image_root=d.image_root, mode="train")
        ds = TopDownDataset(records, crop, train=True, seed=cfg.trainer.seed, cache_images=d.cache_images,
                            reduced_decode=d.reduced_decode)
        shard = ShardSampler(len(ds), seed=cfg.trainer.seed, shuffle=True, rank=rank, world_size=world_size)
        # the generator only seeds worker processes (the dataset's randomness is explicit); a loader of its
        # own keeps the global RNG stream the same however often loaders are created (resume)
        loaders["train"] = ResumableLoader(ds, shard, batch_size=d.batch_size, drop_last=len(shard) > d.batch_size,
                                           generator=torch.Generator().manual_seed(cfg.trainer.seed), **workers)
    if val and d.val_json:
        crop = CropAugment(**common)
        if d.det_json:
            records = load_detections(d.det_json, d.val_json, schema=schema, image_root=d.image_root)
        else:
            records = load_coco(d.val_json, schema=schema, image_root=d.image_root, mode="val")
        ds = TopDownDataset(records, crop, train=False, seed=cfg.trainer.seed, test_scales=model.test_scales,
                            reduced_decode=d.reduced_decode)
        shard = ShardSampler(len(ds), shuffle=False, rank=rank, world_size=world_size, pad=False)
        loaders["val"] = torch.utils.data.DataLoader(ds, batch_size=d.val_batch_size, sampler=shard, **workers)
    return loaders


def build_multi_loaders(cfg: Config, plan: DatasetPlan, model, train: bool = True, val: bool = True, rank: int = 0,
                        world_size: int = 1) -> dict:
    """``{"train": one loader over every dataset with train_json, mixed by weight; "val": [one loader per scored
    member]}`` (rank ``rank``'s shards, as :func:`build_loaders`)."""
    d, seed = cfg.data, cfg.trainer.seed
    common = dict(input_size=tuple(model.input_size), udp=model.codec.udp)
    workers = loader_options(cfg)
    loaders: dict = {}
    if train:
        augment = {name: getattr(d, name) for name in CROP_AUGMENT_FIELDS}
        parts, weights = [], []
        for i, m in enumerate(plan.members):
            if not m.config.train_json:
                continue
            records = member_records(m, "train")
            ds = TopDownDataset(records, CropAugment(schema=m.schema, **common, **augment), train=True,
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
            ds = MemberDataset(TopDownDataset(records, CropAugment(schema=m.schema, **common), train=False,
                                              seed=seed, test_scales=model.test_scales,
                                              reduced_decode=d.reduced_decode), m.to_model, i, train=False)
            shard = ShardSampler(len(ds), shuffle=False, rank=rank, world_size=world_size, pad=False)
            loaders["val"].append(torch.utils.data.DataLoader(ds, batch_size=d.val_batch_size, sampler=shard,
                                                              **workers))
    return loaders


def unlabeled_records(cfg: Config, verbose: bool = True):
    """The records of ``ssl.unlabeled`` (video frames cached in ``ssl.cache_dir``, default ``OUT/unlabeled_cache``)."""
    s, d = cfg.ssl, cfg.data
    cache = s.cache_dir or str(Path(cfg.trainer.out_dir) / "unlabeled_cache")
    sources = [s.unlabeled] if isinstance(s.unlabeled, (str, dict)) else list(s.unlabeled)
    if cfg.distill.teacher and cfg.distill.labeled and d.train_json:  # the labeled images' boxes, for the teacher
        sources.append({"path": d.train_json, "kind": "coco", **({"root": d.image_root} if d.image_root else {})})
    return load_unlabeled(sources, root=s.unlabeled_root, cache_dir=cache, every_n=s.every_n,
                          score_thr=s.det_score_thr, temporal=s.lambda_temporal > 0, verbose=verbose)


def build_unlabeled_loader(cfg: Config, model, records, rank: int = 0, world_size: int = 1, crop_size=None):
    """Rank ``rank``'s resumable shard of the unlabeled crops (a seeded permutation per epoch, as training's), cut at
    ``crop_size`` (w, h) (default: the model's input size)."""
    d, s = cfg.data, cfg.ssl
    ds = UnlabeledDataset(records, tuple(crop_size or model.input_size), udp=model.codec.udp, seed=cfg.trainer.seed,
                          cache_images=d.cache_images)
    shard = ShardSampler(len(ds), seed=cfg.trainer.seed + 1, shuffle=True, rank=rank, world_size=world_size)
    return ResumableLoader(ds, shard, batch_size=s.batch_size, drop_last=len(shard) > s.batch_size,
                           generator=torch.Generator().manual_seed(cfg.trainer.seed + 1), **loader_options(cfg))


class TopDownData(L.LightningDataModule):
    """The loaders of :func:`build_loaders` for Lightning, which asks for them once the process group is
    up, so each rank builds its own shard."""

    def __init__(self, cfg: Config, model):
        super().__init__()
        self.cfg, self.model = cfg, model

    def _loaders(self, train: bool) -> dict:
        return build_loaders(self.cfg, self.model, train=train, val=not train, rank=self.trainer.global_rank,
                             world_size=self.trainer.world_size)

    def train_dataloader(self):
        return self._loaders(train=True)["train"]

    def val_dataloader(self):
        if self.cfg.data.datasets:  # one loader per scored dataset
            return self._loaders(train=False)["val"]
        return self._loaders(train=False)["val"] if self.cfg.data.val_json else []


class SemiSupervisedData(TopDownData):
    """Training batches ``{"labeled": ..., "unlabeled": ...}`` (``ssl.mode="semi"``; an epoch ends with the shorter
    loader, so it is the supervised run's epoch when the unlabeled set is the larger) or unlabeled batches only
    (``"unsup_only"``). Video frames are cached once, by local rank 0, before any loader is built."""

    def __init__(self, cfg: Config, model, crop_size=None):
        super().__init__(cfg, model)
        self.crop_size = crop_size  # distillation's: at the teacher's resolution

    def prepare_data(self):
        unlabeled_records(self.cfg)

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        unlabeled = build_unlabeled_loader(self.cfg, self.model, unlabeled_records(self.cfg, verbose=False),
                                           rank, world, self.crop_size)
        if self.cfg.ssl.mode == "unsup_only":
            return unlabeled
        return CombinedLoader({"labeled": self._loaders(train=True)["train"], "unlabeled": unlabeled},
                              mode="min_size")
