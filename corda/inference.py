"""Running a trained segmentation model: batched logits, predictions and split-level scoring.

Inference uses the ``S`` head of the student, upsampled bilinearly (align_corners=True) to the
label resolution (method.md §6). Shared by training-time validation, the evaluate stage and the
pseudo-label export.

Memory of scoring (:func:`confusion_over`): the network runs on the whole batch at its input size, then each image's
labels are made on their own by :func:`labels_at`, one class plane at a time, and counted. Beyond the network's
batch forward and the loaded batch, one image is in flight: its labels (two float32 planes, a mask and the uint8
labels, about 10 bytes per label pixel) and the int64 index temporaries of the count; 54 bytes per label pixel
measured, 113 MB for a 1024×2048 label, whatever the batch size. The batch's (B, C, H, W) float32 logits at label
size (76 bytes per pixel per image for 19 classes, 160 MB per 1024×2048 image, plus its argmax) are never made. The
counts equal those of ``segment(...)["S"].argmax(1)`` on the whole batch.
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


@torch.no_grad()
def labels_at(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) uint8 trainIds: the argmax over classes of ``logits`` (C, h, w) upsampled to ``size`` = (H, W).

    Equal to ``upsample_outputs({"S": logits[None]}, size, float32=True)["S"][0].argmax(0)``, without its
    (C, H, W) float32 tensor (2.3 GB peak for a 4000x3000 photo with 19 classes): each class's plane is upsampled
    by the same rule on its own and folded into a running maximum, which keeps the first class on ties, as
    ``argmax`` does. Peak memory: two float32 planes, a mask and the labels (about 10 bytes per pixel).
    """
    best = labels = None
    for c in range(logits.shape[0]):
        plane = upsample_outputs({"S": logits[None, c:c + 1]}, size, float32=True)["S"][0, 0]
        if best is None:
            best, labels = plane, torch.zeros(plane.shape, dtype=torch.uint8, device=plane.device)
            continue
        better = plane > best
        labels.masked_fill_(better, c)
        torch.maximum(best, plane, out=best)
        del plane, better
    return labels


def iterate_batches(dataset, batch_size: int, workers: int = 0) -> Iterator[dict]:
    """Deterministic, ordered batches over a whole dataset (evaluation, export)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         persistent_workers=False)
    yield from loader


@torch.no_grad()
def confusion_over(model: nn.Module, batches: Iterable[dict], num_classes: int, device: torch.device):
    """:class:`corda.metrics.ConfusionMatrix` of ``model`` over labelled batches (whole split, bincount).

    The counts of ``segment(model, images, label_size)["S"].argmax(1)`` per batch, made image by image with
    :func:`labels_at` (memory: module docstring).
    """
    from corda.metrics import ConfusionMatrix

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    for batch in batches:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        logits = model(images)["S"]
        for j in range(logits.shape[0]):
            cm.update(labels_at(logits[j], tuple(labels.shape[-2:])), labels[j])
    model.train(was_training)
    return cm
