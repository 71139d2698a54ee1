"""Named weights: published checkpoints by name, downloaded once into a local cache.

``sagepose.load("vitpose-b-coco")`` builds the zoo model the entry names and loads the file,
fetched on first use into ``$SAGEPOSE_CACHE`` (default ``~/.cache/sagepose``). Downloads are
atomic (a temporary file renamed into place once complete and verified), so an interrupted or
corrupted download never poisons the cache.

Checksums: MMPose's model zoo publishes no full hashes, but its file names end in the first 8
hex digits of the file's sha256 (``publish_model.py`` appends them), so those entries are checked
against that prefix. Sapiens' Hugging Face files carry no published hash; their entries have
none, and the download is only checked to be a readable checkpoint when it is loaded. Put a
full ``sha256`` on an entry to pin it.

Sources (read 2025): MMPose's model-zoo index files
``configs/body_2d_keypoint/topdown_heatmap/coco/{vitpose,hrnet,hrformer}_coco.yml`` (their
``Weights:`` fields; RTMPose's, read 2026: ``configs/body_2d_keypoint/rtmpose/coco/rtmpose_coco.yml`` and
``rtmpose/body8/rtmpose_body8-coco.yml``, whose models are the COCO configs' with another training set), and
Sapiens' ``docs/POSE_README.md``, which points to the ``noahcao/sapiens-pose-coco`` Hugging Face repository
(``sapiens_host/pose/checkpoints/``).
Sapiens2 (read 2026): facebookresearch/sapiens2's ``docs/MODEL_ZOO.md`` names one Hugging Face repository a
file, ``facebook/sapiens2-pose-{size}`` and ``facebook/sapiens2-pretrain-{size}``, and its README the file names
(``sapiens2_{size}_pose.safetensors``, ``sapiens2_{size}_pretrain.safetensors``); no hash is published. The pose
names equal the zoo rows (``sagepose.load("sapiens2-1b")`` fetches the official 308-keypoint model;
``random_weights=True`` builds it without a download); ``-pretrain`` is the backbone, the head left new. The
0.1B and 1B-4K backbones have no named entry: no pose model of theirs is published and the zoo has no pose row of
them (pass them as ``checkpoint=FILE`` to a model they fit, docs/pretrained-weights.md).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sagepose.errors import SagePoseError
from sagepose.fileio import atomic_open


@dataclass(frozen=True)
class Weights:
    """A published checkpoint: the zoo model it fits, its address and what is known of its hash."""

    model: str
    url: str
    sha256: str | None = None  # the full hash, where published
    sha256_prefix: str | None = None  # MMPose: the first 8 hex digits, embedded in the file name
    num_keypoints: int = 17
    reported: str = ""  # the accuracy its authors report

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]


_MMPOSE = "https://download.openmmlab.com/mmpose"
_VITPOSE = f"{_MMPOSE}/v1/body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-"
_SAPIENS = "https://huggingface.co/noahcao/sapiens-pose-coco/resolve/main/sapiens_host/pose/checkpoints"
_HF = "https://huggingface.co"


def _mmpose(model: str, url: str, reported: str) -> Weights:
    prefix = url.rsplit("-", 1)[-1].split("_", 1)[0]  # ...-216eae50_20230314.pth -> 216eae50
    return Weights(model, url, sha256_prefix=prefix, reported=reported)


_RTMPOSE = f"{_MMPOSE}/v1/projects/rtmposev1/rtmpose-"


def _rtmpose(model: str, file: str, reported: str) -> Weights:
    return _mmpose(model, f"{_RTMPOSE}{file}.pth", reported)


def _sapiens(size: str, ap: int) -> Weights:
    return Weights(f"sapiens-{size}", f"{_SAPIENS}/sapiens_{size}/sapiens_{size}_coco_best_coco_AP_{ap}.pth",
                   reported=f"COCO AP {ap / 10:.1f} (Sapiens' detector boxes, AP_H 70)")


def _sapiens2(size: str, task: str) -> Weights:
    """Sapiens2's ``facebook/sapiens2-{task}-{size}`` file (task ``pose`` or ``pretrain``); 308 Goliath points."""
    return Weights(f"sapiens2-{size}", f"{_HF}/facebook/sapiens2-{task}-{size}/resolve/main/sapiens2_{size}_{task}"
                   ".safetensors", num_keypoints=308,
                   reported="308 Goliath keypoints" if task == "pose" else "pretraining backbone: the head starts new")


