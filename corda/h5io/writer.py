"""A generic streaming writer: per-image datasets filled in order, in a temporary file renamed at the end.

The temporary is :func:`corda.io.temp_beside`'s, the one temporary name of every atomic write: the next write of
the same file, or :func:`corda.io.staged_outputs`, removes what a killed writer left.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import h5py
import numpy as np

from corda.errors import CordaError
from corda.io import temp_beside
from corda.h5io.attrs import _encode_attr
from corda.h5io.schema import H5Schema, JSON_ATTRS_KEY, _NAMES

log = logging.getLogger(__name__)


class H5StreamWriter:
    """Write ``n`` items, one row of every dataset at a time, into a fresh HDF5 file; atomic on success.

    Use as a context manager::

        with H5StreamWriter(path, n, {"label": ((H, W), np.uint8)}, {"kind": "pseudo_labels"}) as w:
            for name, lab in items:
                w.append(name, label=lab)

    Args:
        path: destination file. The data goes to a hidden temporary beside it (:func:`corda.io.temp_beside`)
            until the block succeeds.
        n: number of items that must be appended (checked on exit).
        datasets: ``{name: (shape_per_item, dtype)}``; each becomes a ``(n, *shape_per_item)`` dataset.
            ``names`` is reserved (the string dataset of item names).
        attrs: root attributes: str, numbers, bools, lists; dicts (and nested lists) are stored as JSON
            text and listed in the ``json_attrs`` attribute. ``complete`` is reserved.
        chunk_items: items per chunk along the first axis.
        compression, compression_opts: h5py filter (``None`` for none) and its level.
        shuffle: byte-shuffle filter before compression (much smaller float files).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        datasets: Mapping[str, tuple[tuple[int, ...], Any]],
        attrs: Mapping[str, Any] | None = None,
        chunk_items: int = 1,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        shuffle: bool = True,
    ) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if chunk_items < 1:
            raise ValueError(f"chunk_items must be >= 1, got {chunk_items}")
        if _NAMES in datasets:
            raise ValueError(f"dataset name {_NAMES!r} is reserved for the item names")
        attrs = dict(attrs or {})
        for reserved in ("complete", JSON_ATTRS_KEY):
            if reserved in attrs:
                raise ValueError(f"attribute {reserved!r} is reserved")
        self.path = Path(path)
        self.tmp_path: Path | None = None  # corda.io.temp_beside, made on entering the block
        self.n = n
        self.specs = {k: (tuple(int(s) for s in shape), np.dtype(dt)) for k, (shape, dt) in datasets.items()}
        self.attrs = attrs
        self.chunk_items = min(chunk_items, max(n, 1))
        self.compression = compression if n > 0 else None  # filters need chunks; an empty file has none
        self.compression_opts = compression_opts if self.compression else None
        self.shuffle = shuffle and n > 0 and compression is not None
        self.count = 0
        self._seen: set[str] = set()
        self._file: h5py.File | None = None
        self._ds: dict[str, h5py.Dataset] = {}

    def _fail(self, exc: BaseException, what: str) -> CordaError:
        return CordaError(f"{self.path}: could not {what} ({exc}); check free disk space and permissions")

    # -- context manager ---------------------------------------------------------------------------------

    def __enter__(self) -> "H5StreamWriter":
        chunk_bytes = [self.chunk_items * math.prod(shape) * dt.itemsize for shape, dt in self.specs.values()]
        try:
            self.tmp_path = temp_beside(self.path, ".h5")
            # Room for two chunks per dataset: a chunk being filled is never evicted half-written
            # (that would mean decompress-modify-recompress), and memory stays bounded by the chunk size.
            f = h5py.File(self.tmp_path, "w", rdcc_nbytes=max(1 << 20, 2 * max(chunk_bytes, default=0)),
                          rdcc_w0=1.0)
            self._file = f
            json_keys = []
            for key in sorted(self.attrs):  # sorted: the same attrs always give the same bytes
                value, is_json = _encode_attr(key, self.attrs[key])
                f.attrs[key] = value
                if is_json:
                    json_keys.append(key)
            f.attrs[JSON_ATTRS_KEY] = json_keys if json_keys else np.zeros(0, dtype=np.float64)
            for name in sorted(self.specs):
                shape, dtype = self.specs[name]
                self._ds[name] = f.create_dataset(
                    name, shape=(self.n, *shape), dtype=dtype,
                    chunks=(self.chunk_items, *shape) if self.n > 0 else None,
                    compression=self.compression, compression_opts=self.compression_opts,
                    shuffle=self.shuffle, track_times=False,
                )
            self._ds[_NAMES] = f.create_dataset(
                _NAMES, shape=(self.n,), dtype=h5py.string_dtype("utf-8"), track_times=False
            )
        except OSError as exc:
            self._abort()
            raise self._fail(exc, "create the file") from exc
        except BaseException:
            self._abort()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False  # re-raise
        if self.count != self.n:
            self._abort()
            raise CordaError(f"{self.path}: {self.count} items were written but {self.n} were expected; "
                             "the file was not created")
        try:
            assert self._file is not None
            self._file.attrs["complete"] = True
            self._file.close()
            self._file = None
            os.replace(self.tmp_path, self.path)  # type: ignore[arg-type]
        except OSError as exc:
            self._abort()
            raise self._fail(exc, "finish writing") from exc
        log.info("wrote %s (%d items)", self.path, self.n)
        return False

    def _abort(self) -> None:
        """Close (ignoring errors: the disk may be full) and delete the temporary file."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
            self._file = None
        if self.tmp_path is not None:
            self.tmp_path.unlink(missing_ok=True)

    # -- items -------------------------------------------------------------------------------------------

    def append(self, name: str, **arrays: Any) -> None:
        """Write item ``count``: its name and one array per dataset (shape ``shape_per_item``).

        Arrays are cast to the dataset dtype; integers outside the dtype's range raise ``ValueError``
        instead of wrapping around.
        """
        if self._file is None:
            raise RuntimeError("H5StreamWriter.append outside its `with` block")
        if self.count >= self.n:
            raise ValueError(f"{self.path}: more than the declared {self.n} items appended")
        if set(arrays) != set(self.specs):
            raise ValueError(
                f"append({name!r}): got datasets {sorted(arrays)}, expected {sorted(self.specs)}"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"append: item name must be a non-empty str, got {name!r}")
        if name in self._seen:
            raise ValueError(f"{self.path}: duplicate item name {name!r}")
        rows = {}
        for key, value in arrays.items():
            shape, dtype = self.specs[key]
            arr = np.asarray(value)
            if arr.shape != shape:
                raise ValueError(f"append({name!r}): {key} has shape {arr.shape}, expected {shape}")
            if dtype.kind in "iu" and arr.dtype != dtype and arr.size:
                info = np.iinfo(dtype)
                lossy = arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr))
                if lossy or arr.min() < info.min or arr.max() > info.max:
                    raise ValueError(f"append({name!r}): {key} ({arr.dtype}) does not fit {dtype}")
            rows[key] = np.ascontiguousarray(arr, dtype=dtype)
        i = self.count
        try:
            for key, row in rows.items():
                self._ds[key][i] = row
            self._ds[_NAMES][i] = name
        except OSError as exc:
            raise self._fail(exc, f"write item {i} ({name})") from exc
        self._seen.add(name)
        self.count += 1


def _peek(items: Iterable[tuple], n: int, path: str | os.PathLike) -> tuple[tuple | None, Iterator[tuple]]:
    """The first item (its arrays give H, W before the file is created) and an iterator over the rest."""
    it = iter(items)
    first = next(it, None) if n > 0 else None
    if n > 0 and first is None:
        raise CordaError(f"{path}: expected {n} items, got none; the file was not created")
    return first, it


def _hw(attrs: Mapping[str, Any], first: tuple | None, what: str) -> tuple[int, int]:
    if first is not None:
        h, w = np.shape(first[1])[-2:]
    elif "height" in attrs and "width" in attrs:
        h, w = attrs["height"], attrs["width"]
    else:
        raise ValueError(f"{what}: with n=0 pass height and width in attrs")
    if ("height" in attrs and int(attrs["height"]) != h) or ("width" in attrs and int(attrs["width"]) != w):
        raise ValueError(
            f"{what}: attrs height/width {attrs.get('height')}x{attrs.get('width')} != items {h}x{w}"
        )
    return int(h), int(w)


def _check_attrs(schema: H5Schema, attrs: dict[str, Any], what: str) -> None:
    missing = [a for a in schema.required_attrs if a not in attrs]
    if missing:
        raise ValueError(f"{what}: missing attributes {missing}")
    if attrs.get("kind", schema.kind) != schema.kind:
        raise ValueError(f"{what}: kind must be {schema.kind!r}, got {attrs['kind']!r}")


def _chain(first: tuple | None, rest: Iterator[tuple]) -> Iterator[tuple]:
    if first is not None:
        yield first
    yield from rest
