"""Write a synthetic split to disk as JPEGs plus one COCO keypoints json.

Image ``i`` of a split is rendered from ``np.random.default_rng([seed, crc32(split), i])``,
so any subset can be regenerated alone, worker processes split the work without
coordination, and ``train`` / ``val`` made with the same seed never share images.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import zlib
from pathlib import Path

import cv2
import numpy as np

from sagepose.data.synth.scene import render_image
from sagepose.data.synth.styles import SynthStyle, get_style
from sagepose.keypoints import KeypointSchema, get_schema

JPEG_QUALITY = 95


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` (0-based) of ``split``."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _render_and_write(job: tuple) -> tuple[dict, list[dict]]:
    """Render image ``index`` and write its JPEG; return its COCO image entry and annotations (no ids)."""
    root, index, seed, split, schema, style, size = job
    img, persons = render_image(image_rng(seed, split, index), style=style, image_size=size, schema=schema)
    image_id = index + 1
    file_name = f"{split}/{image_id:06d}.jpg"
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{root / file_name}: JPEG encoding failed")
    (root / file_name).write_bytes(data.tobytes())
    anns = []
    for p in persons:
        kps = p["keypoints"]
        anns.append(
            dict(
                image_id=image_id,
                category_id=1,
                bbox=[round(v, 2) for v in p["bbox"]],
                area=p["area"],
                iscrowd=0,
                num_keypoints=int(np.count_nonzero(kps[:, 2] > 0)),
                keypoints=[
                    round(float(v), 2) if j % 3 < 2 else int(v) for j, v in enumerate(kps.reshape(-1))
                ],
            )
        )
    return dict(id=image_id, file_name=file_name, width=img.shape[1], height=img.shape[0]), anns


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def coco_categories(schema: KeypointSchema) -> list[dict]:
    return [
        dict(
            id=1,
            name="person",
            supercategory="person",
            keypoints=list(schema.keypoints),
            skeleton=[[a + 1, b + 1] for a, b in schema.skeleton],
        )
    ]


def generate_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    split: str = "train",
    schema: str | KeypointSchema = "coco",
    style: str | SynthStyle = "default",
    image_size: tuple[int, int] = (320, 256),
    workers: int = 1,
) -> str:
    """Render ``num_images`` images into ``out_dir/split/`` and write ``out_dir/split.json``.

    ``image_size`` is (width, height). Output is byte-identical for any ``workers``.
    Returns the json path.
    """
    root = Path(out_dir)
    (root / split).mkdir(parents=True, exist_ok=True)
    schema, style = get_schema(schema), get_style(style)
    size = (int(image_size[0]), int(image_size[1]))
    jobs = [(root, i, seed, split, schema, style, size) for i in range(num_images)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            results = pool.map(
                _render_and_write, jobs, chunksize=max(1, min(64, num_images // (4 * workers)))
            )
    else:
        results = [_render_and_write(job) for job in jobs]
    images, annotations = [], []
    for image, anns in results:
        images.append(image)
        for ann in anns:
            annotations.append(dict(id=len(annotations) + 1, **ann))
    json_path = root / f"{split}.json"
    coco = dict(
        info=dict(description=f"sagepose synthetic people, style={style.name}, seed={seed}"),
        images=images,
        annotations=annotations,
        categories=coco_categories(schema),
    )
    json_path.write_text(json.dumps(coco))
    return str(json_path)
