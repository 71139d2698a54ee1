"""Scoring a validation epoch: one val set's gathered predictions -> metrics, COCO results, the line a run prints.

The module's ``validation_step`` keeps each batch's predictions in image pixels (:func:`val_outputs`);
``on_validation_epoch_end`` scores each val set once with :func:`score_val_set`: pycocotools OKS AP when the schema
has OKS sigmas, pixel metrics (``val/pixel_error``, its median and p95, PCK; :func:`sagepose.eval.pixel_metrics`)
against the labels the val set carries in image pixels, for every schema (not with detection boxes: no pairing with
the labels), and MPII's PCKh where head sizes are known. Under DDP / FSDP each rank validates its shard; the
predictions are gathered once, keyed by each instance's dataset index (:func:`dedupe_instances`), so every val
instance is scored exactly once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from sagepose.eval import box_size, make_results, official_ap, pckh, pixel_metrics
from sagepose.fileio import write_json_atomic
from sagepose.keypoints import KeypointSchema

# metric entries that are counts, not scores: kept in the module's last_metrics, not logged
COUNTS = ("num_predictions", "num_joints", "num_nonfinite")


def val_outputs(batch: dict, keypoints: torch.Tensor, scores: torch.Tensor, with_labels: bool) -> dict:
    """One val batch's predictions -- ``keypoints`` (B, K, 2) in image px, ``scores`` (B, K) -- as numpy arrays,
    with what scoring needs of the batch; ``with_labels``: the labels too, for pixel metrics (not for detection
    boxes, which have no labels to pair with)."""
    out = {"image_id": batch["image_id"].cpu().numpy(), "keypoints": keypoints.float().cpu().numpy(),
           "scores": scores.float().cpu().numpy(), "bbox_score": batch["bbox_score"].cpu().numpy(),
           "area": batch["scale"].prod(-1).cpu().numpy(), "index": batch["index"].cpu().numpy()}
    if "gt_keypoints" in batch and with_labels:
        out.update({k: batch[k].float().cpu().numpy() for k in ("gt_keypoints", "gt_visible", "bbox")})
    if "head_size" in batch:
        out["head_size"] = batch["head_size"].float().cpu().numpy()
    return out


def score_val_set(outs: list[dict], schema: KeypointSchema, gt_json: str, trainer, coco_format: bool = True,
                  told_no_pckh: set[str] | None = None, say=print):
    """One val set's :func:`val_outputs` (this rank's) -> (metrics, COCO results, instance indices), the same on
    every rank of ``trainer``; None when no rank had any. ``coco_format=False`` (MMPose's MPII json): no OKS AP
    (pycocotools reads COCO files), and its 1-based labels get PCKh's +1 on the predictions. An MPII set scored
    without PCKh is said once per ``gt_json`` (``told_no_pckh`` keeps which) with ``say(line, file=sys.stderr)``."""
    cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else None
    if trainer.world_size > 1:  # every rank takes part, also one whose shard was empty
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, cat)
        gathered = [g for g in gathered if g is not None]
        cat = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]} if gathered else None
    if cat is None:
        return None
    cat = dedupe_instances(cat)
    # OKS-NMS needs sigmas; without them every instance is kept (GT boxes: one per labeled animal)
    sigmas = schema.sigmas_array() if schema.has_sigmas else ()
    results = make_results(cat["image_id"], cat["keypoints"], cat["scores"], cat["bbox_score"],
                           cat["area"], sigmas, nms_thr=0.9 if schema.has_sigmas else None)
    # pycocotools once, on rank 0; every rank logs the same numbers (the best checkpoint reads them)
    metrics = None
    if trainer.is_global_zero:
        metrics = {}
        if schema.has_sigmas and coco_format:
            metrics.update(official_ap(schema.name, gt_json, results, sigmas))
        if "gt_keypoints" in cat:
            metrics.update(pixel_metrics(cat["keypoints"], cat["gt_keypoints"], cat["gt_visible"],
                                         box_size(cat["bbox"]), schema.keypoints))
            heads = cat.get("head_size")
            if schema.name == "mpii" and heads is not None and np.isfinite(heads).all() and (heads > 0).all():
                # MPII's own metric; COCO-format labels are 0-based (no +1 on the predictions), MPII's 1-based
                metrics.update(pckh(cat["keypoints"], cat["gt_keypoints"], cat["gt_visible"], heads,
                                    pred_offset=0.0 if coco_format else 1.0))
            elif schema.name == "mpii" and told_no_pckh is not None and gt_json not in told_no_pckh:
                told_no_pckh.add(gt_json)
                # stderr: a test's stdout is its metrics' JSON
                say(no_pckh_message(gt_json, heads, len(cat["keypoints"]), coco_format), file=sys.stderr)
    metrics = trainer.strategy.broadcast(metrics, src=0)
    return metrics, results, cat["index"]


def logged_metrics(metrics: dict, members: bool) -> dict[str, float]:
    """The scores of a validation's metrics as ``val/...`` scalars to log (counts and empty entries left out);
    ``members``: a multi-dataset run's ``{dataset: metrics}``, logged as ``val/{dataset}/{metric}``."""
    return {f"val/{k}": float(v) for k, v in flat_metrics(metrics, members).items()
            if k.rsplit("/", 1)[-1] not in COUNTS and isinstance(v, (int, float)) and v is not None}


def val_line(epoch: int, step: int, metrics: dict, members: bool) -> str:
    """The line a run prints after each validation: AP, PCKh and pixel error where computed (each dataset's for a
    multi-dataset run's ``{dataset: metrics}``)."""
    line = f"epoch {epoch} step {step}: val"
    for name, m in ([("", metrics)] if not members else
                    [(f" {k}", v) for k, v in metrics.items() if isinstance(v, dict)]):
        line += name
        if "AP" in m:
            line += f" AP {m['AP']:.3f} AP50 {m['AP50']:.3f} AR {m['AR']:.3f}"
        if m.get("PCKh") is not None:
            line += f" PCKh {m['PCKh']:.2f}"
        if m.get("pixel_error") is not None:
            line += f" pixel_error {m['pixel_error']:.2f} px"
            if "AP" not in m:
                line += f" (median {m['pixel_error_median']:.2f}, PCK@0.1box {m['PCK@0.1box']:.3f})"
    return line


def no_pckh_message(gt_json: str, heads: np.ndarray | None, n: int, coco_format: bool) -> str:
    """Why an MPII val set of ``n`` instances is scored by pixel error, not PCKh: how many lack a head size
    (``heads`` (n,) px, NaN where none; None: none at all) and where one comes from."""
    missing = n if heads is None else int((~np.isfinite(heads) | (heads <= 0)).sum())
    where = ("a head_box [x1, y1, x2, y2] on each annotation" if coco_format else
             "data.datasets[...].head_boxes (mpii_gt_val.mat or a json of head boxes)")
    return (f"{gt_json}: MPII keypoints scored by pixel error, not PCKh: {missing} of {n} instances have no head "
            f"size (PCKh's unit); give {where}")


def headline_score(metrics: dict) -> float | None:
    """A val set's one number in [0, 1], its dataset's own metric: PCKh / 100 where it was computed (MPII), else
    OKS AP."""
    if metrics.get("PCKh") is not None:
        return float(metrics["PCKh"]) / 100.0
    if metrics.get("AP") is not None:
        return float(metrics["AP"])
    return None


def flat_metrics(metrics: dict, members: bool) -> dict:
    """The scalar entries of ``metrics``; ``members``: one level down too, as ``{dataset}/{metric}``."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            if members:
                out.update({f"{k}/{kk}": vv for kk, vv in v.items() if not isinstance(vv, dict)})
        else:
            out[k] = v
    return out


def dedupe_instances(cat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Gathered per-instance arrays -> one row per dataset ``index``, sorted by it.

    A distributed sampler that pads uneven shards (Lightning's DistributedSampler does) repeats some
    instances; the first copy is kept. Sorting makes the result independent of the number of ranks.
    """
    _, first = np.unique(cat["index"], return_index=True)
    return {k: v[first] for k, v in cat.items()}


def save_predictions(results: list[dict], path: str | Path) -> None:
    write_json_atomic(path, results)
