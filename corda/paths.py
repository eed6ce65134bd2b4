"""Where each pipeline artefact lives, relative to the repository root: the one spelling of every path.

The stages take these as their option defaults and write their outputs there; dvc.yaml declares the same
paths as deps, outs, metrics and plots (tests/test_paths.py ties the two, so neither side changes alone).
The library's own defaults (:data:`corda.rcs.STATS_PATH`, :func:`corda.depth.checkpoint.depth_checkpoint_path`'s
folder) are these constants too.

A leaf module: it imports nothing from the package, so any module may take its paths from here.
"""

from __future__ import annotations

import os
from pathlib import Path

# -- data -----------------------------------------------------------------------------------------
#: The rendered procedural benchmark (``data`` stage; a README only, with real datasets).
BENCHMARK_DIR = Path("data/benchmark")
#: The dataset indexes every later stage reads (:mod:`corda.data.manifest`).
MANIFEST = Path("data/manifest.json")
#: Rare-class sampling statistics (``rcs`` stage, :mod:`corda.rcs`).
RCS_STATS = Path("data/rcs_class_stats.json")

# -- depth ----------------------------------------------------------------------------------------
#: The depth networks, ``<domain>.pt`` (``depth_pretrain``, :mod:`corda.depth.checkpoint`).
DEPTH_MODELS_DIR = Path("models/depth")
#: The depth targets, ``target.h5`` and ``source.h5`` or the record ``source.json`` (``depth_maps``, :mod:`corda.h5io`).
DEPTH_DIR = Path("depth")

# -- segmentation ---------------------------------------------------------------------------------
#: The trained segmentation models, ``<model>.pt`` (:mod:`corda.seg.model_file`).
MODELS_DIR = Path("models")
#: The round-1 CorDA model's pseudo-labels on target train (``pseudo_labels``, :mod:`corda.h5io`).
PSEUDO_LABELS = Path("pseudo/target.h5")

# -- metrics and plots (:mod:`corda.eval_files`) --------------------------------------------------
#: The depth network's numbers on target val (``depth_maps``).
DEPTH_METRICS = Path("metrics/depth.json")
#: The pseudo-labels' numbers against the target train labels (``pseudo_labels``).
PSEUDO_METRICS = Path("metrics/pseudo_labels.json")
#: Pseudo-label accuracy against each signal (``pseudo_labels``): the DVC plot data and its PNG.
PSEUDO_PLOT_JSON = Path("plots/pseudo_label_accuracy.json")
PSEUDO_PLOT_PNG = Path("plots/pseudo_label_accuracy.png")
#: The headline numbers, one file per row (the pipeline's only DVC metrics), and their ``<model>_adabn`` rows.
HEADLINE_DIR = Path("metrics/top")
ADABN_DIR = Path("metrics/adabn")
#: Per-class IoU and pixel accuracy of every model (``evaluate``).
EVAL_METRICS = Path("metrics/eval.json")
#: The paper-style tables the README embeds (``evaluate``).
RESULTS_TABLE = Path("metrics/results.md")
#: The evaluate stage's plot data (``*.json``) and PNG renderings.
EVAL_DIR = Path("eval")
#: dvclive's folders, one per training run (``train_<method>``, ``self_train``, ``depth_pretrain``).
DVCLIVE_DIR = Path("dvclive")
#: Resumable scratch checkpoints, one folder per run (git- and DVC-ignored).
CHECKPOINTS_DIR = Path("checkpoints")


def model_file(name: str, folder: str | os.PathLike = MODELS_DIR) -> Path:
    """``models/<name>.pt``: a trained segmentation model (``source_only``, ``dacs``, ``corda``, ...), in
    ``folder`` when the models folder is elsewhere."""
    return Path(folder) / f"{name}.pt"


def depth_h5(domain: str, folder: str | os.PathLike = DEPTH_DIR) -> Path:
    """``depth/<domain>.h5``: the depth targets of ``source`` or ``target``, in ``folder`` when the depth folder
    is elsewhere."""
    return Path(folder) / f"{domain}.h5"


def source_depth_record(folder: str | os.PathLike = DEPTH_DIR) -> Path:
    """``depth/source.json``: written by ``depth_maps`` in place of ``source.h5`` when training reads the source
    dataset's own ground-truth depth where it lies."""
    return Path(folder) / "source.json"


def live_dir(run: str) -> Path:
    """``dvclive/<run>``: a training run's curves."""
    return DVCLIVE_DIR / run


def scratch_file(run: str) -> Path:
    """``checkpoints/<run>/last.pt``: a training run's resumable state."""
    return CHECKPOINTS_DIR / run / "last.pt"
