"""What a run config holds: the frozen dataclass of each section (``model``, ``data``, ``optim``, ``trainer``,
``ssl``) with its defaults, and :class:`Config`, the whole. :mod:`sagepose.config.parse` builds them from plain data,
:mod:`sagepose.config.validation` checks their values."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoraConfig:
    """``model.lora``: low-rank adapters on the backbone's linear layers (:mod:`sagepose.models.lora`), the rest of
    the backbone frozen; the head trains."""

    rank: int | None = None  # the adapters' rank; 0 / None: off (the whole model trains)
    alpha: float = 32.0  # the update is scaled by alpha / rank
    # which linear layers get adapters: qkv (attention input projections: q, k, v), proj (attention output), mlp
    # (the feed-forward's two layers; HRFormer's is convolutional and gets none)
    targets: tuple[str, ...] = ("qkv", "proj", "mlp")
    dropout: float = 0.0  # dropout on the adapters' input
    train_blocks: int = 0  # the last N transformer blocks train fully (no adapters there)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit-tiny"  # a sagepose.models.zoo name
    schema: str = "coco"
    input_size: tuple[int, int] | None = None  # crop (w, h); heatmaps are input / 4. None: the zoo's
    init_checkpoint: str | None = None  # weights to start from (sagepose, MMPose, ViTPose format)
    # a new skeleton's head from init_checkpoint's: {joint of model.schema: the checkpoint's joint whose output
    # channel it starts from}, beyond the automatic matches (same joint by the equivalence tables or, between custom
    # schemas, by name; sagepose.models.head_transplant). A checkpoint storing no schema names its joints by the
    # built-in schema of its channel count (17 coco, 16 mpii, 133 coco_wholebody, 308 goliath), else kp0, kp1, ...
    head_map: dict = field(default_factory=dict)
    flip_test: bool = True
    # multi-scale test: box scale factors; each scale's heatmaps (flip-tested) mapped into the base box's frame and
    # averaged before decoding, e.g. [0.75, 1.0, 1.25]. (1.0,): one scale
    test_scales: tuple[float, ...] = (1.0,)
    drop_path_rate: float | None = None  # None: the zoo's default
    grad_checkpointing: bool = False
    codec: dict = field(default_factory=dict)  # codec argument overrides, e.g. {"sigma": 3.0}
    arch: dict = field(default_factory=dict)  # backbone/head number overrides, e.g. {"depth": 4}
    # "raw": heatmaps regressed with MSE (MMPose's recipes); "softmax": a spatial softmax per joint
    # trained with cross-entropy to the normalised target Gaussian (converges far faster from scratch)
    heatmap_output: str = "raw"
    # convolution weights in channels-last (NHWC) memory: oneDNN's faster layout for CPU convolutions
    # (+11% training throughput for the demo model in bf16); crops already arrive channels-last
    channels_last: bool = False
    # multi-dataset runs (data.datasets): "shared" -- one head over the union's outputs; "per_dataset" -- ViTPose+'s
    # layout, one head per dataset on the shared backbone, each predicting its dataset's joints
    heads: str = "shared"
    lora: LoraConfig = field(default_factory=LoraConfig)  # adapters instead of fine-tuning the whole backbone


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset of a multi-dataset run (``data.datasets``): its annotations in its own keypoint schema."""

    name: str
    schema: str = "coco"  # a built-in schema name or a schema file, as model.schema
    train_json: str | None = None
    val_json: str | None = None  # scored in its own schema with its own metric (None: not scored)
    image_root: str | None = None  # default: the folder of each json
    # "coco": COCO-format keypoint jsons (AIC, CrowdPose and the synthetic sets too); "mpii": MPII in the json form
    # MMPose converts it to (sagepose.data.load_mpii: 1-based joints, scored by PCKh with head_boxes)
    format: str = "coco"
    head_boxes: str | None = None  # format mpii: mpii_gt_val.mat or a json of head boxes for val_json's records
    # how often its samples are drawn: a dataset's share of each epoch is weight x size over the sum of those
    # (1.0 everywhere: every sample once per epoch, as one concatenated dataset); epochs hold all datasets' samples
    weight: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    train_json: str | None = None
    val_json: str | None = None
    image_root: str | None = None  # default: the folder of each json
    det_json: str | None = None  # evaluate on detector boxes instead of ground-truth boxes
    batch_size: int = 32
    val_batch_size: int = 64
    num_workers: int = 2
    # keep decoded training images in RAM (each loader process its own copy): skips the JPEG decode, about
    # half of a small crop's loading cost; H x W x 3 bytes per image (the demo's 5000: 1.2 GB)
    cache_images: bool = False
    # decode each JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's scaled IDCT) when the crop is at least that many
    # times smaller than the person's box: less decode and warp work per sample, crops low-pass filtered by block
    # means instead of bilinear point samples (benchmarks/bench_dataloader.py states speed and pixel difference)
    reduced_decode: bool = False
    # per-sample geometric augmentation (MMPose's defaults; CropAugment's defaults are these, written once)
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    scale_factor: tuple[float, float] = (0.5, 1.5)
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    # batched on-device augmentation (sagepose.data.batch_aug): each step's per-sample probability, 0 = off
    photometric_prob: float = 0.0
    coarse_dropout_prob: float = 0.0
    blur_prob: float = 0.0  # camera degradation (batch_aug.degrade): Gaussian blur, sigma 0.3-2 px
    noise_prob: float = 0.0  # and sensor noise, std up to 12 grey levels
    # loader processes: batches in page-locked memory for a faster, asynchronous copy to the GPU (None: when
    # training on CUDA), and each worker's batches in flight
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    # several datasets with their own keypoint sets in one run (then train_json / val_json stay unset);
    # data.union: "merged" (joints they share are one output), "concatenated" (each dataset's joints its own
    # outputs) or "convert" (every dataset mapped into model.schema, MMPose's KeypointConverter; midpoints allowed)
    datasets: tuple[DatasetConfig, ...] = ()
    union: str = "merged"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 1.0  # ViT layer-wise lr decay rate; 1.0 = off
    warmup_iters: int = 500
    # the warmup as a fraction of the run's optimizer steps instead (then warmup_iters is not read), so it fits
    # a run of any length (sagepose.train.steps)
    warmup_fraction: float | None = None
    warmup_ratio: float = 0.001
    schedule: str = "step"  # "step" (MMPose: x0.1 at milestones) or "cosine"
    milestones: tuple[int, ...] = (170, 200)  # epochs
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    # where the cosine begins, as a fraction of the run's optimizer steps: lr flat before it (RTMPose's 0.5)
    cosine_start_fraction: float = 0.0
    grad_clip: float | None = 1.0
    fused: bool = False  # torch's fused AdamW kernel (one launch per step; GPU or CPU)
    # exponential moving average of the weights (Lightning's EMAWeightAveraging), 0 = off; when on,
    # validation and the checkpoints' "state_dict" use the averaged weights, e.g. 0.9999
    ema_decay: float = 0.0
    # two phases in one run: train with the backbone frozen for this many epochs, then everything
    freeze_backbone_epochs: int = 0


