"""Stage `evaluate`: score every trained model on the target val split (method.md §6).

Writes the headline metrics (``metrics/top/``, ``metrics/adabn/``), ``metrics/eval.json``, ``metrics/results.md``
and ``eval/`` (plot data and PNG renderings); what each file holds is :mod:`corda.eval_files`'.

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

from corda import paths
from corda.params import check_data_kinds, load_params, section
from corda.seg.config import EvalConfig
from stages.common import stage_main

log = logging.getLogger("stages.evaluate")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (section evaluate)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    models_dir: Annotated[Path, typer.Option(help="folder of trained models (<name>.pt)")] = paths.MODELS_DIR,
    depth_metrics: Annotated[Path, typer.Option(help="depth_maps' metrics, for the summary")] = paths.DEPTH_METRICS,
    pseudo_metrics: Annotated[Path, typer.Option(help="pseudo_labels' metrics, for the summary")] = (
        paths.PSEUDO_METRICS),
) -> None:
    """Score each trained model on target val (also with target BN statistics); write metrics, table, plots."""
    import torch

    from corda import eval_files
    from corda.adabn import adabn_batches, target_bn_statistics
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.device import resolve_device
    from corda.inference import confusion_over, iterate_batches, labels_at
    from corda.io import staged_outputs
    from corda.labels import CLASS_NAMES, CLASS_SETS
    from corda.log import progress
    from corda.metrics import export_label_ids
    from corda.report import prediction_strip
    from corda.seg.model_file import load_model
    from corda.seg.qualitative import prediction_strip_rows

    p = load_params(params)
    cfg = section(p, "evaluate", EvalConfig)
    check_data_kinds(p, manifest)
    device = resolve_device(cfg.device)
    set_name = class_set_name(load_manifest(manifest))
    class_set = CLASS_SETS[set_name]
    set_names = [CLASS_NAMES[i] for i in class_set]
    splits = load_splits(manifest)
    val_split = splits["target_val"]
    # `val` (image and label at eval_hw) feeds the qualitative strip; `scored` the metrics and exports.
    val = SegDepthDataset(val_split, ("image", "label"), cfg.eval_hw, None, seed=0)
    scored = val if cfg.score_at == "input" else SegDepthDataset(val_split, ("image", "label"), cfg.eval_hw,
                                                                 None, seed=0, label_native=True)
    names = [m for m in eval_files.MODELS if paths.model_file(m, models_dir).is_file()]
    if not names:
        from corda.errors import CordaError

        raise CordaError(f"{models_dir}: no trained models found; run the train stages first")
    finals = (paths.HEADLINE_DIR, paths.ADABN_DIR, paths.EVAL_METRICS, paths.RESULTS_TABLE, paths.EVAL_DIR)
    with staged_outputs(*finals) as out:
        results, matrices, histories, loaded, adabn = {}, {}, {}, {}, {}
        for name in names:
            model, ck = load_model(paths.model_file(name, models_dir), device)
            cm = confusion_over(model, progress(iterate_batches(scored, cfg.batch_size), None, f"eval {name}"),
                                model.num_classes, device)
            results[name] = eval_files.model_scores(cm, CLASS_NAMES, class_set, set_name)
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
            adabn[name] = eval_files.model_scores(cm, CLASS_NAMES, class_set, set_name)
            log.info("%-13s mIoU %.2f  with BN statistics from %d target train images", name,
                     100 * (adabn[name]["miou"] or 0), cfg.adabn_items)
        table = eval_files.write_metrics(out, results, adabn, set_name, set_names, cfg.adabn_items,
                                         eval_files.read_detail(depth_metrics), eval_files.read_detail(pseudo_metrics))
        out_eval = out[paths.EVAL_DIR]
        eval_files.write_plot_data(out_eval, results, matrices, histories, class_set, set_names)

        # Qualitative strip: image | ground truth | prediction | depth | ω (from the CorDA decoders).
        rows = prediction_strip_rows(loaded.get("corda", loaded[names[0]]), val, cfg.strip_items, device)
        prediction_strip(rows, out_eval / "predictions.png")

        if cfg.export_label_ids:
            for name, model in loaded.items():
                model.eval()
                for i in range(len(scored)):
                    item = scored[i]
                    with torch.no_grad():
                        logits = model(item["image"][None].to(device))["S"][0]
                    pred = labels_at(logits, tuple(item["label"].shape[-2:])).cpu().numpy()
                    stem = item["name"]
                    export_label_ids(pred.astype("uint8"), out_eval / "label_ids" / name / f"{stem}_pred_labelIds.png")

    print(table)


if __name__ == "__main__":
    app()
