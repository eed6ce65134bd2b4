"""DeepLab-v2 dilated ResNet backbone (method.md §1.1) and pretrained-weight loading (§1.6).

The network is our torchvision-equivalent ResNet (:mod:`corda.models.resnet`, same names and random init as
``torchvision.models.resnetXX(weights=None)``) re-wired to DeepLab-v2's Caffe layout:

* the stem max-pool uses ``ceil_mode=True`` (a 512×512 crop gives a 65×65 map, 512×1024 gives 65×129);
* in bottleneck blocks the stride sits on the first 1×1 conv, not on the 3×3 (Caffe ResNet, not v1.5);
* layer3 and layer4 keep stride 1 and dilate **every** 3×3 conv of the stage by 2 and 4 (padding = dilation).
  torchvision's ``replace_stride_with_dilation`` leaves the first block of each stage at the previous dilation
  and is not supported for BasicBlock (resnet18), so the convs are set here directly for all depths;
* backbone BatchNorms can have frozen affine parameters while still updating their running statistics in
  ``train()`` mode, exactly like the original (§1.1, §9.6).

Parameter names equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` …), so an ImageNet state dict
loads as is, and the DeepLab checkpoints load once their ``Scale.`` prefix is stripped
(:func:`load_pretrained`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from corda.errors import CordaError
from corda.models.resnet import RESNET_SPECS, Bottleneck, ResNet, resnet
from corda.models.weights import nested_state_dict, read_torch_file, require_tensor_dict, strip_prefixes

log = logging.getLogger(__name__)

Arch = Literal["resnet18", "resnet50", "resnet101"]


def build_resnet(arch: str, choices: tuple[str, ...], what: str = "backbone") -> ResNet:
    """A randomly initialised ResNet, bit-equal to torchvision's ``weights=None`` one for the same seed
    (:mod:`corda.models.resnet`; one constructor for the segmentation backbone and the depth/pose encoders).

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        choices: the names the caller accepts (e.g. ``typing.get_args(Arch)``).
        what: how the error message calls the network.

    Raises:
        CordaError: ``arch`` is not in ``choices``.
    """
    if arch not in choices or arch not in RESNET_SPECS:
        raise CordaError(f"unknown {what} {arch!r}; choose one of {sorted(choices)}")
    return resnet(arch)


# DeepLab-v2 stage dilations (method.md §1.1): output stride 8. Output stride 16 (layer3 keeps its
# stride, layer4 dilated by 2) is a cheaper variant for CPU-sized runs: layer4 then costs 4× less. Output
# stride 32 is the plain ResNet (no dilation), for decoder heads that take the detail from a 1/4 skip.
_STAGE_DILATION = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}, 32: {}}


def _dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Remove the stage's stride and dilate every 3×3 conv in it (padding = dilation)."""
    for block in stage:
        for conv in block.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)


def _stride_on_first_1x1(stage: nn.Sequential) -> None:
    """Move a bottleneck stage's stride from the 3×3 conv (torchvision) to the first 1×1 conv (Caffe)."""
    first = stage[0]
    if isinstance(first, Bottleneck) and first.conv2.stride != (1, 1):
        first.conv1.stride = first.conv2.stride
        first.conv2.stride = (1, 1)


class DilatedResNet(nn.Module):
    """DeepLab-v2 ResNet with output stride 8.

    Args:
        arch: ``resnet18`` (BasicBlock, 512 channels out), ``resnet50`` or ``resnet101`` (Bottleneck, 2048).
        freeze_bn_affine: set ``requires_grad=False`` on every BN weight/bias (§1.1). Running statistics still
            update whenever the module is in ``train()`` mode.
        output_stride: 8 (DeepLab-v2, the default) or 16 (layer3 strided, layer4 dilated by 2).
        stride_in_1x1: Caffe/DeepLab placement of the stride in bottleneck blocks (§1.1). Weight shapes are
            the same either way; only which conv downsamples differs.

    Forward: images (B, 3, H, W), already normalised → features (B, out_channels, ⌈H/8⌉+δ, ⌈W/8⌉+δ)
    (65×65 for 512×512: the ceil-mode pool adds one row/column).
    """

    def __init__(self, arch: Arch = "resnet101", freeze_bn_affine: bool = True, stride_in_1x1: bool = True,
                 output_stride: int = 8):
        super().__init__()
        net = build_resnet(arch, get_args(Arch))
        self.arch = arch
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        # Caffe pooling arithmetic (§1.1): ceil_mode gives the 65×65 map of the original for a 512 crop.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if stride_in_1x1:
            _stride_on_first_1x1(self.layer2)
        if output_stride not in _STAGE_DILATION:
            raise CordaError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        for name, dilation in _STAGE_DILATION[output_stride].items():
            _dilate_stage(getattr(self, name), dilation)
        last = self.layer4[-1]
        self.out_channels: int = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
        self.freeze_bn_affine = freeze_bn_affine
        if freeze_bn_affine:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    @property
    def low_channels(self) -> int:
        """Channels of layer1's output, the 1/4-resolution skip of the decoder head."""
        last = self.layer1[-1]
        return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_levels(x)[1]

    @property
    def stem_channels(self) -> int:
        """Channels of the stem (conv1) output at 1/2 resolution, the decoder2 head's finest skip."""
        return self.conv1.out_channels

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(stem features at 1/2, layer1 features at 1/4, final features at 1/output_stride)."""
        stem = self.relu(self.bn1(self.conv1(x)))
        low = self.layer1(self.maxpool(stem))
        return stem, low, self.layer4(self.layer3(self.layer2(low)))

    def forward_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer1 features at 1/4 resolution, final features at 1/output_stride)."""
        return self.forward_pyramid(x)[1:]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: checkpoint key names after prefix stripping."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model (fc, layer5 …)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint


