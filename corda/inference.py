"""Running a trained segmentation model: batched logits, predictions and split-level scoring.

Inference uses the ``S`` head of the student, upsampled bilinearly (align_corners=True) to the
label resolution (method.md §6). Shared by training-time validation, the evaluate stage and the
pseudo-label export.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch import nn

from corda.models.outputs import upsample_outputs


@torch.no_grad()
def segment(model: nn.Module, images: torch.Tensor, out_size: tuple[int, int] | None = None,
            keys: tuple[str, ...] = ("S",)) -> dict[str, torch.Tensor]:
    """Forward ``images`` (B, 3, H, W) in [0, 1] and upsample the requested outputs to ``out_size``.

    Returns a dict of (B, C, h, w) float tensors (logits for "S", raw inverse depth for "D"/"D_src").
    """
    out = model(images)
    size = out_size or tuple(images.shape[-2:])
    up = upsample_outputs(out, size, keys=keys, float32=True)
    return {k: up[k] for k in keys}


def iterate_batches(dataset, batch_size: int, workers: int = 0) -> Iterator[dict]:
    """Deterministic, ordered batches over a whole dataset (evaluation, export)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         persistent_workers=False)
    yield from loader


@torch.no_grad()
def confusion_over(model: nn.Module, batches: Iterable[dict], num_classes: int, device: torch.device):
    """:class:`corda.metrics.ConfusionMatrix` of ``model`` over labelled batches (whole split, bincount)."""
    from corda.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for batch in batches:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        cm.update(segment(model, images, tuple(labels.shape[-2:]))["S"].argmax(1), labels)
    model.train(was_training)
    return cm
