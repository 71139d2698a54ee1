"""sagepose convert IN OUT [--model NAME] [--format FMT] [--merge]"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("input", help="checkpoint to read: MMPose 1.x / 0.x, ViTPose repository, Sapiens pretrain or pose "
                                 "(.pth, TorchScript or torch.export .pt2), Lightning .ckpt or sagepose")
    p.add_argument("output", help="sagepose checkpoint to write (atomically)")
    p.add_argument("--model", default=None, help="zoo model the weights are for (default: the one a training "
                                                "checkpoint was trained as, else the one they fit exactly)")
    p.add_argument("--format", default=None, help="source format: mmpose, vitpose, sapiens-pretrain, mae, lightning, "
                                                 "sagepose (default: detected from the keys)")
    p.add_argument("--merge", action="store_true", help="an adapter run's checkpoint (model.lora): fold the adapters "
                                                       "into its base (model.init_checkpoint) and write the whole, "
                                                       "plain model")


def run(args) -> int:
    from sagepose.convert import convert

    info = convert(args.input, args.output, model=args.model, fmt=args.format, merge=args.merge)
    part = " (backbone only: the head keeps its initialisation)" if info["backbone_only"] else ""
    print(f"{args.input} ({info['source_format']}) -> {info['output']}: {info['tensors']} tensors for "
          f"{info['model']} with {info['num_keypoints']} keypoints{part}")
    print(f"load it with sagepose.load({info['output']!r}) (it names its model), or sagepose infer "
          f"{info['output']} IMAGES")
    return 0
