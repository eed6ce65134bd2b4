"""The ``pseudo_labels`` files: writer, reader, row iterator and the merge of data-parallel parts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from corda.errors import DataError
from corda.h5io.reader import _SchemaReader, open_h5
from corda.h5io.schema import PSEUDO_SCHEMA, _NAMES
from corda.h5io.writer import H5StreamWriter, _chain, _check_attrs, _hw, _peek

def write_pseudo_h5(
    path: str | os.PathLike,
    items: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    n: int,
    attrs: Mapping[str, Any],
    **writer_kw: Any,
) -> None:
    """Stream ``n`` pseudo-labelled target images into a :data:`PSEUDO_SCHEMA` file.

    Args:
        items: ``(name, label, confidence, depth_weight, weight)``, each array (H, W): label trainIds
            (255 = ignore), confidence q_max ∈ [0, 1], ω ∈ [0, 1], final weight ≥ 0.
        attrs: ``class_names``, ``threshold``, ``checkpoint_hash``, ``params`` (dict or JSON text),
            ``weight_rule``, plus any extra; ``kind``, ``height``, ``width`` are filled in.
        writer_kw: ``chunk_items``, ``compression``... of :class:`H5StreamWriter`.
    """
    first, rest = _peek(items, n, path)
    h, w = _hw(attrs, first, str(path))
    full = {**attrs, "kind": PSEUDO_SCHEMA.kind, "height": h, "width": w}
    _check_attrs(PSEUDO_SCHEMA, full, str(path))
    if isinstance(full["params"], str):
        full["params"] = json.loads(full["params"])  # always stored (and read back) as a dict
    num_classes = len(full["class_names"])
    specs = {k: ((h, w), dt) for k, dt in PSEUDO_SCHEMA.datasets.items()}
    with H5StreamWriter(path, n, specs, full, **writer_kw) as writer:
        for name, label, conf, omega, weight in _chain(first, rest):
            label = np.asarray(label)
            bad = (label < 0) | ((label >= num_classes) & (label != 255))
            if bad.any():
                raise DataError(
                    f"{path}: pseudo-label of {name!r} has ids outside 0..{num_classes - 1} and 255"
                )
            ranges = (("confidence", conf, 1.0), ("depth_weight", omega, 1.0), ("weight", weight, np.inf))
            for what, arr, high in ranges:
                arr = np.asarray(arr)
                if arr.size and not (np.isfinite(arr).all() and 0 <= arr.min() and arr.max() <= high):
                    raise DataError(f"{path}: {what} of {name!r} is non-finite or out of range")
            writer.append(name, label=label, confidence=conf, depth_weight=omega, weight=weight)


class PseudoLabelH5(_SchemaReader):
    """Reader of a pseudo-label file (:data:`PSEUDO_SCHEMA`); pickle-safe, one lazy handle per process."""

    schema = PSEUDO_SCHEMA

    @property
    def class_names(self) -> list[str]:
        return list(self._attrs["class_names"])

    def label(self, i: int) -> np.ndarray:
        """(H, W) uint8 pseudo-label trainIds of item ``i`` (255 = ignore)."""
        return self._row("label", i)

    def confidence(self, i: int) -> np.ndarray:
        """(H, W) float16 teacher confidence q_max of item ``i``."""
        return self._row("confidence", i)

    def depth_weight(self, i: int) -> np.ndarray:
        """(H, W) float16 depth-discrepancy weight ω of item ``i`` (method.md §4)."""
        return self._row("depth_weight", i)

    def weight(self, i: int) -> np.ndarray:
        """(H, W) float16 final per-pixel CE weight of item ``i`` used by self-training."""
        return self._row("weight", i)


def pseudo_rows(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Stream a finished pseudo-label file row by row as :func:`write_pseudo_h5` items, in file order:
    ``(name, label, confidence, depth_weight, weight)`` in the stored dtypes (one image in memory at a time).
    """
    with PseudoLabelH5(path) as f:
        for i, name in enumerate(f.names):
            yield name, f.label(i), f.confidence(i), f.depth_weight(i), f.weight(i)


def merge_pseudo_h5(
    path: str | os.PathLike,
    parts: Iterable[str | os.PathLike],
    attrs: Mapping[str, Any],
    **writer_kw: Any,
) -> None:
    """Concatenate finished pseudo-label files (``parts``, in order) into one file, streamed and atomic.

    The data-parallel export (``pseudo_labels.devices > 1``) writes each rank's contiguous share of the
    images to a part file; merging them in rank order gives row for row the items a one-process export
    writes. Re-writing float16/uint8 rows casts nothing, so with the same ``attrs`` the result holds the same
    datasets, values, names and attributes as the one-process file.

    Args:
        parts: part files written by :func:`write_pseudo_h5` (every one complete).
        attrs: the final file's attributes, as for :func:`write_pseudo_h5`.
    """
    parts = [Path(p) for p in parts]
    n = 0
    for part in parts:
        with open_h5(part, PSEUDO_SCHEMA.kind) as f:
            n += int(f[_NAMES].shape[0])

    def rows() -> Iterator[tuple]:
        for part in parts:
            yield from pseudo_rows(part)

    write_pseudo_h5(path, rows(), n, attrs, **writer_kw)
