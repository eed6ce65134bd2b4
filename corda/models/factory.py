"""The one place that turns ``model`` params into a network: DeepLab-v2 CorDA (the paper's) or MiT + DAFormer.

``model.architecture`` chooses: ``deeplabv2`` builds :class:`corda.models.corda_net.CorDANet` from exactly the
keys it always took, so that network and its defaults are unchanged; ``daformer`` builds
:class:`corda.models.daformer_head.DAFormerCorDANet` with encoder ``model.mit``. Keys that only describe
DeepLab-v2 (``backbone``, ``output_stride``, ``aspp_branches``, ``initial_seg_head``, ``freeze_bn_affine``) are
ignored by the DAFormer network: its encoder is fixed by ``model.mit``, its outputs are at stride 4, and its
initial prediction is a 1×1 conv on the pre-exchange features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from corda.errors import ConfigError

if TYPE_CHECKING:
    from corda.seg.config import Architecture



def build_network(architecture: Architecture = "deeplabv2", mit: str = "b5", **kwargs: Any) -> nn.Module:
    """A segmentation(+depth) network; ``kwargs`` are the remaining ``model`` keys (and ``depth``).

    Each network class says which ``model`` keys it does not read (``IGNORED_MODEL_KEYS``); the others are its
    constructor's arguments.
    """
    if architecture == "deeplabv2":
        from corda.models.corda_net import CorDANet as net
    elif architecture == "daformer":
        from corda.models.daformer_head import DAFormerCorDANet as net
    else:
        raise ConfigError(f"model.architecture: {architecture!r} is not one of ['deeplabv2', 'daformer']")
    keys = {"mit": mit, **kwargs}
    return net(**{k: v for k, v in keys.items() if k not in net.IGNORED_MODEL_KEYS})
