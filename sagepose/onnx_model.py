"""ONNX: export a model, and predict with an exported one in onnxruntime.

* :func:`export_onnx` -- a :class:`~sagepose.models.estimator.TopDownEstimator`'s network as an ONNX graph:
  normalised crops ``input`` (B, 3, H, W) float32 in, activated heatmaps ``heatmaps`` (B, K, h, w) float32 out
  (a softmax-trained model's softmax is in the graph; a SimCC model's x and y logits side by side, (B, K, Wx + Wy),
  under the same name, decoded by its codec as the torch model decodes them). What prediction needs besides the
  network -- the keypoint schema with its flip pairs, the codec, the input size, flip test, mean / std -- is JSON in
  the model's metadata under ``sagepose``. Weights past ONNX's 2 GB protobuf limit (Sapiens 1B / 2B, Sapiens2 1B /
  5B) go to ``NAME.onnx.data`` beside it.
* :class:`OnnxEstimator` -- such a file run by onnxruntime with the torch model's own prediction code
  (:class:`~sagepose.models.estimator.TopDownPredictor`: crop, normalise, flip test, decode, back to image pixels),
  so ``predict`` gives the torch float32 path's keypoints. ``sagepose.load("model.onnx")`` returns one.

onnxruntime, onnx and onnxscript (the exporter's) are the optional extra ``pip install sagepose[onnx]``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sagepose.errors import SagePoseError
from sagepose.keypoints import schema_from_dict, schema_to_dict
from sagepose.models.estimator import DeviceError, TopDownPredictor, check_test_scales

FORMAT = "sagepose-onnx"
VERSION = 1
METADATA_KEY = "sagepose"
INPUT_NAME, OUTPUT_NAME = "input", "heatmaps"
# device -> onnxruntime execution providers, most wanted first (the CPU one always last: ops a GPU provider lacks)
PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
             "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")}


class OnnxFileError(SagePoseError, ValueError):
    """An ONNX file sagepose cannot predict with: unreadable, not exported by sagepose, or inconsistent."""


class OnnxExportError(SagePoseError, ValueError):
    """A model or an export setting :func:`export_onnx` cannot honour."""


def require(module: str):
    """Import an optional ONNX package, or say which extra installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise SagePoseError(f"{module} is not installed: pip install 'sagepose[onnx]' (onnxruntime, onnx, "
                            "onnxscript)") from None


class _Network(nn.Module):
    """What the graph computes: the model's backbone, head and activation (in float16 between float32 ends)."""

    def __init__(self, model, fp16: bool):
        super().__init__()
        self.model, self.fp16 = model, fp16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.fp16:
            return m.activate(m(x.half()).float())
        return m.activate(m(x))


