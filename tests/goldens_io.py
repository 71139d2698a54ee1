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
from float_platform import GOLDEN_THREADS, signature
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
    """Heatmaps (raw and flip-fused) and scores equal to MMPose's bit for bit, keypoints within float32 rounding
    of MMPose's float64 map back to the image (<= 1e-4 px) everywhere: at every point where the argmax margin
    is >= 1e-3 as well, however ill-conditioned the decode."""
    np.testing.assert_array_equal(raw[..., ::stride, ::stride], g["heatmaps_raw"])
    np.testing.assert_array_equal(pred.heatmaps[..., ::stride, ::stride], g["heatmaps_final"])
    np.testing.assert_array_equal(pred.scores, g["scores"])
    err = np.abs(pred.keypoints - g["keypoints"]).max(-1)
    assert err.max() <= 1e-4
    assert err[g["argmax_margin"] >= 1e-3].max() <= 1e-3


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
