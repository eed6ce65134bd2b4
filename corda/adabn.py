"""BatchNorm statistics re-estimated on unlabelled target images (AdaBN, Li et al., 2017).

Why the evaluate stage needs it (issue 17). A BN layer's running statistics are averaged over the batches the
network trained on. The source-only model sees source images only, so its statistics are source statistics;
the UDA methods alternate source and mixed batches (as the authors' code does, method.md §9.6), so theirs are a
blend; only the oracle's are target statistics. In the paper the backbone starts from COCO-pretrained
statistics and both domains are photo-like images. The embedded default trains from scratch on two rendered domains
with different colours and cameras, and there the statistics mismatch alone collapses the source-only
prediction on the target (road 0 IoU, most pixels "car") while its weights, with target statistics, find the
road. So the evaluate stage reports every model twice: with its own running statistics (what the trained
model is; no target data for source_only) and with statistics re-estimated on unlabelled target train images
(AdaBN: no labels, no gradient step, the weights untouched), which separates what the weights learnt from
what the statistics cost.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def target_bn_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose BN running statistics are the plain average over ``batches``.

    ``batches``: (B, 3, H, W) image tensors in [0, 1] on the model's device. Every BN layer's statistics
    are reset and re-accumulated with ``momentum=None`` (a cumulative average, so the order of the batches
    does not matter beyond float rounding); weights, biases and the input ``model`` are left unchanged.
    """
    adapted = copy.deepcopy(model)
    norms = [m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("target_bn_statistics: the model has no BatchNorm layer")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    adapted.train()
    seen = 0
    for images in batches:
        adapted(images)
        seen += images.shape[0]
    if seen == 0:
        raise ValueError("target_bn_statistics: no target images")
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return adapted.eval()


def adabn_batches(target_train, items: int, batch_size: int, resize_hw, device: torch.device):
    """Image batches over the first ``items`` items of ``target_train`` (a ``DatasetIndex``), at ``resize_hw``.

    Deterministic (no crop, no augmentation, fixed order); only images are read, never labels.
    """
    from corda.data.datasets import SegDepthDataset
    from corda.inference import iterate_batches

    ds = SegDepthDataset(target_train, ("image",), resize_hw, None, seed=0)
    ds = torch.utils.data.Subset(ds, range(min(items, len(ds))))
    for batch in iterate_batches(ds, batch_size):
        yield batch["image"].to(device)
