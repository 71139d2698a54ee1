"""Public labeled animal-pose datasets for the semi-supervised benchmark: where each comes from, and
``prepare(name)`` -> a COCO keypoint json (the form :func:`sagepose.data.dlc.csv_to_coco` writes) + its video,
and ``unlabeled_source`` -> its unlabeled source for ``ssl.unlabeled`` (the same kind of box as the labels).

    from benchmarks.ssl_datasets import DATASETS, prepare
    info = prepare("sleap-flies")   # {"labels_json", "image_root", "video", "frames", "keypoints", ...}
    unlabeled = unlabeled_source("sleap-flies", info, out_dir)  # the ssl.unlabeled path: crops like the labels'

Each dataset is a folder ``root`` laid out as ``git clone <source>`` leaves ``<path>`` (the spec's ``layout``
says which files are read). Default roots: ``$SAGEPOSE_SSL_DATA/<name>`` (``<clone>/../data/ssl/<name>`` when unset);
mirror-mouse defaults to the shared copy beside the repo. Formats: DeepLabCut / lightning-pose labeled-data CSVs
(read by the project's importer) and SLEAP ``.slp`` labels (HDF5 + a video; read here with h5py, the labeled
frames cut from the video into ``out_dir/images``). Only user (human) instances count as labels; SLEAP's
predicted instances are ignored.

    python benchmarks/ssl_datasets.py [NAME ...]   # prepare and print one line per dataset
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA_ENV = "SAGEPOSE_SSL_DATA"
DEFAULT_DATA = REPO.parent / "data" / "ssl"  # beside the clone (/work/data/ssl here)
BOX_PAD = 1.25  # boxes around the labeled joints: their extent x this (csv_to_coco's default box_pad)
UNLABELED_MARKER = "unlabeled.complete.json"  # written last by unlabeled_source: its build is complete
UNLABELED_VERSION = 1
SLEAP_UNLABELED_EVERY = 3  # sleap-flies' unlabeled frames: every 3rd frame of the clip, the labeled ones left out
SLEAP_USER, SLEAP_PREDICTED = 0, 1  # instance_type of a user and of a predicted instance
SLEAP_BODY_EDGE, SLEAP_SYMMETRY_EDGE = 1, 2  # EdgeType values

# mirror-mouse's body in each mirror view (its CSV has no skeleton): nose and tail base on the body axis, the front
# paws hang from the nose end, the hind paws from the tail base; the obstacle points stay unconnected.
MOUSE_SKELETON = tuple((f"{a}_{v}", f"{b}_{v}") for v in ("top", "bot") for a, b in (
    ("nose", "tailBase"), ("tailBase", "tailMid"), ("nose", "paw2LF"), ("nose", "paw3RF"), ("tailBase", "paw1LH"),
    ("tailBase", "paw4RH")))


# Horse-10's 22 points: head, spine, and each leg from the body down; near / off name the side that faces the camera
# in this clip (the horse walks one way), so a mirrored crop keeps them (no flip pairs)
HORSE_SKELETON = (
    ("Nose", "Eye"), ("Eye", "Shoulder"), ("Shoulder", "Wither"), ("Wither", "Hip"), ("Hip", "Ischium"),
    ("Shoulder", "Midshoulder"), ("Midshoulder", "Elbow"), ("Elbow", "Girth"), ("Girth", "Wither"),
    ("Elbow", "Nearknee"), ("Nearknee", "Nearfrontfetlock"), ("Nearfrontfetlock", "Nearfrontfoot"),
    ("Elbow", "Offknee"), ("Offknee", "Offfrontfetlock"), ("Offfrontfetlock", "Offfrontfoot"),
    ("Hip", "Stifle"), ("Stifle", "Nearhindhock"), ("Nearhindhock", "Nearhindfetlock"),
    ("Nearhindfetlock", "Nearhindfoot"), ("Stifle", "Offhindhock"), ("Offhindhock", "Offhindfetlock"),
    ("Offhindfetlock", "Offhindfoot"), ("Ischium", "Stifle"))


@dataclass(frozen=True)
class DatasetSpec:
    """One public dataset: its source (repository, path in it, commit fetched), what ``root`` holds, and how to
    read it. ``skeleton``: name pairs (None: the file's own, SLEAP); ``flip_pairs``: None infers them from
    left/right names (SLEAP: the file's symmetry edges first); ``stride``: keep every stride-th labeled frame
    (a fully labeled clip is thinned so that most of its video stays unlabeled); ``boxes``: where the unlabeled
    frames' boxes come from when the labels cover too few frames (a SLEAP model's predictions, standing in for a
    detector: their keypoints are never read)."""
    name: str
    kind: str  # "dlc" (labeled-data CSVs) or "sleap" (.slp labels + video)
    source: str
    path: str
    commit: str
    description: str
    license: str
    layout: str
    labels: str  # a CSV, a DLC project folder (""= root) or a .slp file, relative to root
    video: str | None  # relative to root; None: the source ships no video of the scene
    skeleton: tuple[tuple[str, str], ...] | None = None
    flip_pairs: tuple[tuple[str, str], ...] | None = None
    stride: int = 1
    boxes: str | None = None  # a SLEAP .slp of predictions whose instances box the unlabeled frames
    default_root: Path | None = None


DATASETS = {spec.name: spec for spec in (
    DatasetSpec(
        name="mirror-mouse", kind="dlc", source="https://github.com/paninski-lab/lightning-pose",
        path="data/mirror-mouse-example", commit="not recorded (the shared copy in shared/realdata/mirror-mouse)",
        description="head-fixed mouse on a treadmill, side view + mirror (bottom) view, 17 keypoints",
        license="MIT (lightning-pose)", layout="CollectedData.csv, labeled-data/*.png, videos/test_vid.mp4",
        labels="CollectedData.csv", video="videos/test_vid.mp4", skeleton=MOUSE_SKELETON,
        default_root=REPO.parent / "shared" / "realdata" / "mirror-mouse"),
    DatasetSpec(
        name="sleap-flies", kind="sleap", source="https://github.com/talmolab/sleap", path="tests/data/tracks",
        commit="7785f660eff1ae2ee4deaef5d5dc0e7758dbbd16",
        description="two freely moving fruit flies (courtship arena, top view, 1024x1024 gray), 13 keypoints; "
                    "all 1500 frames of the clip carry user instances, every 15th is kept",
        license="Clear BSD (SLEAP repository)", layout="clip.slp, clip.mp4",
        labels="clip.slp", video="clip.mp4", stride=15),
    DatasetSpec(
        name="sleap-pair", kind="sleap", source="https://github.com/talmolab/sleap-app",
        path="tests/fixtures/centered_pair.slp", commit="c6dac07ddaa4737b56e57331bc1313a6e2a08dd2",
        description="two interacting fruit flies (SLEAP's centered_pair clip: 384x384 gray, 1100 frames at 15 fps), "
                    "24 keypoints; 70 frames carry user instances; the unlabeled frames' fly boxes come from "
                    "SLEAP's predictions for the clip",
        license="BSD-3-Clause (sleap-app), Clear BSD (SLEAP repository)",
        layout="centered_pair.slp (talmolab/sleap-app tests/fixtures), centered_pair_low_quality.mp4 (talmolab/sleap "
               "tests/data/json_format_v1, commit 7785f660eff1ae2ee4deaef5d5dc0e7758dbbd16), "
               "centered_pair_predictions.slp (talmolab/sleap tests/data/hdf5_format_v1)",
        labels="centered_pair.slp", video="centered_pair_low_quality.mp4", boxes="centered_pair_predictions.slp"),
    DatasetSpec(
        name="horse10-brown", kind="dlc_h5", source="https://github.com/AdaptiveMotorControlLab/AmadeusGPT",
        path="examples/Horse", commit="ddd5f7aee6dccf3462909c923a62064487ee69eb",
        description="Horse-10's BrownHorseinShadow (Mathis et al., WACV 2021): one horse walking past the camera, "
                    "288x162 colour, 308 frames at 24 fps, 22 keypoints labeled by an expert on every frame the "
                    "horse is in (289)",
        license="Apache-2.0 (AmadeusGPT repository); Horse-10: cite Mathis et al., WACV 2021",
        layout="BrownHorseinShadow_gt.h5 (DeepLabCut's labels table, row k = frame k of the video), "
               "BrownHorseinShadow.mp4",
        labels="BrownHorseinShadow_gt.h5", video="BrownHorseinShadow.mp4", skeleton=HORSE_SKELETON,
        flip_pairs=()),
    DatasetSpec(
        name="dlc-reaching", kind="dlc", source="https://github.com/DeepLabCut/DeepLabCut",
        path="examples/Reaching-Mackenzie-2018-08-30", commit="2df0f46c8c8c56c8238b46b3d58384163bafb2f0",
        description="mouse reaching for a joystick (Mathis et al. 2017), 5 keypoints; frames of two crop sizes; "
                    "no video (the repository's videos/*.avi are not retrievable)",
        license="LGPL-3.0 (DeepLabCut repository); cite Mathis et al., Neuron 2017",
        layout="config.yaml, labeled-data/reachingvideo1/{CollectedData_Mackenzie.csv,img*.png}",
        labels="", video=None, skeleton=(("Hand", "Finger1"), ("Joystick1", "Joystick2"))),
    DatasetSpec(
        name="dlc-montblanc", kind="dlc", source="https://github.com/DeepLabCut/DeepLabCut_maDLC_DemoData",
        path="MontBlanc-Daniel-2019-12-16", commit="0af97bb471bb66e3ba8bb855588e3103d90e9459",
        description="multi-animal: up to 8 birds in flight (iPhone video at Mont Blanc, 1920x1080), 4 keypoints; "
                    "no video (videos/montblanc.mov is not retrievable)",
        license="LGPL-3.0 (repository); the video frames CC-BY-NC-ND, Alexander Mathis",
        layout="config.yaml, labeled-data/montblanc/{CollectedData_Daniel.csv,img*.png}",
        labels="", video=None, skeleton=(("head", "tail"), ("leftwing", "rightwing"), ("head", "leftwing"),
                                         ("head", "rightwing"), ("leftwing", "tail"), ("rightwing", "tail"))),
)}


def data_root() -> Path:
    """The folder holding the datasets' folders: ``$SAGEPOSE_SSL_DATA``, else ``data/ssl`` beside the clone."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


def prepare(name: str, root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> dict:
    """Build dataset ``name``'s COCO keypoint json from its folder ``root`` into ``out_dir/labels.json`` (both
    default to ``data_root()/name``; mirror-mouse's root to the shared copy) -> ``{"labels_json", "image_root",
    "video" (path or None), "frames" (labeled images), "keypoints", "instances", "video_frames", "fps"}``."""
    from sagepose.data.dlc import write_coco

    spec = DATASETS.get(name)
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    root = Path(root) if root is not None else (spec.default_root or data_root() / name)
    out_dir = Path(out_dir) if out_dir is not None else data_root() / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; {name} is {spec.source} {spec.path} ({spec.layout})")
    video = root / spec.video if spec.video else None
    if video is not None and not video.is_file():
        raise FileNotFoundError(f"{video}: not found ({name}'s layout: {spec.layout})")
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "dlc":
        coco = dlc_coco(spec, root)
    elif spec.kind == "dlc_h5":
        project = dlc_h5_project(root / spec.labels, video, out_dir / "project")
        coco = dlc_coco(dataclasses.replace(spec, labels=""), project)
    elif spec.kind == "sleap":
        coco = slp_to_coco(root / spec.labels, video, out_dir / "images", stride=spec.stride,
                           skeleton=spec.skeleton, flip_pairs=spec.flip_pairs, name=name)
    else:
        raise ValueError(f"{name}: unknown kind {spec.kind!r}")
    labels_json = write_coco(coco, out_dir / "labels.json")
    frames, fps = video_info(video) if video is not None else (0, 0.0)
    boxes = root / spec.boxes if spec.boxes else None
    if boxes is not None and not boxes.is_file():
        raise FileNotFoundError(f"{boxes}: not found ({name}'s layout: {spec.layout})")
    return {"labels_json": str(labels_json), "image_root": str(out_dir), "video": str(video) if video else None,
            "boxes": str(boxes) if boxes else None,
            "frames": len(coco["images"]), "keypoints": len(coco["categories"][0]["keypoints"]),
            "instances": len(coco["annotations"]), "video_frames": frames, "fps": fps}


def dlc_coco(spec: DatasetSpec, root: Path) -> dict:
    """A DLC project folder or lightning-pose CSV under ``root`` -> COCO dict, by the project's importer."""
    from sagepose.data.dlc import dlc_to_coco

    source = root / spec.labels if spec.labels else root
    return dlc_to_coco([source], name=spec.name, skeleton=spec.skeleton, flip_pairs=spec.flip_pairs)


def dlc_h5_project(h5_path: Path, video_path: Path, project: Path) -> Path:
    """DeepLabCut's labels table as HDF5 (``CollectedData_<scorer>.h5``, rows = the video's frames in order) ->
    a DLC project folder ``project`` the importer reads: ``labeled-data/<video>/CollectedData_<scorer>.csv``
    (the same table as DeepLabCut writes it) and each row's image, cut from the video. Reading the HDF5 needs pandas
    and PyTables (the dev extras)."""
    import cv2
    import pandas as pd

    table = pd.read_hdf(h5_path)
    scorer = str(table.columns.get_level_values(0)[0])
    names = [str(i) for i in table.index]
    folders = {Path(n).parent for n in names}
    if len(folders) != 1:
        raise ValueError(f"{h5_path}: images in {len(folders)} folders; one video per table")
    folder = project / next(iter(folders))
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video_path))
    try:
        for k, name in enumerate(names):  # in order: seeking an mp4 may land on a neighbouring frame
            ok, img = cap.read()
            if not ok:
                raise ValueError(f"{video_path}: {k} frames; {h5_path} has {len(names)} rows (row k = frame k)")
            if not cv2.imwrite(str(project / name), img):
                raise OSError(f"{project / name}: cannot write")
    finally:
        cap.release()
    table.to_csv(folder / f"CollectedData_{scorer}.csv")
    return project


