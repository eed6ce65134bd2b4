"""Losses of the CorDA segmentation network: BerHu depth regression (method.md §2.3) and the two
cross-entropy normalisations of DACS/CorDA (§3.1: mean over labelled pixels; §3.7: mean over all pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corda.labels import IGNORE


def berhu(pred: torch.Tensor, target: torch.Tensor, invalid: float = 1.0,
          c_frac: float = 0.2) -> torch.Tensor:
    """Reverse Huber loss over the valid pixels of the whole batch (§2.3).

    Args:
        pred: (B, 1, H, W) predicted inverse depth (raw network output).
        target: (B, 1, H, W) CorDA inverse depth; pixels exactly equal to ``invalid`` are ignored (exact float
            comparison, as in the original, §9.12).
        invalid: the invalid-depth code (1.0).
        c_frac: c = c_frac · max residual over all valid pixels of the batch, detached.

    Returns:
        scalar: mean over valid pixels of r if r ≤ c else (r² + c²)/(2c), r = |pred − target|; a zero that
        keeps the graph when no pixel is valid.
    """
    valid = target != invalid
    if not bool(valid.any()):
        return pred.sum() * 0.0
    r = (pred[valid] - target[valid]).abs()
    c = c_frac * r.detach().max()
    linear = r <= c
    # Only residuals above c reach the quadratic branch, so c > 0 there; the clamp keeps the unused branch's
    # gradient free of 0/0 when every residual is 0.
    quad = (r.square() + c.square()) / (2.0 * c.clamp_min(torch.finfo(r.dtype).tiny))
    return torch.where(linear, r, quad).mean()


def ce_mean_valid(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Cross-entropy averaged over the non-ignored pixels (source CE, §3.1).

    Args:
        logits: (B, C, H, W). labels: (B, H, W) int64, ``ignore_index`` = unlabelled.

    Returns:
        scalar; 0 (with graph) if every pixel is ignored, where ``F.cross_entropy`` would give NaN.
    """
    per_pixel = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="none")
    n_valid = (labels != ignore_index).sum().clamp_min(1)
    return per_pixel.sum() / n_valid


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                ignore_index: int = IGNORE) -> torch.Tensor:
    """Pixel-weighted cross-entropy averaged over **all** B·H·W pixels, ignored ones counting 0 (DACS, §3.7).

    Args:
        logits: (B, C, H, W). labels: (B, H, W) int64.
        weight: (B, H, W) per-pixel weights (pass them detached).
    """
    per_pixel = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="none")
    return (per_pixel * weight).mean()
