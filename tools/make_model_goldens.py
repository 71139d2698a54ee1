"""Write MMPose 1.3.2 goldens for sagepose's model tests. Runs inside the MMPose reference venv:

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_model_goldens.py

For every zoo model it builds the equivalent MMPose model on the meta device and records
its parameter count (``tests/goldens/models/param_counts.json``). For the parity models
it fills MMPose's model with ``tests/weightgen.py``'s deterministic weights (strict load),
runs ``inference_topdown`` with flip test on the synthetic image and on a real COCO image,
and writes ``tests/goldens/models/<model>__<image>.npz`` holding the key list, per-tensor
checksums, the network input crops, raw and fused heatmaps, keypoints, scores and the
argmax margins (keypoints are only comparable where the margin is >= 1e-3).

HRNet / HRFormer goldens are compact: heatmaps on every second row and column, the crops as
an md5 (the tests cut them from the image), the key list in the synthetic file only. So are
the other ViT-family ones (``VIT_PARITY``: ViTPose-L/H, Sapiens-shaped ViTs), sampled every
``heatmap_stride`` px.
``--models NAME ...`` regenerates only those parity goldens. ``platform.json`` records the torch build,
CPU and thread count the goldens were written with (``tests/float_platform.py``): bit-level parity
(``TopDownEstimator.set_exact``) is tested only where they match, so all parity goldens come from one
platform.
"""
import argparse
import hashlib
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(ROOT), "shared", "peers"))  # MMPose's import shim
import compat  # noqa: E402, F401  (mmcv-lite / torchvision shims; must precede mmpose)
import cv2  # noqa: E402
import mmpose  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpose.apis import inference_topdown, init_model  # noqa: E402
from mmpose.registry import MODELS  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
from float_platform import GOLDEN_THREADS, signature  # noqa: E402
from weightgen import SYNTHETIC_BOX_XYXY, argmax_margin, deterministic_weights, synthetic_image  # noqa: E402

OUT = os.path.join(ROOT, "tests", "goldens", "models")
CFG_DIR = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs", "body_2d_keypoint",
                       "topdown_heatmap", "coco")
REALDATA = os.path.join(ROOT, "tests", "data", "realdata", "coco")  # conftest.REALDATA
VITPOSE = {"vitpose-s": "small", "vitpose-b": "base", "vitpose-l": "large", "vitpose-h": "huge"}
SAPIENS = {"sapiens-0.3b": (1024, 24, 16, 4096), "sapiens-0.6b": (1280, 32, 16, 5120),
           "sapiens-1b": (1536, 40, 24, 6144), "sapiens-2b": (1920, 48, 32, 7680)}
VERSIONS = dict(mmpose=mmpose.__version__, torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version())
PARITY_MODELS = ("vitpose-b", "vitpose-b-simple")
# sagepose zoo name -> MMPose config file (COCO 256x192)
HR_CONFIGS = {
    "hrnet-w32": "td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
    "hrnet-w32-udp": "td-hm_hrnet-w32_udp-8xb64-210e_coco-256x192.py",
    "hrnet-w32-dark": "td-hm_hrnet-w32_dark-8xb64-210e_coco-256x192.py",
    "hrnet-w48": "td-hm_hrnet-w48_8xb32-210e_coco-256x192.py",
    "hrnet-w48-udp": "td-hm_hrnet-w48_udp-8xb32-210e_coco-256x192.py",
    "hrnet-w48-dark": "td-hm_hrnet-w48_dark-8xb32-210e_coco-256x192.py",
    "hrformer-s": "td-hm_hrformer-small_8xb32-210e_coco-256x192.py",
    "hrformer-b": "td-hm_hrformer-base_8xb32-210e_coco-256x192.py",
}
HR_PARITY_MODELS = ("hrnet-w32", "hrnet-w32-udp", "hrnet-w32-dark", "hrformer-b", "hrnet-w48", "hrformer-s")
# Real image: two ground-truth person boxes (COCO xywh) of 000000196141.jpg, one touching the border.
REAL_IMAGE, REAL_BOXES_XYWH = "000000196141.jpg", [[247.76, 74.23, 169.67, 300.78],
                                                   [453.77, 206.81, 177.23, 210.87]]