def read_slp(path: str | os.PathLike, predicted: bool = False) -> dict:
    """A SLEAP ``.slp`` (HDF5) -> ``{"names": [K], "edges": [(i, j)], "symmetries": [(i, j)], "frames":
    [(video index, frame index, xy (A, K, 2) with NaN where unlabeled or not visible)]}``, user instances only
    (``predicted``: the model's predicted instances only), keypoints in the (first) skeleton's node order."""
    import h5py

    with h5py.File(path, "r") as f:
        meta = json.loads(f["metadata"].attrs["json"])
        frames, instances = f["frames"][:], f["instances"][:]
        points = f["pred_points" if predicted else "points"][:]
    wanted_type = SLEAP_PREDICTED if predicted else SLEAP_USER
    skeleton = meta["skeletons"][0]
    try:
        nodes = [int(n["id"]) for n in skeleton["nodes"]]
        names = [meta["nodes"][i]["name"] for i in nodes]
    except (TypeError, ValueError, KeyError, IndexError):
        raise ValueError(f"{path}: skeleton nodes not stored as indices into the node list") from None
    edges, symmetries, types = [], [], []
    for link in skeleton["links"]:
        kind = link.get("type", {})
        if "py/reduce" in kind:  # an EdgeType's first appearance; later ones refer back by py/id (1-based)
            types.append(kind["py/reduce"][1]["py/tuple"][0])
            kind = types[-1]
        elif "py/id" in kind:
            kind = types[kind["py/id"] - 1]
        else:
            kind = SLEAP_BODY_EDGE
        pair = (nodes.index(link["source"]), nodes.index(link["target"]))
        (symmetries if kind == SLEAP_SYMMETRY_EDGE else edges).append(pair)
    symmetries = sorted({tuple(sorted(p)) for p in symmetries})
    out = []
    for fr in frames:
        xys = []
        for inst in instances[fr["instance_id_start"]:fr["instance_id_end"]]:
            if inst["instance_type"] != wanted_type:
                continue
            pts = points[inst["point_id_start"]:inst["point_id_end"]]
            if len(pts) != len(names):
                raise ValueError(f"{path}: frame {fr['frame_idx']}: an instance with {len(pts)} points, skeleton "
                                 f"has {len(names)}")
            xy = np.stack([pts["x"], pts["y"]], 1).astype(np.float64)
            xy[~pts["visible"]] = np.nan
            xys.append(xy)
        if xys:
            out.append((int(fr["video"]), int(fr["frame_idx"]), np.stack(xys)))
    return {"names": names, "edges": edges, "symmetries": symmetries, "frames": out}


