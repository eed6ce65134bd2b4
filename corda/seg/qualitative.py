"""What the qualitative strip of the evaluation shows (method.md §6): per image, the input, the ground truth,
the prediction and, for a network with depth decoders, its depth and ω (method.md §4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def prediction_strip_rows(model: nn.Module, dataset, items: int, device: torch.device) -> list[dict[str, Any]]:
    """Rows for :func:`corda.report.prediction_strip`: the first ``items`` images of ``dataset`` (fields ``image``
    and ``label``), each a dict ``image`` (H, W, 3), ``gt`` and ``pred`` (H, W) trainIds and, when ``model`` has
    depth decoders, ``depth`` (metres, from the target decoder) and ``omega`` (ω per pixel)."""
    from corda.data.codecs import inv_to_depth
    from corda.inference import segment
    from corda.uda import depth_discrepancy_weight

    model.eval()
    rows = []
    for i in range(min(items, len(dataset))):
        item = dataset[i]
        img = item["image"][None].to(device)
        has_depth = getattr(model, "depth", False)
        out = segment(model, img, keys=("S", "D", "D_src") if has_depth else ("S",))
        row: dict[str, np.ndarray] = {"image": item["image"].permute(1, 2, 0).numpy(), "gt": item["label"].numpy(),
                                      "pred": out["S"].argmax(1)[0].cpu().numpy()}
        if has_depth:
            d = out["D"].clamp_min(1.0 + 1e-3)
            omega, _ = depth_discrepancy_weight(out["D_src"], out["D"], d, per_image=True)
            row["depth"] = inv_to_depth(d[0, 0].cpu().numpy())
            row["omega"] = omega[0, 0].cpu().numpy()
        rows.append(row)
    return rows
