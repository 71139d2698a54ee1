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


def read_image(path: str) -> np.ndarray:
    """Decode an image file -> (H, W, 3) BGR uint8; :class:`ImageReadError` if missing or corrupt."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        raise ImageReadError(f"{path}: missing") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: cannot decode (corrupt or not an image)")
    return img


def normalize(crops: torch.Tensor, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) RGB ``(x - mean) / std``; mean / std are RGB, 0-255."""
    x = crops.flip(-1).permute(0, 3, 1, 2).to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # channels-last strides, from the free permute
