"""Several datasets with their own keypoint sets as one training set (``data.datasets``).

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

import numpy as np
import torch

from sagepose.data.dataset import TopDownDataset
from sagepose.keypoint_maps import KeypointMap

# per-sample entries that stay in the member's own schema: validation pairs them with its labels
_OWN_SCHEMA = ("gt_keypoints", "gt_visible")


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
    from sagepose.data.coco import load_coco
    from sagepose.data.mpii import load_mpii

    path = c.train_json if split == "train" else c.val_json
    if c.format == "mpii":
        return load_mpii(path, image_root=c.image_root, headboxes=c.head_boxes if split == "val" else None)
    return load_coco(path, schema=schema, image_root=c.image_root, mode=split)
