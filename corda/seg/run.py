"""The segmentation run: model construction from config, data, and the loop (method.md §3, §5).

Shared by the ``train`` stage (source_only / dacs / corda / oracle) and the ``self_train`` stage
(second round on exported pseudo-labels), so every method goes through one loop.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from corda import paths, uda
from corda.config import to_dict
from corda.distributed import SINGLE, DistInfo, local_batch, mean_over_ranks, shard, unwrap, wrap
from corda.engine import Trainer, batch_keys, fingerprint, poly_lr, step_generator
from corda.methods import Method
from corda.models.corda_net import CorDANet, param_groups
from corda.precision import (
    autocast,
    compile_networks,
    configure_backends,
    memory_format,
    to_layout,
)
from corda.seg.config import ModelConfig, TrainConfig
from corda.seg.model_file import build_model
from corda.seg.step import train_step

log = logging.getLogger(__name__)


def seg_config(cfg: TrainConfig, method: Method) -> TrainConfig:
    """The ``train`` section as the step of ``method`` reads it (``method`` set; the saved config keeps its own)."""
    return dataclasses.replace(cfg, method=method.name)


def make_student_teacher(mcfg: ModelConfig, method: Method, device: torch.device,
                         channels_last: bool = False) -> tuple[CorDANet, CorDANet | None]:
    """The student (without depth heads for DACS, :mod:`corda.methods`) and, for the mean-teacher methods, its
    frozen EMA copy."""
    student = build_model(mcfg, method).to(device)
    if channels_last:
        student = student.to(memory_format=memory_format(True))
    teacher = None
    if method.teacher:
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
    return student, teacher


def make_feature_distance(mcfg: ModelConfig, tcfg: TrainConfig, student: nn.Module, method: Method):
    """DAFormer's ImageNet feature distance when ``train.fd_weight`` > 0 (else None): a frozen copy of the
    student's encoder as loaded from ``model.pretrained`` (:class:`ImageNetFeatureDistance`). Needs the MiT
    network and the ImageNet weights: without them there is no ImageNet knowledge to keep."""
    if tcfg.fd_weight <= 0 or not method.source_batch:
        return None
    from corda.errors import ConfigError
    from corda.losses.feature_distance import ImageNetFeatureDistance

    if mcfg.architecture != "daformer":
        raise ConfigError("train.fd_weight > 0 (the ImageNet feature distance) needs model.architecture: daformer")
    if mcfg.pretrained is None:
        raise ConfigError("train.fd_weight > 0 needs model.pretrained (the MiT ImageNet weights it keeps the "
                          "encoder near); set it or train.fd_weight: 0")
    return ImageNetFeatureDistance(student.backbone, tcfg.fd_weight, tcfg.fd_classes, tcfg.fd_min_ratio,
                                   mcfg.num_classes)


def lr_at(tcfg: TrainConfig, step: int) -> float:
    """The base learning rate of ``step``: poly decay (§5), with DAFormer's linear warm-up when
    ``train.warmup_iters`` > 0 (:func:`corda.engine.poly_lr`)."""
    return poly_lr(tcfg.lr, step, tcfg.iterations, tcfg.poly_power, tcfg.warmup_iters, tcfg.warmup_ratio)


def build_optimizer(student: CorDANet, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over :func:`param_groups` (backbone at ``lr``, the rest ×head_lr_mult, §5).

    ``train.optimizer: adamw`` (ours, from scratch) or SGD; with SGD, ``train.duplicate_backbone_updates``
    applies the original's k updates per step of a backbone tensor its 1× generator lists k times
    (:mod:`corda.optim`); off = torch's SGD.
    """
    if tcfg.optimizer == "adamw":  # (TrainConfig refuses adamw with duplicate_backbone_updates)
        from corda.recipe import adamw_param_groups

        groups = adamw_param_groups(student, tcfg.lr, tcfg.weight_decay, tcfg.head_lr_mult, tcfg.no_decay_norm)
        return torch.optim.AdamW(groups, lr=tcfg.lr, betas=tuple(tcfg.adam_betas), weight_decay=tcfg.weight_decay)
    groups = param_groups(student, tcfg.lr, tcfg.head_lr_mult, authors_repeats=tcfg.duplicate_backbone_updates)
    if tcfg.duplicate_backbone_updates:
        from corda.optim import RepeatedSGD

        return RepeatedSGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)


