"""The torch device a params ``device`` key names. Its own module so that stages which train no segmentation
network (the depth stages) need not import the segmentation run loop to pick a device."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"``: the first CUDA device when one is visible, else the CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
