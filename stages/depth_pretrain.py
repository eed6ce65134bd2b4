"""Stage `depth_pretrain`: Monodepth2-style self-supervised depth on the target's stereo pairs/video.

``depth.mode`` picks the source views (stereo | mono | mono+stereo). The target network is always
trained; the source network only with ``depth.source: self_supervised`` (a source without
ground-truth depth, like GTA5). Writes ``models/depth/{target,source}.pt`` and
``dvclive/depth_pretrain/``. With ``depth.devices = N > 1`` the stage re-runs itself under torchrun and
trains data-parallel (:mod:`corda.depth.step` has the semantics); only rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from corda import paths
from stages.common import stage_configs, stage_main
from stages.launch import data_parallel

log = logging.getLogger("stages.depth_pretrain")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@stage_main
def main(
    params: Annotated[Path, typer.Option(help="params file (section depth)")] = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="the data stage's manifest")] = paths.MANIFEST,
) -> None:
    """Train the depth networks; writes models/depth/ and dvclive/depth_pretrain/."""
    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import load_splits
    from corda.device import resolve_device
    from corda.depth.checkpoint import depth_checkpoint_path, save_depth_net
    from corda.depth.config import DepthConfig
    from corda.depth.run import depth_fields, train_depth
    from corda.engine import write_dvclive
    from corda.errors import ConfigError
    from corda.io import file_hash, staged_outputs
    from corda.log import progress

    (cfg,) = stage_configs(params, manifest, depth=DepthConfig)
    out_dir, out_live = paths.DEPTH_MODELS_DIR, paths.live_dir("depth_pretrain")
    # depth.devices > 1: re-runs this command under torchrun; every rank trains its slice, rank 0 writes.
    with data_parallel(cfg.devices, "stages.depth_pretrain", resolve_device(cfg.device), "depth.devices") as (
            dist, device):
        splits = load_splits(manifest)
        domains = ["target"] + (["source"] if cfg.source == "self_supervised" else [])
        fields = depth_fields(cfg)
        with staged_outputs(out_dir, out_live, enabled=dist.is_main) as staged:
            history = []
            for domain in domains:
                index = splits["target_train" if domain == "target" else "source"]
                missing = [f for f in fields if f in ("right", "prev", "next") and not index.has(f)]
                if missing:
                    raise ConfigError(f"depth.mode={cfg.mode}: the {domain} dataset ({index.kind} at {index.root}) "
                                      f"has no {missing} views{index.lacking(missing[0])}; restore the files, "
                                      "choose another depth.mode, or depth.source: "
                                      "ground_truth")
                ds = SegDepthDataset(index, fields, cfg.resize_hw, None, seed=cfg.seed)
                models, trainer = train_depth(cfg, ds, device, paths.CHECKPOINTS_DIR / "depth_pretrain" / f"{domain}.pt",
                                              {"manifest": file_hash(manifest), "domain": domain}, progress,
                                              desc=f"depth {domain}", dist=dist)
                if dist.is_main:
                    save_depth_net(depth_checkpoint_path(staged[out_dir], domain), cfg, domain, models["depth"],
                                   trainer.history)
                history += [{**r, **{f"{domain}/{k}": v for k, v in r.items() if k != "step"}}
                            for r in trainer.history]
                trainer.discard_scratch()  # rank 0 only (the others write no checkpoints)
            if dist.is_main:
                write_dvclive([{k: v for k, v in r.items() if "/" in k or k == "step"} for r in history], staged[out_live])


if __name__ == "__main__":
    app()