class StepBatches:
    """Batches of step ``s`` as a pure function of (seed, s), loaded with optional worker processes.

    ``batch`` is the global batch; with ``dist`` of N ranks this process loads only its slice of it
    (:func:`corda.distributed.shard`), so the N slices together are the one-process batch.
    """

    def __init__(self, dataset, batch: int, seed: int, start: int, stop: int, workers: int,
                 dist: DistInfo = SINGLE, keys_fn: Callable[[int], list] | None = None):
        # keys_fn(step): the step's global batch keys (rare-class sampling); None = uniform epochs.
        self.keys = [keys_fn(s) if keys_fn is not None else batch_keys(len(dataset), batch, seed, s)
                     for s in range(start, stop)]
        if dist.enabled:
            self.keys = [shard(k, dist) for k in self.keys]
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=self.keys, num_workers=workers,
                                                  prefetch_factor=4 if workers else None)
        self.it = iter(self.loader)

    def next(self) -> dict:
        return next(self.it)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def run_training(*, method: Method, mcfg: ModelConfig, tcfg: TrainConfig, source_ds, target_ds,
                 device: torch.device, scratch: Path, inputs_fp: Any, init_state: dict | None = None,
                 eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
                 tgt_transform: Callable[[dict], dict] | None = None, progress=None,
                 dist: DistInfo = SINGLE, source_sampler=None) -> tuple[CorDANet, CorDANet | None, Trainer]:
    """Train ``method`` (a :mod:`corda.methods` row) for ``tcfg.iterations`` steps; returns (student, teacher,
    trainer).

    ``tcfg.precision`` / ``tcfg.channels_last`` / ``tcfg.compile`` select the numeric path (:mod:`corda.precision`); the
    default fp32, contiguous path is the one the paper's recipe uses. With ``dist`` of N > 1 ranks (the
    process group already joined, :func:`corda.distributed.init_process_group`) each rank trains on its
    slice of the global batch, the student is wrapped in DistributedDataParallel, the EMA teacher follows
    the synchronised student on every rank, and only rank 0 writes the scratch checkpoint; see
    :mod:`corda.distributed` for the exact semantics (BN statistics per rank, per-rank random streams).

    Args:
        source_ds / target_ds: datasets yielding the batch dicts :func:`corda.seg.step.train_step`
            expects (either may be None when the method does not use it).
        init_state: optional state dict to start the student (and teacher) from (self-training).
        tgt_transform: optional function applied to every target batch on the device.
        inputs_fp: hashes of the inputs, part of the resume fingerprint.
        eval_fn: ``eval_fn(student, step) -> {"val/miou": ...}`` (called on rank 0 only).
        dist: this process's rank and the world size (default: one process).
        source_sampler: a :class:`corda.rcs.RareClassSampler` drawing the source items (DAFormer's rare-class
            sampling, :func:`make_source_sampler`); None = uniform epochs (the default, unchanged draws).

    Returns:
        the student (unwrapped), the teacher and the trainer (its history averaged over the ranks).
    """
    tcfg = tcfg.for_method(method)  # the step reads method; the oracle's own step count (train.oracle_iterations)
    if dist.world_size != tcfg.devices:
        log.warning("train.devices=%d but running as %d processes", tcfg.devices, dist.world_size)
    # The global batches must split evenly over the ranks (also checked by TrainConfig for train.devices).
    local_batch(tcfg.batch_source, dist, "train.batch_source")
    local_batch(tcfg.batch_target, dist, "train.batch_target")
    configure_backends(tcfg.precision, device)
    student, teacher = make_student_teacher(mcfg, method, device, channels_last=tcfg.channels_last)
    if init_state is not None:
        student.load_state_dict(init_state)
        if teacher is not None:
            teacher.load_state_dict(init_state)
    fd = make_feature_distance(mcfg, tcfg, student, method)  # copies the ImageNet encoder before any training
    compile_networks(tcfg.compile, student, teacher)
    modules = {"student": student} | ({"teacher": teacher} if teacher is not None else {})
    optimizer = build_optimizer(student, tcfg)
    fp = fingerprint({"method": method.name, "model": to_dict(mcfg), "train": to_dict(tcfg), "inputs": inputs_fp})
    trainer = Trainer(modules=modules, optimizer=optimizer, iterations=tcfg.iterations,
                      lr_at=lambda s: lr_at(tcfg, s), scratch=scratch,
                      fingerprint=fp, checkpoint_every=tcfg.checkpoint_every, log_every=tcfg.log_every,
                      eval_fn=(lambda s: eval_fn(student, s)) if eval_fn and dist.is_main else None,
                      eval_every=tcfg.eval_every or tcfg.iterations,
                      nan_policy=tcfg.nan_policy, progress=progress if dist.is_main else None, desc=f"train {method.name}",
                      reduce_terms=(lambda terms: mean_over_ranks(terms, dist)) if dist.enabled else None,
                      write_checkpoints=dist.is_main, grad_clip=tcfg.grad_clip)
    trainer.try_resume()
    # Wrapped after resuming, so DDP broadcasts the resumed weights (identical on every rank anyway).
    # source_only / oracle never put the depth heads in the loss: DDP must look for unused parameters.
    net = wrap(student, dist, device, find_unused=method.unused_parameters)
    start = trainer.state.step
    need_src = method.source_batch
    need_tgt = method.target_batch
    src_keys = None
    if source_sampler is not None:
        from corda.rcs import rcs_batch_keys

        src_keys = lambda s: rcs_batch_keys(source_sampler, tcfg.batch_source, s)  # noqa: E731
    src_it = (StepBatches(source_ds, tcfg.batch_source, tcfg.seed, start, tcfg.iterations, tcfg.workers, dist,
                          keys_fn=src_keys) if need_src else None)
    tgt_it = (StepBatches(target_ds, tcfg.batch_target, tcfg.seed + 1, start, tcfg.iterations, tcfg.workers, dist)
              if need_tgt else None)

    def load(it: StepBatches | None) -> dict:
        return to_layout(to_device(it.next(), device), tcfg.channels_last) if it else {}

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        src = load(src_it)
        tgt = load(tgt_it)
        if tgt_transform is not None and tgt:
            tgt = tgt_transform(tgt)
        # Rank r draws ClassMix/augmentation from stream r; rank 0 (and a single process) from stream 0.
        gen = step_generator(tcfg.seed, step, stream=dist.rank)
        with autocast(tcfg.precision, device):
            return train_step(net, teacher, src, tgt, tcfg, step, gen, fd=fd)

    # The EMA update reads the plain student: identical on every rank after DDP's gradient averaging and the step.
    ema = (lambda s: uda.ema_update(teacher, unwrap(net), s, tcfg.ema_alpha)) if teacher is not None else None
    trainer.run(step_fn, after_step=ema)
    return student, teacher, trainer


