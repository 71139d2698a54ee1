"""Each dataset's official keypoint AP, picked by the schema's name, with MMPose 1.3.2's ``CocoMetric`` settings for
that dataset: COCO (and every schema with sigmas but no dataset of its own) pycocotools as released; AI Challenger
``use_area=False``; CrowdPose ``use_area=False`` with ``keypoints_crowd`` and the easy / medium / hard split
(:mod:`sagepose.eval.crowdpose`)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sagepose.data.coco import read_json
from sagepose.eval.coco import evaluate_coco
from sagepose.eval.crowdpose import evaluate_aic, evaluate_crowdpose


def _has_crowd_index(gt_json: str | Path) -> bool:
    images = read_json(str(gt_json)).get("images", [])
    return bool(images) and all("crowdIndex" in im for im in images)


def official_ap(schema_name: str, gt_json: str | Path, results: list[dict], sigmas: np.ndarray) -> dict:
    """-> {metric name: value} of ``results`` (COCO results) against ``gt_json``, as the dataset of ``schema_name``
    is scored. A CrowdPose json without ``crowdIndex`` on its images gets COCO's AP, with one warning."""
    if schema_name == "aic":
        return evaluate_aic(gt_json, results, sigmas=sigmas).as_dict()
    if schema_name == "crowdpose":
        if _has_crowd_index(gt_json):
            return evaluate_crowdpose(gt_json, results, sigmas=sigmas)
        warnings.warn(f"{gt_json}: schema crowdpose but its images have no 'crowdIndex': COCO's AP, not CrowdPose's",
                      stacklevel=2)
    return evaluate_coco(gt_json, results, sigmas=sigmas).as_dict()
