"""The one place that turns ``model`` params into a network: DeepLab-v2 CorDA (the paper's) or MiT + DAFormer.

``model.architecture`` chooses: ``deeplabv2`` builds :class:`corda.models.corda_net.CorDANet` from exactly the
keys it always took, so that network and its defaults are unchanged; ``daformer`` builds
:class:`corda.models.daformer_head.DAFormerCorDANet` with encoder ``model.mit``. Keys that only describe
DeepLab-v2 (``backbone``, ``output_stride``, ``aspp_branches``, ``initial_seg_head``, ``freeze_bn_affine``,
``task_channels``, ...) are ignored by the DAFormer network: its encoder is fixed by ``model.mit``, its outputs are
at stride 4, its initial prediction is a 1×1 conv on the pre-exchange features, and its depth branch has the
decoder's width, which the feature exchange adds to. ``model.decoder_channels`` sets that width (DAFormer: 256,
the presets; the embedded default's 96 makes the fusion decoder about 7× cheaper on a CPU). So ``dvc exp run -S
model.architecture=daformer -S model.mit=b0`` runs on the embedded default's ``model`` section unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from corda.errors import ConfigError
from corda.models.mit import MitVariant

Architecture = Literal["deeplabv2", "daformer"]


@dataclass(frozen=True)
class ArchitectureConfig:
    """``model`` keys choosing the network; ``corda.segmentation.ModelConfig`` inherits them."""

    architecture: Architecture = "deeplabv2"  # the paper's DeepLab-v2 ResNet | MiT + DAFormer decoder
    mit: MitVariant = "b5"  # MiT variant when architecture is daformer (DAFormer: b5)

# ModelConfig keys that only the DeepLab-v2 network reads.
DEEPLAB_ONLY = ("backbone", "output_stride", "aspp_branches", "initial_seg_head", "freeze_bn_affine",
                "conv_init_std", "head", "init", "task_channels")


def build_network(architecture: Architecture = "deeplabv2", mit: str = "b5", **kwargs: Any) -> nn.Module:
    """A segmentation(+depth) network; ``kwargs`` are the remaining ``model`` keys (and ``depth``)."""
    if architecture == "deeplabv2":
        from corda.models.corda_net import CorDANet

        return CorDANet(**kwargs)
    if architecture == "daformer":
        from corda.models.daformer_head import DAFormerCorDANet

        width = kwargs.pop("decoder_channels", None)
        for key in DEEPLAB_ONLY:
            kwargs.pop(key, None)
        if width is not None:
            kwargs.update(embed_dims=width, task_channels=width)
        return DAFormerCorDANet(mit=mit, **kwargs)  # type: ignore[arg-type]
    raise ConfigError(f"model.architecture: {architecture!r} is not one of ['deeplabv2', 'daformer']")
