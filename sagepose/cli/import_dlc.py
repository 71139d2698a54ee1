"""sagepose import dlc CSV|PROJECT [CSV ...] --out OUT.json [--image-root DIR] [--flip-pairs a:b,...]
[--box image|labels] [--box-pad F] [--skeleton a-b,b-c] [--skip-missing] [--name NAME] [--overwrite]

DeepLabCut / lightning-pose labeled-data CSVs (or a DLC project folder: every ``labeled-data/*/CollectedData*.csv``)
-> one COCO keypoint json that references the images (never copies them), their paths relative to the json's
folder; its category is also a keypoint schema (``model.schema=OUT.json``). See :mod:`sagepose.data.dlc`.
"""
from __future__ import annotations

import os

FORMATS = ("dlc",)


def add_arguments(p):
    p.add_argument("format", choices=FORMATS, help="source format: dlc (DeepLabCut / lightning-pose CSV)")
    p.add_argument("sources", nargs="+", metavar="CSV|PROJECT",
                   help="labeled-data CSVs (CollectedData*.csv) or DeepLabCut project folders, merged into one json")
    p.add_argument("--out", required=True, metavar="OUT.json", help="COCO keypoint json to write")
    p.add_argument("--image-root", default=None, metavar="DIR",
                   help="folder the CSVs' image paths are relative to (default: inferred per CSV: its folder or "
                        "the folder above holding its images, e.g. the DLC project for labeled-data/<video>/)")
    p.add_argument("--flip-pairs", default=None, metavar="a:b,...",
                   help="left/right pairs by name (default: inferred from left/right names; '' for none)")
    p.add_argument("--skeleton", default=None, metavar="a-b,b-c", help="skeleton edges by name (default none)")
    p.add_argument("--box", choices=("image", "labels"), default="image",
                   help="single-animal box: the whole image, or the labels' extent padded (multi-animal: labels)")
    p.add_argument("--box-pad", type=float, default=1.25, metavar="F", help="labels-box padding factor (1.25)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out (and count) frames whose image is missing instead of stopping")
    p.add_argument("--name", default=None, help="category / schema name (default: the CSV's folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.json")


def run(args) -> int:
    from sagepose.data.dlc import dlc_to_coco, write_coco
    from sagepose.fileio import check_output_file

    check_output_file(args.out, args.overwrite)  # before reading: the labels a user corrected are not replaced
    coco = dlc_to_coco(args.sources, image_root=args.image_root, flip_pairs=args.flip_pairs, box=args.box,
                       box_pad=args.box_pad, skip_missing=args.skip_missing, skeleton=args.skeleton, name=args.name)
    out = write_coco(coco, args.out)
    info, cat = coco["info"], coco["categories"][0]
    pairs = ", ".join(f"{a}:{b}" for a, b in cat["flip_pairs"]) or "none"
    csvs = f" from {len(info['sources'])} CSVs" if len(info["sources"]) > 1 else ""
    print(f"{out}: {info['frames']} frames{csvs}, {len(coco['annotations'])} annotations, {len(cat['keypoints'])} "
          f"keypoints, {len(cat['flip_pairs'])} flip pairs ({pairs}), {info['skipped_missing_images']} skipped; "
          f"images under {info['image_root']}, their paths relative to {os.path.dirname(os.path.abspath(out))}")
    return 0
