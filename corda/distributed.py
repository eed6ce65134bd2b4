"""Data-parallel segmentation training over several processes (issue #7, "Many GPUs"; an extension of §5).

The paper trains on one GPU (method.md §5). With ``train.devices = N > 1`` the stage re-launches itself
under ``torchrun`` and every process (rank) runs the same loop on its slice of the step's batch. This module
holds the library side; it never reads the environment: the stage tells it the rank and world size.

Semantics, i.e. what is and is not the same as one process with the same global batch:

* **Data.** :class:`corda.seg.run.StepBatches` draws the *global* batch of step ``i`` from (seed, i)
  exactly as one process does, and rank ``r`` loads items ``[r·b, (r+1)·b)`` of it (``b`` = global / N).
  ``batch_source`` and ``batch_target`` stay global sizes and must be divisible by N. Source image ``k`` is
  still mixed onto target image ``k`` (ClassMix pairs images by position and the slices line up).
* **Gradients.** DistributedDataParallel averages the ranks' gradients, i.e. it descends the mean of the
  per-rank losses. Each loss is normalised per rank (CE over the rank's labelled pixels, BerHu's c from the
  rank's largest residual, the confidence weight q and the batch-level ω of §4 over the rank's images), so
  the objective equals the one-process one exactly only when those per-rank statistics coincide (e.g. equal
  numbers of labelled pixels). The learning rate is *not* rescaled: the global batch is unchanged.
* **Random draws.** ClassMix class choices and the strong augmentation are drawn per step from
  ``step_generator(seed, i, stream=rank)``: rank 0 makes the draws of a single process, the other ranks
  independent ones. The masks are per image, so mixing is unaffected in kind, but the exact draws of images
  outside rank 0's slice differ from a one-process run (the batch-level jitter/blur coin is per rank).
* **BatchNorm.** Statistics are per rank (no SyncBatchNorm): a batch of 2 + 2 on 2 GPUs normalises over one
  image each, which changes training; keep at least 2 images per rank. Each rank keeps its own running
  statistics (no buffer broadcast, see :func:`wrap`); the saved student carries rank 0's.
* **EMA teacher.** Not wrapped: every rank updates its copy from the synchronised student parameters, so the
  teacher weights are identical everywhere. Its BN running statistics follow its own train-mode forwards on
  the rank's target slice (§9.6); the saved teacher carries rank 0's.
* **Outputs.** Only rank 0 writes the scratch checkpoint, dvclive and the declared outputs; every rank reads
  the scratch checkpoint on start, so resume works as with one process. The logged loss terms are averaged
  over the ranks, so a NaN on any rank stops (or skips the step on) every rank alike.

The same helpers shard depth pretraining (``depth.devices``, :func:`corda.depth.run.train_depth`) and
the pseudo-label export (``pseudo_labels.devices``: :func:`shard_range`, :func:`sum_over_ranks`,
:func:`barrier`; inference only, no DDP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from corda.config import per_process_batch
from corda.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` in ``[0, world_size)``; world_size 1 = no distribution."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def init_process_group(info: DistInfo, device: torch.device, key: str = "train.devices") -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU); rendezvous comes from torchrun's env:// store.

    ``key`` is the params key named in the error when torch.distributed is missing.
    """
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise ConfigError(f"{key} > 1 needs torch.distributed, which this PyTorch build lacks")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch(global_batch: int, n: DistInfo | int, name: str, devices_key: str = "train.devices") -> int:
    """Images per rank of ``global_batch`` split over ``n`` processes (a DistInfo, or a ``devices`` setting
    checked when a config is loaded); ``name`` (the batch) and ``devices_key`` are the params keys named in
    the error when n does not divide the batch."""
    return per_process_batch(global_batch, n.world_size if isinstance(n, DistInfo) else n, name, devices_key)


