"""Depth-estimation metrics of the standard protocol (Eigen et al. 2014, as evaluated by Monodepth2;
method.md, "Monodepth2 essentials"): AbsRel, SqRel, RMSE, RMSE-log and the δ < 1.25^k accuracies.

Per image: invalid ground truth is masked, a monocular prediction is optionally median-scaled to the ground
truth, predictions are capped to the evaluation range, and the errors are computed over the valid pixels.
Over a split, the per-image errors are averaged (every image counts equally, not every pixel).
Computations run in float64 NumPy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def depth_errors(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """Errors between matching positive depths (N,) and (N,), metres.

    ``abs_rel = mean(|g − p| / g)``, ``sq_rel = mean((g − p)² / g)``, ``rmse = sqrt(mean((g − p)²))``,
    ``rmse_log = sqrt(mean((ln g − ln p)²))``, ``delta_k = mean(max(g/p, p/g) < 1.25^k)``.
    """
    g, p = _np(gt).reshape(-1), _np(pred).reshape(-1)
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same number of values, got {g.shape} and {p.shape}")
    if g.size == 0:
        raise ValueError("no depth values to evaluate")
    ratio = np.maximum(g / p, p / g)
    diff = g - p
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


@dataclass(frozen=True)
class DepthEval:
    """One image's evaluation: ``errors`` (keys :data:`METRIC_KEYS`), the median-scaling ``ratio``
    (1.0 without median scaling) and the number of valid pixels."""

    errors: dict[str, float]
    ratio: float
    num_valid: int


def evaluate_depth(pred: ArrayLike, gt: ArrayLike, min_depth: float, max_depth: float,
                   median_scaling: bool, valid: ArrayLike | None = None) -> DepthEval | None:
    """Evaluate one predicted depth map against its ground truth.

    Args:
        pred: (H, W) predicted depth, metres (or the network's scale for monocular models).
        gt: (H, W) ground-truth depth; NaN, ±Inf and ≤ 0 mark invalid pixels.
        min_depth, max_depth: evaluation range: only gt strictly inside it counts, and predictions are
            capped to it (after median scaling, as in the standard protocol).
        median_scaling: scale pred by ``median(gt) / median(pred)`` over the valid pixels (monocular models).
        valid: optional (H, W) bool mask of pixels to consider (e.g. a crop excluding the ego-vehicle).

    Returns:
        the evaluation, or None when no pixel is valid.
    """
    p, g = _np(pred), _np(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must have the same shape (resize pred first)")
    mask = np.isfinite(g) & (g > 0) & (g > min_depth) & (g < max_depth) & np.isfinite(p) & (p > 0)
    if valid is not None:
        mask &= _np(valid).astype(bool)
    if not mask.any():
        return None
    g, p = g[mask], p[mask]
    ratio = 1.0
    if median_scaling:
        ratio = float(np.median(g) / np.median(p))
        p = p * ratio
    p = np.clip(p, min_depth, max_depth)
    return DepthEval(depth_errors(g, p), ratio, int(mask.sum()))


class DepthMetricAccumulator:
    """Averages per-image depth errors over a split (the standard protocol) and keeps the median-scaling
    ratios.

    Usage: ``acc.update(pred, gt)`` per image, then ``acc.compute()``.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False):
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.median_scaling = median_scaling
        self._rows: list[dict[str, float]] = []
        self._ratios: list[float] = []
        self.skipped = 0

    def update(self, pred: ArrayLike, gt: ArrayLike, valid: ArrayLike | None = None) -> DepthEval | None:
        """Add one (H, W) image (a leading batch axis of 1 is squeezed); returns its evaluation."""
        p, g = _np(pred).squeeze(), _np(gt).squeeze()
        res = evaluate_depth(p, g, self.min_depth, self.max_depth, self.median_scaling, valid)
        if res is None:
            self.skipped += 1
            log.debug("depth evaluation: image without valid ground truth skipped")
            return None
        self._rows.append(res.errors)
        self._ratios.append(res.ratio)
        return res

    @property
    def ratios(self) -> np.ndarray:
        """(num_images,) median-scaling ratios gt/pred (all 1.0 without median scaling)."""
        return np.asarray(self._ratios, dtype=np.float64)

    def compute(self) -> dict[str, float]:
        """Mean of each metric over the images, ``num_images``, ``skipped``, and the ratio statistics
        ``ratio_median`` and ``ratio_std`` (std / median: how consistent the monocular scale is).
        Metrics are NaN when no image had valid ground truth."""
        out: dict[str, float] = {}
        for k in METRIC_KEYS:
            out[k] = float(np.mean([r[k] for r in self._rows])) if self._rows else float("nan")
        r = self.ratios
        med = float(np.median(r)) if r.size else float("nan")
        out["ratio_median"] = med
        out["ratio_std"] = float(np.std(r / med)) if r.size else float("nan")
        out["num_images"] = len(self._rows)
        out["skipped"] = self.skipped
        return out
