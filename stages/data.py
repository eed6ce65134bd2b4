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
from corda.data.benchmark import BenchmarkConfig
from stages.common import load_params, outputs, section, stage_main

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


def build_manifest(cfg: DataConfig) -> dict:
    """Scan (and spot-check) the three splits the pipeline uses; returns the manifest dict."""
    from corda.data.datasets import scan_dataset, validate_index

    splits = {
        "source": (cfg.source.kind if cfg.source.kind != "procedural" else "synthia", cfg.source.root, "train"),
        "target_train": (cfg.target.kind if cfg.target.kind != "procedural" else "cityscapes", cfg.target.root, "train"),
        "target_val": (cfg.target.kind if cfg.target.kind != "procedural" else "cityscapes", cfg.target.root, "val"),
    }
    manifest: dict = {"source_kind": cfg.source.kind, "target_kind": cfg.target.kind, "splits": {}}
    for name, (kind, root, split) in splits.items():
        index = scan_dataset(kind, Path(root), split)
        validate_index(index, max_items=cfg.validate_items or None)
        manifest["splits"][name] = index.to_json()
        log.info("%-12s %-10s %5d items  (%s)", name, kind, len(index.names), root)
    if cfg.source.kind == "procedural":
        manifest["procedural"] = to_dict(cfg.procedural)
    return manifest


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file holding the `data` section")] = Path("params.yaml"),
) -> None:
    """Render the procedural benchmark (data.*.kind = procedural) or index real GTA5/SYNTHIA/Cityscapes folders.

    Writes data/benchmark/ and data/manifest.json.
    """
    from corda.io import write_json
    from corda.log import progress

    cfg = section(load_params(params), "data", DataConfig)
    procedural = cfg.source.kind == "procedural" or cfg.target.kind == "procedural"
    if (cfg.source.kind == "procedural") != (cfg.target.kind == "procedural"):
        from corda.errors import ConfigError

        raise ConfigError("data.source.kind/data.target.kind: procedural source and target go together; "
                          "set both to procedural or both to real datasets")
    with outputs(BENCHMARK_DIR, MANIFEST):
        BENCHMARK_DIR.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if procedural:
            from corda.data.benchmark import render_benchmark

            counts = render_benchmark(cfg.procedural, cfg.seed, Path(cfg.source.root), Path(cfg.target.root),
                                      workers=cfg.workers, progress=progress)
            log.info("rendered %s in %.1f s", counts, time.perf_counter() - start)
        else:
            (BENCHMARK_DIR / "README.txt").write_text("Real datasets are used; see data/manifest.json.\n")
        manifest = build_manifest(cfg)
        write_json(MANIFEST, manifest)
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
