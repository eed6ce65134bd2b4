"""The depth step: one training iteration of self-supervised depth (Monodepth2, Godard et al. ICCV 2019; method.md,
"Monodepth2 essentials"), for the ``depth_pretrain`` stage.

The target view is frame 0 / the left image. Each source view (the right image of the stereo pair and/or the
previous and next video frames) is warped into the target with the predicted depth and a known (stereo
baseline) or predicted (pose network) camera motion. Per scale, the loss is the per-pixel minimum of the
photometric errors over the source views, auto-masked against the un-warped source errors, plus the
edge-aware smoothness weighted by 1e-3 / 2^scale; scales are averaged. Every disparity is upsampled to the
input resolution before warping (Monodepth2's fix for texture-copy artefacts at coarse scales).

Stereo training gives metric depth (the baseline is in metres); monocular training is up to an unknown scale.
The training loop, optimizer (Adam over every parameter of the models dict) and checkpoints live in
:mod:`corda.engine`; this module only computes the loss terms.

Data-parallel pretraining (``depth.devices = N > 1``, issue #7; see :mod:`corda.distributed`): rank ``r``
gets images ``[r·b, (r+1)·b)`` of the step's global batch (``b`` = ``depth.batch_size`` / N) and calls
:func:`depth_train_step` with ``shard=(r, N)``. Every rank then draws the random numbers of the *whole*
global batch from the step's generator (flips, colour jitter, auto-mask tie noise) and keeps its slice, so
each image gets exactly the draws it gets in one process. The per-rank loss is a mean over the rank's
pixels and every rank has as many, so DDP's averaged gradient is the one-process gradient up to float
summation order, *except* for BatchNorm: the ResNet encoders normalise with per-rank batch statistics
(no SyncBatchNorm), i.e. over ``b`` images instead of the global batch (keep ``b`` ≥ 2), and the saved
running statistics are rank 0's (each rank keeps its own; :func:`corda.distributed.wrap`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from corda.colour import hsv_to_rgb, rgb_to_hsv
from corda.depth.config import DepthConfig, Mode
from corda.errors import CordaError
from corda.geometry import disp_to_depth, pose_to_matrix, stereo_transform, warp
from corda.losses.photometric import edge_aware_smoothness, min_reprojection, photometric_error
from corda.models.depth_net import DepthNet
from corda.models.pose_net import PoseNet

LOSS_KEYS = ("loss", "photometric", "smoothness")
DIAG_KEYS = ("automask",)

# Monodepth2's colour augmentation: each of brightness/contrast/saturation ±0.2 and hue ±0.1 (of a turn),
# applied to half of the samples, with the same factors for every frame of a sample.
_JITTER = (0.2, 0.2, 0.2, 0.1)
_JITTER_P = 0.5
_FLIP_P = 0.5


def uses_video(mode: Mode) -> bool:
    return mode in ("mono", "mono+stereo")


def uses_stereo(mode: Mode) -> bool:
    return mode in ("stereo", "mono+stereo")


def required_keys(mode: Mode) -> tuple[str, ...]:
    """Batch keys that a training step of ``mode`` reads."""
    keys = ["image", "K"]
    if uses_stereo(mode):
        keys += ["right", "baseline"]
    if uses_video(mode):
        keys += ["prev", "next"]
    return tuple(keys)


def build_depth_models(cfg: DepthConfig) -> dict[str, nn.Module]:
    """``{"depth": DepthNet}``, plus ``"pose": PoseNet`` when the mode uses video frames.

    Weights are drawn from the global torch RNG: seed it before calling for reproducible runs.
    """
    models: dict[str, nn.Module] = {
        "depth": DepthNet(cfg.backbone, cfg.pretrained, cfg.min_depth_m, cfg.max_depth_m)
    }
    if uses_video(cfg.mode):
        models["pose"] = PoseNet(cfg.backbone, cfg.pretrained)
    return models


# ------------------------------------------------------------------------------------------ augmentation

def _grey(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → (B, 1, H, W) luma (ITU-R 601 weights, as torchvision)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def _draw_jitter(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample factors (n, 4): brightness, contrast, saturation (multiplicative), hue (turns); and a
    (n,) bool saying which samples are jittered."""
    u = torch.rand(n, 4, generator=gen, dtype=torch.float64)
    spread = torch.tensor(_JITTER, dtype=torch.float64)
    centre = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    factors = centre + (2.0 * u - 1.0) * spread
    apply = torch.rand(n, generator=gen) < _JITTER_P
    return factors, apply


