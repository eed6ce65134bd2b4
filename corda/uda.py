"""Domain-adaptation building blocks of DACS/CorDA (method.md §3, §4): ClassMix, mixing, the EMA teacher,
the confidence weight, the strong augmentation and the depth-discrepancy weight.

All randomness comes from an explicit generator passed in; random numbers are drawn on the CPU and moved to
the data's device, so a seed gives the same draws on CPU and GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from corda.colour import hsv_to_rgb, rgb_to_hsv
from corda.labels import IGNORE

Rng = torch.Generator | np.random.Generator


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n draws of U(low, high) on the CPU (the generator's device)."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------
# ClassMix (§3.4, §3.5)
# ---------------------------------------------------------------------------------------------------------

def classmix_masks(labels_s: torch.Tensor, rng: Rng, include_ignore: bool = True) -> torch.Tensor:
    """One ClassMix mask per source image (§3.4), for any batch size.

    For image i: the classes present in ``labels_s[i]`` (sorted, like ``torch.unique``), ⌈n/2⌉ of them drawn
    uniformly without replacement; M_i = 1 where the source label is a drawn class.

    Args:
        labels_s: (B, H, W) int source labels, 255 = ignore.
        rng: ``torch.Generator`` (CPU) or ``numpy.random.Generator``.
        include_ignore: True = faithful (§9.4): 255 counts as a class and ignore regions can be pasted.

    Returns:
        (B, 1, H, W) float mask, 1 = take the source pixel.
    """
    masks = []
    for lab in labels_s:
        classes = torch.unique(lab)
        if not include_ignore:
            classes = classes[classes != IGNORE]
        n = int(classes.numel())
        k = (n + 1) // 2  # ⌈n/2⌉
        if isinstance(rng, np.random.Generator):
            pick = torch.as_tensor(rng.choice(n, k, replace=False), dtype=torch.long)
        else:
            pick = torch.randperm(n, generator=rng)[:k]
        chosen = classes[pick.to(classes.device)]
        masks.append(torch.isin(lab, chosen))
    return torch.stack(masks).unsqueeze(1).float()


def mix(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``M⊙a + (1−M)⊙b`` for a binary mask (§3.5); works for images, labels, depth and weights.

    Args:
        mask: (B, 1, H, W), 1 = take ``a``.
        a, b: (B, C, H, W) or (B, H, W), same shape and dtype (integer labels stay integer). Gradients flow to
            whichever input is selected at each pixel.
    """
    m = mask.bool()
    if a.dim() == 3:
        m = m[:, 0]
    return torch.where(m, a, b)


# ---------------------------------------------------------------------------------------------------------
# Mean teacher (§3.9) and the confidence weight (§3.3)
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, alpha: float = 0.999) -> float:
    """θ_teacher ← α θ_teacher + (1−α) θ_student with α = min(1 − 1/(step+1), alpha) (§3.9).

    Parameters only: buffers (BN running statistics) are **not** averaged, so the teacher keeps the statistics
    of its own train-mode target forwards (§9.6). At step 0 α = 0 and the teacher becomes a copy.

    Returns:
        the α used.
    """
    a = min(1.0 - 1.0 / (step + 1), alpha)
    pt, ps = list(teacher.parameters()), list(student.parameters())
    if len(pt) != len(ps):
        raise ValueError(f"teacher has {len(pt)} parameter tensors, student {len(ps)}: not the same network")
    # The same mul-then-add per tensor as a loop, in a few multi-tensor kernels: a ResNet-101 CorDA net has
    # 394 parameter tensors, and the loop dispatched 1182 of the step's 4606 operators (benchmarks/
    # host_overhead.py); on a GPU at the paper's batch of 2 + 2 the host's launches bound the step.
    torch._foreach_mul_(pt, a)
    torch._foreach_add_(pt, ps, alpha=1.0 - a)
    return a


