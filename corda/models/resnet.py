"""ResNet v1.5 (He et al. 2016) with torchvision's parameter names and random initialisation.

Why our own: importing ``torchvision`` costs every stage process ~3 s of CPU (its ``ops`` import
``torch._dynamo``), while we only need the plain ResNet constructors. Everything observable is kept equal to
``torchvision.models.resnetXX(weights=None)`` (tests/test_resnet_init.py checks it bit for bit):

* state-dict keys (``conv1``, ``bn1``, ``layer{1..4}.{j}.conv1`` …, ``downsample.0/1``, ``fc``), so torchvision
  ImageNet state dicts and DeepLab checkpoints load unchanged;
* the random draws for a given torch seed: the same modules are constructed (each default init draws; the
  ``fc`` Linear keeps its default init), registered in the same order (``downsample`` last in a block), then
  every Conv2d is redrawn He-normal (fan_out, ReLU gain) and every norm set to weight 1, bias 0, in
  ``self.modules()`` order;
* the forward (stride on the 3×3 conv of a bottleneck, "v1.5"; ``+=`` residual, then ReLU).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34). (B, cin, H, W) → (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, v1.5), 1×1 expand ×4 (ResNet-50/101).
    (B, cin, H, W) → (B, 4·planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet(nn.Module):
    """ImageNet ResNet: stem (7×7/2 conv, 3×3/2 max-pool), four stages (64…512 planes, strides 1, 2, 2, 2),
    global average pool and a ``num_classes`` linear classifier.

    Forward: (B, 3, H, W) → logits (B, num_classes).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: tuple[int, int, int, int],
                 num_classes: int = 1000):
        super().__init__()
        self._cin = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(block, 64, depths[0], stride=1)
        self.layer2 = self._stage(block, 128, depths[1], stride=2)
        self.layer3 = self._stage(block, 256, depths[2], stride=2)
        self.layer4 = self._stage(block, 512, depths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)  # its default init draws RNG: keep it here
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stage(self, block: type[BasicBlock | Bottleneck], planes: int, n: int, stride: int) -> nn.Sequential:
        cout = planes * block.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            # torchvision's order (downsample built before its block). The default inits drawn during
            # construction are all redrawn below, so what fixes the numbers is the registration order:
            # each block registers ``downsample`` last (tests/test_resnet_init.py fails if it comes first).
            downsample = nn.Sequential(_conv1x1(self._cin, cout, stride), nn.BatchNorm2d(cout))
        blocks = [block(self._cin, planes, stride, downsample)]
        self._cin = cout
        blocks += [block(cout, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Blocks and per-stage depths of the ResNets this package builds.
RESNET_SPECS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def resnet(arch: str) -> ResNet:
    """A randomly initialised ResNet named like torchvision's constructors (``resnet18`` … ``resnet101``);
    KeyError for other names (callers check against their own choices first)."""
    block, depths = RESNET_SPECS[arch]
    return ResNet(block, depths)
