"""HDF5 artefacts of the pipeline: depth targets (``depth_maps`` stage) and pseudo-labels (``pseudo_labels``).

The original CorDA reads pre-computed depth PNG/MAT files and computes the depth-discrepancy weight ω
online only (method.md §2.1, §4). Our pipeline materialises both as one HDF5 file per domain/stage, so
that DVC can hash, cache and reuse them. This module owns the file layout, a streaming writer and the
readers.

Writing (:class:`H5StreamWriter`)
---------------------------------
* Items are written one at a time (row ``i`` of every dataset), so memory stays flat whatever the
  number of images: at most a couple of chunks per dataset live in HDF5's chunk cache.
* The file is written under the temporary name ``.<name>.tmp`` in the destination folder and
  ``os.replace``-d onto the destination only after exactly ``n`` items were written and the root
  attribute ``complete=True`` was set. On any exception the temporary file is removed, so a killed or
  failed stage never leaves a file that looks finished.
* Always a fresh file opened with ``"w"``: with ``cache.type hardlink`` a DVC output is a hard link
  into the cache, and opening it in place with ``"a"``/``"r+"`` would corrupt the cache
  (ecosystem.md §7).
* Deterministic bytes: no timestamps (``track_times=False``), attributes written in sorted order,
  and h5py writes byte-identical files for identical content (ecosystem.md §6), so a re-run with the
  same inputs gives the same DVC hash and does not invalidate downstream stages.
* HDF5/OS failures (disk full, permissions) become :class:`corda.errors.CordaError` naming the file.
* Data-parallel export: each rank writes its share to a part file and :func:`merge_pseudo_h5` streams
  the parts, in order, into the final file (the same content as a one-process export).

Layout shared by both kinds
---------------------------
Every per-image dataset has shape ``(N, H, W)``; row ``i`` belongs to image ``names[i]``.

==================  =====================================================================================
storage             chunks ``(chunk_items, H, W)`` (default 1 image per chunk, so reading one image
                    decompresses exactly one chunk), gzip level 4 with the byte-shuffle filter
``names``           ``(N,)`` variable-length UTF-8 strings, contiguous; the image's relative name (the
                    key used to match the file against a dataset; unique)
root attributes     ``kind`` (``"depth"`` | ``"pseudo_labels"``), ``height``, ``width`` (int),
                    ``complete`` (bool, True once all N items are written), ``json_attrs`` (names of
                    the attributes stored as JSON text; the readers decode them back into dicts)
==================  =====================================================================================

Depth file (:data:`DEPTH_SCHEMA`, ``kind="depth"``)
---------------------------------------------------
==============  =========  =========  ===================================================================
dataset         dtype      shape      meaning
==============  =========  =========  ===================================================================
``inv_depth``   float32    (N, H, W)  CorDA inverse-depth target ``t`` (method.md §2.2): metric depth
                                      ``t = 655.36 / (z + 0.01)``, mono ``raw/256 + 1``; ≥ 1 always and
                                      **exactly 1.0 = invalid** (BerHu compares with ``== 1.0``)
``depth_m``     float16    (N, H, W)  metric depth in metres for diagnostics/plots; NaN = invalid
                                      (float16: ≤ 0.25 m resolution at 500 m, fine for metrics)
``names``       str        (N,)       image names
==============  =========  =========  ===================================================================

Attributes: ``kind="depth"``, ``encoding`` (text of the encoding above), ``min_depth_m``,
``max_depth_m`` (float, the depth range of the producing network / clip range), ``mode``
(``"ground_truth" | "stereo" | "mono" | "mono+stereo" | "files"``: released depth, corda.data.depth_files), ``model_hash`` (hash of the depth network
checkpoint, ``""`` for ground truth), ``domain`` (e.g. ``"cityscapes"``), ``height``, ``width``.

Pseudo-label file (:data:`PSEUDO_SCHEMA`, ``kind="pseudo_labels"``)
-------------------------------------------------------------------
================  =======  =========  ===================================================================
dataset           dtype    shape      meaning
================  =======  =========  ===================================================================
``label``         uint8    (N, H, W)  teacher argmax, trainIds in ``[0, len(class_names))``; 255 = ignore
``confidence``    float16  (N, H, W)  teacher softmax max ``q_max`` in [0, 1] (method.md §3.2)
``depth_weight``  float16  (N, H, W)  depth-discrepancy weight ω in [0.001, 1] (method.md §4); 1 where
                                      the depth target is invalid
``weight``        float16  (N, H, W)  the final per-pixel weight self-training multiplies the CE with
                                      (≥ 0; how it is built from the others is the ``weight_rule``)
``names``         str      (N,)       image names
================  =======  =========  ===================================================================

Attributes: ``kind="pseudo_labels"``, ``class_names`` (list of str), ``threshold`` (float, the
confidence threshold 0.968 of §3.3), ``checkpoint_hash`` (hash of the model that produced them),
``params`` (dict, stored as JSON: the stage's parameters), ``weight_rule`` (text, e.g.
``"q * omega / mean(omega)"``), ``height``, ``width``.

Reading
-------
:func:`open_h5` validates a file (exists, is HDF5, not truncated, ``complete``, right ``kind``) and
raises :class:`corda.errors.DataError` telling the user which ``dvc repro`` re-creates it.
:class:`DepthH5` and :class:`PseudoLabelH5` are random-access readers for datasets: they validate the
schema eagerly, then open the file lazily once per process, so they pickle and work inside DataLoader
workers. Arrays are returned in their stored dtypes (cast at the call site).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import h5py
import numpy as np

from corda.data.codecs import INVALID
from corda.errors import CordaError, DataError

log = logging.getLogger(__name__)

#: Root attribute listing the attributes stored as JSON text (dicts).
JSON_ATTRS_KEY = "json_attrs"
DEPTH_MODES = ("ground_truth", "stereo", "mono", "mono+stereo", "files")
DEPTH_ENCODING = (
    "inv_depth t = 655.36/(z+0.01) for metric depth z in metres (mono: raw/256+1, not metric); "
    "t >= 1 and t == 1.0 = invalid. depth_m: metres, NaN = invalid"
)
_NAMES = "names"


@dataclass(frozen=True)
class H5Schema:
    """What a file of one ``kind`` holds: per-image datasets (dtype), required attributes, producing stage."""

    kind: str
    datasets: Mapping[str, np.dtype]
    required_attrs: tuple[str, ...]
    stage: str


DEPTH_SCHEMA = H5Schema(
    kind="depth",
    datasets={"inv_depth": np.dtype(np.float32), "depth_m": np.dtype(np.float16)},
    required_attrs=(
        "encoding", "min_depth_m", "max_depth_m", "mode", "model_hash", "domain", "height", "width",
    ),
    stage="depth_maps",
)

PSEUDO_SCHEMA = H5Schema(
    kind="pseudo_labels",
    datasets={
        "label": np.dtype(np.uint8),
        "confidence": np.dtype(np.float16),
        "depth_weight": np.dtype(np.float16),
        "weight": np.dtype(np.float16),
    },
    required_attrs=(
        "class_names", "threshold", "checkpoint_hash", "params", "weight_rule", "height", "width",
    ),
    stage="pseudo_labels",
)

_SCHEMAS = {s.kind: s for s in (DEPTH_SCHEMA, PSEUDO_SCHEMA)}


# ---------------------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------------------

def _encode_attr(key: str, value: Any) -> tuple[Any, bool]:
    """An attribute value h5py can store, and whether it was JSON-encoded (dicts)."""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True), True
    if isinstance(value, os.PathLike):
        return os.fspath(value), False
    if isinstance(value, (str, bool, int, float, np.generic, np.ndarray)):
        return value, False
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (Mapping, list, tuple)) for v in value):
            return json.dumps(list(value), sort_keys=True), True  # nested → JSON, decoded back on read
        return (list(value) if value else np.zeros(0, dtype=np.float64)), False
    raise TypeError(
        f"attribute {key!r}: unsupported type {type(value).__name__} (use str, number, list or dict)"
    )


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_decode_attr(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(h5: h5py.File) -> dict[str, Any]:
    """The root attributes as plain Python values (lists, str, numbers; JSON attributes decoded to dicts)."""
    raw = {k: _decode_attr(v) for k, v in h5.attrs.items()}
    json_keys = raw.pop(JSON_ATTRS_KEY, [])
    if isinstance(json_keys, str):
        json_keys = [json_keys]
    for k in json_keys:
        if k in raw:
            raw[k] = json.loads(raw[k])
    return dict(sorted(raw.items()))


# ---------------------------------------------------------------------------------------------------------
# Streaming writer
# ---------------------------------------------------------------------------------------------------------

class H5StreamWriter:
    """Write ``n`` items, one row of every dataset at a time, into a fresh HDF5 file; atomic on success.

    Use as a context manager::

        with H5StreamWriter(path, n, {"label": ((H, W), np.uint8)}, {"kind": "pseudo_labels"}) as w:
            for name, lab in items:
                w.append(name, label=lab)

    Args:
        path: destination file. The data goes to ``.<name>.tmp`` beside it until the block succeeds.
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
        self.tmp_path = self.path.parent / f".{self.path.name}.tmp"
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            os.replace(self.tmp_path, self.path)
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


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------
# Depth maps
# ---------------------------------------------------------------------------------------------------------

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


def _chain(first: tuple | None, rest: Iterator[tuple]) -> Iterator[tuple]:
    if first is not None:
        yield first
    yield from rest


class DepthH5(_SchemaReader):
    """Reader of a depth file (:data:`DEPTH_SCHEMA`); pickle-safe, one lazy handle per process."""

    schema = DEPTH_SCHEMA

    def inv_depth(self, i: int) -> np.ndarray:
        """(H, W) float32 CorDA inverse depth of item ``i`` (1.0 = invalid)."""
        return self._row("inv_depth", i)

    def depth_m(self, i: int) -> np.ndarray:
        """(H, W) float16 metric depth of item ``i`` in metres (NaN = invalid)."""
        return self._row("depth_m", i)


# ---------------------------------------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------------------------------------

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