def confidence_weight(probs_max: torch.Tensor, threshold: float = 0.968) -> torch.Tensor:
    """DACS "threshold_uniform" weight (§3.3): the fraction of the batch's pixels with max prob ≥ threshold.

    Args:
        probs_max: (B, H, W) max softmax probability of the teacher.

    Returns:
        0-dim float tensor, the single weight of every pseudo-labelled pixel this iteration.
    """
    return (probs_max >= threshold).float().mean()


# ---------------------------------------------------------------------------------------------------------
# Strong augmentation (§3.6): kornia-0.4.1-like colour jitter and DACS Gaussian blur, on tensors
# ---------------------------------------------------------------------------------------------------------

def _adjust(img: torch.Tensor, op: int, factor: float) -> torch.Tensor:
    """One kornia-0.4.1 ColorJitter op on (1, 3, H, W) in [0, 1]; results clamped to [0, 1] like kornia."""
    if op == 0:  # brightness: additive shift by factor − 1 (kornia 0.4.1 semantics, §3.6)
        return (img + (factor - 1.0)).clamp(0.0, 1.0)
    if op == 1:  # contrast: plain multiplication (no mean subtraction in kornia 0.4.1)
        return (img * factor).clamp(0.0, 1.0)
    hsv = rgb_to_hsv(img)
    hue, sat, val = hsv.unbind(1)
    if op == 2:  # saturation: scale S
        sat = (sat * factor).clamp(0.0, 1.0)
    else:  # hue: rotate by factor·2π
        hue = torch.remainder(hue + factor * 2.0 * math.pi, 2.0 * math.pi)
    return hsv_to_rgb(torch.stack((hue, sat, val), 1)).clamp(0.0, 1.0)


def color_jitter(img: torch.Tensor, gen: torch.Generator, strength: float = 0.25) -> torch.Tensor:
    """ColorJitter(b=c=s=h=strength) with per-image factors and a per-image random op order (§3.6).

    The original applies it to one mixed image at a time, so each image gets its own factors and order. It
    runs on BGR data as if it were RGB (§9.7); brightness and contrast are per-channel-symmetric, HSV
    saturation is invariant to channel order, and swapping R/B mirrors the hue circle, which maps the
    symmetric hue draw onto itself, so applying it to RGB gives the same distribution.

    Args:
        img: (B, 3, H, W) RGB in [0, 1].
    """
    n = img.shape[0]
    low = max(0.0, 1.0 - strength)
    factors = torch.stack([
        _uniform(gen, n, low, 1.0 + strength),  # brightness factor (applied as factor − 1)
        _uniform(gen, n, low, 1.0 + strength),  # contrast
        _uniform(gen, n, low, 1.0 + strength),  # saturation
        _uniform(gen, n, -strength, strength),  # hue, fraction of a turn
    ], 1)
    orders = [torch.randperm(4, generator=gen).tolist() for _ in range(n)]
    out = []
    for i in range(n):
        x = img[i:i + 1]
        for op in orders[i]:
            x = _adjust(x, op, float(factors[i, op]))
        out.append(x)
    return torch.cat(out)


def blur_kernel_size(side: int, kernel_frac: float = 0.1) -> int:
    """DACS kernel size: the odd number nearest below-or-at ⌈frac·side⌉ (51 for 512), at least 3 (§3.6)."""
    c = math.ceil(kernel_frac * side)
    k = int(math.floor(c - 0.5 + c % 2))
    return max(3, k)


