"""Rare-class sampling (RCS) of source images (DAFormer, Hoyer et al., CVPR 2022, §3.3, Eq. 5–6).

Instead of drawing source images uniformly, draw a class c first, with a probability that grows as the class gets
rarer in the source labels, then one image that contains c:

    f_c = (pixels of class c) / (all labelled pixels),   P(c) = exp((1 − f_c)/T) / Σ_c' exp((1 − f_c')/T)

with temperature T = 0.01 (DAFormer's ``class_temp``). An image counts for c when it holds more than
``min_pixels`` (3000) pixels of c at its stored resolution; the loader then re-draws the crop (up to 10 times in
DAFormer) until the crop keeps more than ``min_crop_ratio``·``min_pixels`` of c (:func:`crop_keeps_class`).
Classes absent from every label get no probability (DAFormer builds its table from the classes present).

The per-image class pixel counts are computed once, from the source labels, by the ``rcs`` DVC stage
(``stages/rcs.py``) and written as a JSON file (:func:`write_class_stats`, ``data/rcs_class_stats.json``), a
cached DVC output: DAFormer's users hit missing or empty ``sample_class_stats.json`` files, so
:func:`read_class_stats` fails with a one-line error naming the file and how to rebuild it. Format::

    {"format": 1, "num_classes": 19, "names": [...], "counts": [[n_0, ..., n_18], ...],  # one row per image
     "min_pixels": 3000, "class_pixels": [...], "class_frequency": [...],               # readable summary
     "images_with_class": {"<c>": [names with more than min_pixels pixels of c], ...}}

The sampler reads only ``names`` and ``counts`` (the summary is for people and ``dvc diff``), so a summary
written for another ``min_pixels`` never changes a draw.

In training (:class:`RareClassSampler` and :func:`rcs_batch_keys`) every source item of step s is drawn from
``np.random.default_rng([seed, s])``: a pure function of the step, like the uniform sampler, so a resumed run
draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from corda import paths
from corda.errors import DataError
from corda.io import read_json, write_json
from corda.labels import IGNORE

log = logging.getLogger(__name__)

STATS_FORMAT = 1
STATS_PATH = paths.RCS_STATS  # where the rcs stage writes the statistics and training reads them
REBUILD = "rebuild it with `dvc repro rcs` (or `python -m stages.rcs`)"


@dataclass(frozen=True)
class ClassStats:
    """Pixel counts per source image and class: ``counts[i, c]`` for image ``names[i]``."""

    names: tuple[str, ...]
    counts: np.ndarray  # (N, num_classes) int64

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[1])


def label_class_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) int64 pixel counts of one trainId label; ignore (255) and ids ≥ num_classes are not counted."""
    flat = np.asarray(label).reshape(-1).astype(np.int64)
    return np.bincount(flat[flat < num_classes], minlength=num_classes)[:num_classes]


def compute_class_stats(labels: Iterable[tuple[str, np.ndarray]], num_classes: int = 19) -> ClassStats:
    """Per-image class pixel counts of (name, (H, W) trainId label) pairs, e.g. from a label-only dataset's
    ``names`` and ``load_raw(i)["label"]`` (stored resolution, as DAFormer counts)."""
    names, rows = [], []
    for name, label in labels:
        names.append(str(name))
        rows.append(label_class_counts(label, num_classes))
    counts = np.stack(rows) if rows else np.zeros((0, num_classes), np.int64)
    return ClassStats(tuple(names), counts)


def class_summary(stats: ClassStats, min_pixels: int) -> dict:
    """Per-class pixel totals and frequencies, and per class the images holding more than ``min_pixels`` of it
    (DAFormer's ``samples_with_class`` after its ``> min_pixels`` filter; classes held by no image are left out)."""
    total = stats.counts.sum(axis=0)
    freq = total / max(int(total.sum()), 1)
    pools = images_with_class(stats, range(stats.num_classes), min_pixels)
    return {"min_pixels": int(min_pixels), "class_pixels": total.astype(int).tolist(),
            "class_frequency": [round(float(f), 8) for f in freq],
            "images_with_class": {str(c): [stats.names[i] for i in idx] for c, idx in pools.items() if idx.size}}


def write_class_stats(path: str | Path, stats: ClassStats, min_pixels: int | None = None) -> None:
    """Write ``stats`` as JSON, atomically (rows follow the source index order); with ``min_pixels``, also
    the readable :func:`class_summary`."""
    obj = {"format": STATS_FORMAT, "num_classes": stats.num_classes, "names": list(stats.names),
           "counts": stats.counts.astype(int).tolist()}
    if min_pixels is not None:
        obj.update(class_summary(stats, min_pixels))
    write_json(path, obj)


