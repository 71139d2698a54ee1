"""sagepose split LABELS.json --val 0.2 [--test 0.1] [--seed 0] [--by image|video] [--out DIR] [--image-root DIR]
[--overwrite]

A COCO keypoint json (e.g. ``sagepose import dlc``'s) -> ``train.json``, ``val.json`` (and ``test.json``) beside it
or in ``--out DIR``: disjoint by image, reproducible for a seed; ``--by video`` keeps each video folder wholly in
one split. Written into another folder than the input's, relative image paths are re-expressed relative to it, so
every split finds its images from anywhere. See :mod:`sagepose.data.split`.
"""
from __future__ import annotations

import os
import sys


def add_arguments(p):
    p.add_argument("labels", metavar="LABELS.json", help="COCO keypoint json to split")
    p.add_argument("--val", type=float, required=True, metavar="F", help="fraction of the images for val.json")
    p.add_argument("--test", type=float, default=0.0, metavar="F",
                   help="fraction of the images for test.json (default 0: none written)")
    p.add_argument("--seed", type=int, default=0, help="the draw: the same seed gives the same split (default 0)")
    p.add_argument("--by", choices=("image", "video"), default="image",
                   help="image: images drawn at random; video: each video (an image's folder, e.g. DLC's "
                        "labeled-data/<video>/) wholly in one split, sizes close to the fractions")
    p.add_argument("--out", default=None, metavar="DIR", help="folder to write the splits into (default: LABELS' "
                                                              "folder)")
    p.add_argument("--image-root", default=None, metavar="DIR",
                   help="folder LABELS' image paths are relative to, when not its own folder (as data.image_root)")
    p.add_argument("--overwrite", action="store_true", help="replace existing train / val / test jsons")


def run(args) -> int:
    from sagepose.data.coco import read_json, rebase_file_names, resolve_image_root
    from sagepose.data.split import check_fractions, split_coco
    from sagepose.fileio import check_output_file, write_json_atomic

    check_fractions(args.val, args.test)  # before reading the file
    path = os.fspath(args.labels)
    data = read_json(path)
    parts = split_coco(data, val=args.val, test=args.test, seed=args.seed, by=args.by, where=path)
    src_dir = os.path.dirname(os.path.abspath(path))
    out_dir = os.path.abspath(args.out) if args.out else src_dir
    targets = {name: check_output_file(os.path.join(out_dir, f"{name}.json"), args.overwrite) for name in parts}
    if out_dir != src_dir or args.image_root is not None:
        root = resolve_image_root(path, data, args.image_root)
        for name, part in parts.items():
            parts[name] = {**part, "images": rebase_file_names(part["images"], root, out_dir),
                           "info": {**part["info"], "image_root": out_dir}}
    for name in ("val", "test"):
        stale = os.path.join(out_dir, f"{name}.json")
        if name not in parts and os.path.exists(stale):
            print(f"sagepose: warning: {stale} is an earlier split's, not this one's (no --{name}): remove it or "
                  f"pass --{name}", file=sys.stderr)
    total = len(data["images"])
    for name, part in parts.items():
        write_json_atomic(targets[name], part)
        s = part["info"]["split"]
        share = s["images"] / max(total, 1)
        line = f"{targets[name]}: {s['images']} images ({share:.0%}), {s['annotations']} annotations"
        if args.by == "video":
            shown = ", ".join(v or "." for v in s["videos"][:6]) + (", ..." if len(s["videos"]) > 6 else "")
            line += f", {len(s['videos'])} videos ({shown})"
        print(line)
    return 0
