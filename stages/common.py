"""Glue shared by the stage entry points: params loading, logging, errors, output hygiene.

Stages write their declared outputs through :func:`corda.io.staged_outputs`: a failed or interrupted
run (an error, Ctrl-C) leaves the previous outputs untouched.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from corda.config import from_mapping
from corda.errors import ConfigError, CordaError, one_line

T = TypeVar("T")
PARAMS = "params.yaml"
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
    """Validate one params section into its typed config dataclass."""
    if name not in params:
        raise ConfigError(f"{name}: section missing from params.yaml")
    return from_mapping(cls, params[name], name)


def remove_outputs(*paths: str | os.PathLike) -> None:
    """Remove temporaries (e.g. per-rank part files); never used on a stage's previous outputs."""
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)


def stage_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a typer command: logging set-up; a CordaError becomes a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from corda.log import setup_logging

        setup_logging(os.environ.get("CORDA_LOG_LEVEL", "INFO"))
        try:
            return fn(*args, **kwargs)
        except CordaError as exc:
            # One line whatever the message holds (a wrapped torch error can span many; a DataLoader
            # worker's error is unwrapped to the line the main process would have printed).
            print("error: " + one_line(exc), file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: interrupted; the previous outputs of this stage are unchanged (re-run it to "
                  "finish)", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
