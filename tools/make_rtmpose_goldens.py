"""Write MMPose 1.3.2 goldens for sagepose's RTMPose tests (tests/test_rtmpose.py). Runs inside the MMPose venv:

    ~/.cache/sagepose-peers/mmpose-venv/bin/python tools/make_rtmpose_goldens.py [PART ...]

(PART: ``counts``, ``codec``, ``gau``, ``loss``, ``parity``; all by default.)

Into ``tests/goldens/rtmpose/``:

* ``param_counts.json``: the parameter count of MMPose's build of each ``rtmpose-*`` zoo row's config
  (``configs/body_2d_keypoint/rtmpose/coco``), on the meta device;
* ``rtmpose-t__coco196141.npz``: MMPose's RTMPose-t (the COCO 256x192 config) filled with ``tests/weightgen.py``'s
  deterministic weights (seed 0, strict load; the file keeps MMPose's key list, shapes and per-tensor checksums, so
  the test regenerates the 3.3M weights instead of reading them) but for the BatchNorms' running statistics, which
  are calibrated on the golden's crops (:func:`calibrate_batchnorm`) and stored (7.7K floats), run by
  ``inference_topdown`` with flip test on the two person boxes of a real COCO image: the crops' md5, the head's raw
  SimCC logits (x then y along the last axis, as sagepose lays them out) on the crops and on their mirror images,
  the flip-fused logits MMPose decodes, its keypoints and scores, each keypoint's argmax margin (keypoints are
  comparable where it is >= 1e-3), and the codec's DARK decode and visibility of those fused logits;
* ``codec.npz``: ``SimCCLabel.encode`` of a few keypoints (inside, on a half bin, partly and wholly outside,
  invisible) under four codec settings;
* ``gau.npz``: MMPose's gated attention unit with its relative bias and rotary embedding on (:func:`gau_golden`);
* ``loss.npz``: MMPose's ``KLDiscretLoss`` (:func:`loss_golden`) under four settings on seeded logits and the
  codec's labels of seeded keypoints (some invisible, some off the crop) with fractional target weights;
* ``platform.json``: the torch build, CPU and thread count (``tests/float_platform.py``): the bit-level test of
  exact mode runs only where it matches.
"""
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(ROOT), "shared", "peers"))  # MMPose's import shim
import compat  # noqa: E402, F401  (mmcv-lite / torchvision shims; must precede mmpose)
import cv2  # noqa: E402
import mmpose  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from make_model_goldens import REAL_BOXES_XYWH, REAL_IMAGE, REALDATA, VERSIONS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpose.apis import inference_topdown, init_model  # noqa: E402
from mmpose.codecs import SimCCLabel  # noqa: E402
from mmpose.registry import MODELS  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests"))
from float_platform import GOLDEN_THREADS, signature  # noqa: E402
from weightgen import deterministic_weights  # noqa: E402

OUT = os.path.join(ROOT, "tests", "goldens", "rtmpose")
CFG_DIR = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs", "body_2d_keypoint", "rtmpose", "coco")
CONFIGS = {  # sagepose zoo name -> MMPose config
    "rtmpose-t": "rtmpose-t_8xb256-420e_coco-256x192.py",
    "rtmpose-s": "rtmpose-s_8xb256-420e_coco-256x192.py",
    "rtmpose-m": "rtmpose-m_8xb256-420e_coco-256x192.py",
    "rtmpose-l": "rtmpose-l_8xb256-420e_coco-256x192.py",
    "rtmpose-m-384x288": "rtmpose-m_8xb256-420e_aic-coco-384x288.py",
    "rtmpose-l-384x288": "rtmpose-l_8xb256-420e_aic-coco-384x288.py",
}
PARITY = "rtmpose-t"
BN_DAMPING = 0.1  # calibrate_batchnorm's
# keypoints (input px at 256x192) for the encode goldens: inside; x on a half bin (10.25 * 2 = 20.5: rounds to
# even); left of the crop but within 3 sigma of it; wholly left of it; invisible; wholly right of it
ENCODE_KEYPOINTS = np.array([[[50.3, 100.7], [10.25, 60.0], [-3.0, 50.0], [-20.0, 50.0], [80.0, 90.0],
                              [200.0, 250.0]]], np.float32)