def metadata(model, fp16: bool = False) -> dict:
    """The prediction settings of ``model`` that the graph does not hold, as plain data."""
    codec = {"type": type(model.codec).__name__, **dataclasses.asdict(model.codec)}
    if "decode_impl" in codec:
        codec["decode_impl"] = "batched"
    from sagepose.version import __version__

    return dict(format=FORMAT, version=VERSION, schema=schema_to_dict(model.schema), codec=codec,
                input_size=list(model.input_size), flip_test=bool(model.flip_test),
                test_scales=list(model.test_scales),
                shift_heatmap=bool(model.shift_heatmap), mean=model.mean.flatten().tolist(),
                std=model.std.flatten().tolist(), heatmap_output=model.heatmap_output,
                outputs=int(model.schema.num_keypoints), fp16=bool(fp16), sagepose=__version__,
                torch=torch.__version__)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress prints, warnings and log lines kept off the user's terminal (its errors still
    raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model, path: str | os.PathLike, opset: int = 18, dynamic_batch: bool = False, fp16: bool = False,
                batch: int = 1, external_data: bool | None = None) -> dict:
    """Write ``model``'s network to ``path`` as ONNX (see the module docstring), atomically.

    ``opset``: the ONNX operator set: 18, the exporter's own (onnxruntime >= 1.14, TensorRT >= 10); an older one
    (17 for TensorRT 8.6) is converted down, which fails for some graphs (HRFormer's, to 17): an error then;
    ``dynamic_batch``: any batch size, else a fixed ``batch``; ``fp16``: float16 weights
    and compute between float32 input and output (for GPUs: onnxruntime's CPU provider lacks float16 kernels for
    most of these ops); ``external_data``: weights in ``PATH.data`` (None: only past 2 GB). The model: float32,
    not packed for the CPU and not in exact mode (``sagepose.load(..., fuse=False)`` gives such a one); a head that
    decodes its own outputs (the fusion head) is refused. Returns a summary: path, data file, opset, bytes, seconds.
    """
    require("onnx")
    require("onnxscript")
    import onnx

    if hasattr(model.head, "decode"):
        raise OnnxExportError(f"{type(model.head).__name__} decodes its own outputs (heatmaps, offsets, variances) "
                              "in torch: export a heatmap model")
    mode = model.inference_mode
    if mode.packed or mode.exact or mode.dtype != torch.float32:
        raise OnnxExportError(f"export a float32 model, not packed for oneDNN nor in exact mode (this one: {mode}); "
                              "sagepose.load(..., fuse=False) gives one")
    if batch < 1:
        raise OnnxExportError(f"batch must be >= 1, got {batch}")
    if not 11 <= opset <= 23:
        raise OnnxExportError(f"opset {opset}: the exporter writes opsets 11 to 23 (17 or 18 for TensorRT)")
    path = Path(path)
    if path.suffix != ".onnx":
        raise OnnxExportError(f"{path}: an ONNX file's name ends in .onnx")
    model = model.eval()
    w, h = model.input_size
    net = _Network(copy.deepcopy(model).half() if fp16 else model, fp16)
    x = torch.zeros(max(batch, 2) if dynamic_batch else batch, 3, h, w)  # an example of 1 would pin a dynamic batch
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    start = time.time()
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, verbose=False)
    got = program.model.opset_imports.get("")
    if got != opset:
        raise OnnxExportError(f"the exporter could not convert this graph from opset {got} down to {opset}: "
                              f"export it with opset {got}")
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata(model, fp16))
    program.model.producer_name = "sagepose"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        with _quiet_exporter():
            program.save(staged, external_data=external_data)
        data = staged.with_name(staged.name + ".data")
        onnx.checker.check_model(str(staged))  # a file the runtimes will read
        if data.exists():
            os.replace(data, path.with_name(path.name + ".data"))
        elif path.with_name(path.name + ".data").exists():
            os.remove(path.with_name(path.name + ".data"))  # a stale one of an earlier export
        os.replace(staged, path)
    data_file = path.with_name(path.name + ".data")
    return dict(path=str(path), data_file=str(data_file) if data_file.exists() else None, opset=got,
                bytes=path.stat().st_size + (data_file.stat().st_size if data_file.exists() else 0),
                dynamic_batch=dynamic_batch, batch=None if dynamic_batch else batch, fp16=fp16,
                seconds=round(time.time() - start, 1))


def execution_providers(device: str, available: list[str], path: str) -> list:
    """onnxruntime's providers for ``device``, or the one-line :class:`DeviceError` the torch path gives too
    (:func:`~sagepose.models.estimator.check_device`)."""
    kind, _, index = str(device).partition(":")
    if kind not in PROVIDERS:
        raise DeviceError(f"{path}: device {device!r}: onnxruntime runs on 'cpu', 'cuda[:N]' or 'tensorrt[:N]'")
    wanted = PROVIDERS[kind]
    if wanted[0] not in available:
        raise DeviceError(f"{path}: device {device!r} needs onnxruntime's {wanted[0]}; this onnxruntime has "
                          f"{', '.join(available)} (pip install onnxruntime-gpu for CUDA / TensorRT)")
    options = {"device_id": int(index)} if index else {}
    return [(p, options) if p != "CPUExecutionProvider" else p for p in wanted if p in available]


