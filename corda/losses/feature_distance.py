"""DAFormer's thing-class ImageNet feature distance (Hoyer et al., CVPR 2022, §3.4, Eq. 7–8).

The student's bottleneck features (the last, stride-32 encoder stage) are pulled towards those of a frozen copy
of the ImageNet-pretrained encoder, on source images only and only where the source label shows a thing class,
so that the semantic knowledge of ImageNet about those classes is not forgotten while training on synthetic data:

    d(i, j) = ‖F_θ(x)(i, j) − F_ImageNet(x)(i, j)‖₂,   L_FD = Σ d·M / Σ M,   loss = λ_FD · L_FD, λ_FD = 0.005

M is the thing-class mask of the label downsampled to the feature grid as DAFormer's ``downscale_label_ratio``
does: the label's one-hot map (ignore as an extra class) is average-pooled over each s×s cell (s = label width /
feature width), a cell takes its majority class, and cells whose majority covers less than ``min_ratio`` (0.75)
become ignore.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from corda.errors import CordaError
from corda.labels import IGNORE


def downscale_label_ratio(labels: torch.Tensor, scale: int, min_ratio: float, num_classes: int,
                          ignore_index: int = IGNORE) -> torch.Tensor:
    """Majority class per ``scale``×``scale`` cell; ``ignore_index`` where it covers < ``min_ratio`` of the cell.

    Args:
        labels: (B, H, W) int64 train ids, ``ignore_index`` = unlabelled.
        scale: cell side (> 1); the output is (B, H // scale, W // scale) (pooling floors, as DAFormer).
    """
    if scale <= 1:
        raise CordaError(f"feature distance: label/feature scale must be > 1, got {scale}")
    lab = labels.clone()
    lab[(lab == ignore_index) | (lab < 0) | (lab >= num_classes)] = num_classes  # ignore → extra class
    onehot = F.one_hot(lab, num_classes + 1).permute(0, 3, 1, 2).float()
    ratio, cls = F.avg_pool2d(onehot, scale).max(dim=1)
    cls[cls == num_classes] = ignore_index
    cls[ratio < min_ratio] = ignore_index
    return cls


def thing_mask(labels: torch.Tensor, feat_hw: Sequence[int], classes: Sequence[int], num_classes: int,
               min_ratio: float = 0.75) -> torch.Tensor:
    """Boolean (B, h, w) mask of feature cells whose downscaled label is one of ``classes``.

    The scale is label width // feature width, as DAFormer; the downscaled label must then have the feature
    grid's size (crop sizes divisible by the encoder stride 32 guarantee it).
    """
    scale = labels.shape[-1] // feat_hw[-1]
    small = downscale_label_ratio(labels, scale, min_ratio, num_classes)
    if tuple(small.shape[-2:]) != tuple(feat_hw):
        raise CordaError(f"feature distance: labels {tuple(labels.shape[-2:])} do not tile the feature grid "
                         f"{tuple(feat_hw)}; use crop sizes divisible by 32 (train.crop_hw)")
    return torch.isin(small, torch.as_tensor(list(classes), device=labels.device))


def masked_feature_distance(student: torch.Tensor, imagenet: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the masked cells of the per-cell L2 distance between (B, C, h, w) feature maps.

    ``imagenet`` is treated as a constant (detached). An empty mask gives 0 (with a graph, so ``backward``
    works); DAFormer's ``torch.mean`` of an empty selection gives NaN there, with the same zero gradient.
    """
    dist = torch.linalg.vector_norm(student - imagenet.detach(), dim=1)  # (B, h, w)
    if mask is None:
        return dist.mean()
    m = mask.to(dist.dtype)
    return (dist * m).sum() / m.sum().clamp_min(1.0)


def feature_distance_loss(student_feat: torch.Tensor, imagenet_feat: torch.Tensor, labels: torch.Tensor,
                          num_classes: int, classes: Sequence[int] | None = None,
                          min_ratio: float = 0.75) -> torch.Tensor:
    """L_FD (unweighted: the caller multiplies by ``train.fd_weight``) on one source batch.

    Args:
        student_feat: (B, C, h, w) the student encoder's last stage on the source images.
        imagenet_feat: (B, C, h, w) the frozen ImageNet encoder's last stage on the same images.
        labels: (B, H, W) source train ids (255 = ignore).
        classes: the thing classes; None = every cell (DAFormer's "FD" without the thing mask).
    """
    if student_feat.shape != imagenet_feat.shape:
        raise CordaError(f"feature distance: student features {tuple(student_feat.shape)} and ImageNet "
                         f"features {tuple(imagenet_feat.shape)} differ; both encoders must be the same MiT")
    mask = None
    if classes is not None:
        mask = thing_mask(labels, student_feat.shape[-2:], classes, num_classes, min_ratio)
    return masked_feature_distance(student_feat, imagenet_feat, mask)


class ImageNetFeatureDistance(torch.nn.Module):
    """The frozen ImageNet encoder and the settings of DAFormer's thing-class feature distance.

    Built once, before training changes the student, from a copy of the student's encoder as loaded from
    ``model.pretrained`` (DAFormer keeps a separate ImageNet model in eval mode). It is no part of the
    checkpoint: the weights file rebuilds it. ``loss`` is L_FD unweighted; the caller adds ``weight``·L_FD.

    Args:
        encoder: the student's encoder right after construction (its ImageNet weights).
        weight: λ_FD (``train.fd_weight``; DAFormer ``imnet_feature_dist_lambda`` 0.005).
        classes: thing classes (``train.fd_classes``); None = every cell.
        min_ratio: ``train.fd_min_ratio`` (DAFormer ``imnet_feature_dist_scale_min_ratio`` 0.75).
        num_classes: semantic classes of the labels (19).
    """

    def __init__(self, encoder: torch.nn.Module, weight: float, classes: Sequence[int] | None,
                 min_ratio: float, num_classes: int):
        super().__init__()
        import copy

        self.encoder = copy.deepcopy(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.weight = float(weight)
        self.classes = tuple(classes) if classes is not None else None
        self.min_ratio = float(min_ratio)
        self.num_classes = int(num_classes)

    def train(self, mode: bool = True) -> "ImageNetFeatureDistance":
        """Always eval (no dropout / drop-path in the reference features), whatever the loop asks."""
        return super().train(False)

    def loss(self, student_feat: torch.Tensor, normalized: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_FD of the student's bottleneck ``student_feat`` on the source batch ``normalized`` (the network
        input after its normalisation) with labels (B, H, W)."""
        with torch.no_grad():
            ref = self.encoder(normalized)[-1]
        return feature_distance_loss(student_feat.float(), ref.float(), labels, self.num_classes, self.classes,
                                     self.min_ratio)
