"""Self-supervised photometric losses of Monodepth2 (Godard et al., ICCV 2019; method.md, "Monodepth2
essentials"): SSIM + L1 reprojection error, the per-pixel minimum over source views with auto-masking, and
the edge-aware smoothness of the mean-normalised disparity.

All functions are pure; randomness (the auto-mask tie-breaking noise) comes from an explicit generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# SSIM stabilisers for signals in [0, 1] (Wang et al. 2004: (0.01·L)², (0.03·L)² with L = 1).
_C1 = 0.01**2
_C2 = 0.03**2


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM dissimilarity ``(1 − SSIM) / 2`` over 3×3 windows, clamped to [0, 1].

    The local means, variances and covariance use a 3×3 box filter over a reflection-padded image (the
    small window and the padding follow Monodepth2), so the output keeps the input size.

    Args:
        x, y: (B, C, H, W) images in [0, 1]; H, W ≥ 2.

    Returns:
        (B, C, H, W) dissimilarity map; 0 where the two images agree locally.
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    den = (mu_x * mu_x + mu_y * mu_y + _C1) * (sigma_x + sigma_y + _C2)
    return ((1.0 - num / den) / 2.0).clamp(0.0, 1.0)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Monodepth2's reprojection error ``α·(1 − SSIM)/2 + (1 − α)·|pred − target|``, channel-averaged.

    Args:
        pred: (B, C, H, W) reconstructed (warped) image in [0, 1].
        target: (B, C, H, W) target image in [0, 1].
        alpha: SSIM weight (0.85 in Monodepth2).

    Returns:
        (B, 1, H, W) per-pixel error.
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    return alpha * ssim(pred, target).mean(1, keepdim=True) + (1.0 - alpha) * l1


def min_reprojection(
    errors: list[torch.Tensor],
    identity_errors: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    noise_std: float = 1e-5,
    draw: tuple[int, slice] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum reprojection with auto-masking (Monodepth2, §3.3 of the paper).

    The minimum over the source views ignores a view in which the pixel is occluded or out of frame. With
    ``identity_errors`` (the errors of the *un-warped* source views against the target) the candidates also
    include those: a pixel whose un-warped source already matches better than any reconstruction (a static
    camera, an object moving with the camera, textureless or infinitely far regions) takes the identity error,
    which carries no gradient to the depth or pose, so it drops out of training. Gaussian noise of std
    ``noise_std`` (1e-5) is added to the identity errors to break exact ties.

    Args:
        errors: per source view, (B, 1, H, W) error of the warped view (:func:`photometric_error`).
        identity_errors: per source view, (B, 1, H, W) error of the un-warped view; None disables masking.
        generator: draws the tie-breaking noise (on the CPU, then moved to the data's device, so a seed gives
            the same draws everywhere); None uses the global RNG.
        noise_std: standard deviation of that noise.
        draw: ``(n, rows)`` when the B images are rows ``rows`` of a global batch of n split across processes:
            the noise is drawn for all n images and ``rows`` kept, so every rank sees its rows of the one draw
            a single process makes and ``generator`` advances alike on every rank. None = the batch is whole.

    Returns:
        ``(loss_map, automask)``: (B, 1, H, W) per-pixel minimum, and (B, 1, H, W) float mask, 1 where a
        reconstruction won (the pixel trains the networks), 0 where an identity error won. Without
        ``identity_errors`` the mask is all ones.
    """
    reproj = torch.cat(errors, 1)  # (B, S, H, W)
    if not identity_errors:
        return reproj.min(1, keepdim=True).values, torch.ones_like(reproj[:, :1])
    ident = torch.cat(identity_errors, 1).detach()
    n, rows = draw if draw is not None else (ident.shape[0], slice(None))
    noise = torch.randn((n, *ident.shape[1:]), generator=generator, dtype=torch.float32)[rows]
    ident = ident + noise.to(ident.device, ident.dtype) * noise_std
    both = torch.cat((ident, reproj), 1)
    loss_map, idx = both.min(1, keepdim=True)
    automask = (idx >= ident.shape[1]).to(reproj.dtype)
    return loss_map, automask


def _gradients(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x (B, C, H, W−1) and y (B, C, H−1, W)."""
    return t[..., :, 1:] - t[..., :, :-1], t[..., 1:, :] - t[..., :-1, :]


def edge_aware_smoothness(disp: torch.Tensor, img: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised disparity (Monodepth2, Eq. 3).

    ``mean(|∂x d*|·exp(−|∂x I|)) + mean(|∂y d*|·exp(−|∂y I|))`` with ``d* = d / mean(d)`` per image: the
    normalisation removes the incentive to shrink the disparity's scale (the paper's reason for it), and
    image gradients (averaged over colour channels) relax the penalty at image edges.

    Args:
        disp: (B, 1, h, w) disparity (any positive scale).
        img: (B, C, h, w) colour image at the same resolution, in [0, 1].

    Returns:
        scalar loss.
    """
    d = disp / (disp.mean(dim=(2, 3), keepdim=True) + eps)
    dx, dy = _gradients(d)
    ix, iy = _gradients(img)
    wx = torch.exp(-ix.abs().mean(1, keepdim=True))
    wy = torch.exp(-iy.abs().mean(1, keepdim=True))
    return (dx.abs() * wx).mean() + (dy.abs() * wy).mean()
