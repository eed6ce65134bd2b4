"""Input normalisation and weight-init rules shared by the segmentation networks (and the depth network's
constants): one home for the ImageNet and Caffe constants."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

# Caffe DeepLab preprocessing (method.md §5): BGR order, 0–255 range, mean subtracted, no std division.
IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

InputNorm = Literal["imagenet", "caffe_bgr"]


class InputNormalization:
    """Mixin for a network (``nn.Module``) taking RGB in [0, 1]: ``normalize`` maps it to the network's input.

    The constants are non-persistent buffers of the network itself (kept out of checkpoints and of the EMA).
    """

    input_norm: InputNorm
    norm_mean: torch.Tensor
    norm_std: torch.Tensor

    def register_input_norm(self, input_norm: InputNorm) -> None:
        if input_norm == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean, std = torch.tensor(IMG_MEAN_BGR) / 255.0, torch.full((3,), 1.0 / 255.0)
        self.register_buffer("norm_mean", mean.view(1, 3, 1, 1), persistent=False)  # type: ignore[attr-defined]
        self.register_buffer("norm_std", std.view(1, 3, 1, 1), persistent=False)  # type: ignore[attr-defined]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] → network input. Caffe: x[BGR]·255 − IMG_MEAN = (x[BGR] − mean/255)/(1/255)."""
        if self.input_norm == "caffe_bgr":
            images = images.flip(1)
        return (images - self.norm_mean) / self.norm_std


def init_bn_identity(m: nn.BatchNorm2d) -> None:
    """BatchNorm weight 1, bias 0."""
    nn.init.ones_(m.weight)
    nn.init.zeros_(m.bias)


def init_conv_normal(m: nn.Conv2d, std: float, zero_bias: bool) -> None:
    """Conv weights ~ N(0, std²); the bias zeroed when ``zero_bias`` (else it keeps torch's default init)."""
    nn.init.normal_(m.weight, 0.0, std)
    if zero_bias and m.bias is not None:
        nn.init.zeros_(m.bias)
