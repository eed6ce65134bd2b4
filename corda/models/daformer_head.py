"""DAFormer's context-aware feature fusion decoder, and the CorDA network built on MiT + that decoder.

Decoder (Hoyer et al., DAFormer, CVPR 2022, §3.1 and Fig. 3; config ``daformer_sepaspp_mitb5``:
``decoder_params = {embed_dims: 256, embed_cfg: mlp without act/norm, fusion_cfg: aspp, sep=True,
dilations=(1, 6, 12, 18), pool=False, act ReLU, norm BN}``, ``channels=256``, ``dropout_ratio=0.1``):

    encoder maps F_1..F_4 (strides 4, 8, 16, 32) ─ per level: 1×1 linear embedding to 256 (no norm, no act)
        ─ bilinear resize to the stride-4 size (align_corners=False) ─ concat (4·256 = 1024 channels)
        ─ fusion: parallel branches  [1×1 conv-BN-ReLU,
                                       3×3 depthwise (dilation 6/12/18) BN-ReLU → 1×1 conv-BN-ReLU  ×3]
        ─ concat (4·256) ─ 3×3 conv-BN-ReLU bottleneck → F (256 channels, stride 4)
        ─ dropout 0.1 ─ 1×1 classifier

CorDA on top (method.md §1.2–§1.5, mirroring :class:`corda.models.corda_net.CorDANet`): the fused features F
are the semantic features F_S (so ``depth=False`` is exactly DAFormer); a depth branch (CorDA's two residual
bottlenecks, §1.2) turns F into F_D; the spatial-gate feature exchange (§1.3) gives F_S', F_D'; the semantic
classifier reads F_S', a target and a source depth decoder read F_D'. The initial (deep-supervision)
predictions read the pre-exchange features, as CorDA's SYNTHIA model (``initial_seg_head="conv1x1"``).

Outputs have the keys and channel counts of :class:`CorDANet`, at stride 4 instead of 8; the training step
upsamples every output to the label size, so it can use either network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from corda.errors import ConfigError
from corda.models.corda_net import SpatialGate, task_branch
from corda.models.normalization import InputNormalization, init_bn_identity, init_conv_normal
from corda.models.mit import MixTransformer, load_mit_weights

if TYPE_CHECKING:
    from corda.seg.config import MitVariant

# DAFormer's daformer_sepaspp_mitb5 values (see the module docstring).
EMBED_DIMS = 256
FUSION_DILATIONS = (1, 6, 12, 18)
DROPOUT = 0.1


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """conv (no bias: BN follows, as mmcv's ConvModule with a norm) → BN → ReLU; padding keeps the size."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups,
                  bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableASPP(nn.Module):
    """DAFormer's fusion: ASPP without image pooling whose dilated branches are depthwise-separable.

    Forward: (B, in_channels, h, w) → (B, channels, h, w).
    """

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = FUSION_DILATIONS):
        super().__init__()
        branches = []
        for d in dilations:
            if d == 1:
                branches.append(conv_bn_relu(in_channels, channels, 1))
            else:
                branches.append(nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, d, groups=in_channels),
                                              conv_bn_relu(in_channels, channels, 1)))
        self.branches = nn.ModuleList(branches)
        self.bottleneck = conv_bn_relu(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1))


class DAFormerDecoder(nn.Module):
    """Multi-level embedding + context-aware fusion, without the classifier.

    Args:
        in_channels: channels of the four encoder maps (MiT: ``encoder.out_channels``).
        embed_dims: width of each level's embedding and of the fused output (256).
        dilations: fusion dilations ((1, 6, 12, 18)).

    Forward: four maps (B, C_i, h_i, w_i), the first at the finest stride → (B, embed_dims, h_1, w_1).
    """

    def __init__(self, in_channels: Sequence[int], embed_dims: int = EMBED_DIMS,
                 dilations: Sequence[int] = FUSION_DILATIONS):
        super().__init__()
        # DAFormer's "mlp" embedding is a linear layer on the tokens, i.e. a 1×1 conv with bias on the map.
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dims, 1) for c in in_channels)
        self.fuse = SeparableASPP(len(in_channels) * embed_dims, embed_dims, dilations)
        self.out_channels = embed_dims

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        levels = []
        for embed, f in zip(self.embed, feats):
            e = embed(f)
            if e.shape[-2:] != size:
                e = F.interpolate(e, size=size, mode="bilinear", align_corners=False)
            levels.append(e)
        return self.fuse(torch.cat(levels, dim=1))


