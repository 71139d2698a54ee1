"""Unlabeled sources: folders, videos (frame numbers decoded from the pixels), detections, COCO boxes; the crops."""
import json
import re
import struct

import cv2
import numpy as np
import pytest

from sagepose import geometry
from sagepose.config import ConfigError
from sagepose.data import collate, video_frames
from sagepose.data.coco import Record
from sagepose.data.transforms import CropAugment
from sagepose.data.unlabeled import UnlabeledDataset
from sagepose.data.unlabeled_sources import UnlabeledRecord, load_unlabeled
from sagepose.errors import DataError
from sagepose.image import ImageReadError, image_size, read_image
from sagepose.keypoints import COCO17
from sagepose.train.sampling import ResumableLoader, ShardSampler

BAR = 3  # px: frame i of a test video is black with a white bar over columns [BAR * i, BAR * (i + 1))


def _bar_frame(i: int, w: int = 96, h: int = 48) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, BAR * i: BAR * (i + 1)] = 255
    return frame


def _bar_index(image: np.ndarray) -> int:
    """The frame number a bar frame carries (robust to JPEG ringing)."""
    bright = np.flatnonzero(image.mean(axis=(0, 2)) > 128)
    assert bright.size and bright.max() - bright.min() < 2 * BAR, "not a bar frame"
    return int(round(bright.mean() - (BAR - 1) / 2)) // BAR


def _write_video(path, n: int = 21, corrupt: int | None = None):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_bar_frame(i))
    writer.release()
    if corrupt is not None:  # wipe the start of that frame's JPEG (MJPG: one JPEG per frame, in order)
        data = bytearray(path.read_bytes())
        starts = [k for k in range(len(data) - 1) if data[k] == 0xFF and data[k + 1] == 0xD8]
        assert len(starts) == n
        data[starts[corrupt]: starts[corrupt] + 200] = b"\x11" * 200
        path.write_bytes(bytes(data))
    return path


@pytest.fixture
def video(tmp_path):
    return _write_video(tmp_path / "clip.avi")


def _counting_capture(monkeypatch):
    opened = []
    real = cv2.VideoCapture

    def capture(path):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(video_frames.cv2, "VideoCapture", capture)
    return opened


def test_video_keeps_every_nth_frame_and_caches_the_next(video, tmp_path):
    recs = load_unlabeled({"path": str(video), "every_n": 5}, cache_dir=str(tmp_path / "cache"), verbose=False)
    assert [r.frame for r in recs] == [0, 5, 10, 15, 20]
    for r in recs:
        assert _bar_index(read_image(r.image_path)) == r.frame
        assert (r.width, r.height) == (96, 48) and r.bbox_xywh.tolist() == [0, 0, 96, 48]
        assert r.source == str(video) and r.image_id == r.frame
    for r in recs[:-1]:
        assert _bar_index(read_image(r.next_path)) == r.frame + 1
    assert recs[-1].next_path is None  # frame 20 is the video's last


def test_video_every_frame_shares_files_and_temporal_off_writes_no_next(video, tmp_path):
    recs = load_unlabeled(str(video), cache_dir=str(tmp_path / "c"), every_n=1, verbose=False)
    assert [r.frame for r in recs] == list(range(21))
    assert all(a.next_path == b.image_path for a, b in zip(recs, recs[1:]))
    plain = load_unlabeled({"path": str(video), "every_n": 7}, cache_dir=str(tmp_path / "c"), temporal=False,
                             verbose=False)
    assert [r.frame for r in plain] == [0, 7, 14] and all(r.next_path is None for r in plain)
    folder = video_frames.video_cache_folder(str(video), str(tmp_path / "c"), 7, temporal=False)
    assert sorted(p.name for p in folder.glob("*.jpg")) == ["0000000.jpg", "0000007.jpg", "0000014.jpg"]


