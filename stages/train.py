"""Stage `train@<method>`: CorDA segmentation training and its baselines (method.md §1–§5).

``--method corda`` trains the full method; ``dacs`` the same without the depth task and without
ω; ``source_only`` source supervision alone; ``oracle`` supervised on target labels (upper bound);
``corda_no_omega`` / ``corda_no_exchange`` the ablations. Each is a row of :mod:`corda.methods`.
Writes ``models/<method>.pt`` (student, EMA teacher, configs) and ``dvclive/train_<method>/``.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from corda.methods import TRAINED, Method, get_method
from stages.common import finish_training, stage_configs, stage_main
from stages.launch import data_parallel

log = logging.getLogger("stages.train")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

#: The choices --help lists: the rows of corda.methods this stage trains from scratch.
MethodName = enum.Enum("MethodName", {m: m for m in TRAINED}, type=str)  # type: ignore[misc]


@app.command()
@stage_main
def main(
    method: Annotated[MethodName, typer.Option(help="which model to train")] = MethodName("corda"),
    params: Annotated[Path, typer.Option(help="params file (sections data, model, train)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    depth_dir: Annotated[Path, typer.Option(help="the depth_maps stage's HDF5 folder")] = paths.DEPTH_DIR,
) -> None:
    """Train one segmentation method on the embedded benchmark or real data; writes models/<method>.pt."""
    from corda.device import resolve_device
    from corda.io import staged_outputs
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import set_seeds

    # The one place the name becomes its row (typer gives the enum; a direct call may pass the string).
    row = get_method(MethodName(method).value)
    mcfg, tcfg = stage_configs(params, manifest, model=ModelConfig, train=TrainConfig)
    tcfg = tcfg.for_method(row)  # the saved config records the steps this method ran
    out_model = paths.model_file(row.name)
    out_live = paths.live_dir(f"train_{row.name}")
    # train.devices > 1: re-runs this command under torchrun; every rank continues below, rank 0 writes.
    with data_parallel(tcfg.devices, "stages.train", resolve_device(tcfg.device)) as (dist, device):
        set_seeds(tcfg.seed)
        # Written beside the old outputs and swapped in at the end: a failure or Ctrl-C keeps them.
        with staged_outputs(out_model, out_live, enabled=dist.is_main) as staged:
            trainer = _train(row, mcfg, tcfg, manifest, depth_dir, device, dist, staged[out_model],
                             staged[out_live])
    if not dist.is_main:
        return
    last = trainer.history[-1] if trainer.history else {}
    log.info("%s done: final val mIoU %.2f", row.name, 100 * last.get("val/miou", float("nan")))


def _train(row: Method, mcfg, tcfg, manifest: Path, depth_dir: Path, device, dist, out_model: Path,
           out_live: Path):
    """Build the data, train this rank's share, and (rank 0) write the declared outputs; returns the trainer."""
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.io import file_hash
    from corda.labels import CLASS_SETS
    from corda.log import progress
    from corda.seg.run import make_eval_fn, make_source_sampler, run_training, seg_datasets
    from corda.seg.model_file import save_model

    splits = load_splits(manifest)
    src_ds, tgt_ds, val_ds = seg_datasets(splits, tcfg, depth_dir, with_target_labels=row.target_ground_truth)
    sampler = make_source_sampler(tcfg, src_ds) if row.source_batch else None
    inputs_fp = {"manifest": file_hash(manifest),
                 **{f.name: file_hash(f) for f in sorted([*depth_dir.glob("*.h5"), *depth_dir.glob("*.json")])},
                 **({"rcs": file_hash(paths.RCS_STATS)} if sampler is not None else {})}
    class_set = CLASS_SETS[class_set_name(load_manifest(manifest))]
    eval_fn = make_eval_fn(val_ds, mcfg.num_classes, class_set, tcfg.batch_target * 4, tcfg.eval_items, device)
    student, teacher, trainer = run_training(
        method=row, mcfg=mcfg, tcfg=tcfg, source_ds=src_ds, target_ds=tgt_ds, device=device,
        scratch=paths.scratch_file(f"train_{row.name}"), inputs_fp=inputs_fp,
        eval_fn=eval_fn, progress=progress, dist=dist, source_sampler=sampler)
    if dist.is_main:
        finish_training(trainer, out_live, lambda: save_model(out_model, method=row.name, student=student,
                                                              teacher=teacher, mcfg=mcfg, tcfg=tcfg,
                                                              history=trainer.history))
    return trainer


if __name__ == "__main__":
    app()
