"""Images in, model input out: decoding an image file, its size from its header, and ImageNet normalisation.

A base module: :mod:`sagepose.models` (the estimator's ``predict``) and :mod:`sagepose.data` (the loaders)
both import it, and neither imports the other.
"""
from __future__ import annotations

import os
import struct

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


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image as :func:`read_image` decodes it, from its header where the format allows.

    JPEG (with its EXIF orientation, which OpenCV applies), PNG, BMP and WebP headers are parsed; other
    formats, or headers that do not parse, are decoded once. :class:`ImageReadError` if neither works.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            size = _header_size(f, head)
    except OSError:
        raise ImageReadError(f"{path}: missing") from None
    if size is not None and size[0] > 0 and size[1] > 0:
        return size
    h, w = read_image(path).shape[:2]
    return w, h


def _header_size(f, head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 core header: 16-bit sizes
            return struct.unpack("<HH", head[18:22])
        w, h = struct.unpack("<ii", head[18:26])
        return w, abs(h)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
        return None
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(f)
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f) -> tuple[int, int] | None:
    """Walk a JPEG's marker segments to its frame header; EXIF orientations 5-8 (transposed) swap w and h."""
    f.seek(2)
    transposed = False
    while True:
        b = f.read(1)
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if length < 2:
            return None
        if marker in _SOF:
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return (h, w) if transposed else (w, h)
        if marker == 0xE1:
            data = f.read(length - 2)
            transposed = transposed or _exif_orientation(data) in (5, 6, 7, 8)
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _exif_orientation(app1: bytes) -> int:
    """The orientation tag (0x0112) of an APP1 segment's EXIF IFD0; 1 (upright) when absent or malformed."""
    if app1[:6] != b"Exif\x00\x00" or len(app1) < 14:
        return 1
    tiff = app1[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    for k in range(struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return 1
        if struct.unpack(order + "H", entry[:2])[0] == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1


def normalize(crops: torch.Tensor, mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) RGB ``(x - mean) / std``; mean / std are RGB, 0-255."""
    x = crops.flip(-1).permute(0, 3, 1, 2).to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # channels-last strides, from the free permute
