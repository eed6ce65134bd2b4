"""Colour-space conversions shared by the two augmentations that need them: the DACS strong augmentation
(:mod:`corda.uda`, method.md §3.6) and the depth network's photometric jitter (:mod:`corda.depth.step`).

Both work on (B, 3, H, W) float tensors with hue in radians, so a hue rotation is an addition modulo 2π.
"""

from __future__ import annotations

import math

import torch


def rgb_to_hsv(img: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → HSV with hue in radians [0, 2π), saturation and value in [0, 1]."""
    r, g, b = img.unbind(1)
    maxc, argmax = img.max(1)
    minc = img.min(1).values
    delta = maxc - minc
    sat = delta / (maxc + eps)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # The hue sextant depends on which channel is the maximum (first one on ties).
    h = torch.where(argmax == 0, (g - b) / safe,
                    torch.where(argmax == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    hue = torch.remainder(h / 6.0, 1.0) * (2.0 * math.pi)
    return torch.stack((hue, sat, maxc), 1)


def hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: (B, 3, H, W) HSV (hue in radians) → RGB in [0, 1]."""
    hue, sat, val = img.unbind(1)
    h6 = torch.remainder(hue / (2.0 * math.pi), 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = val * (1.0 - sat)
    q = val * (1.0 - f * sat)
    t = val * (1.0 - (1.0 - f) * sat)
    sector = sector.long().clamp(0, 5)
    # (R, G, B) per sextant 0..5 of the hue circle.
    table = torch.stack([
        torch.stack((val, t, p), 1), torch.stack((q, val, p), 1), torch.stack((p, val, t), 1),
        torch.stack((p, q, val), 1), torch.stack((t, p, val), 1), torch.stack((val, p, q), 1),
    ], 0)  # (6, B, 3, H, W)
    idx = sector.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return table.gather(0, idx).squeeze(0)
