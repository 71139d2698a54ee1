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
* ``tokenizer.safetensors`` -- a shrunk backbone with the 4K variant's windowed tokenizer (``use_tokenizer=True``),
  its state dict as a pretraining file holds it (bare backbone keys): patch size 4, embed 16, 2 heads, 3 blocks
  (the middle one grouped-query), SwiGLU width 32, a tokenizer of 2 blocks over 4x4 windows, randomised as above;
* ``tokenizer_io.safetensors`` -- its input, (h, w) = (32, 48), batch 2 (a 2x3 grid of windows per image), and
  feature map, with the default bfloat16 RoPE and with ``fp32`` (``features_fp32rope``); the official tokenizer
  runs its 12 windows in chunks of 5 here (``chunk_size``, 1024 in the release), so a chunk spans two images;
* ``official.json`` -- the shrunk configs, the platform (``tests/float_platform.py``: the bfloat16 rounding of
  queries and keys amplifies a float32 last-bit difference, so the default's outputs reproduce to 1e-5 only
  where float32 matmuls round as here), and the official parameter count of every size
  (0.1b and 1b-4k backbone only; the pose sizes backbone + its config's head, 308 keypoints), built on the meta
  device.

The seeds and the order of the draws are fixed per file: adding a golden leaves the others' bytes as they were.
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
# The shrunk tokenizer backbone (tokenizer.safetensors): sizes chosen to keep the file small
TOKENIZER = dict(embed_dims=16, num_layers=3, num_heads=2, feedforward_channels=32, num_tokenizer_layers=2)
TOKENIZER_BUILD = dict(patch_size=4, use_tokenizer=True, window_size=4)
TOKENIZER_CHUNK = 5  # windows per chunk in the official tokenizer, so that the chunks split the batch unevenly
TOKENIZER_HW = (32, 48)
# The backbone-only releases: name -> (official arch, constructor arguments)
BACKBONES = {"sapiens2-0.1b": ("sapiens2_0.1b", {}), "sapiens2-1b-4k": ("sapiens2_1b", dict(use_tokenizer=True))}
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
    """The official backbone as the pose configs build it (``backbone_kw`` overrides or adds arguments), with
    ``head`` (PoseHeatmapHead arguments) an :class:`OfficialPose`; ``head`` None: the bare backbone."""
    backbone = Sapiens2(**{**dict(arch=arch, img_size=(1024, 768), patch_size=16, final_norm=True,
                                  use_tokenizer=False, with_cls_token=True, out_type="featmap"), **backbone_kw})
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


def gqa_layers(arch: dict, layers) -> list[dict]:
    """``layer_cfgs`` with grouped-query attention (half the heads for keys / values) in ``layers`` only."""
    return [dict(num_kv_heads=arch["num_heads"] // 2) if i in layers else {} for i in range(arch["num_layers"])]


def tokenizer_goldens(Sapiens2, Head) -> tuple[dict, dict]:
    """(state dict, inputs and outputs) of the shrunk tokenizer backbone (tokenizer*.safetensors)."""
    Sapiens2.arch_zoo["shrunk_tokenizer"] = dict(TOKENIZER)
    kw = dict(TOKENIZER_BUILD, layer_cfgs=gqa_layers(TOKENIZER, SHRUNK_GQA_LAYERS))
    model = build_official(Sapiens2, Head, "shrunk_tokenizer", None, **kw).eval()
    randomize(model, seed=2)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    fp32_rope = build_official(Sapiens2, Head, "shrunk_tokenizer", None, pos_embed_rope_dtype="fp32", **kw).eval()
    fp32_rope.load_state_dict(state)
    h, w = TOKENIZER_HW
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(3))
    io = {f"input_{h}x{w}": x}
    with torch.no_grad():
        for tag, net in (("", model), ("fp32rope_", fp32_rope)):
            net.tokenizer.chunk_size = TOKENIZER_CHUNK
            io[f"features_{tag}{h}x{w}"] = feats = net(x)[0].contiguous()
            print(f"tokenizer {tag}{h}x{w}: features {tuple(feats.shape)}, peak {feats.abs().max():.4g}")
    return state, io


def main(snapshot: str = MIRROR) -> None:
    torch.set_num_threads(GOLDEN_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        commit = extract(snapshot, Path(tmp))
        Sapiens2, Head = import_official(Path(tmp))
        Sapiens2.arch_zoo["shrunk"] = dict(SHRUNK)
        layer_cfgs = gqa_layers(SHRUNK, SHRUNK_GQA_LAYERS)
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
        tokenizer_state, tokenizer_io = tokenizer_goldens(Sapiens2, Head)
        counts = {}
        for name, (arch, kw) in BACKBONES.items():
            with torch.device("meta"):
                counts[name] = sum(p.numel() for p in build_official(Sapiens2, Head, arch, None, **kw).parameters())
        for arch, (deconv, conv) in POSE_HEADS.items():
            head = dict(out_channels=308, deconv_out_channels=deconv, deconv_kernel_sizes=(4,) * len(deconv),
                        conv_out_channels=conv, conv_kernel_sizes=(1,) * len(conv))
            with torch.device("meta"):
                counts[arch.replace("_", "-")] = sum(p.numel() for p in build_official(Sapiens2, Head, arch, head)
                                                     .parameters())
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(state, str(OUT / "shrunk.safetensors"))
    save_file(io, str(OUT / "io.safetensors"))
    save_file(tokenizer_state, str(OUT / "tokenizer.safetensors"))
    save_file(tokenizer_io, str(OUT / "tokenizer_io.safetensors"))
    meta = dict(source=f"facebookresearch/sapiens2@{commit}", files=[BACKBONE_FILE, HEAD_FILE],
                shrunk=dict(SHRUNK, gqa_layers=list(SHRUNK_GQA_LAYERS), head=SHRUNK_HEAD),
                sizes_hw=[list(s) for s in SIZES_HW],
                tokenizer=dict(TOKENIZER, **TOKENIZER_BUILD, gqa_layers=list(SHRUNK_GQA_LAYERS),
                               chunk_size=TOKENIZER_CHUNK, size_hw=list(TOKENIZER_HW)),
                param_counts=counts,
                param_counts_note="0.1b, 1b-4k (1b with use_tokenizer=True): backbone only; the others: backbone + "
                                  "the pose config's head, 308 outputs",
                python=platform.python_version(), platform=signature())
    (OUT / "official.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(counts, indent=1))
    print("wrote", ", ".join(f"{p.name} ({p.stat().st_size / 1e3:.0f} kB)" for p in sorted(OUT.iterdir())))


if __name__ == "__main__":
    main(*sys.argv[1:2])
