"""Decoded keypoints stay near their heatmap's argmax and inside the map, whatever the heatmap (issue 26).

DARK's and UDP's Newton step divides by the Hessian's determinant; MMPose takes it unbounded, so a flat,
noisy or saddle-shaped map sent keypoints thousands of pixels off their crop. The default decode takes the
step only toward a peak and at most the trust radius (``sagepose.codecs.decode.NEWTON_TRUST_RADIUS``: one
heatmap px), counts non-finite values as 0, and keeps every keypoint within one heatmap pixel of the map.
Checked here on adversarial maps for every codec configuration of the zoo, and through ``predict`` for every zoo
family with random weights (flat, noisy maps: the ill-posed case) on real COCO images. Where the decode is well-posed
(peaked maps) it equals MMPose's: ``tests/test_codecs.py``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sagepose.codecs import MSRAHeatmap, UDPHeatmap
from sagepose.codecs.decode import NEWTON_TRUST_RADIUS
from sagepose.models import build_model

REALDATA = Path(__file__).parent / "data" / "realdata" / "coco"

# The codec configurations the zoo builds (sagepose.models.zoo), as (name, codec).
ZOO_CODECS = {
    "msra": MSRAHeatmap((192, 256), (48, 64), 2.0),  # hrnet-w32/-w48, hrformer-s/-b (and their -fusion)
    "dark-k11": MSRAHeatmap((192, 256), (48, 64), 2.0, unbiased=True, blur_kernel_size=11),  # hrnet-*-dark
    "udp-k11": UDPHeatmap((192, 256), (48, 64), 2.0, blur_kernel_size=11),  # vitpose-*, hrnet-*-udp
    "udp-k3": UDPHeatmap((96, 128), (24, 32), 0.5, blur_kernel_size=3),  # vit-tiny (and -fusion)
    "udp-sigma6": UDPHeatmap((768, 1024), (192, 256), 6.0, blur_kernel_size=11),  # sapiens-*
}


def adversarial_maps(w: int, h: int) -> dict[str, torch.Tensor]:
    """name -> (N, H, W) float32 maps on which a sub-pixel location is ill-posed or the values are broken."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    cx, cy = w / 2 - 0.3, h / 2 + 0.2
    gauss = lambda x0, y0, s: torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * s * s))
    noise = lambda n, a=1.0: a * torch.rand(n, h, w, generator=g)
    # a saddle (8 px wide) whose argmax is a spike by the saddle point: a saddle, not a peak, once blurred
    r2 = (xs - cx) ** 2 + (ys - cy) ** 2
    saddle_spike = 1 + 0.01 * ((xs - cx) ** 2 - (ys - cy) ** 2) * torch.exp(-r2 / 128)
    saddle_spike[round(cy), round(cx)] = saddle_spike.max() + 0.1
    disc = (((xs - cx) ** 2 + (ys - cy) ** 2) < (min(w, h) / 5) ** 2).float()
    peak = gauss(cx, cy, 2.0)
    with_value = lambda v, where: torch.where(where, torch.tensor(v), peak)
    centre = (ys == int(cy)) & (xs == int(cx))
    maps = {
        "zero": torch.zeros(1, h, w),
        "constant": torch.full((1, h, w), 0.3),
        "negative": -0.5 - noise(2),
        "uniform noise": noise(16),
        "flat + 1e-6 noise": 0.5 + noise(16, 1e-6),
        "saddle with a spike": saddle_spike[None],
        "ridge + noise": torch.exp(-(ys - cy) ** 2 / 8) + noise(16, 0.05),
        "plateau": disc[None],
        "plateau + noise": disc + noise(8, 0.01),
        "two equal peaks": (gauss(cx - 3, cy, 1.0) + gauss(cx + 3, cy, 1.0))[None],
        "peak at the corner": gauss(0.0, 0.0, 2.0)[None],
        "peak at the edge": gauss(w - 1.0, cy, 2.0)[None],
        "peak past the edge": gauss(-3.0, cy, 2.0)[None],
        "NaN at the peak": with_value(float("nan"), centre)[None],
        "NaN everywhere": torch.full((1, h, w), float("nan")),
        "+inf at the peak": with_value(float("inf"), centre)[None],
        "+inf everywhere": torch.full((1, h, w), float("inf")),
        "-inf around the peak": with_value(float("-inf"), ~centre)[None],
        "-inf everywhere": torch.full((1, h, w), float("-inf")),
        "huge": 3e38 * noise(4),
        "denormal": 1e-40 * noise(4),
    }
    return maps