def read_class_stats(path: str | Path) -> ClassStats:
    """Read a file written by :func:`write_class_stats`; one-line :class:`DataError` when missing/empty/bad."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: rare-class-sampling statistics not found; {REBUILD}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: rare-class-sampling statistics file is empty; {REBUILD}")
    obj = read_json(path)
    if not isinstance(obj, dict) or obj.get("format") != STATS_FORMAT or not {"names", "counts"} <= set(obj):
        raise DataError(f"{path}: not a format-{STATS_FORMAT} rare-class-sampling statistics file; {REBUILD}")
    names, counts = obj["names"], np.asarray(obj["counts"], dtype=np.int64)
    k = int(obj.get("num_classes", 0))
    if not names or counts.shape != (len(names), k) or (counts < 0).any() or counts.sum() == 0:
        raise DataError(f"{path}: rare-class-sampling statistics hold no labelled pixels or are inconsistent "
                        f"({len(names)} names, counts {counts.shape}); {REBUILD}")
    return ClassStats(tuple(names), counts)


def class_probabilities(counts: np.ndarray, temperature: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The classes present in ``counts`` ((N, K) or (K,) pixel counts) and their sampling probabilities
    P(c) = softmax((1 − f_c)/T) over those classes (f_c = the class's share of all labelled pixels)."""
    if temperature <= 0:
        raise ValueError(f"RCS temperature must be > 0, got {temperature}")
    total = np.asarray(counts, dtype=np.float64).reshape(-1, np.shape(counts)[-1]).sum(axis=0)
    classes = np.flatnonzero(total > 0)
    if classes.size == 0:
        raise DataError("rare-class sampling: the source labels hold no labelled pixel")
    freq = total[classes] / total[classes].sum()
    logits = (1.0 - freq) / temperature
    p = np.exp(logits - logits.max())  # shift for stability: T = 0.01 gives exponents up to 100
    return classes, p / p.sum()


def images_with_class(stats: ClassStats, classes: Iterable[int], min_pixels: int = 3000) -> dict[int, np.ndarray]:
    """For each class, the indices of the images with more than ``min_pixels`` pixels of it."""
    return {int(c): np.flatnonzero(stats.counts[:, c] > min_pixels) for c in classes}


class RareClassSampler:
    """Draws (class, source image index) pairs as a pure function of (seed, step).

    Classes that no image holds more than ``min_pixels`` of cannot be drawn; they are dropped and the remaining
    probabilities renormalised (DAFormer asserts instead; small images, e.g. the embedded 128×256 benchmark, can
    hold too few pixels of a rare class), and logged.
    """

    def __init__(self, stats: ClassStats, temperature: float = 0.01, min_pixels: int = 3000, seed: int = 0):
        classes, probs = class_probabilities(stats.counts, temperature)
        pools = images_with_class(stats, classes, min_pixels)
        keep = np.array([pools[int(c)].size > 0 for c in classes])
        if not keep.any():
            raise DataError(f"rare-class sampling: no source image has more than {min_pixels} pixels of any "
                            f"class; lower train.rcs_min_pixels")
        if not keep.all():
            log.warning("rare-class sampling: classes %s have no image with > %d pixels and are not drawn",
                        classes[~keep].tolist(), min_pixels)
        self.classes = classes[keep]
        self.probs = probs[keep] / probs[keep].sum()
        self.pools = {int(c): pools[int(c)] for c in self.classes}
        self.seed = int(seed)

    def draw(self, step: int, n: int = 1) -> list[tuple[int, int]]:
        """``n`` (class, image index) pairs for training step ``step`` (same seed and step → same pairs)."""
        rng = np.random.default_rng([self.seed, int(step)])
        out = []
        for c in rng.choice(self.classes, size=n, p=self.probs):
            pool = self.pools[int(c)]
            out.append((int(c), int(pool[rng.integers(pool.size)])))
        return out


def crop_keeps_class(label_crop: np.ndarray, cls: int, min_pixels: int = 3000,
                     min_crop_ratio: float = 0.5) -> bool:
    """Whether a crop keeps enough of the drawn class: more than ``min_crop_ratio``·``min_pixels`` pixels."""
    return int((np.asarray(label_crop) == cls).sum()) > min_pixels * min_crop_ratio


def check_stats_names(stats: ClassStats, names: Iterable[str], path: str | Path) -> None:
    """The statistics describe exactly these source items, in this order (else a one-line DataError)."""
    names = tuple(names)
    if stats.names != names:
        extra = next((n for n in stats.names if n not in set(names)), None)
        raise DataError(f"{path}: rare-class-sampling statistics list {len(stats.names)} images but the source "
                        f"split has {len(names)}" + (f" (e.g. {extra!r} is not in it)" if extra else
                                                     " in another order") + f"; {REBUILD}")


def load_sampler(path: str | Path, names: Iterable[str], temperature: float, min_pixels: int,
                 seed: int) -> RareClassSampler:
    """The sampler of ``train.rcs_*`` over the source items ``names`` from the ``rcs`` stage's file."""
    stats = read_class_stats(path)
    check_stats_names(stats, names, path)
    sampler = RareClassSampler(stats, temperature, min_pixels, seed)
    log.info("rare-class sampling over classes %s with probabilities %s", sampler.classes.tolist(),
             np.round(sampler.probs, 4).tolist())
    return sampler


def rcs_batch_keys(sampler: RareClassSampler, batch: int, step: int) -> list[tuple[int, int, int]]:
    """Dataset keys ``(index, draw, class)`` of step ``step``: ``batch`` rare-class draws.

    ``draw`` is the global sample position ``step·batch + k``, as :func:`corda.engine.batch_keys`, so the
    first crop of an item is the one uniform sampling would cut; the dataset re-crops while the crop keeps
    too few pixels of ``class`` (:meth:`corda.data.datasets.SegDepthDataset`, ``class_crop_min_pixels``).
    """
    return [(i, step * batch + k, c) for k, (c, i) in enumerate(sampler.draw(step, batch))]
