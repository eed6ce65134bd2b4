"""Stage `rcs`: the source label statistics of rare-class sampling (DAFormer §3.3), a cached DVC artefact.

Reads every source label of the data stage's manifest once (at its stored resolution, as DAFormer's dataset
converters count) and writes ``data/rcs_class_stats.json`` (:mod:`corda.rcs`): per image the pixel count of
each class, plus the per-class frequencies and, per class, the images with more than ``train.rcs_min_pixels``
of it. Training reads it only when ``train.rcs_temperature`` is set; it is cheap (one pass over the label
files, about a second on the embedded benchmark), so it runs in every ``dvc repro``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from corda.params import load_params
from corda import paths
from stages.common import stage_main

log = logging.getLogger("stages.rcs")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (train.rcs_min_pixels)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    out: Annotated[Path, typer.Option(help="the statistics file to write")] = paths.RCS_STATS,
) -> None:
    """Count the source labels' class pixels per image; writes data/rcs_class_stats.json."""
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import load_splits
    from corda.labels import NUM_CLASSES
    from corda.rcs import compute_class_stats, write_class_stats
    from corda.seg.config import TrainConfig
    from corda.params import check_data_kinds, section

    p = load_params(params)
    recipe = section(p, "train", TrainConfig)
    check_data_kinds(p, manifest)
    src = SegDepthDataset(load_splits(manifest)["source"], ("label",), None, None)
    stats = compute_class_stats(((src.names[i], src.load_raw(i)["label"]) for i in range(len(src))), NUM_CLASSES)
    write_class_stats(out, stats, min_pixels=recipe.rcs_min_pixels)
    held = int((stats.counts > recipe.rcs_min_pixels).any(axis=0).sum())
    log.info("rcs: %d source labels, %d classes present, %d with an image of > %d pixels -> %s", len(src),
             int((stats.counts.sum(axis=0) > 0).sum()), held, recipe.rcs_min_pixels, out)


if __name__ == "__main__":
    app()