def sleap_instance_box(xy: np.ndarray, width: int, height: int, box_pad: float = BOX_PAD):
    """One SLEAP instance's (K, 2) joints (NaN: unlabeled) -> (labeled mask (K,), its box [x, y, w, h] or None when
    no joint lies in the image): the labeled joints' extent x ``box_pad``, clipped (the DLC importer's rule)."""
    from sagepose.data.dlc import _labels_box

    vis = np.isfinite(xy).all(1) & (xy >= 0).all(1) & (xy[:, 0] < width) & (xy[:, 1] < height)
    return vis, (_labels_box(xy, vis, box_pad, width, height) if vis.any() else None)


def slp_to_coco(slp_path, video_path, image_dir, stride: int = 1, skeleton=None, flip_pairs=None,
                name: str = "animal", box_pad: float = BOX_PAD) -> dict:
    """SLEAP labels of one video -> COCO dict; every ``stride``-th labeled frame (in frame order) is cut from the
    video into ``image_dir/frame_NNNNNN.png``. Boxes: the labeled joints' extent x ``box_pad``, clipped (as the
    DLC importer's multi-animal boxes). Skeleton: ``skeleton`` name pairs, else the file's body edges; flip pairs:
    ``flip_pairs``, else the file's symmetry edges, else inferred from left/right names."""
    import cv2

    from sagepose.keypoints import infer_flip_pairs

    parsed = read_slp(slp_path)
    names = parsed["names"]
    videos = {v for v, _, _ in parsed["frames"]}
    if len(videos) > 1:
        raise ValueError(f"{slp_path}: labels of {len(videos)} videos; one video per dataset")
    labeled = sorted(parsed["frames"], key=lambda f: f[1])[::stride]
    if not labeled:
        raise ValueError(f"{slp_path}: no user-labeled frame")
    wanted = {idx: xy for _, idx, xy in labeled}
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video_path))
    frames, index = {}, 0
    try:
        while len(frames) < len(wanted):  # read in order: seeking an mp4 may land on a neighbouring frame
            ok, img = cap.read()
            if not ok:
                break
            if index in wanted:
                file_name = f"{image_dir.name}/frame_{index:06d}.png"
                cv2.imwrite(str(image_dir / f"frame_{index:06d}.png"), img)
                frames[index] = (file_name, img.shape[1], img.shape[0])
            index += 1
    finally:
        cap.release()
    missing = sorted(set(wanted) - set(frames))
    if missing:
        raise ValueError(f"{video_path}: {index} frames read; labeled frame {missing[0]} of {slp_path} is past the "
                         "end")
    index_of = {n: i for i, n in enumerate(names)}
    if skeleton is not None:
        bones = [(index_of[a], index_of[b]) for a, b in skeleton]
    else:
        bones = parsed["edges"]
    if flip_pairs is not None:
        pairs = [(index_of[a], index_of[b]) for a, b in flip_pairs]
    else:
        pairs = parsed["symmetries"] or list(infer_flip_pairs(names))
    images, annotations = [], []
    for idx in sorted(wanted):
        file_name, width, height = frames[idx]
        images.append({"id": len(images) + 1, "file_name": file_name, "width": int(width), "height": int(height),
                       "frame_index": idx})
        for xy in wanted[idx]:
            vis, bbox = sleap_instance_box(xy, width, height, box_pad)
            if bbox is None:
                continue
            kpts = np.zeros((len(names), 3))
            kpts[vis, :2], kpts[vis, 2] = xy[vis], 2
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"], "category_id": 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3],
                                "keypoints": [float(v) for v in kpts.reshape(-1)], "num_keypoints": int(vis.sum()),
                                "iscrowd": 0})
    category = {"id": 1, "name": name, "supercategory": "animal", "keypoints": list(names),
                "skeleton": [[a + 1, b + 1] for a, b in bones], "flip_pairs": [[names[a], names[b]] for a, b in pairs]}
    info = {"description": "imported from SLEAP labels (user instances) by benchmarks/ssl_datasets.py",
            "source": os.path.abspath(slp_path), "video": os.path.abspath(video_path),
            "image_root": os.path.abspath(image_dir.parent), "frames": len(images), "stride": stride}
    return {"info": info, "images": images, "annotations": annotations, "categories": [category]}


