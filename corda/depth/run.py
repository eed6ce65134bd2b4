"""The depth run: pretraining on the shared loop, and the depth-map export (method.md, Monodepth2 essentials).

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
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from corda.depth.config import DepthConfig, recorded_config
from corda.depth.step import build_depth_models, depth_train_step, predict_depth, required_keys
from corda.distributed import SINGLE, DistInfo, local_batch, mean_over_ranks, shard, wrap
from corda.engine import Trainer, batch_keys, fingerprint, step_generator

log = logging.getLogger(__name__)


def train_depth(cfg: DepthConfig, dataset, device: torch.device, scratch: Path, inputs_fp, progress=None,
                desc: str = "depth", dist: DistInfo = SINGLE) -> tuple[dict[str, torch.nn.Module], Trainer]:
    """Train the depth (and pose) networks on ``dataset`` (fields :func:`required_keys`) for ``cfg.iterations``.

    With ``dist`` of N > 1 ranks (process group joined) each rank trains on its slice of every step's global
    batch of ``cfg.batch_size`` with the networks in DistributedDataParallel; only rank 0 writes the scratch
    checkpoint, every rank resumes from it, and the trainer's history holds the loss terms averaged over the
    ranks. Semantics (BatchNorm per rank, random draws of the global batch): :mod:`corda.depth.step`.
    Returns the unwrapped networks (identical on every rank but for BN running statistics) and the trainer.
    """
    local_batch(cfg.batch_size, dist, "depth.batch_size", "depth.devices")
    if dist.world_size != cfg.devices:
        log.warning("depth.devices=%d but running as %d processes", cfg.devices, dist.world_size)
    torch.manual_seed(cfg.seed)
    models = {k: m.to(device) for k, m in build_depth_models(cfg).items()}
    params = [p for m in models.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    keys = [batch_keys(len(dataset), cfg.batch_size, cfg.seed, s) for s in range(cfg.iterations)]
    if dist.enabled:
        keys = [shard(k, dist) for k in keys]
    fp = fingerprint({"depth": recorded_config(cfg), "inputs": inputs_fp, "desc": desc})
    trainer = Trainer(modules=models, optimizer=optimizer, iterations=cfg.iterations,
                      lr_at=lambda s: cfg.lr * (0.1 if s >= cfg.lr_decay_at * cfg.iterations else 1.0),
                      scratch=scratch, fingerprint=fp, checkpoint_every=cfg.checkpoint_every,
                      log_every=cfg.log_every, nan_policy=cfg.nan_policy,
                      progress=progress if dist.is_main else None, desc=desc,
                      reduce_terms=(lambda terms: mean_over_ranks(terms, dist)) if dist.enabled else None,
                      write_checkpoints=dist.is_main)
    trainer.try_resume()
    # Wrapped after resuming (DDP broadcasts rank 0's weights, identical anyway).
    nets = {k: wrap(_for_ddp(k, m, cfg, dist), dist, device, find_unused=_drops_scales(k, m, cfg))
            for k, m in models.items()}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=keys[trainer.state.step:], num_workers=cfg.workers)
    it = iter(loader)
    part = (dist.rank, dist.world_size)

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in next(it).items()}
        return depth_train_step(nets, batch, cfg, step_generator(cfg.seed, step), part)

    trainer.run(step_fn)
    return models, trainer


class _FirstScales(torch.nn.Module):
    """The depth network returning only the ``k`` scales in the loss (for DDP, below)."""

    def __init__(self, net: torch.nn.Module, k: int):
        super().__init__()
        self.net = net
        self.k = k

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)[: self.k]


def _drops_scales(name: str, net: torch.nn.Module, cfg: DepthConfig) -> bool:
    return name == "depth" and cfg.num_scales < net.decoder.num_scales


def _for_ddp(name: str, net: torch.nn.Module, cfg: DepthConfig, dist: DistInfo) -> torch.nn.Module:
    """What DDP wraps. With ``depth.num_scales`` below the network's 4 outputs the coarse disparity heads never
    reach the loss: DDP (find_unused) looks for unused parameters from the forward's *outputs*, so the unused
    scales must not be returned at all. One process: the network itself."""
    if dist.enabled and _drops_scales(name, net, cfg):
        return _FirstScales(net, cfg.num_scales)
    return net


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
def predict_full(model: torch.nn.Module, images: torch.Tensor, cfg: DepthConfig) -> torch.Tensor:
    """Depth (B, 1, H, W) in metres for images (B, 3, H, W): predicted at ``cfg.resize_hw``, upsampled."""
    hw = tuple(images.shape[-2:])
    if cfg.resize_hw is None or tuple(cfg.resize_hw) == hw:
        return predict_depth(model, images, cfg)
    small = F.interpolate(images, size=tuple(cfg.resize_hw), mode="bilinear", align_corners=False, antialias=True)
    # Interpolate disparity-like 1/z rather than z, so depth edges do not get mid-air values.
    inv = 1.0 / predict_depth(model, small, cfg)
    return 1.0 / F.interpolate(inv, size=hw, mode="bilinear", align_corners=False)


def camera_height(path: Path) -> float:
    """extrinsic.z of a Cityscapes camera JSON, the rig's height in metres (mono scale)."""
    from corda.errors import DataError
    from corda.io import read_json

    cam = read_json(path)
    try:
        return float(cam["extrinsic"]["z"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: camera JSON lacks a numeric extrinsic.z (camera height, needed to "
                        "scale depth.mode=mono); use the Cityscapes camera files or another depth.mode"
                        ) from exc


def mono_scale(net: torch.nn.Module, index, cfg: DepthConfig, batch_size: int, device: torch.device) -> float:
    """Global metric scale of a monocular network from the camera height (module docstring): the median over
    the first 100 images of ``index`` of :func:`camera_height_scale`."""
    from corda.data.datasets import SegDepthDataset
    from corda.inference import iterate_batches

    ds = SegDepthDataset(index, ("image", "K"), None, None)
    sub = torch.utils.data.Subset(ds, range(min(100, len(ds))))
    ratios = []
    for batch in iterate_batches(sub, batch_size):
        d = predict_full(net, batch["image"].to(device), cfg)
        heights = torch.tensor([camera_height(index.path("camera", int(i))) for i in batch["index"]],
                               device=device)
        ratios.append(camera_height_scale(d, batch["K"].to(device), heights))
    return float(torch.cat(ratios).median())


def export_depth(model: torch.nn.Module, cfg: DepthConfig, batches, device) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, metric depth (H, W) float32) for every item of ``batches`` (images in [0, 1])."""
    model.eval()
    for batch in batches:
        depth = predict_full(model, batch["image"].to(device), cfg)
        for j in range(depth.shape[0]):
            yield batch["name"][j], depth[j, 0].float().cpu().numpy()
