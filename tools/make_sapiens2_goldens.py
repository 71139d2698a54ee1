"""Write Sapiens2 goldens for tests/test_sapiens2.py by running the OFFICIAL code (facebookresearch/sapiens2).

    python tools/make_sapiens2_goldens.py [SNAPSHOT]

SNAPSHOT: a git directory of facebookresearch/sapiens2 (default: the ``fetch`` tool's mirror,
/work/.mirror/facebookresearch+sapiens2/repo). Its two model files -- the standalone backbone
``sapiens/backbones/standalone/sapiens2.py`` and the pose head ``sapiens/pose/src/models/heads/
pose_heatmap_head.py`` -- are extracted with ``git show`` into a temporary folder and imported from there.
The head file's package imports (the registry, a loss, an accuracy helper used only by its ``loss``) are
stood in for by small stubs, so the official package's training dependencies (accelerate, cv2, ...) are not
needed; the modules that compute are the official ones, unchanged. Needs torch and safetensors only.

Writes tests/goldens/sapiens2/:

* ``shrunk.safetensors`` -- the state dict, in the official key layout (``backbone.*``, ``decode_head.*``,
  the bfloat16 ``rope_embed.periods`` buffer included), of a shrunk pose model: 3 blocks, the middle one
  grouped-query, embed 96, 4 heads (head dim 24: its RoPE periods are inexact in bfloat16), SwiGLU width 128,
  8 storage tokens, a head of (32, 24) deconvs, (24, 16) 1x1 convs, 17 outputs; every parameter drawn from a
  seeded generator (layer scales and norm weights around 1, so the attention branch weighs as much as the
  rest -- the released init's 1e-4 layer scale would hide it);
* ``io.safetensors`` -- for two input sizes (h, w) = (64, 48) and (48, 80), batch 2: the inputs, the
  official backbone's feature map and the head's heatmaps, float32; once as the official module computes by
  default (RoPE in bfloat16) and once with ``pos_embed_rope_dtype="fp32"`` (``*_fp32rope_*``);
* ``official.json`` -- the shrunk config, the platform (``tests/float_platform.py``: the bfloat16 rounding of
  queries and keys amplifies a float32 last-bit difference, so the default's outputs reproduce to 1e-5 only
  where float32 matmuls round as here), and the official parameter count of every size
  (0.1b backbone only; the pose sizes backbone + its config's head, 308 keypoints), built on the meta device.
"""
import json
import platform
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from float_platform import GOLDEN_THREADS, signature  # noqa: E402

OUT = ROOT / "tests" / "goldens" / "sapiens2"
MIRROR = "/work/.mirror/facebookresearch+sapiens2/repo"
BACKBONE_FILE = "sapiens/backbones/standalone/sapiens2.py"
HEAD_FILE = "sapiens/pose/src/models/heads/pose_heatmap_head.py"
REGISTRY_FILE = "sapiens/registry.py"
SIZES_HW = ((64, 48), (48, 80))
SHRUNK = dict(embed_dims=96, num_layers=3, num_heads=4, feedforward_channels=128, num_tokenizer_layers=1)
SHRUNK_GQA_LAYERS = (1,)  # the official split (8 full-attention blocks at each end) would leave 3 blocks all full
SHRUNK_HEAD = dict(deconv_out_channels=(32, 24), deconv_kernel_sizes=(4, 4), conv_out_channels=(24, 16),
                   conv_kernel_sizes=(1, 1), out_channels=17)
# The pose configs' heads (sapiens/pose/configs/keypoints308/*/sapiens2_*_keypoints308_*-1024x768.py)
POSE_HEADS = {"sapiens2_0.4b": ((1024, 768), (512, 512, 256)), "sapiens2_0.8b": ((1024, 768), (512, 512, 256)),
              "sapiens2_1b": ((1536, 1024), (768, 512, 256)), "sapiens2_5b": ((1024, 768), (512, 512, 256))}