def test_video_cache_is_reused_without_decoding(video, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = load_unlabeled(str(video), cache_dir=cache, every_n=5, verbose=False)
    mtimes = {r.image_path: (tmp_path / r.image_path).stat().st_mtime_ns for r in first}
    opened = _counting_capture(monkeypatch)
    second = load_unlabeled(str(video), cache_dir=cache, every_n=5, verbose=False)
    assert opened == []
    assert [(r.image_path, r.next_path) for r in second] == [(r.image_path, r.next_path) for r in first]
    assert {r.image_path: (tmp_path / r.image_path).stat().st_mtime_ns for r in second} == mtimes
    load_unlabeled(str(video), cache_dir=cache, every_n=4, verbose=False)  # another every_n: another cache
    assert len(opened) == 1


@pytest.mark.parametrize("damage", ["marker", "frame"])
def test_incomplete_video_cache_is_rebuilt(video, tmp_path, monkeypatch, damage):
    cache = str(tmp_path / "cache")
    recs = load_unlabeled(str(video), cache_dir=cache, every_n=5, verbose=False)
    folder = video_frames.video_cache_folder(str(video), cache, 5)
    (folder / video_frames.CACHE_MARKER if damage == "marker" else tmp_path / recs[2].next_path).unlink()
    opened = _counting_capture(monkeypatch)
    again = load_unlabeled(str(video), cache_dir=cache, every_n=5, verbose=False)
    assert len(opened) == 1
    assert (folder / video_frames.CACHE_MARKER).is_file()
    assert [_bar_index(read_image(r.next_path)) for r in again[:-1]] == [1, 6, 11, 16]
    assert not list(tmp_path.glob("cache/.*.tmp"))  # the build folder was renamed into place


def test_undecodable_frame_is_skipped_and_counted(tmp_path):
    video = _write_video(tmp_path / "bad.avi", corrupt=10)
    with pytest.warns(UserWarning, match="1 frames that failed to decode"):
        recs = load_unlabeled(str(video), cache_dir=str(tmp_path / "c"), every_n=5)
    assert [r.frame for r in recs] == [0, 5, 15, 20]
    assert [_bar_index(read_image(r.image_path)) for r in recs] == [0, 5, 15, 20]  # numbering kept past the gap
    assert _bar_index(read_image(recs[2].next_path)) == 16


def test_video_that_cannot_be_opened_is_a_one_line_error(tmp_path):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DataError, match="junk.mp4: cannot open video") as e:
        load_unlabeled(str(bad), cache_dir=str(tmp_path / "c"))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="gone.mp4: unlabeled source not found"):
        load_unlabeled(str(tmp_path / "gone.mp4"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="needs a cache folder"):
        load_unlabeled(str(_write_video(tmp_path / "ok.avi", n=2)))


def _save(path, w, h, seed=0, ext_params=()):
    img = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, list(ext_params))
    return img


def test_image_size_from_headers_matches_decoding(tmp_path):
    for ext in (".jpg", ".png", ".bmp", ".webp", ".tif"):
        _save(tmp_path / f"a{ext}", 37, 23)
        assert image_size(str(tmp_path / f"a{ext}")) == (37, 23), ext
    _save(tmp_path / "lossless.webp", 41, 19, ext_params=(cv2.IMWRITE_WEBP_QUALITY, 101))
    assert image_size(str(tmp_path / "lossless.webp")) == (41, 19)
    # a JPEG whose EXIF says "rotate 90": OpenCV decodes it transposed, and the size must say so
    ok, buf = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    app1 = b"Exif\x00\x00" + tiff + b"\x00" * 4
    data = buf.tobytes()
    (tmp_path / "rot.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    h, w = read_image(str(tmp_path / "rot.jpg")).shape[:2]
    assert image_size(str(tmp_path / "rot.jpg")) == (w, h) == (30, 50)
    (tmp_path / "junk.png").write_bytes(b"nothing")
    with pytest.raises(ImageReadError, match="junk.png"):
        image_size(str(tmp_path / "junk.png"))


def test_image_folder_recursive_sorted_and_a_corrupt_image_substituted_at_sample_time(tmp_path):
    folder = tmp_path / "frames"
    _save(folder / "a.png", 40, 30)
    _save(folder / "sub" / "b.JPG", 50, 20)
    _save(folder / "c.bmp", 24, 36)
    (folder / "notes.txt").write_text("not an image")
    _save(folder / "trunc.jpg", 32, 32)
    (folder / "trunc.jpg").write_bytes((folder / "trunc.jpg").read_bytes()[:400])  # header intact, data cut
    (folder / "zz.png").write_bytes(b"garbage")  # no header: skipped when loading
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image \(zz.png\)"):
        recs = load_unlabeled(str(folder))
    names = [r.image_path[len(str(folder)) + 1:] for r in recs]
    assert names == ["a.png", "c.bmp", "sub/b.JPG", "trunc.jpg"]
    assert [(r.width, r.height) for r in recs] == [(40, 30), (24, 36), (50, 20), (32, 32)]
    assert recs[2].bbox_xywh.tolist() == [0, 0, 50, 20] and all(r.next_path is None for r in recs)
    ds = UnlabeledDataset(recs, (16, 16), udp=False, seed=3)
    good = [ds[i]["img"] for i in range(3)]
    assert ds.bad_images == 0
    with pytest.warns(UserWarning, match="trunc.jpg: cannot decode"):
        item = ds[3]
    assert ds.bad_images == 1 and item["index"] == 3 and item["has_next"] == 0
    assert any(np.array_equal(item["img"], g) for g in good)
    with pytest.warns(UserWarning):
        assert np.array_equal(UnlabeledDataset(recs, (16, 16), udp=False, seed=3)[3]["img"], item["img"])


def test_all_images_unreadable_is_an_error_naming_the_files(tmp_path):
    _save(tmp_path / "x.jpg", 20, 20)
    (tmp_path / "x.jpg").write_bytes((tmp_path / "x.jpg").read_bytes()[:300])
    ds = UnlabeledDataset(load_unlabeled(str(tmp_path), verbose=False), (8, 8), udp=True)
    with pytest.warns(UserWarning), pytest.raises(ImageReadError, match="10 unreadable images in a row.*x.jpg"):
        ds[0]


def test_empty_sources_are_errors_naming_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        load_unlabeled(str(tmp_path / "empty"))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.1}]))
    _save(tmp_path / "root" / "000000000001.jpg", 10, 10)
    with pytest.raises(DataError, match=r"dets.json: no usable unlabeled instance \(1 below the score threshold"):
        load_unlabeled(str(dets), root=str(tmp_path / "root"), score_thr=0.5)
    with pytest.raises(ConfigError, match="012d"):
        load_unlabeled(str(dets))
    with pytest.raises(ConfigError, match="did you mean 'every_n'"):
        load_unlabeled({"path": str(dets), "every_nth": 3})
    with pytest.raises(ConfigError, match="every_n must be an integer >= 1"):
        load_unlabeled({"path": str(dets), "every_n": 0})


