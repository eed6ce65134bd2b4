"""Stage `pseudo_labels`: the CorDA teacher's target pseudo-labels with the depth-discrepancy weight.

For every target training image: the pseudo-label, its confidence, ω from the source and target
depth decoders (method.md §4, per image) and the final weight the self-training round uses, in
one streamed HDF5 file (``pseudo/target.h5``, schema in :mod:`corda.h5io`). Diagnostics against
the target train labels (which serve only these diagnostics, never training) test the paper's
hypothesis that depth discrepancy marks hard pixels: ``metrics/pseudo_labels.json`` and
``plots/pseudo_label_accuracy.{json,png}``.

Sizes: the teacher labels each image at its own size (1024×2048 for Cityscapes) and the diagnostics are
counted there; the file stores the maps at the size self-training reads them, ``train.target_resize_hw``
(nearest, :func:`corda.pseudo.at_training_size`; each image's own size when it is null, as in the embedded
default), 7 bytes per stored pixel before compression: 3.7 MB per frame at 512×1024 instead of 14.7 MB at
1024×2048, and the same pseudo-labels and weights reach self-training.

Memory: the teacher runs on ``pseudo_labels.batch_size`` images, then the full-size maps are made one image at a
time (:func:`corda.pseudo.label_items`): beyond the network's batch forward and the loaded batch (24 bytes per
pixel and image), about 153 bytes per pixel of one image (19-class logits upsampled in float32 and their
softmax), 321 MB at 1024×2048, whatever the batch size. The forward pass itself is the larger part at full size:
ResNet-18 DeepLab-v2 at a 1024×2048 input needs about 0.4 GB per image of the batch on the CPU.

With ``pseudo_labels.devices = N > 1`` the stage re-runs itself under torchrun (inference only, no DDP):
rank r labels a contiguous share of the images (whole batches, so every image is computed in the same
batch as in one process) into ``pseudo/target.h5.part<r>``, the diagnostics' counts are summed over the
ranks, and rank 0 merges the parts in image order into ``pseudo/target.h5`` (streamed, atomic) and
removes them. The file equals the one-process file; the metrics too, except that ``weighted_accuracy``
may differ in the last bits (its float sums are added per rank, then across ranks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from corda.config import to_dict
from corda.seg.config import PseudoConfig, TrainConfig
from stages.common import stage_configs, stage_main
from stages.launch import data_parallel

log = logging.getLogger("stages.pseudo_labels")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (section pseudo_labels)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    model_path: Annotated[Path, typer.Option("--model", help="the trained CorDA model")] = paths.model_file("corda"),
    depth_h5: Annotated[Path, typer.Option(help="target depth targets from depth_maps")] = paths.depth_h5("target"),
) -> None:
    """Export target pseudo-labels, confidence, ω and weights to pseudo/target.h5, with diagnostics."""
    import torch

    from corda import report
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.device import resolve_device
    from corda.distributed import shard_range
    from corda.h5io import write_pseudo_h5
    from corda.io import file_hash, staged_outputs, write_json
    from corda.labels import CLASS_NAMES, CLASS_SETS
    from corda.log import progress
    from corda.pseudo import PseudoLabelDiagnostics, at_training_size, export_sharded, label_items
    from corda.seg.model_file import load_model

    cfg, tcfg = stage_configs(params, manifest, pseudo_labels=PseudoConfig, train=TrainConfig)
    out_h5, out_metrics = paths.PSEUDO_LABELS, paths.PSEUDO_METRICS
    out_curve_json, out_curve_png = paths.PSEUDO_PLOT_JSON, paths.PSEUDO_PLOT_PNG
    # pseudo_labels.devices > 1: re-runs this command under torchrun; each rank labels a contiguous share of
    # the images into a part file, rank 0 merges the parts and writes the outputs.
    with data_parallel(cfg.devices, "stages.pseudo_labels", resolve_device(cfg.device),
                       "pseudo_labels.devices") as (dist, device):
        man = load_manifest(manifest)
        class_set = CLASS_SETS[class_set_name(man)]
        split = load_splits(manifest)["target_train"]
        fields = ("image", "depth") + (("label",) if split.has("label") else ())
        ds = SegDepthDataset(split, fields, None, None, depth_h5=str(depth_h5), seed=0)
        teacher, ck = load_model(model_path, device, which="teacher")
        if not getattr(teacher, "depth", False):
            from corda.errors import CordaError

            raise CordaError(f"{model_path}: a model with depth decoders (method corda) is needed for ω")
        teacher.eval()
        diag = PseudoLabelDiagnostics(teacher.num_classes, class_set, CLASS_NAMES)
        # Whole batches per rank: each rank's batches are batches of the one-process pass (shard_range).
        mine = shard_range(len(ds), dist, align=cfg.batch_size)
        part_ds = torch.utils.data.Subset(ds, mine) if dist.enabled else ds

        def items():
            # Labelled (and diagnosed) at full size, stored at the size self_train reads (train.target_resize_hw).
            return at_training_size(label_items(teacher, part_ds, cfg.batch_size, device, cfg.weight_rule,
                                                cfg.threshold, diag, progress), tcfg.target_resize_hw)

        # `devices` is left out of the recorded params: the content does not depend on it, so the file of N
        # processes equals the one-process file (and the file written before the key existed).
        recorded = {k: v for k, v in to_dict(cfg).items() if k != "devices"}
        attrs = {"class_names": list(CLASS_NAMES), "threshold": cfg.threshold, "checkpoint_hash": file_hash(model_path),
                 "params": recorded, "weight_rule": cfg.weight_rule}
        with staged_outputs(out_h5, out_metrics, out_curve_json, out_curve_png, enabled=dist.is_main) as staged:
            if not dist.enabled:
                write_pseudo_h5(staged[out_h5], items(), len(ds), attrs)
            else:
                export_sharded(out_h5, staged[out_h5], items(), len(ds), attrs, diag, cfg.batch_size, dist,
                                device)
            if not dist.is_main:
                return
            result = diag.result() if split.has("label") else {}
            write_json(staged[out_metrics], result)
            records = diag.curve_records() if split.has("label") else []
            write_json(staged[out_curve_json], records)
            series = {}
            for r in records:
                s = series.setdefault(r["signal"], ([], []))
                s[0].append(r["weight"])
                s[1].append(r["accuracy"])
            report.plot_curves(series, staged[out_curve_png], "pseudo-label accuracy vs weight", xlabel="weight",
                               ylabel="accuracy")
    if result:
        a = result["auroc"]
        log.info("pseudo-label mIoU %.2f | AUROC of predicting errors: confidence %.3f, depth weight %.3f, "
                 "combined %.3f", 100 * (result["miou"] or 0), a["confidence"] or 0, a["depth_weight"] or 0,
                 a["combined"] or 0)


if __name__ == "__main__":
    app()
