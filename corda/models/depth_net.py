"""Monodepth2-style depth network (Godard et al., ICCV 2019; method.md, "Monodepth2 essentials"): a ResNet
encoder and a U-Net decoder that predicts a sigmoid disparity at 4 scales.

The encoder is a ResNet equal to torchvision's ``weights=None`` one (:mod:`corda.models.resnet`; no download);
a local torchvision state dict can be loaded into it (:func:`load_resnet_weights`). :class:`ResNetEncoder` is shared with the pose network,
which feeds it two frames stacked on the channel axis.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from corda.errors import CordaError
from corda.geometry import disp_to_depth
from corda.models.backbone import build_resnet
from corda.models.normalization import IMAGENET_MEAN, IMAGENET_STD
from corda.models.weights import STATE_DICT_KEYS, read_torch_file

log = logging.getLogger(__name__)

Backbone = Literal["resnet18", "resnet34", "resnet50"]


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """(B, 3k, H, W) RGB in [0, 1] (k frames stacked on channels) → ImageNet-normalised."""
    k = x.shape[1] // 3
    mean = torch.tensor(IMAGENET_MEAN * k, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD * k, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = read_torch_file(path, missing=f"pretrained weights file not found: {path} (give a local torchvision "
                                        "ResNet state dict, or null to train from scratch)",
                          unreadable=lambda exc: f"cannot read pretrained weights {path}: {exc}")
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CordaError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


def load_resnet_weights(resnet: nn.Module, path: str | Path, in_frames: int = 1) -> None:
    """Load a torchvision ResNet state dict from a local file into ``resnet`` (the classifier is skipped).

    With ``in_frames`` > 1 the first conv takes ``3·in_frames`` channels; its pretrained RGB kernel is
    repeated per frame and divided by ``in_frames``, so a stack of identical frames gives the pretrained
    response (the usual way to initialise a pose encoder).

    Raises:
        CordaError: the file is missing or unreadable, or lacks a tensor of the ResNet (wrong backbone).
    """
    path = Path(path)
    state = _read_state_dict(path)
    conv1 = state.get("conv1.weight")
    if conv1 is not None and in_frames > 1:
        state["conv1.weight"] = conv1.repeat(1, in_frames, 1, 1) / in_frames
    own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if bad:
        found = "missing" if bad[0] not in state else f"shaped {tuple(state[bad[0]].shape)}"
        raise CordaError(f"{path} does not hold this ResNet's weights: {len(bad)} tensors missing or of "
                         f"another shape (first: {bad[0]}, {found}, expected {tuple(own[bad[0]].shape)}); "
                         "check the backbone setting")
    resnet.load_state_dict({k: state[k] for k in own}, strict=False)
    log.info("loaded %d tensors from %s", len(own), path)


class ResNetEncoder(nn.Module):
    """ResNet (:func:`corda.models.backbone.build_resnet`, random init) returning its 5 feature maps.

    Args:
        backbone: ``resnet18``, ``resnet34`` or ``resnet50``.
        pretrained: local torchvision state-dict file, or None (random init).
        in_frames: number of RGB frames stacked on the channel axis (1 for depth, 2 for pose).

    Forward: (B, 3·in_frames, H, W), already normalised → list of 5 maps at strides 2, 4, 8, 16, 32 with
    ``channels`` channels (64, 64, 128, 256, 512 for resnet18/34; 64, 256, 512, 1024, 2048 for resnet50).
    """

    def __init__(self, backbone: Backbone = "resnet18", pretrained: str | Path | None = None,
                 in_frames: int = 1):
        super().__init__()
        net = build_resnet(backbone, get_args(Backbone), "depth backbone")
        if in_frames != 1:
            net.conv1 = nn.Conv2d(3 * in_frames, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if pretrained is not None:
            load_resnet_weights(net, pretrained, in_frames)
        net.fc = nn.Identity()  # unused; keeps the classifier out of the optimizer
        self.net = net
        expansion = 4 if backbone == "resnet50" else 1
        self.channels = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        f0 = n.relu(n.bn1(n.conv1(x)))
        f1 = n.layer1(n.maxpool(f0))
        f2 = n.layer2(f1)
        f3 = n.layer3(f2)
        f4 = n.layer4(f3)
        return [f0, f1, f2, f3, f4]


class _Pad1(nn.Module):
    """1-pixel reflection padding (Monodepth2: no zero-padding artefacts at the borders); maps with a
    side of 1 pixel (the coarsest features of tiny test inputs) cannot be reflected and are replicated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        return F.pad(x, (1, 1, 1, 1), mode=mode)


