"""``OUT/metrics.csv`` (one row per validation) and ``OUT/curves.png`` (loss and the headline metric), beside
TensorBoard: a run's progress readable with a text editor or an image viewer.

Columns: ``epoch``, ``step``, the mean of each training loss logged since the previous validation
(``train/loss``; ``train/total`` in semi-supervised runs) and every scalar ``val/...`` metric, as TensorBoard
names them. Both files are rewritten whole and atomically at each validation, by rank 0. A resumed run keeps the
rows up to the step it resumed from and drops the later ones (they belong to the interrupted run's future).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from sagepose.fileio import atomic_open, write_text_atomic

LOSSES = ("train/loss", "train/total")
# the curve's metric: the first a run logs; pixel error is lower-is-better
HEADLINES = ("val/AP", "val/PCKh", "val/score", "val/pixel_error")


class MetricsLog(Callback):
    def __init__(self, out_dir: str | Path):
        self.csv, self.png = Path(out_dir) / "metrics.csv", Path(out_dir) / "curves.png"
        self.rows: list[dict] = []
        self._losses: dict[str, tuple] = {}  # key -> (sum, count) of the finite losses since the last validation

    def on_train_start(self, trainer, pl_module):
        # the step is the checkpoint's here: rows written after it (by the interrupted run) are dropped
        self.rows = [r for r in read_rows(self.csv) if int(float(r["step"])) <= trainer.global_step]
        self._losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # summed on the device (a skipped step's non-finite loss left out): no host read, so no GPU wait, per step
        for key in LOSSES:
            value = trainer.callback_metrics.get(key)
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
                finite = torch.isfinite(value)
                total, count = self._losses.get(key, (0.0, 0))
                self._losses[key] = (total + torch.where(finite, value, 0.0), count + finite.int())

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        row: dict = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update({k: float(total / count) for k, (total, count) in self._losses.items() if int(count) > 0})
        self._losses = {}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()
                    if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1})
        self.rows.append(row)
        if trainer.is_global_zero:
            write_rows(self.csv, self.rows)
            draw_curves(self.png, self.rows)


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.csv (values as written: strings); none when it does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict]) -> None:
    columns = ["epoch", "step"]
    for r in rows:
        columns += [k for k in r if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    pts = [(s, v) for s, v in pts if math.isfinite(v)]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (np.zeros(0), np.zeros(0))


def draw_curves(path: Path, rows: list[dict]) -> None:
    """Two panels side by side, against the optimizer step: the training loss and the headline val metric."""
    loss = next((k for k in LOSSES if any(r.get(k) not in (None, "") for r in rows)), None)
    metric = next((k for k in HEADLINES if any(r.get(k) not in (None, "") for r in rows)), None)
    panels = [_panel(*_series(rows, k), k) if k else _panel(np.zeros(0), np.zeros(0), "no data")
              for k in (loss, metric)]
    png = cv2.imencode(".png", np.hstack(panels))[1]
    with atomic_open(path) as f:
        f.write(png.tobytes())


W, H, MARGIN = 480, 320, 48


def _panel(x: np.ndarray, y: np.ndarray, title: str) -> np.ndarray:
    img = np.full((H, W, 3), 255, np.uint8)
    font, grey, ink = cv2.FONT_HERSHEY_SIMPLEX, (160, 160, 160), (40, 40, 40)
    cv2.putText(img, f"{title} vs step", (MARGIN, 22), font, 0.5, ink, 1, cv2.LINE_AA)
    x0, y0, x1, y1 = MARGIN, H - MARGIN // 2 - 8, W - 16, 36  # plot area: left, bottom, right, top
    cv2.rectangle(img, (x0, y1), (x1, y0), grey, 1)
    if len(x) == 0:
        return img
    xl, xh = float(x.min()), float(x.max())
    yl, yh = float(y.min()), float(y.max())
    xh, yh = (xh if xh > xl else xl + 1), (yh if yh > yl else yl + abs(yl) * 0.1 + 1e-6)
    px = x0 + (x - xl) / (xh - xl) * (x1 - x0)
    py = y0 - (y - yl) / (yh - yl) * (y0 - y1)
    pts = np.stack([px, py], 1).round().astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 90, 30), 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(int(v) for v in p), 3, (200, 90, 30), -1, cv2.LINE_AA)
    for value, yy in ((yh, y1 + 4), (yl, y0)):
        cv2.putText(img, f"{value:.4g}", (2, yy), font, 0.35, ink, 1, cv2.LINE_AA)
    for value, xx in ((xl, x0), (xh, x1 - 40)):
        cv2.putText(img, f"{value:.0f}", (int(xx), H - 8), font, 0.35, ink, 1, cv2.LINE_AA)
    cv2.putText(img, f"last {y[-1]:.4g}", (x1 - 110, y1 + 16), font, 0.45, ink, 1, cv2.LINE_AA)
    return img
