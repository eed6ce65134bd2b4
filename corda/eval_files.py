"""The evaluate stage's files: what each holds, and the functions that build, write and read them (method.md §6).

Paths are :mod:`corda.paths`' (relative to the repository root). ``results`` below is ``{model: scores}`` with
``scores`` = :func:`model_scores`: ``{"miou", "pixel_acc", "per_class": {class name: IoU}}`` (fractions;
``None`` where undefined), plus ``"miou13"`` with a SYNTHIA source (the paper's mIoU* over 13 classes).
Models come in :data:`MODELS` order, those with a ``models/<model>.pt``.

* ``metrics/eval.json`` (:func:`eval_metrics`): ``{<model>: scores, <model>_adabn: scores}``, the second with
  the model's BatchNorm statistics re-estimated on target train images (:mod:`corda.adabn`; absent when
  ``evaluate.adabn_items`` is 0). Git-tracked, not a DVC metric.
* ``metrics/top/<row>.json`` and ``metrics/adabn/<model>.json`` (:func:`headline_metrics`,
  :func:`headline_path`): the headline numbers, the pipeline's only DVC metrics. One small flat file per row,
  ``{measure: number}``, so that ``dvc metrics show`` prints a row per file over a few shared columns.
  Built from ``results``, the ``adabn`` scores and the detail files of the other stages: ``metrics/depth.json``
  (``depth_maps``: ``{"mode", "source", "target": {"abs_rel", "delta1", ...}, ...}``) and
  ``metrics/pseudo_labels.json`` (``pseudo_labels``: ``{"miou", "per_class", "auroc": {signal: AUROC}, ...}``).
* ``metrics/results.md`` (:func:`results_markdown`): the paper-style IoU tables the README embeds.
* ``eval/per_class_iou.json``, ``eval/confusion.json``, ``eval/val_miou.json`` (:func:`write_plot_data`): the
  records ``dvc plots`` draws (:func:`corda.report.per_class_records`,
  :func:`corda.report.confusion_rates_by_model`, :func:`corda.report.val_miou_records`), beside their PNG
  renderings (``eval/*.png``) and, with ``evaluate.export_label_ids``, ``eval/label_ids/<model>/``.

Readers: :func:`read_eval_metrics`, :func:`read_headline`, :func:`read_detail`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from corda import paths
from corda.io import read_json, write_json, write_text

Results = Mapping[str, Mapping[str, Any]]

#: The models evaluate scores, in the order of every table and file (those with a ``models/<model>.pt``).
MODELS = ("source_only", "dacs", "corda", "corda_round2", "oracle")
#: Key suffix of the scores with target BatchNorm statistics, in ``metrics/eval.json`` and the headline rows.
ADABN_SUFFIX = "_adabn"
#: Pseudo-label signal (``metrics/pseudo_labels.json``'s ``auroc`` keys) → its headline row.
PSEUDO_SIGNAL_ROWS = {"confidence": "pl_confidence", "depth_weight": "pl_omega", "combined": "pl_combined"}


# -- building -------------------------------------------------------------------------------------


def model_scores(cm, class_names: Sequence[str], class_set: Sequence[int], set_name: str) -> dict[str, Any]:
    """One model's ``scores`` from its target-val :class:`corda.metrics.ConfusionMatrix` over ``class_set``
    (named ``set_name``; a ``synthia16`` set adds ``miou13``, §6)."""
    from corda.labels import CLASS_SETS

    scores = cm.to_dict(class_names, class_set)
    if set_name == "synthia16":
        scores["miou13"] = float(cm.miou(CLASS_SETS["synthia13"]))
    return scores


def eval_metrics(results: Results, adabn: Results) -> dict[str, Any]:
    """``metrics/eval.json``: every model's scores, then those with target BN statistics (``<model>_adabn``)."""
    return {**results, **{f"{n}{ADABN_SUFFIX}": r for n, r in adabn.items()}}


