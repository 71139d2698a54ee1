"""sagepose.video: the background reader (a broken frame skipped and counted), frames batched through the network,
pose-guided boxes between detections, One-Euro smoothing in closed form, and the per-video json of `infer`."""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from sagepose.cli.main import main as cli
from sagepose.detect import Detections
from sagepose.models import build_model
from sagepose.video import FrameReader, OneEuroFilter, Smoother, pose_boxes, predict_video

FRAMES, W, H = 12, 160, 120


def write_video(path, frames=FRAMES, broken=()):
    """An MJPG AVI of ``frames`` frames (a bright square moving right); the JPEG data of the frames in ``broken``
    zeroed, so the decoder fails on them and reads on."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for i in range(frames):
        f = np.full((H, W, 3), 40, np.uint8)
        cv2.rectangle(f, (20 + 5 * i, 30), (60 + 5 * i, 100), (200, 180, 160), -1)
        writer.write(f)
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == frames
    for k in broken:
        end = starts[k + 1] if k + 1 < frames else len(data)
        data[starts[k]:end - 8] = bytes(end - 8 - starts[k])
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("vit-tiny", heatmap_output="softmax").eval()


def test_the_reader_skips_a_broken_frame_and_reads_the_rest(tmp_path):
    reader = FrameReader(write_video(tmp_path / "v.avi", broken=(4,)), buffer=2)
    got = [i for i, _ in reader]
    assert got == [i for i in range(FRAMES) if i != 4] and reader.skipped == 1 and reader.fps == 10
    clean = FrameReader(write_video(tmp_path / "c.avi"))
    assert len(list(clean)) == FRAMES and clean.skipped == 0
    with pytest.raises(ValueError, match="nothing.avi: cannot open video"):
        FrameReader(tmp_path / "nothing.avi")


def test_batched_frames_predict_as_one_frame_at_a_time(model, tmp_path):
    video = write_video(tmp_path / "v.avi")
    boxes = {str(i): np.array([[10, 10, 100, 110, 0.9], [60, 20, 150, 115, 0.8]], np.float32) for i in range(FRAMES)}
    of = lambda key, frame: boxes[key]  # noqa: E731
    one = predict_video(model, video, boxes_of=of, batch_frames=1)
    many = predict_video(model, video, boxes_of=of, batch_frames=5)  # 12 frames: batches of 5, 5, 2
    assert [f[0] for f in many.frames] == list(range(FRAMES)) and many.frames_per_second > 0
    for (_, _, a), (_, _, b) in zip(one.frames, many.frames):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


class CountingDetector:
    """A detector stand-in: one fixed box, and which frames it was run on (by the frame's square position)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        return Detections(np.array([[10, 10, 120, 115]], np.float32), np.array([0.9], np.float32))


def test_detections_every_kth_frame_and_pose_guided_boxes_between(model, tmp_path, monkeypatch):
    monkeypatch.setattr("sagepose.video.POSE_BOX_MIN_SCORE", 0.0)  # random weights score low: every joint counts
    video = write_video(tmp_path / "v.avi")
    det = CountingDetector()
    run = predict_video(model, video, detector=det, det_every=4)
    assert det.calls == 3  # frames 0, 4, 8
    detected = {0, 4, 8}
    for index, boxes, _ in run.frames:
        if index in detected:
            np.testing.assert_array_equal(boxes[:, :4], [[10, 10, 120, 115]])
        elif len(boxes):  # the box of the previous frame's keypoints, grown 1.25x
            prev = next(p for i, _, p in run.frames if i == index - 1)
            np.testing.assert_allclose(boxes[:, :4], pose_boxes(prev.keypoints, prev.scores, (W, H)), rtol=1e-6)
    with pytest.raises(ValueError, match="give a detector"):
        predict_video(model, video, boxes_of=lambda k, f: np.zeros((0, 5)), det_every=2)


def test_pose_boxes_grow_the_confident_keypoints_box():
    kp = np.array([[[10, 20], [30, 60], [500, 500]]], np.float32)
    sc = np.array([[0.9, 0.8, 0.1]], np.float32)  # the third is not confident
    np.testing.assert_allclose(pose_boxes(kp, sc, (640, 480)), [[7.5, 15, 32.5, 65]])
    assert pose_boxes(kp, np.array([[0.9, 0.1, 0.1]]), (640, 480)).shape == (0, 4)  # one keypoint: no box


def test_one_euro_is_exponential_smoothing_at_beta_zero():
    f = OneEuroFilter(min_cutoff=2.0, beta=0.0)
    dt = 0.1
    a = 1 / (1 + 1 / (2 * math.pi * 2.0) / dt)  # alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi f_c)
    xs = [0.0, 1.0, 1.0, 1.0, 5.0]
    expected, y = [], None
    for x in xs:
        y = x if y is None else a * x + (1 - a) * y
        expected.append(y)
    got = [float(f(np.array([x]), t * dt)[0]) for t, x in enumerate(xs)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_one_euro_follows_fast_motion_and_calms_jitter():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    still = 100 + rng.normal(0, 2.0, t.size)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)  # 1 Hz at 30 frames/s: alpha 0.17, std x sqrt(a / (2 - a)) = 0.31
    smooth = np.array([f(np.array([x]), s)[0] for x, s in zip(still, t)])
    assert smooth[20:].std() < 0.4 * still[20:].std()  # jitter on a still joint: mostly gone
    fast = 100 + 300 * t  # 300 px/s: the cutoff rises with the speed, the lag stays small
    lagging = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    following = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    lag0 = abs(fast[-1] - [lagging(np.array([x]), s) for x, s in zip(fast, t)][-1][0])
    lag1 = abs(fast[-1] - [following(np.array([x]), s) for x, s in zip(fast, t)][-1][0])
    assert lag1 < 0.2 * lag0
    with pytest.raises(ValueError, match="min_cutoff and d_cutoff must be > 0"):
        OneEuroFilter(min_cutoff=0)


def test_the_smoother_keeps_one_filter_per_person():
    s = Smoother(min_cutoff=1.0, beta=0.0)
    a, b = np.array([[0, 0, 10, 10]], np.float32), np.array([[100, 100, 120, 130]], np.float32)
    first = s(np.concatenate([a, b]), np.array([[[5, 5]], [[110, 110]]], np.float32), 0.0)
    np.testing.assert_allclose(first[:, 0], [[5, 5], [110, 110]])
    # the two people listed the other way round: each keeps its own filter (matched by box), no cross-talk
    second = s(np.concatenate([b, a]), np.array([[[112, 112]], [[7, 7]]], np.float32), 0.1)
    assert 110 < second[0, 0, 0] < 112 and 5 < second[1, 0, 0] < 7


def test_infer_on_a_video_writes_its_json_and_counts_the_broken_frame(tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", broken=(5,))
    out = tmp_path / "out"
    assert cli(["infer", "vit-tiny", "--random-weights", str(video), "--out", str(out), "--smooth",
                "--batch-frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert "clip.avi: skipped 1 unreadable frame, processed the rest" in printed
    doc = json.loads((out / "clip.json").read_text())
    assert doc["frames_read"] == FRAMES - 1 and doc["frames_skipped"] == 1 and doc["fps"] == 10
    assert [f["frame"] for f in doc["frames"]] == [i for i in range(FRAMES) if i != 5]
    assert len(doc["frames"][0]["instances"]) == 1 and len(doc["frames"][0]["instances"][0]["keypoints"]) == 51
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == FRAMES - 1 and {r["image_id"] for r in rows} == {f["frame"] for f in doc["frames"]}
    assert (out / "vis" / "clip.mp4").stat().st_size > 0