def _gaussian_1d(k: int, sigma: torch.Tensor) -> torch.Tensor:
    """(N, k) normalised Gaussian kernels, one per sigma in ``sigma`` (N,)."""
    x = torch.arange(k, dtype=sigma.dtype, device=sigma.device) - (k // 2)
    g = torch.exp(-(x[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    return g / g.sum(1, keepdim=True)


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor, kernel_frac: float = 0.1) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect borders (kornia's default).

    Args:
        img: (B, C, H, W). sigma: (B,) standard deviations in pixels.
        kernel_frac: kernel side ≈ this fraction of the image side (per axis), odd, ≥ 3.
    """
    b, c, h, w = img.shape
    ky = min(blur_kernel_size(h, kernel_frac), 2 * h - 1)
    kx = min(blur_kernel_size(w, kernel_frac), 2 * w - 1)
    sigma = sigma.to(device=img.device, dtype=img.dtype)
    gy = _gaussian_1d(ky, sigma).repeat_interleave(c, 0).view(b * c, 1, ky, 1)
    gx = _gaussian_1d(kx, sigma).repeat_interleave(c, 0).view(b * c, 1, 1, kx)
    x = F.pad(img.reshape(1, b * c, h, w), (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    x = F.conv2d(F.conv2d(x, gy, groups=b * c), gx, groups=b * c)
    return x.view(b, c, h, w)


def strong_augment(
    img: torch.Tensor,
    gen: torch.Generator,
    jitter_p: float = 0.8,
    jitter: float = 0.25,
    blur_p: float = 0.5,
    sigma: tuple[float, float] = (0.15, 1.15),
    kernel_frac: float = 0.1,
) -> torch.Tensor:
    """DACS/CorDA strong augmentation of the mixed images (§3.6); no flip, no scaling.

    One draw per call decides whether jitter applies (to all images), one whether blur applies; the factors,
    op order and blur sigma are per image. All draws are made whether or not an op applies, so the generator
    advances by the same amount every call.

    Args:
        img: (B, 3, H, W) RGB in [0, 1] on any device.
        gen: CPU ``torch.Generator``.

    Returns:
        (B, 3, H, W) augmented images in [0, 1].
    """
    n = img.shape[0]
    u_jitter, u_blur = torch.rand(2, generator=gen).tolist()
    sigmas = _uniform(gen, n, sigma[0], sigma[1]).float()
    if u_jitter < jitter_p:
        img = color_jitter(img, gen, jitter)
    if u_blur < blur_p:
        img = gaussian_blur(img, sigmas, kernel_frac)
    return img


# ---------------------------------------------------------------------------------------------------------
# Depth-discrepancy weight (§4)
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def depth_discrepancy_weight(
    d_src: torch.Tensor,
    d_tgt: torch.Tensor,
    d_mix: torch.Tensor,
    per_image: bool,
    eps: float = 1e-3,
    invalid: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptation-difficulty weight from the disagreement of the source and target depth decoders (§4).

    ω = clip(relu(1 − |d_src − d_tgt| / d_mix) + eps + [d_mix == invalid], 0, 1): 1 where the decoders agree,
    ``eps`` where they differ by at least the depth target, 1 where the target depth is invalid.
    Gradient-free.

    Args:
        d_src, d_tgt: (B, 1, H, W) raw (un-mixed) outputs of the source and target depth decoders on the mixed
            batch, at label resolution.
        d_mix: (B, 1, H, W) mixed depth target (≥ 1 everywhere in the CorDA encoding, so no division by 0).
        per_image: False = faithful to the original's broadcasting bug (§4, §9.2): image j is weighted by
            mean_i ω_i at the same pixel; True = each image by its own ω (intended).

    Returns:
        ω (B, 1, H, W) and the multiplier (B, H, W) for the pseudo-label weights w0:
        ω_j / mean(ω) (per image) or mean_i ω_i / mean(ω) (faithful), mean(ω) over the whole batch.
    """
    diff = (d_src - d_tgt).abs()
    score = F.relu(1.0 - diff / d_mix) + eps
    omega = (score + (d_mix == invalid).to(score.dtype)).clamp(0.0, 1.0)
    norm = omega.mean()
    if per_image:
        mult = omega[:, 0] / norm
    else:
        mult = (omega.mean(0) / norm).expand(omega.shape[0], -1, -1)
    return omega, mult
