"""Top-down dataset: records + their crop and augmentation (:class:`CropAugment`) -> per-sample dicts; collate.

Randomness is a pure function of ``(seed, epoch, index)``, so a run gives the same
samples with any ``num_workers``. The epoch lives in a shared-memory tensor: set it
with :meth:`TopDownDataset.set_epoch` before iterating the DataLoader, and
persistent workers see it too. Images are decoded on every access unless ``cache_images``
keeps them in RAM: decoding a 320x256 JPEG costs about as much as everything else a small
crop needs (sampling, the warp, collation) together.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sagepose.data.coco import Record
from sagepose.data.transforms import CropAugment
from sagepose.image import read_image, read_image_reduced


def read_cached(path: str, images: dict[str, np.ndarray] | None) -> np.ndarray:
    """``read_image(path)``, kept in ``images`` (a dataset's per-process cache; None: no cache) after the first read
    and made read-only there: every later sample of the image shares it. A bad image is never cached."""
    if images is None:
        return read_image(path)
    image = images.get(path)
    if image is None:
        image = images[path] = read_image(path)
        image.setflags(write=False)
    return image


class TopDownDataset(torch.utils.data.Dataset):
    """Person records -> dicts of one sample each (see :meth:`__getitem__`).

    An unreadable image raises :class:`ImageReadError` naming the file. ``cache_images``: keep every
    decoded image in memory after its first use (per process; a bad image is never cached). ``reduced_decode``:
    each sample's crop is planned first and its JPEG decoded at the largest of 1/2, 1/4, 1/8 that still gives a
    decoded pixel per crop pixel (:meth:`CropAugment.reduction`); the same draws, the same geometry.
    """

    def __init__(self, records: Sequence[Record], transform: CropAugment, train: bool, seed: int = 0,
                 cache_images: bool = False, test_scales=(1.0,), reduced_decode: bool = False):
        if not records:
            raise ValueError("TopDownDataset: no records")
        k = transform.schema.num_keypoints
        if records[0].keypoints.shape != (k, 2):
            raise ValueError(f"TopDownDataset: records have {records[0].keypoints.shape[0]} keypoints, "
                             f"schema {transform.schema.name} has {k}")
        self.records = list(records)
        self.transform = transform
        self.train = train
        self.seed = seed
        if reduced_decode and cache_images:
            raise ValueError("TopDownDataset: reduced_decode decodes each sample at its own size; cache_images keeps "
                             "full images: choose one")
        self._images: dict[str, np.ndarray] | None = {} if cache_images else None
        self.reduced_decode = reduced_decode
        # validation's multi-scale test: the box factors besides 1 (each sample's ``img_scales``, in this order)
        self.extra_scales = () if train else tuple(float(f) for f in test_scales if float(f) != 1.0)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, path: str) -> np.ndarray:
        return read_cached(path, self._images)

    def __getitem__(self, index: int) -> dict:
        """-> ``img`` (H, W, 3) uint8 BGR, ``keypoints`` (K, 2) float32 crop px, ``visible`` (K,),
        ``center`` / ``scale`` (2,) the crop box (validation maps keypoints back with it), ``image_id``,
        ``bbox_score``, ``index``: the key of the sample's device augmentation and of its val row, and the
        record's labels as the file gives them (validation's pixel metrics): ``gt_keypoints`` (K, 2) image px,
        ``gt_visible`` (K,) 1 where labeled, ``bbox`` (4,) xywh image px (clipped to the image), ``head_size``
        float32 px (MPII PCKh's unit, :attr:`Record.head_size`; NaN where the annotations give no head box).
        Validation with ``test_scales`` besides 1: ``img_scales`` (S, H, W, 3), the crops of the box scaled by each
        of :attr:`extra_scales` about its centre (as ``predict``'s multi-scale test crops them)."""
        rng = np.random.default_rng([self.seed, int(self._epoch), index])
        record = self.records[index]
        reduced, plan = 1, None
        if self.reduced_decode:  # the crop's geometry first, then a JPEG decoded at the size it needs
            state = rng.bit_generator.state
            plan = self.transform.plan(record, rng, self.train, record.width)
            image, reduced = read_image_reduced(record.image_path, self.transform.reduction(plan[1]))
            if image.shape[1] != -(-record.width // reduced):  # the json's image size is not the file's
                rng.bit_generator.state = state  # then as without reduced_decode, draw for draw
                image = image if reduced == 1 else self._read(record.image_path)
                reduced, plan = 1, None
        else:
            image = self._read(record.image_path)
        if plan is None:
            s = self.transform(image, record, rng, self.train)
        else:
            s = self.transform.crop(image, record, *plan, reduced=reduced, width=record.width)
        out = dict(img=s.crop, keypoints=s.keypoints, visible=s.visible, center=s.center, scale=s.scale,
                   image_id=s.image_id, bbox_score=np.float32(s.bbox_score), index=index,
                   gt_keypoints=record.keypoints, gt_visible=record.visible, bbox=record.bbox_xywh,
                   head_size=np.float32(record.head_size))
        if self.extra_scales:
            width = record.width if reduced > 1 else None
            out["img_scales"] = np.stack([self.transform.crop(image, record, s.center, s.scale * f, 0.0, False,
                                                            reduced=reduced, width=width).crop
                                          for f in self.extra_scales])
        return out


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples -> tensors: ``img`` (B, H, W, 3) uint8, ``keypoints`` (B, K, 2), ..."""
    return {key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in samples[0]}