# ------------------------------------------------------------------------------------------------
# Data and validation (shared by the train and self_train stages)


def set_seeds(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy; per-step draws use :func:`corda.engine.step_generator`."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seg_datasets(splits: dict, tcfg: TrainConfig, depth_dir: Path, with_target_labels: bool = False):
    """(source train, target train, target val) datasets for segmentation training.

    Depth targets (method.md §2.1, CorDA inverse-depth encoding) come from the ``depth_maps`` folder: the target's
    from ``target.h5``, the source's from ``source.h5`` when a network made it, else (ground truth, recorded in
    ``source.json``) from the source dataset's own depth files, read in place through float32 metres
    (:func:`corda.h5io.source_depth_h5`); target labels are loaded only for the oracle.
    """
    from corda.data.datasets import SegDepthDataset
    from corda.h5io import source_depth_h5

    # Rare-class sampling re-crops until the crop keeps enough of the drawn class (DAFormer's min_crop_ratio).
    rcs_crop = tcfg.rcs_min_pixels * tcfg.rcs_min_crop_ratio if tcfg.rcs_temperature is not None else 0.0
    src_h5 = source_depth_h5(depth_dir)
    src = SegDepthDataset(splits["source"], ("image", "label", "depth"), tcfg.source_resize_hw, tcfg.crop_hw,
                          depth_h5=src_h5, depth_through_metres=src_h5 is None, seed=tcfg.seed,
                          image_resample=tcfg.source_image_resample, depth_resample=tcfg.source_depth_resample,
                          class_crop_min_pixels=rcs_crop)
    tgt_fields = ("image", "depth") + (("label",) if with_target_labels else ())
    tgt = SegDepthDataset(splits["target_train"], tgt_fields, tcfg.target_resize_hw, tcfg.crop_hw,
                          depth_h5=str(paths.depth_h5("target", depth_dir)), seed=tcfg.seed + 1)
    val = SegDepthDataset(splits["target_val"], ("image", "label"), tcfg.target_resize_hw, None, seed=0)
    return src, tgt, val


def make_source_sampler(tcfg: TrainConfig, source_ds, stats: Path | None = None):
    """DAFormer's rare-class sampler over ``source_ds`` when ``train.rcs_temperature`` is set, else None.

    Reads the ``rcs`` stage's statistics; a missing, empty or stale file is a one-line DataError that says
    to run ``dvc repro rcs`` (:func:`corda.rcs.load_sampler`).
    """
    if tcfg.rcs_temperature is None:
        return None
    from corda.rcs import STATS_PATH, load_sampler

    return load_sampler(stats or STATS_PATH, source_ds.names, tcfg.rcs_temperature, tcfg.rcs_min_pixels,
                        tcfg.seed)


def make_eval_fn(val_ds, num_classes: int, class_set: tuple[int, ...], batch_size: int, items: int,
                 device: torch.device) -> Callable[[nn.Module, int], dict[str, float]]:
    """Target-val mIoU of the student during training (method.md §5: validation uses the student)."""
    from corda.inference import confusion_over, iterate_batches

    ds = val_ds if not items else torch.utils.data.Subset(val_ds, range(min(items, len(val_ds))))

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        cm = confusion_over(model, iterate_batches(ds, batch_size), num_classes, device)
        return {"val/miou": float(cm.miou(class_set))}

    return eval_fn