def unlabeled_source(name: str, info: dict, out_dir: str | os.PathLike, exclude_file_names=()) -> str:
    """The ``ssl.unlabeled`` source (a path) of dataset ``name`` whose :func:`prepare` returned ``info``, built in
    ``out_dir`` (reused when a previous build with the same inputs is complete: its marker is written last).

    The unlabeled crops use the kind of box the labels use:

    * a dataset with a video (mirror-mouse; whole-image label boxes): the video itself, each frame one whole-frame
      instance (a warning if its label boxes are not whole images);
    * sleap-flies: every :data:`SLEAP_UNLABELED_EVERY`-th frame of the clip not among the labeled ones, cut into
      ``out_dir/frames/*.jpg``, and ``out_dir/unlabeled.json``: a COCO json with one box per user instance (as
      the labels' boxes are made, :func:`sleap_instance_box`; no keypoints), standing in for a detector's;
    * a dataset without a video whose label boxes are all whole images (one per frame, dlc-reaching): a folder
      ``out_dir/frames`` of symlinks to its labeled frames;
    * else (dlc-montblanc): ``out_dir/unlabeled.json``, the labels' boxes without keypoints, images referenced
      relative to ``out_dir`` (not copied).

    ``exclude_file_names``: labeled frames (their ``labels.json`` ``file_name``, or their path) left out, e.g. the
    test frames; every one must name a frame of the labels. Frames of a video source are not labeled frames, and
    sleap-flies leaves out every labeled frame already: for these the names are ignored.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    labels_json = Path(info["labels_json"])
    coco = json.loads(labels_json.read_text())
    whole = whole_image_boxes(coco)
    if info.get("video") and spec.kind != "sleap":
        if not whole:
            warnings.warn(f"{name}: the boxes of {labels_json} are not whole images, but its unlabeled source, the "
                          f"video {info['video']}, gives whole frames: labeled and unlabeled crops differ",
                          stacklevel=2)
        return str(info["video"])
    out_dir = Path(out_dir)
    exclude = sorted(set(map(str, exclude_file_names))) if spec.kind != "sleap" else []
    stat = labels_json.stat()
    key = {"version": UNLABELED_VERSION, "name": name, "labels_json": str(labels_json.resolve()),
           "labels_size": stat.st_size, "labels_mtime_ns": stat.st_mtime_ns, "exclude": exclude,
           "every": SLEAP_UNLABELED_EVERY if spec.kind == "sleap" else 1, "box_pad": BOX_PAD,
           "boxes": info.get("boxes")}
    marker_path = out_dir / UNLABELED_MARKER
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker.get("key") == key and Path(marker.get("source", "")).exists():
        return marker["source"]
    out_dir.mkdir(parents=True, exist_ok=True)
    marker_path.unlink(missing_ok=True)
    if spec.kind == "sleap":
        source, counts = _sleap_unlabeled(coco, labels_json, out_dir, SLEAP_UNLABELED_EVERY, info.get("boxes"))
    else:
        keep = _kept_images(coco, labels_json, exclude)
        if whole:
            source, counts = _linked_frames(coco, labels_json, out_dir / "frames", keep)
        else:
            source, counts = _box_json(coco, labels_json, out_dir, keep, name)
    tmp = marker_path.with_name(marker_path.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "source": str(source), **counts}, indent=1))
    os.replace(tmp, marker_path)  # last: the build is complete
    return str(source)


def whole_image_boxes(coco: dict) -> bool:
    """Whether every image of a COCO dict has one annotation, its box the whole image."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    per_image: dict = {}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        w, h = sizes[ann["image_id"]]
        if not np.allclose(ann["bbox"], [0, 0, w, h], atol=0.5):
            return False
    return bool(per_image) and all(n == 1 for n in per_image.values())


