"""Top-down estimator: image + person boxes -> keypoints, as MMPose's ``inference_topdown``.

One affine warp per box (:mod:`sagepose.geometry`), then everything batched on the model's
device: normalisation, backbone + head, flip-test fusion, codec decode, and the map back to
image pixels.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sagepose import geometry
from sagepose.codecs import flip_heatmaps
from sagepose.errors import SagePoseError
from sagepose.image import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, normalize, read_image
from sagepose.keypoints import KeypointSchema
from sagepose.models import mmpose_exact
from sagepose.models.cpu_kernels import pack_linear_weights, packing_fits_in_memory, unpack_linear_weights
from sagepose.models.inference import InferenceMode, fold_for_inference, keep_freed_memory, native_bf16, use_cpu_kernels


@dataclass
class Prediction:
    """keypoints (N, K, 2) float32 image px; scores (N, K); heatmaps (N, K, h, w) when asked for (a SimCC model's
    x and y logits, (N, K, Wx + Wy))."""

    keypoints: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray | None = None


def check_test_scales(scales) -> tuple[float, ...]:
    """The multi-scale test's box factors as a tuple of floats, the first one the base frame (1.0 where given):
    at least one, each in (0, 4]."""
    scales = tuple(float(v) for v in scales)
    if not scales or not all(0 < v <= 4 for v in scales):
        raise ValueError(f"test_scales {scales}: box scale factors, at least one, each in (0, 4]")
    return (1.0, *(v for v in scales if v != 1.0)) if 1.0 in scales else scales


class DeviceError(SagePoseError, ValueError):
    """A device this torch (or onnxruntime) build cannot run on; the message says which and why."""


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or a one-line :class:`DeviceError` when this torch cannot run on it
    (a CUDA device on a CPU-only build or without a visible GPU, an index past the GPUs, an unknown name)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {str(device)!r}: not a device torch knows ('cpu', 'cuda', 'cuda:N', "
                          "'mps')") from None
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise DeviceError(f"device {str(device)!r}: this torch {torch.__version__} is a CPU-only build; "
                              "install a CUDA build of torch, or use --device cpu")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r}: no CUDA GPU is visible to torch {torch.__version__} "
                              "(driver, CUDA_VISIBLE_DEVICES); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: MPS (Apple GPUs) is not available to this torch; use --device cpu")
    return dev


class TopDownPredictor:
    """Top-down prediction around a network, shared by the torch model (:class:`TopDownEstimator`) and an exported
    one that onnxruntime runs (:class:`sagepose.onnx_model.OnnxEstimator`): one affine crop per box, ImageNet
    normalisation, the flip test, the codec's decode and the map back to image pixels.

    A subclass gives ``schema``, ``codec``, ``input_size`` (w, h), ``flip_test``, ``shift_heatmap``, ``mean`` /
    ``std`` ((1, 3, 1, 1) float tensors), ``device``, ``exact`` and :meth:`network_heatmaps`."""

    exact = False
    test_scales: tuple[float, ...] = (1.0,)  # box scale factors of the multi-scale test (see predict)
    detector = None  # a callable image -> person boxes (sagepose.detect.Detector): predict's boxes when none given

    def network_heatmaps(self, inputs: torch.Tensor, dataset=None) -> torch.Tensor:
        """Normalised (B, 3, H, W) float32 -> the network's heatmaps (B, C, h, w) float32, activated. ``dataset``:
        which head of a model with one per dataset predicts (:class:`sagepose.models.heads.PerDatasetHeads`)."""
        raise NotImplementedError

    def flip_back(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """The mirrored crops' heatmaps back in the original's frame: flipped, left/right channels swapped (a codec
        with outputs of its own layout, SimCC's x and y logits, flips them itself: its ``flip_back``)."""
        flip = getattr(self.codec, "flip_back", flip_heatmaps)
        return flip(heatmaps, self.schema.flip_indices, self.shift_heatmap)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) BGR -> float (B, 3, H, W) RGB, ImageNet-normalised (on the images' device)."""
        return normalize(images, self.mean.flatten(), self.std.flatten())

    @torch.no_grad()
    def predict_heatmaps(self, x: torch.Tensor, dataset=None) -> torch.Tensor:
        """Normalised (B, 3, H, W) -> heatmaps (B, K, h, w), fused with the flipped input's when flip_test
        (a fusion head's whole output, (B, 4K, h, w), heatmaps first); ``dataset``: :meth:`network_heatmaps`'."""
        if not self.flip_test:
            return self.network_heatmaps(x, dataset)
        # Original and mirrored crops (in one batch, or as MMPose in two passes when exact); the mirrored
        # heatmaps are flipped back, left/right channels swapped, and averaged with the originals (MMPose's
        # heatmap flip mode).
        if self.exact:
            hm, hm_flip = self.network_heatmaps(x, dataset), self.network_heatmaps(x.flip(-1), dataset)
        else:
            both = self.network_heatmaps(torch.cat([x, x.flip(-1)]), dataset)
            hm, hm_flip = both[: len(x)], both[len(x):]
        return (hm + self.flip_back(hm_flip)) * 0.5

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) -> keypoints (B, K, 2) in input-crop px, scores (B, K)."""
        return self.codec.decode(heatmaps)

    def to_base_frame(self, heatmaps: torch.Tensor, factor: float) -> torch.Tensor:
        """Heatmaps of crops of boxes scaled by ``factor`` about their centres -> the unscaled boxes' heatmap frame
        (bilinear; zero where the scaled crop did not reach). The crops share their centre, which sits at the
        heatmap point ``k t`` -- ``t`` the crop centre in input px (``w / 2`` for MSRA's warp, ``(w - 1) / 2`` for
        UDP's), ``k`` the codec's input -> heatmap factor -- so base point ``p`` is scaled-crop point
        ``k t + (p - k t) / factor``."""
        if heatmaps.ndim != 4:
            raise ValueError("multi-scale test: SimCC logits (x and y vectors, not maps) take one scale")
        if heatmaps.shape[1] != self.schema.num_keypoints:
            raise ValueError(f"multi-scale test: {heatmaps.shape[1]} output maps for {self.schema.num_keypoints} "
                             "keypoints (a head with offset maps, the fusion head, takes one scale)")
        n, k, hh, hw = heatmaps.shape
        centre = ((hw - 1) / 2, (hh - 1) / 2) if self.codec.udp else (hw / 2, hh / 2)
        ys, xs = torch.meshgrid(torch.arange(hh, dtype=torch.float32), torch.arange(hw, dtype=torch.float32),
                                indexing="ij")
        qx = centre[0] + (xs - centre[0]) / factor
        qy = centre[1] + (ys - centre[1]) / factor
        grid = torch.stack([2 * qx / (hw - 1) - 1, 2 * qy / (hh - 1) - 1], -1).to(heatmaps.device)
        return F.grid_sample(heatmaps.float(), grid.expand(n, hh, hw, 2), mode="bilinear", padding_mode="zeros",
                             align_corners=True)

    def scale_heatmaps(self, x: torch.Tensor, factor: float, dataset=None) -> torch.Tensor:
        """One scale of the multi-scale test: normalised crops of the boxes scaled by ``factor`` -> their (flip
        tested) heatmaps in the unscaled boxes' heatmap frame, to be averaged over ``test_scales``."""
        heatmaps = self.predict_heatmaps(x, dataset)
        return heatmaps if factor == 1.0 else self.to_base_frame(heatmaps, factor)

    def crop(self, image: np.ndarray, bboxes_xyxy: np.ndarray,
             factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BGR (H, W, 3) image, (N, 4) boxes -> crops (N, h, w, 3) uint8, centers (N, 2), scales (N, 2);
        ``factor``: each box scaled about its centre first (the multi-scale test)."""
        w, h = self.input_size
        center, scale = geometry.box_to_center_scale(bboxes_xyxy)
        scale = geometry.fix_aspect_ratio(scale, w / h) * factor
        udp = self.codec.udp
        matrices = [geometry.crop_matrix(c, s, 0.0, self.input_size, udp=udp) for c, s in zip(center, scale)]
        crops = [geometry.warp_image(image, m, self.input_size) for m in matrices]
        return np.stack(crops), center, scale

    @torch.no_grad()
    def predict(self, image: np.ndarray | str | os.PathLike, bboxes: np.ndarray | None = None,
                bbox_format: str = "xyxy", return_heatmaps: bool = False, color: str = "bgr",
                dataset: int | None = None) -> Prediction:
        """Keypoints of the people in ``bboxes`` (N, 4) of a uint8 (H, W, 3) image array or an image path.

        ``color``: the array's channel order -- ``"bgr"`` (the default: OpenCV's ``cv2.imread``, as sagepose reads
        files) or ``"rgb"`` (PIL, imageio, matplotlib); a path is read in the right order whatever it says.
        ``bboxes=None`` takes the person boxes of the attached ``detector`` (``sagepose.load(..., detector=F)``)
        or, without one, the whole image as one box. Returns keypoints in image pixels. A box that is
        not finite, empty or inverted (x2 <= x1, e.g. xywh given as xyxy) or wholly outside the image is a
        ValueError naming its index (:func:`sagepose.geometry.check_boxes`). ``dataset``: which head of a model
        with one per dataset predicts (:class:`sagepose.models.heads.PerDatasetHeads`; None: all, the union's).
        """
        if color not in ("bgr", "rgb"):
            raise ValueError(f"predict: color={color!r}: the image array's channel order, 'bgr' or 'rgb'")
        if isinstance(image, (str, os.PathLike)):
            image, color = read_image(image), "bgr"
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        if color == "rgb":
            image = np.ascontiguousarray(image[..., ::-1])  # everything below (the detector too) takes BGR
        if bboxes is None and self.detector is not None:
            bboxes, bbox_format = self.detector(image).boxes, "xyxy"
        if bboxes is None:  # the whole image, the same numbers in either format
            bboxes = np.array([[0, 0, image.shape[1], image.shape[0]]], np.float32)
        bboxes, _ = geometry.check_boxes(bboxes, image.shape[1::-1], bbox_format, where="predict: bboxes")
        return self.predict_many([image], [bboxes], return_heatmaps, dataset)[0]

    @torch.no_grad()
    def predict_many(self, images: list[np.ndarray], boxes: list[np.ndarray],
                     return_heatmaps: bool = False, dataset: int | None = None) -> list[Prediction]:
        """:meth:`predict` for the people of several images (BGR uint8, boxes (N_i, 4) xyxy, already checked) in
        one forward pass per scale: the video path batches the people of several frames this way."""
        K = self.schema.num_keypoints
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            empty = Prediction(np.zeros((0, K, 2), np.float32), np.zeros((0, K), np.float32))
            return [empty for _ in images]
        heatmaps = None
        for factor in self.test_scales:
            parts = [self.crop(img, b, factor) for img, b in zip(images, boxes) if len(b)]
            crops, c, s = (np.concatenate(p) for p in zip(*parts))
            hm = self.scale_heatmaps(self.normalize(torch.from_numpy(crops).to(self.device)), factor, dataset)
            heatmaps = hm if heatmaps is None else heatmaps + hm
            if factor == self.test_scales[0]:
                center, scale = c, s / factor  # the base box's frame: what the keypoints are decoded in
        heatmaps = heatmaps / len(self.test_scales) if len(self.test_scales) > 1 else heatmaps
        keypoints, scores = self.decode(heatmaps)
        keypoints = torch.as_tensor(keypoints).float().cpu().numpy()
        if self.exact:  # MMPose's numpy map back promotes to float64 (its input size is a tuple of ints)
            keypoints, center, scale = (np.asarray(a, np.float64) for a in (keypoints, center, scale))
        keypoints = geometry.crop_to_image(keypoints, self.input_size, center, scale).astype(np.float32)
        scores = torch.as_tensor(scores).float().cpu().numpy()
        maps = heatmaps[:, :K].float().cpu().numpy() if return_heatmaps else None
        out, start = [], 0
        for n in counts:
            sl = slice(start, start + n)
            out.append(Prediction(keypoints[sl], scores[sl], maps[sl] if maps is not None else None))
            start += n
        return out


class Backbone(Protocol):
    """What a :class:`TopDownEstimator` asks of its backbone (ViT, HRNet, HRFormer alike), never which family it is:

    * ``forward``: a (B, 3, H, W) image -> an NCHW feature map, or a list of them, finest first (a hybrid ViT's
      stem features and its token map), of ``out_channels`` channels (a list for a list);
    * ``set_input_size((h, w))``: take inputs of another size from now on (a ViT resizes its position
      embeddings; HRNet takes any multiple of 32 as it is);
    * ``prefers_channels_last``: whether oneDNN runs it faster on channels-last tensors (convolutional
      backbones): the layout a fused model takes (:func:`~sagepose.models.inference.fold_for_inference`);
    * optionally ``block_type``: the class of its repeated transformer blocks, FSDP's unit of sharding and of
      activation checkpointing (:func:`~sagepose.models.zoo.block_type`).
    """

    out_channels: int | list[int]
    prefers_channels_last: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]: ...

    def set_input_size(self, img_size: tuple[int, int]) -> None: ...


class TopDownEstimator(TopDownPredictor, nn.Module):
    """Backbone + head + codec (heatmaps, or SimCC's x and y logits: :mod:`sagepose.codecs.simcc`, whose codec
    flips and decodes them) for one keypoint schema at a fixed input size (w, h), predicting in
    one :class:`~sagepose.models.inference.InferenceMode` (``inference_mode``; the default: unfused float32, the
    trainable module). The backbone's and head's transformer modules run the CPU fast path
    (:func:`~sagepose.models.inference.use_cpu_kernels`, applied here)."""

    def __init__(self, backbone: Backbone, head: nn.Module, codec, schema: KeypointSchema,
                 input_size: tuple[int, int], mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB,
                 flip_test: bool = True, shift_heatmap: bool | None = None, heatmap_output: str = "raw",
                 test_scales=(1.0,)):
        super().__init__()
        self.test_scales = check_test_scales(test_scales)
        if heatmap_output not in ("raw", "softmax"):
            raise ValueError(f"heatmap_output must be 'raw' or 'softmax', got {heatmap_output!r}")
        self.heatmap_output = heatmap_output
        self.backbone, self.head = backbone, head
        use_cpu_kernels(self)
        self.codec, self.schema = codec, schema
        self.heatmap_mass = self._target_mass() if heatmap_output == "softmax" else 1.0
        self.input_size = tuple(input_size)
        if tuple(codec.input_size) != self.input_size:
            raise ValueError(f"codec input size {tuple(codec.input_size)} != model input size "
                             f"{self.input_size}")
        self.flip_test = flip_test
        self.inference_mode = InferenceMode()  # changed by set_mode only
        self._fast_codec = None  # in exact mode: the codec set_exact replaced
        self.shift_heatmap = codec.shift_heatmap_default if shift_heatmap is None else shift_heatmap
        # Non-persistent: checkpoints hold only weights; mean/std are part of the model's definition.
        self.register_buffer("mean", torch.tensor(mean).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).float().view(1, 3, 1, 1), persistent=False)

    def _target_mass(self) -> float:
        """Sum of a unit-peak target Gaussian: scales a spatial softmax back to MMPose's heatmap range."""
        w, h = self.codec.input_size
        target, _ = self.codec.encode(torch.tensor([[[(w - 1) / 2, (h - 1) / 2]]]), torch.ones(1, 1))
        return float(target.sum())

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Head output (B, K, h, w) -> heatmaps: as is for ``"raw"`` (every MMPose model); for ``"softmax"``
        (trained with the spatial cross-entropy loss) a softmax over each map times the target Gaussian's
        mass, so a confident prediction peaks near 1 like a regressed heatmap and scores stay comparable."""
        if self.heatmap_output == "raw":
            return raw
        return raw.flatten(2).float().softmax(-1).view(raw.shape) * self.heatmap_mass

    @property
    def fused(self) -> bool:
        return self.inference_mode.fused

    @property
    def exact(self) -> bool:
        return self.inference_mode.exact

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.inference_mode.dtype

    def set_mode(self, mode: InferenceMode) -> TopDownEstimator:
        """Move this model, in place, to inference ``mode`` (:meth:`InferenceMode.check` refuses an invalid one;
        fusing cannot be undone). ``fuse_for_inference``, ``set_exact`` and ``set_dtype`` change one field of
        the present mode through here. Returns ``self``."""
        mode.check()
        old = self.inference_mode
        if self.device.type == "cpu":
            keep_freed_memory()
        if old.fused and not mode.fused:
            raise RuntimeError("fuse_for_inference cannot be undone (the BatchNorms are folded): build or load the "
                               "model again, e.g. sagepose.load(..., fuse=False)")
        if mode.fused and not old.fused:
            self.eval()  # folding uses the running statistics
        if self.training:
            mode.check_trainable()
        if mode.fused and not old.fused:
            fold_for_inference(self)
        if mode.dtype != old.dtype:
            if self.device.type == "cpu" and (mode.dtype == torch.float16 or (
                    mode.dtype == torch.bfloat16 and not native_bf16(self.device))):
                warnings.warn(f"{mode.dtype} on this CPU is emulated, several times slower than float32 "
                              "(bfloat16 needs AVX512-BF16 or AMX; float16 is for GPUs)", stacklevel=3)
            self.backbone.to(mode.dtype)
            self.head.to(mode.dtype)
        if mode.exact != old.exact:
            mmpose_exact.set_exact(self, mode.exact)
        if mode.exact and not old.exact:  # the codec's decode with MMPose's numpy / OpenCV float operations
            self._fast_codec = self.codec
            if "decode_impl" in {f.name for f in dataclasses.fields(self.codec)}:
                self.codec = dataclasses.replace(self.codec, decode_impl="mmpose")
        elif old.exact and not mode.exact:
            self.codec, self._fast_codec = self._fast_codec, None
        if mode.packed and (not old.packed or mode.dtype != old.dtype):  # packed copies follow the weights' dtype
            pack_linear_weights(self)
        elif old.packed and not mode.packed:
            unpack_linear_weights(self)
        self.inference_mode = mode
        return self

    def fuse_for_inference(self, pack_weights: bool | None = None) -> TopDownEstimator:
        """Rewrite this model, in place, for faster prediction with the same outputs (to float32 rounding):
        BatchNorms folded into the convolutions before them, and for convolutional backbones (HRNet,
        HRFormer) channels-last weights, oneDNN's faster layout on CPUs. HRNet-W32 / HRFormer-B forward
        at batch 2 on 2 CPU cores: 218 / 543 ms -> 185 / 458 ms. A ViT's classic head gets channels-last
        input from its second deconv on (:func:`sagepose.models.inference.fold_for_inference`).

        ``pack_weights``: also keep the transformer linear weights in oneDNN's blocked layout
        (:func:`sagepose.models.cpu_kernels.pack_linear_weights`; ViTPose-B batch 1 198 -> 187 ms) at the cost
        of a second copy of them in memory. By default where that copy takes at most 1/8 of the RAM
        (:func:`sagepose.models.cpu_kernels.packing_fits_in_memory`).

        Puts the model in eval mode; afterwards the state dict no longer has the BatchNorm entries, so fuse a
        model you only predict with (``sagepose.load`` does, unless ``fuse=False``). Not for a model in exact
        mode. Returns ``self``; a second call does nothing."""
        if self.fused:
            return self
        if pack_weights is None:
            pack_weights = packing_fits_in_memory(self)
        return self.set_mode(dataclasses.replace(self.inference_mode, fused=True, packed=pack_weights))

    def set_exact(self, enabled: bool = True) -> TopDownEstimator:
        """Predict with MMPose 1.x's float32 arithmetic, operation for operation, so that on the same torch build, CPU
        and thread count :meth:`predict` gives MMPose's heatmaps and scores bit for bit and its keypoints to float32
        rounding (measured <= 1.2e-4 px): BatchNorms kept (not folded), transformer matmuls through torch's default
        kernels (``F.linear``), HRFormer's window attention as MMPose's explicit softmax, a ViT's feature map handed
        to the head in mmpretrain's channels-last layout, the input contiguous as MMPose's preprocessor gives it, the
        mirrored crops in a forward pass of their own, the codec's ``decode_impl="mmpose"`` (numpy / OpenCV DARK and
        UDP) and the map back to image pixels in float64. The modules that compute so are swapped in
        (:mod:`sagepose.models.mmpose_exact`), so the model's own forward computes so too while exact.

        The default path agrees with MMPose to float32 rounding (heatmaps ~1e-6 relative) and is faster;
        where a decode is ill-conditioned (DARK on flat heatmaps, e.g. from random weights) that rounding
        can move a keypoint, and only this mode reproduces MMPose's keypoint there. It runs at about
        MMPose's speed (``benchmarks/bench_latency_mmpose.py``). Not for a fused model (load with
        ``sagepose.load(..., exact=True)``) nor one in another dtype than float32.
        Returns ``self``."""
        return self.set_mode(dataclasses.replace(self.inference_mode, exact=enabled))

    def set_dtype(self, dtype: torch.dtype | str) -> TopDownEstimator:
        """Predict with the backbone and head in ``dtype`` (``torch.bfloat16`` or ``"bfloat16"``, ``float16``,
        ``float32``): their weights are cast, :meth:`predict_heatmaps` casts its input and returns float32
        heatmaps; normalisation, flip fusion and decoding stay float32. For inference only (eval mode): bfloat16
        on a CPU with native bf16 (AVX512-BF16 / AMX) or a GPU, float16 on a GPU; outputs then differ from
        float32 by about 1e-2 relative. Returns ``self``."""
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        return self.set_mode(dataclasses.replace(self.inference_mode, dtype=dtype))

    def train(self, mode: bool = True) -> TopDownEstimator:
        if mode:
            self.inference_mode.check_trainable()
        return super().train(mode)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, x: torch.Tensor, dataset=None) -> torch.Tensor:
        """Normalised (B, 3, H, W) -> raw head output (B, K, h, w); :meth:`activate` makes it heatmaps. ``dataset``
        routes a :class:`~sagepose.models.heads.PerDatasetHeads` (a (B,) tensor: each sample's; an int: one for
        all); None for any other head."""
        feats = self.backbone(x)
        return self.head(feats) if dataset is None else self.head(feats, dataset)

    def network_heatmaps(self, inputs: torch.Tensor, dataset=None) -> torch.Tensor:
        """The network in the compute dtype (:meth:`set_dtype`; MMPose's arithmetic when exact), activated
        heatmaps out in float32."""
        x = inputs.to(self.compute_dtype)
        out = mmpose_exact.forward(self, x, dataset) if self.exact else self(x, dataset)
        return self.activate(out if self.compute_dtype == torch.float32 else out.float())

    def flip_back(self, heatmaps: torch.Tensor) -> torch.Tensor:
        # a head with maps beyond heatmaps (the fusion head's offsets) flips them itself
        if hasattr(self.head, "flip_back"):
            return self.head.flip_back(heatmaps, self.schema.flip_indices, self.shift_heatmap)
        return super().flip_back(heatmaps)

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) -> keypoints (B, K, 2) in input-crop px, scores (B, K); a head that decodes its own
        outputs (the fusion head: heatmaps, offsets, variances) does so with this codec's coordinates."""
        if hasattr(self.head, "decode"):
            return self.head.decode(heatmaps, self.codec)[:2]
        return self.codec.decode(heatmaps)