def to_heatmap_px(codec, keypoints: torch.Tensor) -> torch.Tensor:
    """The inverse of ``codec.to_input`` (UDP's default decode scale is input / (hm - 1), not encode's map)."""
    if isinstance(codec, UDPHeatmap):
        hm = torch.tensor(codec.heatmap_size, dtype=torch.float64) - 1
        return keypoints.double() / torch.tensor(codec.input_size, dtype=torch.float64) * hm
    return codec.to_heatmap(keypoints.double())


def finite_argmax(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) -> (x, y) (N, 2) of the first maximum of the finite values (non-finite as 0), and that maximum."""
    clean = torch.nan_to_num(maps.double(), nan=0.0, posinf=0.0, neginf=0.0)
    value, idx = clean.flatten(1).max(-1)
    return torch.stack([idx % maps.shape[-1], idx // maps.shape[-1]], -1).double(), value


@pytest.mark.parametrize("config", list(ZOO_CODECS))
def test_default_decode_of_adversarial_heatmaps_stays_near_the_argmax_and_inside_the_map(config):
    codec = ZOO_CODECS[config]
    w, h = codec.heatmap_size
    radius = NEWTON_TRUST_RADIUS
    named = adversarial_maps(w, h)
    names = [name for name, maps in named.items() for _ in maps]
    maps = torch.cat(list(named.values()))
    keypoints, scores = codec.decode(maps[:, None])  # each map its own instance
    locs = to_heatmap_px(codec, keypoints[:, 0])
    peak, value = finite_argmax(maps)
    bad = lambda ok: sorted({names[i] for i in torch.nonzero(~ok).flatten().tolist()})
    finite = torch.isfinite(locs).all(-1) & torch.isfinite(scores[:, 0])
    assert finite.all(), f"{config}: not finite on {bad(finite)}"
    inside = ((locs >= -1 - 1e-5) & (locs <= torch.tensor([w, h]) + 1e-5)).all(-1)
    assert inside.all(), f"{config}: off the map on {bad(inside)}"
    torch.testing.assert_close(scores[:, 0].double(), value.clamp_max(np.finfo(np.float32).max))
    positive = value > 0
    near = (locs - peak).abs().amax(-1) <= radius + 1e-4
    assert (near | ~positive).all(), f"{config}: over {radius} heatmap px from the argmax on {bad(near | ~positive)}"
    # no positive value: MMPose's mark for "no location", (-1, -1), kept as is
    marked = ((locs + 1).abs() <= 1e-5).all(-1)
    assert (marked | positive).all(), f"{config}: not at (-1, -1) on {bad(marked | positive)}"


@pytest.mark.parametrize("config", ["dark-k11", "udp-k11"])
def test_default_decode_of_a_flat_map_stays_near_the_argmax_where_mmpose_runs_off(config):
    # 0.5 + 1e-6 noise: MMPose's (decode_impl="mmpose") Newton step divides by a near-zero Hessian (and with the
    # 3x3 blur by an exactly singular one, where numpy's inverse raises)
    codec = ZOO_CODECS[config]
    w, h = codec.heatmap_size
    maps = adversarial_maps(w, h)["flat + 1e-6 noise"][:, None]
    exact, _ = dataclasses.replace(codec, decode_impl="mmpose").decode(maps)
    bounded, _ = codec.decode(maps)
    peak = finite_argmax(maps[:, 0])[0]
    exact_off = np.nan_to_num((to_heatmap_px(codec, exact[:, 0]) - peak).abs().amax(-1).numpy(), nan=np.inf)
    assert exact_off.max() > 10  # the unbounded step, kept for parity in exact mode
    assert (to_heatmap_px(codec, bounded[:, 0]) - peak).abs().amax() <= NEWTON_TRUST_RADIUS + 1e-4


def test_default_decode_on_an_interior_saddle_keeps_the_argmax():
    # the argmax sits on a saddle of the blurred map (a spike by the saddle point): no peak to step to (MMPose
    # steps 0.6 px toward the saddle point)
    for config in ("dark-k11", "udp-k11", "udp-sigma6"):
        codec = ZOO_CODECS[config]
        maps = adversarial_maps(*codec.heatmap_size)["saddle with a spike"][:, None]
        locs = to_heatmap_px(codec, codec.decode(maps)[0][:, 0])
        torch.testing.assert_close(locs, finite_argmax(maps[:, 0])[0], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- through predict

# the smallest member of each zoo family, at the zoo's input size, shrunk where the architecture allows
FAMILIES = {
    "vitpose-s": dict(arch=dict(depth=1)),
    "vitpose-s-simple": dict(arch=dict(depth=1)),
    "sapiens-0.3b": dict(input_size=(192, 256), arch=dict(depth=1)),
    "vit-tiny": {},
    "vit-tiny-fusion": {},
    "hrnet-w32": dict(arch=dict(num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
    "hrnet-w32-dark": dict(arch=dict(num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
    "hrnet-w32-udp": dict(arch=dict(num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
    "hrformer-s": dict(arch=dict(num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
    "hrformer-s-fusion": dict(arch=dict(num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1)),
}


def coco_people() -> list[tuple[Path, np.ndarray]]:
    """(image path, GT boxes (N, 4) xyxy) for the real COCO images shipped with the tests."""
    data = json.loads((REALDATA / "test_coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = []
    for image in sorted(p for p in REALDATA.glob("*.jpg")):
        boxes = [a["bbox"] for a in data["annotations"] if files[a["image_id"]] == image.name]
        xywh = np.array(boxes, np.float32)
        out.append((image, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)))
    return out


def padded_crop_bounds(model, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) lower and upper corners in image px of each box's crop (box scaled by the padding 1.25, aspect
    fixed), widened by one heatmap pixel in image units (UDP's decode scale, crop / (heatmap - 1): the larger)."""
    _, centre, scale = model.crop(np.zeros((8, 8, 3), np.uint8), boxes)
    one_px = scale / (np.array(model.codec.heatmap_size) - 1)
    slack = 1e-3  # image px: float32 rounding of a keypoint exactly one heatmap pixel out (MMPose's (-1, -1))
    return centre - scale / 2 - one_px - slack, centre + scale / 2 + one_px + slack