def headline_metrics(results: Results, depth: Mapping[str, Any] | None = None,
                     pseudo: Mapping[str, Any] | None = None,
                     adabn: Results | None = None) -> dict[str, dict[str, float]]:
    """The headline numbers as rows: ``{row name: {measure: value}}``, one file each (:func:`headline_path`).

    ``dvc metrics show`` prints a row per metrics file and a column per key over all of them, so the
    rows share four measures and the table stays four (SYNTHIA: five) columns wide:

    * ``<model>``: ``miou``, the model's target-val mIoU (fraction); with a SYNTHIA source also
      ``miou13``, the paper's mIoU* over 13 classes.
    * ``<model>_adabn`` (written to ``metrics/adabn/<model>.json``): the same with the model's BN statistics
      re-estimated on target train images (``adabn``, :mod:`corda.adabn`); empty when the evaluate stage did
      not compute them (``evaluate.adabn_items: 0``).
    * ``depth``: ``abs_rel`` and ``delta1`` of the depth network on target val (``metrics/depth.json``).
    * ``pl_labels``: ``miou`` of the exported pseudo-labels against the target *train* labels (the
      labels' quality, not a model's score).
    * ``pl_confidence``, ``pl_omega`` (ω, ``depth_weight``), ``pl_combined``: ``auroc``, how well that
      per-pixel signal ranks the wrong pseudo-labels below the right ones (``metrics/pseudo_labels.json``).

    Rows come in this order (models in ``results`` order) and every row is present, empty when its
    numbers are missing or undefined, so the files dvc.yaml declares always exist. Only finite
    numbers; strings and details stay in the per-stage files.
    """

    def nums(pairs: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in pairs.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}

    rows = {m: nums({k: r.get(k) for k in ("miou", "miou13")}) for m, r in results.items()}
    rows.update({f"{m}{ADABN_SUFFIX}": nums({k: (adabn or {}).get(m, {}).get(k) for k in ("miou", "miou13")})
                 for m in results})
    target = (depth or {}).get("target") or {}
    rows["depth"] = nums({k: target.get(k) for k in ("abs_rel", "delta1")})
    rows["pl_labels"] = nums({"miou": (pseudo or {}).get("miou")})
    auroc = (pseudo or {}).get("auroc") or {}
    rows.update({row: nums({"auroc": auroc.get(sig)}) for sig, row in PSEUDO_SIGNAL_ROWS.items()})
    return rows


def headline_path(row: str) -> str:
    """The file of a :func:`headline_metrics` row, relative to the repository root (POSIX)."""
    if row.endswith(ADABN_SUFFIX):
        return f"{paths.ADABN_DIR.as_posix()}/{row[:-len(ADABN_SUFFIX)]}.json"
    return f"{paths.HEADLINE_DIR.as_posix()}/{row}.json"


def results_markdown(results: Results, adabn: Results, set_name: str, class_names: Sequence[str],
                     adabn_items: int) -> str:
    """``metrics/results.md``: the IoU table (%) over the ``set_name`` classes, and the AdaBN one when scored."""
    from corda.report import results_table_markdown

    text = f"Target-val IoU (%) over the `{set_name}` class set.\n\n{results_table_markdown(results, class_names)}\n"
    if adabn:
        text += (f"\nThe same models with their BatchNorm statistics re-estimated on {adabn_items} "
                 "unlabelled target train images (AdaBN; no weight changes, see corda/adabn.py):\n\n"
                 + results_table_markdown(adabn, class_names) + "\n")
    return text


# -- writing --------------------------------------------------------------------------------------


def write_headline_metrics(root: str | os.PathLike, rows: Mapping[str, Mapping[str, float]],
                           folders: Mapping[str, str | os.PathLike] | None = None) -> None:
    """Write :func:`headline_metrics`' rows (key-sorted, atomic) to ``<root>/<headline_path(row)>``.

    ``folders`` maps a headline folder (``metrics/top``, ``metrics/adabn``) to where it is written instead (a
    stage's staged output folder)."""
    for name, values in rows.items():
        folder, file = headline_path(name).rsplit("/", 1)
        target = (folders or {}).get(folder, os.path.join(root, folder))
        os.makedirs(target, exist_ok=True)
        write_json(os.path.join(target, file), dict(values))