def _kept_images(coco: dict, labels_json: Path, exclude: list[str]) -> set:
    """The ids of the images not named by ``exclude`` (a labels ``file_name`` or a path); every name must match."""
    base = labels_json.parent
    keep, matched = set(), set()
    names = set(exclude)
    resolved = {os.path.normpath(os.path.abspath(n)): n for n in exclude}
    for im in coco["images"]:
        path = os.path.normpath(os.path.abspath(base / im["file_name"]))
        hit = [n for n in (im["file_name"], resolved.get(path)) if n in names]
        if hit:
            matched.update(hit)
        else:
            keep.add(im["id"])
    unknown = sorted(names - matched)
    if unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise ValueError(f"{labels_json}: {len(unknown)} excluded file names are not its images: {shown}")
    return keep


def _fresh_dir(folder: Path) -> Path:
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _linked_frames(coco: dict, labels_json: Path, folder: Path, keep: set) -> tuple[Path, dict]:
    """A folder of symlinks to the kept labeled frames (named by their file_name, '/' -> '__')."""
    _fresh_dir(folder)
    n = 0
    for im in coco["images"]:
        if im["id"] in keep:
            target = (labels_json.parent / im["file_name"]).resolve()
            os.symlink(target, folder / im["file_name"].replace("/", "__"))
            n += 1
    if not n:
        raise ValueError(f"{labels_json}: every frame excluded; no unlabeled frame left")
    return folder, {"frames": n, "instances": n}


