"""Reading weight files into networks: the pieces the ResNet and MiT loaders share.

Each loader (:func:`corda.models.backbone.load_pretrained`, :func:`corda.models.mit.load_mit_weights`) keeps its
own rules and messages; what is the same for both lives here.
"""

from __future__ import annotations

from pathlib import Path

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
