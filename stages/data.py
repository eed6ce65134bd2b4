"""Stage `data`: render the embedded procedural benchmark, or check and index real datasets.

Outputs: ``data/benchmark/`` (the rendered datasets; empty with real data) and
``data/manifest.json`` (file lists and counts of source train, target train and target val) that
every later stage depends on, so a multi-GB real dataset is never hashed per stage.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import typer

from corda.config import field, to_dict
from corda.data.procedural.benchmark import BenchmarkConfig
from corda.params import load_params, section
from stages.common import stage_main

log = logging.getLogger("stages.data")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

BENCHMARK_DIR = Path("data/benchmark")
MANIFEST = Path("data/manifest.json")


@dataclasses.dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: Literal["procedural", "synthia", "gta5"] = "procedural"
    root: str = "data/benchmark/source"  # the dataset root for real data


@dataclasses.dataclass(frozen=True, slots=True)
class TargetSpec:
    kind: Literal["procedural", "cityscapes"] = "procedural"
    root: str = "data/benchmark/target"


@dataclasses.dataclass(frozen=True, slots=True)
class DataConfig:
    # Every item is drawn from its own seeded generator, so the process count changes no file (run.data).
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("workers",)

    seed: int = field(0, min=0)
    workers: int = field(2, min=1)  # rendering processes
    validate_items: int = field(50, min=0)  # real data: open this many items per split to check formats
    source: SourceSpec = SourceSpec()
    target: TargetSpec = TargetSpec()
    procedural: BenchmarkConfig = BenchmarkConfig()


def build_manifest(cfg: DataConfig, roots: dict[str, Path] | None = None) -> dict:
    """Scan, check every file's header, and spot-check (decode) the three splits; returns the manifest dict.

    ``roots`` maps the configured roots to where the files are now (the data stage renders the
    procedural benchmark into a staging folder); the manifest records the configured roots.
    Raises one DataError listing every bad file (:mod:`corda.data.check`).
    """
    from corda.data.check import bad_files_message, check_index_files
    from corda.data.datasets import validate_index
    from corda.data.index import resolved_note, scan_dataset
    from corda.errors import DataError

    roots = roots or {}
    splits = {
        "source": (cfg.source.kind if cfg.source.kind != "procedural" else "synthia", cfg.source.root, "train"),
        "target_train": (cfg.target.kind if cfg.target.kind != "procedural" else "cityscapes", cfg.target.root, "train"),
        "target_val": (cfg.target.kind if cfg.target.kind != "procedural" else "cityscapes", cfg.target.root, "val"),
    }
    manifest: dict = {"source_kind": cfg.source.kind, "target_kind": cfg.target.kind, "splits": {}}
    indexes = {}
    for name, (kind, root, split) in splits.items():
        indexes[name] = scan_dataset(kind, roots.get(root, Path(root)), split)
    # Every file of every split, headers only (fast); then a full decode of the first items.
    start, problems, checked = time.perf_counter(), [], 0
    for index in indexes.values():
        problems += check_index_files(index.root, index.paths)
        checked += sum(len(v) for v in index.paths.values())
    log.info("checked the headers of %d files in %.2f s", checked, time.perf_counter() - start)
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


def _staged_root(root: str, staged_benchmark: Path) -> Path:
    """Where a procedural root is rendered: inside the staging copy of data/benchmark when it lies below it."""
    try:
        return staged_benchmark / Path(root).relative_to(BENCHMARK_DIR)
    except ValueError:
        return Path(root)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file holding the `data` section")] = Path("params.yaml"),
) -> None:
    """Render the procedural benchmark (data.*.kind = procedural) or index real GTA5/SYNTHIA/Cityscapes folders.

    Writes data/benchmark/ and data/manifest.json.
    """
    from corda.io import staged_outputs, write_json
    from corda.log import progress

    cfg = section(load_params(params), "data", DataConfig)
    procedural = cfg.source.kind == "procedural" or cfg.target.kind == "procedural"
    if (cfg.source.kind == "procedural") != (cfg.target.kind == "procedural"):
        from corda.errors import ConfigError

        # The rendered benchmark has its own ten classes and its own camera and scale; paired with a real
        # dataset, no class set would be shared and the gap measured would not be the paper's (README).
        raise ConfigError("data.source.kind/data.target.kind: procedural source and target go together (the "
                          "rendered benchmark's ten classes match no real dataset's); set both to procedural "
                          "or both to real datasets")
    if not procedural:  # check the real datasets before anything is written
        manifest = build_manifest(cfg)
    # Rendered into a staging folder and swapped in when complete: a failure keeps the last good outputs.
    with staged_outputs(BENCHMARK_DIR, MANIFEST) as staged:
        bench = staged[BENCHMARK_DIR]
        bench.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if procedural:
            from corda.data.procedural.benchmark import render_benchmark

            roots = {r: _staged_root(r, bench) for r in (cfg.source.root, cfg.target.root)}
            counts = render_benchmark(cfg.procedural, cfg.seed, roots[cfg.source.root], roots[cfg.target.root],
                                      workers=cfg.workers, progress=progress)
            log.info("rendered %s in %.1f s", counts, time.perf_counter() - start)
            manifest = build_manifest(cfg, roots)
        else:
            (bench / "README.txt").write_text("Real datasets are used; see data/manifest.json.\n")
        write_json(staged[MANIFEST], manifest)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="data")
    for col in ("split", "kind", "items", "root"):
        table.add_column(col)
    for name, idx in manifest["splits"].items():
        table.add_row(name, idx["kind"], str(len(idx["names"])), idx["root"])
    Console(stderr=True).print(table)


if __name__ == "__main__":
    app()