def write_metrics(out: Mapping[Path, Path], results: Results, adabn: Results, set_name: str,
                  class_names: Sequence[str], adabn_items: int, depth: Mapping[str, Any] | None,
                  pseudo: Mapping[str, Any] | None) -> str:
    """Write ``metrics/eval.json``, the headline rows and ``metrics/results.md``; returns the results table text.

    ``out`` maps each of those paths (:data:`corda.paths.EVAL_METRICS`, ``HEADLINE_DIR``, ``ADABN_DIR``,
    ``RESULTS_TABLE``) to where it is written (a staged output); ``depth`` and ``pseudo`` are the other
    stages' detail files (:func:`read_detail`), ``None`` when absent.
    """
    write_json(out[paths.EVAL_METRICS], eval_metrics(results, adabn))
    folders = {paths.HEADLINE_DIR.as_posix(): out[paths.HEADLINE_DIR], paths.ADABN_DIR.as_posix(): out[paths.ADABN_DIR]}
    write_headline_metrics(".", headline_metrics(results, depth, pseudo, adabn), folders=folders)
    text = results_markdown(results, adabn, set_name, class_names, adabn_items)
    write_text(out[paths.RESULTS_TABLE], text)
    return text


def confusion_shown(matrices: Mapping[str, np.ndarray], class_set: Sequence[int]) -> dict[str, np.ndarray]:
    """The drawn confusion matrices (:data:`corda.report.CONFUSION_MODELS`, else the first model's), cut to
    ``class_set``."""
    from corda.report import CONFUSION_MODELS

    shown = {m: matrices[m] for m in CONFUSION_MODELS if m in matrices} or dict([next(iter(matrices.items()))])
    sub = np.ix_(list(class_set), list(class_set))
    return {m: c[sub] for m, c in shown.items()}


def write_plot_data(eval_dir: Path, results: Results, matrices: Mapping[str, np.ndarray],
                    histories: Mapping[str, Sequence[Mapping[str, float]]], class_set: Sequence[int],
                    class_names: Sequence[str]) -> None:
    """Write ``eval/``'s plot data and its PNG renderings (per-class IoU, confusion, val mIoU, CorDA's losses).

    ``matrices`` are the models' full confusion matrices, ``histories`` their training histories (the model
    file's ``history``), ``class_names`` the names of ``class_set``.
    """
    from corda import report

    eval_dir.mkdir(parents=True, exist_ok=True)
    write_json(eval_dir / "per_class_iou.json", report.per_class_records(results, class_names))
    shown = confusion_shown(matrices, class_set)
    write_json(eval_dir / "confusion.json", report.confusion_rates_by_model(shown, class_names))
    report.plot_per_class_iou(results, class_names, eval_dir / "per_class_iou.png")
    report.plot_confusion(shown, class_names, eval_dir / "confusion.png",
                          title="Confusion matrices on target val (rows: ground truth, normalised)")
    write_json(eval_dir / "val_miou.json", report.val_miou_records(histories))
    report.plot_val_miou(histories, eval_dir / "val_miou.png")
    if "corda" in histories:
        report.plot_loss_terms(histories["corda"], eval_dir / "corda_losses.png", "corda: training loss terms")


# -- reading --------------------------------------------------------------------------------------


def read_detail(path: str | os.PathLike) -> dict | None:
    """A stage's detail metrics file (``metrics/depth.json``, ``metrics/pseudo_labels.json``, ``metrics/eval.json``);
    ``None`` when it does not exist."""
    return read_json(path) if Path(path).is_file() else None


def read_eval_metrics(root: str | os.PathLike = ".") -> dict[str, dict[str, Any]]:
    """``<root>/metrics/eval.json``: ``{model or <model>_adabn: scores}``."""
    return read_json(Path(root) / paths.EVAL_METRICS)


def read_headline(root: str | os.PathLike = ".") -> dict[str, dict[str, float]]:
    """The headline rows found under ``<root>`` (``{row: {measure: value}}``), in :func:`headline_metrics`' order
    for the models of :data:`MODELS` (rows whose file is missing are left out)."""
    files = {row: Path(root) / headline_path(row) for row in headline_metrics({m: {} for m in MODELS})}
    return {row: read_json(f) for row, f in files.items() if f.is_file()}