class OnnxEstimator(TopDownPredictor):
    """A file :func:`export_onnx` wrote, predicting as :class:`~sagepose.models.estimator.TopDownEstimator` does
    (the same ``predict``, ``predict_heatmaps``, ``crop``, ``decode``) with its network run by onnxruntime.

    ``device``: ``"cpu"`` (the default), ``"cuda[:N]"`` or ``"tensorrt[:N]"`` (onnxruntime-gpu's providers);
    ``threads``: onnxruntime's intra-op threads (default: its own choice, every core). A graph of a fixed batch
    size is run on chunks of that size (the last one padded). A file onnxruntime cannot read, one without
    sagepose's metadata, or one whose graph input is not the metadata's size is an :class:`OnnxFileError`.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        ort = require("onnxruntime")
        from sagepose.codecs import build_codec

        self.path = path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: ONNX file not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = execution_providers(device, ort.get_available_providers(), path)
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as e:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...) are not exported
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OnnxFileError(f"{path}: onnxruntime cannot load it ({first[:300]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise OnnxFileError(f"{path}: no sagepose metadata (the schema, codec and input size): write the file "
                                "with `sagepose export`")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise OnnxFileError(f"{path}: its sagepose metadata is not JSON ({e})") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise OnnxFileError(f"{path}: sagepose metadata of format {meta.get('format')!r} version "
                                f"{meta.get('version')!r}; this sagepose reads {FORMAT!r} version {VERSION}")
        try:
            self.schema = schema_from_dict(meta["schema"], where=f"{path}: its schema")
            codec = dict(meta["codec"])
            for key in ("input_size", "heatmap_size", "sigma"):  # JSON lists back to tuples (SimCC: no heatmap)
                if isinstance(codec.get(key), list):
                    codec[key] = tuple(codec[key])
            self.codec = build_codec(codec)
            self.input_size = tuple(int(v) for v in meta["input_size"])
            self.flip_test, self.shift_heatmap = bool(meta["flip_test"]), bool(meta["shift_heatmap"])
            self.test_scales = check_test_scales(meta.get("test_scales", (1.0,)))
            self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, 3, 1, 1)
            self.std = torch.tensor(meta["std"], dtype=torch.float32).view(1, 3, 1, 1)
            self.heatmap_output, self.fp16 = meta["heatmap_output"], bool(meta.get("fp16", False))
        except (KeyError, TypeError, ValueError) as e:
            raise OnnxFileError(f"{path}: inconsistent sagepose metadata ({type(e).__name__}: {e})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        w, h = self.input_size
        shape = list(inputs[0].shape) if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or shape[1:] != [3, h, w]:
            raise OnnxFileError(f"{path}: the graph's input is {shape if shape else [i.shape for i in inputs]}, its "
                                f"metadata's crops are [batch, 3, {h}, {w}]")
        out_shape, k = list(outputs[0].shape), self.schema.num_keypoints
        bins = getattr(self.codec, "simcc_size", None)  # SimCC: x and y logits side by side, not maps
        if bins is not None and out_shape[1:] != [k, sum(bins)]:
            raise OnnxFileError(f"{path}: the graph's output {out_shape} is not the [batch, {k}, {sum(bins)}] SimCC "
                                f"logits of schema {self.schema.name} and its codec")
        channels = out_shape[1] if len(out_shape) == 4 else None
        if bins is None and (not isinstance(channels, int) or channels < k):
            raise OnnxFileError(f"{path}: the graph's output {out_shape} has not the {k} heatmaps of schema "
                                f"{self.schema.name}")
        self.batch = shape[0] if isinstance(shape[0], int) else None  # None: any batch size
        self.input_name = inputs[0].name
        self.device_name = device
        self.providers = self.session.get_providers()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # crops are made here; onnxruntime moves them to its device

    def network_heatmaps(self, inputs: torch.Tensor, dataset=None) -> torch.Tensor:
        if dataset is not None:  # the graph holds the routing it was exported with
            raise ValueError("an exported model predicts with every head it was exported with; dataset= needs "
                             "the torch model (sagepose.load)")
        x = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        if self.batch is None or len(x) == self.batch:
            return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])
        out = []
        for s in range(0, len(x), self.batch):
            chunk = x[s:s + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return torch.from_numpy(np.concatenate(out))

    def __repr__(self) -> str:
        return (f"OnnxEstimator({self.path!r}, schema={self.schema.name}, input_size={self.input_size}, "
                f"providers={self.providers})")

