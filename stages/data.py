"""Stage `data`: render the embedded procedural benchmark, or check and index real datasets.

Outputs: ``data/benchmark/`` (the rendered datasets; empty with real data) and
``data/manifest.json`` (file lists and counts of source train, target train and target val) that
every later stage depends on, so a multi-GB real dataset is never hashed per stage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from corda.data.config import DataConfig, check_kinds
from corda.params import load_params, section
from stages.common import stage_main

log = logging.getLogger("stages.data")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


def _staged_root(root: str, staged_benchmark: Path) -> Path:
    """Where a procedural root is rendered: inside the staging copy of data/benchmark when it lies below it."""
    try:
        return staged_benchmark / Path(root).relative_to(paths.BENCHMARK_DIR)
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
    from corda.data.build import build_manifest
    from corda.io import staged_outputs, write_json
    from corda.log import progress

    cfg = section(load_params(params), "data", DataConfig)
    check_kinds(cfg)
    procedural = cfg.source.kind == "procedural"
    if not procedural:  # check the real datasets before anything is written
        manifest = build_manifest(cfg)
    # Rendered into a staging folder and swapped in when complete: a failure keeps the last good outputs.
    with staged_outputs(paths.BENCHMARK_DIR, paths.MANIFEST) as staged:
        bench = staged[paths.BENCHMARK_DIR]
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
        write_json(staged[paths.MANIFEST], manifest)
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
