"""Stage `depth_maps`: depth targets for every training image of each domain, and depth metrics.

Writes ``depth/target.h5`` and, when a network makes the source depth, ``depth/source.h5`` (CorDA inverse
depth, 1.0 = invalid, plus metric depth; schema in :mod:`corda.h5io`); for source ground truth
(``depth.source: ground_truth``) only the record ``depth/source.json``: training reads the dataset's own depth
files in place. Also ``metrics/depth.json`` (target val against the benchmark's disparity ground truth: AbsRel,
SqRel, RMSE, RMSE log, δ<1.25^k; median scaling only for mono).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from stages.common import stage_configs, stage_main

log = logging.getLogger("stages.depth_maps")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (section depth)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    models_dir: Annotated[Path, typer.Option(help="depth networks from depth_pretrain")] = paths.DEPTH_MODELS_DIR,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 16,
) -> None:
    """Export depth targets (HDF5) for source and target train; evaluate target val depth."""
    import numpy as np
    import torch

    from corda.data import codecs
    from corda.data.datasets import SegDepthDataset
    from corda.data.readers import image_hw
    from corda.data.manifest import load_splits
    from corda.device import resolve_device
    from corda.depth.metrics import DepthMetricAccumulator
    from corda.depth.checkpoint import depth_checkpoint_path, load_depth_net
    from corda.depth.config import DepthConfig
    from corda.depth.run import export_depth, mono_scale, predict_full
    from corda.h5io import write_depth_h5, write_source_in_place
    from corda.inference import iterate_batches
    from corda.io import file_hash, staged_outputs, write_json
    from corda.log import progress

    (cfg,) = stage_configs(params, manifest, depth=DepthConfig)
    device = resolve_device(cfg.device)
    splits = load_splits(manifest)

    def load_net(domain: str) -> tuple[torch.nn.Module, str]:
        path = depth_checkpoint_path(models_dir, domain)
        return load_depth_net(path, cfg, device), file_hash(path)

    out_dir, out_metrics = paths.DEPTH_DIR, paths.DEPTH_METRICS
    with staged_outputs(out_dir, out_metrics) as staged:
        staged[out_dir].mkdir(parents=True, exist_ok=True)
        metrics: dict = {"mode": cfg.mode, "source": cfg.source}
        for domain in ("source", "target"):
            index = splits["source" if domain == "source" else "target_train"]
            if domain == "source" and cfg.source == "ground_truth":
                # Training reads the dataset's own depth files where they lie (corda.seg.run.seg_datasets): no
                # copy (302 GB raw for GTA5), only a record. Constructing the dataset checks the files are there.
                SegDepthDataset(index, ("depth",), None, None)
                write_source_in_place(paths.source_depth_record(staged[out_dir]),
                                      {"mode": "ground_truth", "domain": domain, "dataset": index.kind,
                                       "items": len(index)})
                continue
            if domain == "target" and cfg.target == "files":
                from corda.data.depth_files import read_released_depth, released_depth_path

                ds = index
                items = ((n, read_released_depth(released_depth_path(cfg.target_files_root, index.split, n),
                                                 image_hw(index.path("image", i))))
                         for i, n in enumerate(index.names))
                attrs = {"mode": "files", "model_hash": "", "domain": domain,
                         "files_root": str(cfg.target_files_root)}
            else:
                net, h = load_net(domain)
                scale = mono_scale(net, index, cfg, batch_size, device) if cfg.mode == "mono" else 1.0
                metrics[f"{domain}_scale"] = scale
                ds = SegDepthDataset(index, ("image",), None, None)
                items = ((n, d * scale) for n, d in export_depth(net, cfg, iterate_batches(ds, batch_size), device))
                attrs = {"mode": cfg.mode, "model_hash": h, "domain": domain}
            attrs |= {"min_depth_m": cfg.min_depth_m, "max_depth_m": cfg.max_depth_m}
            # Depth below 0.1 m counts as invalid for network and released depth (the original's Cityscapes
            # reading); dataset ground truth, read in place, keeps it (codecs.inv_through_metres), as the
            # original's SYNTHIA/GTA5 readers do (§2.2).
            rows = ((n, codecs.depth_to_inv(d), d.astype(np.float16))
                    for n, d in progress(items, len(ds), f"depth maps {domain}"))
            write_depth_h5(paths.depth_h5(domain, staged[out_dir]), rows, len(ds), attrs)

        # Target val against the disparity ground truth (standard protocol; median scaling for mono only).
        net, _ = load_net("target")
        val = SegDepthDataset(splits["target_val"], ("image", "disparity", "K", "baseline"), None, None)
        acc = DepthMetricAccumulator(cfg.min_depth_m, cfg.eval_max_depth_m, median_scaling=cfg.mode == "mono")
        for batch in progress(iterate_batches(val, batch_size), None, "depth eval"):
            pred = predict_full(net, batch["image"].to(device), cfg).cpu()
            for j in range(pred.shape[0]):
                disp = batch["disparity"][j, 0].numpy()
                gt = codecs.disparity_to_depth(disp, float(batch["baseline"][j]), float(batch["K"][j, 0, 0]))
                acc.update(pred[j, 0].numpy(), gt)
        metrics["target"] = acc.compute()
        write_json(staged[out_metrics], metrics)
    t = metrics["target"]
    log.info("target val depth: AbsRel %.3f  SqRel %.3f  RMSE %.2f  RMSElog %.3f  d1 %.3f  d2 %.3f  d3 %.3f",
             t["abs_rel"], t["sq_rel"], t["rmse"], t["rmse_log"], t["delta1"], t["delta2"], t["delta3"])


if __name__ == "__main__":
    app()
