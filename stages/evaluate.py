"""Stage `evaluate`: score every trained model on the target val split (method.md §6).

Writes ``metrics/top/`` (the headline numbers, the pipeline's only DVC metrics: a small file per model
plus the depth and pseudo-label numbers of ``metrics/depth.json`` and ``metrics/pseudo_labels.json``,
see :func:`corda.report.headline_metrics`), ``metrics/eval.json`` (details, git-tracked:
``<model>.miou``, ``<model>.per_class.<class>``, ``<model>.pixel_acc``, and the same under ``<model>_adabn`` with
BN statistics from target train images, see :mod:`corda.adabn`), ``metrics/results.md`` (the paper-style
tables the README embeds) and
``eval/`` (plot data for ``dvc plots`` and PNG renderings that work offline).

Memory at full-resolution scoring (``score_at: label``, e.g. 512×1024 input scored on 1024×2048 labels): the
network runs on ``evaluate.batch_size`` images at ``eval_hw``; the logits are then upsampled to the label size and
counted one image and one class plane at a time (:func:`corda.inference.confusion_over`), about 54 bytes per
label pixel of one image (113 MB at 1024×2048) whatever the batch size, with the confusion matrices of the whole
batch's argmax.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from corda.seg.config import EvalConfig
from corda.params import check_data_kinds, load_params, section
from stages.common import stage_main

log = logging.getLogger("stages.evaluate")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

MODELS = ("source_only", "dacs", "corda", "corda_round2", "oracle")


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (section evaluate)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = Path("data/manifest.json"),
    models_dir: Annotated[Path, typer.Option(help="folder of trained models (<name>.pt)")] = Path("models"),
    depth_metrics: Annotated[Path, typer.Option(help="depth_maps' metrics, for the summary")] = Path(
        "metrics/depth.json"),
    pseudo_metrics: Annotated[Path, typer.Option(help="pseudo_labels' metrics, for the summary")] = Path(
        "metrics/pseudo_labels.json"),
) -> None:
    """Score each trained model on target val (also with target BN statistics); write metrics, table, plots."""
    import numpy as np

    from corda import report
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.device import resolve_device
    import torch

    from corda.inference import confusion_over, iterate_batches, labels_at
    from corda.io import read_json, staged_outputs, write_json, write_text
    from corda.labels import CLASS_NAMES, CLASS_SETS
    from corda.log import progress
    from corda.metrics import export_label_ids
    from corda.adabn import adabn_batches, target_bn_statistics
    from corda.seg.qualitative import prediction_strip_rows
    from corda.seg.model_file import load_model

    p = load_params(params)
    cfg = section(p, "evaluate", EvalConfig)
    check_data_kinds(p, manifest)
    device = resolve_device(cfg.device)
    man = load_manifest(manifest)
    set_name = class_set_name(man)
    class_set = CLASS_SETS[set_name]
    splits = load_splits(manifest)
    val_split = splits["target_val"]
    # `val` (image and label at eval_hw) feeds the qualitative strip; `scored` the metrics and exports.
    val = SegDepthDataset(val_split, ("image", "label"), cfg.eval_hw, None, seed=0)
    scored = val if cfg.score_at == "input" else SegDepthDataset(val_split, ("image", "label"), cfg.eval_hw,
                                                                 None, seed=0, label_native=True)
    names = [m for m in MODELS if (models_dir / f"{m}.pt").is_file()]
    if not names:
        from corda.errors import CordaError

        raise CordaError(f"{models_dir}: no trained models found; run the train stages first")
    out_metrics, out_table, out_eval = Path("metrics/eval.json"), Path("metrics/results.md"), Path("eval")
    out_top, out_adabn = Path(report.HEADLINE_DIR), Path(report.ADABN_DIR)
    finals = (out_top, out_adabn, out_metrics, out_table, out_eval)
    with staged_outputs(*finals) as staged:
        out_top, out_adabn, out_metrics, out_table, out_eval = (staged[p] for p in finals)
        results, matrices, histories, loaded, adabn = {}, {}, {}, {}, {}
        for name in names:
            model, ck = load_model(models_dir / f"{name}.pt", device)
            cm = confusion_over(model, progress(iterate_batches(scored, cfg.batch_size), None, f"eval {name}"),
                                model.num_classes, device)
            results[name] = cm.to_dict(CLASS_NAMES, class_set)
            if set_name == "synthia16":  # the paper also reports mIoU* over 13 classes (§6)
                results[name]["miou13"] = float(cm.miou(CLASS_SETS["synthia13"]))
            matrices[name] = cm.matrix
            histories[name] = ck.get("history", [])
            loaded[name] = model
            log.info("%-13s mIoU %.2f  pixel acc %.2f", name, 100 * (results[name]["miou"] or 0),
                     100 * (results[name]["pixel_acc"] or 0))
        for name in names if cfg.adabn_items else ():
            adapted = target_bn_statistics(loaded[name], adabn_batches(
                splits["target_train"], cfg.adabn_items, cfg.batch_size, cfg.eval_hw, device))
            cm = confusion_over(adapted, progress(iterate_batches(scored, cfg.batch_size), None,
                                                  f"eval {name} (target BN statistics)"), adapted.num_classes, device)
            adabn[name] = cm.to_dict(CLASS_NAMES, class_set)
            if set_name == "synthia16":
                adabn[name]["miou13"] = float(cm.miou(CLASS_SETS["synthia13"]))
            log.info("%-13s mIoU %.2f  with BN statistics from %d target train images", name,
                     100 * (adabn[name]["miou"] or 0), cfg.adabn_items)
        write_json(out_metrics, {**results, **{f"{n}_adabn": r for n, r in adabn.items()}})
        report.write_headline_metrics(".", folders={report.HEADLINE_DIR: out_top, report.ADABN_DIR: out_adabn},
                                      rows=report.headline_metrics(
            results, read_json(depth_metrics) if depth_metrics.is_file() else None,
            read_json(pseudo_metrics) if pseudo_metrics.is_file() else None, adabn))
        set_names = [CLASS_NAMES[i] for i in class_set]
        table = report.results_table_markdown({k: v for k, v in results.items()}, set_names)
        text = f"Target-val IoU (%) over the `{set_name}` class set.\n\n{table}\n"
        if adabn:
            text += (f"\nThe same models with their BatchNorm statistics re-estimated on {cfg.adabn_items} "
                     "unlabelled target train images (AdaBN; no weight changes, see corda/adabn.py):\n\n"
                     + report.results_table_markdown(adabn, set_names) + "\n")
        write_text(out_table, text)

        # Plot data for `dvc plots` (declared in dvc.yaml) and offline PNG renderings of the same charts.
        out_eval.mkdir(parents=True, exist_ok=True)
        write_json(out_eval / "per_class_iou.json", report.per_class_records(results, set_names))
        # Confusion matrices of CorDA and its natural comparison, DACS (the same recipe without depth).
        shown = {m: matrices[m] for m in report.CONFUSION_MODELS if m in matrices} or {names[0]: matrices[names[0]]}
        sub = np.ix_(list(class_set), list(class_set))
        shown = {m: c[sub] for m, c in shown.items()}
        write_json(out_eval / "confusion.json", report.confusion_rates_by_model(shown, set_names))
        report.plot_per_class_iou(results, set_names, out_eval / "per_class_iou.png")
        report.plot_confusion(shown, set_names, out_eval / "confusion.png",
                              title="Confusion matrices on target val (rows: ground truth, normalised)")
        write_json(out_eval / "val_miou.json", report.val_miou_records(histories))
        report.plot_val_miou(histories, out_eval / "val_miou.png")
        if "corda" in histories:
            report.plot_loss_terms(histories["corda"], out_eval / "corda_losses.png", "corda: training loss terms")

        # Qualitative strip: image | ground truth | prediction | depth | ω (from the CorDA decoders).
        rows = prediction_strip_rows(loaded.get("corda", loaded[names[0]]), val, cfg.strip_items, device)
        report.prediction_strip(rows, out_eval / "predictions.png")

        if cfg.export_label_ids:
            for name, model in loaded.items():
                model.eval()
                for i in range(len(scored)):
                    item = scored[i]
                    with torch.no_grad():
                        logits = model(item["image"][None].to(device))["S"][0]
                    pred = labels_at(logits, tuple(item["label"].shape[-2:])).cpu().numpy()
                    stem = item["name"]
                    export_label_ids(pred.astype(np.uint8), out_eval / "label_ids" / name / f"{stem}_pred_labelIds.png")


    print(table)


if __name__ == "__main__":
    app()