WEIGHTS: dict[str, Weights] = {
    "vitpose-s-coco": _mmpose("vitpose-s", f"{_VITPOSE}small_8xb64-210e_coco-256x192-62d7a712_20230314.pth",
                              "COCO val AP 73.9"),
    "vitpose-b-coco": _mmpose("vitpose-b", f"{_VITPOSE}base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
                              "COCO val AP 75.7"),
    "vitpose-l-coco": _mmpose("vitpose-l", f"{_VITPOSE}large_8xb64-210e_coco-256x192-53609f55_20230314.pth",
                              "COCO val AP 78.2"),
    "vitpose-h-coco": _mmpose("vitpose-h", f"{_VITPOSE}huge_8xb64-210e_coco-256x192-e32adcd4_20230314.pth",
                              "COCO val AP 78.8"),
    "vitpose-s-simple-coco": _mmpose(
        "vitpose-s-simple", f"{_VITPOSE}small-simple_8xb64-210e_coco-256x192-4c101a76_20230314.pth",
        "COCO val AP 73.6"),
    "vitpose-b-simple-coco": _mmpose(
        "vitpose-b-simple", f"{_VITPOSE}base-simple_8xb64-210e_coco-256x192-0b8234ea_20230407.pth",
        "COCO val AP 75.6"),
    "vitpose-l-simple-coco": _mmpose(
        "vitpose-l-simple", f"{_VITPOSE}large-simple_8xb64-210e_coco-256x192-3a7ee9e1_20230314.pth",
        "COCO val AP 78.1"),
    "vitpose-h-simple-coco": _mmpose(
        "vitpose-h-simple", f"{_VITPOSE}huge-simple_8xb64-210e_coco-256x192-ffd48c05_20230314.pth",
        "COCO val AP 78.9"),
    # MMPose 1.x lists its MMPose 0.x files for these (keypoint_head.* names; converted on load)
    "hrnet-w32-coco": _mmpose("hrnet-w32", f"{_MMPOSE}/top_down/hrnet/hrnet_w32_coco_256x192-c78dce93_20200708.pth",
                              "COCO val AP 74.6"),
    "hrnet-w48-coco": _mmpose("hrnet-w48", f"{_MMPOSE}/top_down/hrnet/hrnet_w48_coco_256x192-b9e0b3ab_20200708.pth",
                              "COCO val AP 75.6"),
    "hrformer-s-coco": _mmpose(
        "hrformer-s", f"{_MMPOSE}/top_down/hrformer/hrformer_small_coco_256x192-5310d898_20220316.pth",
        "COCO val AP 73.8"),
    "hrformer-b-coco": _mmpose(
        "hrformer-b", f"{_MMPOSE}/top_down/hrformer/hrformer_base_coco_256x192-6f5f1169_20220316.pth",
        "COCO val AP 75.4"),
    # RTMPose: trained on COCO, on AI Challenger + COCO, and on Body7 (seven datasets in COCO's 17 keypoints)
    "rtmpose-t-coco": _rtmpose("rtmpose-t", "tiny_simcc-coco_pt-aic-coco_420e-256x192-e613ba3f_20230127",
                               "COCO val AP 68.2"),
    "rtmpose-s-coco": _rtmpose("rtmpose-s", "s_simcc-coco_pt-aic-coco_420e-256x192-8edcf0d7_20230127",
                               "COCO val AP 71.6"),
    "rtmpose-m-coco": _rtmpose("rtmpose-m", "m_simcc-coco_pt-aic-coco_420e-256x192-d8dd5ca4_20230127",
                               "COCO val AP 74.6"),
    "rtmpose-l-coco": _rtmpose("rtmpose-l", "l_simcc-coco_pt-aic-coco_420e-256x192-1352a4d2_20230127",
                               "COCO val AP 75.8"),
    "rtmpose-t-aic-coco": _rtmpose("rtmpose-t", "tiny_simcc-aic-coco_pt-aic-coco_420e-256x192-cfc8f33d_20230126",
                                   "COCO val AP 68.5"),
    "rtmpose-s-aic-coco": _rtmpose("rtmpose-s", "s_simcc-aic-coco_pt-aic-coco_420e-256x192-fcb2599b_20230126",
                                   "COCO val AP 72.2"),
    "rtmpose-m-aic-coco": _rtmpose("rtmpose-m", "m_simcc-aic-coco_pt-aic-coco_420e-256x192-63eb25f7_20230126",
                                   "COCO val AP 75.8"),
    "rtmpose-l-aic-coco": _rtmpose("rtmpose-l", "l_simcc-aic-coco_pt-aic-coco_420e-256x192-f016ffe0_20230126",
                                   "COCO val AP 76.5"),
    "rtmpose-m-384x288-aic-coco": _rtmpose(
        "rtmpose-m-384x288", "m_simcc-aic-coco_pt-aic-coco_420e-384x288-a62a0b32_20230228", "COCO val AP 77.0"),
    "rtmpose-l-384x288-aic-coco": _rtmpose(
        "rtmpose-l-384x288", "l_simcc-aic-coco_pt-aic-coco_420e-384x288-97d6cb0f_20230228", "COCO val AP 77.3"),
    "rtmpose-t-body7": _rtmpose("rtmpose-t", "t_simcc-body7_pt-body7_420e-256x192-026a1439_20230504",
                                "Body8 AP 65.9"),
    "rtmpose-s-body7": _rtmpose("rtmpose-s", "s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504",
                                "Body8 AP 69.7"),
    "rtmpose-m-body7": _rtmpose("rtmpose-m", "m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504",
                                "Body8 AP 74.9"),
    "rtmpose-l-body7": _rtmpose("rtmpose-l", "l_simcc-body7_pt-body7_420e-256x192-4dba18fc_20230504",
                                "Body8 AP 76.7"),
    "rtmpose-m-384x288-body7": _rtmpose(
        "rtmpose-m-384x288", "m_simcc-body7_pt-body7_420e-384x288-65e718c4_20230504", "Body8 AP 76.6"),
    "rtmpose-l-384x288-body7": _rtmpose(
        "rtmpose-l-384x288", "l_simcc-body7_pt-body7_420e-384x288-3f5a1437_20230504", "Body8 AP 78.3"),
    "sapiens-0.3b-coco": _sapiens("0.3b", 796),
    "sapiens-0.6b-coco": _sapiens("0.6b", 812),
    "sapiens-1b-coco": _sapiens("1b", 821),
    "sapiens-2b-coco": _sapiens("2b", 822),
    **{f"sapiens2-{size}": _sapiens2(size, "pose") for size in ("0.4b", "0.8b", "1b", "5b")},
    **{f"sapiens2-{size}-pretrain": _sapiens2(size, "pretrain") for size in ("0.4b", "0.8b", "1b", "5b")},
}


