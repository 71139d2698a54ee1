"""sagepose show-data CONFIG [--split train|val] [--num 16] [--epoch 0] [--out FILE.png] [--overwrite] [key=value ...]

A contact sheet of the crops a run trains (or validates) on, with their keypoints and skeleton drawn where the
model is told they are -- so a wrong schema, flip pair, box or scale shows before any training (MMPose's
``browse_dataset``). The crops come from the loaders training builds (:func:`sagepose.train.loaders.build_loaders`:
the same records, sampler, augmentation draws of ``(trainer.seed, epoch, index)``, keypoints mapped by the crop's
own matrix), training's batch-level photometric / degradation / dropout applied as on the device; ``--split val``
shows the val crops (no augmentation). Default output ``show-data-<split>.png`` in the working directory.
"""
from __future__ import annotations

import math

TILE = 256  # crops smaller than this are enlarged by a whole factor (nearest: pixels stay pixels), larger than
# twice this reduced to it, so keypoint markers are legible either way
GAP = 4  # px between tiles
CAPTION = 16  # px strip under each tile: the sample's index and image
BACKGROUND = (48, 48, 48)


def add_arguments(p):
    p.add_argument("config", help="YAML recipe (path or bundled name), as sagepose train takes it")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.train_json=train.json")
    p.add_argument("--split", choices=("train", "val"), default="train",
                   help="train: augmented training crops (default); val: validation crops")
    p.add_argument("--num", type=int, default=16, help="crops to show, spread evenly over the set (default 16)")
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose augmentation draws to show (default 0)")
    p.add_argument("--out", default=None, metavar="FILE.png", help="image to write (default show-data-<split>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.png if it exists")


def data_model(cfg):
    """What the loaders need of the run's model -- its schema, input size, codec, test scales -- built as training
    builds it, on the meta device: no weights allocated or read (``init_checkpoint`` left out), so a Sapiens
    recipe costs no more than the tiny one. (Raw heatmap output: the softmax head's target mass needs real numbers.)"""
    import dataclasses

    import torch

    from sagepose.models import build_model_from_config

    schema = None
    if cfg.data.datasets:
        from sagepose.data.multi import plan_datasets

        schema = plan_datasets(cfg).schema
    with torch.device("meta"):
        return build_model_from_config(dataclasses.replace(cfg.model, init_checkpoint=None, heatmap_output="raw"),
                                       schema=schema)


def sample_crops(cfg, split: str = "train", num: int = 16, epoch: int = 0):
    """``num`` crops of ``split`` spread evenly over its dataset, as the model sees them -> ``(batch, dataset,
    indices, schema)``: ``batch["img"]`` (B, H, W, 3) uint8 BGR after the device augmentation (train),
    ``batch["keypoints"]`` (B, K, 2) crop px, ``batch["visible"]`` (B, K) (x ``labeled``: several datasets)."""
    import numpy as np
    import torch

    from sagepose.data import batch_aug, collate
    from sagepose.train.loaders import build_loaders

    if num < 1:
        raise ValueError(f"--num {num}: expected at least 1 crop")
    key = "data.train_json" if split == "train" else "data.val_json"
    if not cfg.data.datasets and not getattr(cfg.data, key.split(".")[1]):
        raise ValueError(f"{key} is not set: nothing to show for --split {split}")
    model = data_model(cfg)
    loaders = build_loaders(cfg, model, train=split == "train", val=split == "val")
    if split not in loaders:
        raise ValueError(f"no {split} set in this config (data.datasets with no {key.split('.')[1]})")
    loader = loaders[split]
    if isinstance(loader, list):  # several val sets: one after another, in the model's (union) keypoints
        dataset = torch.utils.data.ConcatDataset([one.dataset for one in loader])
    else:
        dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    indices = sorted({int(round(i)) for i in np.linspace(0, len(dataset) - 1, min(num, len(dataset)))})
    batch = collate([dataset[i] for i in indices])
    if "labeled" in batch:
        batch["visible"] = batch["visible"] * batch["labeled"].to(batch["visible"].dtype)
    if split == "train":  # as TopDownModule._augment does on the device, before normalising
        d, keys = cfg.data, batch_aug.sample_keys(cfg.trainer.seed, epoch, batch["index"])
        crops = batch_aug.augment(batch["img"], keys, photometric_prob=d.photometric_prob, blur_prob=d.blur_prob,
                                  noise_prob=d.noise_prob, coarse_dropout_prob=d.coarse_dropout_prob)
        batch["img"] = crops.clamp(0, 255).to(torch.uint8)
    return batch, dataset, indices, model.schema


