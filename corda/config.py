"""Typed, validated configuration.

Every params.yaml section maps onto a frozen dataclass. :func:`from_mapping` builds one from a
plain dict and rejects unknown keys, missing keys, wrong types and out-of-range values with an
error that names the full dotted key (``train.lambda_depth``), so that a typo in params.yaml or in
``dvc exp run -S`` never silently falls back to a default.

Range constraints live in field metadata: ``field(default=..., metadata={"min": 0})``; ``"gt"``,
``"max"`` and ``"choices"`` work the same way. ``typing.Literal`` fields accept only their values.
``field(..., internal=True)`` marks a field the code sets (not a params key): it is neither accepted
from params nor listed among the known keys. An unknown key names its nearest known key
(``train.lamda_depth: unknown key; did you mean lambda_depth?``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from corda.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and lightly coerce: int→float, list→tuple) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            out = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _check_range(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        if "min" in meta and v < meta["min"]:
            raise ConfigError(f"{key}: {v!r} is below the minimum {meta['min']}")
        if "gt" in meta and not v > meta["gt"]:
            raise ConfigError(f"{key}: {v!r} must be greater than {meta['gt']}")
        if "max" in meta and v > meta["max"]:
            raise ConfigError(f"{key}: {v!r} is above the maximum {meta['max']}")


def from_mapping(cls: type[T], data: typing.Mapping[str, Any] | None, prefix: str,
                 keys: typing.Mapping[str, str] | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; every problem raises :class:`ConfigError` naming the key.

    Args:
        cls: a dataclass type whose fields are annotated with simple types, Literal, Optional,
            tuple/list or nested dataclasses.
        data: the params section as loaded from YAML.
        prefix: the dotted name of the section (``"train"``), used in error messages.
        keys: the dotted name of fields that come from elsewhere (``{"log_every": "run.train.log_every"}``,
            see :func:`run_keys`), for the error messages.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hint = _unknown_key_hint(str(unknown[0]), fields, keys or {})
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; {hint}")
    kwargs = {}
    for name, f in fields.items():
        key = (keys or {}).get(name) or f"{prefix}.{name}"
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
            _check_range(kwargs[name], f.metadata, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing required key")
    return cls(**kwargs)


def _unknown_key_hint(name: str, fields: typing.Iterable[str], elsewhere: typing.Mapping[str, str]) -> str:
    """The nearest field, named where it is set (``run.train.log_every`` for a field set elsewhere); else the keys
    that the section itself takes (not those set elsewhere, which the section would reject)."""
    near = difflib.get_close_matches(name, sorted(fields), n=1, cutoff=0.6)
    if near:
        return f"did you mean {elsewhere.get(near[0], near[0])}?"
    return nearest_name_hint(name, [f for f in fields if f not in elsewhere], "keys")


def nearest_name_hint(name: str, known: typing.Iterable[str], what: str) -> str:
    """``did you mean lambda_depth?`` (the nearest of ``known``), else ``known <what>: a, b, c``."""
    known = sorted(known)
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if near:
        return f"did you mean {near[0]}?"
    return f"known {what}: {', '.join(known)}"


def run_keys(cls: type) -> tuple[str, ...]:
    """The operational fields of config ``cls``: how a run is carried out (logging cadence, worker processes,
    device), never what it computes. params.yaml keeps them in its ``run`` section, which no DVC stage declares
    as a parameter, so changing one re-runs nothing. A config lists them in a ``RUN_KEYS`` class attribute."""
    return tuple(getattr(cls, "RUN_KEYS", ()))


def per_process_batch(global_batch: int, world: int, name: str, devices_key: str = "train.devices") -> int:
    """Images per process of ``global_batch`` split over ``world`` processes; ``name`` (the batch) and
    ``devices_key`` are the params keys named in the error when ``world`` does not divide the batch."""
    if global_batch % world:
        raise ConfigError(f"{name}: {global_batch} is a global batch and must be divisible by {devices_key}={world} "
                          f"(the number of processes); make it a multiple of {devices_key}")
    return global_batch // world


def to_dict(cfg: Any) -> dict:
    """A plain (YAML/JSON-serialisable) dict of a config dataclass, tuples as lists."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def field(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with range metadata: ``field(0.01, min=0)``; lists/dataclasses via factory."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: _copy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(d: Any) -> Any:
    return dataclasses.replace(d) if dataclasses.is_dataclass(d) else type(d)(d)
