"""Stage `train@<method>`: CorDA segmentation training and its baselines (method.md §1–§5).

``--method corda`` trains the full method; ``dacs`` the same without the depth task and without
ω; ``source_only`` source supervision alone; ``oracle`` supervised on target labels (upper bound).
Writes ``models/<method>.pt`` (student, EMA teacher, configs) and ``dvclive/train_<method>/``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from stages.common import load_params, outputs, section, stage_main

log = logging.getLogger("stages.train")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

Method = Literal["corda", "dacs", "source_only", "oracle"]


@app.command()
@stage_main
def main(
    method: Annotated[str, typer.Option(help="corda | dacs | source_only | oracle")] = "corda",
    params: Annotated[Path, typer.Option(help="params file (sections data, model, train)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = Path("data/manifest.json"),
    depth_dir: Annotated[Path, typer.Option(help="the depth_maps stage's HDF5 folder")] = Path("depth"),
) -> None:
    """Train one segmentation method on the embedded benchmark or real data; writes models/<method>.pt."""
    from corda.errors import ConfigError
    from corda.io import file_hash
    from corda.log import progress
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.engine import write_dvclive
    from corda.labels import CLASS_SETS
    from corda.segmentation import (ModelConfig, TrainConfig, make_eval_fn, resolve_device, run_training,
                                    save_model, seg_datasets, set_seeds)

    if method not in ("corda", "dacs", "source_only", "oracle"):
        raise ConfigError(f"--method: {method!r} is not one of corda, dacs, source_only, oracle")
    p = load_params(params)
    mcfg = section(p, "model", ModelConfig)
    tcfg = section(p, "train", TrainConfig)
    device = resolve_device(tcfg.device)
    set_seeds(tcfg.seed)
    out_model = Path("models") / f"{method}.pt"
    out_live = Path("dvclive") / f"train_{method}"
    with outputs(out_model, out_live):
        splits = load_splits(manifest)
        src_ds, tgt_ds, val_ds = seg_datasets(splits, tcfg, depth_dir, with_target_labels=method == "oracle")
        inputs_fp = {"manifest": file_hash(manifest),
                     **{f.name: file_hash(f) for f in sorted(depth_dir.glob("*.h5"))}}
        class_set = CLASS_SETS[class_set_name(load_manifest(manifest))]
        eval_fn = make_eval_fn(val_ds, mcfg.num_classes, class_set, tcfg.batch_target * 4, tcfg.eval_items, device)
        student, teacher, trainer = run_training(
            method=method, mcfg=mcfg, tcfg=tcfg, source_ds=src_ds, target_ds=tgt_ds, device=device,
            scratch=Path("checkpoints") / f"train_{method}" / "last.pt", inputs_fp=inputs_fp,
            eval_fn=eval_fn, progress=progress)
        save_model(out_model, method=method, student=student, teacher=teacher, mcfg=mcfg, tcfg=tcfg,
                   history=trainer.history)
        write_dvclive(trainer.history, out_live)
        trainer.discard_scratch()
    last = trainer.history[-1] if trainer.history else {}
    log.info("%s done: final val mIoU %.2f", method, 100 * last.get("val/miou", float("nan")))


if __name__ == "__main__":
    app()
