"""The ``depth_maps`` files: writer and random-access reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from corda import paths
from corda.inv_depth import INVALID
from corda.errors import DataError
from corda.h5io.reader import _SchemaReader
from corda.h5io.schema import DEPTH_ENCODING, DEPTH_MODES, DEPTH_SCHEMA
from corda.io import write_json
from corda.h5io.writer import H5StreamWriter, _chain, _check_attrs, _hw, _peek


def write_source_in_place(path: str | os.PathLike, attrs: Mapping[str, Any]) -> None:
    """Record (JSON, ``attrs`` plus ``read_in_place: true``) that the source depth is read from the dataset."""
    write_json(path, {**attrs, "read_in_place": True})


def source_depth_h5(depth_dir: str | os.PathLike) -> Path | None:
    """The source depth file of a ``depth_maps`` folder, or None when training reads the dataset's own depth.

    ``depth_maps`` writes exactly one of ``source.h5`` (network depth) and ``source.json`` (ground
    truth: the dataset's depth files are read where they lie, through
    :func:`corda.data.codecs.inv_through_metres`). Neither → DataError saying to re-run ``depth_maps``.
    """
    h5 = paths.depth_h5("source", depth_dir)
    if h5.exists() or h5.is_symlink():
        return h5
    if paths.source_depth_record(depth_dir).is_file():
        return None
    raise DataError(f"{depth_dir}: neither source.h5 (network depth) nor source.json (the source dataset's "
                    f"own depth, read in place) found; re-run `dvc repro depth_maps`")


def write_depth_h5(
    path: str | os.PathLike,
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    n: int,
    attrs: Mapping[str, Any],
    **writer_kw: Any,
) -> None:
    """Stream ``n`` depth maps into a :data:`DEPTH_SCHEMA` file.

    Args:
        items: ``(name, inv_depth (H, W), depth_m (H, W))``; ``inv_depth`` in the CorDA encoding
            (≥ 1, exactly 1.0 = invalid), ``depth_m`` in metres (NaN = invalid).
        n: number of items (every image of the domain).
        attrs: ``min_depth_m``, ``max_depth_m``, ``mode`` (one of :data:`DEPTH_MODES`), ``model_hash``,
            ``domain``, plus any extra. ``kind``, ``encoding``, ``height`` and ``width`` are filled in.
        writer_kw: ``chunk_items``, ``compression``... of :class:`H5StreamWriter`.
    """
    first, rest = _peek(items, n, path)
    h, w = _hw(attrs, first, str(path))
    full = {"encoding": DEPTH_ENCODING, **attrs, "kind": DEPTH_SCHEMA.kind, "height": h, "width": w}
    _check_attrs(DEPTH_SCHEMA, full, str(path))
    if full["mode"] not in DEPTH_MODES:
        raise ValueError(f"{path}: mode must be one of {DEPTH_MODES}, got {full['mode']!r}")
    specs = {k: ((h, w), dt) for k, dt in DEPTH_SCHEMA.datasets.items()}
    with H5StreamWriter(path, n, specs, full, **writer_kw) as writer:
        for name, inv, depth in _chain(first, rest):
            inv = np.asarray(inv, dtype=np.float32)
            # BerHu masks invalid pixels by `t == 1.0` (method.md §2.2): anything < 1 or non-finite would be
            # trained on as a real target.
            if inv.size and not (np.isfinite(inv).all() and inv.min() >= INVALID):
                raise DataError(f"{path}: inverse depth of {name!r} has values < 1 or non-finite; "
                                "the encoding is t >= 1 with 1.0 = invalid")
            writer.append(name, inv_depth=inv, depth_m=depth)


class DepthH5(_SchemaReader):
    """Reader of a depth file (:data:`DEPTH_SCHEMA`); pickle-safe, one lazy handle per process."""

    schema = DEPTH_SCHEMA

    def inv_depth(self, i: int) -> np.ndarray:
        """(H, W) float32 CorDA inverse depth of item ``i`` (1.0 = invalid)."""
        return self._row("inv_depth", i)

    def depth_m(self, i: int) -> np.ndarray:
        """(H, W) float16 metric depth of item ``i`` in metres (NaN = invalid)."""
        return self._row("depth_m", i)
