"""sagepose infer MODEL INPUT [--checkpoint F | --random-weights] [--det-json D | --detector DET.onnx] [--out DIR]
[--overwrite] [--format coco|dlc] [--exact] [--dtype T]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("model", help="named weights (vitpose-b-coco), zoo name (vitpose-b), bundled recipe name "
                                 "(demo_tiny_vit), YAML recipe, a checkpoint trained or converted by sagepose "
                                 "(it carries its model), or an ONNX file sagepose export wrote (run by onnxruntime)")
    p.add_argument("input", help="image, folder of images, or video")
    p.add_argument("--checkpoint", default=None, help="weights (sagepose .ckpt, MMPose or ViTPose file); a "
                                                      "checkpoint sagepose trained rebuilds the model it was "
                                                      "trained as")
    p.add_argument("--det-json", default=None, help="person boxes: COCO results json (with --images-json) "
                                                    "or {file_name: [[x1,y1,x2,y2,score], ...]}")
    p.add_argument("--detector", default=None, help="an ONNX person detector (MMDeploy end-to-end YOLOX / RTMDet, "
                                                    "or raw YOLOX) run on each image / frame: the person boxes")
    p.add_argument("--nms-thr", type=float, default=0.45, help="the detector's NMS IoU threshold (raw YOLOX)")
    p.add_argument("--det-every", type=int, default=1, metavar="K",
                   help="video with --detector: detect on every K-th frame, boxes from the previous frame's "
                        "keypoints between (default 1: every frame)")
    p.add_argument("--batch-frames", type=int, default=8, help="video: the people of this many frames in one "
                                                               "forward pass (when every frame's boxes are known)")
    p.add_argument("--smooth", action="store_true", help="video: One-Euro smoothing of the keypoints")
    p.add_argument("--smooth-min-cutoff", type=float, default=1.0, help="One-Euro minimum cutoff (Hz)")
    p.add_argument("--smooth-beta", type=float, default=0.01, help="One-Euro speed coefficient")
    p.add_argument("--images-json", default=None, help="COCO json whose images map ids to file names")
    p.add_argument("--det-thr", type=float, default=0.3, help="minimum detection score (json or detector)")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="minimum keypoint score to draw")
    p.add_argument("--out", default="runs/infer", help="output folder (results.json, vis/); one holding a previous "
                                                   "run's outputs is kept and OUT-2, OUT-3, ... written instead")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds a previous run: the "
                                                            "files that run wrote (results, vis/, tables) are removed")
    p.add_argument("--format", default="coco", choices=["coco", "dlc"],
                   help="coco: results.json (COCO keypoint results; always written); dlc: also DeepLabCut's CSV per "
                        "video and image folder, NAMEDLC_sagepose_MODEL.csv")
    p.add_argument("--random-weights", action="store_true",
                   help="run a zoo name or recipe without any checkpoint (random weights: for smoke tests only)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (torch); an ONNX file: cpu, cuda, tensorrt")
    p.add_argument("--no-render", action="store_true")
    p.add_argument("--dataset", default=None, help="a multi-dataset checkpoint: predict this dataset's keypoints, "
                                                   "in its schema (default: the model's outputs, e.g. the union)")
    p.add_argument("--exact", action="store_true", help="MMPose's arithmetic operation for operation: its heatmaps and "
                                                        "scores bit for bit on the same torch and CPU, keypoints to "
                                                        "float32 rounding (slower)")
    p.add_argument("--test-scales", type=float, nargs="+", default=None, metavar="S",
                   help="multi-scale test: box scale factors, e.g. 0.75 1 1.25 (default: model.test_scales)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="backbone and head precision: bfloat16 is faster on CPUs with native bf16 and on GPUs, "
                        "float16 on GPUs (heatmaps within ~1e-2 of float32)")


def scorer_name(args) -> str:
    """DeepLabCut's scorer of the tables: ``sagepose_`` and the weights' name (the checkpoint's, else the model's;
    a training run's ``RUN/checkpoints/best.ckpt``: ``RUN_best``)."""
    import re
    from pathlib import Path

    path = Path(args.checkpoint or args.model)
    name = path.stem if path.suffix in (".ckpt", ".pth", ".pt", ".pt2", ".onnx", ".bin", ".yaml", ".yml") else path.name
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        name = f"{path.parent.parent.name}_{name}"
    return "sagepose_" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def output_folder(out: str, overwrite: bool, clear) -> str:
    """The folder a run writes into (:func:`sagepose.fileio.fresh_output_dir`), said in one line when it is not
    ``out``; with ``overwrite`` the previous run's files are removed first by ``clear(folder)``."""
    from pathlib import Path

    from sagepose.fileio import fresh_output_dir

    path = Path(out)
    folder, moved = fresh_output_dir(path if path.name else path.resolve(), overwrite)
    if moved:
        print(f"{out} holds a previous run's outputs: writing to {folder} (--overwrite to replace them)")
    elif overwrite and folder.is_dir():
        removed = clear(folder)
        if removed:
            print(f"--overwrite: removed the previous run's {', '.join(p.name for p in removed)} from {folder}")
    return str(folder)


def run(args) -> int:
    import sagepose
    from sagepose.infer import clear_previous_run, image_ids, load_boxes, run_inference

    model = sagepose.load(args.model, checkpoint=args.checkpoint, device=args.device, exact=args.exact,
                          dtype=args.dtype, random_weights=args.random_weights)
    if args.test_scales:
        from sagepose.models.estimator import check_test_scales

        model.test_scales = check_test_scales(args.test_scales)
    if args.dataset:
        from sagepose.dataset_view import dataset_view

        model = dataset_view(model, args.checkpoint or args.model, args.dataset)
    if args.det_json and args.detector:
        raise ValueError("--det-json and --detector both give boxes: pass one")
    boxes = load_boxes(args.det_json, args.images_json, args.det_thr) if args.det_json else None
    detector = None
    if args.detector:
        from sagepose.detect import Detector

        detector = Detector(args.detector, score_thr=args.det_thr, nms_thr=args.nms_thr,
                            device="cpu" if args.device == "cpu" else "cuda")
    ids = image_ids(args.images_json) if args.images_json else None
    out = output_folder(args.out, args.overwrite, clear_previous_run)
    done = run_inference(model, args.input, out, boxes=boxes, render=not args.no_render,
                         score_thr=args.kpt_thr, ids=ids, detector=detector, fmt=args.format,
                         scorer=scorer_name(args),
                         video=dict(det_every=args.det_every, batch_frames=args.batch_frames, progress=True,
                                    smooth=dict(min_cutoff=args.smooth_min_cutoff, beta=args.smooth_beta)
                                    if args.smooth else None))
    for line in done.summary():
        print(line)
    tables = [str(p) for p in done.written if p.suffix == ".csv"]
    n = len(done.rows)
    print(f"{n} pose{'s' * (n != 1)} -> {out}/results.json" + ("" if args.no_render else f", {out}/vis/")
          + (f"; DeepLabCut tables: {', '.join(tables)}" if tables else ""))
    return 0