def shard(keys: Sequence, info: DistInfo) -> list:
    """Rank ``info.rank``'s contiguous slice of one step's global batch ``keys`` (len divisible by N)."""
    b = len(keys) // info.world_size
    return list(keys[info.rank * b:(info.rank + 1) * b])


def shard_range(n: int, info: DistInfo, align: int = 1) -> range:
    """Rank ``info.rank``'s contiguous share of the items ``range(n)`` (every item on exactly one rank).

    The items are cut in blocks of ``align`` (the last block may be short) and the blocks dealt out in
    contiguous runs, as evenly as possible. With ``align`` = the inference batch size, every rank's batches
    are exactly batches of a one-process pass over ``range(n)``, so per-item results (which can depend on
    the batch composition through the kernels' summation order) do not change with N. A rank may get
    nothing when there are fewer blocks than ranks.
    """
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    blocks = -(-n // align)
    b0 = blocks * info.rank // info.world_size
    b1 = blocks * (info.rank + 1) // info.world_size
    return range(min(b0 * align, n), min(b1 * align, n))


def barrier(info: DistInfo) -> None:
    """Wait for every rank (nothing for one process)."""
    if info.enabled:
        dist.barrier()


def sum_over_ranks(arrays: Mapping[str, np.ndarray], info: DistInfo,
                   device: torch.device | None = None) -> dict[str, np.ndarray]:
    """Element-wise sums of numpy arrays over the ranks (one all-reduce per array); the arrays themselves
    for one process.

    Integer arrays (counts, histograms) sum exactly. Floating arrays sum in the backend's order, so they can
    differ from a one-process accumulation in the last bits. ``device``: where the all-reduce runs (NCCL
    reduces CUDA tensors only; None = CPU, for gloo).
    """
    if not info.enabled:
        return dict(arrays)
    out = {}
    for k in sorted(arrays):  # the same order on every rank: the collectives must pair up
        a = np.asarray(arrays[k])
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device or "cpu")
        dist.all_reduce(t)
        out[k] = t.cpu().numpy().astype(a.dtype, copy=False).reshape(a.shape)
    return out


def wrap(module: nn.Module, info: DistInfo, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``module`` itself for one process, else a DistributedDataParallel wrapper (rank 0's weights broadcast).

    ``find_unused``: set it when some outputs never reach the loss (the depth heads for source_only and
    oracle); DDP then traces the graph after each forward to mark the parameters that get no gradient (a
    small CPU cost per step; ``static_graph=True`` does not accept such parameters, torch 2.14). Without it,
    an unused parameter makes DDP fail loudly at the next step ("Expected to have finished reduction").
    The student is forwarded twice before one backward (source, then mixed, §3), which DDP accepts either way.
    """
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # broadcast_buffers=False: with True, DDP copies rank 0's buffers into every rank's before each forward,
    # in place; between the student's two forwards that bumps the version of buffers the first forward saved
    # for backward, and torch 2.11's backward then fails ("modified by an inplace operation"; 2.14's DDP does
    # not bump it). Rank 0's buffers, the only ones saved, are the same either way: it is the broadcast's source.
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused,
                                   broadcast_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    """The trained network inside a DDP wrapper (what checkpoints, EMA and evaluation use)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def mean_over_ranks(terms: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Detached scalar terms averaged over the ranks (one all-reduce); the dict itself for one process."""
    if not info.enabled:
        return terms
    keys = [k for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1]
    flat = torch.stack([terms[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(flat)
    flat /= info.world_size
    return {**terms, **{k: flat[i] for i, k in enumerate(keys)}}


def torchrun_argv(python: str, module: str, nproc: int, args: Sequence[str]) -> list[str]:
    """The command that re-runs ``python -m module args`` as ``nproc`` processes on this machine.

    ``python -m torch.distributed.run`` is the ``torchrun`` entry point of the same interpreter (no reliance
    on PATH); ``--standalone`` picks a free local rendezvous port.
    """
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
            "-m", module, *args]
