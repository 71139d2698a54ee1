"""AI Challenger and CrowdPose keypoint AP as MMPose 1.3.2 reports them, on pycocotools.

MMPose scores both with xtcocotools' ``COCOeval(..., use_area=False)``, CrowdPose with
``iouType='keypoints_crowd'``. sagepose depends on pycocotools only; what xtcocotools changes is
reproduced by preparing the ground truth before pycocotools sees it:

* ``use_area=False``: OKS and the area ranges use 0.53 x the raw (unclipped) ``bbox`` area of each
  ground-truth person, whatever its ``area`` says -- so that is written into ``area``;
* which ground truth is ignored: pycocotools ignores a person whose ``num_keypoints`` is 0. xtcocotools'
  plain ``keypoints`` counts the labelled joints (v > 0) instead (AIC), and ``keypoints_crowd`` keeps the
  json's ``num_keypoints``, which in CrowdPose counts only the v = 2 joints;
* CrowdPose's easy / medium / hard AP: the mean of the precision table (unfiltered -1s included, as the
  CrowdPose code does), rounded to 4 decimals, over the images whose ``crowdIndex`` is < 0.2, in
  [0.2, 0.8), and >= 0.8 (the thresholds of the official crowdposetools' ``get_type_result``).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from sagepose.eval.coco import STAT_NAMES, CocoKeypointMetrics, load_results
from sagepose.keypoints import AIC14, CROWDPOSE14

CROWD_EASY_BELOW = 0.2  # crowdIndex < 0.2: easy
CROWD_HARD_FROM = 0.8  # crowdIndex >= 0.8: hard; medium in between
CROWDPOSE_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")


def _ground_truth(gt_json: str | Path, num_keypoints_from_json: bool, need_crowd_index: bool) -> dict:
    """The GT json prepared so pycocotools scores it as xtcocotools with ``use_area=False`` does."""
    from sagepose.data.coco import AREA_FROM_BOX, image_index, read_json  # 0.53, xtcocotools' number too

    path = str(gt_json)
    data = read_json(path)
    images = image_index(path, data)
    if need_crowd_index:
        for img in images.values():
            if "crowdIndex" not in img:
                raise ValueError(f"{path}: image {img['id']}: no 'crowdIndex' (needed for CrowdPose's "
                                 f"easy / medium / hard AP)")
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        for key in ("id", "image_id", "bbox", "keypoints"):
            if key not in ann:
                raise ValueError(f"{where}: missing required field {key!r}")
        if len(ann["bbox"]) != 4 or not np.isfinite(np.asarray(ann["bbox"], np.float64)).all():
            raise ValueError(f"{where}: bbox {ann['bbox']} is not 4 finite numbers")
        ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3]) * AREA_FROM_BOX
        ann.setdefault("iscrowd", 0)
        if num_keypoints_from_json:
            if "num_keypoints" not in ann:
                raise ValueError(f"{where}: missing required field 'num_keypoints'")
        else:
            ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"]).reshape(-1, 3)[:, 2] > 0))
    return data


def _cocoeval(gt_json, data: dict, results: list[dict], sigmas: np.ndarray):
    """pycocotools' COCOeval of ``results`` on the prepared GT ``data``, evaluated, accumulated, summarized."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    unknown = {r.get("image_id") for r in results} - {img["id"] for img in data["images"]}
    if unknown:
        raise ValueError(f"{gt_json}: predictions reference {len(unknown)} image ids absent from the "
                         f"ground truth, e.g. {sorted(unknown, key=str)[:3]}")
    if data["annotations"] and len(data["annotations"][0]["keypoints"]) != 3 * len(sigmas):
        raise ValueError(f"{gt_json}: {len(data['annotations'][0]['keypoints']) // 3} keypoints per person, "
                         f"{len(sigmas)} sigmas")
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def evaluate_aic(gt_json: str | Path, results: list[dict] | str | Path,
                 sigmas: np.ndarray | None = None) -> CocoKeypointMetrics:
    """AI Challenger keypoint AP/AR of ``results`` (a list or results json) as MMPose's ``CocoMetric(use_area=False)``.

    ``sigmas`` (K,) default to AIC's (``AIC14.sigmas``). The ten numbers of :func:`sagepose.eval.evaluate_coco`.
    """
    results = load_results(results, gt_json)
    data = _ground_truth(gt_json, num_keypoints_from_json=False, need_crowd_index=False)
    sigmas = np.asarray(AIC14.sigmas if sigmas is None else sigmas, np.float64)
    ev = _cocoeval(gt_json, data, results, sigmas)
    stats = [float(v) for v in ev.stats]
    return CocoKeypointMetrics(**dict(zip(STAT_NAMES, stats)), num_predictions=len(results))


def crowd_split(images: list[dict]) -> tuple[list, list, list]:
    """Image ids of the easy (crowdIndex < 0.2), medium (< 0.8) and hard (>= 0.8) CrowdPose images."""
    easy, medium, hard = [], [], []
    for img in images:
        ci = img["crowdIndex"]
        (easy if ci < CROWD_EASY_BELOW else medium if ci < CROWD_HARD_FROM else hard).append(img["id"])
    return easy, medium, hard


def evaluate_crowdpose(gt_json: str | Path, results: list[dict] | str | Path,
                       sigmas: np.ndarray | None = None) -> dict:
    """CrowdPose keypoint AP of ``results`` (a list or results json) as MMPose's
    ``CocoMetric(use_area=False, iou_type='keypoints_crowd')`` -> {name: value} over ``CROWDPOSE_STAT_NAMES``
    (AP, AP50, AP75, AR, AR50, AR75, AP(E), AP(M), AP(H)) and ``num_predictions``.

    ``sigmas`` (K,) default to CrowdPose's (``CROWDPOSE14.sigmas``). A split with no image gives -1.
    """
    results = load_results(results, gt_json)
    data = _ground_truth(gt_json, num_keypoints_from_json=True, need_crowd_index=True)
    sigmas = np.asarray(CROWDPOSE14.sigmas if sigmas is None else sigmas, np.float64)
    ev = _cocoeval(gt_json, data, results, sigmas)
    # keypoints_crowd's first six: AP, AP50, AP75, AR, AR50, AR75 (pycocotools' stats 0, 1, 2, 5, 6, 7)
    stats = [float(ev.stats[i]) for i in (0, 1, 2, 5, 6, 7)]
    for img_ids in crowd_split(data["images"]):
        ev.params.imgIds = img_ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        # the CrowdPose code averages the whole table, -1s included, and rounds
        stats.append(round(float(np.mean(ev.eval["precision"][:, :, :, 0, :])), 4))
    out = dict(zip(CROWDPOSE_STAT_NAMES, stats))
    out["num_predictions"] = len(results)
    return out