ENCODE_VISIBLE = np.array([[1.0, 1.0, 1.0, 1.0, 0.0, 1.0]], np.float32)
ENCODE_CODECS = {
    "rtmpose": dict(input_size=(192, 256), sigma=(4.9, 5.66), simcc_split_ratio=2.0, normalize=False),
    "normalized": dict(input_size=(192, 256), sigma=6.0, simcc_split_ratio=2.0, normalize=True),
    "standard": dict(input_size=(192, 256), smoothing_type="standard", simcc_split_ratio=3.0,
                     label_smooth_weight=0.1),
    "onehot": dict(input_size=(192, 256), smoothing_type="standard", simcc_split_ratio=2.0),
}


def config(name):
    cfg = Config.fromfile(os.path.join(CFG_DIR, CONFIGS[name]))
    cfg.model.backbone.init_cfg = None
    return cfg


def param_count(name):
    with torch.device("meta"):
        model = MODELS.build(config(name).model)
    return sum(p.numel() for p in model.parameters())


def simcc_margin(x, y, r=2):
    """x (N, K, Wx), y (N, K, Wy) -> (N, K): the smaller over the two axes of the relative gap between a vector's
    maximum and its best rival more than ``r`` bins away (the 1-D ``weightgen.argmax_margin``)."""
    def one(v):
        v = v.astype(np.float64)
        idx = v.argmax(-1)
        top = np.take_along_axis(v, idx[..., None], -1)[..., 0]
        near = np.abs(np.arange(v.shape[-1]) - idx[..., None]) <= r
        return (top - np.where(near, -np.inf, v).max(-1)) / (np.abs(top) + 1e-12)
    return np.minimum(one(x), one(y))