def tile_scale(width: int, height: int) -> float:
    """The factor a (width, height) crop is drawn at on the sheet (see :data:`TILE`)."""
    side = max(width, height)
    if side < TILE:
        return float(math.ceil(TILE / side))
    return 2 * TILE / side if side > 2 * TILE else 1.0


def sheet_size(n: int, width: int, height: int) -> tuple[int, int]:
    """(width, height) px of the sheet of ``n`` crops of (width, height): a near-square grid of tiles, each the crop
    at :func:`tile_scale` over a :data:`CAPTION` strip, :data:`GAP` px apart and around."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    s = tile_scale(width, height)
    tw, th = round(width * s), round(height * s) + CAPTION
    return cols * tw + (cols + 1) * GAP, rows * th + (rows + 1) * GAP


def contact_sheet(crops, keypoints, visible, schema, captions: list[str]):
    """crops (B, H, W, 3) uint8 BGR, keypoints (B, K, 2) crop px, visible (B, K) -> (sheet (H', W', 3) uint8,
    keypoints (B, K, 2) in sheet px): each crop scaled by :func:`tile_scale`, its labelled keypoints and skeleton
    drawn by :func:`sagepose.viz.draw_poses`, its caption under it."""
    import cv2
    import numpy as np

    from sagepose.viz import draw_poses

    n, h, w = crops.shape[:3]
    s = tile_scale(w, h)
    tw, th = round(w * s), round(h * s)
    sheet_w, sheet_h = sheet_size(n, w, h)
    cols = math.ceil(math.sqrt(n))
    sheet = np.empty((sheet_h, sheet_w, 3), np.uint8)
    sheet[:] = BACKGROUND
    placed = np.zeros((n, keypoints.shape[1], 2), np.float32)
    interpolation = cv2.INTER_NEAREST if s >= 1 else cv2.INTER_AREA
    for i in range(n):
        tile = cv2.resize(np.ascontiguousarray(crops[i]), (tw, th), interpolation=interpolation)
        kp = (keypoints[i] + 0.5) * np.float32(s) - 0.5  # pixel centres stay pixel centres
        tile = draw_poses(tile, kp[None], visible[i][None].astype(np.float32), schema, 0.5)
        x, y = GAP + (i % cols) * (tw + GAP), GAP + (i // cols) * (th + CAPTION + GAP)
        sheet[y:y + th, x:x + tw] = tile
        text = _fit(captions[i], tw)
        cv2.putText(sheet, text, (x + 2, y + th + CAPTION - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1,
                    cv2.LINE_AA)
        placed[i] = kp + np.float32([x, y])
    return sheet, placed


def _fit(text: str, width: int) -> str:
    """``text`` cut from the left (``..`` marking the cut) to fit ``width`` px in the caption font."""
    import cv2

    while len(text) > 3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > width - 4:
        text = ".." + text[3:]
    return text


def _caption(dataset, index: int, image_id: int) -> str:
    records = getattr(dataset, "records", None)
    if records is None:
        return f"{index}: image {image_id}"
    parts = records[index].image_path.replace("\\", "/").split("/")
    return f"{index}: {'/'.join(parts[-2:])}"


def run(args) -> int:
    import cv2

    from sagepose.config import load_config
    from sagepose.fileio import atomic_open, check_output_file

    cfg = load_config(args.config, args.overrides)
    out = check_output_file(args.out or f"show-data-{args.split}.png", args.overwrite)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: expected a .png file")
    batch, dataset, indices, schema = sample_crops(cfg, args.split, args.num, args.epoch)
    crops, keypoints, visible = batch["img"].numpy(), batch["keypoints"].numpy(), batch["visible"].numpy()
    captions = [_caption(dataset, i, int(image_id)) for i, image_id in zip(indices, batch["image_id"].tolist())]
    sheet, _ = contact_sheet(crops, keypoints, visible, schema, captions)
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise OSError(f"{out}: cannot encode the sheet as PNG")
    with atomic_open(out, "wb") as f:
        f.write(png.tobytes())
    h, w = crops.shape[1:3]
    how = (f"augmented as in epoch {args.epoch} (trainer.seed={cfg.trainer.seed})" if args.split == "train"
           else "validation crops, no augmentation")
    print(f"{out}: {len(indices)} of {len(dataset)} {args.split} crops ({w}x{h}), {how}; schema {schema.name}: "
          f"{schema.num_keypoints} keypoints, {len(schema.flip_pairs)} flip pairs, {len(schema.skeleton)} skeleton "
          f"edges")
    return 0
