"""Reading MMPose goldens (``tools/make_model_goldens.py``) for the parity tests: the files, their images,
and a zoo model filled with the golden's deterministic weights, loaded strictly."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from weightgen import deterministic_weights, synthetic_image

import sagepose

GOLDENS = Path(__file__).parent / "goldens" / "models"
REPO = Path(__file__).resolve().parent.parent


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def golden(name: str, image: str) -> dict:
    return dict(np.load(GOLDENS / f"{name}__{image}.npz"))


def golden_image(g: dict) -> np.ndarray:
    """The golden's image (synthetic, or a ../shared/realdata file: skips when absent), checked by md5."""
    path = str(g["image_path"])
    if not path:
        img = synthetic_image()
    else:
        if not (REPO / path).is_file():
            pytest.skip(f"{path} not available (../shared/realdata)")
        img = cv2.imread(str(REPO / path))
    assert hashlib.md5(img.tobytes()).hexdigest() == str(g["image_md5"]), f"{path or 'synthetic'} differs"
    return img


def golden_model(name: str, fuse: bool = True):
    """``sagepose.load(name, weights)`` as users get it (fused for inference unless ``fuse=False``), the
    weights regenerated from the golden's key list and loaded strictly."""
    g = golden(name, "synthetic")
    keys = list(zip(g["keys"].tolist(), json.loads(str(g["shapes"]))))
    sd = deterministic_weights(keys, int(g["seed"]))
    checksums = np.array([float(v.double().sum()) for v in sd.values()])
    np.testing.assert_allclose(checksums, g["checksums"], rtol=1e-9, atol=1e-9,
                               err_msg="tests/weightgen.py no longer reproduces the golden weights")
    return sagepose.load(name, checkpoint=sd, fuse=fuse)  # MMPose format detected, every key matched
