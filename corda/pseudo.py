"""Pseudo-label diagnostics (method.md §3.2–3.3, §4): how good are the target pseudo-labels, and do the
confidence q_max and the depth-discrepancy weight ω point at the wrong ones?

CorDA's claim (§4) is that pixels where the source and target depth decoders disagree are hard to adapt,
so their pseudo-labels deserve less trust. With target ground truth available for evaluation this is
measurable: a pixel's pseudo-label is *wrong* if it differs from the ground truth (ground truth 255 is
ignored), and a trust signal ``s`` ∈ [0, 1] is useful if ``1 − s`` ranks wrong pixels above right ones,
i.e. a high AUROC of ``1 − s`` as a detector of wrong pseudo-labels. Three signals are scored:
confidence q_max, ω and their product q_max·ω. Accuracy-vs-signal curves show the same per bin.

Everything streams: per-pixel data are reduced into fixed-size histograms and a confusion matrix, so
memory does not grow with the number of images. The model side (computing q_max and ω) lives in
``corda.seg.step`` / ``corda.uda``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from corda.labels import CLASS_NAMES, CLASS_SETS, IGNORE
from corda.metrics import ConfusionMatrix

SIGNALS = ("confidence", "depth_weight", "combined")


def _nan_to_none(x: float) -> float | None:
    """JSON has no NaN: an undefined score is written as ``null``."""
    return None if math.isnan(x) else float(x)


# ---------------------------------------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------------------------------------

def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Exact area under the ROC curve of ``scores`` as a detector of ``positives`` (Mann–Whitney U).

    ``AUROC = P(s_pos > s_neg) + ½ P(s_pos = s_neg)``, computed from ranks with ties given their
    average rank: ``(R_pos − n_pos(n_pos+1)/2) / (n_pos·n_neg)`` where ``R_pos`` is the sum of the
    positives' ranks. O(N log N) time, O(N) memory.

    Args:
        scores: (N,) real scores, higher = more likely positive.
        positives: (N,) bool.

    Returns:
        AUROC in [0, 1]; NaN if there are no positives or no negatives.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    p = np.asarray(positives, dtype=bool).reshape(-1)
    if s.shape != p.shape:
        raise ValueError(f"auroc: {s.shape[0]} scores but {p.shape[0]} labels")
    n_pos = int(p.sum())
    n_neg = p.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    # Average rank of each run of equal scores: ranks first..last (1-based) → (first + last) / 2.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    u = ranks[p].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


class AurocAccumulator:
    """Streaming AUROC from fixed-bin histograms of scores in [0, 1] (memory O(bins), not O(pixels)).

    Scores are clipped to [0, 1] and counted in ``bins`` equal bins, separately for positives and
    negatives. The AUROC is then exact *for the binned scores*: pairs in different bins are ordered by
    bin, pairs in the same bin count as ties (½).

    Approximation: only pairs that share a bin can be mis-scored, and each by at most ½, so
    ``|AUROC_hist − AUROC_exact| ≤ ½ · Σ_b pos_b·neg_b / (n_pos·n_neg)`` (:meth:`error_bound`),
    which is small unless scores pile up inside one bin of width 1/bins (with 4096 bins ≈ 2.4e-4,
    finer than float16's resolution near 1). Pairs with exactly equal scores are ties in both versions.
    """

    def __init__(self, bins: int = 4096) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    def _index(self, scores: np.ndarray) -> np.ndarray:
        s = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
        return np.minimum((s * self.bins).astype(np.int64), self.bins - 1)  # 1.0 → last bin

    def update(self, scores: np.ndarray, positives: np.ndarray) -> None:
        """Add (N,) scores in [0, 1] (NaN not allowed) and their (N,) bool labels."""
        p = np.asarray(positives, dtype=bool).reshape(-1)
        s = np.asarray(scores).reshape(-1)
        if s.shape != p.shape:
            raise ValueError(f"AurocAccumulator.update: {s.shape[0]} scores but {p.shape[0]} labels")
        if s.size and np.isnan(s).any():
            raise ValueError("AurocAccumulator.update: NaN scores")
        idx = self._index(s)
        self.pos += np.bincount(idx[p], minlength=self.bins)
        self.neg += np.bincount(idx[~p], minlength=self.bins)

    def merge(self, other: "AurocAccumulator") -> None:
        if other.bins != self.bins:
            raise ValueError("cannot merge accumulators with different bins")
        self.pos += other.pos
        self.neg += other.neg

    def compute(self) -> float:
        """AUROC of the binned scores; NaN without positives or negatives."""
        n_pos, n_neg = float(self.pos.sum()), float(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        neg_below = np.cumsum(self.neg) - self.neg  # negatives in strictly lower bins
        # float64 products: pixel counts of a whole dataset can overflow int64 when multiplied.
        pos = self.pos.astype(np.float64)
        u = (pos * neg_below).sum() + 0.5 * (pos * self.neg).sum()
        return float(u / (n_pos * n_neg))

    def error_bound(self) -> float:
        """Upper bound on ``|compute() − exact AUROC|`` (see class docstring); NaN if undefined."""
        n_pos, n_neg = float(self.pos.sum()), float(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        return float(0.5 * (self.pos.astype(np.float64) * self.neg).sum() / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------------------
# Pseudo-label diagnostics
# ---------------------------------------------------------------------------------------------------------

class PseudoLabelDiagnostics:
    """Accumulates pseudo-label quality against target ground truth, image by image.

    Args:
        num_classes: C, pseudo-labels and ground truth are trainIds in [0, C) (255 = ignore).
        class_set: trainIds over which mIoU is averaged, or a name of ``corda.labels.CLASS_SETS``.
        class_names: names for the per-class IoU (default: Cityscapes names when C = 19).
        auroc_bins: histogram bins of the streaming AUROC.
        curve_bins: bins of the accuracy-vs-signal curves on [0, 1].
    """

    def __init__(
        self,
        num_classes: int,
        class_set: Sequence[int] | str,
        class_names: Sequence[str] | None = None,
        auroc_bins: int = 4096,
        curve_bins: int = 20,
    ) -> None:
        if isinstance(class_set, str):
            if class_set not in CLASS_SETS:
                raise ValueError(f"unknown class set {class_set!r}; known: {sorted(CLASS_SETS)}")
            class_set = CLASS_SETS[class_set]
        self.class_set = tuple(int(c) for c in class_set)
        bad = [c for c in self.class_set if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"class_set has trainIds outside [0, {num_classes}): {bad}")
        if class_names is None:
            default = len(CLASS_NAMES) == num_classes
            class_names = CLASS_NAMES if default else [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.curve_bins = curve_bins
        # rows = ground truth, columns = pseudo-label;
        # `missed` = valid ground truth whose pseudo-label is 255 / out of range (a false negative).
        self.cm = ConfusionMatrix(num_classes)  # the evaluation's own counting rule (corda.metrics)
        self._auroc = {s: AurocAccumulator(auroc_bins) for s in SIGNALS}
        self._curve_total = {s: np.zeros(curve_bins, dtype=np.int64) for s in SIGNALS}
        self._curve_right = {s: np.zeros(curve_bins, dtype=np.int64) for s in SIGNALS}
        self._weight_sum = 0.0
        self._weight_right = 0.0

    @property
    def matrix(self) -> np.ndarray:
        """(C, C) int64 counts: rows = ground truth, columns = pseudo-label (valid ground truth only)."""
        return self.cm.matrix

    @property
    def missed(self) -> np.ndarray:
        """(C,) valid ground-truth pixels of class c without a pseudo-label in [0, C)."""
        return self.cm.missed

    def update(
        self,
        pseudo_label: np.ndarray,
        gt_label: np.ndarray,
        confidence: np.ndarray,
        depth_weight: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        """Add one image or batch; every argument has the same shape, e.g. (H, W) or (B, H, W).

        Args:
            pseudo_label: trainIds (255 = no pseudo-label: counted as wrong on valid ground truth).
            gt_label: ground-truth trainIds; 255 or ≥ C is ignored everywhere.
            confidence: teacher q_max in [0, 1].
            depth_weight: ω in [0, 1] (method.md §4).
            weight: final per-pixel CE weight self-training uses (≥ 0; may exceed 1 after ω/mean(ω)).
        """
        arrays = [np.asarray(a) for a in (pseudo_label, gt_label, confidence, depth_weight, weight)]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"PseudoLabelDiagnostics.update: shapes differ: {[a.shape for a in arrays]}")
        pl, gt, conf, omega, w = (a.reshape(-1) for a in arrays)
        c = self.num_classes
        gt = gt.astype(np.int64)
        pl = pl.astype(np.int64)
        valid = (gt >= 0) & (gt < c) & (gt != IGNORE)
        gt, pl = gt[valid], pl[valid]
        self.cm.update(pl, gt)  # a pseudo-label outside [0, C) (255: none) is a false negative

        right = pl == gt
        conf = conf[valid].astype(np.float64)
        omega = omega[valid].astype(np.float64)
        signals = {"confidence": conf, "depth_weight": omega, "combined": conf * omega}
        for name, s in signals.items():
            # 1 − s as a detector of WRONG pseudo-labels: high when the signal distrusts the pixel.
            self._auroc[name].update(1.0 - s, ~right)
            b = np.minimum((np.clip(s, 0.0, 1.0) * self.curve_bins).astype(np.int64), self.curve_bins - 1)
            self._curve_total[name] += np.bincount(b, minlength=self.curve_bins)
            self._curve_right[name] += np.bincount(b[right], minlength=self.curve_bins)
        wv = w[valid].astype(np.float64)
        self._weight_sum += float(wv.sum())
        self._weight_right += float(wv[right].sum())

    # -- shards ---------------------------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every accumulated count and sum as named arrays; the element-wise sum of the arrays of diagnostics
        over disjoint shards of the images is the state of one pass over all of them (data-parallel export).

        Counts are int64 (they add up exactly); the two weight sums are 0-d float64, whose sum over shards
        differs from the one-pass sum only by float rounding (it changes ``weighted_accuracy`` in the last
        bits at most).
        """
        out = {"matrix": self.matrix, "missed": self.missed,
               "weight_sum": np.asarray(self._weight_sum, dtype=np.float64),
               "weight_right": np.asarray(self._weight_right, dtype=np.float64)}
        for s in SIGNALS:
            out[f"auroc_pos/{s}"] = self._auroc[s].pos
            out[f"auroc_neg/{s}"] = self._auroc[s].neg
            out[f"curve_total/{s}"] = self._curve_total[s]
            out[f"curve_right/{s}"] = self._curve_right[s]
        return {k: np.array(v, copy=True) for k, v in out.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the accumulated state by ``arrays`` (from :meth:`state_arrays`, e.g. summed over ranks)."""
        mine = self.state_arrays()
        if set(arrays) != set(mine):
            raise ValueError(f"load_state_arrays: keys {sorted(arrays)} != {sorted(mine)}")
        for k, v in arrays.items():
            if np.shape(v) != mine[k].shape:
                raise ValueError(f"load_state_arrays: {k} has shape {np.shape(v)}, expected {mine[k].shape}")
        self.cm.matrix = np.array(arrays["matrix"], dtype=np.int64)
        self.cm.missed = np.array(arrays["missed"], dtype=np.int64)
        self._weight_sum = float(arrays["weight_sum"])
        self._weight_right = float(arrays["weight_right"])
        for s in SIGNALS:
            self._auroc[s].pos = np.array(arrays[f"auroc_pos/{s}"], dtype=np.int64)
            self._auroc[s].neg = np.array(arrays[f"auroc_neg/{s}"], dtype=np.int64)
            self._curve_total[s] = np.array(arrays[f"curve_total/{s}"], dtype=np.int64)
            self._curve_right[s] = np.array(arrays[f"curve_right/{s}"], dtype=np.int64)

    # -- results ----------------------------------------------------------------------------------------

    def iou(self) -> np.ndarray:
        """(C,) IoU of the pseudo-labels per class; NaN for classes absent from both gt and pseudo-labels."""
        return self.cm.iou()

    def result(self) -> dict[str, Any]:
        """Scores for a metrics JSON (fractions in [0, 1]; undefined → ``None``).

        Keys: ``miou`` (over ``class_set``, absent classes skipped), ``pixel_accuracy``,
        ``weighted_accuracy`` (Σ w·[right] / Σ w: above ``pixel_accuracy`` when the final weight favours
        right pixels), ``pixels`` (valid ground-truth pixels), ``per_class`` ({name: IoU}),
        ``auroc`` ({signal: AUROC of 1 − signal detecting wrong pseudo-labels}) and
        ``auroc_error_bound`` ({signal: bound of the histogram approximation}).
        """
        ious = self.iou()
        sel = ious[list(self.class_set)]
        sel = sel[~np.isnan(sel)]
        total = int(self.matrix.sum() + self.missed.sum())
        return {
            "miou": _nan_to_none(float(sel.mean()) if sel.size else float("nan")),
            "pixel_accuracy": _nan_to_none(np.trace(self.matrix) / total if total else float("nan")),
            "weighted_accuracy": _nan_to_none(
                self._weight_right / self._weight_sum if self._weight_sum > 0 else float("nan")),
            "pixels": total,
            "per_class": {self.class_names[i]: _nan_to_none(float(ious[i])) for i in self.class_set},
            "auroc": {s: _nan_to_none(self._auroc[s].compute()) for s in SIGNALS},
            "auroc_error_bound": {s: _nan_to_none(self._auroc[s].error_bound()) for s in SIGNALS},
        }

    def curve_records(self) -> list[dict[str, Any]]:
        """Accuracy of the pseudo-labels per bin of each signal, for a DVC plot (x = weight, y = accuracy).

        One record per non-empty bin: ``{"signal", "weight" (bin centre), "accuracy", "pixels"}``,
        ordered by signal then weight.
        """
        records = []
        centres = (np.arange(self.curve_bins) + 0.5) / self.curve_bins
        for name in SIGNALS:
            total, right = self._curve_total[name], self._curve_right[name]
            for b in np.flatnonzero(total):
                records.append({
                    "signal": name,
                    "weight": round(float(centres[b]), 6),
                    "accuracy": float(right[b] / total[b]),
                    "pixels": int(total[b]),
                })
        return records


# ------------------------------------------------------------------------------------------------
# Export: the same computations the training step uses, applied to whole target images

WEIGHT_RULES = ("confidence_x_omega", "omega", "confidence", "threshold", "uniform")


def final_weight(rule: str, conf, omega, threshold: float):
    """The exported per-pixel weight (B, H, W) from confidence c and ω.

    ``confidence_x_omega`` = c·ω, ``omega`` = ω, ``confidence`` = c, ``threshold`` = [c ≥ threshold]·ω,
    ``uniform`` = 1.
    """
    if rule == "confidence_x_omega":
        return conf * omega
    if rule == "omega":
        return omega
    if rule == "confidence":
        return conf
    if rule == "threshold":
        return (conf >= threshold).to(conf.dtype) * omega
    if rule == "uniform":
        return conf.new_ones(conf.shape)
    raise ValueError(f"unknown weight rule {rule!r}; choose from {WEIGHT_RULES}")


def pseudo_label_batch(teacher, images, depth_target, rule: str, threshold: float, eps: float = 1e-3,
                       invalid: float = 1.0) -> dict:
    """Pseudo-labels of a target batch with the depth-discrepancy weight (method.md §3.2, §4).

    Args:
        teacher: a CorDA network with depth decoders, in the mode the caller chose (eval for export).
        images: (B, 3, H, W) target images in [0, 1], un-augmented.
        depth_target: (B, 1, H, W) target depth in the CorDA encoding (1.0 = invalid).

    Returns:
        ``label`` (B, H, W) int64, ``confidence`` (B, H, W) max softmax, ``omega`` (B, H, W) ω of each
        image on its own (the intended per-image rule, §4), ``weight`` (B, H, W) by ``rule``.
    """
    import torch

    with torch.no_grad():
        return pseudo_label_maps(teacher(images), depth_target, tuple(images.shape[-2:]), rule, threshold, eps,
                                 invalid)


def pseudo_label_maps(out: dict, depth_target, size: tuple[int, int], rule: str, threshold: float,
                      eps: float = 1e-3, invalid: float = 1.0) -> dict:
    """:func:`pseudo_label_batch` from the teacher's outputs ``out`` (``S``, ``D``, ``D_src`` at network
    resolution, (B, ·, h, w)), upsampled to ``size`` = (H, W).

    Every step is per pixel or per image (the softmax over classes, ω of each image on its own), so the maps of
    image j computed from ``out[k][j:j+1]`` equal row j of the batch's maps. Peak memory per image in the
    batch: the (C, H, W) float32 logits at ``size`` and their softmax (2 × 4·C bytes per pixel: 152 for 19
    classes), then the maps (label int64 + 3 float32, 20 bytes per pixel).
    """
    import torch

    from corda.models.outputs import upsample_outputs
    from corda.uda import depth_discrepancy_weight

    with torch.no_grad():
        # The logits first, dropped before the depth maps are upsampled: the two peaks do not add up.
        probs = torch.softmax(upsample_outputs(out, size, keys=("S",))["S"].float(), 1)
        conf, label = probs.max(1)
        del probs
        up = upsample_outputs(out, size, keys=("D", "D_src"))
        omega, _ = depth_discrepancy_weight(up["D_src"], up["D"], depth_target, per_image=True, eps=eps,
                                            invalid=invalid)
        omega = omega[:, 0]
    return {"label": label, "confidence": conf, "omega": omega,
            "weight": final_weight(rule, conf, omega, threshold)}


def label_items(teacher, dataset, batch_size: int, device, weight_rule: str, threshold: float,
                diag: "PseudoLabelDiagnostics", progress=None):
    """Yield ``(name, label uint8, confidence, ω, weight)`` per image of ``dataset`` (fields ``image``, ``depth``,
    optionally ``label``) in order, labelled by ``teacher`` in batches of ``batch_size``; images with a
    ground-truth label also update ``diag``.

    The teacher runs on the whole batch; the full-size maps are then made one image at a time
    (:func:`pseudo_label_maps` on the image's rows of the outputs, equal to :func:`pseudo_label_batch`'s rows), so
    beyond the network's batch and the loaded batch (image float32, depth float32, label int64: 24 bytes per
    pixel and image) one image's maps are in flight: 153 bytes per pixel measured for 19 classes (321 MB at
    1024×2048), instead of that much for every image of the batch.
    """
    import numpy as np
    import torch

    from corda.inference import iterate_batches

    batches = iterate_batches(dataset, batch_size)
    if progress is not None:
        batches = progress(batches, (len(dataset) + batch_size - 1) // batch_size, "pseudo-labels")
    for batch in batches:
        images, depth = batch["image"].to(device), batch["depth"].to(device)
        with torch.no_grad():
            out = {k: v for k, v in teacher(images).items() if k in ("S", "D", "D_src")}
        for j in range(images.shape[0]):
            r = pseudo_label_maps({k: v[j:j + 1] for k, v in out.items()}, depth[j:j + 1],
                                  tuple(images.shape[-2:]), weight_rule, threshold)
            lab, c, o, w = (r[k][0].cpu().numpy() for k in ("label", "confidence", "omega", "weight"))
            del r
            if "label" in batch:
                diag.update(lab, batch["label"][j].numpy(), c, o, w)
            yield batch["name"][j], lab.astype(np.uint8), c, o, w


def at_training_size(items, hw: tuple[int, int] | None):
    """``items`` of :func:`label_items` with every map resized to ``hw`` = (H, W) by nearest neighbour (PIL's
    rule, :func:`corda.data.readers.resize_array`), the resize self-training applies to what it reads
    (:class:`corda.data.datasets.SegDepthDataset`, ``train.target_resize_hw``); ``hw`` None keeps each map.

    Stored at that size the file reads back, after the reader's own nearest resize (the identity at equal size),
    to the same pseudo-labels and weights as the full-size file: nearest picks stored values, the float16 cast
    commutes with picking. A 1024×2048 Cityscapes frame read at 512×1024 stores a quarter of the pixels.
    """
    if hw is None:
        yield from items
        return
    from corda.data.readers import resize_array

    hw = (int(hw[0]), int(hw[1]))
    for name, *maps in items:
        yield (name, *(resize_array(m, hw, "nearest") for m in maps))


# ------------------------------------------------------------------------------------------------------------
# Data-parallel export: each rank labels a contiguous share into a part file, rank 0 merges the parts.


def part_path(out_h5: Path, rank: int) -> Path:
    """Rank ``rank``'s temporary share of ``out_h5`` (``pseudo/target.h5.part<r>``, removed after the merge)."""
    return out_h5.with_name(f"{out_h5.name}.part{rank}")


