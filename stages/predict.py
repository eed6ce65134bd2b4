"""`python -m stages.predict`: apply a trained model to a folder (or glob) of images. Not a DVC stage.

Writes, per image, the label map, a colour overlay, the depth map (16-bit PNG and a colour view) and
the depth-decoder difficulty map into ``--out`` (see :mod:`corda.predict` for the formats), and
optionally one HDF5 file with everything. Every input is checked first; ``--skip-bad`` skips unreadable
ones. Each image's files appear as soon as it is done, so a run that stops keeps what it finished.
``--overwrite`` only replaces a folder an earlier predict run made (it holds ``.corda-predict.json``).

    python -m stages.predict data/benchmark/target/leftImg8bit/val --model models/corda.pt --out predictions
    python -m stages.predict 'frames/*.jpg' --label-ids --h5 --out preds --overwrite
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from corda import paths
from corda.params import load_params
from stages.common import stage_main

log = logging.getLogger("stages.predict")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


def default_input_height(params: Path) -> int:
    """The evaluation input height the params file implies (evaluate.eval_hw, else the benchmark's height)."""
    from corda.errors import ConfigError

    p = load_params(params) if params.is_file() else {}
    eval_hw = (p.get("evaluate") or {}).get("eval_hw")
    data = p.get("data") or {}
    if eval_hw:
        return int(eval_hw[0])
    if (data.get("target") or {}).get("kind") == "procedural":
        return int(data["procedural"]["height"])
    raise ConfigError(f"{params}: does not give the evaluation size (evaluate.eval_hw); pass --input-height "
                      "(512 for a model trained on Cityscapes at 512x1024)")


@app.command()
@stage_main
def main(
    inputs: Annotated[list[str], typer.Argument(help="image folders (searched recursively), image files or globs")],
    model: Annotated[Path, typer.Option(help="a trained model from the pipeline (models/<name>.pt)")] = paths.model_file("corda"),
    out: Annotated[Path, typer.Option(help="output folder: new, empty, or one predict made (--overwrite); each image's "
                                           "files appear as soon as it is done")] = Path("predictions"),
    input_height: Annotated[Optional[int], typer.Option(
        min=16, help="network input height (aspect kept); default: evaluate.eval_hw or the benchmark's height")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 8,
    label_ids: Annotated[bool, typer.Option(
        "--label-ids", help="write Cityscapes label ids (for the official evaluator) instead of trainIds")] = False,
    h5: Annotated[bool, typer.Option("--h5", help="also write <out>/predictions.h5 with every map")] = False,
    teacher: Annotated[bool, typer.Option("--teacher", help="use the EMA teacher's weights, not the student's")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace the outputs in an --out folder an earlier predict run made")] = False,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip unreadable inputs instead of stopping")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    params: Annotated[Path, typer.Option(help="params file, read only for the default input height")] = Path(
        "params.yaml"),
) -> None:
    """Segmentation, depth and difficulty maps for your own images, from a trained checkpoint."""

    from corda.device import resolve_device
    from corda.errors import DataError
    from corda.io import file_hash
    from corda.labels import CLASS_NAMES
    from corda.log import progress
    from corda.predict import (MIN_SIDE_PX, PredictionWriter, bad_inputs_message, benchmark_model_warning,
                               check_inputs, find_images, run_predict, top_classes)
    from corda.seg.model_file import load_model

    found = find_images(inputs)
    items, bad, small = check_inputs(found)  # before the model loads or anything is written
    if bad and (not skip_bad or not items):
        raise DataError(bad_inputs_message(bad, len(found)) if items or not skip_bad else
                        f"none of the {len(found)} inputs is readable (e.g. {bad[0][0]}: {bad[0][1]})")
    if bad:
        log.warning("--skip-bad: %s", bad_inputs_message(bad, len(found), skipping=True))
    if small:
        (p, (h, w)) = small[0]
        log.warning("%d images are under %d px on a side (e.g. %s, %dx%d): their maps are upsampled from very "
                    "little information; treat them with care", len(small), MIN_SIDE_PX, p, h, w)
    height = input_height or default_input_height(params)
    dev = resolve_device(device)
    net, ck = load_model(model, dev, "teacher" if teacher else "student")
    model_hash = file_hash(model)
    if warning := benchmark_model_warning(model, model_hash):
        log.warning("%s", warning)
    writer = PredictionWriter(out, label_ids, h5, overwrite,
                              {"model": str(model), "model_hash": model_hash, "method": ck["method"],
                               "input_height": height})
    log.info("%d images → %s (model %s, %s, input height %d, device %s)", len(items), out, model, ck["method"],
             height, dev)
    s = run_predict(net, items, writer, height, batch_size, dev, progress, skip_bad=skip_bad, skipped=bad)
    skipped = [p for p, _ in s.skipped]
    sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(s.sizes.items(), key=lambda kv: -kv[1])[:4])
    print(f"\n| predict | {out} |\n|---|---|")
    print(f"| images | {s.images} ({s.with_depth} with depth and difficulty) |")
    if skipped:
        print(f"| skipped (unreadable) | {len(skipped)}: {', '.join(str(p) for p in skipped[:4])}"
              f"{' ...' if len(skipped) > 4 else ''} |")
    if small:
        print(f"| under {MIN_SIDE_PX} px | {len(small)} |")
    print(f"| sizes (H x W) | {sizes}{' ...' if len(s.sizes) > 4 else ''} |")
    print(f"| time | {s.seconds:.1f} s ({s.images_per_s:.1f} images/s on {dev}) |")
    print("| most frequent classes | " + ", ".join(f"{n} {pct:.1f}%" for n, pct in top_classes(s.class_pixels,
                                                                                            CLASS_NAMES)) + " |")


if __name__ == "__main__":
    app()