class DAFormerCorDANet(InputNormalization, nn.Module):
    """MiT encoder + DAFormer decoder (depth=False: DAFormer itself) or + CorDA's depth pieces (depth=True).

    Args:
        num_classes: semantic logits (19).
        mit: encoder variant ``b0`` … ``b5`` (DAFormer: ``b5``).
        pretrained: optional local official MiT ImageNet checkpoint (``mit_b5.pth``), loaded strictly.
        distillation: the spatial-gate feature exchange (§1.3); False = the "without feature exchange" ablation.
        depth: the depth branch, its two decoders and the exchange; False = DAFormer (``S`` = ``initial_S``).
        input_norm: ``"imagenet"`` (DAFormer's mean/std) or ``"caffe_bgr"``.
        task_channels, bottleneck: depth-branch widths; ``task_channels`` must equal the decoder width (256).
        drop_path_rate: MiT stochastic depth (0.1, DAFormer's default).
        embed_dims: decoder width (256).
        decoder_channels: ``model.decoder_channels``; sets ``embed_dims`` and ``task_channels`` (DAFormer: 256, the
            presets; the embedded default's 96 makes the fusion decoder about 7× cheaper on a CPU).

    Forward: images (B, 3, H, W) RGB in [0, 1] → dict at stride 4, (h, w) = (⌈H/4⌉, ⌈W/4⌉):
        ``S``, ``initial_S`` (B, num_classes, h, w); with depth also ``D``, ``D_src``, ``initial_D``,
        ``initial_D_src`` (B, 1, h, w). ``return_features=True`` adds ``encoder``: the stride-32 bottleneck
        map (B, C_4, ⌈H/32⌉, ⌈W/32⌉) that the ImageNet feature distance compares
        (:mod:`corda.losses.feature_distance`).
    """

    # ``model`` keys only the DeepLab-v2 network reads (corda.models.factory.build_network): the encoder is fixed
    # by ``mit``, the outputs are at stride 4, the initial prediction is a 1×1 conv on the pre-exchange features,
    # and the depth branch has the decoder's width (``model.decoder_channels``), which the exchange adds to. So
    # ``dvc exp run -S model.architecture=daformer -S model.mit=b0`` runs on the embedded ``model`` section as is.
    IGNORED_MODEL_KEYS: tuple[str, ...] = ("backbone", "output_stride", "aspp_branches", "initial_seg_head",
                                           "freeze_bn_affine", "conv_init_std", "head", "init", "task_channels")

    def __init__(
        self,
        num_classes: int = 19,
        mit: MitVariant = "b5",
        pretrained: str | Path | None = None,
        distillation: bool = True,
        depth: bool = True,
        input_norm: Literal["imagenet", "caffe_bgr"] = "imagenet",
        task_channels: int = EMBED_DIMS,
        bottleneck: int = 64,
        drop_path_rate: float = 0.1,
        embed_dims: int = EMBED_DIMS,
        decoder_channels: int | None = None,
    ):
        super().__init__()
        if decoder_channels is not None:  # ``model.decoder_channels``: the decoder and depth-branch width
            embed_dims = task_channels = decoder_channels
        if input_norm not in ("imagenet", "caffe_bgr"):
            raise ConfigError(f"input_norm must be 'imagenet' or 'caffe_bgr', got {input_norm!r}")
        if depth and task_channels != embed_dims:
            raise ConfigError(f"model.task_channels must equal the DAFormer decoder width {embed_dims} "
                              f"(got {task_channels}); set model.task_channels: {embed_dims}")
        self.num_classes = num_classes
        self.depth = depth
        self.distillation = distillation
        self.input_norm = input_norm
        self.has_initial_seg_head = depth  # as CorDANet: DAFormer alone has one head

        self.backbone = MixTransformer(mit, drop_path_rate=drop_path_rate)
        self.decoder = DAFormerDecoder(self.backbone.out_channels, embed_dims)
        self.dropout = nn.Dropout2d(DROPOUT)  # mmseg's decode-head dropout before the classifier
        self.head_s = nn.Conv2d(embed_dims, num_classes, 1)
        if depth:
            self.branch_d = task_branch(embed_dims, bottleneck, embed_dims)
            if distillation:
                self.gate_d_to_s = SpatialGate(embed_dims)
                self.gate_s_to_d = SpatialGate(embed_dims)
            self.initial_s = nn.Conv2d(embed_dims, num_classes, 1)
            self.initial_d = nn.Conv2d(embed_dims, 1, 1)
            self.initial_d_src = nn.Conv2d(embed_dims, 1, 1)
            # Target and source depth decoders (§2.3): one 3×3 conv each on the exchanged depth features.
            self.head_d = nn.Conv2d(embed_dims, 1, 3, padding=1)
            self.head_d_src = nn.Conv2d(embed_dims, 1, 3, padding=1)

        self.register_input_norm(input_norm)
        self._init_heads()
        if pretrained is not None:
            load_mit_weights(self.backbone, pretrained)

    def _init_heads(self) -> None:
        """mmseg's inits for the DAFormer parts: He (fan_out, ReLU) for conv-BN-ReLU convs, N(0, 0.01²) for the
        classifier; CorDA's N(0, 0.01²) for every conv of the depth pieces (§1.6). The encoder keeps its own."""
        for m in self.decoder.fuse.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        cord = [getattr(self, n) for n in ("branch_d", "gate_d_to_s", "gate_s_to_d", "initial_s", "initial_d",
                                            "initial_d_src", "head_d", "head_d_src") if hasattr(self, n)]
        for m in [self.head_s, *(x for c in cord for x in c.modules())]:
            if isinstance(m, nn.Conv2d):
                init_conv_normal(m, 0.01, zero_bias=True)
            elif isinstance(m, nn.BatchNorm2d):
                init_bn_identity(m)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        feats = self.backbone(self.normalize(images))
        f_s = self.decoder(feats)
        out: dict[str, torch.Tensor]
        if not self.depth:
            s = self.head_s(self.dropout(f_s))
            out = {"S": s, "initial_S": s}
        else:
            f_d = self.branch_d(f_s)
            if self.distillation:
                # Both messages come from the pre-exchange features (§1.3).
                f_s2, f_d2 = f_s + self.gate_d_to_s(f_d), f_d + self.gate_s_to_d(f_s)
            else:
                f_s2, f_d2 = f_s, f_d
            out = {
                "S": self.head_s(self.dropout(f_s2)),
                "initial_S": self.initial_s(self.dropout(f_s)),
                "D": self.head_d(f_d2),
                "D_src": self.head_d_src(f_d2),
                "initial_D": self.initial_d(f_d),
                "initial_D_src": self.initial_d_src(f_d),
            }
        if return_features:
            out["encoder"] = feats[-1]
        return out
