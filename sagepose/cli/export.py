"""sagepose export MODEL [--checkpoint F | --random-weights] --out model.onnx [--overwrite] [--opset 18]
[--dynamic-batch] [--batch N] [--fp16]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("model", help="named weights (vitpose-b-coco), zoo name (vitpose-b), bundled recipe name "
                                 "(demo_tiny_vit), YAML recipe, or a checkpoint trained or converted by sagepose")
    p.add_argument("--checkpoint", default=None, help="weights (sagepose .ckpt, MMPose, ViTPose or Sapiens file)")
    p.add_argument("--out", required=True, help="ONNX file to write (NAME.onnx; weights past 2 GB go to "
                                                "NAME.onnx.data beside it)")
    p.add_argument("--opset", type=int, default=18, help="ONNX operator set (default 18, the exporter's own; 17 for "
                                                         "TensorRT 8.6 is converted down, not for every graph)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: a fixed --batch)")
    p.add_argument("--batch", type=int, default=1, help="the graph's batch size without --dynamic-batch")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 in and out (for GPUs)")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and its .data file) if it exists")
    p.add_argument("--random-weights", action="store_true",
                   help="export a zoo name or recipe without any checkpoint (random weights: for tests only)")


def run(args) -> int:
    import sagepose
    from sagepose.fileio import check_output_file
    from sagepose.onnx_model import export_onnx

    for path in (args.out, args.out + ".data"):  # before the minutes an export takes
        check_output_file(path, args.overwrite)
    model = sagepose.load(args.model, checkpoint=args.checkpoint, fuse=False, random_weights=args.random_weights)
    info = export_onnx(model, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch, batch=args.batch,
                       fp16=args.fp16)
    batch = "any batch" if info["dynamic_batch"] else f"batch {info['batch']}"
    data = f" + {info['data_file']}" if info["data_file"] else ""
    print(f"{info['path']}{data}: opset {info['opset']}, {batch}, {'float16' if info['fp16'] else 'float32'}, "
          f"{info['bytes'] / 2**20:.1f} MiB, {info['seconds']:.0f} s; schema {model.schema.name} "
          f"({model.schema.num_keypoints} keypoints), input {model.input_size[0]}x{model.input_size[1]}")
    print(f"predict with sagepose.load({info['path']!r}).predict(image, boxes), or sagepose infer {info['path']} "
          "IMAGES")
    return 0
