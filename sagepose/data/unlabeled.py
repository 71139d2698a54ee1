"""The dataset of unlabeled crops for semi-supervised training: each record's box (and the same box in the next
video frame) cropped exactly as the supervised val crop (:meth:`CropAugment.crop`), so a labeled and an
unlabeled crop of the same box are the same pixels. The records come from :mod:`sagepose.data.unlabeled_sources`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from sagepose import geometry
from sagepose.data.dataset import read_cached
from sagepose.data.unlabeled_sources import UnlabeledRecord
from sagepose.image import ImageReadError

MAX_SUBSTITUTIONS = 10  # unreadable images in a row tolerated per item


class UnlabeledDataset(torch.utils.data.Dataset):
    """Unlabeled records -> the plain crop of each box (and of the next video frame), no random augmentation.

    The strong and weak views are drawn on the device from these crops. An unreadable image is replaced
    by another record, chosen from ``(seed, index)`` (so every process substitutes alike), counted in
    ``bad_images`` (per process) and warned about; :data:`MAX_SUBSTITUTIONS` in a row is an error naming
    the files. ``cache_images`` keeps decoded images in RAM after their first use (per process).
    """

    def __init__(self, records: Sequence[UnlabeledRecord], input_size: tuple[int, int], udp: bool, seed: int = 0,
                 cache_images: bool = False, padding: float = geometry.BBOX_PADDING):
        if not records:
            raise ValueError("UnlabeledDataset: no records")
        self.records = list(records)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.udp = udp
        self.seed = seed
        self.padding = padding
        self.bad_images = 0
        self._images: dict[str, np.ndarray] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, path: str) -> np.ndarray:
        return read_cached(path, self._images)

    def _bad(self, error: ImageReadError, what: str) -> None:
        self.bad_images += 1
        warnings.warn(f"{error}; {what} ({self.bad_images} bad images so far)", stacklevel=3)

    def crop_box(self, record: UnlabeledRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The crop matrix (2, 3), center (2,) and scale (2,) of a record's box: the supervised val crop's."""
        w, h = self.input_size
        center, scale = geometry.box_to_center_scale(geometry.xywh_to_xyxy(record.bbox_xywh), self.padding)
        scale = geometry.fix_aspect_ratio(scale, w / h)
        return geometry.crop_matrix(center, scale, 0.0, self.input_size, self.udp), center, scale

    def __getitem__(self, index: int) -> dict:
        """-> ``img`` (H, W, 3) uint8 BGR crop, ``img_next`` the same box in the next frame (``img`` itself
        when there is none), ``has_next`` float32 1 / 0, ``center`` / ``scale`` (2,) float32, ``image_id``,
        ``index`` (the key of the sample's device augmentation)."""
        record, rng, tried = self.records[index], None, []
        for _ in range(MAX_SUBSTITUTIONS):
            try:
                image = self._read(record.image_path)
                break
            except ImageReadError as e:
                self._bad(e, "substituted another record")
                tried.append(record.image_path)
                rng = rng or np.random.default_rng([self.seed, index])
                record = self.records[int(rng.integers(len(self.records)))]
        else:
            shown = ", ".join(tried[:3]) + (", ..." if len(tried) > 3 else "")
            raise ImageReadError(f"{MAX_SUBSTITUTIONS} unreadable images in a row while substituting for "
                                 f"index {index}: {shown}")
        matrix, center, scale = self.crop_box(record)
        img = geometry.warp_image(image, matrix, self.input_size)
        img_next, has_next = img, 0.0
        if record.next_path is not None:
            try:
                img_next = geometry.warp_image(self._read(record.next_path), matrix, self.input_size)
                has_next = 1.0
            except ImageReadError as e:
                self._bad(e, "used without its next frame")
        return dict(img=img, img_next=img_next.copy() if img_next is img else img_next,
                    has_next=np.float32(has_next), center=np.asarray(center, np.float32),
                    scale=np.asarray(scale, np.float32), image_id=record.image_id, index=index)
