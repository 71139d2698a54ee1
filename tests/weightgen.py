"""Deterministic weights and images shared by the MMPose golden script and the parity tests.

Golden files cannot hold 86M parameters, so weights are a pure function of
(key, shape, seed): each tensor draws from its own PCG64 stream seeded with
``crc32(key) ^ seed``. Only numpy's raw uniform doubles are used (Box-Muller for
normals), so the values do not depend on the torch or numpy version installed.
Key names are MMPose's; the tensor kind is read from the key name.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def _uniform(rng: np.random.Generator, shape, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * rng.random(shape)


def _normal(rng: np.random.Generator, shape) -> np.ndarray:
    u1, u2 = 1.0 - rng.random(shape), rng.random(shape)  # u1 in (0, 1]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def deterministic_tensor(key: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """One tensor: BN stats, norm affines, biases, pos_embed and conv/linear weights each have their law."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode()) ^ seed))
    if key.endswith("running_mean"):
        x = _uniform(rng, shape, -0.2, 0.2)
    elif key.endswith("running_var"):
        x = _uniform(rng, shape, 0.5, 2.0)
    elif key.endswith("pos_embed"):
        x = 0.02 * _normal(rng, shape)
    elif key.endswith("bias"):
        x = _uniform(rng, shape, -0.1, 0.1)
    elif len(shape) == 1:  # LayerNorm / BatchNorm weight
        x = _uniform(rng, shape, 0.8, 1.2)
    else:  # linear / conv weight: unit variance per output over its fan-in
        x = _normal(rng, shape) / np.sqrt(np.prod(shape[1:]))
    return torch.from_numpy(x.astype(np.float32))


def deterministic_weights(keys_and_shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    """[(key, shape), ...] -> state dict."""
    return {key: deterministic_tensor(key, tuple(map(int, shape)), seed) for key, shape in keys_and_shapes}


def synthetic_image(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A deterministic BGR uint8 test image: smooth gradients, flat discs, noise (no person in it)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([127 + 120 * np.sin(xx / 37.0), 127 + 120 * np.cos(yy / 23.0),
                    255 * (xx + yy) / (h + w)], -1)
    for _ in range(12):
        cx, cy, r = w * rng.random(), h * rng.random(), 10 + 50 * rng.random()
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = np.floor(256 * rng.random(3))
    img += 8 * _normal(rng, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


SYNTHETIC_BOX_XYXY = (150.0, 60.0, 420.0, 440.0)


def argmax_margin(heatmaps: np.ndarray, r: int = 2) -> np.ndarray:
    """(N, K, h, w) -> (N, K) float64: relative gap between each map's maximum and its best rival outside
    +-r px; the goldens record it (``tools/make_model_goldens.py``), the parity tests read it to compare
    keypoints only where the heatmaps fix them."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1).astype(np.float64)
    idx = flat.argmax(-1)
    top = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    ys, xs = np.divmod(idx, w)
    yy, xx = np.mgrid[0:h, 0:w]
    near = (np.abs(yy - ys[..., None, None]) <= r) & (np.abs(xx - xs[..., None, None]) <= r)
    rival = np.where(near.reshape(n, k, -1), -np.inf, flat).max(-1)
    return (top - rival) / (np.abs(top) + 1e-12)
