"""Stage `self_train`: a second self-training round on the exported, depth-weighted pseudo-labels.

Initialised from the CorDA model (round 1), trained with source supervision plus the HDF5
pseudo-labels and their per-pixel weights (ClassMix and strong augmentation as in round 1), through
the same loop as `train`. Writes ``models/corda_round2.pt`` and ``dvclive/self_train/``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from corda.config import to_dict
from corda.seg.config import SelfTrainConfig
from stages.common import finish_training, stage_configs, stage_main
from stages.launch import data_parallel

log = logging.getLogger("stages.self_train")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (sections model, train, self_train)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
    init: Annotated[Path, typer.Option(help="round-1 CorDA model")] = paths.model_file("corda"),
    pseudo_h5: Annotated[Path, typer.Option(help="pseudo-labels from the pseudo_labels stage")] = paths.PSEUDO_LABELS,
    depth_dir: Annotated[Path, typer.Option(help="the depth_maps stage's HDF5 folder")] = paths.DEPTH_DIR,
) -> None:
    """Self-train from models/corda.pt on pseudo/target.h5; writes models/corda_round2.pt."""
    from corda.device import resolve_device
    from corda.io import staged_outputs
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import set_seeds

    mcfg, tcfg, scfg = stage_configs(params, manifest, model=ModelConfig, train=TrainConfig,
                                     self_train=SelfTrainConfig)
    tcfg = dataclasses.replace(tcfg, seed=scfg.seed, iterations=scfg.iterations, lr=scfg.lr,
                               target_ce_weight=scfg.target_weight,
                               eval_every=min(tcfg.eval_every, scfg.iterations))
    out_model, out_live = paths.model_file("corda_round2"), paths.live_dir("self_train")
    # train.devices > 1: re-runs this command under torchrun; every rank continues below, rank 0 writes.
    with data_parallel(tcfg.devices, "stages.self_train", resolve_device(tcfg.device)) as (dist, device):
        set_seeds(tcfg.seed)
        with staged_outputs(out_model, out_live, enabled=dist.is_main) as staged:
            trainer = _train(mcfg, tcfg, scfg, manifest, init, pseudo_h5, depth_dir, device, dist,
                             staged[out_model], staged[out_live])
    if not dist.is_main:
        return
    last = trainer.history[-1] if trainer.history else {}
    log.info("round 2 done: final val mIoU %.2f", 100 * last.get("val/miou", float("nan")))


def _train(mcfg, tcfg, scfg: SelfTrainConfig, manifest: Path, init: Path, pseudo_h5: Path, depth_dir: Path,
           device, dist, out_model: Path, out_live: Path):
    """Build the data, train this rank's share, and (rank 0) write the declared outputs; returns the trainer."""
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.io import file_hash
    from corda.labels import CLASS_SETS
    from corda.log import progress
    from corda.methods import SELF_TRAIN
    from corda.seg.run import make_eval_fn, run_training, seg_datasets
    from corda.seg.model_file import load_model, save_model

    splits = load_splits(manifest)
    src_ds, _, val_ds = seg_datasets(splits, tcfg, depth_dir)
    tgt_ds = SegDepthDataset(splits["target_train"], ("image", "depth", "pseudo_label", "pseudo_weight"),
                             tcfg.target_resize_hw, tcfg.crop_hw, depth_h5=str(paths.depth_h5("target", depth_dir)),
                             pseudo_h5=str(pseudo_h5), seed=tcfg.seed + 1)
    round1, ck = load_model(init, device, which=scfg.init_from)
    # Round 2 starts from round 1's weights, so the params' network must be the one round 1 trained.
    differ = [k for k, v in to_dict(mcfg).items() if ck["model_config"].get(k) != v]
    if differ:
        from corda.errors import ConfigError

        k = differ[0]
        raise ConfigError(f"{init}: trained with model.{k}={ck['model_config'].get(k)!r} but params.yaml "
                          f"has model.{k}={getattr(mcfg, k)!r}; set model.{k} back or re-run train_corda")
    class_set = CLASS_SETS[class_set_name(load_manifest(manifest))]
    eval_fn = make_eval_fn(val_ds, mcfg.num_classes, class_set, tcfg.batch_target * 4, tcfg.eval_items, device)

    def normalise(tgt: dict) -> dict:
        if scfg.normalize_weight:
            w = tgt["pseudo_weight"].float()
            tgt = {**tgt, "pseudo_weight": w / w.mean().clamp_min(1e-6)}
        return tgt

    inputs_fp = {"manifest": file_hash(manifest), "init": file_hash(init), "pseudo": file_hash(pseudo_h5)}
    tcfg = tcfg.for_method(SELF_TRAIN)  # the saved config records the method it trained
    student, _, trainer = run_training(
        method=SELF_TRAIN, mcfg=mcfg, tcfg=tcfg, source_ds=src_ds, target_ds=tgt_ds, device=device,
        scratch=paths.scratch_file("self_train"), inputs_fp=inputs_fp,
        init_state=round1.state_dict(), eval_fn=eval_fn, tgt_transform=normalise, progress=progress,
        dist=dist)
    if dist.is_main:
        finish_training(trainer, out_live, lambda: save_model(
            out_model, method="corda_round2", student=student, teacher=None, mcfg=mcfg, tcfg=tcfg,
            history=trainer.history, extra={"self_train_config": dataclasses.asdict(scfg)}))
    return trainer


if __name__ == "__main__":
    app()
