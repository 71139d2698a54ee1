"""One schema's predicted keypoints in another schema's terms: a fixed converter and a learned translator.

* :func:`convert_results` -- COCO results in the source schema -> the target schema by a
  :class:`~sagepose.keypoint_maps.KeypointMap` (copies and midpoints; the scores act as the visibility: a midpoint's
  score is the smaller of its two). A joint the map does not give is ``0, 0, 0``.
* :class:`Translator` -- a small MLP from the source keypoints (box-normalised, with their scores) to the target's
  (same frame) and a per-joint logit (is the joint labeled). Where the fixed map gives a joint the network predicts a
  residual on it (starting at zero: an untrained translator places joints as the fixed map does); elsewhere it predicts
  the joint itself. :func:`fit_translator` trains it on pairs -- images labeled in the target schema with a model's
  predictions in the source schema -- and :func:`translate_results` applies it to a results list.

The normalised frame of an instance (:func:`person_frames`): its ``bbox`` when the result has one, else the box of
its keypoints scored above :data:`FRAME_MIN_SCORE` (of all of them when none is): coordinates minus the box's
centre, divided by the box's longer side. Fitting and applying use the same frame, so a translator fitted on results
with boxes expects results with boxes.
"""
from __future__ import annotations

import json
import math
import os
import pickle
from collections import Counter
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sagepose.data.coco import image_index, read_json
from sagepose.errors import DataError, SagePoseError
from sagepose.eval.pairing import pair_by_box_iou
from sagepose.fileio import atomic_open
from sagepose.geometry import keypoint_boxes
from sagepose.keypoint_maps import KeypointMap, MappingError, keypoint_map
from sagepose.keypoints import KeypointSchema, load_schema, schema_from_dict, schema_to_dict

FRAME_MIN_SCORE = 0.05  # keypoints scored above this span an instance's frame when its result has no bbox
MATCH_IOU = 0.3  # a label and a prediction whose boxes overlap less than this are not a pair
FILE_FORMAT = "sagepose-translator"
FILE_VERSION = 1


class TranslatorFileError(SagePoseError, ValueError):
    """A file that is not a sagepose translator (unreadable, another kind of torch file, or inconsistent)."""


@dataclass(frozen=True)
class TranslatorConfig:
    """The translator's architecture and training numbers. ``layers`` hidden layers of ``hidden`` units; AdamW at
    ``lr`` with a cosine decay to 0 over ``epochs`` passes of ``batch_size`` pairs. (The loss is the coordinate L1
    plus the labeled-flag BCE unweighted: the two come from separate networks, and Adam's steps do not depend on a
    loss's scale.)"""

    hidden: int = 256
    layers: int = 3
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0
    # a seeded share of the pairs held out: the weights of the epoch with the lowest held-out coordinate error are
    # kept (a few thousand pairs overfit a 256-wide MLP within 200 epochs: on the synthetic COCO -> MPII benchmark,
    # elbow / wrist PCKh fell from 30 to 12); 0: train on every pair, keep the last epoch
    holdout: float = 0.1
    # the joints the fixed map gives: refined by the network (a dataset that marks a joint elsewhere, as MPII's and
    # COCO's hips) or copied as the map gives them (conventions known to agree: the network then learns only the
    # joints the source lacks; on the synthetic benchmark, where one renderer labels every schema, copying wins)
    refine_covered: bool = True
    # the joints the fixed map does not give start from an affine combination of the source joints (weights summing
    # to 1, the same for x and y: it moves, turns and scales with the person), fitted in closed form on the pairs;
    # the network adds a residual. False: the network places those joints from nothing
    affine_base: bool = True
    ridge: float = 1e-3  # the affine fit's ridge, per pair and coordinate
    # each batch's pairs turned by a random angle within +-augment_rotate degrees and mirrored (joints swapped left /
    # right) with probability augment_flip, source and target together: the mapping does not depend on either
    augment_rotate: float = 0.0
    augment_flip: float = 0.0