def calibrate_batchnorm(model, inputs, damping=BN_DAMPING):
    """Set every BatchNorm's running statistics to those of ``inputs`` (B, 3, H, W) and their mirror images, as one
    training-mode pass with a cumulative average records them, each variance plus ``damping`` x the layer's mean
    variance; returns {key: tensor}. Deterministic weights leave the running statistics unrelated to the
    activations: through CSPNeXt's 20-odd BatchNorms the input's part of the signal then fades (RTMPose-t's logits
    for two different crops agree to 1e-5 relative). Calibrated, the logits depend on the crop (0.6 of their peak
    between the two boxes); undamped, channels of small spread are amplified so far that a 1e-7 rounding of the
    input moves the logits by 3e-5 of their peak (another conv kernel's rounding: 2e-5) -- no tolerance could tell
    a wrong model from rounding. Damped by 0.1: 3e-6."""
    bns = {n: m for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None
    model.backbone.train()
    with torch.no_grad():
        model.backbone(torch.cat([inputs, inputs.flip(-1)]))
    model.eval()
    for m in bns.values():
        m.running_var += damping * m.running_var.mean()
    return {f"backbone.{n}.{s}": getattr(m, s).clone() for n, m in bns.items() for s in ("running_mean", "running_var")}


def run_parity(name, seed=0):
    cfg = config(name)
    model = init_model(cfg, checkpoint=None, device="cpu")
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    weights = deterministic_weights(keys, seed)
    model.load_state_dict(weights, strict=True)
    model.eval()
    img = cv2.imread(os.path.join(REALDATA, REAL_IMAGE))
    boxes = np.array(REAL_BOXES_XYWH, np.float32)
    boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    inputs = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: inputs.append(kw.get("inputs", args[0] if args else None)), with_kwargs=True)
    with torch.no_grad():
        inference_topdown(model, img, bboxes=boxes, bbox_format="xyxy")
    hook.remove()
    stats = calibrate_batchnorm(model, inputs[0])
    heads, decoded = [], []
    inputs.clear()
    model.register_forward_pre_hook(lambda m, args, kw: inputs.append(kw.get("inputs", args[0] if args else None)),
                                    with_kwargs=True)
    forward, decode = model.head.forward, model.head.decode  # predict() calls them directly: hooks would not fire
    model.head.forward = lambda feats: heads.append([t.detach().clone() for t in forward(feats)]) or heads[-1]
    model.head.decode = lambda out: decoded.append([t.detach().clone() for t in out]) or decode(out)
    with torch.no_grad():
        res = inference_topdown(model, img, bboxes=boxes, bbox_format="xyxy")
    mean = np.array(cfg.model.data_preprocessor.mean, np.float32)[:, None, None]
    std = np.array(cfg.model.data_preprocessor.std, np.float32)[:, None, None]
    crops = np.ascontiguousarray(np.rint(inputs[0].numpy() * std + mean)[:, ::-1].transpose(0, 2, 3, 1), np.uint8)
    (raw_x, raw_y), (flip_x, flip_y), (fx, fy) = [[t.numpy() for t in pair] for pair in (*heads, decoded[0])]
    fused = np.concatenate([fx, fy], -1)
    codec = {k: v for k, v in cfg.codec.items() if k not in ("type", "use_dark")}
    dark = SimCCLabel(**codec, use_dark=True)
    dark_kp = np.stack([dark.decode(fx[i:i + 1].copy(), fy[i:i + 1].copy())[0][0] for i in range(len(fx))])
    vis = SimCCLabel(**codec, decode_visibility=True)
    visibility = np.stack([vis.decode(fx[i:i + 1].copy(), fy[i:i + 1].copy())[1][1][0] for i in range(len(fx))])
    out = dict(keys=np.array([k for k, _ in keys]), shapes=np.array(json.dumps([s for _, s in keys])),
               checksums=np.array([float(v.double().sum()) for v in weights.values()], np.float64),
               seed=np.array(seed), bn_keys=np.array(list(stats)),
               bn_stats=np.concatenate([v.numpy().ravel() for v in stats.values()]).astype(np.float32),
               image_md5=np.array(hashlib.md5(img.tobytes()).hexdigest()),
               image_path=np.array(os.path.relpath(os.path.join(REALDATA, REAL_IMAGE), ROOT)), bboxes_xyxy=boxes,
               crops_md5=np.array(hashlib.md5(crops.tobytes()).hexdigest()),
               logits_raw=np.concatenate([raw_x, raw_y], -1), logits_flip=np.concatenate([flip_x, flip_y], -1),
               logits_final=fused,
               keypoints=np.stack([r.pred_instances.keypoints[0] for r in res]).astype(np.float32),
               scores=np.stack([r.pred_instances.keypoint_scores[0] for r in res]).astype(np.float32),
               argmax_margin=simcc_margin(fx, fy).astype(np.float32),
               dark_keypoints=dark_kp.astype(np.float32), visibility=visibility.astype(np.float32),
               input_center=np.stack([r.metainfo["input_center"] for r in res]).astype(np.float32),
               input_scale=np.stack([r.metainfo["input_scale"] for r in res]).astype(np.float32),
               flip_indices=np.asarray(res[0].metainfo["flip_indices"]), versions=np.array(json.dumps(VERSIONS)))
    file = os.path.join(OUT, f"{name}__coco196141.npz")
    np.savez_compressed(file, **out)
    return dict(kb=round(os.path.getsize(file) / 1024), boxes=len(boxes),
                margin_ok=int((out["argmax_margin"] >= 1e-3).sum()))


def encode_goldens():
    out = dict(keypoints=ENCODE_KEYPOINTS, visible=ENCODE_VISIBLE, settings=np.array(json.dumps(ENCODE_CODECS)))
    for tag, args in ENCODE_CODECS.items():
        enc = SimCCLabel(**args).encode(ENCODE_KEYPOINTS.copy(), ENCODE_VISIBLE.copy())
        out[f"{tag}_labels"] = np.concatenate([enc["keypoint_x_labels"], enc["keypoint_y_labels"]], -1)
        out[f"{tag}_weights"] = np.asarray(enc["keypoint_weights"], np.float32)
    np.savez_compressed(os.path.join(OUT, "codec.npz"), **out)


def gau_golden(seed=0):
    """MMPose's ``RTMCCBlock`` with both positional options on (relative bias and rotary embedding; RTMPose's configs
    switch them off) on a seeded input: ``gau.npz`` holds its key list, the input and the output."""
    from mmpose.models.utils.rtmcc_block import RTMCCBlock

    block = RTMCCBlock(17, 32, 32, s=16, expansion_factor=2, attn_type="self-attn", act_fn="SiLU",
                       use_rel_bias=True, pos_enc=True).eval()
    keys = [(k, tuple(v.shape)) for k, v in block.state_dict().items()]
    block.load_state_dict(deterministic_weights(keys, seed), strict=True)
    x = np.random.Generator(np.random.PCG64(seed)).standard_normal((2, 17, 32)).astype(np.float32)
    with torch.no_grad():
        out = block(torch.from_numpy(x)).numpy()
    np.savez_compressed(os.path.join(OUT, "gau.npz"), keys=np.array([k for k, _ in keys]),
                        shapes=np.array(json.dumps([sh for _, sh in keys])), seed=np.array(seed), inputs=x,
                        outputs=out)


