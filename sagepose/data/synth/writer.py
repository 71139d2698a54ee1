"""Write a synthetic split to disk as JPEGs plus one COCO keypoints json.

Image ``i`` of a split is rendered from ``np.random.default_rng([seed, crc32(split), i])``,
so any subset can be regenerated alone, worker processes split the work without
coordination, and ``train`` / ``val`` made with the same seed never share images.
The schema is not part of that stream (see :mod:`sagepose.data.synth.scene`): one seed, split,
style and size render the same JPEGs, boxes and head boxes in every schema, so a second schema's
labels for images already on disk are one more call with ``json_name`` and ``write_images=False``.
"""

from __future__ import annotations

import multiprocessing
import os
import zlib
from pathlib import Path

import cv2
import numpy as np

from sagepose.data.synth.scene import render_image
from sagepose.data.synth.styles import SynthStyle, get_style
from sagepose.errors import DataError
from sagepose.fileio import write_json_atomic
from sagepose.keypoints import KeypointSchema, load_schema

JPEG_QUALITY = 95


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` (0-based) of ``split``."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _render_and_write(job: tuple) -> tuple[dict, list[dict]]:
    """Render image ``index`` and write its JPEG (or check the one on disk is the same); return its COCO image
    entry and annotations (no ids)."""
    root, index, seed, split, schema, style, size, write_images = job
    img, persons = render_image(image_rng(seed, split, index), style=style, image_size=size, schema=schema)
    image_id = index + 1
    file_name = f"{split}/{image_id:06d}.jpg"
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{root / file_name}: JPEG encoding failed")
    path = root / file_name
    if write_images:
        path.write_bytes(data.tobytes())
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: image not found (write_images=False labels images already on disk)")
    elif path.read_bytes() != data.tobytes():
        raise DataError(f"{path}: differs from image {image_id} of split {split!r} with seed {seed}, style "
                        f"{style.name!r}, size {size[0]}x{size[1]}: these labels would not belong to it")
    anns = []
    for p in persons:
        kps = p["keypoints"]
        anns.append(
            dict(
                image_id=image_id,
                category_id=1,
                bbox=[round(v, 2) for v in p["bbox"]],
                head_box=[round(v, 2) for v in p["head_box"]],
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
    json_name: str | None = None,
    write_images: bool = True,
) -> str:
    """Render ``num_images`` images into ``out_dir/split/`` and write ``out_dir/<json_name>``.

    ``image_size`` is (width, height); ``json_name`` defaults to ``f"{split}.json"``. Every annotation has
    COCO's fields plus ``head_box`` ``[x1, y1, x2, y2]`` px, the tight box of the rendered head (MPII's head
    rectangle; :func:`sagepose.data.synth.render.head_box`). Output is byte-identical for any ``workers``, and
    the JPEGs and boxes are the same for every ``schema``. ``write_images=False`` writes only the json, for
    images this seed, split, style and size already rendered there (each is re-encoded and compared:
    a missing or different file is an error naming it), e.g. COCO labels beside an MPII split::

        generate_dataset(root, n, seed=s, split="val", schema="mpii", style="sports")  # root/val.json
        generate_dataset(root, n, seed=s, split="val", schema="coco", style="sports",
                         json_name="val_coco.json", write_images=False)

    Returns the json path.
    """
    root = Path(out_dir)
    (root / split).mkdir(parents=True, exist_ok=True)
    schema, style = load_schema(schema), get_style(style)
    size = (int(image_size[0]), int(image_size[1]))
    jobs = [(root, i, seed, split, schema, style, size, write_images) for i in range(num_images)]
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
    json_path = root / (f"{split}.json" if json_name is None else json_name)
    coco = dict(
        info=dict(description=f"sagepose synthetic people, style={style.name}, seed={seed}"),
        images=images,
        annotations=annotations,
        categories=coco_categories(schema),
    )
    write_json_atomic(json_path, coco)
    return str(json_path)