# ---- results <-> arrays ------------------------------------------------------------------------------------------
def parse_results(results, schema: KeypointSchema, where: str = "results"):
    """COCO results in ``schema`` -> keypoints (N, K, 2), scores (N, K), boxes (N, 4) xywh (NaN where a result has
    no ``bbox``), float64. A non-finite keypoint becomes ``0, 0`` with score 0 (as ``make_results`` writes it); a
    result without ``3 K`` keypoint values, or with a bbox that is not 4 finite numbers, is a :class:`DataError`."""
    if not isinstance(results, list):
        raise DataError(f"{where}: expected a list of COCO results, got {type(results).__name__}")
    k = schema.num_keypoints
    kp = np.zeros((len(results), k, 3))
    boxes = np.full((len(results), 4), np.nan)
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "keypoints" not in r:
            raise DataError(f"{where}: result {i} has no 'keypoints'")
        values = np.asarray(r["keypoints"], np.float64).reshape(-1)
        if values.size != 3 * k:
            raise DataError(f"{where}: result {i} (image {r.get('image_id', '?')}) has {values.size} keypoint values, "
                            f"expected {3 * k} for schema {schema.name} ({k} keypoints)")
        kp[i] = values.reshape(k, 3)
        if r.get("bbox") is not None:
            box = np.asarray(r["bbox"], np.float64).reshape(-1)
            if box.size != 4 or not np.isfinite(box).all():
                raise DataError(f"{where}: result {i} (image {r.get('image_id', '?')}): bbox {r['bbox']} is not "
                                f"4 finite numbers")
            boxes[i] = box
    bad = ~np.isfinite(kp).all(-1)
    kp[bad] = 0.0
    return kp[..., :2], kp[..., 2], boxes


def _flat(keypoints: np.ndarray, scores: np.ndarray) -> list[float]:
    return np.concatenate([keypoints, scores[:, None]], 1).reshape(-1).tolist()


def convert_results(results: list[dict], kmap: KeypointMap, where: str = "results") -> list[dict]:
    """COCO results in ``kmap.source`` -> ``kmap.target`` by the fixed map: copied joints keep their x, y, score; a
    midpoint joint is the mean of its two, scored by the smaller; a joint the map does not give is ``0, 0, 0``. Every
    other field (image_id, category_id, score, bbox) is kept."""
    kp, sc, _ = parse_results(results, kmap.source, where)
    out, out_sc = kmap.apply(kp, sc)
    return [{**r, "keypoints": _flat(o, s)} for r, o, s in zip(results, out, out_sc)]