class _ConvELU(nn.Sequential):
    """3×3 conv with reflection padding + ELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(_Pad1(), nn.Conv2d(cin, cout, 3), nn.ELU(inplace=True))


class DepthDecoder(nn.Module):
    """U-Net decoder: at each of 5 levels conv → ×2 nearest upsampling → concat skip → conv; a sigmoid
    disparity head on the 4 finest levels.

    Forward: encoder features (from :class:`ResNetEncoder`) → list of 4 disparities, index s at 1/2^s of the
    input resolution, values in (0, 1).
    """

    def __init__(self, enc_channels: tuple[int, ...], num_scales: int = 4,
                 channels: tuple[int, ...] = (16, 32, 64, 128, 256)):
        super().__init__()
        self.num_scales = num_scales
        self.up_in = nn.ModuleList()
        self.up_out = nn.ModuleList()
        for i in range(5):
            cin = enc_channels[-1] if i == 4 else channels[i + 1]
            self.up_in.append(_ConvELU(cin, channels[i]))
            skip = enc_channels[i - 1] if i > 0 else 0
            self.up_out.append(_ConvELU(channels[i] + skip, channels[i]))
        self.heads = nn.ModuleList(
            nn.Sequential(_Pad1(), nn.Conv2d(channels[s], 1, 3)) for s in range(num_scales)
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = feats[-1]
        disps: list[torch.Tensor | None] = [None] * self.num_scales
        for i in range(4, -1, -1):
            x = F.interpolate(self.up_in[i](x), scale_factor=2, mode="nearest")
            if i > 0:
                skip = feats[i - 1]
                if skip.shape[-2:] != x.shape[-2:]:  # odd input sizes: match the skip's size
                    x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
                x = torch.cat((x, skip), 1)
            x = self.up_out[i](x)
            if i < self.num_scales:
                disps[i] = torch.sigmoid(self.heads[i](x))
        return disps  # type: ignore[return-value]


class DepthNet(nn.Module):
    """Monodepth2 depth network: ResNet encoder + U-Net decoder, sigmoid disparity at 4 scales.

    Args:
        backbone: encoder depth (``resnet18`` in Monodepth2).
        pretrained: local torchvision ResNet state-dict file for the encoder, or None.
        min_depth, max_depth: metres; the sigmoid disparity maps linearly onto [1/max, 1/min] (0.1, 100).

    ``forward(x)``: (B, 3, H, W) RGB in [0, 1] (ImageNet normalisation happens inside) → list of 4 sigmoid
    disparities, scale s shaped (B, 1, H/2^s, W/2^s); scale 0 is full resolution. Other sizes work too (the
    decoder matches each skip's size, so scale s is then ⌈H/2^s⌉-ish); multiples of 32 give exact halvings.
    """

    def __init__(self, backbone: Backbone = "resnet18", pretrained: str | Path | None = None,
                 min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise CordaError(f"depth range must satisfy 0 < min_depth < max_depth, got {min_depth}, "
                             f"{max_depth}")
        self.encoder = ResNetEncoder(backbone, pretrained)
        self.decoder = DepthDecoder(self.encoder.channels)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self._init_heads()

    def _init_heads(self) -> None:
        """Start every scale at a mid-range depth (geometric mean of the range).

        With PyTorch's default init the sigmoid starts near 0.5, i.e. close to ``min_depth``: the
        warps then sample far outside the frame and a network trained from scratch can collapse to
        a saturated, constant disparity ("everything at infinity"). Small head weights and a bias at
        the mid-range disparity keep the sigmoid in its responsive range from the first step.
        """
        lo, hi = 1.0 / self.max_depth, 1.0 / self.min_depth
        s0 = (1.0 / math.sqrt(self.min_depth * self.max_depth) - lo) / (hi - lo)
        for head in self.decoder.heads:
            conv = head[-1]
            nn.init.normal_(conv.weight, std=1e-3)
            nn.init.constant_(conv.bias, math.log(s0 / (1.0 - s0)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(self.encoder(imagenet_normalise(x)))

    def predict_depth(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) depth in metres (in the network's scale)."""
        return disp_to_depth(self(x)[0], self.min_depth, self.max_depth)[1]
