"""The segmentation model file, ``models/<name>.pt``: how a trained network is written and rebuilt.

The file is a :func:`torch.save` dict: ``method`` (the :mod:`corda.methods` row it trained, or an artefact name
of :data:`corda.methods.SAVED_AS`), ``model_config`` / ``train_config`` (:func:`corda.config.to_dict` of the
params sections), ``student`` and ``teacher`` (state dicts; ``teacher`` is None without an EMA teacher),
``history`` (the training curves) and any ``extra`` keys of the writer. Loading needs only the network code,
not the training loop: evaluate, pseudo_labels and predict import this module, not :mod:`corda.seg.run`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from corda.config import to_dict
from corda.methods import Method, get_method, saved_method
from corda.models.corda_net import CorDANet
from corda.models.factory import build_network
from corda.seg.config import ModelConfig, TrainConfig


def build_seg_model(method: str | Method = "corda", **model_kwargs: Any) -> CorDANet:
    """The network of ``model.architecture`` (:func:`corda.models.factory.build_network`; a :class:`CorDANet`
    by default) for ``method`` (:mod:`corda.methods`): a method without depth heads (DACS) gets
    ``depth=False`` unless told otherwise, one without the feature exchange ``distillation=False``."""
    m = method if isinstance(method, Method) else get_method(method)
    if not m.depth_heads:
        model_kwargs.setdefault("depth", False)
    if not m.feature_exchange:
        model_kwargs["distillation"] = False
    return build_network(**model_kwargs)


def build_model(mcfg: ModelConfig, method: str | Method) -> CorDANet:
    """The network of the ``model`` section for ``method`` (a row or its name)."""
    kw = {f.name: getattr(mcfg, f.name) for f in dataclasses.fields(ModelConfig)}
    return build_seg_model(method, **kw)


def save_model(path: Path, *, method: str, student: nn.Module, teacher: nn.Module | None, mcfg: ModelConfig,
               tcfg: TrainConfig, history: list[dict], extra: dict | None = None) -> None:
    """The trained-model artefact: student (evaluated, §6), EMA teacher (pseudo-labels), configs, curves."""
    from corda.io import save_torch

    state = {
        "method": method,
        "model_config": to_dict(mcfg),
        "train_config": to_dict(tcfg),
        "student": student.state_dict(),
        "teacher": teacher.state_dict() if teacher is not None else None,
        "history": history,
        **(extra or {}),
    }
    save_torch(state, path)


def load_model(path: Path, device: torch.device, which: Literal["student", "teacher"] = "student") -> tuple[CorDANet, dict]:
    """Rebuild a saved model; a missing, corrupt or incompatible checkpoint is a one-line CordaError."""
    from corda.config import from_mapping
    from corda.errors import CordaError, brief_error
    from corda.models.weights import read_torch_file

    path = Path(path)
    ck = read_torch_file(path, missing=f"{path}: checkpoint not found; run its training stage first (dvc repro)",
                         unreadable=lambda exc: f"{path}: not a usable corda checkpoint ({brief_error(exc)}); "
                                                "re-run the stage that wrote it", weights_only=False)
    try:
        mcfg = from_mapping(ModelConfig, ck["model_config"], "model")
        model = build_model(mcfg, saved_method(ck["method"]))
        state = ck[which] if ck.get(which) is not None else ck["student"]
        model.load_state_dict(state)
    except CordaError:
        raise
    except Exception as exc:
        raise CordaError(f"{path}: not a usable corda checkpoint ({brief_error(exc)}); "
                         "re-run the stage that wrote it") from exc
    return model.to(device), ck

