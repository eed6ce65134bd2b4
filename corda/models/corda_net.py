"""The CorDA multi-task segmentation + depth network (method.md §1.2–§1.6) and its DACS baseline.

Layout (all maps at 1/8 resolution):

    backbone ─┬─ semantic branch → F_S ─┐  F_S' = F_S + SA_{D→S}(F_D) → classifier → S
              │                         ├─ distillation (§1.3)
              ├─ depth branch    → F_D ─┘  F_D' = F_D + SA_{S→D}(F_S) → classifier → D, D_src
              └─ (initial_seg_head="aspp") classifier on raw features → initial_S
    initial_D / initial_D_src: two separate 1×1 convs on F_D; initial_S = 1×1 conv on F_S when "conv1x1".

``head="decoder4"`` (ours, for the embedded default) inserts a light decoder between the backbone and the task
branches: the backbone output is reduced, upsampled to 1/4 resolution and fused with layer1's features (a low-level
skip, as in DeepLab-v3+), so the task branches, the feature exchange and every classifier work at 1/4 resolution
and the heads are 1×1 convs. ``head="decoder2"`` also reads ``S`` out at 1/2 (:class:`SemanticRefine`).
``head="deeplabv2"`` is the paper's network, unchanged.

``depth=False`` gives the DACS baseline: a plain DeepLab-v2 (backbone + one dilated classifier) whose ``S``
is also returned as ``initial_S`` (same tensor) so that consumers need not branch; it has no
deep-supervision head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from corda.errors import ConfigError
from corda.models.backbone import Arch, DilatedResNet, load_pretrained
from corda.models.normalization import (  # noqa: F401  (IMG_MEAN_BGR etc.: re-exported for callers)
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMG_MEAN_BGR,
    InputNormalization,
    init_bn_identity,
    init_conv_normal,
)
from corda.models.outputs import upsample_outputs  # noqa: F401  (re-exported: the network's outputs)

# The DeepLab-v2 classifier declares four dilations (§1.4).
ASPP_DILATIONS = (6, 12, 18, 24)


class DilatedClassifier(nn.Module):
    """DeepLab-v2 "ASPP-like" classifier: parallel 3×3 convs (dilation = padding, bias on), outputs summed.

    All four convs are declared, but only the first ``branches`` are summed. ``branches=2`` reproduces the
    early-return bug of AdaptSegNet/DACS/CorDA (§1.4, §9.1): the 18/24 convs exist, get no gradient and stay
    at their initialisation. ``branches=4`` is the intended head.
    """

    def __init__(self, in_channels: int, out_channels: int, branches: int = 2):
        super().__init__()
        if not 1 <= branches <= len(ASPP_DILATIONS):
            raise ConfigError(f"aspp_branches must be in 1..{len(ASPP_DILATIONS)}, got {branches}")
        self.branches = branches
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d, bias=True) for d in ASPP_DILATIONS
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:self.branches]:
            out = out + conv(x)
        return out


class TaskBottleneck(nn.Module):
    """Residual bottleneck in→planes (1×1) → planes (3×3) → out (1×1) with trainable BNs (§1.2).

    The shortcut is a 1×1 conv + BN when the channel count changes (block A), the identity otherwise
    (block B).
    """

    def __init__(self, in_channels: int, planes: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def task_branch(in_channels: int, planes: int, out_channels: int) -> nn.Sequential:
    """Block A (projection shortcut) followed by block B (identity shortcut), §1.2."""
    return nn.Sequential(TaskBottleneck(in_channels, planes, out_channels),
                         TaskBottleneck(out_channels, planes, out_channels))


class SpatialGate(nn.Module):
    """PAD-Net-style message ``conv3x3(x) ⊙ sigmoid(conv3x3'(x))`` (§1.3); no bias, no BN.

    The gate is computed from the *sending* task's features, not from the receiver's.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.feature = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.gate = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(x) * torch.sigmoid(self.gate(x))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SkipDecoder(nn.Module):
    """Light 1/4-resolution decoder (ours, DeepLab-v3+-style): fine objects need a fine logit grid.

    The paper's DeepLab-v2 predicts at 1/8 of a 512×1024 input (a 64×128 grid). The embedded default runs
    ResNet-18 at output stride 16 on 128×256 images, an 8×16 grid, where 1–3 px poles and signs vanish. This
    decoder brings the prediction grid back to 1/4 (32×64) for little compute.

    Forward: high (B, C_high, h/4, w/4) at the backbone's output stride, low (B, C_low, H/4, W/4) from layer1
    → (B, channels, H/4, W/4).
    """

    def __init__(self, high_channels: int, low_channels: int, channels: int, low_reduced: int = 48):
        super().__init__()
        self.reduce_high = conv_bn_relu(high_channels, channels, 1)
        self.reduce_low = conv_bn_relu(low_channels, low_reduced, 1)
        self.fuse = nn.Sequential(conv_bn_relu(channels + low_reduced, channels, 3),
                                  conv_bn_relu(channels, channels, 3))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.reduce_high(high), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([up, self.reduce_low(low)], dim=1))