def mmpose_config(name):
    """MMPose config equivalent to a sagepose zoo model, and the number of BN-affine parameters that
    sagepose's version does not have (Sapiens' head uses non-affine InstanceNorm where MMPose has BN)."""
    if name in HR_CONFIGS:
        return Config.fromfile(os.path.join(CFG_DIR, HR_CONFIGS[name])), 0
    if name.removesuffix("-simple") in VITPOSE:
        size = VITPOSE[name.removesuffix("-simple")]
        simple = "-simple" if name.endswith("-simple") else ""
        file = f"td-hm_ViTPose-{size}{simple}_8xb64-210e_coco-256x192.py"
        return Config.fromfile(os.path.join(CFG_DIR, file)), 0
    cfg = Config.fromfile(os.path.join(CFG_DIR, "td-hm_ViTPose-base_8xb64-210e_coco-256x192.py"))
    bb, head = cfg.model.backbone, cfg.model.head
    if name in SAPIENS:
        dim, depth, heads, ffn = SAPIENS[name]
        bb.img_size, bb.drop_path_rate = (1024, 768), 0.0
        head.update(deconv_out_channels=(768, 768), deconv_kernel_sizes=(4, 4),
                    conv_out_channels=(768, 768), conv_kernel_sizes=(1, 1))
        cfg.codec.update(input_size=(768, 1024), heatmap_size=(192, 256), sigma=6)
        bn_affine = 4 * 2 * 768
    elif name == "vit-tiny":
        dim, depth, heads, ffn = 192, 6, 3, 768
        bb.img_size, bb.patch_size, bb.drop_path_rate = (128, 96), 8, 0.0
        head.update(deconv_out_channels=(128,), deconv_kernel_sizes=(4,))
        cfg.codec.update(input_size=(96, 128), heatmap_size=(24, 32), sigma=1)
        bn_affine = 0
    else:
        raise KeyError(name)
    bb.arch = dict(embed_dims=dim, num_layers=depth, num_heads=heads, feedforward_channels=ffn)
    head.in_channels = dim
    head.decoder = cfg.codec
    return cfg, bn_affine


def param_count(name):
    cfg, bn_affine = mmpose_config(name)
    cfg.model.backbone.init_cfg = None
    # HRFormer reads its drop-path rates with .item(): it cannot be built on the meta device
    with torch.device("cpu" if name.startswith("hrformer") else "meta"):
        model = MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters()) - bn_affine


def decode_sensitivity(decoder, heatmaps, scale, input_size, rel=1e-5, trials=4):
    """(N, K, h, w) -> (N, K) image px: how far MMPose's own decode moves under noise of ``rel`` x max|hm|.

    Random weights give flat, noisy heatmaps on which DARK-UDP's Hessian step is ill-conditioned;
    keypoints are only comparable to 1e-3 px where this is small.
    """
    out = np.zeros(heatmaps.shape[:2], np.float32)
    px = (scale / np.asarray(input_size, np.float32))[:, None]  # input-crop px -> image px
    for i, hm in enumerate(heatmaps):
        base = decoder.decode(hm)[0][0]
        for t in range(trials):
            noise = np.random.Generator(np.random.PCG64(t)).standard_normal(hm.shape)
            moved = decoder.decode((hm + rel * np.abs(hm).max() * noise).astype(np.float32))[0][0]
            out[i] = np.maximum(out[i], (np.abs(moved - base) * px[i]).max(-1))
    return out


