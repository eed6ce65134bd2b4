"""The depth task's config: params.yaml ``depth``, one flat dataclass (method.md, "Monodepth2 essentials").

The first block is what one training step reads (:func:`corda.depth.step.depth_train_step`), the second the
run (:func:`corda.depth.run.train_depth`) and the export. The order is the one the depth checkpoints record
(:func:`recorded_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from corda.config import field, per_process_batch, to_dict
from corda.errors import ConfigError

Mode = Literal["stereo", "mono", "mono+stereo"]


@dataclass(frozen=True)
class DepthConfig:
    """params.yaml ``depth``: self-supervised depth pretraining and the depth-map export."""

    # How a run is carried out, not what it computes: params.yaml ``run.depth``, not a DVC param
    # (corda.config.run_keys). devices stays a param: BatchNorm statistics are per rank.
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("checkpoint_every", "log_every", "workers", "device")

    # One step (corda.depth.step)
    mode: Mode = "stereo"  # source views: the stereo pair, frames ±1 (pose network), or both
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"  # Monodepth2: resnet18
    pretrained: str | None = None  # local torchvision ResNet state dict; None = from scratch
    min_depth_m: float = field(0.1, gt=0.0)  # sigmoid disparity ↦ depth in [min, max] (0.1, 100)
    max_depth_m: float = field(100.0, gt=0.0)
    num_scales: int = field(4, min=1, max=4)  # output scales used in the loss
    ssim_alpha: float = field(0.85, min=0.0, max=1.0)  # SSIM weight in the photometric error
    smoothness: float = field(1e-3, min=0.0)  # edge-aware smoothness weight, divided by 2^scale
    automask: bool = True  # Monodepth2 auto-masking of static pixels
    lr: float = field(1e-4, gt=0.0)  # Adam learning rate (used by the loop)
    colour_jitter: bool = True  # network inputs only; the loss sees the original colours
    flip: bool = True  # random horizontal flips of whole samples (images, intrinsics, stereo side)
    # The run and the export (corda.depth.run)
    source: Literal["ground_truth", "self_supervised"] = "ground_truth"  # source-domain depth targets
    # Target-domain depth targets: the network trained here (self_supervised), or the authors' released
    # Cityscapes stereo depth (files: <target_files_root>/<split>/<city>/<name>_depth_stereoscopic.mat,
    # corda.data.depth_files), which the paper's headline results use (§2.1).
    target: Literal["self_supervised", "files"] = "self_supervised"
    target_files_root: str | None = None
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
    # Data-parallel processes (torchrun, corda.distributed); batch_size stays the global batch.
    devices: int = field(1, min=1)

    def __post_init__(self) -> None:
        if not self.min_depth_m < self.max_depth_m:
            raise ConfigError(f"depth.min_depth_m ({self.min_depth_m}) must be below depth.max_depth_m "
                             f"({self.max_depth_m})")
        per_process_batch(self.batch_size, self.devices, "depth.batch_size", "depth.devices")
        if self.target == "files" and not self.target_files_root:
            raise ConfigError("depth.target_files_root: needed with depth.target: files (the folder holding "
                              "<split>/<city>/<name>_depth_stereoscopic.mat)")


def recorded_config(cfg: DepthConfig) -> dict:
    """The config as saved in checkpoints and fingerprints: ``devices`` only when > 1, so a one-process run
    writes exactly the files (and resumes exactly the checkpoints) it wrote before the key existed."""
    d = to_dict(cfg)
    if cfg.devices == 1:
        d.pop("devices")
    # Where the segmentation stages take target depth from does not change the depth network.
    d.pop("target")
    d.pop("target_files_root")
    return d