def export_sharded(out_h5: Path, merged: Path, items, n: int, attrs: dict, diag, batch_size: int, dist,
                    device) -> None:
    """This rank's share into its part file; diagnostics summed over ranks; rank 0 merges the parts into
    ``merged`` (its staging path of ``out_h5``; the part files are named after ``out_h5`` on every rank)."""
    from corda.distributed import DistInfo, barrier, shard_range, sum_over_ranks
    from corda.h5io import merge_pseudo_h5, write_pseudo_h5
    from corda.io import remove_outputs

    shares = [shard_range(n, DistInfo(r, dist.world_size), align=batch_size) for r in range(dist.world_size)]
    parts = [part_path(out_h5, r) for r, share in enumerate(shares) if len(share)]
    mine = part_path(out_h5, dist.rank)
    try:
        if len(shares[dist.rank]):
            write_pseudo_h5(mine, items, len(shares[dist.rank]), attrs)
        # Every rank (also one with no images) joins the reduction; NCCL reduces on the rank's GPU.
        diag.load_state_arrays(sum_over_ranks(diag.state_arrays(), dist,
                                              device if device.type == "cuda" else None))
        barrier(dist)  # every part is complete before rank 0 reads them
        if dist.is_main:
            merge_pseudo_h5(merged, parts, attrs)
    except BaseException:
        remove_outputs(*(parts if dist.is_main else [mine]))
        raise
    if dist.is_main:
        # The parts of this run and any stale ones (another N, a killed run's temporaries).
        stale = [*out_h5.parent.glob(f"{out_h5.name}.part*"), *out_h5.parent.glob(f".{out_h5.name}.part*.tmp-*")]
        remove_outputs(*parts, *stale)
