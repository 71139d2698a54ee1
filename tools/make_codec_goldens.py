"""Write tests/goldens/codecs.npz: MMPose 1.3.2's heatmap codecs run on seeded inputs.

Regenerate (needs the MMPose peer venv, not sagepose):

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_codec_goldens.py

For each size case (COCO 256x192 -> 64x48 sigma 2, 384x288 -> 96x72 sigma 3, and a
non-multiple 270x200 -> 67x52 sigma 1.5) it stores the inputs and MMPose's outputs of

* ``MSRAHeatmap`` (plain and ``unbiased=True``) and ``UDPHeatmap`` encode, on keypoints
  with some invisible, fractional-visibility, out-of-range and border ones;
* their decode, on uniform-random heatmaps and on noisy Gaussian-peaked ones (peaks
  on and just outside the border, channels with max <= 0); heatmap inputs are
  float16-representable so the file stays small;
* for DARK / UDP, MMPose's own float32 spread: how far its decode moves when every
  heatmap value moves one ulp up or down. On uniform-random maps the DARK Newton step
  is ill-conditioned (MMPose moves up to ~0.1 px), so the tests bound the difference
  by this spread there rather than by a flat 1e-4 px;
* ``flip_heatmaps`` (``flip_mode='heatmap'``) with and without the shift, and the
  decode of plain + flipped heatmaps fused as MMPose's heads do, on the COCO case.

MMPose's codecs take one instance at a time, so each instance is encoded / decoded
separately and the results stacked along B.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent / "shared" / "peers"))  # MMPose's import shim
import compat  # noqa: E402,F401  (must come before mmpose)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmpose.codecs import MSRAHeatmap, UDPHeatmap  # noqa: E402
from mmpose.models.utils.tta import flip_heatmaps  # noqa: E402

OUT = ROOT / "tests" / "goldens" / "codecs.npz"
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]

# name: (input_size, heatmap_size, sigma, blur_kernel_size, keypoints per instance,
#        instances to encode, random heatmaps, noisy heatmaps)
CASES = {
    "coco": ((192, 256), (48, 64), 2.0, 11, 17, 2, 2, 3),
    "large": ((288, 384), (72, 96), 3.0, 17, 6, 2, 1, 2),
    "odd": ((200, 270), (52, 67), 1.5, 7, 6, 2, 1, 2),
}


def make_codecs(input_size, heatmap_size, sigma, blur):
    return {
        "msra": MSRAHeatmap(input_size, heatmap_size, sigma, unbiased=False, blur_kernel_size=blur),
        "dark": MSRAHeatmap(input_size, heatmap_size, sigma, unbiased=True, blur_kernel_size=blur),
        "udp": UDPHeatmap(input_size, heatmap_size, sigma=sigma, blur_kernel_size=blur),
    }


def sample_keypoints(rng, input_size, heatmap_size, n, k):
    """(n, k, 2) float32 input-pixel keypoints (15% off-crop, some at borders), (n, k) visibility."""
    size = np.array(input_size, np.float32)
    kp = rng.uniform(-0.15, 1.15, (n, k, 2)).astype(np.float32) * size
    # heatmap-border cases: just left of / above pixel 0 (rounds into the map), and the last pixel
    stride = size / np.array(heatmap_size, np.float32)
    border = np.array([[-0.6, 3.0], [-0.4, -0.4], [heatmap_size[0] - 0.6, 5.0], [-7.2, 10.0],
                       [10.0, heatmap_size[1] - 0.3]], np.float32) * stride
    kp[0, : len(border)] = border
    vis = (rng.uniform(size=(n, k)) > 0.2).astype(np.float32)
    vis[-1, :3] = [0.3, 0.7, 0.5]  # fractional visibility: MMPose draws iff >= 0.5, weight stays as given
    return kp, vis


def random_heatmaps(rng, n, k, heatmap_size):
    w, h = heatmap_size
    return rng.uniform(size=(n, k, h, w)).astype(np.float16).astype(np.float32)


def noisy_heatmaps(rng, n, k, heatmap_size):
    """Sub-pixel Gaussian peaks (a third at or past the border) plus noise; a few maps with max <= 0."""
    w, h = heatmap_size
    xs = np.arange(w, dtype=np.float64)[None, None, None]
    ys = np.arange(h, dtype=np.float64)[None, None, :, None]
    cx = rng.uniform(-1.0, w, (n, k))
    cy = rng.uniform(-1.0, h, (n, k))
    edge = rng.uniform(size=(n, k)) < 0.33
    cx[edge] = rng.choice([-0.8, 0.0, 0.4, 1.0, 1.6, w - 2.5, w - 1.4, w - 1.0, w - 0.6], edge.sum())
    sig = rng.uniform(1.2, 3.5, (n, k))[..., None, None]
    amp = rng.uniform(0.2, 1.0, (n, k))[..., None, None]
    maps = amp * np.exp(-((xs - cx[..., None, None]) ** 2 + (ys - cy[..., None, None]) ** 2) / (2 * sig**2))
    maps += rng.normal(0.0, 0.03, maps.shape)
    maps[0, 1] = -np.abs(maps[0, 1]) - 0.01  # max < 0 -> location (-1, -1)
    maps[-1, 2] = 0.0  # all zero
    return maps.astype(np.float16).astype(np.float32)


def decode_all(codec, heatmaps):
    # An all-zero map makes MMPose's blur divide 0 by 0 (NaN keypoint, as it should): silence that warning.
    with np.errstate(invalid="ignore"):
        out = [codec.decode(hm) for hm in heatmaps]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def ulp_spread(codec, heatmaps, decoded):
    """(B, K): max over +-1 ulp input perturbations of MMPose's decoded-keypoint change, in input pixels."""
    spread = np.zeros(decoded.shape[:2])
    for direction in (np.inf, -np.inf):
        moved = decode_all(codec, np.nextafter(heatmaps, np.float32(direction)))[0]
        spread = np.fmax(spread, np.abs(moved - decoded).max(-1))
    return spread