def person_frames(keypoints: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each instance's normalised frame: centres (N, 2) and sizes (N,) (the longer side) of its ``boxes`` (N, 4)
    xywh where given (finite, non-empty), else of its keypoints scored above :data:`FRAME_MIN_SCORE` (all of them
    where none is). A frame of no extent (one point) has size 1 (pixel)."""
    kb, _ = keypoint_boxes(keypoints, scores, FRAME_MIN_SCORE)
    given = np.isfinite(boxes).all(1) & (np.nan_to_num(boxes[:, 2:]).max(1) > 0)
    b = np.nan_to_num(boxes)
    xyxy = np.where(given[:, None], np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1), kb)
    centres = 0.5 * (xyxy[:, :2] + xyxy[:, 2:])
    sizes = (xyxy[:, 2:] - xyxy[:, :2]).max(1)
    return centres, np.where(sizes > 0, sizes, 1.0)


# ---- the network ------------------------------------------------------------------------------------------------
def _mlp(inputs: int, hidden: int, layers: int, outputs: int, zero_last: bool) -> nn.Sequential:
    dims = [inputs] + [hidden] * layers
    blocks = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.GELU()]
    last = nn.Linear(hidden, outputs)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*blocks, last)


class Translator(nn.Module):
    """Source keypoints (N, K_s, 2) in the normalised frame and their scores (N, K_s) -> target keypoints
    (N, K_t, 2) in the same frame and labeled logits (N, K_t). ``kmap``: the fixed map the residual sits on (one
    giving no joint makes every joint free). Two MLPs of ``layers`` hidden layers of ``hidden`` units, one for the
    coordinates and one for the flags: on one shared trunk, learning a flag (often a sharp rule on one score) held
    the coordinates back (on the analytic test, 60 epochs left the head top 10x further off)."""

    def __init__(self, kmap: KeypointMap, hidden: int = 256, layers: int = 3, refine_covered: bool = True):
        super().__init__()
        # (K_t, K_s): each joint the map does not give as an affine combination of the source joints (fit_affine_base;
        # zero rows: the joint starts at the frame's centre)
        self.register_buffer("base_weights", torch.zeros(kmap.target.num_keypoints, kmap.source.num_keypoints))
        if hidden < 1 or layers < 1:
            raise ValueError(f"translator: hidden and layers must be >= 1, got hidden={hidden}, layers={layers}")
        self.kmap = kmap
        self.hidden, self.layers, self.refine_covered = hidden, layers, refine_covered
        self.register_buffer("covered", torch.as_tensor(kmap.covered)[:, None], persistent=False)
        self.num_target = kmap.target.num_keypoints
        inputs = 3 * kmap.source.num_keypoints
        # the residual starts at 0 (an untrained translator places joints as the fixed map does); the flags' last
        # layer keeps its random init: zeroed, it starves the layers below of gradient (on the analytic test, a
        # rule on one score was still unlearned after 60 epochs, learned in 60 with the random init)
        self.coords = _mlp(inputs, hidden, layers, 2 * self.num_target, zero_last=True)
        self.flags = _mlp(inputs, hidden, layers, self.num_target, zero_last=False)

    def forward(self, keypoints: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base, _ = self.kmap.apply_torch(keypoints, scores)  # 0 where the map gives nothing
        base = base + torch.einsum("ts,nsc->ntc", self.base_weights.to(keypoints.dtype), keypoints)
        x = torch.cat([keypoints.flatten(1), scores], 1)
        xy = base + self.coords(x).view(-1, self.num_target, 2)
        return (xy if self.refine_covered else torch.where(self.covered, base, xy)), self.flags(x)


def _map(source: KeypointSchema, target: KeypointSchema, midpoints: bool) -> KeypointMap:
    try:
        return keypoint_map(source, target, midpoints=midpoints)
    except MappingError:  # nothing corresponds: every target joint is learned freely
        return KeypointMap(source, target, ((),) * target.num_keypoints)


# ---- pairs ------------------------------------------------------------------------------------------------------
def _label_arrays(path: str, data: dict, target: KeypointSchema, skipped: Counter):
    """The labels' usable annotations -> image ids, keypoints (A, K, 2), labeled (A, K), boxes (A, 4) xyxy."""
    images = image_index(path, data)
    for cat in data.get("categories") or []:
        names = cat.get("keypoints") if isinstance(cat, dict) else None
        if names and (len(names) != target.num_keypoints or target.name_mismatches(names)):
            raise DataError(f"{path}: category {cat.get('id', '?')} keypoints {list(names)[:4]}... are not those of "
                            f"the target schema {target.name}")
    k = target.num_keypoints
    ids, kps, labeled, boxes = [], [], [], []
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{i}')}"
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        if ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in the file's images")
        values = np.asarray(ann.get("keypoints") or np.zeros(3 * k), np.float64).reshape(-1)
        if values.size != 3 * k:
            raise DataError(f"{where}: {values.size} keypoint values, expected {3 * k} for schema {target.name}")
        v = values.reshape(k, 3)
        lab = v[:, 2] > 0
        if not lab.any():
            skipped["without labeled keypoints"] += 1
            continue
        if not np.isfinite(v[lab, :2]).all():
            raise DataError(f"{where}: non-finite labeled keypoint coordinates")
        if ann.get("bbox") is not None:
            b = np.asarray(ann["bbox"], np.float64).reshape(-1)
            if b.size != 4 or not np.isfinite(b).all():
                raise DataError(f"{where}: bbox {ann['bbox']} is not 4 finite numbers")
            box = np.concatenate([b[:2], b[:2] + b[2:]])
        else:
            box = keypoint_boxes(v[None, :, :2], lab[None].astype(float), FRAME_MIN_SCORE)[0][0]
        ids.append(ann["image_id"])
        kps.append(np.where(lab[:, None], v[:, :2], 0.0))
        labeled.append(lab)
        boxes.append(box)
    return ids, np.array(kps).reshape(-1, k, 2), np.array(labeled, bool).reshape(-1, k), np.array(boxes).reshape(-1, 4)


def training_pairs(predictions: list[dict], labels_json: str, source: KeypointSchema, target: KeypointSchema,
                   where: str = "predictions") -> tuple[dict, dict]:
    """Each usable annotation of ``labels_json`` (target schema) with the prediction (source schema) on its image
    whose keypoint box overlaps its bbox most (:func:`~sagepose.eval.pairing.pair_by_box_iou`: greedy by IoU, each
    prediction used once; IoU < :data:`MATCH_IOU`: unmatched). Returns the normalised arrays (``src``,
    ``src_scores``, ``tgt``, ``tgt_labeled``; each pair in its prediction's frame) and counts (``pairs``,
    ``skipped``: by reason, ``unmatched``)."""
    path = os.fspath(labels_json)
    skipped: Counter = Counter()
    ids, tgt, lab, ann_boxes = _label_arrays(path, read_json(path), target, skipped)
    kp, sc, boxes = parse_results(predictions, source, where)
    pred_boxes, _ = keypoint_boxes(kp, sc, FRAME_MIN_SCORE)
    a_idx, p_idx = pair_by_box_iou(ids, ann_boxes, [r.get("image_id") for r in predictions], pred_boxes, MATCH_IOU)
    centres, sizes = person_frames(kp[p_idx], sc[p_idx], boxes[p_idx])
    norm = lambda x: (x - centres[:, None]) / sizes[:, None, None]
    arrays = dict(src=norm(kp[p_idx]), src_scores=sc[p_idx], tgt=np.where(lab[a_idx, :, None], norm(tgt[a_idx]), 0.0),
                  tgt_labeled=lab[a_idx])
    counts = dict(pairs=len(a_idx), skipped=dict(skipped), unmatched=len(ids) - len(a_idx))
    return arrays, counts


# ---- fitting ----------------------------------------------------------------------------------------------------
def fit_affine_base(src: np.ndarray, tgt: np.ndarray, labeled: np.ndarray, free: np.ndarray,
                    ridge: float = 1e-3) -> np.ndarray:
    """(K_t, K_s) weights: for each target joint of ``free`` (a bool per target joint) the combination ``w`` of the
    source joints, ``sum(w) == 1``, the same for x and y, minimising ``sum |sum_j w_j src_j - tgt|^2 + ridge n |w|^2``
    over the pairs that label the joint (closed form, the constraint by a Lagrange multiplier). Such a combination
    commutes with moving, turning, scaling and mirroring the whole person. Rows of joints not free, or labeled in
    no pair, are 0."""
    n_src = src.shape[1]
    out = np.zeros((tgt.shape[1], n_src))
    ones = np.ones(n_src)
    for t in np.flatnonzero(free):
        m = labeled[:, t]
        if not m.any():
            continue
        a = src[m].transpose(0, 2, 1).reshape(-1, n_src)  # (pairs x 2, K_s)
        b = tgt[m, t].reshape(-1)
        gram = a.T @ a + ridge * len(a) * np.eye(n_src)
        inv_ab, inv_1 = np.linalg.solve(gram, a.T @ b), np.linalg.solve(gram, ones)
        out[t] = inv_ab + inv_1 * (1.0 - ones @ inv_ab) / (ones @ inv_1)
    return out


def _augment_pairs(batch, gen: torch.Generator, cfg: TranslatorConfig, flip_src, flip_tgt):
    """Turn each pair by a random angle and mirror some (left / right joints swapped), source and target alike."""
    src, scores, tgt, labeled = batch
    n = len(src)
    if cfg.augment_flip > 0:
        flip = torch.rand(n, generator=gen) < cfg.augment_flip
        sign = torch.tensor([-1.0, 1.0])
        src = torch.where(flip[:, None, None], src[:, flip_src] * sign, src)
        scores = torch.where(flip[:, None], scores[:, flip_src], scores)
        tgt = torch.where(flip[:, None, None], tgt[:, flip_tgt] * sign, tgt)
        labeled = torch.where(flip[:, None], labeled[:, flip_tgt], labeled)
    if cfg.augment_rotate > 0:
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.augment_rotate)
        c, s_ = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([c, -s_], -1), torch.stack([s_, c], -1)], -2)  # (n, 2, 2)
        src, tgt = src @ rot.transpose(1, 2), tgt @ rot.transpose(1, 2)
    return src, scores, tgt, labeled


