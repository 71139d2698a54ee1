"""ONNX export and the onnxruntime estimator (sagepose.onnx_model): parity with the torch float32 path for every
family (Sapiens2's bfloat16 RoPE included; RTMPose's SimCC logits), fixed and dynamic batch, float16, external data,
the metadata, the CLI, and the bad files."""
import json
import shutil

import numpy as np
import pytest
import torch
from goldens_io import well_posed_joints
from weightgen import synthetic_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

import sagepose  # noqa: E402
from sagepose.cli.main import main as cli  # noqa: E402
from sagepose.errors import SagePoseError  # noqa: E402
from sagepose.keypoints import MPII16  # noqa: E402
from sagepose.models import build_model  # noqa: E402
from sagepose.onnx_model import METADATA_KEY, OnnxEstimator, OnnxExportError, OnnxFileError, export_onnx  # noqa: E402

SMALL_VIT = dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64)
SMALL_HR = {"hrnet": dict(widths=(8, 16, 24, 32), num_modules=(1, 1, 1), num_blocks=1, stem_blocks=1),
            "hrformer": dict(widths=(8, 16, 24, 32), num_heads=(1, 2, 2, 4), num_modules=(1, 1, 1), num_blocks=1,
                             stem_blocks=1)}
# every family the zoo builds, shrunk (the same modules, fewer and narrower): name -> builder arguments
FAMILIES = {
    "vitpose-b": dict(arch=SMALL_VIT, input_size=(48, 64)),  # ViTPose's classic deconv head, UDP
    "vitpose-s-simple": dict(arch=SMALL_VIT, input_size=(48, 64), schema=MPII16),  # the simple head, MPII
    "sapiens-0.3b": dict(arch=dict(SMALL_VIT, deconv_channels=(16, 16), conv_channels=(16, 16)),
                         input_size=(48, 64)),  # Sapiens' head: instance norm, SiLU
    "hrnet-w32": dict(arch=SMALL_HR["hrnet"], input_size=(64, 64)),  # MSRA codec, shifted flip
    "hrnet-w32-dark": dict(arch=SMALL_HR["hrnet"], input_size=(64, 64)),  # DARK decode
    "hrformer-s": dict(arch=SMALL_HR["hrformer"], input_size=(64, 64)),  # window attention
    "vit-tiny": dict(heatmap_output="softmax"),  # the demo model, as its recipe builds it: skip head, softmax
    # RoPE in bfloat16 as released (exported as float32 operations rounded to bfloat16), 308 Goliath joints
    "sapiens2-0.4b": dict(arch=dict(embed_dim=32, depth=3, num_heads=4, mlp_dim=48, mha_ends=1,
                                    deconv_channels=(16, 8), conv_channels=(8, 8)), input_size=(48, 64)),
}
BOXES = np.array([[150, 60, 420, 440], [20, 30, 200, 300], [300, 10, 630, 470]], np.float32)


def sharp(model):
    """A seeded random model whose heatmaps have clear peaks: its last convolution's weights scaled up."""
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(25.0)
    return model.eval()


