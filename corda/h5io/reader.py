"""Opening a file of a known kind with a one-line error naming the stage that re-creates it; the schema reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from corda.errors import DataError
from corda.h5io.attrs import _decode_attr, read_attrs
from corda.h5io.schema import H5Schema, _NAMES, _SCHEMAS

def _rerun_hint(kind: str) -> str:
    schema = _SCHEMAS.get(kind)
    stage = schema.stage if schema else "<stage>"
    return f"re-run the stage that writes it (`dvc repro {stage}`)"


def open_h5(path: str | os.PathLike, kind: str) -> h5py.File:
    """Open a finished artefact read-only, after checking it is the expected ``kind`` and complete.

    Returns:
        An open ``h5py.File`` (mode ``"r"``; use it as a context manager).

    Raises:
        DataError: naming the file, if it is missing, not HDF5 or truncated, was never finished
            (no ``complete=True``), or holds another kind of data.
    """
    path = Path(path)
    hint = _rerun_hint(kind)
    if not path.is_file():
        raise DataError(f"{path}: file not found; {hint}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt: {exc}); {hint}") from exc
    try:
        complete = f.attrs.get("complete", False)
        stored_kind = _decode_attr(f.attrs.get("kind", ""))
    except OSError as exc:
        f.close()
        raise DataError(f"{path}: corrupt HDF5 attributes ({exc}); {hint}") from exc
    if not bool(complete):
        f.close()
        raise DataError(f"{path}: incomplete file (no complete=True; its writer was interrupted); {hint}")
    if stored_kind != kind:
        f.close()
        raise DataError(f"{path}: holds {stored_kind!r} data, expected {kind!r}; check the path or {hint}")
    return f


class _SchemaReader:
    """Random access to one ``kind`` of file; validates eagerly, opens lazily once per process."""

    schema: H5Schema

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open_h5(self.path, self.schema.kind) as f:
            self._attrs = read_attrs(f)
            self._check(f)
            try:
                self._names = [_decode_attr(v) for v in f[_NAMES][()]]
            except OSError as exc:
                hint = _rerun_hint(self.schema.kind)
                raise DataError(f"{self.path}: unreadable names ({exc}); {hint}") from exc
        self._index = {name: i for i, name in enumerate(self._names)}
        if len(self._index) != len(self._names):
            raise DataError(f"{self.path}: duplicate image names; {_rerun_hint(self.schema.kind)}")
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _check(self, f: h5py.File) -> None:
        hint = _rerun_hint(self.schema.kind)
        missing = [a for a in self.schema.required_attrs if a not in self._attrs]
        if missing:
            raise DataError(f"{self.path}: missing attributes {missing} (old or foreign file); {hint}")
        if _NAMES not in f:
            raise DataError(f"{self.path}: no {_NAMES!r} dataset; {hint}")
        n = f[_NAMES].shape[0]
        hw = (int(self._attrs["height"]), int(self._attrs["width"]))
        for name, dtype in self.schema.datasets.items():
            if name not in f:
                raise DataError(f"{self.path}: no {name!r} dataset; {hint}")
            ds = f[name]
            if ds.dtype != dtype or ds.shape != (n, *hw):
                raise DataError(f"{self.path}: dataset {name!r} is {ds.dtype}{ds.shape}, expected "
                                f"{dtype}{(n, *hw)}; {hint}")

    # -- pickling / per-process handle -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles cannot be pickled; each process opens its own
        state["_pid"] = None
        return state

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent's HDF5 state: open a fresh one.
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                hint = _rerun_hint(self.schema.kind)
                raise DataError(f"{self.path}: cannot reopen ({exc}); {hint}") from exc
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close this process's handle (reopened on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- access ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> list[str]:
        """Image names in file order (row i ↔ ``names[i]``)."""
        return list(self._names)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as Python values (``params`` etc. decoded from JSON)."""
        return dict(self._attrs)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every item."""
        return int(self._attrs["height"]), int(self._attrs["width"])

    def index_of(self, name: str) -> int:
        """Row of image ``name``; DataError if the file does not contain it."""
        try:
            return self._index[name]
        except KeyError:
            raise DataError(f"{self.path}: has no entry for image {name!r} (made for another image list?); "
                            f"{_rerun_hint(self.schema.kind)}") from None

    def _row(self, dataset: str, i: int) -> np.ndarray:
        n, i = len(self._names), int(i)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: index {i} out of range for {n} items")
        try:
            return self._h5()[dataset][i % n]
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read {dataset}[{i}] ({exc}); "
                            f"{_rerun_hint(self.schema.kind)}") from exc
