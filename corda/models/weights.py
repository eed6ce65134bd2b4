"""Reading weight files into networks: the pieces the ResNet and MiT loaders share.

Each loader (:func:`corda.models.backbone.load_pretrained`, :func:`corda.models.mit.load_mit_weights`) keeps its
own rules and messages; what is the same for both lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from corda.errors import CordaError

# Where training scripts nest the state dict of a checkpoint (mmseg/DAFormer: state_dict; others: model).
STATE_DICT_KEYS = ("state_dict", "model")


def strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    """``key`` without any leading ``prefixes``, removed repeatedly in any order (``module.backbone.x`` → ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def nested_state_dict(obj: object) -> object:
    """The state dict a checkpoint holds under one of :data:`STATE_DICT_KEYS`, or ``obj`` itself."""
    if isinstance(obj, dict):
        for k in STATE_DICT_KEYS:
            if isinstance(obj.get(k), dict):
                return obj[k]
    return obj


def is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def require_tensor_dict(obj: object, path: Path, expected: str) -> dict[str, torch.Tensor]:
    """``obj`` if it is a dict of tensors, else a one-line CordaError naming the file and what was expected."""
    if not is_tensor_dict(obj):
        raise CordaError(f"{path}: not a state dict of tensors ({expected})")
    return obj  # type: ignore[return-value]


def read_torch_file(path: Path, *, missing: str, unreadable: Callable[[Exception], str],
                    weights_only: bool = True) -> object:
    """``torch.load`` of a weights file or checkpoint on the CPU, with one-line errors: ``missing`` when the file
    does not exist, ``unreadable(exc)`` when torch cannot read it (torch raises several types for corrupt or
    foreign files). ``weights_only``: tensors and plain containers only (third-party weights); our own
    checkpoints hold configs and histories and are read with False."""
    if not Path(path).is_file():
        raise CordaError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        raise CordaError(unreadable(exc)) from exc
