"""Glue shared by the stage entry points: params loading, logging, errors, output hygiene."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import yaml

from corda.config import from_mapping, run_keys
from corda.errors import ConfigError, CordaError

T = TypeVar("T")
PARAMS = "params.yaml"
RUN = "run"  # the params section of operational knobs (see section())
log = logging.getLogger("stages")


def load_params(path: str | os.PathLike = PARAMS) -> dict:
    """The whole params file as a dict (a clear error if it is missing or not YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root or pass --params")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def section(params: dict, name: str, cls: type[T]) -> T:
    """Validate one params section into its typed config dataclass.

    The config's operational fields (:func:`corda.config.run_keys`) are read from ``run.<name>`` instead:
    that section decides how a run is carried out, not its result, and no stage declares it to DVC.
    """
    if name not in params:
        raise ConfigError(f"{name}: section missing from params.yaml")
    data = params[name] if params[name] is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {data!r}")
    operational = run_keys(cls)
    for k in data:
        if k in operational:
            raise ConfigError(f"{name}.{k}: changes no result, so it belongs in {RUN}.{name}.{k} (not a DVC "
                              "param: changing it re-runs nothing); move it there")
    run = run_section(params, name)
    for k in run:
        if k not in operational:
            hint = f"one that can change a result belongs in {name}.{k}" if k in _field_names(cls) else "unknown key"
            raise ConfigError(f"{RUN}.{name}.{k}: not an operational key of {name} "
                              f"(those are: {', '.join(operational) or 'none'}); {hint}")
    return from_mapping(cls, {**data, **run}, name, keys={k: f"{RUN}.{name}.{k}" for k in operational})


def run_section(params: dict, name: str) -> dict:
    """``run.<name>`` of the params file (empty when absent)."""
    run = params.get(RUN)
    if run is None:
        return {}
    if not isinstance(run, dict):
        raise ConfigError(f"{RUN}: expected a mapping of sections, got {run!r}")
    sub = run.get(name)
    if sub is None:
        return {}
    if not isinstance(sub, dict):
        raise ConfigError(f"{RUN}.{name}: expected a mapping, got {sub!r}")
    return sub


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def remove_outputs(*paths: str | os.PathLike) -> None:
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def outputs(*paths: str | os.PathLike) -> Iterator[None]:
    """Remove the declared outputs if the stage fails, so DVC never records a half-written stage."""
    try:
        yield
    except BaseException:
        remove_outputs(*paths)
        raise


def stage_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a typer command: logging set-up; a CordaError becomes a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from corda.log import setup_logging

        setup_logging(os.environ.get("CORDA_LOG_LEVEL", "INFO"))
        try:
            return fn(*args, **kwargs)
        except CordaError as exc:
            # One line whatever the message holds (a wrapped torch error can span many).
            print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