def test_detections_with_an_images_list_threshold_and_missing_images(tmp_path):
    _save(tmp_path / "imgs" / "p.jpg", 60, 40)
    _save(tmp_path / "imgs" / "q.jpg", 60, 40)
    images = {"images": [{"id": 7, "file_name": "p.jpg", "width": 60, "height": 40},
                         {"id": 8, "file_name": "q.jpg", "width": 60, "height": 40},
                         {"id": 9, "file_name": "lost.jpg", "width": 60, "height": 40}]}
    (tmp_path / "info.json").write_text(json.dumps(images))  # an image-info file: no 'annotations'
    dets = [{"image_id": 7, "bbox": [5, 6, 20, 30], "score": 0.9, "category_id": 1},
            {"image_id": 7, "bbox": [1, 1, 3, 3], "score": 0.2},
            {"image_id": 8, "bbox": [10, 0, 15, 15], "score": 0.5},
            {"image_id": 8, "bbox": [100, 100, 5, 5], "score": 0.8},  # wholly outside the 60x40 image
            {"image_id": 9, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 9, "bbox": [2, 0, 10, 10], "score": 0.9}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    src = {"path": str(tmp_path / "dets.json"), "images": str(tmp_path / "info.json"),
           "root": str(tmp_path / "imgs"), "score_thr": 0.4}
    with pytest.warns(UserWarning) as w:
        recs = load_unlabeled(src)
    assert len(w) == 1
    msg = str(w[0].message)
    assert "2 image file missing (lost.jpg)" in msg and "1 below the score threshold" in msg
    assert f"1 {geometry.BOX_OUTSIDE}" in msg
    assert [(r.image_id, r.bbox_xywh.tolist(), r.score) for r in recs] == [(7, [5, 6, 20, 30], 0.9),
                                                                        (8, [10, 0, 15, 15], 0.5)]
    assert recs[0].image_path == str(tmp_path / "imgs" / "p.jpg") and (recs[0].width, recs[0].height) == (60, 40)


def test_detections_found_as_012d_files_in_the_root(tmp_path):
    root = tmp_path / "val2017"
    _save(root / "000000000042.jpg", 33, 21)
    dets = [{"image_id": 42, "bbox": [1, 2, 10, 12], "score": 0.95}]
    dets += [{"image_id": 100 + k, "bbox": [0, 0, 5, 5], "score": 0.9} for k in range(7)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    with pytest.warns(UserWarning, match=r"7 image file missing \(000000000100.jpg, 000000000101.jpg, "
                                         r"000000000102.jpg, 000000000103.jpg, 000000000104.jpg, \.\.\.\)"):
        recs = load_unlabeled(str(tmp_path / "dets.json"), root=str(root))
    assert len(recs) == 1 and recs[0].image_path == str(root / "000000000042.jpg")
    assert (recs[0].width, recs[0].height) == (33, 21) and recs[0].score == pytest.approx(0.95)


def test_detections_file_carrying_its_images(tmp_path):
    _save(tmp_path / "f.png", 50, 50)
    data = {"images": [{"id": 1, "file_name": "f.png", "width": 50, "height": 50}],
            "detections": [{"image_id": 1, "bbox": [3, 4, 20, 20], "score": 0.7},
                           {"image_id": 1, "bbox": [3, 4, 20, 20], "score": 0.7, "category_id": 2}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    recs = load_unlabeled({"path": str(tmp_path / "d.json"), "category_id": 1}, verbose=False)
    assert [r.bbox_xywh.tolist() for r in recs] == [[3, 4, 20, 20]]
    assert recs[0].image_path == str(tmp_path / "f.png")  # the json's folder is the default root


def test_coco_json_boxes_only_crowd_and_bad_boxes_skipped(tmp_path):
    _save(tmp_path / "im" / "a.jpg", 80, 60)
    coco = {"images": [{"id": 3, "file_name": "a.jpg", "width": 80, "height": 60}],
            "annotations": [{"id": 1, "image_id": 3, "bbox": [10, 10, 30, 40], "keypoints": [1, 2, 2] * 17},
                            {"id": 2, "image_id": 3, "bbox": [0, 0, 80, 60], "iscrowd": 1},
                            {"id": 3, "image_id": 3, "bbox": [5, 5, 0, 10]},
                            {"id": 4, "image_id": 3, "bbox": [float("nan"), 5, 10, 10]},
                            {"id": 5, "image_id": 3, "bbox": [50, 20, 10, 10]}],
            "categories": [{"id": 1, "name": "mouse"}]}
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    skips = re.escape(f"1 crowd, 1 {geometry.BOX_EMPTY}, 1 {geometry.BOX_NONFINITE}")
    with pytest.warns(UserWarning, match="unlabeled coco .*" + skips):
        recs = load_unlabeled(str(tmp_path / "boxes.json"), root=str(tmp_path / "im"))
    assert [r.bbox_xywh.tolist() for r in recs] == [[10, 10, 30, 40], [50, 20, 10, 10]]
    assert all(r.image_id == 3 and r.score == 1.0 for r in recs)


@pytest.mark.parametrize("udp", [False, True])
def test_crop_equals_the_supervised_val_crop(tmp_path, udp):
    img = _save(tmp_path / "x.png", 120, 90, seed=5)
    box = np.array([17.5, 12.25, 60.0, 41.0], np.float32)
    rec = UnlabeledRecord(str(tmp_path / "x.png"), 1, box, 120, 90)
    item = UnlabeledDataset([rec], (48, 64), udp=udp)[0]
    labeled = Record(image_path="-", image_id=1, ann_id=1, bbox_xywh=box, keypoints=np.zeros((17, 2), np.float32),
                     visible=np.zeros(17, np.float32), flags=np.zeros(17, np.float32), area=1.0, width=120,
                     height=90)
    ref = CropAugment(COCO17, input_size=(48, 64), udp=udp)(img, labeled, np.random.default_rng(0), train=False)
    assert item["img"].shape == (64, 48, 3) and np.array_equal(item["img"], ref.crop)
    assert np.array_equal(item["center"], ref.center) and np.array_equal(item["scale"], ref.scale)
    assert np.array_equal(item["img_next"], item["img"]) and item["img_next"] is not item["img"]


def test_dataset_batches_through_the_resumable_loader(video, tmp_path):
    recs = load_unlabeled(str(video), cache_dir=str(tmp_path / "c"), every_n=5, verbose=False)
    ds = UnlabeledDataset(recs, (32, 16), udp=False, padding=1.0)
    loader = ResumableLoader(ds, ShardSampler(len(ds), seed=1), batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [b["img"].shape for b in batches] == [(2, 16, 32, 3)] * 2 + [(1, 16, 32, 3)]
    seen = {int(i): float(h) for b in batches for i, h in zip(b["index"], b["has_next"])}
    assert seen == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0}
    item = ds[1]  # frame 5 and frame 6, the whole frame squeezed into 32x16 (padding 1, same aspect)
    assert _bar_index(cv2.resize(item["img"], (96, 48))) == 5
    assert _bar_index(cv2.resize(item["img_next"], (96, 48))) == 6
