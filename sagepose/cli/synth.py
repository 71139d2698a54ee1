"""sagepose synth OUT [--num N] [--seed S] [--split train] [--schema coco] [--style default] [--size W H]
[--json-name NAME --labels-only]"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("out", metavar="OUT", help="output folder: OUT/SPLIT/*.jpg and OUT/SPLIT.json")
    p.add_argument("--num", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (image i renders from seed, split, i)")
    p.add_argument("--split", default="train", help="split name: folder and json name (default train)")
    p.add_argument("--schema", default="coco", help="keypoint schema: coco, mpii, aic (default coco)")
    p.add_argument("--style", default="default", help="style: default, indoor, sports, surveillance")
    p.add_argument("--size", type=int, nargs=2, default=(320, 256), metavar=("W", "H"), help="image size")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical for any count)")
    p.add_argument("--json-name", default=None, help="the json's name (default SPLIT.json), e.g. val_coco.json to "
                                                     "label a split in a second schema")
    p.add_argument("--labels-only", action="store_true", help="write the json only: the split's images are on disk "
                                                              "already (checked to be the same images)")


def run(args) -> int:
    from sagepose.data.synth import generate_dataset

    path = generate_dataset(
        args.out,
        args.num,
        seed=args.seed,
        split=args.split,
        schema=args.schema,
        style=args.style,
        image_size=tuple(args.size),
        workers=args.workers,
        json_name=args.json_name,
        write_images=not args.labels_only,
    )
    print(path)
    return 0
