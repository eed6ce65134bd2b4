"""Monodepth2-style pose network (Godard et al., ICCV 2019; method.md, "Monodepth2 essentials"): a ResNet
encoder on two frames stacked on the channel axis and a small convolutional decoder that regresses the
relative camera motion as an axis-angle rotation and a translation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from corda.models.depth_net import Backbone, ResNetEncoder, imagenet_normalise

# Output scale: Monodepth2 multiplies the raw regression by 0.01 so that the initial motion is close to
# zero (near-identity warps) and the pose is learned gently.
POSE_SCALE = 0.01


class PoseNet(nn.Module):
    """Relative pose between two frames.

    Args:
        backbone: encoder depth (``resnet18`` in Monodepth2).
        pretrained: local torchvision ResNet state-dict file, or None; its first conv is replicated over the
            two frames (see :func:`corda.models.depth_net.load_resnet_weights`).

    ``forward(a, b)``: two (B, 3, H, W) RGB frames in [0, 1] → ``(axisangle (B, 3) rad, translation (B, 3))``,
    the motion that maps points in camera ``a`` to camera ``b`` (``corda.geometry.pose_to_matrix``). Feed
    frames in temporal order and invert the transform for the earlier frame (see :mod:`corda.depth.step`).
    """

    def __init__(self, backbone: Backbone = "resnet18", pretrained: str | Path | None = None):
        super().__init__()
        self.encoder = ResNetEncoder(backbone, pretrained, in_frames=2)
        c = self.encoder.channels[-1]
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 256, 1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 6, 1),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = imagenet_normalise(torch.cat((a, b), 1))
        out = self.decoder(self.encoder(x)[-1]).mean(dim=(2, 3)) * POSE_SCALE  # (B, 6), global average
        return out[:, :3], out[:, 3:]