@dataclass(frozen=True)
class FusionLossWeights:
    """The fusion head's six loss terms' weights (:mod:`sagepose.train.fusion_loss`); 0 switches a term off."""

    heatmap: float = 1.0
    offset: float = 1.0
    peak: float = 1.0
    variance: float = 0.1
    overlap: float = 1.0
    shape: float = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    out_dir: str = "runs/train"
    max_epochs: int = 210
    max_steps: int = -1
    max_time_minutes: float | None = None  # stop training after this wall time
    precision: str = "32-true"  # or "bf16-mixed"
    accumulate_grad_batches: int = 1
    accelerator: str = "auto"
    devices: Any = "auto"  # per node; under torchrun / SLURM it must match the processes per node
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp", "fsdp" or any Lightning strategy name
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (DDP)
    fsdp_cpu_offload: bool = False  # FSDP keeps parameters, gradients and optimizer state in CPU memory
    seed: int = 0
    val_every_epochs: int = 10
    # validate every this many optimizer steps instead of by epochs (0: by val_every_epochs); for runs bounded by
    # trainer.max_steps, whose epochs can be one step long (30 labeled frames at batch 16)
    val_every_steps: int = 0
    log_every_steps: int = 20
    progress_bar: bool = True
    use_joint_weights: bool = False  # weight the loss by the schema's joint weights
    fusion_loss: FusionLossWeights = field(default_factory=FusionLossWeights)  # a fusion head's loss terms
    # checkpoints/last.ckpt is written at every epoch end and, when > 0, every this many optimizer steps
    # (a mid-epoch resume point; epoch ends closer than this to the previous save are then skipped, so one-step
    # epochs do not write a file a step); checkpoints/best.ckpt by val AP; epoch-EEE.ckpt kept every N epochs
    checkpoint_every_steps: int = 0
    # checkpoints/last.ckpt also every this many minutes of training, mid-epoch (0 or null: off), so a crash loses
    # at most this much; SIGINT / SIGTERM write it too, then stop (sagepose.train.interrupt)
    checkpoint_every_minutes: float | None = 10.0
    keep_every_epochs: int = 0
    # a step whose loss or gradient is not finite is skipped (no weight update); this many in a row stop the run
    max_nonfinite_steps: int = 10
    # torch.compile of the network (training and validation forward; checkpoints keep plain names). mode and
    # backend are torch.compile's ("default", "reduce-overhead", "max-autotune"...; "inductor", "aot_eager"...)
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"