class WeightsDownloadError(SagePoseError, RuntimeError):
    """A named checkpoint could not be fetched (offline, server error) -- nothing was written to the cache."""


class ChecksumError(WeightsDownloadError):
    """A download's sha256 differs from the published one -- the file was discarded."""


def cache_dir() -> Path:
    """Where named weights are kept: ``$SAGEPOSE_CACHE`` or ``~/.cache/sagepose``."""
    return Path(os.environ.get("SAGEPOSE_CACHE") or Path.home() / ".cache" / "sagepose")


def cached_path(name: str) -> Path:
    """The cache file of a named checkpoint (it may not exist yet)."""
    weights = _entry(name)
    return cache_dir() / "weights" / name / weights.filename


def _entry(name: str) -> Weights:
    if name not in WEIGHTS:
        raise KeyError(f"unknown named weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def _check(weights: Weights, digest: str, name: str, url: str) -> None:
    if weights.sha256 and digest != weights.sha256.lower():
        raise ChecksumError(f"{name}: {url} has sha256 {digest}, expected {weights.sha256}; download discarded")
    if weights.sha256_prefix and not digest.startswith(weights.sha256_prefix.lower()):
        raise ChecksumError(f"{name}: {url} has sha256 {digest}, which does not start with the published "
                            f"{weights.sha256_prefix}; download discarded")


def _download(url: str, out, name: str, timeout: float, progress: bool, offline_hint: str) -> str:
    """Stream ``url`` into the open binary file ``out``; its sha256 hex digest. A server error, a broken-off or
    short transfer, or no network is a :class:`WeightsDownloadError` (``offline_hint`` says what to do then)."""
    sha = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "sagepose"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, -1
            while chunk := response.read(1 << 20):
                out.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress and total and (pct := 100 * done // total) // 10 != shown:
                    shown = pct // 10
                    print(f"\r{name}: {done >> 20} / {total >> 20} MiB", end="", file=sys.stderr, flush=True)
            if progress and total:
                print(file=sys.stderr)
            if total and done != total:
                raise WeightsDownloadError(f"{name}: {url} ended after {done} of {total} bytes; try again")
    except urllib.error.HTTPError as e:
        raise WeightsDownloadError(f"{name}: {url} answered HTTP {e.code} {e.reason}") from e
    except http.client.HTTPException as e:  # e.g. IncompleteRead: the server closed mid-file
        raise WeightsDownloadError(f"{name}: the download of {url} broke off ({type(e).__name__}); try again") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise WeightsDownloadError(f"{name}: cannot download {url} ({reason}). Offline? {offline_hint}") from e
    return sha.hexdigest()


def fetch(name: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """The local path of a named checkpoint, downloading it first if it is not cached.

    A cached file is used as is (it was verified when it was downloaded). A download streams into
    a temporary file beside the destination, is hashed on the way, and is renamed into place only
    when complete and matching the published hash; anything else raises and leaves no file.
    """
    weights = _entry(name)
    dest = cached_path(name)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = (f"Fetch the file on a connected machine and put it at {dest}, or pass it directly: "
            f"sagepose.load({weights.model!r}, checkpoint=PATH)")
    with atomic_open(dest) as out:
        digest = _download(weights.url, out, name, timeout, progress, hint)
        _check(weights, digest, name, weights.url)  # raising here discards the temporary file
    return dest


# ---- person detectors ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorFile:
    """A published ONNX person detector: a zip holding MMDeploy's end-to-end graph (``member``), as rtmlib runs it."""

    url: str
    input_size: tuple[int, int]  # (w, h) of the graph's input
    onnx_sha256: str | None = None  # of the extracted graph, where recorded
    member: str = "end2end.onnx"
    reported: str = ""


_RTMPOSE_SDK = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk"
# rtmlib's YOLOX files, trained on HumanArt (RTMPose's project page). The graphs' sha256 as a public project
# records them after extraction (yolox-tiny, yolox-m); the others are checked to be readable when loaded.
DETECTORS: dict[str, DetectorFile] = {
    "yolox-tiny-humanart": DetectorFile(f"{_RTMPOSE_SDK}/yolox_tiny_8xb8-300e_humanart-6f3252f9.zip", (416, 416),
                                        "ceb11c07298f95c50d7c5abeb906d03340c85f23aa79e3e66966e7fb6c307250"),
    "yolox-s-humanart": DetectorFile(f"{_RTMPOSE_SDK}/yolox_s_8xb8-300e_humanart-3ef259a7.zip", (640, 640)),
    "yolox-m-humanart": DetectorFile(f"{_RTMPOSE_SDK}/yolox_m_8xb8-300e_humanart-c2c7a14a.zip", (640, 640),
                                     "3dea6513388889f0fff4b77bf7a26013600321b9eb9ceb0e9a400a82572f5f23"),
    "yolox-l-humanart": DetectorFile(f"{_RTMPOSE_SDK}/yolox_l_8xb8-300e_humanart-ce1d7a62.zip", (640, 640)),
    "yolox-x-humanart": DetectorFile(f"{_RTMPOSE_SDK}/yolox_x_8xb8-300e_humanart-a39d44ed.zip", (640, 640)),
}


def fetch_detector(name: str, timeout: float = 60.0, progress: bool = True) -> Path:
    """The local ``end2end.onnx`` of a named detector (:data:`DETECTORS`), downloading and extracting its zip into
    the cache first if needed; atomic as :func:`fetch` (a mismatching graph hash leaves nothing)."""
    import tempfile
    import zipfile

    if name not in DETECTORS:
        raise KeyError(f"unknown named detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    entry = DETECTORS[name]
    dest = cache_dir() / "detectors" / name / entry.member
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = (f"Fetch {entry.url} on a connected machine, unzip it and pass its {entry.member}: "
            "sagepose infer ... --detector PATH")
    with tempfile.TemporaryFile(dir=dest.parent) as archive:
        _download(entry.url, archive, name, timeout, progress, hint)
        archive.seek(0)
        try:
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == entry.member]
                if not members:
                    raise WeightsDownloadError(f"{name}: {entry.url} holds no {entry.member} "
                                               f"(it has {', '.join(z.namelist()[:5])})")
                with z.open(members[0]) as src, atomic_open(dest) as out:
                    sha = hashlib.sha256()
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                        sha.update(chunk)
                    if entry.onnx_sha256 and sha.hexdigest() != entry.onnx_sha256:
                        raise ChecksumError(f"{name}: {entry.member} of {entry.url} has sha256 {sha.hexdigest()}, "
                                            f"expected {entry.onnx_sha256}; discarded")
        except zipfile.BadZipFile:
            raise WeightsDownloadError(f"{name}: {entry.url} is not a zip file; try again") from None
    return dest
