"""The translator's architecture and training numbers: a frozen dataclass, as the run's config sections are
(:mod:`sagepose.config`); written into a translator's file and read back from it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TranslatorConfig:
    """The translator's architecture and training numbers. ``layers`` hidden layers of ``hidden`` units; AdamW at
    ``lr`` with a cosine decay to 0 over ``epochs`` passes of ``batch_size`` pairs. (The loss is the coordinate L1
    plus the labeled-flag BCE unweighted: the two come from separate networks, and Adam's steps do not depend on a
    loss's scale.)"""

    hidden: int = 256
    layers: int = 3
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0
    # a seeded share of the pairs held out: the weights of the epoch with the lowest held-out coordinate error are
    # kept (a few thousand pairs overfit a 256-wide MLP within 200 epochs: on the synthetic COCO -> MPII benchmark,
    # elbow / wrist PCKh fell from 30 to 12); 0: train on every pair, keep the last epoch
    holdout: float = 0.1
    # the joints the fixed map gives: refined by the network (a dataset that marks a joint elsewhere, as MPII's and
    # COCO's hips) or copied as the map gives them (conventions known to agree: the network then learns only the
    # joints the source lacks; on the synthetic benchmark, where one renderer labels every schema, copying wins)
    refine_covered: bool = True
    # the joints the fixed map does not give start from an affine combination of the source joints (weights summing
    # to 1, the same for x and y: it moves, turns and scales with the person), fitted in closed form on the pairs;
    # the network adds a residual. False: the network places those joints from nothing
    affine_base: bool = True
    ridge: float = 1e-3  # the affine fit's ridge, per pair and coordinate
    # each batch's pairs turned by a random angle within +-augment_rotate degrees and mirrored (joints swapped left /
    # right) with probability augment_flip, source and target together: the mapping does not depend on either
    augment_rotate: float = 0.0
    augment_flip: float = 0.0
