"""sagepose.detect: the ONNX person detector's two layouts on small graphs built here with the public files'
signatures, checked against a plain-loop reference of the same decode; letterboxing; bad files; the detector
attached to a model and on the command line."""
import json

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import sagepose  # noqa: E402
from sagepose.cli.main import main as cli  # noqa: E402
from sagepose.detect import PAD_VALUE, Detector, DetectorFileError, letterbox, nms  # noqa: E402

SIZE = 64  # the graphs' input: 64 x 64; anchors 8 x 8 + 4 x 4 + 2 x 2 = 84
ANCHORS = [(s, gx, gy) for s in (8, 16, 32) for gy in range(SIZE // s) for gx in range(SIZE // s)]


def _graph(outputs: dict[str, np.ndarray], path, input_shape=(1, 3, SIZE, SIZE)):
    """An ONNX graph with the detectors' signature: image ``input`` in; each output a constant plus 0 x the input's
    mean (so the graph reads its input, and a wrong input shape fails as on a real file)."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.zeros((), np.float32)))]
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"]))
    outs = []
    for name, value in outputs.items():
        const = numpy_helper.from_array(value.astype(np.float32), name=f"{name}_c")
        nodes.append(helper.make_node("Constant", [], [f"{name}_c"], value=const))
        if value.dtype.kind in "iu":  # labels: int64, cast after the add
            nodes += [helper.make_node("Add", [f"{name}_c", "nothing"], [f"{name}_f"]),
                      helper.make_node("Cast", [f"{name}_f"], [name], to=TensorProto.INT64)]
            outs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(value.shape)))
        else:
            nodes.append(helper.make_node("Add", [f"{name}_c", "nothing"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                list(input_shape))], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _raw_yolox(seed: int = 0) -> np.ndarray:
    """(1, 84, 7) raw YOLOX outputs, two classes: low scores everywhere, and a few strong anchors -- a person, an
    overlapping duplicate, a second person, a strong non-person, and a person reaching past the image."""
    rng = np.random.default_rng(seed)
    raw = np.zeros((len(ANCHORS), 7), np.float32)
    raw[:, :2] = rng.uniform(-0.5, 0.5, (len(ANCHORS), 2))
    raw[:, 2:4] = rng.uniform(-1, 1, (len(ANCHORS), 2))
    raw[:, 4:] = rng.uniform(0, 0.3, (len(ANCHORS), 3))
    strong = {10: (0.95, 0.9, 0.1), 11: (0.9, 0.85, 0.1), 70: (0.8, 0.9, 0.05), 75: (0.9, 0.05, 0.95),
              83: (0.9, 0.9, 0.0)}
    for i, (obj, person, other) in strong.items():
        raw[i, 4:] = obj, person, other
    raw[10, 2:4] = raw[11, 2:4] = np.log(3.0)  # stride-8 neighbours, 24 px boxes 0.8 px apart: they overlap
    raw[10, :2], raw[11, :2] = (0.5, 0.5), (-0.4, 0.5)
    raw[83, 2:4] = np.log(1.5)  # the last stride-32 cell: a 48 px box reaching past the corner
    return raw[None]


def _reference_yolox(raw: np.ndarray, ratio: float, score_thr: float, nms_thr: float, image_wh) -> np.ndarray:
    """The same decode in plain loops: (M, 5) boxes in image px + scores, best first."""
    dets = []
    for (stride, gx, gy), r in zip(ANCHORS, raw[0]):
        cx, cy = (r[0] + gx) * stride, (r[1] + gy) * stride
        w, h = np.exp(r[2]) * stride, np.exp(r[3]) * stride
        score = r[4] * r[5]
        if score > score_thr:
            dets.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score])
    dets.sort(key=lambda d: -d[4])
    kept = []
    for d in dets:
        def iou(a, b):
            ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = ix * iy
            return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
        if all(iou(d, k) <= nms_thr for k in kept):
            kept.append(d)
    w, h = image_wh
    return np.array([[min(max(v / ratio, 0), lim) for v, lim in zip(d[:4], (w, h, w, h))] + [d[4]] for d in kept])


@pytest.fixture
def image():
    rng = np.random.default_rng(1)
    return (rng.random((100, 200, 3)) * 255).astype(np.uint8)  # h 100, w 200: letterboxed at 0.32


def test_letterbox_scales_into_the_top_left_and_pads_grey():
    flat = np.full((100, 200, 3), (10, 20, 30), np.uint8)
    canvas, ratio = letterbox(flat, (64, 64))
    assert ratio == pytest.approx(0.32) and canvas.shape == (64, 64, 3)
    assert (canvas[:32, :64] == (10, 20, 30)).all() and (canvas[32:] == PAD_VALUE).all()
    tall, r2 = letterbox(np.zeros((200, 50, 3), np.uint8), (64, 32))
    assert r2 == pytest.approx(0.32) and (tall[:, :16] == 0).all() and (tall[:, 16:] == PAD_VALUE).all()


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float64)
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 0 and 3 overlap 1 (IoU 0.68, 0.64)
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]  # IoU(0, 3) = 0.95 > 0.7: 3 goes
    assert nms(boxes[:0], scores[:0], 0.5).size == 0


def test_raw_yolox_boxes_equal_a_plain_loop_decode(tmp_path, image):
    raw = _raw_yolox()
    det = Detector(_graph({"output": raw}, tmp_path / "yolox.onnx"), score_thr=0.3, nms_thr=0.45)
    assert det.layout == "yolox" and det.size_hw == (SIZE, SIZE)
    got = det(image)
    ref = _reference_yolox(raw, 0.32, 0.3, 0.45, (200, 100))
    ref = ref[(ref[:, 2] > ref[:, 0]) & (ref[:, 3] > ref[:, 1])]
    np.testing.assert_allclose(got.as_array(), ref, rtol=1e-5, atol=1e-3)
    assert len(got.boxes) == 3  # anchor 11 suppressed by 10, anchor 75 is not a person
    assert (got.boxes[:, 2] <= 200).all() and (got.boxes[:, 3] <= 100).all()  # clipped to the image
    assert (np.diff(got.scores) <= 0).all()
    assert len(Detector(det.path, score_thr=0.3, max_people=2)(image).boxes) == 2


def test_end_to_end_files_keep_persons_above_the_threshold(tmp_path, image):
    dets = np.array([[[4, 4, 30, 60, 0.9], [10, 2, 40, 20, 0.95], [0, 0, 63, 31, 0.2], [32, 8, 60, 30, 0.6]]],
                    np.float32)
    labels = np.array([[0, 2, 0, 0]], np.int64)
    det = Detector(_graph({"dets": dets, "labels": labels}, tmp_path / "end2end.onnx"), score_thr=0.5)
    assert det.layout == "end2end"
    got = det(image)
    expected = np.minimum(np.array([[4, 4, 30, 60], [32, 8, 60, 30]]) / 0.32, [200, 100, 200, 100])  # clipped
    np.testing.assert_allclose(got.boxes, expected, rtol=1e-6)
    np.testing.assert_allclose(got.scores, [0.9, 0.6], rtol=1e-6)


def test_mean_and_std_are_applied_before_the_network(tmp_path):
    det = Detector(_graph({"output": _raw_yolox()}, tmp_path / "y.onnx"), mean=(1, 2, 3), std=(2, 2, 2))
    x, ratio = det.preprocess(np.full((64, 64, 3), 9, np.uint8))
    assert ratio == 1 and x.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(x[0, :, 0, 0], [4, 3.5, 3])  # BGR kept, (9 - mean) / std


def test_bad_detector_files_are_one_line_errors(tmp_path, image):
    good = _graph({"output": _raw_yolox()}, tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DetectorFileError, match="truncated.onnx: onnxruntime cannot load it"):
        Detector(truncated)
    with pytest.raises(DetectorFileError, match=r"odd.onnx: not a detector layout sagepose knows \(outputs "
                                                r"\[\('scores', \[1, 10\]\)\]"):
        Detector(_graph({"scores": np.zeros((1, 10), np.float32)}, tmp_path / "odd.onnx"))
    with pytest.raises(DetectorFileError, match="takes one \\(1, 3, H, W\\) image of fixed H, W"):
        Detector(_graph({"output": _raw_yolox()}, tmp_path / "dyn.onnx", input_shape=(1, 3, "h", "w")))
    with pytest.raises(FileNotFoundError, match="nothing.onnx: detector file not found"):
        Detector(tmp_path / "nothing.onnx")
    short = _graph({"output": _raw_yolox()[:, :80]}, tmp_path / "short.onnx")  # 80 anchors, not 84
    with pytest.raises(DetectorFileError, match="short.onnx: not a detector layout"):
        Detector(short)
    with pytest.raises(DetectorFileError, match="80 YOLOX predictions, expected one per anchor"):
        Detector(short, layout="yolox")(image)


def test_a_model_with_a_detector_predicts_on_the_people_it_finds(tmp_path, image):
    path = _graph({"output": _raw_yolox()}, tmp_path / "yolox.onnx")
    model = sagepose.load("vit-tiny", detector=path)
    found = model.detector(image)
    auto = model.predict(image)
    given = model.predict(image, found.boxes)
    assert auto.keypoints.shape == (len(found.boxes), 17, 2)
    np.testing.assert_array_equal(auto.keypoints, given.keypoints)


def test_cli_infer_with_a_detector(tmp_path, image, capsys):
    path = _graph({"output": _raw_yolox()}, tmp_path / "yolox.onnx")
    cv2.imwrite(str(tmp_path / "img.png"), image)
    assert cli(["infer", "vit-tiny", "--random-weights", str(tmp_path / "img.png"), "--detector", str(path),
                "--det-thr", "0.3", "--out", str(tmp_path / "out"), "--no-render"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(rows) == 3 and all(len(r["bbox"]) == 4 for r in rows)
    assert cli(["infer", "vit-tiny", "--random-weights", str(tmp_path / "img.png"), "--detector", str(path),
                "--det-json", str(tmp_path / "d.json")]) == 1
    assert "--det-json and --detector both give boxes" in capsys.readouterr().err


def test_a_named_detector_is_downloaded_unzipped_verified_and_cached(tmp_path, server, cache, monkeypatch, image):
    import dataclasses
    import hashlib
    import zipfile

    from sagepose import hub

    root, base, requests = server
    graph = _graph({"output": _raw_yolox()}, tmp_path / "end2end.onnx")
    with zipfile.ZipFile(root / "det.zip", "w") as z:  # as the public zips: a folder holding end2end.onnx
        z.write(graph, "yolox_test/end2end.onnx")
        z.writestr("yolox_test/deploy.json", "{}")
    digest = hashlib.sha256(graph.read_bytes()).hexdigest()
    entry = hub.DetectorFile(f"{base}/det.zip", (SIZE, SIZE), digest)
    monkeypatch.setitem(hub.DETECTORS, "test-yolox", entry)
    det = Detector("test-yolox", score_thr=0.3)
    assert det.path == str(cache / "detectors" / "test-yolox" / "end2end.onnx") and len(det(image).boxes) == 3
    Detector("test-yolox")
    assert requests == ["/det.zip"]  # cached: one download
    monkeypatch.setitem(hub.DETECTORS, "bad-hash", dataclasses.replace(entry, onnx_sha256="0" * 64))
    with pytest.raises(hub.ChecksumError, match="bad-hash: end2end.onnx of .* has sha256"):
        Detector("bad-hash")
    assert not (cache / "detectors" / "bad-hash").exists() or not any((cache / "detectors" / "bad-hash").iterdir())
    (root / "not.zip").write_bytes(b"plain bytes")
    monkeypatch.setitem(hub.DETECTORS, "not-zip", dataclasses.replace(entry, url=f"{base}/not.zip"))
    with pytest.raises(hub.WeightsDownloadError, match="is not a zip file"):
        Detector("not-zip")
    monkeypatch.setitem(hub.DETECTORS, "offline", dataclasses.replace(entry, url="http://127.0.0.1:9/x.zip"))
    with pytest.raises(hub.WeightsDownloadError, match="Offline\\? Fetch http://127.0.0.1:9/x.zip on a connected"):
        Detector("offline")


def test_every_named_detector_points_at_openmmlab():
    from sagepose import hub

    for entry in hub.DETECTORS.values():
        assert entry.url.startswith("https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/yolox_")
        assert entry.url.endswith(".zip") and entry.input_size in ((416, 416), (640, 640))
        assert entry.onnx_sha256 is None or len(entry.onnx_sha256) == 64