def extract(snapshot: str, dest: Path) -> str:
    """The three official files into ``dest`` (same relative paths); returns the snapshot's commit."""
    for rel in (BACKBONE_FILE, HEAD_FILE, REGISTRY_FILE):
        text = subprocess.run(["git", "-C", snapshot, "show", f"HEAD:{rel}"], check=True, capture_output=True,
                              text=True).stdout
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    return subprocess.run(["git", "-C", snapshot, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def load_file_as(name: str, path: Path) -> types.ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_official(dest: Path):
    """(Sapiens2 backbone class, PoseHeatmapHead class) from the extracted files, package imports stubbed."""
    for pkg in ("sapiens", "sapiens.pose", "sapiens.pose.src", "sapiens.pose.src.models",
                "sapiens.pose.src.models.heads", "sapiens.pose.src.evaluators"):
        module = types.ModuleType(pkg)
        module.__path__ = [str(dest / pkg.replace(".", "/"))]
        sys.modules[pkg] = module
    registry = load_file_as("sapiens.registry", dest / REGISTRY_FILE)
    accuracy = types.ModuleType("sapiens.pose.src.evaluators.keypoints308_evaluator")
    accuracy.pose_pck_accuracy = None  # only the head's training loss uses it
    sys.modules[accuracy.__name__] = accuracy

    @registry.MODELS.register_module(name="NoLoss")
    class NoLoss(nn.Module):  # the head builds its loss module in __init__; the loss holds no parameters
        pass

    backbone = load_file_as("sapiens2_official_backbone", dest / BACKBONE_FILE)
    head = load_file_as("sapiens.pose.src.models.heads.pose_heatmap_head", dest / HEAD_FILE)
    return backbone.Sapiens2, head.PoseHeatmapHead


class OfficialPose(nn.Module):
    """What PoseTopdownEstimator.forward does at inference: backbone(x)[0] into the head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.decode_head = backbone, head

    def forward(self, x):
        feats = self.backbone(x)[0]
        return feats, self.decode_head(feats)


def build_official(Sapiens2, Head, arch: str, head: dict | None, **backbone_kw) -> nn.Module:
    backbone = Sapiens2(arch=arch, img_size=(1024, 768), patch_size=16, final_norm=True, use_tokenizer=False,
                        with_cls_token=True, out_type="featmap", **backbone_kw)
    if head is None:
        return backbone
    return OfficialPose(backbone, Head(in_channels=backbone.embed_dims, loss_decode=dict(type="NoLoss"), **head))


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Every parameter from a seeded generator: weights ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2), tokens ~
    N(0, 1), norm weights and layer scales ~ 1 + N(0, 0.1^2). Buffers (the RoPE periods) stay the official's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("bias"):
                value = 0.1 * noise
            elif p.ndim == 1:  # RMSNorm weights, layer scale
                value = 1.0 + 0.1 * noise
            elif "token" in name:
                value = noise
            else:
                fan_in = p.shape[0 if "deconv" in name else 1] * (p[0, 0].numel() if p.ndim == 4 else 1)
                value = noise / fan_in ** 0.5
            p.copy_(value.to(p.dtype))


def main(snapshot: str = MIRROR) -> None:
    torch.set_num_threads(GOLDEN_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        commit = extract(snapshot, Path(tmp))
        Sapiens2, Head = import_official(Path(tmp))
        Sapiens2.arch_zoo["shrunk"] = dict(SHRUNK)
        layer_cfgs = [dict(num_kv_heads=SHRUNK["num_heads"] // 2) if i in SHRUNK_GQA_LAYERS else {}
                      for i in range(SHRUNK["num_layers"])]
        model = build_official(Sapiens2, Head, "shrunk", SHRUNK_HEAD, layer_cfgs=layer_cfgs).eval()
        randomize(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        assert state["backbone.rope_embed.periods"].dtype == torch.bfloat16  # the official default
        model_fp32_rope = build_official(Sapiens2, Head, "shrunk", SHRUNK_HEAD, layer_cfgs=layer_cfgs,
                                         pos_embed_rope_dtype="fp32").eval()
        model_fp32_rope.load_state_dict(state)  # the same weights; the bf16 periods' values in an fp32 buffer
        g = torch.Generator().manual_seed(1)
        io = {}
        with torch.no_grad():
            for h, w in SIZES_HW:
                x = torch.randn(2, 3, h, w, generator=g)
                io[f"input_{h}x{w}"] = x
                for tag, net in (("", model), ("fp32rope_", model_fp32_rope)):
                    feats, heatmaps = net(x)
                    io[f"features_{tag}{h}x{w}"] = feats.contiguous()
                    io[f"heatmaps_{tag}{h}x{w}"] = heatmaps.contiguous()
                    print(f"{tag}{h}x{w}: features {tuple(feats.shape)}, heatmaps {tuple(heatmaps.shape)}, "
                          f"peak |heatmap| {heatmaps.abs().max():.4g}")
        counts = {}
        for arch in ("sapiens2_0.1b", *POSE_HEADS):
            head = None
            if arch in POSE_HEADS:
                deconv, conv = POSE_HEADS[arch]
                head = dict(out_channels=308, deconv_out_channels=deconv, deconv_kernel_sizes=(4,) * len(deconv),
                            conv_out_channels=conv, conv_kernel_sizes=(1,) * len(conv))
            with torch.device("meta"):
                counts[arch.replace("_", "-")] = sum(p.numel() for p in build_official(Sapiens2, Head, arch, head)
                                                     .parameters())
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(state, str(OUT / "shrunk.safetensors"))
    save_file(io, str(OUT / "io.safetensors"))
    meta = dict(source=f"facebookresearch/sapiens2@{commit}", files=[BACKBONE_FILE, HEAD_FILE],
                shrunk=dict(SHRUNK, gqa_layers=list(SHRUNK_GQA_LAYERS), head=SHRUNK_HEAD),
                sizes_hw=[list(s) for s in SIZES_HW], param_counts=counts,
                param_counts_note="0.1b: backbone only; the others: backbone + the pose config's head, 308 outputs",
                python=platform.python_version(), platform=signature())
    (OUT / "official.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(counts, indent=1))
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size / 1e3:.0f} kB)" for p in sorted(OUT.iterdir())))


if __name__ == "__main__":
    main(*sys.argv[1:2])
