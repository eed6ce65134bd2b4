"""Segmentation metrics (method.md §6): confusion matrix, IoU / mIoU, label-id export, official cross-check.

The protocol follows the paper's evaluation: one confusion matrix accumulated over the **whole**
validation set, ``IoU_c = TP / (TP + FP + FN)``, mIoU = mean over a class set (19 classes for
GTA5→Cityscapes, 16 and 13 for SYNTHIA→Cityscapes, ``corda.labels.CLASS_SETS``). The original
accumulates the matrix with a pure-Python loop; here it is one ``bincount``.

Counting rules (chosen to agree with ``cityscapesscripts``' official evaluator to the pixel):

* ground-truth pixels whose label is 255 or any value outside ``[0, num_classes)`` are ignored
  entirely (they add neither TP, FP nor FN);
* a prediction outside ``[0, num_classes)`` on a valid ground-truth pixel (e.g. 255, or a label id
  that is not one of the 19 evaluated ones) counts as a false negative of the ground-truth class
  and as a wrong pixel for pixel accuracy. It cannot be a false positive of any evaluated class.
  Such pixels are kept in :attr:`ConfusionMatrix.missed` so that ``matrix`` stays square.

The official evaluator is always the 19-class Cityscapes protocol on label-id PNGs;
:func:`official_cityscapes_miou` wraps it for a test that pins our numbers to it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from corda.errors import CordaError
from corda.io import write_png
from corda.labels import CLASS_NAMES, CLASS_SETS, IGNORE, NUM_CLASSES, TRAIN_TO_CITYSCAPES_ID

log = logging.getLogger(__name__)


def _nan_to_none(x: float) -> float | None:
    """JSON has no NaN; DVC metrics files must stay parseable, so an undefined score is ``null``."""
    return None if math.isnan(x) else float(x)


class ConfusionMatrix:
    """A ``(num_classes, num_classes)`` trainId confusion matrix: rows = ground truth, columns = prediction.

    ``update`` may be called with numpy arrays or torch tensors of any (matching) shape, e.g.
    ``(B, H, W)`` argmax predictions and labels. Torch inputs are counted on their own device and
    only the ``C²`` counts are copied to the host.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        #: (C,) valid ground-truth pixels of class c whose prediction was outside [0, C): false negatives.
        self.missed = np.zeros(num_classes, dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0
        self.missed[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add one batch: ``pred`` and ``gt`` are integer trainId maps of the same shape ``(...)``."""
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}")
        c = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor):
            p = torch.as_tensor(pred).reshape(-1).long()
            g = torch.as_tensor(gt).reshape(-1).to(p.device).long()
            valid_g = (g >= 0) & (g < c)
            valid_p = (p >= 0) & (p < c)
            both = valid_g & valid_p
            counts = torch.bincount(g[both] * c + p[both], minlength=c * c)
            missed = torch.bincount(g[valid_g & ~valid_p], minlength=c)
            counts_np = counts.cpu().numpy()
            missed_np = missed.cpu().numpy()
        else:
            p = np.asarray(pred).reshape(-1).astype(np.int64, copy=False)
            g = np.asarray(gt).reshape(-1).astype(np.int64, copy=False)
            valid_g = (g >= 0) & (g < c)
            valid_p = (p >= 0) & (p < c)
            both = valid_g & valid_p
            counts_np = np.bincount(g[both] * c + p[both], minlength=c * c)
            missed_np = np.bincount(g[valid_g & ~valid_p], minlength=c)
        self.matrix += counts_np.reshape(c, c).astype(np.int64)
        self.missed += missed_np.astype(np.int64)

    # -- scores ---------------------------------------------------------------------------------

    def iou(self) -> np.ndarray:
        """(C,) float64 IoU per class; NaN where the class is absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt_total = self.matrix.sum(axis=1) + self.missed  # TP + FN
        pred_total = self.matrix.sum(axis=0)  # TP + FP (FP only on valid ground truth)
        denom = (gt_total + pred_total).astype(np.float64) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)

    def miou(self, class_set: Sequence[int] | None = None) -> float:
        """Mean IoU over ``class_set`` (trainIds; default: all classes).

        Classes whose IoU is NaN (absent from both ground truth and prediction over everything
        accumulated) are **skipped**, not counted as 0, exactly as the official Cityscapes evaluator
        averages. A class that occurs in the ground truth but is never predicted correctly counts
        as 0. On the full Cityscapes val set every class occurs, so this never matters for the
        paper's numbers; it matters for tiny fixtures. Returns NaN if every class in the set is absent.
        """
        ious = self.iou()
        idx = list(range(self.num_classes)) if class_set is None else list(class_set)
        bad = [i for i in idx if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"class_set has trainIds outside [0, {self.num_classes}): {bad}")
        sel = ious[idx]
        sel = sel[~np.isnan(sel)]
        return float(sel.mean()) if sel.size else float("nan")

    def miou_named(self, set_name: str) -> float:
        """mIoU over a named protocol of ``corda.labels.CLASS_SETS`` ("cityscapes19", "synthia16", ...)."""
        if set_name not in CLASS_SETS:
            raise ValueError(f"unknown class set {set_name!r}; known: {sorted(CLASS_SETS)}")
        return self.miou(CLASS_SETS[set_name])

    def miou16(self) -> float:
        """SYNTHIA→Cityscapes mIoU over 16 classes (no terrain, truck, train; method.md §6)."""
        return self.miou_named("synthia16")

    def miou13(self) -> float:
        """SYNTHIA→Cityscapes mIoU* over 13 classes (the 16 minus wall, fence, pole; method.md §6)."""
        return self.miou_named("synthia13")

    def pixel_accuracy(self) -> float:
        """Fraction of valid ground-truth pixels predicted correctly (NaN if there are none)."""
        total = int(self.matrix.sum() + self.missed.sum())
        return float(np.trace(self.matrix)) / total if total else float("nan")

    def to_dict(
        self, class_names: Sequence[str] = CLASS_NAMES, class_set: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """Metrics for a JSON file: ``{"miou", "pixel_acc", "per_class": {name: iou}}``.

        ``per_class`` lists only the classes of ``class_set`` (default: all), in trainId order, so
        a 16-class SYNTHIA result has 16 entries; ``miou`` is averaged over the same set. Scores
        are fractions in [0, 1]; an undefined score (NaN) is written as ``None`` (JSON ``null``).
        """
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        idx = list(range(self.num_classes)) if class_set is None else list(class_set)
        ious = self.iou()
        return {
            "miou": _nan_to_none(self.miou(idx)),
            "pixel_acc": _nan_to_none(self.pixel_accuracy()),
            "per_class": {class_names[i]: _nan_to_none(float(ious[i])) for i in idx},
        }


# -- export for the official evaluator ----------------------------------------------------------


def export_label_ids(pred_train_ids: np.ndarray, path: str | os.PathLike) -> None:
    """Write an ``(H, W)`` trainId prediction as a Cityscapes **label-id** PNG (uint8, one channel).

    The official evaluator reads label ids, not trainIds (ecosystem.md §11). 255 (ignore) becomes
    id 0 ("unlabeled"), which the evaluator counts as a miss on any evaluated pixel.
    """
    arr = np.asarray(pred_train_ids)
    if arr.ndim != 2:
        raise ValueError(f"export_label_ids: expected an (H, W) map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"export_label_ids: expected integer trainIds, got dtype {arr.dtype}")
    bad = (arr < 0) | ((arr >= NUM_CLASSES) & (arr != IGNORE))
    if bad.any():
        raise ValueError(
            f"export_label_ids: values outside 0..{NUM_CLASSES - 1} and {IGNORE}: {np.unique(arr[bad])[:10]}"
        )
    write_png(path, TRAIN_TO_CITYSCAPES_ID[arr.astype(np.int64)].astype(np.uint8))


# -- the official cityscapesscripts evaluator ---------------------------------------------------

_GT_SUFFIX = "_gtFine_labelIds.png"


def official_cityscapes_results(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> dict[str, Any]:
    """Run ``cityscapesscripts``' pixel-level evaluator programmatically; return its result dict.

    Args:
        gt_dir: a split folder laid out like ``<root>/gtFine/val``, holding
            ``<gt_dir>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``.
        pred_dir: searched recursively for exactly one ``<city>_<seq>_<frame>*.png`` label-id PNG per
            ground-truth image (see :func:`export_label_ids`).

    Returns:
        The evaluator's dict (``averageScoreClasses`` = 19-class mIoU, ``classScores`` by class
        name, ``confMatrix`` over label ids, ...).

    The module keeps its settings in a module-global ``args`` filled from environment variables at
    import time and aborts with ``sys.exit`` on any problem (ecosystem.md §11). We therefore never
    touch ``os.environ``; we set the fields we need on ``args``, restore them afterwards, turn the
    instance-level score off (it needs instanceIds PNGs and calls ``np.in1d``, gone in numpy 2.4),
    and convert ``SystemExit`` into :class:`CordaError` carrying the evaluator's message.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gts = sorted(str(p) for p in gt_dir.glob(f"*/*{_GT_SUFFIX}"))
    if not gts:
        raise CordaError(
            f"{gt_dir}: no <city>/*{_GT_SUFFIX} files; pass the split folder, e.g. <cityscapes>/gtFine/val"
        )
    if not pred_dir.is_dir():
        raise CordaError(f"{pred_dir}: prediction folder not found; export predictions with export_label_ids")

    patched_in1d = not hasattr(np, "in1d")
    if patched_in1d:  # numpy >= 2.4 removed it; the evaluator still calls it on optional paths
        np.in1d = np.isin  # type: ignore[attr-defined]
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

        fields = ("predictionPath", "predictionWalk", "quiet", "JSONOutput", "evalInstLevelScore",
                  "evalPixelAccuracy", "colorized", "bold", "nocol")
        saved = {f: getattr(ev.args, f) for f in fields}
        out = io.StringIO()
        try:
            ev.args.predictionPath = str(pred_dir)
            ev.args.predictionWalk = None  # the walk is cached across calls; force a fresh one
            ev.args.quiet = True
            ev.args.JSONOutput = False
            ev.args.evalInstLevelScore = False
            ev.args.evalPixelAccuracy = False
            ev.args.colorized, ev.args.bold, ev.args.nocol = False, "", ""
            with contextlib.redirect_stdout(out):
                preds = [ev.getPrediction(ev.args, g) for g in gts]
                result = ev.evaluateImgLists(preds, gts, ev.args)
        except SystemExit as exc:
            msg = out.getvalue().strip().splitlines()
            raise CordaError(
                f"official Cityscapes evaluator failed on {gt_dir} vs {pred_dir}: "
                f"{msg[-1] if msg else f'exit code {exc.code}'}"
            ) from None
        finally:
            for f, v in saved.items():
                setattr(ev.args, f, v)
    finally:
        if patched_in1d:
            del np.in1d  # type: ignore[attr-defined]
    log.debug("official evaluator: %d images, mIoU %.6f", len(gts), result["averageScoreClasses"])
    return result


def official_cityscapes_miou(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> float:
    """The official evaluator's 19-class mIoU (``averageScoreClasses``, a fraction) for label-id PNGs."""
    return float(official_cityscapes_results(gt_dir, pred_dir)["averageScoreClasses"])