@dataclass(frozen=True)
class ViewConfig:
    """One kind of view of an unlabeled crop, drawn on the device (:mod:`sagepose.ssl.views`): a random affine about
    the crop centre, then photometric distortion and coarse dropout with these per-sample probabilities."""

    rotate: float = 10.0  # max |degrees|
    scale: tuple[float, float] = (0.9, 1.1)  # zoom range
    shift: float = 0.05  # max shift, as a fraction of the crop side
    flip_prob: float = 0.0
    photometric_prob: float = 0.5
    coarse_dropout_prob: float = 0.0
    blur_prob: float = 0.0  # camera degradation (sagepose.data.batch_aug.degrade): Gaussian blur, sigma 0.3-2 px
    noise_prob: float = 0.0  # and sensor noise, std up to 12 grey levels


def _strong_view() -> ViewConfig:
    return ViewConfig(rotate=30.0, scale=(0.75, 1.25), shift=0.1, flip_prob=0.5, photometric_prob=0.8,
                      coarse_dropout_prob=0.5)


@dataclass(frozen=True)
class SSLConfig:
    """Semi-supervised fine-tuning (:mod:`sagepose.train.ssl_module`); the defaults are the SAGE-Pose notes'.

    ``mode``: "off" (supervised), "semi" (a labeled and an unlabeled batch every step) or "unsup_only" (unlabeled
    batches only, from a supervised checkpoint in ``model.init_checkpoint``). ``unlabeled``: one source or a list --
    an image folder, a video file, a detections json (COCO results), a COCO json with boxes, or a dict
    ``{path, kind, every_n, score_thr, images, root}`` (:func:`sagepose.data.unlabeled_sources.load_unlabeled`).
    """

    mode: str = "off"
    unlabeled: str | tuple[Any, ...] = ()
    # start from a supervised model (SAGE-Pose's stage 0): a checkpoint file, or a recipe name (e.g.
    # custom_tiny_vit) trained first in OUT/warm_start with this run's data, model and trainer settings (and that
    # recipe's steps and optimizer), reused when it finished there before. The start is scored on data.val_json
    # and stays best.ckpt unless the fine-tuning beats it (sagepose.train.warm_start). None: no warm start
    warm_start: str | None = None
    # when the start stays best.ckpt: "clearly_worse" -- the fine-tuning is worse on the val frames beyond chance
    # (paired sign-flip test, p < 0.05; pixel_error); "worse" -- any worse val score (AP, score: always this)
    keep_start: str = "clearly_worse"
    unlabeled_root: str | None = None  # where detections' images are found as {image_id:012d}.jpg
    cache_dir: str | None = None  # where video frames are cached (None: OUT/unlabeled_cache); runs may share one
    every_n: int = 10  # video sources: every n-th frame
    det_score_thr: float = 0.3  # detections below it are not used
    batch_size: int = 32  # unlabeled crops per step (per process)
    num_strong_views: int = 1  # M strong student views per unlabeled crop
    teacher_ema: float = 0.999  # EMA decay of the teacher, updated every optimizer step
    teacher_bf16: bool = True  # the teacher's forward in bf16 autocast where the device computes bf16 natively
    lambda_u: float = 5.0  # weight of the consistency term (ramped up over rampup_iters)
    rampup_iters: int = 1000
    rampup_fraction: float | None = None  # the ramp as a fraction of the run's steps instead (rampup_iters unread)
    consistency: str = "js"  # "js", "kl" or "mse"
    prob_tau: float = 0.5  # temperature of the probabilities compared (<= 1 sharpens)
    teacher_tau: float = 0.5  # spatial sharpening of the fused teacher map (<= 1 sharpens; 1 = off)
    fusion: bool = True  # fuse two weak teacher views by confidence (False: one teacher view)
    fusion_temperature: float = 1.0
    mask: bool = True  # the dynamic keypoint mask (False: every joint that stays in view counts)
    mask_beta: float = 2.0  # threshold mean - beta * std of each keypoint's confidence
    mask_momentum: float = 0.99
    mask_warmup_iters: int = 1000  # all-ones mask before this step
    mask_warmup_fraction: float | None = None  # as a fraction of the run's steps instead (mask_warmup_iters unread)
    min_keep_ratio: float = 0.3
    priors: bool = True  # structural priors from the skeleton and the labeled set
    lambda_topo: float = 0.02
    lambda_bone: float = 0.02
    lambda_angle: float = 0.01
    # video sources: consecutive frames' coordinates, in image px (0 = off); lightning-pose weighs its temporal
    # loss 1 / (2 e^5) ~ 0.0034 by default: a loss in pixels must weigh little beside probability divergences
    lambda_temporal: float = 0.005
    temporal_eps_px: float = 20.0  # image pixels of motion a frame that cost nothing (lightning-pose's)
    # appearance transfer (sagepose.data.batch_aug.style_mix): a labeled crop takes, with this probability, part of
    # the Fourier amplitude spectrum of an unlabeled crop of the same step -- the supervised loss then also sees the
    # unlabeled domain's look (colour, contrast, blur, noise) on labeled poses; 0 = off (the SAGE-Pose notes' method)
    style_mix_prob: float = 0.0
    style_mix_ratio: tuple[float, float] = (0.0, 1.0)  # the share of the unlabeled crop's amplitude, uniform in it
    style_mix_band: float = 1.0  # frequencies mixed, as a fraction of Nyquist per axis (1 = all)
    weak: ViewConfig = field(default_factory=ViewConfig)
    strong: ViewConfig = field(default_factory=_strong_view)


