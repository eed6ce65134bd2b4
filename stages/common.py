"""Glue shared by the stage entry points: params loading, logging, errors, output hygiene.

Stages write their declared outputs through :func:`corda.io.staged_outputs`: a failed or interrupted
run (an error, Ctrl-C) leaves the previous outputs untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from corda.config import from_mapping, nearest_name_hint, run_keys
from corda.errors import ConfigError, CordaError, DataError, interrupted_message, one_line
from corda.io import remove_outputs  # noqa: F401  (re-exported for the stages)

T = TypeVar("T")
PARAMS = "params.yaml"
RUN = "run"  # the params section of operational knobs (see section())
# The params.yaml sections, one per stage that reads one (dvc.yaml), and ``run``; any other top-level key is
# a typo.
SECTIONS = ("data", "depth", "model", "train", "pseudo_labels", "self_train", "evaluate", RUN)
log = logging.getLogger("stages")


def _flags_take_no_value() -> None:
    """typer's help shows a type for every option, ``--overwrite <bool>`` too, as if a flag took a value.

    Show none for flags (boolean options and --help), and keep typer's display for everything else.
    """
    from typer.core import TyperOption

    show = TyperOption.display_type_rich
    if getattr(show, "_corda_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if getattr(self, "is_flag", False) else show(self, ctx)

    display_type_rich._corda_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


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

    A top-level key that is no section (``trian:``) is reported as such, with the nearest section name,
    before a section is reported missing. The config's operational fields (:func:`corda.config.run_keys`)
    are read from ``run.<name>`` instead: that section decides how a run is carried out, not its result, and
    no stage declares it to DVC.
    """
    unknown = sorted(str(k) for k in params if k not in SECTIONS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section in params.yaml; "
                          f"{nearest_name_hint(unknown[0], SECTIONS, 'sections')}")
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


def check_data_kinds(params: dict, manifest: str | os.PathLike) -> None:
    """The manifest was made from the datasets params.yaml names (``data.source.kind``, ``data.target.kind``).

    After a preset is copied over params.yaml (params/*.yaml), the procedural manifest stays until the data
    stage runs again; every later stage would then quietly train on the benchmark with the preset's settings.
    A missing manifest says how to make it (corda.data.manifest.load_manifest).
    """
    from corda.data.manifest import load_manifest

    path = Path(manifest)

    m = load_manifest(path)
    data = params.get("data") or {}
    for side in ("source", "target"):
        want = (data.get(side) or {}).get("kind")
        have = m.get(f"{side}_kind", "procedural")
        if want is not None and want != have:
            raise DataError(f"{path}: made from {side} kind {have!r} but params.yaml has data.{side}.kind "
                            f"{want!r}; run the data stage for these params: `dvc repro data`")


def stage_configs(params: str | os.PathLike, manifest: str | os.PathLike, **sections: type) -> tuple[Any, ...]:
    """The prologue of a stage that reads the data stage's output: its params sections as typed configs (in the
    order given, ``name=ConfigClass``), after checking that the manifest was made for these params."""
    p = load_params(params)
    configs = tuple(section(p, name, cls) for name, cls in sections.items())
    check_data_kinds(p, manifest)
    return configs


def finish_training(trainer: Any, out_live: str | os.PathLike, save: Callable[[], None]) -> None:
    """Rank 0's tail of a training stage: write the model (``save``), the dvclive curves from the trainer's
    history (:meth:`corda.engine.Trainer.write_curves`), and remove the scratch checkpoint."""
    save()
    trainer.write_curves(out_live)
    trainer.discard_scratch()


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
            print("error: " + interrupted_message(), file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
