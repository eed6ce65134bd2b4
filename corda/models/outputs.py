"""Network outputs at image or label size: the one upsampling rule (bilinear, align_corners=True, method.md §1.4).

Every caller (training step, validation, evaluation, pseudo-labels, prediction) goes through
:func:`upsample_outputs`; ``float32`` says whether outputs are cast to fp32 before upsampling, which is each
caller's existing dtype rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_outputs(out: dict[str, torch.Tensor], size: tuple[int, int] | torch.Size,
                     keys: tuple[str, ...] | None = None, float32: bool = False) -> dict[str, torch.Tensor]:
    """Bilinear (align_corners=True) upsampling of network outputs to ``size`` = (H, W), as in training (§1.4).

    The one place outputs are brought to image/label size (training step, validation, evaluation, pseudo-labels,
    prediction). ``keys`` restricts which outputs are upsampled (the rest are dropped; absent keys are skipped);
    aliases (DACS's S/initial_S) are upsampled once. ``float32``: cast to fp32 *before* upsampling (bf16 autocast
    outputs; for fp32 outputs ``.float()`` is the tensor itself, so nothing changes).
    """
    result: dict[str, torch.Tensor] = {}
    done: dict[int, torch.Tensor] = {}
    for k in (out if keys is None else keys):
        if k not in out:
            continue
        v = out[k]
        if id(v) not in done:
            done[id(v)] = F.interpolate(v.float() if float32 else v, size=tuple(size), mode="bilinear",
                                        align_corners=True)
        result[k] = done[id(v)]
    return result
