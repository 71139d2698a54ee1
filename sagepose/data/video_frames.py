"""A video's frames, decoded once and kept as JPEGs: the cache behind an unlabeled video source.

Every n-th frame (and, for the temporal term, the frame after each) is decoded as a stream in ONE pass and
written as a JPEG into a folder keyed by the video's (resolved path, size, mtime, every_n, temporal); a marker
written last says the cache is complete, so a second run reads no frame and training gets a map-style dataset
(random access, shards, resume). Frames that fail to decode are passed over and counted; the numbering of the
rest is the video's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import cv2

from sagepose.errors import DataError
from sagepose.fileio import write_json_atomic

JPEG_QUALITY = 95
CACHE_MARKER = "complete.json"
CACHE_VERSION = 1
MAX_FRAME_MISSES = 25  # consecutive unreadable frames before a stream of unknown length counts as ended


def video_cache_folder(path: str, cache_dir: str, every_n: int, temporal: bool = True) -> Path:
    """The cache folder of a video's frames: named by its (resolved path, size, mtime, every_n, temporal)."""
    st = os.stat(path)
    key = json.dumps([str(Path(path).resolve()), st.st_size, st.st_mtime_ns, every_n, temporal, JPEG_QUALITY,
                      CACHE_VERSION])
    return Path(cache_dir) / f"{Path(path).stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def frame_file(folder: Path, frame: int) -> Path:
    return folder / f"{frame:07d}.jpg"


def read_marker(folder: Path) -> dict | None:
    """The marker of a complete cache (every frame it lists on disk), else None."""
    try:
        with open(folder / CACHE_MARKER, encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("version") != CACHE_VERSION:
        return None
    if not all(frame_file(folder, i).is_file() for i in marker.get("written", [])):
        return None
    return marker


def cached_frames(path: str, cache_dir: str, every_n: int, temporal: bool = True) -> tuple[Path, dict, str]:
    """The cache of a video's frames, built by :func:`build_video_cache` unless a complete one exists.

    -> (its folder, its marker: ``width``, ``height``, ``frames`` (decoded), ``failed``, ``kept`` (frame numbers),
    ``written`` (kept frames and their next ones), and how it was had: ``"cache reused"`` or the build's time).
    """
    folder = video_cache_folder(path, cache_dir, every_n, temporal)
    marker = read_marker(folder)
    if marker is not None:
        return folder, marker, "cache reused"
    t0 = time.perf_counter()
    marker = build_video_cache(path, folder, every_n, temporal)
    return folder, marker, f"cache built in {time.perf_counter() - t0:.1f} s"


def build_video_cache(path: str, folder: Path, every_n: int, temporal: bool) -> dict:
    """Decode ``path`` in one pass; write the kept frames (and each one's next) as JPEGs, then the marker.

    The frames go to a temporary folder renamed onto ``folder`` when complete, so processes building the
    same cache at once (the ranks of a run) never see each other's partial files.
    """
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video (not a video, or a codec OpenCV's FFmpeg lacks)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    written, kept, failed, misses, frame, size = [], [], 0, 0, 0, None
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    try:
        while True:
            if not cap.grab():  # a frame the demuxer or decoder refused, or the end of the stream
                if (reported > 0 and frame >= reported) or misses >= MAX_FRAME_MISSES:
                    break
                misses, frame = misses + 1, frame + 1
                continue
            failed, misses = failed + misses, 0  # a frame after them: those were frames that failed
            keep = frame % every_n == 0
            if keep or (temporal and (frame - 1) % every_n == 0 and frame - 1 in kept[-1:]):
                ok, image = cap.retrieve()
                if ok and image is not None:
                    if size is None:
                        size = image.shape[1::-1]
                    if not cv2.imwrite(str(frame_file(tmp, frame)), image, params):
                        raise OSError(f"{frame_file(tmp, frame)}: cannot write a cached frame of {path}")
                    written.append(frame)
                    if keep:
                        kept.append(frame)
                else:
                    failed += 1
            frame += 1
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cap.release()
    if not kept:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{path}: no frame could be decoded" if frame == 0 or size is None else
                        f"{path}: none of its {frame} frames at every_n={every_n} could be decoded")
    marker = dict(version=CACHE_VERSION, video=str(Path(path).resolve()), every_n=every_n, temporal=temporal,
                  width=int(size[0]), height=int(size[1]), frames=frame - misses, failed=failed, kept=kept,
                  written=written)
    write_json_atomic(tmp / CACHE_MARKER, marker)  # last: the cache is complete
    done = read_marker(folder)
    if done is not None:  # another process finished the same cache meanwhile: keep the one in use
        shutil.rmtree(tmp, ignore_errors=True)
        return done
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete cache (no marker, or a frame gone)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process renamed its complete copy first
        shutil.rmtree(tmp, ignore_errors=True)
        if read_marker(folder) is None:
            raise
    return marker