def build(name: str, **extra):
    torch.manual_seed(0)
    return sharp(build_model(name, drop_path_rate=0.0, **{**FAMILIES[name], **extra}))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The demo ViT exported once with a dynamic batch: (torch model, path)."""
    model = build("vit-tiny")
    path = tmp_path_factory.mktemp("onnx") / "vit-tiny.onnx"
    export_onnx(model, path, dynamic_batch=True)
    return model, path


def assert_same_prediction(model, runtime, image=None, boxes=BOXES):
    image = synthetic_image() if image is None else image
    ref = model.predict(image, boxes, return_heatmaps=True)
    got = runtime.predict(image, boxes, return_heatmaps=True)
    peak = np.abs(ref.heatmaps).max(axis=(2, 3), keepdims=True)
    assert np.abs(got.heatmaps - ref.heatmaps).max() <= 1e-5 * peak.max()
    assert (np.abs(got.heatmaps - ref.heatmaps) <= 1e-5 * peak).all()
    # keypoints are compared where the heatmaps fix them: a clear maximum, and the decode moving the keypoint by
    # under 1e-3 px when the heatmaps are perturbed by twice as much as onnxruntime's differ from torch's (random
    # weights give flat maps, on which DARK's Newton step turns any rounding into a visible move)
    rel = max(2 * float(np.abs(got.heatmaps - ref.heatmaps).max() / peak.max()), 1e-7)
    clear = well_posed_joints(model, ref.heatmaps, model.crop(image, boxes)[2], rel=rel)
    assert clear.sum() >= 5, f"only {clear.sum()} joints whose heatmaps fix them: the check would be empty"
    assert np.abs(got.keypoints - ref.keypoints)[clear].max() <= 1e-3
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_onnxruntime_predicts_as_the_torch_float32_path(name, tmp_path):
    model = build(name)
    info = export_onnx(model, tmp_path / f"{name}.onnx", dynamic_batch=True)
    assert info["opset"] == 18 and info["data_file"] is None and info["batch"] is None
    runtime = sagepose.load(info["path"])
    assert isinstance(runtime, OnnxEstimator) and runtime.batch is None
    assert runtime.schema == model.schema and runtime.codec == model.codec
    assert (runtime.input_size, runtime.flip_test, runtime.shift_heatmap) == (model.input_size, model.flip_test,
                                                                              model.shift_heatmap)
    assert_same_prediction(model, runtime)
    assert runtime.schema.flip_indices == model.schema.flip_indices


def test_a_fixed_batch_graph_runs_any_number_of_boxes_in_chunks(tiny, tmp_path):
    model, _ = tiny
    info = export_onnx(model, tmp_path / "b2.onnx", batch=2, opset=17)  # converted down from the exporter's 18
    runtime = sagepose.load(info["path"])
    assert runtime.batch == 2 and info["batch"] == 2 and info["opset"] == 17
    assert {o.domain: o.version for o in onnx.load(info["path"]).opset_import}[""] == 17
    graph = onnx.load(info["path"])
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert_same_prediction(model, runtime)  # 3 boxes, flip test: 6 crops in 3 runs
    one = runtime.predict(synthetic_image(), BOXES[:1])  # 2 crops with the mirror: one run
    assert one.keypoints.shape == (1, 17, 2)


def test_the_metadata_holds_what_prediction_needs(tiny):
    model, path = tiny
    graph = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert meta["format"] == "sagepose-onnx" and meta["version"] == 1
    assert meta["input_size"] == [96, 128] and meta["outputs"] == 17 and meta["heatmap_output"] == "softmax"
    assert meta["test_scales"] == [1.0] and meta["flip_test"] is True
    assert meta["codec"]["type"] == "UDPHeatmap" and meta["codec"]["sigma"] == 0.5
    assert OnnxEstimator(path).schema.flip_indices == model.schema.flip_indices
    assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == ["heatmaps"]
    assert graph.producer_name == "sagepose"


def test_float16_export_runs_near_float32(tiny, tmp_path):
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = export_onnx(model, tmp_path / "fp16.onnx", fp16=True, dynamic_batch=True)
    after = model.state_dict()  # the model exported is a float16 copy: this one is as it was
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    graph = onnx.load(info["path"])
    weights = [t for t in graph.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 at both ends
    runtime = sagepose.load(info["path"])
    assert runtime.fp16
    x = model.normalize(torch.from_numpy(model.crop(synthetic_image(), BOXES)[0]))
    ref = model.network_heatmaps(x)
    got = runtime.network_heatmaps(x)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_external_data_travels_with_its_file(tiny, tmp_path):
    model, _ = tiny
    info = export_onnx(model, tmp_path / "a" / "ext.onnx", external_data=True, dynamic_batch=True)
    assert info["data_file"] == str(tmp_path / "a" / "ext.onnx.data")
    graph, data = (tmp_path / "a" / "ext.onnx").stat().st_size, (tmp_path / "a" / "ext.onnx.data").stat().st_size
    assert data > 5_000_000 and graph < data / 10  # the weights are in the .data file
    shutil.copytree(tmp_path / "a", tmp_path / "moved")  # a relative reference: the pair moves together
    assert_same_prediction(model, sagepose.load(tmp_path / "moved" / "ext.onnx"))
    again = export_onnx(model, tmp_path / "a" / "ext.onnx", dynamic_batch=True)  # inline now: no stale .data
    assert again["data_file"] is None and not (tmp_path / "a" / "ext.onnx.data").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ext.onnx"]  # no staging left behind


def test_onnx_predict_takes_rgb_arrays_with_color_rgb_as_the_torch_model_does(tiny):
    _, path = tiny
    runtime = sagepose.load(path)
    bgr = synthetic_image()
    want = runtime.predict(bgr, BOXES)
    got = runtime.predict(np.ascontiguousarray(bgr[..., ::-1]), BOXES, color="rgb")
    np.testing.assert_array_equal(got.keypoints, want.keypoints)
    np.testing.assert_array_equal(got.scores, want.scores)


def _cli_infer(onnx_file, tmp_path) -> list[dict]:
    """``sagepose infer ONNX_FILE`` on a synthetic image with :data:`BOXES` given: its results.json rows."""
    import cv2

    image = tmp_path / "img.png"
    cv2.imwrite(str(image), synthetic_image())
    det = tmp_path / "det.json"
    det.write_text(json.dumps({"img.png": BOXES.tolist()}))
    assert cli(["infer", str(onnx_file), str(image), "--det-json", str(det), "--out", str(tmp_path / "inf"),
                "--no-render"]) == 0
    return json.loads((tmp_path / "inf" / "results.json").read_text())


def test_cli_export_then_infer(tiny, tmp_path, capsys):

    out = tmp_path / "cli.onnx"
    assert cli(["export", "vit-tiny", "--random-weights", "--out", str(out), "--dynamic-batch"]) == 0
    assert "opset 18, any batch, float32" in capsys.readouterr().out
    rows = _cli_infer(out, tmp_path)
    assert len(rows) == 3 and len(rows[0]["keypoints"]) == 51


# ---- SimCC (RTMPose): x and y logits in place of heatmaps --------------------------------------------------------
SMALL_RTMPOSE = dict(arch=dict(widen=0.125, deepen=0.33, hidden=32, s=16), input_size=(64, 96))  # 128 + 192 bins


def simcc_margin(logits: np.ndarray, x_bins: int) -> np.ndarray:
    """(N, K, Wx + Wy) -> (N, K): the smaller over the two axes of (max - runner-up) / |max|. SimCC's keypoint is
    the argmax bin / split ratio, which a rounding of 1e-5 of the peak cannot move where this is well above it."""
    def one(v):
        top = np.sort(v.astype(np.float64), -1)[..., -2:]
        return (top[..., 1] - top[..., 0]) / (np.abs(top[..., 1]) + 1e-12)
    return np.minimum(one(logits[..., :x_bins]), one(logits[..., x_bins:]))


@pytest.fixture(scope="module")
def rtmpose(tmp_path_factory):
    """A shrunk RTMPose-t exported once with a dynamic batch: (torch model, path)."""
    torch.manual_seed(0)
    model = build_model("rtmpose-t", **SMALL_RTMPOSE).eval()
    path = tmp_path_factory.mktemp("onnx") / "rtmpose.onnx"
    assert export_onnx(model, path, dynamic_batch=True)["opset"] == 18
    return model, path


def test_rtmpose_in_onnxruntime_gives_the_torch_simcc_logits_and_keypoints(rtmpose):
    model, path = rtmpose
    runtime = sagepose.load(path)
    assert runtime.codec == model.codec and runtime.schema == model.schema and runtime.flip_test
    image = synthetic_image()
    x = model.normalize(torch.from_numpy(model.crop(image, BOXES)[0]))
    with torch.no_grad():
        ref, got = model.network_heatmaps(x).numpy(), runtime.network_heatmaps(x).numpy()
    assert got.shape == ref.shape == (3, 17, 128 + 192)
    assert (np.abs(got - ref) <= 1e-5 * np.abs(ref).max(-1, keepdims=True)).all()  # each joint's logits
    want = model.predict(image, BOXES, return_heatmaps=True)  # flip test: the mirrored crops' x bins reversed
    have = runtime.predict(image, BOXES, return_heatmaps=True)
    assert (np.abs(have.heatmaps - want.heatmaps) <= 1e-5 * np.abs(want.heatmaps).max(-1, keepdims=True)).all()
    clear = simcc_margin(want.heatmaps, 128) >= 1e-4
    assert clear.sum() >= 40, f"only {clear.sum()} of 51 joints with a clear argmax: the check would be thin"
    np.testing.assert_array_equal(have.keypoints[clear], want.keypoints[clear])
    np.testing.assert_allclose(have.scores, want.scores, rtol=1e-5, atol=1e-6)


def test_cli_export_then_infer_an_rtmpose(tmp_path, capsys):

    out = tmp_path / "rtmpose-t.onnx"
    assert cli(["export", "rtmpose-t", "--random-weights", "--out", str(out)]) == 0
    assert "opset 18, batch 1, float32" in capsys.readouterr().out
    graph = onnx.load(str(out))
    assert [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim] == [1, 17, 384 + 512]
    rows = _cli_infer(out, tmp_path)
    assert len(rows) == 3 and len(rows[0]["keypoints"]) == 51 and np.isfinite(rows[0]["keypoints"]).all()


def test_a_simcc_graph_whose_output_is_not_its_codecs_bins_is_refused(rtmpose, tmp_path):
    _, path = rtmpose

    def fewer_bins(g):
        for p in g.metadata_props:
            if p.key == METADATA_KEY:
                meta = json.loads(p.value)
                meta["codec"]["simcc_split_ratio"] = 3.0
                p.value = json.dumps(meta)

    with pytest.raises(OnnxFileError, match=r"is not the \[batch, 17, 480\] SimCC logits of schema coco"):
        sagepose.load(_edited(path, tmp_path / "bins.onnx", fewer_bins))


# ---- bad input ------------------------------------------------------------------------------------------------
def test_unreadable_files_are_one_line_errors(tiny, tmp_path):
    _, path = tiny
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx file" * 100)
    for bad in (truncated, garbage):
        with pytest.raises(OnnxFileError, match=f"{bad}: onnxruntime cannot load it"):
            sagepose.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.onnx: ONNX file not found"):
        sagepose.load(tmp_path / "missing.onnx")


def _edited(path, out, edit):
    graph = onnx.load(str(path))
    edit(graph)
    onnx.save(graph, str(out))
    return out


def test_a_graph_without_sagepose_metadata_or_of_another_size_is_refused(tiny, tmp_path):
    _, path = tiny

    def drop(g):
        del g.metadata_props[:]

    def resize(g):
        for p in g.metadata_props:
            if p.key == METADATA_KEY:
                meta = json.loads(p.value)
                meta["input_size"] = [192, 256]
                meta["codec"].update(input_size=[192, 256], heatmap_size=[48, 64])
                p.value = json.dumps(meta)

    def future(g):
        for p in g.metadata_props:
            if p.key == METADATA_KEY:
                p.value = json.dumps({**json.loads(p.value), "version": 99})

    with pytest.raises(OnnxFileError, match="no sagepose metadata"):
        sagepose.load(_edited(path, tmp_path / "plain.onnx", drop))
    with pytest.raises(OnnxFileError, match=r"resized.onnx: the graph's input is \['batch', 3, 128, 96\], its "
                                            r"metadata's crops are \[batch, 3, 256, 192\]"):
        sagepose.load(_edited(path, tmp_path / "resized.onnx", resize))
    with pytest.raises(OnnxFileError, match="version 99; this sagepose reads 'sagepose-onnx' version 1"):
        sagepose.load(_edited(path, tmp_path / "future.onnx", future))


def test_what_export_refuses(tmp_path):
    fusion = build_model("vit-tiny-fusion").eval()
    with pytest.raises(OnnxExportError, match="FusionHead decodes its own outputs"):
        export_onnx(fusion, tmp_path / "f.onnx")
    model = build("vitpose-b")
    with pytest.raises(OnnxExportError, match="ends in .onnx"):
        export_onnx(model, tmp_path / "f.pth")
    with pytest.raises(OnnxExportError, match="not packed for oneDNN nor in exact mode"):
        export_onnx(build("vitpose-b").set_exact(), tmp_path / "f.onnx")
    with pytest.raises(OnnxExportError, match="opset 9"):
        export_onnx(model, tmp_path / "f.onnx", opset=9)
    assert not any(tmp_path.iterdir())


def test_load_options_that_do_not_apply_to_onnx(tiny):
    _, path = tiny
    with pytest.raises(ValueError, match="holds its weights; drop the checkpoint"):
        sagepose.load(path, checkpoint="x.ckpt")
    with pytest.raises(ValueError, match="exact mode and set_dtype are for torch models"):
        sagepose.load(path, exact=True)
    with pytest.raises(ValueError, match="device 'tpu'"):
        sagepose.load(path, device="tpu")
    with pytest.raises(SagePoseError, match="needs onnxruntime's CUDAExecutionProvider"):
        if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
        sagepose.load(path, device="cuda")


def test_without_onnxruntime_the_error_names_the_extra(monkeypatch):
    import sys

    from sagepose.onnx_model import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(SagePoseError, match=r"onnxruntime is not installed: pip install 'sagepose\[onnx\]'"):
        require("onnxruntime")