def _losses(model: Translator, src, src_scores, tgt, labeled) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 over the labeled target coordinates, mean BCE of the labeled flags."""
    xy, logit = model(src, src_scores)
    mask = labeled.to(xy.dtype)
    coord = ((xy - tgt).abs() * mask[..., None]).sum() / (2 * mask.sum()).clamp(min=1)
    return coord, F.binary_cross_entropy_with_logits(logit, mask)


def fit_translator(predictions: list[dict], labels_json: str, source_schema, target_schema,
                   cfg: TranslatorConfig = TranslatorConfig(), midpoints: bool = False,
                   where: str = "predictions") -> tuple[Translator, dict]:
    """Train a :class:`Translator` from ``source_schema`` to ``target_schema`` (schemas, built-in names or schema
    files) on :func:`training_pairs` of ``predictions`` and ``labels_json``; ``midpoints``: the fixed map under the
    residual places midpoint joints (``keypoint_map``). Deterministic given ``cfg.seed`` (its own RNG streams; the
    global one is left as it was).

    The coordinate loss is L1, not MSE: a translator is judged by thresholded distances (PCKh, OKS), and L1's
    median-seeking fit is not dragged by the few pairs whose prediction is wrong (a swapped side, a joint on the
    wrong person) the way a squared loss is. ``cfg.holdout`` of the pairs (seeded) pick the epoch whose weights are
    kept (``best_epoch``, ``holdout_error``, ``holdout_pairs`` in the report). Returns the model (eval mode) and a
    report: ``pairs``, ``skipped``,
    ``unmatched``, ``epochs``, ``steps``, the final losses over all pairs (``final_loss`` = coordinate + flag)
    and the mean distances (box-normalised) to the labeled joints of the fixed map and of the translator on the
    joints the map gives (``fixed_error``, ``train_error_fixed_joints``) and on all labeled joints
    (``train_error``).
    """
    source, target = load_schema(source_schema), load_schema(target_schema)
    arrays, counts = training_pairs(predictions, labels_json, source, target, where)
    if counts["pairs"] == 0:
        raise DataError(f"{labels_json}: no annotation pairs with a prediction of {where} (same image, box IoU >= "
                        f"{MATCH_IOU}); skipped {counts['skipped']}, unmatched {counts['unmatched']}")
    kmap = _map(source, target, midpoints)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Translator(kmap, cfg.hidden, cfg.layers, cfg.refine_covered)
    data = [torch.as_tensor(arrays[k], dtype=torch.float32) for k in ("src", "src_scores", "tgt")]
    data.append(torch.as_tensor(arrays["tgt_labeled"]))
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(counts["pairs"], generator=gen)
    n_held = int(round(cfg.holdout * counts["pairs"])) if counts["pairs"] >= 20 else 0
    held = [t[order[:n_held]] for t in data]
    fit_data = [t[order[n_held:]] for t in data] if n_held else data
    if cfg.affine_base:  # on the pairs the network fits, not the held-out ones
        fit_idx = order[n_held:].numpy() if n_held else np.arange(counts["pairs"])
        weights = fit_affine_base(arrays["src"][fit_idx], arrays["tgt"][fit_idx], arrays["tgt_labeled"][fit_idx],
                                  ~np.asarray(kmap.covered), cfg.ridge)
        model.base_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
    flips = (torch.as_tensor(source.flip_indices), torch.as_tensor(target.flip_indices))
    n = len(fit_data[0])
    per_epoch = math.ceil(n / cfg.batch_size)
    steps = cfg.epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    best = (math.inf, 0, None)  # held-out coordinate error, epoch, weights
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            batch = [t[idx] for t in fit_data]
            if cfg.augment_rotate > 0 or cfg.augment_flip > 0:
                batch = _augment_pairs(batch, gen, cfg, *flips)
            coord, flag = _losses(model, *batch)
            opt.zero_grad(set_to_none=True)
            (coord + flag).backward()
            opt.step()
            sched.step()
        if n_held:
            model.eval()
            with torch.no_grad():
                err = float(_losses(model, *held)[0])
            if err < best[0]:
                best = (err, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
    if best[2] is not None:
        model.load_state_dict(best[2])
    counts.update(holdout_pairs=n_held, best_epoch=best[1] if n_held else cfg.epochs,
                  holdout_error=best[0] if n_held else None)
    model.eval()
    with torch.no_grad():
        coord, flag = _losses(model, *data)
        xy, _ = model(data[0], data[1])
        base, _ = kmap.apply_torch(data[0], data[1])
    lab = data[3]
    covered_lab = lab & torch.as_tensor(kmap.covered)
    dist = lambda p, m: float((p - data[2]).norm(dim=-1)[m].mean()) if m.any() else float("nan")
    report = dict(**counts, epochs=cfg.epochs, steps=steps, final_loss=float(coord + flag),
                  final_coord_loss=float(coord), final_flag_loss=float(flag), train_error=dist(xy, lab),
                  train_error_fixed_joints=dist(xy, covered_lab), fixed_error=dist(base, covered_lab))
    return model, report


def translate_results(model: Translator, results: list[dict], where: str = "results") -> list[dict]:
    """COCO results in the translator's source schema -> its target schema. Coordinates: the network's, back in
    image pixels. A joint's score is its support's score x sigmoid(its logit): the support is the fixed map's score
    for the joint (the source joint's, the smaller of a midpoint's two) where the map gives it, else the instance's
    mean keypoint score -- so an occluded source wrist stays a doubtful target wrist, and a joint the network deems
    unlabeled scores low. The instance ``score`` and every other field are kept."""
    kp, sc, boxes = parse_results(results, model.kmap.source, where)
    if not results:
        return []
    centres, sizes = person_frames(kp, sc, boxes)
    norm = (kp - centres[:, None]) / sizes[:, None, None]
    device = next(model.parameters()).device
    model.eval()
    xy, logits = [], []
    with torch.no_grad():
        for s in range(0, len(results), 4096):
            a, b = (torch.as_tensor(x[s:s + 4096], dtype=torch.float32, device=device) for x in (norm, sc))
            out_xy, out_logit = model(a, b)
            xy.append(out_xy.double().cpu().numpy())
            logits.append(out_logit.double().cpu().numpy())
    xy = np.concatenate(xy) * sizes[:, None, None] + centres[:, None]
    prob = 1.0 / (1.0 + np.exp(-np.concatenate(logits)))
    _, mapped = model.kmap.apply(kp, sc)
    support = np.where(model.kmap.covered, mapped, sc.mean(1, keepdims=True))
    scores = support * prob
    return [{**r, "keypoints": [round(v, 3) for v in _flat(x, s)]} for r, x, s in zip(results, xy, scores)]


# ---- files ------------------------------------------------------------------------------------------------------
def save_translator(path, model: Translator, cfg: TranslatorConfig, source_schema, target_schema,
                    report: dict) -> str:
    """Write the translator to ``path`` atomically, as plain data (``torch.load(weights_only=True)`` reads it):
    its state dict, the two schemas (``schema_to_dict``), the fixed map's sources, the config and the report."""
    source, target = load_schema(source_schema), load_schema(target_schema)
    if (source, target) != (model.kmap.source, model.kmap.target):
        raise ValueError(f"{path}: the schemas given ({source.name} -> {target.name}) are not the translator's "
                         f"({model.kmap.source.name} -> {model.kmap.target.name})")
    if (cfg.hidden, cfg.layers) != (model.hidden, model.layers):
        raise ValueError(f"{path}: config hidden={cfg.hidden}, layers={cfg.layers} is not the translator's")
    state = dict(format=FILE_FORMAT, version=FILE_VERSION,
                 state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                 source=schema_to_dict(source), target=schema_to_dict(target),
                 sources=[list(s) for s in model.kmap.sources], config=asdict(cfg),
                 report=json.loads(json.dumps(report)))  # plain numbers and strings only
    with atomic_open(path) as f:
        torch.save(state, f)
    return os.fspath(path)


