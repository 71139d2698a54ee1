"""A multi-dataset model seen as one of its datasets (``sagepose infer --dataset NAME``): :class:`DatasetView`,
:func:`dataset_view`. Re-exported by :mod:`sagepose.api`."""
from __future__ import annotations

import os

import numpy as np

from sagepose.models.checkpoint import read_checkpoint
from sagepose.models.estimator import TopDownEstimator
from sagepose.recipe import checkpoint_dataset_plan


class DatasetView:
    """A multi-dataset model predicting one of its datasets' keypoints, in that dataset's schema: ``predict`` as
    :meth:`TopDownEstimator.predict`, its outputs carried back with the dataset's map (with one head per dataset,
    through that dataset's head). ``schema``: the dataset's."""

    def __init__(self, model: TopDownEstimator, plan, name: str):
        if name not in plan.names:
            raise ValueError(f"no dataset {name!r} in this model; its datasets: {', '.join(plan.names)}")
        self.model, self.index = model, plan.names.index(name)
        member = plan.members[self.index]
        if member.from_model is None:
            raise ValueError(f"this model's outputs ({plan.schema.name}) do not hold every keypoint of dataset "
                             f"{name!r} ({member.schema.name})")
        self.kmap, self.schema = member.from_model, member.schema

    def predict(self, image, bboxes=None, bbox_format: str = "xyxy", color: str = "bgr"):
        from sagepose.models.estimator import Prediction
        from sagepose.models.heads import PerDatasetHeads

        dataset = self.index if isinstance(self.model.head, PerDatasetHeads) else None  # through its own head
        pred = self.model.predict(image, bboxes, bbox_format, color=color, dataset=dataset)
        kp, sc = self.kmap.apply(pred.keypoints, pred.scores)
        return Prediction(kp.astype(np.float32), sc.astype(np.float32))


def dataset_view(model: TopDownEstimator, checkpoint, name: str) -> DatasetView:
    """``model`` (loaded from the multi-dataset ``checkpoint``, a path or what it holds) as dataset ``name``."""
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    plan = checkpoint_dataset_plan(raw, str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint")
    if plan is None:
        raise ValueError(f"{checkpoint}: not a multi-dataset checkpoint (no data.datasets in its run config)")
    return DatasetView(model, plan, name)
