"""`python -m stages --help` lists every DVC stage and predict; `python -m stages <name> --help` shows its options."""

from __future__ import annotations

import importlib

import typer

STAGES = {
    "data": "Render the procedural benchmark or index real datasets.",
    "rcs": "Source label class statistics for rare-class sampling (DAFormer).",
    "depth_pretrain": "Self-supervised Monodepth2-style depth on target stereo/video.",
    "depth_maps": "Depth targets (HDF5) for every training image of each domain.",
    "train": "CorDA segmentation training and the source-only / DACS / oracle baselines.",
    "pseudo_labels": "Target pseudo-labels with the depth-discrepancy weight (HDF5) and diagnostics.",
    "self_train": "A second self-training round on the refined pseudo-labels.",
    "evaluate": "Score every model on target val: metrics JSON, plots, results table.",
    "predict": "Segmentation and depth maps of your own images (a tool, not a DVC stage).",
}

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="corda: CorDA as a DVC pipeline. Each stage runs as `python -m stages.<name>`.")



@app.callback()
def _root() -> None:
    """corda: CorDA as a DVC pipeline. Each stage runs as `python -m stages.<name>`."""


for _name, _help in STAGES.items():
    try:
        _mod = importlib.import_module(f"stages.{_name}")
    except ModuleNotFoundError as exc:  # a stage not written yet
        if exc.name != f"stages.{_name}":
            raise
        continue
    app.command(_name, help=_help)(_mod.main)

if __name__ == "__main__":
    app()