def run_parity(name, seed=0, compact=False):
    cfg, _ = mmpose_config(name)
    cfg.model.backbone.init_cfg = None
    model = init_model(cfg, checkpoint=None, device="cpu")
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    weights = deterministic_weights(keys, seed)
    # HRFormer's relative_position_index buffers are constants of the window size, not weights: kept
    constants = {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_index")}
    model.load_state_dict({**weights, **constants}, strict=True)
    model.eval()
    model.test_cfg["output_heatmaps"] = True
    checksums = np.array([float(v.double().sum()) for v in weights.values()], np.float64)

    inputs, heads = [], []
    model.register_forward_pre_hook(
        lambda m, args, kw: inputs.append((kw["inputs"] if "inputs" in kw else args[0]).clone()),
        with_kwargs=True)
    head_forward = model.head.forward
    model.head.forward = lambda feats: heads.append(head_forward(feats).detach().clone()) or heads[-1]

    synthetic = synthetic_image()
    cases = [("synthetic", synthetic, np.array([SYNTHETIC_BOX_XYXY], np.float32), "")]
    real_path = os.path.join(REALDATA, REAL_IMAGE)
    boxes = np.array(REAL_BOXES_XYWH, np.float32)
    boxes_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    cases.append(("coco196141", cv2.imread(real_path), boxes_xyxy, os.path.relpath(real_path, ROOT)))
    mean = np.array(cfg.model.data_preprocessor.mean, np.float32)[:, None, None]
    std = np.array(cfg.model.data_preprocessor.std, np.float32)[:, None, None]
    summary = {}
    for tag, img, bboxes, path in cases:
        inputs.clear()
        heads.clear()
        with torch.no_grad():
            res = inference_topdown(model, img, bboxes=bboxes, bbox_format="xyxy")
        x = inputs[0].numpy()
        crops = np.rint(x * std + mean)[:, ::-1].transpose(0, 2, 3, 1)  # back to uint8 BGR (N, h, w, 3)
        assert np.abs((crops[..., ::-1].transpose(0, 3, 1, 2) - mean) / std - x).max() < 1e-5
        final = np.stack([np.asarray(r.pred_fields.heatmaps) for r in res])
        out = dict(keys=np.array([k for k, _ in keys]), shapes=np.array(json.dumps([s for _, s in keys])),
                   checksums=checksums, seed=np.array(seed),
                   image_md5=np.array(hashlib.md5(img.tobytes()).hexdigest()),
                   image_path=np.array(path), bboxes_xyxy=bboxes, crops_bgr=crops.astype(np.uint8),
                   heatmaps_raw=heads[0].numpy(), heatmaps_final=final.astype(np.float32),
                   keypoints=np.stack([r.pred_instances.keypoints[0] for r in res]).astype(np.float32),
                   scores=np.stack([r.pred_instances.keypoint_scores[0] for r in res]).astype(np.float32),
                   argmax_margin=argmax_margin(final).astype(np.float32),
                   decode_sensitivity=decode_sensitivity(model.head.decoder, final,
                                                         np.stack([r.metainfo["input_scale"] for r in res]),
                                                         cfg.codec.input_size),
                   input_center=np.stack([r.metainfo["input_center"] for r in res]).astype(np.float32),
                   input_scale=np.stack([r.metainfo["input_scale"] for r in res]).astype(np.float32),
                   flip_indices=np.asarray(res[0].metainfo["flip_indices"]),
                   versions=np.array(json.dumps(VERSIONS)))
        if compact:
            out = compact_golden(out, keep_keys=tag == "synthetic")
        file = os.path.join(OUT, f"{name}__{tag}.npz")
        np.savez_compressed(file, **out)
        summary[tag] = dict(file=os.path.relpath(file, ROOT), kb=round(os.path.getsize(file) / 1024),
                            boxes=len(bboxes), margin_ok=int((out["argmax_margin"] >= 1e-3).sum()),
                            stable=int(((out["argmax_margin"] >= 1e-3)
                                        & (out["decode_sensitivity"] <= 1e-3)).sum()))
    model.head.forward = head_forward
    return summary


def compact_golden(out, keep_keys):
    """Only what the HRNet / HRFormer tests need, in float32: heatmaps on every second row and column,
    the crops as an md5 of their bytes, the key list and checksums in one file per model."""
    crops = out.pop("crops_bgr")
    out["crops_md5"] = np.array(hashlib.md5(np.ascontiguousarray(crops).tobytes()).hexdigest())
    out["heatmaps_raw"] = np.ascontiguousarray(out["heatmaps_raw"][..., ::2, ::2])
    out["heatmaps_final"] = np.ascontiguousarray(out["heatmaps_final"][..., ::2, ::2])
    if not keep_keys:
        for key in ("keys", "shapes", "checksums"):
            out.pop(key)
    return out


# ViT-family parity beyond ViTPose-B (compact goldens; tests/test_parity_mmpose.py). ViTPose-L / -H at full
# size; Sapiens-shaped ViTs: MMPose's ViT with Sapiens' numbers and 1024x768 input, depth reduced to 2 for CPU
# time, Sapiens' head, one person box per image. Heatmaps are kept every `stride` px (both sides sample alike).
VIT_PARITY = {"vitpose-l": dict(depth=None, stride=2, boxes=2), "vitpose-h": dict(depth=None, stride=2, boxes=2),
              "sapiens-0.3b": dict(depth=2, stride=8, boxes=1), "sapiens-1b": dict(depth=2, stride=8, boxes=1)}


def sapiens_head(model):
    """MMPose 1.3.2's HeatmapHead hard-codes BatchNorm2d + ReLU after each (de)conv; Sapiens' fork puts a
    non-affine InstanceNorm2d + SiLU in the same places. Swap them in, so that MMPose's own head code,
    flip test and decoder run Sapiens' head (its state dict then has no norm keys, as Sapiens' files)."""
    for layers in (model.head.deconv_layers, model.head.conv_layers):
        for i, layer in enumerate(layers):
            if isinstance(layer, torch.nn.BatchNorm2d):
                layers[i] = torch.nn.InstanceNorm2d(layer.num_features)
            elif isinstance(layer, torch.nn.ReLU):
                layers[i] = torch.nn.SiLU(inplace=True)


def run_vit_parity(name, seed=0):
    """MMPose's ``inference_topdown`` (flip test) for one VIT_PARITY model on the synthetic and the COCO image."""
    spec = VIT_PARITY[name]
    cfg, _ = mmpose_config(name)
    cfg.model.backbone.init_cfg = None
    if spec["depth"]:
        cfg.model.backbone.arch["num_layers"] = spec["depth"]
    for step in cfg.test_dataloader.dataset.pipeline:  # the base config's crop size was fixed when it was read
        if step["type"] == "TopdownAffine":
            step["input_size"] = cfg.codec.input_size
    model = init_model(cfg, checkpoint=None, device="cpu")
    if name.startswith("sapiens"):
        sapiens_head(model)
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    weights = deterministic_weights(keys, seed)
    model.load_state_dict(weights, strict=True)
    model.eval()
    model.test_cfg["output_heatmaps"] = True
    inputs, heads = [], []
    model.register_forward_pre_hook(lambda m, args, kw: inputs.append(kw.get("inputs", args[0] if args else None)),
                                    with_kwargs=True)
    forward = model.head.forward  # the head's predict() calls forward() directly: hooks would not fire
    model.head.forward = lambda feats: heads.append(forward(feats).detach().clone()) or heads[-1]
    boxes = np.array(REAL_BOXES_XYWH, np.float32)[: spec["boxes"]]
    real = os.path.join(REALDATA, REAL_IMAGE)
    cases = [("synthetic", synthetic_image(), np.array([SYNTHETIC_BOX_XYXY], np.float32), ""),
             ("coco196141", cv2.imread(real), np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1),
              os.path.relpath(real, ROOT))]
    mean = np.array(cfg.model.data_preprocessor.mean, np.float32)[:, None, None]
    std = np.array(cfg.model.data_preprocessor.std, np.float32)[:, None, None]
    s, summary = spec["stride"], {}
    for tag, img, bboxes, path in cases:
        inputs.clear()
        heads.clear()
        with torch.no_grad():
            res = inference_topdown(model, img, bboxes=bboxes, bbox_format="xyxy")
        crops = np.ascontiguousarray(np.rint(inputs[0].numpy() * std + mean)[:, ::-1].transpose(0, 2, 3, 1),
                                     dtype=np.uint8)
        final = np.stack([np.asarray(r.pred_fields.heatmaps) for r in res]).astype(np.float32)
        scale = np.stack([r.metainfo["input_scale"] for r in res]).astype(np.float32)
        out = dict(arch=np.array(json.dumps(dict(depth=spec["depth"]) if spec["depth"] else {})),
                   heatmap_stride=np.array(s), seed=np.array(seed),
                   image_md5=np.array(hashlib.md5(img.tobytes()).hexdigest()), image_path=np.array(path),
                   bboxes_xyxy=bboxes, crops_md5=np.array(hashlib.md5(crops.tobytes()).hexdigest()),
                   heatmaps_raw=np.ascontiguousarray(heads[0].numpy()[..., ::s, ::s]),
                   heatmaps_final=np.ascontiguousarray(final[..., ::s, ::s]),
                   keypoints=np.stack([r.pred_instances.keypoints[0] for r in res]).astype(np.float32),
                   scores=np.stack([r.pred_instances.keypoint_scores[0] for r in res]).astype(np.float32),
                   argmax_margin=argmax_margin(final).astype(np.float32),
                   decode_sensitivity=decode_sensitivity(model.head.decoder, final, scale, cfg.codec.input_size),
                   input_center=np.stack([r.metainfo["input_center"] for r in res]).astype(np.float32),
                   input_scale=scale, versions=np.array(json.dumps(VERSIONS)))
        if tag == "synthetic":  # the weights' recipe: key list, shapes and per-tensor checksums
            out.update(keys=np.array([k for k, _ in keys]), shapes=np.array(json.dumps([sh for _, sh in keys])),
                       checksums=np.array([float(v.double().sum()) for v in weights.values()], np.float64))
        file = os.path.join(OUT, f"{name}__{tag}.npz")
        np.savez_compressed(file, **out)
        summary[tag] = dict(kb=round(os.path.getsize(file) / 1024), boxes=len(bboxes),
                            margin_ok=int((out["argmax_margin"] >= 1e-3).sum()),
                            stable=int(((out["argmax_margin"] >= 1e-3) & (out["decode_sensitivity"] <= 1e-3)).sum()))
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-counts", action="store_true")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--models", nargs="+", choices=[*PARITY_MODELS, *HR_PARITY_MODELS, *VIT_PARITY],
                    help="parity goldens to write (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(GOLDEN_THREADS)
    init_default_scope("mmpose")
    os.makedirs(OUT, exist_ok=True)
    platform_file = os.path.join(OUT, "platform.json")
    if not a.skip_parity:
        here = signature()
        if a.models and os.path.exists(platform_file):
            with open(platform_file) as f:
                if json.load(f) != here:
                    sys.exit(f"{platform_file} records another platform than this one ({here}): regenerate "
                             "all parity goldens here (no --models), so that they share one platform")
        with open(platform_file, "w") as f:
            json.dump(here, f, indent=1)
    if not a.skip_counts:
        names = [*(n for v in VITPOSE for n in (v, f"{v}-simple")), *SAPIENS, "vit-tiny", *HR_CONFIGS]
        counts = {n: param_count(n) for n in names}
        with open(os.path.join(OUT, "param_counts.json"), "w") as f:
            note = ("MMPose 1.3.2 builds of the equivalent configs (tools/make_model_goldens.py); Sapiens "
                    "counts leave out the 4 head BN affines that Sapiens' non-affine InstanceNorm lacks")
            json.dump(dict(note=note, counts=counts), f, indent=1)
        print(json.dumps(counts, indent=1))
    if not a.skip_parity:
        for name in a.models or [*PARITY_MODELS, *HR_PARITY_MODELS, *VIT_PARITY]:
            if name in VIT_PARITY:
                print(name, json.dumps(run_vit_parity(name)))
            else:
                print(name, json.dumps(run_parity(name, compact=name in HR_PARITY_MODELS)))


if __name__ == "__main__":
    main()
