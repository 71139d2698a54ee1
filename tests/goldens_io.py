"""Reading MMPose goldens (``tools/make_model_goldens.py``) for the parity tests: the files, their images,
and a zoo model filled with the golden's deterministic weights, loaded strictly."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REALDATA
from float_platform import GOLDEN_THREADS, signature
from weightgen import argmax_margin, deterministic_weights, synthetic_image

import sagepose

GOLDENS = Path(__file__).parent / "goldens" / "models"
# Exact mode's keypoints vs MMPose's, from bit-identical heatmaps: both map back in float64 and store float32,
# ours from a float32 decode, so they differ by float32 rounding of an image coordinate: measured <= 6.1e-5 px
# (1 ulp at 512-1024 px) over every parity golden; bound: 4 ulps at coordinates below 1024 px.
EXACT_KEYPOINT_ATOL = 2.5e-4


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def golden(name: str, image: str) -> dict:
    return dict(np.load(GOLDENS / f"{name}__{image}.npz"))


def golden_image(g: dict) -> np.ndarray:
    """The golden's image, checked by md5: synthetic, or a real sample, read from the repository's copy
    (``REALDATA``; the golden records the path it had under a ``realdata/`` folder when it was written)."""
    path = str(g["image_path"])
    if not path:
        img = synthetic_image()
    else:
        file = REALDATA / path.split("realdata/", 1)[-1]
        img = cv2.imread(str(file))
        assert img is not None, f"{file}: the golden's image is missing or unreadable"
    assert hashlib.md5(img.tobytes()).hexdigest() == str(g["image_md5"]), f"{path or 'synthetic'} differs"
    return img


def well_posed_joints(model, heatmaps: np.ndarray, scale: np.ndarray | None = None, rel: float = 1e-4,
                      trials: int = 16, margin: float = 1e-3, px: float = 1e-3) -> np.ndarray:
    """(N, K) bool: the joints whose keypoint the heatmaps (N, K, h, w; a fusion head's whole output, heatmaps
    first) fix to well within ``px`` image px on any CPU: a clear maximum (argmax margin >= ``margin``) and
    ``model.decode`` moving the keypoint by at most ``px`` under seeded noise of ``rel`` x max|heatmap| (10x
    the heatmap tolerance of the parity tests). ``scale``: the crops' (N, 2) box scales, to convert to image
    px (None: ``px`` is in input-crop px). Random weights give flat maps on which DARK's Newton step and MSRA's
    quarter-pixel shift turn float rounding into visible moves: there keypoints of two arithmetics (or two
    CPUs) are not comparable."""
    base = np.asarray(model.decode(torch.from_numpy(heatmaps))[0])
    to_image = 1.0 if scale is None else (np.asarray(scale, np.float64) / np.asarray(model.input_size))[:, None]
    moved = np.zeros(base.shape[:2])
    for t in range(trials):
        noise = np.random.default_rng(t).standard_normal(heatmaps.shape).astype(np.float32)
        noisy = np.asarray(model.decode(torch.from_numpy(heatmaps + rel * np.abs(heatmaps).max() * noise))[0])
        moved = np.maximum(moved, (np.abs(noisy - base) * to_image).max(-1))
    return (argmax_margin(heatmaps[:, : base.shape[1]]) >= margin) & (moved <= px)


def golden_model(name: str, fuse: bool = True, exact: bool = False):
    """``sagepose.load(name, weights)`` as users get it (fused for inference unless ``fuse=False``; MMPose's
    arithmetic with ``exact=True``), the weights regenerated from the golden's key list and loaded strictly."""
    g = golden(name, "synthetic")
    keys = list(zip(g["keys"].tolist(), json.loads(str(g["shapes"]))))
    sd = deterministic_weights(keys, int(g["seed"]))
    checksums = np.array([float(v.double().sum()) for v in sd.values()])
    np.testing.assert_allclose(checksums, g["checksums"], rtol=1e-9, atol=1e-9,
                               err_msg="tests/weightgen.py no longer reproduces the golden weights")
    return sagepose.load(name, checkpoint=sd, fuse=fuse, exact=exact)  # MMPose format detected, every key matched


def require_golden_platform() -> None:
    """Skip unless this machine computes float32 as the one that wrote the goldens did (torch build, CPU, ISA;
    ``tests/float_platform.py``): only there can ``set_exact`` reproduce MMPose's outputs bit for bit."""
    recorded = json.loads((GOLDENS / "platform.json").read_text())
    here = signature()
    if recorded != here:
        pytest.skip(f"bit-level parity needs the goldens' platform {recorded}; this machine is {here}")


@contextlib.contextmanager
def golden_threads():
    """torch's intra-op thread count as the goldens were written with (a reduction's split depends on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(GOLDEN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict_exact(model, g: dict) -> tuple:
    """``model.predict`` (exact: MMPose's arithmetic) on a golden's image and boxes at the goldens' thread
    count -> (prediction with heatmaps, the raw head output on the unflipped crops)."""
    raw = []
    hook = model.head.register_forward_hook(lambda m, args, out: raw.append(out.numpy().copy()))
    try:  # exact mode runs the crops, then their mirror images: the head's first output is the raw one
        with golden_threads():
            pred = model.predict(golden_image(g), g["bboxes_xyxy"], return_heatmaps=True)
    finally:
        hook.remove()
    return pred, raw[0]


def assert_bit_exact(pred, raw: np.ndarray, g: dict, stride: int = 1) -> None:
    """Heatmaps (raw and flip-fused) and scores equal to MMPose's bit for bit, keypoints within the float32
    rounding of MMPose's float64 map back to the image (``EXACT_KEYPOINT_ATOL``) at every point, however
    ill-conditioned the decode (the same heatmaps, the same decode arithmetic)."""
    np.testing.assert_array_equal(raw[..., ::stride, ::stride], g["heatmaps_raw"])
    np.testing.assert_array_equal(pred.heatmaps[..., ::stride, ::stride], g["heatmaps_final"])
    np.testing.assert_array_equal(pred.scores, g["scores"])
    assert np.abs(pred.keypoints - g["keypoints"]).max() <= EXACT_KEYPOINT_ATOL


def exact_model_fixture(names):
    """A module-scoped fixture over ``names``: (the golden's model loaded with ``exact=True``, its name);
    skips off the goldens' platform."""
    @pytest.fixture(scope="module", params=names)
    def exact_model_and_name(request):
        require_golden_platform()
        return golden_model(request.param, exact=True), request.param

    return exact_model_and_name


def assert_exact_predict(model, name: str, image: str, stride: int = 1) -> None:
    """:func:`assert_bit_exact` of ``model``'s exact prediction on the golden ``name`` / ``image``."""
    g = golden(name, image)
    assert_bit_exact(*predict_exact(model, g), g, stride=stride)