@dataclass(frozen=True)
class DistillConfig:
    """Distillation (``sagepose distill``, :mod:`sagepose.train.distill_module`): a frozen teacher's predictions on
    the weak views of ``ssl.unlabeled``'s crops (and the labeled images') become the student's targets on its strong
    views; ``ssl``'s sources, views, batch size and dynamic mask are the ones read."""

    # a checkpoint sagepose.load reads (sagepose's .ckpt / converted file, MMPose, Sapiens) or a hub name; "" = off
    teacher: str = ""
    teacher_model: str | None = None  # the zoo name of a teacher file that does not name its model (MMPose, Sapiens)
    weight: float = 1.0  # the distillation loss beside the supervised loss
    kind: str = "kl"  # KL(teacher || student), "js" or "mse", as ssl.consistency
    confidence_weight: bool = True  # each joint weighed by the teacher's confidence (sagepose.ssl.moments)
    labeled: bool = True  # the labeled images (data.train_json's boxes) are distilled on too
    # the teacher's outputs stored per crop and reused every epoch: "auto" when its view is fixed (ssl.weak without
    # rotation, zoom, shift, flip or photometric jitter, and ssl.fusion off), "always" (refused otherwise), "never"
    cache_teacher: str = "auto"
    teacher_bf16: bool = True  # the teacher in bf16 autocast where the device computes bf16 natively
    teacher_tau: float = 1.0  # temperature of the teacher's distributions (< 1 sharpens)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
