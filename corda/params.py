"""params.yaml as typed configs: the file's sections (one per stage that reads one, and ``run``), loaded and
validated into the config dataclasses of :mod:`corda.seg.config`, :mod:`corda.depth.config` and
:mod:`corda.data.config`.

The only module of the library that knows the file's layout; the stages and benchmarks load their sections
through it (the library functions themselves take configs, never the file).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TypeVar

import yaml

from corda.config import from_mapping, nearest_name_hint, run_keys
from corda.errors import ConfigError, DataError

T = TypeVar("T")
PARAMS = Path("params.yaml")
RUN = "run"  # the params section of operational knobs (see section())
# The params.yaml sections, one per stage that reads one (dvc.yaml), and ``run``; any other top-level key is
# a typo.
SECTIONS = ("data", "depth", "model", "train", "pseudo_labels", "self_train", "evaluate", RUN)


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