def random_model(name: str):
    torch.manual_seed(0)
    model = build_model(name, **FAMILIES[name]).eval()
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return request.param, random_model(request.param)


def test_every_zoo_family_decodes_with_a_tested_codec(family):
    name, model = family
    assert model.codec in [dataclasses.replace(c, input_size=model.input_size, heatmap_size=model.codec.heatmap_size)
                           for c in ZOO_CODECS.values()], name


def test_predict_with_random_weights_keeps_every_keypoint_inside_its_crop(family):
    name, model = family
    for image, boxes in coco_people():
        pred = model.predict(str(image), boxes)
        lo, hi = padded_crop_bounds(model, boxes)
        assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.scores).all(), name
        inside = (pred.keypoints >= lo[:, None]) & (pred.keypoints <= hi[:, None])
        assert inside.all(), f"{name} on {image.name}: {np.argwhere(~inside.all(-1)).tolist()} outside the crop"


def test_predict_with_non_finite_outputs_keeps_every_keypoint_finite_and_inside_its_crop(family):
    # a diverged network: NaN, +inf and -inf heatmaps for three joints (the head's last bias)
    name, model = family
    final = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    if name.endswith("-fusion"):
        final = model.head.heatmap
    bias = final.bias.detach().clone()
    try:
        with torch.no_grad():
            final.bias[:3] = torch.tensor([float("nan"), float("inf"), float("-inf")])
        image, boxes = coco_people()[0]
        pred = model.predict(str(image), boxes)
    finally:
        with torch.no_grad():
            final.bias.copy_(bias)
    lo, hi = padded_crop_bounds(model, boxes)
    assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.scores).all(), name
    assert ((pred.keypoints >= lo[:, None]) & (pred.keypoints <= hi[:, None])).all(), name
    assert (pred.scores[:, :3] == 0).all(), name  # no finite evidence: score 0