class SemanticRefine(nn.Module):
    """Semantic read-out at 1/2 resolution (ours, ``head="decoder2"``): a finer logit grid for thin classes.

    With every prediction at 1/4, a 1–3 px pole covers part of one logit cell: on the rendered target val labels,
    even ideal (area-averaged) logits at 1/4 cap pole IoU at 47 and person at 77, at 1/2 at 76 and 92
    (benchmarks/resolution_ceiling.py). This module upsamples the semantic features to the stem's 1/2 grid,
    fuses the stem's edges (a second, finer skip, as the U-Net/FPN family does) and feeds a 1×1 correction.
    Depth is smooth and stays at 1/4; the task branches and the feature exchange are unchanged. Measured on the
    embedded default (benchmarks/RESULTS.md): +1.5 mIoU for 1.1–1.25× the step time; the default's poles are
    limited by training steps, not by the 1/4 grid, so it is an option, not the default.

    Forward: feats (B, C, H/4, W/4), stem (B, C_stem, H/2, W/2) → (B, channels, H/2, W/2).
    """

    def __init__(self, in_channels: int, stem_channels: int, channels: int, stem_reduced: int = 16):
        super().__init__()
        self.reduce_stem = conv_bn_relu(stem_channels, stem_reduced, 1)
        self.fuse = conv_bn_relu(in_channels + stem_reduced, channels, 3)

    def forward(self, feats: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(feats, size=stem.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([up, self.reduce_stem(stem)], dim=1))


Head = Literal["deeplabv2", "decoder4", "decoder2"]
DECODER_HEADS = ("decoder4", "decoder2")
Init = Literal["deeplab", "kaiming"]


class CorDANet(InputNormalization, nn.Module):
    """CorDA network (depth=True) or the DACS DeepLab-v2 baseline (depth=False).

    Args:
        num_classes: semantic logits (19 for every benchmark, SYNTHIA included, §1.5).
        backbone: ``resnet18 | resnet50 | resnet101`` dilated ResNet (§1.1).
        pretrained: optional local checkpoint copied into the backbone after init (§1.6).
        task_channels, bottleneck: task-branch widths (256 and 64 in the original).
        aspp_branches: dilated-classifier branches summed; 2 = the original's bug, 4 = intended (§1.4).
        initial_seg_head: ``"aspp"`` = 2048-ch dilated classifier on the raw backbone output (GTA model),
            ``"conv1x1"`` = 1×1 conv on F_S (SYNTHIA model), §1.5.
        distillation: the spatial-gate feature exchange; False = identity (ablation "without feature
            exchange").
        depth: False builds the DACS baseline: backbone + one dilated classifier, outputs ``S``
            (= ``initial_S``).
        input_norm: ``"imagenet"`` (mean/std on RGB in [0, 1]) or ``"caffe_bgr"`` (RGB→BGR, ×255, minus
            IMG_MEAN).
        freeze_bn_affine: freeze backbone BN weight/bias (§1.1); task-branch BNs are always trainable.
        conv_init_std: std of the N(0, σ²) init of every conv weight (§1.6).
        output_stride: 8 as DeepLab-v2 (§1.1); 16 for CPU-sized runs (outputs at 1/16 resolution); 32 (no
            dilation) with a decoder head, whose detail comes from the 1/4 skip.
        head: ``"deeplabv2"`` (the paper) or ``"decoder4"`` (ours: :class:`SkipDecoder` to 1/4 resolution,
            then the task branches and 1×1 classifiers there; ``initial_seg_head="aspp"`` becomes a 1×1 conv
            on the decoder output, the counterpart of "on the raw features"), or ``"decoder2"`` (decoder4 plus
            :class:`SemanticRefine`: ``S`` at 1/2 as the upsampled 1/4 logits plus a zero-initialised correction).
        decoder_channels: width of the decoder4 output.
        init: ``"deeplab"`` = every conv N(0, conv_init_std²) (§1.6, meant for new heads on a pretrained
            backbone); ``"kaiming"`` = He-normal (fan_out) convs and N(0, 0.01²) final classifiers, for
            training from scratch.

    Forward: images (B, 3, H, W) float RGB in [0, 1] → dict of logits/depth at 1/8 resolution:
        ``S``, ``initial_S`` (B, num_classes, h, w); with depth also ``D``, ``D_src``, ``initial_D``,
        ``initial_D_src`` (B, 1, h, w), raw linear values in the CorDA inverse-depth encoding (§2.2).
    """

    # ``model`` keys this network does not read (corda.models.factory.build_network).
    IGNORED_MODEL_KEYS: tuple[str, ...] = ("mit",)

    def __init__(
        self,
        num_classes: int = 19,
        backbone: Arch = "resnet101",
        pretrained: str | Path | None = None,
        task_channels: int = 256,
        bottleneck: int = 64,
        aspp_branches: int = 2,
        initial_seg_head: Literal["aspp", "conv1x1"] = "aspp",
        distillation: bool = True,
        depth: bool = True,
        input_norm: Literal["imagenet", "caffe_bgr"] = "caffe_bgr",
        freeze_bn_affine: bool = True,
        conv_init_std: float = 0.01,
        output_stride: int = 8,
        head: Head = "deeplabv2",
        decoder_channels: int = 128,
        init: Init = "deeplab",
    ):
        super().__init__()
        if initial_seg_head not in ("aspp", "conv1x1"):
            raise ConfigError(f"initial_seg_head must be 'aspp' or 'conv1x1', got {initial_seg_head!r}")
        if input_norm not in ("imagenet", "caffe_bgr"):
            raise ConfigError(f"input_norm must be 'imagenet' or 'caffe_bgr', got {input_norm!r}")
        self.num_classes = num_classes
        self.depth = depth
        self.distillation = distillation
        self.initial_seg_head = initial_seg_head
        self.input_norm = input_norm
        if head not in ("deeplabv2", *DECODER_HEADS):
            raise ConfigError(f"head must be 'deeplabv2', 'decoder4' or 'decoder2', got {head!r}")
        if init not in ("deeplab", "kaiming"):
            raise ConfigError(f"init must be 'deeplab' or 'kaiming', got {init!r}")
        if output_stride == 32 and head not in DECODER_HEADS:
            raise ConfigError("model.output_stride 32 needs a decoder head (model.head: decoder4 or decoder2): the deeplabv2 "
                              "head would predict at 1/32")
        self.head = head
        # DACS (depth=False) has a single head: no separate initial (deep-supervision) prediction.
        self.has_initial_seg_head = depth

        self.backbone = DilatedResNet(backbone, freeze_bn_affine=freeze_bn_affine, output_stride=output_stride)
        c_in = self.backbone.out_channels
        if head in DECODER_HEADS:
            self.decoder = SkipDecoder(c_in, self.backbone.low_channels, decoder_channels)
            c_in = decoder_channels

        def classifier(channels: int, out: int) -> nn.Module:
            if head in DECODER_HEADS:
                return nn.Conv2d(channels, out, 1)
            return DilatedClassifier(channels, out, aspp_branches)

        if depth:
            self.branch_s = task_branch(c_in, bottleneck, task_channels)
            self.branch_d = task_branch(c_in, bottleneck, task_channels)
            if distillation:
                self.gate_d_to_s = SpatialGate(task_channels)
                self.gate_s_to_d = SpatialGate(task_channels)
            if initial_seg_head == "aspp":
                self.initial_s = classifier(c_in, num_classes)
            else:
                self.initial_s = nn.Conv2d(task_channels, num_classes, 1)
            self.initial_d = nn.Conv2d(task_channels, 1, 1)
            self.initial_d_src = nn.Conv2d(task_channels, 1, 1)
            self.head_s = classifier(task_channels, num_classes)
            self.head_d = classifier(task_channels, 1)
            self.head_d_src = classifier(task_channels, 1)
        else:
            self.head_s = classifier(c_in, num_classes)
        if head == "decoder2":  # a residual correction of S at 1/2 (initial_S stays at 1/4, an auxiliary)
            s_in = task_channels if depth else c_in
            self.refine_s = SemanticRefine(s_in, self.backbone.stem_channels, s_in // 2)
            self.fine_s = nn.Conv2d(s_in // 2, num_classes, 1)

        self.register_input_norm(input_norm)

        if init == "kaiming":
            self._init_kaiming()
        else:
            self._init_weights(conv_init_std)
        if pretrained is not None:
            load_pretrained(self.backbone, pretrained)

    def _init_weights(self, std: float) -> None:
        """§1.6: conv weights ~ N(0, std²), BN weight 1 and bias 0; conv biases keep the default init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv_normal(m, std, zero_bias=False)
            elif isinstance(m, nn.BatchNorm2d):
                init_bn_identity(m)

    def _init_kaiming(self) -> None:
        """From scratch: He-normal convs (as torchvision's ResNet), BN 1/0, prediction convs N(0, 0.01²).

        The DeepLab rule (every conv N(0, 0.01²), §1.6) suits new heads on a pretrained backbone; applied to a
        whole network trained from scratch it shrinks the activations layer by layer (a ResNet-18 conv with
        fan-in 576 needs σ ≈ 0.06), which made the early steps unstable and needed a gradient clip.
        """
        predictors = {id(m) for name in ("head_s", "head_d", "head_d_src", "initial_s", "initial_d",
                                         "initial_d_src") for m in getattr(self, name, nn.Identity()).modules()}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if id(m) in predictors:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                elif m is getattr(self, "fine_s", None):
                    nn.init.zeros_(m.weight)  # decoder2 starts as decoder4 (a zero correction)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                init_bn_identity(m)

    def _semantic(self, feats: torch.Tensor, stem: torch.Tensor | None) -> torch.Tensor:
        s = self.head_s(feats)
        if self.head != "decoder2":
            return s
        # decoder2: the 1/4 logits upsampled, plus a correction from the stem's 1/2 grid that starts at zero.
        up = F.interpolate(s, size=stem.shape[-2:], mode="bilinear", align_corners=True)
        return up + self.fine_s(self.refine_s(feats, stem))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = None
        if self.head in DECODER_HEADS:
            stem, low, high = self.backbone.forward_pyramid(self.normalize(images))
            feats = self.decoder(high, low)
        else:
            feats = self.backbone(self.normalize(images))
        if not self.depth:
            s = self._semantic(feats, stem)
            return {"S": s, "initial_S": s}
        f_s, f_d = self.branch_s(feats), self.branch_d(feats)
        if self.distillation:
            # Both messages are computed from the pre-exchange features (§1.3).
            f_s2, f_d2 = f_s + self.gate_d_to_s(f_d), f_d + self.gate_s_to_d(f_s)
        else:
            f_s2, f_d2 = f_s, f_d
        initial_s = self.initial_s(feats if self.initial_seg_head == "aspp" else f_s)
        return {
            "S": self._semantic(f_s2, stem),
            "initial_S": initial_s,
            "D": self.head_d(f_d2),
            "D_src": self.head_d_src(f_d2),
            "initial_D": self.initial_d(f_d),
            "initial_D_src": self.initial_d_src(f_d),
        }


def param_groups(model: CorDANet, lr: float, head_lr_mult: float = 10.0,
                 authors_repeats: bool = False) -> list[dict]:
    """Optimizer groups (§1.6): trainable backbone parameters at ``lr``, the rest at ``head_lr_mult·lr``.

    Each group carries ``lr_mult`` so a poly scheduler can set ``group["lr"] = base · lr_mult · poly``.
    Frozen parameters (the backbone BN affines) are left out. With ``authors_repeats`` the backbone group
    also carries ``repeats``, how many times the original's 1× generator lists each tensor
    (:func:`corda.optim.authors_repeat_counts`; used by :class:`corda.optim.RepeatedSGD`); the head group
    has no duplicates in the original and gets none.
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [
        {"params": backbone, "lr": lr, "lr_mult": 1.0},
        {"params": heads, "lr": lr * head_lr_mult, "lr_mult": head_lr_mult},
    ]
    if authors_repeats:
        from corda.optim import authors_repeat_counts

        counts = authors_repeat_counts(model.backbone)
        groups[0]["repeats"] = [counts[id(p)] for p in backbone]
        groups[1]["repeats"] = [1] * len(heads)
    return groups
