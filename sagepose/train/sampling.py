"""Which samples each process sees, and where in the epoch a resumed run picks up.

:class:`ShardSampler` gives one rank its share of an epoch: a permutation of the dataset that is a
pure function of ``(seed, epoch)``, dealt round-robin to the ranks. With the dataset's own per-sample
randomness a function of ``(seed, epoch, index)``, every sample's crop and augmentation are the same
for any number of processes, and the union of the ranks' k-th batches is the single-process run's
k-th batch of the same global size -- so a DDP run follows the single-process loss curve.

:class:`ResumableLoader` is a DataLoader that Lightning checkpoints: it reports ``(epoch, batches
consumed)`` through ``state_dict`` and, restored from a mid-epoch checkpoint, skips exactly those
batches' indices (without loading them), so a resumed run sees the batches the killed one would have.
"""
from __future__ import annotations

import numpy as np
import torch


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices for rank ``rank`` of ``world_size`` in the current epoch (set with :meth:`set_epoch`).

    ``shuffle``: a seeded permutation per epoch, else ``0 .. n - 1`` in order. ``pad``: repeat the
    first indices so every rank gets ``ceil(n / world_size)`` (training: DDP needs equal step counts);
    ``pad=False`` gives uneven shards that hold every index exactly once (evaluation).
    ``start`` skips that many of this rank's indices in the next iteration only (resume).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"ShardSampler: rank {rank} is not in 0 .. {world_size - 1}")
        self.n, self.seed, self.shuffle, self.pad = n, seed, shuffle, pad
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a skip belongs to the epoch it was restored for
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """The epoch's indices, all ranks together."""
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle \
            else np.arange(self.n)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, before any ``start`` skip."""
        order = self.order()
        if self.pad and self.n % self.world_size:
            order = np.concatenate([order, order[: self.world_size - self.n % self.world_size]])
        return order[self.rank::self.world_size]

    def __iter__(self):
        start, self.start = self.start, 0
        return iter(self.indices()[start:].tolist())

    def __len__(self) -> int:
        if self.pad:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))


class MixingSampler(ShardSampler):
    """:class:`ShardSampler` over datasets laid side by side (``sizes``; :class:`sagepose.data.multi.ConcatMembers`),
    each epoch ``sum(sizes)`` draws in which dataset ``m`` has the share ``weights[m] x sizes[m]`` (normalised).

    A dataset's draws walk a seeded permutation of it, starting over as often as its share needs (a weight of 2
    shows each sample twice per epoch, 0.5 half of them); the datasets' draws are interleaved by one more seeded
    permutation. All of it a function of ``(seed, epoch)``, so sharding and resume work as for one dataset.
    """

    def __init__(self, sizes, weights, seed: int = 0, rank: int = 0, world_size: int = 1):
        sizes, weights = np.asarray(sizes, np.int64), np.asarray(weights, np.float64)
        if len(sizes) != len(weights) or not len(sizes) or (sizes <= 0).any() or (weights <= 0).any():
            raise ValueError(f"MixingSampler: sizes {sizes.tolist()} and weights {weights.tolist()} must be positive, "
                             "one per dataset")
        super().__init__(int(sizes.sum()), seed=seed, shuffle=True, rank=rank, world_size=world_size)
        share = weights * sizes / float((weights * sizes).sum())
        counts = np.floor(share * self.n).astype(np.int64)
        # largest remainders take the draws the floors left, so the epoch holds exactly n
        counts[np.argsort(-(share * self.n - counts), kind="stable")[: self.n - counts.sum()]] += 1
        self.sizes, self.counts = sizes, counts
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for size, count, offset in zip(self.sizes, self.counts, self.offsets):
            reps = -(-count // size)
            walk = np.concatenate([rng.permutation(size) for _ in range(max(reps, 1))])[:count]
            parts.append(walk + offset)
        return rng.permutation(np.concatenate(parts))


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over a :class:`ShardSampler` whose position in the epoch is saved in checkpoints.

    Lightning calls :meth:`state_dict` when it writes a checkpoint and :meth:`load_state_dict` when it
    resumes mid-epoch. Each iteration also tells the dataset its epoch (``dataset.set_epoch``), so
    augmentation follows the sampler's epoch however the run was started.
    """

    def __init__(self, dataset, sampler: ShardSampler, **kwargs):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.position = 0  # batches of the current epoch handed to the training loop

    def __iter__(self):
        # A generator: the worker processes are fed indices at the first batch, after Lightning has set
        # this epoch (it creates the iterator of a run's first epoch before calling set_epoch).
        self.position = self.sampler.start // self.batch_size
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.sampler.epoch)
        for batch in super().__iter__():
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.start = int(state["batches"]) * self.batch_size