def _box_json(coco: dict, labels_json: Path, out_dir: Path, keep: set, name: str) -> tuple[Path, dict]:
    """``out_dir/unlabeled.json``: the kept images' label boxes (no keypoints), images relative to ``out_dir``."""
    images = [{"id": im["id"], "file_name": Path(os.path.relpath((labels_json.parent / im["file_name"]).resolve(),
                                                                 out_dir.resolve())).as_posix(),
               "width": im["width"], "height": im["height"]} for im in coco["images"] if im["id"] in keep]
    annotations = [{"id": ann["id"], "image_id": ann["image_id"], "category_id": 1,
                    "bbox": [float(v) for v in ann["bbox"]], "area": float(ann["bbox"][2] * ann["bbox"][3]),
                    "iscrowd": 0} for ann in coco["annotations"] if ann["image_id"] in keep]
    if not annotations:
        raise ValueError(f"{labels_json}: every frame excluded; no unlabeled instance left")
    return _write_box_json(out_dir / "unlabeled.json", images, annotations, name,
                           f"the boxes (no keypoints) of {labels_json.resolve()}")


def _write_box_json(path: Path, images: list, annotations: list, name: str, description: str) -> tuple[Path, dict]:
    data = {"info": {"description": f"unlabeled instances for semi-supervised training: {description}; written by "
                                    "benchmarks/ssl_datasets.py"},
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": name, "supercategory": "animal"}]}
    path.write_text(json.dumps(data))
    return path, {"frames": len(images), "instances": len(annotations)}


def _sleap_unlabeled(coco: dict, labels_json: Path, out_dir: Path, every: int,
                     boxes: str | None = None) -> tuple[Path, dict]:
    """Every ``every``-th frame of the SLEAP clip that is not labeled -> ``out_dir/frames/frame_NNNNNN.jpg`` and
    ``out_dir/unlabeled.json`` with a box per user instance (``boxes``: per predicted instance of that .slp), made
    as the labels' boxes are."""
    import cv2

    meta = coco.get("info", {})
    slp, video = meta.get("source"), meta.get("video")
    if not slp or not video:
        raise ValueError(f"{labels_json}: its info names no SLEAP source and video (not written by slp_to_coco?)")
    labeled = {im.get("frame_index") for im in coco["images"]}
    box_source = boxes or slp
    instances = {idx: xy for _, idx, xy in read_slp(box_source, predicted=bool(boxes))["frames"]}
    wanted = {i for i in instances if i % every == 0 and i not in labeled}
    if not wanted:
        raise ValueError(f"{box_source}: no unlabeled frame with instances at every {every}")
    folder = _fresh_dir(out_dir / "frames")
    cap = cv2.VideoCapture(str(video))
    images, annotations, index = [], [], 0
    try:
        while len(images) < len(wanted):  # in order: seeking an mp4 may land on a neighbouring frame
            ok, img = cap.read()
            if not ok:
                break
            if index in wanted:
                height, width = img.shape[:2]
                file = folder / f"frame_{index:06d}.jpg"
                if not cv2.imwrite(str(file), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                    raise OSError(f"{file}: cannot write")
                images.append({"id": len(images) + 1, "file_name": f"{folder.name}/{file.name}", "width": width,
                               "height": height, "frame_index": index})
                for xy in instances[index]:
                    _, bbox = sleap_instance_box(xy, width, height)
                    if bbox is not None:
                        annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                            "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
                                            "iscrowd": 0})
            index += 1
    finally:
        cap.release()
    missing = sorted(wanted - {im["frame_index"] for im in images})
    if missing:
        raise ValueError(f"{video}: {index} frames read; unlabeled frame {missing[0]} of {slp} is past the end")
    return _write_box_json(out_dir / "unlabeled.json", images, annotations, coco["categories"][0]["name"],
                           f"every {every}th frame of {video} not labeled in {labels_json.resolve()}, boxes of the "
                           f"{'predicted' if boxes else 'user'} instances of {box_source} (joints' extent x "
                           f"{BOX_PAD}, clipped)")


def video_info(path) -> tuple[int, float]:
    """A video's frame count and frame rate, as OpenCV reports them."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()


def main(argv: list[str] | None = None) -> None:
    for name in (argv if argv is not None else sys.argv[1:]) or list(DATASETS):
        info = prepare(name)
        print(f"{name}: {info['frames']} frames, {info['instances']} instances, {info['keypoints']} keypoints -> "
              f"{info['labels_json']}; video {info['video']} ({info['video_frames']} frames, {info['fps']:g} fps)")


if __name__ == "__main__":
    main()
