"""The segmentation task's configs, one flat dataclass per params.yaml section: ``model``, ``train``, ``self_train``,
``pseudo_labels`` and ``evaluate``.

Nothing inherits: each lists every key of its section, in the order the saved models record them
(:func:`corda.config.to_dict` of the config is stored in ``models/<method>.pt``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from corda.config import field, per_process_batch
from corda.errors import ConfigError
from corda.methods import METHODS, Method

# The choices of the sections' keys, read by the code that acts on them (corda.models, corda.precision): this
# module imports no model or torch code, so loading a config costs nothing.
Architecture = Literal["deeplabv2", "daformer"]  # corda.models.factory
MitVariant = Literal["b0", "b1", "b2", "b3", "b4", "b5"]  # corda.models.mit
Precision = Literal["fp32", "tf32", "bf16"]  # corda.precision
CompileMode = Literal["eager", "default", "reduce-overhead", "max-autotune"]  # corda.precision
# Cityscapes train ids of the "thing" classes: traffic light, traffic sign, person, rider, car, truck, bus,
# train, motorcycle, bicycle (DAFormer's imnet_feature_dist_classes; train.fd_classes).
THING_CLASSES = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """params.yaml ``model``: the CorDA network (method.md §1); ``architecture``/``mit`` choose DeepLab-v2 or
    MiT + DAFormer (:mod:`corda.models.factory`)."""

    architecture: Architecture = "deeplabv2"  # the paper's DeepLab-v2 ResNet | MiT + DAFormer decoder
    mit: MitVariant = "b5"  # MiT variant when architecture is daformer (DAFormer: b5)
    backbone: Literal["resnet18", "resnet50", "resnet101"] = "resnet101"
    pretrained: str | None = None  # local torchvision ImageNet or DeepLab COCO checkpoint; None = from scratch
    output_stride: Literal[8, 16, 32] = 8  # 8 = DeepLab-v2; 16/32 for CPU-sized runs (32: decoder heads only)
    task_channels: int = field(256, min=1)
    bottleneck: int = field(64, min=1)
    aspp_branches: int = field(2, min=1, max=4)  # 2 = the original's early-return bug, 4 = intended (§1.4)
    initial_seg_head: Literal["aspp", "conv1x1"] = "aspp"  # GTA model / SYNTHIA model (§1.5)
    distillation: bool = True  # the task-feature correlation (spatial gates, §1.3)
    input_norm: Literal["imagenet", "caffe_bgr"] = "caffe_bgr"
    freeze_bn_affine: bool = True  # §1.1 (frozen affine suits pretrained weights)
    num_classes: int = field(19, min=1)
    # Ours, for the embedded default (issue 17): a 1/4-resolution decoder with a low-level skip; the paper
    # presets keep "deeplabv2", whose parameters and outputs are the authors' network.
    head: Literal["deeplabv2", "decoder4", "decoder2"] = "deeplabv2"
    decoder_channels: int = field(128, min=1)
    init: Literal["deeplab", "kaiming"] = "deeplab"  # kaiming: for training the whole network from scratch


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """params.yaml ``train``: the DAFormer recipe keys (:mod:`corda.recipe`), the loss weights and UDA switches of
    one iteration (:func:`corda.seg.step.train_step`, method.md §2.4, §3, §4, §8) and the schedule (§5).

    ``method`` and ``target_ce_weight`` are not params keys: each DVC stage passes ``method`` on the command
    line (a :mod:`corda.methods` row), and ``self_train`` sets ``target_ce_weight`` from
    ``self_train.target_weight``. ``precision``, ``channels_last``, ``compile`` and ``devices`` are speed settings
    beyond the paper (:mod:`corda.precision`, :mod:`corda.distributed`); their defaults run the published fp32,
    single-GPU recipe.
    """

    # How a run is carried out, not what it computes: params.yaml ``run.train``, not a DVC param
    # (corda.config.run_keys). precision, channels_last, compile and devices stay params: they change the
    # float results (autocast, kernels, fusion, per-rank BatchNorm statistics).
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("eval_every", "eval_items", "checkpoint_every", "log_every", "workers",
                                           "device")

    # DAFormer recipe (corda.recipe; the defaults keep the DeepLab-v2 recipe)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: lr, momentum (DeepLab-v2); adamw: lr, betas (DAFormer)
    adam_betas: tuple[float, float] = field((0.9, 0.999), min=0.0, max=1.0)
    no_decay_norm: bool = False  # AdamW: no weight decay on the encoder's LayerNorms (DAFormer decay_mult 0)
    warmup_iters: int = field(0, min=0)  # linear warm-up length; 0 = none (DAFormer: 1500)
    warmup_ratio: float = field(1e-6, gt=0.0, max=1.0)  # lr factor at step 0 of the warm-up (mmcv default)
    rcs_temperature: float | None = field(None, gt=0.0)  # rare-class sampling; None = uniform (DAFormer 0.01)
    rcs_min_pixels: int = field(3000, min=0)  # an image counts for class c when it has more c pixels
    rcs_min_crop_ratio: float = field(0.5, min=0.0, max=1.0)  # re-crop until ≥ ratio·min_pixels of c
    fd_weight: float = field(0.0, min=0.0)  # ImageNet feature distance λ; 0 = off (DAFormer 0.005)
    fd_classes: tuple[int, ...] = field(THING_CLASSES, min=0)
    fd_min_ratio: float = field(0.75, min=0.0, max=1.0)
    pl_ignore_top: int = field(0, min=0)  # pseudo-label weight 0 on the top rows (DAFormer Cityscapes: 15)
    pl_ignore_bottom: int = field(0, min=0)  # … and on the bottom rows (120)
    # One iteration (corda.seg.step)
    method: str = field("corda", internal=True, choices=tuple(METHODS))  # a corda.methods row, set by the stage
    lambda_depth: float = field(0.01, min=0.0)  # clean-source depth weight (§2.4)
    lambda_depth_mixed: float = field(0.001, min=0.0)  # mixed-image depth weight (§2.4)
    w_seg_initial: float = field(1.0, min=0.0)  # weight of the initial_S CE terms (1 in the original, §9.13)
    consistency_weight: float = field(1.0, min=0.0)  # weight of the mixed CE terms (§3.8)
    pl_threshold: float = field(0.968, min=0.0, max=1.0)  # confidence threshold of q (§3.3)
    ema_alpha: float = field(0.999, min=0.0, max=1.0)  # used by the loop's ema_update (§3.9)
    depth_weight: bool = True  # ω on/off (ablation, §4)
    depth_weight_per_image: bool = False  # False = faithful batch-mixing bug (§4, §9.2)
    depth_weight_eps: float = field(1e-3, min=0.0)
    depth_invalid: float = 1.0  # invalid-depth code of the encoding (§2.2)
    # The teacher labels with initial_S while step < this (§3.2): 0 = never; GTA faithful = 25001 (i ≤ 25000).
    teacher_initial_until: int = field(0, min=0)
    teacher_train_mode_bn: bool = True  # the teacher runs BN in train mode on the target batch (§3.2, §9.6)
    mix_include_ignore: bool = True  # ClassMix may draw class 255 (§9.4)
    jitter_p: float = field(0.8, min=0.0, max=1.0)
    jitter: float = field(0.25, min=0.0, max=0.5)
    blur_p: float = field(0.5, min=0.0, max=1.0)
    blur_sigma: tuple[float, float] = field((0.15, 1.15), gt=0.0)
    blur_kernel_frac: float = field(0.1, gt=0.0, max=1.0)
    # self_train only: weight of a weighted CE on the *un-mixed* target batch with its pseudo-labels (ours,
    # as in CBST-style self-training). Besides the direct target signal, it puts target images through the
    # student's BatchNorm in train mode; with mixing alone the running statistics see source and mixed
    # images only (the source/target statistics confound of §9.6). 0 = off (ClassMix only, as round 1).
    target_ce_weight: float = field(0.0, min=0.0, internal=True)  # from self_train.target_weight
    # Schedule (§5)
    seed: int = field(1, min=0)
    iterations: int = field(250000, min=1)
    # The oracle (supervised on the target's labels) is the benchmark's ceiling, not a compared method: it may
    # train longer, so that the ceiling shows what the data allow rather than what the compared methods' step
    # budget allows (benchmarks/RESULTS.md, session 11). None = ``iterations`` (the paper presets).
    oracle_iterations: int | None = field(None, min=1)
    batch_source: int = field(2, min=1)
    batch_target: int = field(2, min=1)
    crop_hw: tuple[int, int] = field((512, 512), min=8)
    source_resize_hw: tuple[int, int] | None = None  # resize before cropping (§5: 720×1280); None = keep
    target_resize_hw: tuple[int, int] | None = None  # (§5: 512×1024)
    # Source resize filters (§5): the original resizes GTA5/SYNTHIA images bicubic, GTA5 depth bilinear
    # (cv2.INTER_LINEAR, blending the invalid 1.0 into its neighbours, §9.12) and SYNTHIA depth with cv2's
    # nearest rule, source row floor(y·in/out) (nearest_cv2); nearest is PIL's pixel-centre rule floor((y+½)·in/out).
    source_image_resample: Literal["bilinear", "bicubic"] = "bilinear"
    source_depth_resample: Literal["nearest", "nearest_cv2", "bilinear"] = "nearest"  # nearest = intended
    lr: float = field(2.5e-4, gt=0)
    head_lr_mult: float = field(10.0, gt=0)
    momentum: float = field(0.9, min=0, max=1)
    weight_decay: float = field(5e-4, min=0)
    poly_power: float = field(0.9, min=0)
    # The original's optimiser lists a backbone tensor once per enclosing module (stem conv 1×, block convs
    # 3×, downsample convs 4×) and torch 1.7.1 then updates it that many times per step (corda.optim).
    # True = faithful (the presets), False = each tensor once (intended; the default).
    duplicate_backbone_updates: bool = False
    eval_every: int = field(5000, min=0)  # target-val mIoU during training; 0 = only at the end
    eval_items: int = field(0, min=0)  # 0 = the whole val split
    checkpoint_every: int = field(5000, min=1)
    log_every: int = field(100, min=1)
    workers: int = field(2, min=0)
    nan_policy: Literal["stop", "skip"] = "stop"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "fp32"  # fp32 (paper, §5) | tf32 | bf16 autocast
    channels_last: bool = False  # NHWC networks and images (faster convolutions on tensor cores)
    compile: CompileMode = "eager"  # or a torch.compile mode for the student and teacher (corda.precision)
    devices: int = field(1, min=1)  # data-parallel processes (torchrun); batch_* are global sizes
    # Clip the total gradient norm (None = off, as the paper). Ours: from scratch at a high learning rate the
    # final classifier can blow up in the first ~40 steps (benchmarks/RESULTS.md); the paper's recipe starts
    # from pretrained weights at lr 2.5e-4 and needs none.
    grad_clip: float | None = field(None, gt=0)

    def for_method(self, method: Method) -> TrainConfig:
        """This config as ``method`` (a row) trains it: ``method`` is the row's name (so a saved config records
        what it trained), and the oracle runs ``oracle_iterations`` steps when set."""
        own_steps = self.oracle_iterations is not None and method.target_ground_truth
        return dataclasses.replace(self, method=method.name,
                                   iterations=self.oracle_iterations if own_steps else self.iterations)

    def __post_init__(self) -> None:
        for name in ("batch_source", "batch_target"):
            per_process_batch(getattr(self, name), self.devices, f"train.{name}")
        if self.optimizer == "adamw" and self.duplicate_backbone_updates:
            raise ConfigError("train.duplicate_backbone_updates reproduces the authors' SGD; it needs "
                              "train.optimizer: sgd")


@dataclass(frozen=True, slots=True)
class SelfTrainConfig:
    """params.yaml ``self_train``: the second self-training round on the exported pseudo-labels (stage ``self_train``)."""

    seed: int = field(2, min=0)
    iterations: int = field(400, min=1)
    lr: float = field(0.0025, gt=0)
    # Divide each batch's pseudo-label weights by their mean, so the average weight stays 1 (as ω is
    # normalised in round 1, method.md §4); false uses the exported weights as they are.
    normalize_weight: bool = True
    # Which round-1 weights round 2 starts from: the EMA teacher (which made the pseudo-labels and, on the
    # embedded benchmark, scores well above the student) or the student (the weights round 1 evaluates).
    init_from: Literal["teacher", "student"] = "teacher"
    # Weight of a pseudo-label CE on the un-mixed target images (besides the ClassMix term); it also lets the
    # student's BatchNorm statistics see target images (corda.seg.step.TrainConfig.target_ce_weight).
    target_weight: float = field(0.0, min=0.0)


@dataclass(frozen=True, slots=True)
class PseudoConfig:
    """params.yaml ``pseudo_labels``: the export of the CorDA teacher's target pseudo-labels (stage ``pseudo_labels``)."""

    # run.pseudo_labels (corda.config.run_keys). devices stays a param: the shards' diagnostics are summed
    # across processes, so metrics/pseudo_labels.json can differ in the last bits (pseudo/target.h5 does not).
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("device",)

    batch_size: int = field(16, min=1)
    threshold: float = field(0.968, min=0, max=1)  # confidence threshold (recorded, used by rule "threshold")
    # How the exported per-pixel weight is formed from confidence c and ω (corda.pseudo.final_weight):
    # confidence_x_omega = c·ω, omega = ω, confidence = c, threshold = [c ≥ threshold]·ω, uniform = 1.
    weight_rule: Literal["confidence_x_omega", "omega", "confidence", "threshold", "uniform"] = "confidence_x_omega"
    device: str = "auto"
    devices: int = field(1, min=1)  # processes (torchrun), each labelling a contiguous share of the images


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """params.yaml ``evaluate``: how the trained models are scored on target val (stage ``evaluate``, method.md §6)."""

    RUN_KEYS: ClassVar[tuple[str, ...]] = ("device",)  # run.evaluate (corda.config.run_keys)

    batch_size: int = field(16, min=1)
    # Network input size (real data: 512×1024, the original's test-time input); None = native.
    eval_hw: tuple[int, int] | None = field(None, min=1)
    # Where predictions are scored (method.md §6). "label": the logits are upsampled (bilinear,
    # align_corners=True) to each label's own resolution (1024×2048 for Cityscapes), as the authors'
    # reported numbers. "input": the label is resized (nearest) to eval_hw too, the lower-resolution
    # protocol of the original's training-time validation. Identical when eval_hw is None.
    score_at: Literal["label", "input"] = "label"
    export_label_ids: bool = False  # also write Cityscapes label-id PNGs for the official evaluator
    strip_items: int = field(6, min=1)  # rows of the qualitative strip
    # Every model is also scored with its BN statistics re-estimated on this many unlabelled target train
    # images (rows "<model>_adabn"; corda/adabn.py says why a from-scratch network needs both); 0 = off.
    adabn_items: int = field(64, min=0)
    device: str = "auto"