def load_translator(path) -> Translator:
    """A translator written by :func:`save_translator` (eval mode, on the CPU); :class:`TranslatorFileError`
    naming the file for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: translator file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TranslatorFileError(f"{path}: not a sagepose translator file ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FILE_FORMAT:
        raise TranslatorFileError(f"{path}: not a sagepose translator file (no format={FILE_FORMAT!r} entry; "
                                  f"'sagepose translate fit' writes them)")
    if obj.get("version") != FILE_VERSION:
        raise TranslatorFileError(f"{path}: translator file version {obj.get('version')!r}, this sagepose reads "
                                  f"{FILE_VERSION}")
    try:
        source = schema_from_dict(obj["source"], where=f"{path}: source schema")
        target = schema_from_dict(obj["target"], where=f"{path}: target schema")
        kmap = KeypointMap(source, target, tuple(tuple(int(i) for i in s) for s in obj["sources"]))
        known = {f.name for f in fields(TranslatorConfig)}
        cfg = TranslatorConfig(**{k: v for k, v in obj["config"].items() if k in known})
        model = Translator(kmap, cfg.hidden, cfg.layers, cfg.refine_covered)
        state = dict(obj["state_dict"])
        state.setdefault("base_weights", model.base_weights)  # files from before the affine base: none
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TranslatorFileError(f"{path}: inconsistent translator file ({first})") from None
    return model.eval()
