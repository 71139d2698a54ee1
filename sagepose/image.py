"""Images in, model input out: decoding an image file and ImageNet normalisation.

A base module: :mod:`sagepose.models` (the estimator's ``predict``) and :mod:`sagepose.data` (the loaders)
both import it, and neither imports the other.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from sagepose.errors import SagePoseError

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)  # MMPose's PoseDataPreprocessor, 0-255 scale
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


class ImageReadError(SagePoseError, OSError):
    """An image that is missing or cannot be decoded; the message starts with its path."""


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _decode(path: str, flag: int, jpeg_only: bool = False) -> np.ndarray | None:
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        raise ImageReadError(f"{path}: missing") from None
    if jpeg_only and not (data.size > 2 and data[0] == 0xFF and data[1] == 0xD8):
        return None
    img = cv2.imdecode(data, flag) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: cannot decode (corrupt or not an image)")
    return img


def read_image(path: str) -> np.ndarray:
    """Decode an image file -> (H, W, 3) BGR uint8; :class:`ImageReadError` if missing or corrupt."""
    return _decode(path, cv2.IMREAD_COLOR)


def read_image_reduced(path: str, factor: int) -> tuple[np.ndarray, int]:
    """A JPEG decoded at 1/``factor`` of its size (2, 4 or 8) by libjpeg's scaled inverse DCT -> (image, factor):
    pixel ``i`` of the result is the mean of the full image's pixels ``factor * i .. factor * i + factor - 1``
    (centred at ``factor * i + (factor - 1) / 2``), for a fraction of a full decode's time. Any other file, or
    ``factor`` 1, is decoded in full: (image, 1)."""
    if factor != 1:
        if factor not in _REDUCED:
            raise ValueError(f"read_image_reduced: factor must be 1, 2, 4 or 8, got {factor}")
        img = _decode(path, _REDUCED[factor], jpeg_only=True)
        if img is not None:
            return img, factor
    return read_image(path), 1


def normalize(crops: torch.Tensor, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) RGB ``(x - mean) / std``; mean / std are RGB, 0-255."""
    x = crops.flip(-1).permute(0, 3, 1, 2).to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # channels-last strides, from the free permute