# Prefixes of the DeepLab checkpoints (``Scale.``, §1.6) and of DataParallel-saved models (``module.``).
_STRIP_PREFIXES = ("module.", "Scale.")


def map_checkpoint_key(key: str) -> str:
    """Map a torchvision or DeepLab (``Scale.layer1.0.conv1.weight``) key to our backbone's name."""
    return strip_prefixes(key, _STRIP_PREFIXES)


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or a training checkpoint that holds one under a usual key."""
    return require_tensor_dict(nested_state_dict(obj), path, "ImageNet ResNet or DeepLab checkpoint expected")


def _find_backbone(model: nn.Module) -> nn.Module:
    if isinstance(model, DilatedResNet):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, DilatedResNet):
        return backbone
    return model


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy every checkpoint tensor whose (mapped) name and shape match into the backbone (§1.6).

    Args:
        model: a :class:`DilatedResNet`, or a module with a ``backbone`` attribute holding one.
        path: a local file: a torchvision ImageNet ResNet state dict, or a DeepLab checkpoint whose keys carry
            a ``Scale.`` prefix (``Scale.conv1.weight``, ``Scale.layer1.0.downsample.1.running_mean`` …).
            Classifier keys (``fc.*``, ``layer5.*``) have no counterpart and are reported as unexpected.

    Returns:
        a :class:`LoadReport`; what was skipped is also logged.

    Raises:
        CordaError: the file is missing or does not hold a state dict.
    """
    path = Path(path)
    obj = read_torch_file(
        path, missing=(
            f"{path}: pretrained weights not found (model.pretrained); the paper presets start from the "
            "DeepLab-v2 ResNet-101 COCO-pretrained weights the authors and DACS use (resnet101COCO-41f33a49.pth, "
            "downloadable from the DACS/CorDA code releases): put that file at this path, point model.pretrained "
            "at your copy (or at torchvision ImageNet ResNet weights), or set it to null to train from scratch"),
        unreadable=lambda exc: f"{path}: cannot read pretrained weights ({exc})")
    ckpt = {map_checkpoint_key(k): v for k, v in _unwrap_state_dict(obj, path).items()}

    target = _find_backbone(model)
    own = target.state_dict()
    report = LoadReport()
    with torch.no_grad():
        for name, tensor in ckpt.items():
            if name not in own:
                report.unexpected.append(name)
            elif own[name].shape != tensor.shape:
                report.shape_mismatch.append(name)
            else:
                own[name].copy_(tensor.to(own[name].dtype))
                report.loaded.append(name)
    report.missing = sorted(set(own) - set(ckpt))
    log.info("loaded %d tensors from %s", len(report.loaded), path)
    if report.shape_mismatch:
        log.warning("skipped %d tensors with another shape: %s", len(report.shape_mismatch),
                    ", ".join(report.shape_mismatch))
    if report.unexpected:
        log.info("skipped %d checkpoint tensors with no counterpart: %s", len(report.unexpected),
                 ", ".join(report.unexpected[:20]) + (" …" if len(report.unexpected) > 20 else ""))
    if report.missing:
        log.warning("%d backbone tensors not in the checkpoint: %s", len(report.missing),
                    ", ".join(report.missing[:20]) + (" …" if len(report.missing) > 20 else ""))
    return report
