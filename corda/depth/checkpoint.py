"""The depth network file, ``models/depth/<domain>.pt``: written by ``depth_pretrain``, read by ``depth_maps``.

The file is a :func:`torch.save` dict: ``config`` (:func:`corda.depth.config.recorded_config`), ``domain``
(``target`` or ``source``), ``depth`` (the :class:`corda.models.depth_net.DepthNet` state dict) and ``history``
(the training curves).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from corda.depth.config import DepthConfig, recorded_config


def depth_checkpoint_path(models_dir: str | os.PathLike, domain: str) -> Path:
    """``<models_dir>/<domain>.pt`` (the pipeline's models_dir: :data:`corda.paths.DEPTH_MODELS_DIR`)."""
    return Path(models_dir) / f"{domain}.pt"


def save_depth_net(path: str | os.PathLike, cfg: DepthConfig, domain: str, depth: nn.Module,
                   history: list[dict]) -> None:
    """Write one domain's trained depth network (atomically, :func:`corda.io.save_torch`)."""
    from corda.io import save_torch

    save_torch({"config": recorded_config(cfg), "domain": domain, "depth": depth.state_dict(), "history": history},
               Path(path))


def load_depth_net(path: str | os.PathLike, cfg: DepthConfig, device: torch.device) -> nn.Module:
    """The depth network of ``path``, built from ``cfg`` and in eval mode on ``device``.

    A missing, unreadable or incompatible file is a one-line CordaError that says to re-run depth_pretrain.
    """
    from corda.errors import CordaError, brief_error
    from corda.models.depth_net import DepthNet
    from corda.models.weights import read_torch_file

    path = Path(path)
    ck = read_torch_file(path, missing=f"{path}: depth network not found; run `dvc repro depth_pretrain`",
                         unreadable=lambda exc: f"{path}: not a readable checkpoint ({brief_error(exc)}); "
                                                "re-run depth_pretrain", weights_only=False)
    net = DepthNet(cfg.backbone, None, cfg.min_depth_m, cfg.max_depth_m)
    try:
        net.load_state_dict(ck["depth"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CordaError(f"{path}: incompatible with depth.backbone={cfg.backbone} ({brief_error(exc)}); "
                         "re-run depth_pretrain") from exc
    return net.to(device).eval()
