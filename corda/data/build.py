"""Building the data stage's manifest (``data/manifest.json``, read by :mod:`corda.data.manifest`).

:func:`build_manifest` scans the three splits (source train, target train, target val) of the datasets a
:class:`~corda.data.config.DataConfig` names, checks every file's header (:mod:`corda.data.check`, in
up to ``run.data.workers`` processes), decodes the first ``data.validate_items`` items of each split
in full, and returns the manifest as a dict:

* ``source_kind``, ``target_kind``: the configured kinds (``procedural``, ``synthia``, ``gta5``, ``cityscapes``);
* ``splits``: ``{source, target_train, target_val}`` → :meth:`corda.data.index.DatasetIndex.to_json`, with the
  configured root;
* ``procedural``: the benchmark's config (:class:`~corda.data.procedural.benchmark.BenchmarkConfig`), when it
  is rendered.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from corda.config import to_dict
from corda.data.config import DataConfig

log = logging.getLogger(__name__)


def manifest_splits(cfg: DataConfig) -> dict[str, tuple[str, str, str]]:
    """``{split name: (dataset kind, root, dataset split)}``; the procedural benchmark is written in the
    SYNTHIA (source) and Cityscapes (target) layouts."""
    source = cfg.source.kind if cfg.source.kind != "procedural" else "synthia"
    target = cfg.target.kind if cfg.target.kind != "procedural" else "cityscapes"
    return {"source": (source, cfg.source.root, "train"), "target_train": (target, cfg.target.root, "train"),
            "target_val": (target, cfg.target.root, "val")}


def build_manifest(cfg: DataConfig, roots: dict[str, Path] | None = None) -> dict:
    """Scan, check every file's header, and spot-check (decode) the three splits; returns the manifest dict.

    ``roots`` maps the configured roots to where the files are now (the data stage renders the
    procedural benchmark into a staging folder); the manifest records the configured roots. The manifest is
    the same for every ``cfg.workers``.
    Raises one DataError listing every bad file (:mod:`corda.data.check`).
    """
    from corda.data.check import bad_files_message, check_items, check_processes, index_items
    from corda.data.datasets import validate_index
    from corda.data.index import resolved_note, scan_dataset
    from corda.errors import DataError

    roots = roots or {}
    splits = manifest_splits(cfg)
    manifest: dict = {"source_kind": cfg.source.kind, "target_kind": cfg.target.kind, "splits": {}}
    indexes = {name: scan_dataset(kind, roots.get(root, Path(root)), split)
               for name, (kind, root, split) in splits.items()}
    # Every file of every split, headers only (fast); then a full decode of the first items.
    start = time.perf_counter()
    items = [item for index in indexes.values() for item in index_items(index.root, index.paths)]
    processes = check_processes(len(items), cfg.workers)
    problems = check_items(items, processes)
    checked = sum(len(item) for item in items)
    log.info("checked the headers of %d files in %.2f s (%d process%s)", checked, time.perf_counter() - start,
             processes, "es" if processes > 1 else "")
    if problems:
        raise DataError(bad_files_message(problems, checked))
    for name, (kind, root, split) in splits.items():
        index = indexes[name]
        validate_index(index, max_items=cfg.validate_items or None)
        index.root = str(root)
        manifest["splits"][name] = index.to_json()
        log.info("%-12s %-10s %5d items in %s%s", name, kind, len(index.names), root, resolved_note(root))
    if cfg.source.kind == "procedural":
        manifest["procedural"] = to_dict(cfg.procedural)
    return manifest