def colour_jitter(img: torch.Tensor, factors: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, then hue, per sample (torchvision semantics), clamped to [0, 1].

    Args:
        img: (B, 3, H, W) RGB in [0, 1].
        factors: (B, 4) from :func:`_draw_jitter`; the same factors are applied to every frame of a sample so
            the photometric relations between its views are kept.
        apply: (B,) bool, samples left unchanged where False.
    """
    f = factors.to(img.device, img.dtype).view(-1, 4, 1, 1, 1).unbind(1)
    out = (img * f[0]).clamp(0, 1)
    mean = _grey(out).mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * f[1] + mean).clamp(0, 1)
    grey = _grey(out)
    out = ((out - grey) * f[2] + grey).clamp(0, 1)
    hue, sat, val = rgb_to_hsv(out).unbind(1)
    hue = torch.remainder(hue + f[3][:, 0] * (2.0 * math.pi), 2.0 * math.pi)
    out = hsv_to_rgb(torch.stack((hue, sat, val), 1)).clamp(0, 1)
    return torch.where(apply.to(img.device).view(-1, 1, 1, 1), out, img)


def _flip_batch(batch: dict[str, torch.Tensor], flip: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Mirror the chosen samples horizontally: every image, the intrinsics, and the stereo side.

    A mirrored sample is a valid scene seen by a pinhole camera with ``cx' = W − cx`` (corner-origin pixel
    coordinates, :mod:`corda.geometry`); its right camera now sits at −baseline, so the stereo side is −1.
    """
    out = dict(batch)
    dev = batch["image"].device
    sel = flip.to(dev)
    w = batch["image"].shape[-1]
    for key in ("image", "right", "prev", "next"):
        if key in batch:
            out[key] = torch.where(sel.view(-1, 1, 1, 1), batch[key].flip(-1), batch[key])
    K = batch["K"].clone()
    K[:, 0, 2] = torch.where(sel, w - K[:, 0, 2], K[:, 0, 2])
    out["K"] = K
    side = torch.where(sel, -1.0, 1.0).to(K.dtype)
    return out, side


# ----------------------------------------------------------------------------------------- training step

def _check_batch(batch: dict[str, torch.Tensor], mode: Mode) -> None:
    missing = [k for k in required_keys(mode) if k not in batch]
    if missing:
        raise CordaError(f"depth mode {mode!r} needs batch keys {list(required_keys(mode))}; "
                         f"missing {missing}")
    img = batch["image"]
    if img.dim() != 4 or img.shape[1] != 3:
        raise CordaError(f"batch 'image' must be (B, 3, H, W), got {tuple(img.shape)}")


def depth_train_step(models: dict[str, nn.Module], batch: dict[str, torch.Tensor], cfg: DepthConfig,
                     generator: torch.Generator, shard: tuple[int, int] = (0, 1)) -> dict[str, torch.Tensor]:
    """Self-supervised depth loss of one batch (forward only; the loop back-propagates ``"loss"``).

    Args:
        models: from :func:`build_depth_models` (``"depth"``, and ``"pose"`` for video modes).
        batch: ``"image"`` (B, 3, H, W) target view in [0, 1] (left image / frame 0); ``"right"`` and
            ``"baseline"`` (B,) metres for stereo (the right camera sits at +baseline along x); ``"prev"``,
            ``"next"`` for video; ``"K"`` (B, 3, 3) intrinsics in pixels at (H, W).
        cfg: the depth section.
        generator: CPU generator for the flips, colour jitter and auto-mask noise of this step.
        shard: ``(rank, N)``: ``batch`` is slice ``rank`` of N equal slices of the step's global batch; the
            draws are made for the global batch and sliced (module docstring). ``(0, 1)`` = the whole batch.

    Returns:
        ``"loss"`` (scalar with graph) = ``"photometric"`` + ``"smoothness"`` (detached, both averaged over
        scales), and the diagnostic ``"automask"``: the fraction of full-resolution pixels that a
        reconstruction won (1 without auto-masking).
    """
    _check_batch(batch, cfg.mode)
    depth_net = models["depth"]
    n, _, h, w = batch["image"].shape
    rank, world = shard
    sharded = world > 1
    n_draw = n * world  # draws are made for the global batch, then this rank's rows kept
    rows = slice(rank * n, (rank + 1) * n)
    side = torch.ones(n, dtype=batch["K"].dtype, device=batch["K"].device)
    if cfg.flip:
        # Flips stay in the loss images too: the mirrored sample is simply another scene.
        flip = torch.rand(n_draw, generator=generator) < _FLIP_P
        batch, side = _flip_batch(batch, flip[rows] if sharded else flip)
    target = batch["image"]
    K = batch["K"].to(target.dtype)
    jitter = _draw_jitter(n_draw, generator) if cfg.colour_jitter else None
    if sharded and jitter is not None:
        jitter = (jitter[0][rows], jitter[1][rows])

    def net_input(img: torch.Tensor) -> torch.Tensor:
        return img if jitter is None else colour_jitter(img, *jitter)

    target_in = net_input(target)

    # Source views: (image used in the loss, target → source transform).
    sources: list[tuple[torch.Tensor, torch.Tensor]] = []
    if uses_stereo(cfg.mode):
        T = stereo_transform(batch["baseline"].to(K.device, K.dtype), side.to(K.device))
        sources.append((batch["right"], T))
    if uses_video(cfg.mode):
        pose_net = models["pose"]
        # Frames are fed in temporal order; PoseNet(a, b) maps camera a into camera b (Monodepth2 practice).
        aa, t = pose_net(net_input(batch["prev"]), target_in)
        sources.append((batch["prev"], pose_to_matrix(aa, t, invert=True)))
        aa, t = pose_net(target_in, net_input(batch["next"]))
        sources.append((batch["next"], pose_to_matrix(aa, t, invert=False)))

    disps = depth_net(target_in)[: cfg.num_scales]
    identity = ([photometric_error(src, target, cfg.ssim_alpha) for src, _ in sources]
                if cfg.automask else None)

    photo_total = target.new_zeros(())
    smooth_total = target.new_zeros(())
    automask_frac = target.new_ones(())
    for s, disp in enumerate(disps):
        # Warp at the input resolution (Monodepth2): coarse disparities are upsampled first.
        disp_full = disp if disp.shape[-2:] == (h, w) else F.interpolate(
            disp, size=(h, w), mode="bilinear", align_corners=False)
        _, depth = disp_to_depth(disp_full, cfg.min_depth_m, cfg.max_depth_m)
        errors = [photometric_error(warp(src, depth, K, T), target, cfg.ssim_alpha) for src, T in sources]
        loss_map, mask = min_reprojection(errors, identity, generator, draw=(n_draw, rows) if sharded else None)
        photo = loss_map.mean()
        # Smoothness at the disparity's own scale against the correspondingly downsampled target image.
        img_s = (target if disp.shape[-2:] == (h, w)
                 else F.interpolate(target, size=disp.shape[-2:], mode="area"))
        smooth = cfg.smoothness * edge_aware_smoothness(disp, img_s) / (2**s)
        photo_total = photo_total + photo
        smooth_total = smooth_total + smooth
        if s == 0:
            automask_frac = mask.mean().detach()
    k = len(disps)
    photo_total = photo_total / k
    smooth_total = smooth_total / k
    return {
        "loss": photo_total + smooth_total,
        "photometric": photo_total.detach(),
        "smoothness": smooth_total.detach(),
        "automask": automask_frac,
    }


@torch.no_grad()
def predict_depth(model: nn.Module, images: torch.Tensor, cfg: DepthConfig) -> torch.Tensor:
    """Full-resolution depth of (B, 3, H, W) RGB images in [0, 1] → (B, 1, H, W) metres.

    Metric for stereo and mono+stereo training; for mono the network's own (arbitrary) scale, to be median
    scaled at evaluation. Runs the model in eval mode and restores its previous mode.
    """
    was_training = model.training
    model.eval()
    try:
        disp = model(images)[0]
    finally:
        model.train(was_training)
    return disp_to_depth(disp, cfg.min_depth_m, cfg.max_depth_m)[1]
