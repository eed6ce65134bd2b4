"""Depth pretraining runs on the shared loop, and the depth-map export (method.md, Monodepth2 essentials).

``depth_pretrain`` trains one depth network per domain that needs one (always the target; the
source only when it has no ground-truth depth); ``depth_maps`` runs them over every training image
and writes CorDA's inverse-depth encoding (method.md §2.2) to HDF5.

Scale. Stereo and mono+stereo training are metric through the known baseline. Monocular depth is
up to scale: the export fixes it with the camera height from the camera JSON (the road below the
camera is at the rig's mounting height), one global factor over the split, so that both domains'
targets are roughly metric and comparable in the encoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from corda.config import field
from corda.depth.train import DepthConfig, build_depth_models, depth_train_step, predict_depth, required_keys
from corda.engine import Trainer, batch_keys, fingerprint, step_generator
from corda.config import to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthStageConfig(DepthConfig):
    """params.yaml ``depth``: the network and losses of :class:`DepthConfig` plus the schedule."""

    source: Literal["ground_truth", "self_supervised"] = "ground_truth"  # source-domain depth targets
    # Train and predict at this (H, W); predictions are upsampled to each image's size. Half resolution
    # costs 4x less and averages out sensor noise, which otherwise dominates the photometric error.
    resize_hw: tuple[int, int] | None = None
    seed: int = field(0, min=0)
    iterations: int = field(2000, min=1)
    batch_size: int = field(8, min=1)
    lr_decay_at: float = field(0.75, min=0, max=1)  # ×0.1 after this fraction of the steps (Monodepth2: step LR)
    checkpoint_every: int = field(250, min=1)
    log_every: int = field(50, min=1)
    workers: int = field(1, min=0)
    eval_max_depth_m: float = field(80.0, gt=0)  # depth cap of the evaluation protocol
    nan_policy: Literal["stop", "skip"] = "stop"
    device: Literal["auto", "cpu", "cuda"] = "auto"


def train_depth(cfg: DepthStageConfig, dataset, device: torch.device, scratch: Path, inputs_fp, progress=None,
                desc: str = "depth") -> tuple[dict[str, torch.nn.Module], Trainer]:
    """Train the depth (and pose) networks on ``dataset`` (fields :func:`required_keys`) for ``cfg.iterations``."""
    torch.manual_seed(cfg.seed)
    models = {k: m.to(device) for k, m in build_depth_models(cfg).items()}
    params = [p for m in models.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    keys = [batch_keys(len(dataset), cfg.batch_size, cfg.seed, s) for s in range(cfg.iterations)]
    fp = fingerprint({"depth": to_dict(cfg), "inputs": inputs_fp, "desc": desc})
    trainer = Trainer(modules=models, optimizer=optimizer, step_fn=lambda s: None, iterations=cfg.iterations,
                      lr_at=lambda s: cfg.lr * (0.1 if s >= cfg.lr_decay_at * cfg.iterations else 1.0),
                      scratch=scratch, fingerprint=fp, checkpoint_every=cfg.checkpoint_every,
                      log_every=cfg.log_every, nan_policy=cfg.nan_policy, progress=progress, desc=desc)
    trainer.try_resume()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=keys[trainer.state.step:], num_workers=cfg.workers)
    it = iter(loader)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in next(it).items()}
        return depth_train_step(models, batch, cfg, step_generator(cfg.seed, step))

    trainer.step_fn = step_fn
    trainer.run()
    return models, trainer


def depth_fields(cfg: DepthConfig) -> tuple[str, ...]:
    """Dataset fields a training batch of ``cfg.mode`` needs."""
    return required_keys(cfg.mode)


@torch.no_grad()
def camera_height_scale(depth: torch.Tensor, K: torch.Tensor, cam_height_m: torch.Tensor) -> torch.Tensor:
    """Per-image factor making a monocular depth map metric from the camera's mounting height.

    Back-projects a central patch of the lower image (rows 70–85 %, the road in driving scenes,
    above the ego-vehicle hood), takes the median height of those points below the camera, and
    returns ``cam_height / median`` (B,).
    """
    b, _, h, w = depth.shape
    r0, r1, c0, c1 = int(0.70 * h), int(0.85 * h), int(0.35 * w), int(0.65 * w)
    v = torch.arange(r0, r1, device=depth.device, dtype=depth.dtype) + 0.5
    y_norm = (v[:, None] - K[:, 1, 2][:, None, None]) / K[:, 1, 1][:, None, None]  # (B, rows, 1)
    below = depth[:, 0, r0:r1, c0:c1] * y_norm  # metres below the optical centre (camera y points down)
    med = below.flatten(1).median(dim=1).values.clamp_min(1e-6)
    return cam_height_m / med


@torch.no_grad()
def predict_full(model: torch.nn.Module, images: torch.Tensor, cfg: DepthStageConfig) -> torch.Tensor:
    """Depth (B, 1, H, W) in metres for images (B, 3, H, W): predicted at ``cfg.resize_hw``, upsampled."""
    hw = tuple(images.shape[-2:])
    if cfg.resize_hw is None or tuple(cfg.resize_hw) == hw:
        return predict_depth(model, images, cfg)
    small = F.interpolate(images, size=tuple(cfg.resize_hw), mode="bilinear", align_corners=False, antialias=True)
    # Interpolate disparity-like 1/z rather than z, so depth edges do not get mid-air values.
    inv = 1.0 / predict_depth(model, small, cfg)
    return 1.0 / F.interpolate(inv, size=hw, mode="bilinear", align_corners=False)


def export_depth(model: torch.nn.Module, cfg: DepthStageConfig, batches, device) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, metric depth (H, W) float32) for every item of ``batches`` (images in [0, 1])."""
    model.eval()
    for batch in batches:
        depth = predict_full(model, batch["image"].to(device), cfg)
        for j in range(depth.shape[0]):
            yield batch["name"][j], depth[j, 0].float().cpu().numpy()
