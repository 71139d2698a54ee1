"""The table of named models: one plain dict from name to builder function.

``build_model("vitpose-b")`` gives MMPose's ``td-hm_ViTPose-base_8xb64-210e_coco-256x192``
(classic decoder, UDP heatmaps with sigma 2 at 256x192, 17 COCO keypoints, flip test);
``"vitpose-b-simple"`` its simple-decoder variant; ``"sapiens-1b"`` Sapiens' COCO pose
model at 1024x768; ``"vit-tiny"`` the small CPU demo model; ``"hrnet-w32"`` / ``"hrnet-w48"``
(MSRA heatmaps, ``-udp`` and ``-dark`` variants) and ``"hrformer-s"`` / ``"hrformer-b"`` MMPose's
``td-hm_hrnet-*`` / ``td-hm_hrformer-*`` COCO 256x192 configs; ``"hrformer-s-fusion"``, ``"hrformer-b-fusion"``
and ``"vit-tiny-fusion"`` the same with sagepose's fusion head (no MMPose counterpart); ``"sapiens2-0.4b"``
... ``"sapiens2-5b"`` Sapiens2's 308-keypoint Goliath pose models at 1024x768 (its ``keypoints308`` configs);
``"rtmpose-t"`` ... ``"rtmpose-l"`` MMPose's ``rtmpose-{t,s,m,l}_8xb256-420e_coco-256x192`` (CSPNeXt + RTMCC head,
SimCC), ``"rtmpose-m-384x288"`` / ``"rtmpose-l-384x288"`` its ``*_aic-coco-384x288`` configs' models.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from functools import partial

import torch

from sagepose.codecs import build_codec
from sagepose.keypoints import COCO17, GOLIATH308, KeypointSchema, generic_schema, load_schema
from sagepose.models.cspnext import CSPNEXT_SIZES, CSPNeXt, cspnext
from sagepose.models.estimator import TopDownEstimator
from sagepose.models.fusion_head import FusionHead
from sagepose.models.heads import HeatmapHead, SkipHeatmapHead
from sagepose.models.hrformer import HRFORMER_SIZES, HRFormer
from sagepose.models.hrnet import HRNET_SIZES, HRNet
from sagepose.models.init_checkpoint import load_init_checkpoint
from sagepose.models.lora import add_adapters
from sagepose.models.rtmcc_head import RTMCCHead
from sagepose.models.sapiens2 import SAPIENS2_SIZES, Sapiens2, sapiens2
from sagepose.models.vit import VIT_SIZES, VisionTransformer, vit

# Published fine-tuning drop-path rates (MMPose's ViTPose configs); Sapiens uses none.
VITPOSE_DROP_PATH = {"vitpose-s": 0.1, "vitpose-b": 0.3, "vitpose-l": 0.5, "vitpose-h": 0.55}
HRFORMER_DROP_PATH = {"hrformer-s": 0.1, "hrformer-b": 0.2}
# Sapiens2's pose heads (its keypoints308 configs): two deconvs, three 1x1 convs; 1b's are wider
SAPIENS2_HEADS = {"sapiens2-0.4b": dict(deconv_channels=(1024, 768), conv_channels=(512, 512, 256)),
                  "sapiens2-0.8b": dict(deconv_channels=(1024, 768), conv_channels=(512, 512, 256)),
                  "sapiens2-1b": dict(deconv_channels=(1536, 1024), conv_channels=(768, 512, 256)),
                  "sapiens2-5b": dict(deconv_channels=(1024, 768), conv_channels=(512, 512, 256))}


_HEAD_ARGS = ("deconv_channels", "conv_channels", "conv_kernel_size", "final_kernel_size", "norm", "act",
              "feature_upsample", "trunk_channels",  # trunk_channels: fusion heads only
              "channels", "refine")  # the skip head's (vit-tiny)


def _topdown_vit(size: str, head: str, input_size: tuple[int, int], sigma: float, *,
                 schema: KeypointSchema = COCO17, drop_path_rate: float = 0.0,
                 grad_checkpointing: bool = False, flip_test: bool = True, codec: dict | None = None,
                 arch: dict | None = None, heatmap_output: str = "raw", fusion: bool = False,
                 blur_kernel_size: int = 11, test_scales=(1.0,)) -> TopDownEstimator:
    """A ViT (or Sapiens2, for its sizes) + heatmap head (``fusion``: a :class:`FusionHead` on the same decoder)
    + UDP codec (heatmaps input / 4). ``input_size`` is (w, h).

    ``arch`` overrides backbone numbers (:class:`VisionTransformer` / :class:`Sapiens2` arguments, e.g.
    ``depth``) or head numbers (``deconv_channels``, ...); ``codec`` overrides codec arguments (``sigma``,
    ``type``, ...).
    """
    w, h = input_size
    arch = dict(arch or {})
    head_args = {k: arch.pop(k) for k in _HEAD_ARGS if k in arch}
    family, make = (Sapiens2, sapiens2) if size in SAPIENS2_SIZES else (VisionTransformer, vit)
    unknown = set(arch) - set(inspect.signature(family).parameters)
    if unknown:
        known = [*inspect.signature(family).parameters, *_HEAD_ARGS]
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in sorted(unknown)}
        raise ValueError(f"model.arch: unknown keys {hints} (key: did-you-mean); known: {known}")
    if fusion and family is VisionTransformer:  # the fusion head reads one map: the hybrid's skips off unless asked for
        arch.setdefault("skip_strides", ())
    backbone = make(size, **{"img_size": (h, w), "drop_path_rate": drop_path_rate,
                            "grad_checkpointing": grad_checkpointing, **arch})
    dim, k = backbone.embed_dim, schema.num_keypoints
    stride = getattr(backbone, "stride", backbone.patch_size)  # Sapiens2's windowed tokenizer: 64
    deconv_stages = (stride // 4).bit_length() - 1  # stride-2 deconvs back up to a stride-4 heatmap (16: 2, 8: 1)
    if head == "classic":
        head_defaults = dict(deconv_channels=(256,) * deconv_stages)
    elif head == "simple":
        head_defaults = dict(deconv_channels=(), final_kernel_size=3, feature_upsample=2 ** deconv_stages)
    elif head == "sapiens":
        head_defaults = dict(deconv_channels=(768, 768), conv_channels=(768, 768), conv_kernel_size=1,
                             norm="in", act="silu")
    elif head == "sapiens2":
        head_defaults = dict(SAPIENS2_HEADS[size], conv_kernel_size=1, norm="in", act="silu")
        given = len(head_args.get("deconv_channels", head_defaults["deconv_channels"]))
        if given != deconv_stages:
            raise ValueError(f"model.arch: a stride-{stride} backbone needs {deconv_stages} deconvs back to stride-4 "
                             f"heatmaps, the head has {given}; give model.arch.deconv_channels {deconv_stages} widths "
                             "(the 4K tokenizer on sapiens2-1b: [1536, 1024, 768, 512])")
    elif head == "tiny":
        head_defaults = dict(deconv_channels=(64,) * deconv_stages)

    else:
        raise ValueError(f"unknown head {head!r}")
    if getattr(backbone, "skip_strides", ()):  # the hybrid stem hands its stride-4/8 maps to a U-Net-style head
        wrong = set(head_args) - {"channels", "refine"}
        if wrong:
            raise ValueError(f"model.arch: {sorted(wrong)} do not apply to the skip head (it takes 'channels', "
                             "'refine'); skip_strides=() gives the deconv head")
        head_module = SkipHeatmapHead(backbone.out_channels, k, **head_args)
    else:
        head_module = (FusionHead if fusion else HeatmapHead)(dim, k, **{**head_defaults, **head_args})
    codec_module = build_codec({"type": "UDPHeatmap", "input_size": (w, h), "heatmap_size": (w // 4, h // 4),
                                "sigma": sigma, "blur_kernel_size": blur_kernel_size, **(codec or {})})
    return TopDownEstimator(backbone, head_module, codec_module, schema, (w, h), flip_test=flip_test,
                            heatmap_output=heatmap_output, test_scales=test_scales)


def _topdown_hr(size: str, codec_base: dict, input_size: tuple[int, int] = (192, 256), sigma: float = 2.0, *,
                schema: KeypointSchema = COCO17, drop_path_rate: float = 0.0, grad_checkpointing: bool = False,
                flip_test: bool = True, codec: dict | None = None, arch: dict | None = None,
                heatmap_output: str = "raw", fusion: bool = False, test_scales=(1.0,)) -> TopDownEstimator:
    """HRNet / HRFormer + a 1x1-conv heatmap head (``fusion``: a :class:`FusionHead`) on the stride-4 branch
    + ``codec_base`` (heatmaps input / 4).

    ``arch`` overrides backbone numbers (:class:`HRNet` / :class:`HRFormer` arguments, e.g. ``widths``) or
    head numbers; ``codec`` overrides codec arguments. HRNet has no stochastic depth (``drop_path_rate`` 0).
    """
    w, h = input_size
    family, sizes = (HRFormer, HRFORMER_SIZES) if size in HRFORMER_SIZES else (HRNet, HRNET_SIZES)
    arch = dict(arch or {})
    head_args = {k: arch.pop(k) for k in _HEAD_ARGS if k in arch}
    known = [k for k in inspect.signature(family).parameters if k not in ("drop_path_rate", "grad_checkpointing")]
    unknown = set(arch) - set(known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, [*known, *_HEAD_ARGS], n=1) for k in sorted(unknown)}
        raise ValueError(f"model.arch: unknown keys {hints} (key: did-you-mean); known: {[*known, *_HEAD_ARGS]}")
    backbone_args = {**sizes[size], "grad_checkpointing": grad_checkpointing, **arch}
    if family is HRFormer:
        backbone_args["drop_path_rate"] = drop_path_rate
    elif drop_path_rate:
        raise ValueError(f"{size}: HRNet has no stochastic depth; drop_path_rate must be 0, got {drop_path_rate}")
    backbone = family(**backbone_args)
    head_cls = FusionHead if fusion else HeatmapHead
    head = head_cls(backbone.out_channels, schema.num_keypoints, **{"deconv_channels": (), **head_args})
    codec_module = build_codec({**codec_base, "input_size": (w, h), "heatmap_size": (w // 4, h // 4), "sigma": sigma,
                                **(codec or {})})
    return TopDownEstimator(backbone, head, codec_module, schema, (w, h), flip_test=flip_test,
                            heatmap_output=heatmap_output, test_scales=test_scales)


# RTMPose's configs: SimCC sigma (x, y) per input size (w, h); the head's arguments that model.arch may override
RTMPOSE_SIGMA = {(192, 256): (4.9, 5.66), (288, 384): (6.0, 6.93)}
_RTMCC_ARGS = ("final_kernel_size", "hidden", "s", "expansion", "dropout", "act", "rel_bias", "pos_enc")


def _rtmpose(size: str, input_size: tuple[int, int] = (192, 256), sigma=None, *, schema: KeypointSchema = COCO17,
             drop_path_rate: float = 0.0, grad_checkpointing: bool = False, flip_test: bool = True,
             codec: dict | None = None, arch: dict | None = None, heatmap_output: str = "raw",
             test_scales=(1.0,)) -> TopDownEstimator:
    """CSPNeXt (``size``: :data:`CSPNEXT_SIZES`) + RTMCC head on its stride-32 map + SimCC codec (split ratio 2,
    MMPose's unnormalised Gaussian labels). ``input_size`` (w, h), multiples of 32; ``sigma`` (x, y) bins, by default
    RTMPose's for that size. ``arch`` overrides backbone numbers (:class:`CSPNeXt` arguments: ``deepen``, ``widen``)
    or head numbers (``hidden``, ``s``, ...); ``codec`` codec arguments; ``drop_path_rate`` is the attention unit's.
    Multi-scale test, softmax heatmaps and activation checkpointing are heatmap / transformer notions: refused."""
    w, h = input_size
    if w % 32 or h % 32:
        raise ValueError(f"{size}: input_size (w, h) = {input_size} must be multiples of 32 (stride-32 features)")
    if heatmap_output != "raw" or grad_checkpointing or tuple(test_scales) != (1.0,):
        raise ValueError(f"{size}: a SimCC model takes heatmap_output='raw', no grad_checkpointing and one test "
                         f"scale; got {heatmap_output!r}, {grad_checkpointing}, {tuple(test_scales)}")
    arch = dict(arch or {})
    head_args = {k: arch.pop(k) for k in _RTMCC_ARGS if k in arch}
    known = list(inspect.signature(CSPNeXt).parameters)
    if set(arch) - set(known):
        hints = {k: difflib.get_close_matches(k, [*known, *_RTMCC_ARGS], n=1) for k in sorted(set(arch) - set(known))}
        raise ValueError(f"model.arch: unknown keys {hints} (key: did-you-mean); known: {[*known, *_RTMCC_ARGS]}")
    backbone = cspnext(size.replace("rtmpose", "cspnext"), **arch)
    default_sigma = RTMPOSE_SIGMA.get((w, h), RTMPOSE_SIGMA[(192, 256)])
    codec_module = build_codec({"type": "SimCCLabel", "input_size": (w, h), "sigma": sigma or default_sigma,
                                "simcc_split_ratio": 2.0, "normalize": False, **(codec or {})})
    head = RTMCCHead(backbone.out_channels, schema.num_keypoints, (w // 32, h // 32), codec_module.simcc_size,
                     drop_path_rate=drop_path_rate, **head_args)
    return TopDownEstimator(backbone, head, codec_module, schema, (w, h), flip_test=flip_test)


MODELS = {}
for _size in ("vitpose-s", "vitpose-b", "vitpose-l", "vitpose-h"):
    _defaults = dict(input_size=(192, 256), sigma=2.0, drop_path_rate=VITPOSE_DROP_PATH[_size])
    MODELS[_size] = partial(_topdown_vit, _size, "classic", **_defaults)
    MODELS[f"{_size}-simple"] = partial(_topdown_vit, _size, "simple", **_defaults)
for _size in ("sapiens-0.3b", "sapiens-0.6b", "sapiens-1b", "sapiens-2b"):
    MODELS[_size] = partial(_topdown_vit, _size, "sapiens", input_size=(768, 1024), sigma=6.0)
for _size in SAPIENS2_HEADS:  # 0.1b is a pretraining backbone only: no pose row
    MODELS[_size] = partial(_topdown_vit, _size, "sapiens2", input_size=(768, 1024), sigma=6.0, schema=GOLIATH308)
# sharp targets on its 32x24 maps, sigma 0.5 (MMPose's UDP encoder centres the patch 1 px off when 3 sigma
# has a fractional part in (0, 0.5): 0.75 does), and a 3x3 decode blur; trained with the spatial
# cross-entropy (the demo recipe, configs/demo_tiny_vit.yaml)
MODELS["vit-tiny"] = partial(_topdown_vit, "vit-tiny", "tiny", input_size=(96, 128), sigma=0.5, blur_kernel_size=3)
assert all(name.removesuffix("-simple") in {**VIT_SIZES, **SAPIENS2_SIZES} for name in MODELS)
for _size in HRNET_SIZES:  # MMPose's td-hm_hrnet-w{32,48}[_udp|_dark]-*_coco-256x192 configs
    MODELS[_size] = partial(_topdown_hr, _size, dict(type="MSRAHeatmap"))
    MODELS[f"{_size}-udp"] = partial(_topdown_hr, _size, dict(type="UDPHeatmap"))
    MODELS[f"{_size}-dark"] = partial(_topdown_hr, _size, dict(type="MSRAHeatmap", unbiased=True))
for _size in HRFORMER_SIZES:
    MODELS[_size] = partial(_topdown_hr, _size, dict(type="MSRAHeatmap"), drop_path_rate=HRFORMER_DROP_PATH[_size])
for _size in ("t", "s", "m", "l"):  # MMPose's rtmpose-{t,s,m,l}_8xb256-420e_coco-256x192 (+ aic-coco-384x288)
    MODELS[f"rtmpose-{_size}"] = partial(_rtmpose, f"rtmpose-{_size}")
for _size in ("m", "l"):
    MODELS[f"rtmpose-{_size}-384x288"] = partial(_rtmpose, f"rtmpose-{_size}", input_size=(288, 384))
assert all(f"cspnext-{n[8]}" in CSPNEXT_SIZES for n in MODELS if n.startswith("rtmpose-"))
# Ours, no MMPose build: the same models with the fusion head (heatmap + offset + variance, sagepose.models.fusion_head)
for _name in ("hrformer-s", "hrformer-b", "vit-tiny"):
    MODELS[f"{_name}-fusion"] = partial(MODELS[_name], fusion=True)


def build_model(name: str, num_keypoints: int | None = None, schema: KeypointSchema | str | None = None,
                **overrides) -> TopDownEstimator:
    """A zoo model by name; ``schema`` (or a bare ``num_keypoints``) replaces COCO-17 -- a schema, a built-in
    name, or a COCO json / YAML schema file (:func:`sagepose.keypoints.load_schema`); ``overrides``
    go to the builder (``input_size=(w, h)``, ``sigma``, ``drop_path_rate``, ``grad_checkpointing``,
    ``flip_test``, ``test_scales``, ``codec={...}``, ``arch={...}``)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if schema is not None:
        schema = load_schema(schema)
        if num_keypoints is not None and num_keypoints != schema.num_keypoints:
            raise ValueError(f"num_keypoints={num_keypoints} but schema {schema.name} has "
                             f"{schema.num_keypoints}")
        overrides["schema"] = schema
    elif num_keypoints is not None and num_keypoints != COCO17.num_keypoints:
        overrides["schema"] = generic_schema(num_keypoints)
    return MODELS[name](**overrides)


def build_model_from_config(model_cfg, schema: KeypointSchema | None = None) -> TopDownEstimator:
    """A model from a config's ``model`` section: :class:`sagepose.config.ModelConfig` or a dict like
    ``{"name": "vit-tiny", "num_keypoints": 17, ...builder overrides}``. ``None`` values keep the zoo's
    defaults. ``model.schema`` is resolved with :func:`sagepose.keypoints.load_schema` (a built-in name or a
    COCO json / YAML schema file); ``schema`` (a checkpoint's stored schema) replaces it.

    ``init_checkpoint`` (if set: a file, or a name of :mod:`sagepose.hub`) must cover the whole backbone; only head
    keys may be missing, or shaped for another keypoint set (a pose model fine-tuned to a new skeleton): then each
    output channel whose joint the checkpoint also predicts starts from its channel (``head_map``: ``{joint:
    checkpoint joint}`` beyond the automatic correspondences, :mod:`sagepose.models.head_transplant`), the others
    keep their initialisation, and one line says how many.

    ``lora`` (``rank`` set): low-rank adapters on the backbone (:func:`sagepose.models.lora.add_adapters`), put on
    after ``init_checkpoint`` loads; the base is then frozen (:func:`sagepose.models.lora.frozen_base`)."""
    cfg = dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)
    cfg = {k: v for k, v in cfg.items() if v is not None and v != {}}
    if "name" not in cfg:
        raise ValueError(f"model config needs a 'name' (one of {sorted(MODELS)}); got keys {sorted(cfg)}")
    if schema is not None:
        cfg["schema"] = schema
    init = cfg.pop("init_checkpoint", None)
    head_map = cfg.pop("head_map", None)
    channels_last = cfg.pop("channels_last", False)
    lora = cfg.pop("lora", None) or {}
    cfg.pop("heads", None)  # the layout of a multi-dataset run's heads: the training module builds them
    if isinstance(cfg.get("input_size"), list):
        cfg["input_size"] = tuple(cfg["input_size"])
    model = build_model(cfg.pop("name"), **cfg)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    adapted = load_init_checkpoint(model, init, head_map, lora) if init else False
    if lora.get("rank") and not adapted:
        add_adapters(model, **lora)
    return model


def block_type(model_cfg) -> type | None:
    """The class of the repeated transformer blocks of a model config's backbone (its ``block_type``), None for a
    backbone without one (HRNet): FSDP's unit (:func:`sagepose.train.trainer.build_strategy`). Read off the model
    built on the meta device: no memory, no weights read."""
    cfg = dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)
    with torch.device("meta"):
        model = build_model_from_config({**cfg, "init_checkpoint": None})
    return getattr(model.backbone, "block_type", None)