def main() -> None:
    rng = np.random.default_rng(20240613)
    golden: dict[str, np.ndarray] = {}
    for case, (input_size, heatmap_size, sigma, blur, k, n_enc, n_rand, n_noisy) in CASES.items():
        golden[f"{case}/config"] = np.array([*input_size, *heatmap_size, sigma, blur, n_rand], np.float64)
        kp, vis = sample_keypoints(rng, input_size, heatmap_size, n_enc, k)
        heatmaps = np.concatenate([random_heatmaps(rng, n_rand, k, heatmap_size),
                                   noisy_heatmaps(rng, n_noisy, k, heatmap_size)])
        golden[f"{case}/keypoints"], golden[f"{case}/visible"] = kp, vis
        golden[f"{case}/heatmaps"] = heatmaps.astype(np.float16)
        for name, codec in make_codecs(input_size, heatmap_size, sigma, blur).items():
            enc = [codec.encode(kp[i : i + 1], vis[i : i + 1]) for i in range(n_enc)]
            golden[f"{case}/{name}/encoded"] = np.stack([e["heatmaps"] for e in enc]).astype(np.float32)
            golden[f"{case}/{name}/weights"] = np.concatenate([e["keypoint_weights"] for e in enc])
            decoded, golden[f"{case}/{name}/scores"] = decode_all(codec, heatmaps)
            golden[f"{case}/{name}/decoded"] = decoded
            if name != "msra":
                golden[f"{case}/{name}/ulp_spread"] = ulp_spread(codec, heatmaps[:n_rand], decoded[:n_rand])

    # Flip test on the COCO case: raw flip_heatmaps on small maps, and the fused decode.
    small = torch.from_numpy(rng.uniform(size=(2, 17, 6, 5)).astype(np.float32))
    golden["flip/input"] = small.numpy()
    for shift in (False, True):
        golden[f"flip/shift{int(shift)}"] = flip_heatmaps(small.clone(), COCO_FLIP, "heatmap", shift).numpy()
    plain = torch.from_numpy(golden["coco/heatmaps"][CASES["coco"][6]:].astype(np.float32))  # the noisy ones
    mirrored = plain.flip(0).flip(-1)  # stands in for the heatmaps of the mirrored crop
    for name, codec in make_codecs(*CASES["coco"][:4]).items():
        shift = name != "udp"  # MMPose configs: shift_heatmap=True for MSRA / DARK, False for UDP
        fused = (plain + flip_heatmaps(mirrored.clone(), COCO_FLIP, "heatmap", shift)) * 0.5
        golden[f"flip/{name}/decoded"], golden[f"flip/{name}/scores"] = decode_all(codec, fused.numpy())

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **golden)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, {len(golden)} arrays)")


if __name__ == "__main__":
    main()