# KLDiscretLoss settings: RTMPose's configs' (beta 10, softmax labels), the class defaults, unweighted, and another
# label temperature
LOSS_SETTINGS = {"rtmpose": dict(beta=10.0, label_softmax=True, use_target_weight=True),
                 "defaults": dict(),
                 "unweighted": dict(beta=10.0, label_softmax=True, use_target_weight=False),
                 "label_beta": dict(beta=2.0, label_softmax=True, label_beta=3.0, use_target_weight=True)}
LOSS_CODEC = dict(input_size=(64, 96), sigma=(2.0, 2.5), simcc_split_ratio=2.0, normalize=False)


def loss_golden(seed=0):
    """MMPose's ``KLDiscretLoss`` on (B, K) = (3, 5) seeded logits (x and y side by side) against ``LOSS_CODEC``'s
    labels of seeded keypoints -- one invisible, one wholly off the crop -- with fractional target weights."""
    from mmpose.models.losses import KLDiscretLoss

    rng = np.random.Generator(np.random.PCG64(seed))
    codec = SimCCLabel(**LOSS_CODEC)
    keypoints = (rng.uniform(0, 1, (3, 5, 2)) * np.array([64, 96])).astype(np.float32)
    keypoints[1, 2] = (-40.0, 30.0)  # off the crop: weight 0
    visible = np.ones((3, 5), np.float32)
    visible[2, 4] = 0.0
    enc = codec.encode(keypoints.copy(), visible.copy())
    labels_x, labels_y = enc["keypoint_x_labels"].astype(np.float32), enc["keypoint_y_labels"].astype(np.float32)
    weights = (enc["keypoint_weights"] * rng.uniform(0.5, 1.5, (3, 5))).astype(np.float32)
    logits_x = (2 * rng.standard_normal(labels_x.shape)).astype(np.float32)
    logits_y = (2 * rng.standard_normal(labels_y.shape)).astype(np.float32)
    out = dict(logits=np.concatenate([logits_x, logits_y], -1), labels=np.concatenate([labels_x, labels_y], -1),
               weights=weights, x_bins=np.array(labels_x.shape[-1]), settings=np.array(json.dumps(LOSS_SETTINGS)))
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    for tag, args in LOSS_SETTINGS.items():
        loss = KLDiscretLoss(**args)((t(logits_x), t(logits_y)), (t(labels_x), t(labels_y)), t(weights))
        out[f"{tag}_loss"] = np.array(float(loss), np.float64)
    np.savez_compressed(os.path.join(OUT, "loss.npz"), **out)
    return {tag: float(out[f"{tag}_loss"]) for tag in LOSS_SETTINGS}


def write_counts():
    counts = {n: param_count(n) for n in CONFIGS}
    with open(os.path.join(OUT, "param_counts.json"), "w") as f:
        json.dump(dict(note="MMPose 1.3.2 builds of the rtmpose configs (tools/make_rtmpose_goldens.py)",
                       counts=counts), f, indent=1)
    print(json.dumps(counts, indent=1))


PARTS = {"counts": write_counts, "codec": encode_goldens, "gau": gau_golden,
         "loss": lambda: print("loss", json.dumps(loss_golden())),
         "parity": lambda: print(PARITY, json.dumps(run_parity(PARITY)))}


def main(parts):
    unknown = set(parts) - set(PARTS)
    if unknown:
        sys.exit(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    torch.set_num_threads(GOLDEN_THREADS)
    init_default_scope("mmpose")
    os.makedirs(OUT, exist_ok=True)
    if "parity" in parts:  # the bit-level test runs only where the platform matches the parity golden's
        with open(os.path.join(OUT, "platform.json"), "w") as f:
            json.dump(signature(), f, indent=1)
    for part in parts:
        PARTS[part]()


if __name__ == "__main__":
    main(sys.argv[1:] or list(PARTS))
