"""Fitting a :class:`~sagepose.translate.model.Translator` on pairs: the held-out split, the affine base in closed
form, pair augmentation, and the training -- a small ``LightningModule`` run by ``lightning.Trainer`` on the CPU, as
the pose models train (:mod:`sagepose.train`)."""
from __future__ import annotations

import contextlib
import logging
import math

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.plugins.environments import LightningEnvironment
from torch.nn import functional as F

from sagepose.errors import DataError
from sagepose.keypoints import load_schema
from sagepose.translate.config import TranslatorConfig
from sagepose.translate.model import Translator, residual_map
from sagepose.translate.pairs import MATCH_IOU, training_pairs


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


def augment_pairs(batch, gen: torch.Generator, cfg: TranslatorConfig, flip_src, flip_tgt):
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


def pair_losses(model: Translator, src, src_scores, tgt, labeled) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 over the labeled target coordinates, mean BCE of the labeled flags."""
    xy, logit = model(src, src_scores)
    mask = labeled.to(xy.dtype)
    coord = ((xy - tgt).abs() * mask[..., None]).sum() / (2 * mask.sum()).clamp(min=1)
    return coord, F.binary_cross_entropy_with_logits(logit, mask)


class PairBatches:
    """The pairs (``src``, ``src_scores``, ``tgt``, ``tgt_labeled`` tensors) as one epoch's batches of
    ``batch_size``: each pass in a fresh permutation drawn from ``gen`` (in order without one), each batch passed
    through ``augment`` when given. Drawn lazily, so the permutation and the augmentation take turns on ``gen``."""

    def __init__(self, pairs: list[torch.Tensor], batch_size: int, gen: torch.Generator | None = None,
                 augment=None):
        self.pairs, self.batch_size, self.gen, self.augment = pairs, batch_size, gen, augment

    def __len__(self) -> int:
        return math.ceil(len(self.pairs[0]) / self.batch_size)

    def __iter__(self):
        n = len(self.pairs[0])
        order = torch.randperm(n, generator=self.gen) if self.gen is not None else torch.arange(n)
        for b in range(len(self)):
            batch = [t[order[b * self.batch_size:(b + 1) * self.batch_size]] for t in self.pairs]
            yield self.augment(batch) if self.augment is not None else batch


class TranslatorFit(L.LightningModule):
    """A training step: the coordinate L1 plus the labeled-flag BCE on a batch of pairs (AdamW, a cosine decay to 0
    over ``steps``). Validation: the held-out pairs' coordinate error; the weights of the epoch with the lowest are
    kept in ``best_state`` (``best_epoch``, ``best_error``)."""

    def __init__(self, model: Translator, cfg: TranslatorConfig, steps: int):
        super().__init__()
        self.model, self.cfg, self.steps = model, cfg, steps
        self.best_error, self.best_epoch, self.best_state = math.inf, 0, None

    def training_step(self, batch, batch_idx):
        coord, flag = pair_losses(self.model, *batch)
        return coord + flag

    def validation_step(self, batch, batch_idx):
        error = float(pair_losses(self.model, *batch)[0])
        if error < self.best_error:
            self.best_error, self.best_epoch = error, self.current_epoch + 1
            self.best_state = {k: v.clone() for k, v in self.model.state_dict().items()}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        decay = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(self.steps, 1))))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


@contextlib.contextmanager
def _lightning_info_off():
    """Lightning's info lines (devices found, "fit stopped", tips) held back: they say nothing about a fit this
    small, and ``sagepose translate fit`` reports in one line."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def fit_translator(predictions: list[dict], labels_json: str, source_schema, target_schema,
                   cfg: TranslatorConfig | None = None, midpoints: bool = False,
                   where: str = "predictions") -> tuple[Translator, dict]:
    """Train a :class:`Translator` from ``source_schema`` to ``target_schema`` (schemas, built-in names or schema
    files) on :func:`~sagepose.translate.pairs.training_pairs` of ``predictions`` and ``labels_json``;
    ``midpoints``: the fixed map under the residual places midpoint joints (``keypoint_map``); ``cfg``: the
    :class:`TranslatorConfig` defaults when None. Deterministic given ``cfg.seed`` (its own RNG streams; the global
    one is left as it was).

    The coordinate loss is L1, not MSE: a translator is judged by thresholded distances (PCKh, OKS), and L1's
    median-seeking fit is not dragged by the few pairs whose prediction is wrong (a swapped side, a joint on the
    wrong person) the way a squared loss is. ``cfg.holdout`` of the pairs (seeded) pick the epoch whose weights are
    kept (``best_epoch``, ``holdout_error``, ``holdout_pairs`` in the report). Returns the model (eval mode) and a
    report: ``pairs``, ``skipped``, ``unmatched``, ``epochs``, ``steps``, the final losses over all pairs
    (``final_loss`` = coordinate + flag) and the mean distances (box-normalised) to the labeled joints of the fixed
    map and of the translator on the joints the map gives (``fixed_error``, ``train_error_fixed_joints``) and on all
    labeled joints (``train_error``).
    """
    cfg = TranslatorConfig() if cfg is None else cfg
    source, target = load_schema(source_schema), load_schema(target_schema)
    arrays, counts = training_pairs(predictions, labels_json, source, target, where)
    if counts["pairs"] == 0:
        raise DataError(f"{labels_json}: no annotation pairs with a prediction of {where} (same image, box IoU >= "
                        f"{MATCH_IOU}); skipped {counts['skipped']}, unmatched {counts['unmatched']}")
    kmap = residual_map(source, target, midpoints)
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
    augment = None
    if cfg.augment_rotate > 0 or cfg.augment_flip > 0:
        augment = lambda batch: augment_pairs(batch, gen, cfg, *flips)
    batches = PairBatches(fit_data, cfg.batch_size, gen, augment)
    steps = cfg.epochs * len(batches)
    fit = TranslatorFit(model, cfg, steps)
    # one process on the CPU whatever launched it (a SLURM or torchrun environment names other ranks). Not
    # deterministic=True: that turns torch's deterministic algorithms on for the rest of the process, and this fit
    # (CPU, its own generator) repeats bit for bit without it
    with _lightning_info_off(), torch.random.fork_rng(devices=[]):
        trainer = L.Trainer(accelerator="cpu", devices=1, plugins=[LightningEnvironment()], max_epochs=cfg.epochs,
                            limit_val_batches=int(n_held > 0), num_sanity_val_steps=0, inference_mode=False,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(fit, train_dataloaders=batches, val_dataloaders=PairBatches(held, max(n_held, 1)))
    if fit.best_state is not None:
        model.load_state_dict(fit.best_state)
    counts.update(holdout_pairs=n_held, best_epoch=fit.best_epoch if n_held else cfg.epochs,
                  holdout_error=fit.best_error if n_held else None)
    model.eval()
    with torch.no_grad():
        coord, flag = pair_losses(model, *data)
        xy, _ = model(data[0], data[1])
        base, _ = kmap.apply_torch(data[0], data[1])
    lab = data[3]
    covered_lab = lab & torch.as_tensor(kmap.covered)
    dist = lambda p, m: float((p - data[2]).norm(dim=-1)[m].mean()) if m.any() else float("nan")
    report = dict(**counts, epochs=cfg.epochs, steps=steps, final_loss=float(coord + flag),
                  final_coord_loss=float(coord), final_flag_loss=float(flag), train_error=dist(xy, lab),
                  train_error_fixed_joints=dist(xy, covered_lab), fixed_error=dist(base, covered_lab))
    return model, report
