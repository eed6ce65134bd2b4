"""Launch glue of the stages that run as N processes: ``train.devices``, ``depth.devices`` and
``pseudo_labels.devices`` > 1 (data-parallel, :mod:`corda.distributed`).

A stage started by DVC as one process (``python -m stages.train ...``) re-executes itself under torchrun
with the same arguments, so dvc.yaml's ``cmd`` is the same for one or N devices. Under torchrun the stage
reads its rank from torchrun's environment here and hands it to the library, which never reads the env.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

import torch

from corda.distributed import SINGLE, DistInfo, destroy_process_group, init_process_group, torchrun_argv
from corda.errors import ConfigError

log = logging.getLogger("stages.launch")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def _own_args(module: str) -> list[str]:
    """This process's arguments for ``python -m module`` (also when started as ``python -m stages <name>``)."""
    args = sys.argv[1:]
    name = module.rsplit(".", 1)[-1]
    if Path(sys.argv[0]).name == "__main__.py" and Path(sys.argv[0]).parent.name == "stages" and args[:1] == [name]:
        args = args[1:]
    return args


@contextlib.contextmanager
def data_parallel(devices: int, module: str, device: torch.device,
                  key: str = "train.devices") -> Iterator[tuple[DistInfo, torch.device]]:
    """Yield (rank info, this rank's device); with ``devices > 1`` outside torchrun, re-exec under it.

    ``key``: the params key that set ``devices``, named in errors and logs (e.g. ``depth.devices``).

    One process (devices 1, not under torchrun): ``(SINGLE, device)``, nothing else happens.
    Under torchrun: joins the process group (NCCL on CUDA, gloo on the CPU), pins ``cuda:LOCAL_RANK``,
    quietens the logs of ranks other than 0, and leaves the group on exit.
    """
    if not under_torchrun():
        if devices > 1:
            if device.type == "cuda" and torch.cuda.device_count() < devices:
                raise ConfigError(f"{key}: {devices} processes but only {torch.cuda.device_count()} GPUs "
                                  "are visible")
            argv = torchrun_argv(sys.executable, module, devices, _own_args(module))
            log.info("%s=%d: re-running as %s", key, devices, " ".join(argv))
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(argv[0], argv)  # replaces this process; torchrun forwards signals to the ranks
        yield SINGLE, device
        return
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    init_process_group(info, device, key)
    try:
        yield info, device
    finally:
        destroy_process_group()
