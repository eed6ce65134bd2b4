"""Root attributes: scalars, strings and lists as HDF5 attributes, dicts as JSON text."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import h5py
import numpy as np

from corda.h5io.schema import JSON_ATTRS_KEY

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
