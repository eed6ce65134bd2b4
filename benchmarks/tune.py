"""Recipe and benchmark choices on the labelled tuning split (issue 17), never on target val.

Trains one or more methods with params.yaml's settings plus ``--set`` overrides and scores the student (and the
EMA teacher, when there is one) on the tuning split: the last 200 target *train* items, whose labels the
rendered benchmark has (:func:`corda.data.manifest.tuning_split`). Each run appends one JSON line to ``--log``
(mIoU and per-class IoU), so a study can be tabulated afterwards.

    python benchmarks/tune.py --methods oracle source_only --set model.head=decoder4 train.optimizer=adamw
    python benchmarks/tune.py --methods dacs --iterations 300 --tag short

Needs `dvc repro depth_maps` first (the methods read depth/*.h5). Results depend on the thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # corda, stages and benchmarks
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def apply_sets(p: dict, sets: list[str]) -> dict:
    """``section.key=value`` (value parsed as YAML) into a copy of the params mapping (the typed configs check
    the keys)."""
    import copy

    p = copy.deepcopy(p)
    for item in sets:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = p
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return p


def scorer(index, num_classes: int, class_set, resize_hw, device):
    """``score(model) -> (mIoU %, per-class IoU %)`` on the labelled items of ``index``, whole images in order."""
    from corda.data.datasets import SegDepthDataset
    from corda.inference import confusion_over, iterate_batches

    scored = SegDepthDataset(index, ("image", "label"), resize_hw, None, seed=0)

    def score(model) -> tuple[float, list[float]]:
        cm = confusion_over(model, iterate_batches(scored, 32), num_classes, device)
        iou = cm.iou()
        return 100 * float(cm.miou(class_set)), [round(100 * float(iou[c]), 1) for c in class_set]

    return score


def adabn_score(model, score, params: dict, target_train, resize_hw, device) -> float:
    """``score`` of ``model`` with BN statistics from the first ``evaluate.adabn_items`` target train images, as
    the evaluate stage's target-statistics row (a diagnostic of the source/target statistics confound)."""
    from corda.adabn import adabn_batches, target_bn_statistics
    from corda.params import section
    from corda.seg.config import EvalConfig

    # the params' count; presets that switch the row off (0) get the stage's default count
    items = section(params, "evaluate", EvalConfig).adabn_items or EvalConfig().adabn_items
    adapted = target_bn_statistics(model, adabn_batches(target_train, items, 16, resize_hw, device))
    return round(score(adapted)[0], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["oracle", "source_only", "dacs", "corda"],
                    help="methods or benchmarks/ablation.py variants (e.g. 'corda w/o ω')")
    ap.add_argument("--set", nargs="*", default=[], dest="sets", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seed", type=int, default=None, help="override train.seed")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--split", choices=["tune", "val"], default="tune")
    ap.add_argument("--depth-dir", default="depth", help="depth_maps' output folder (target.h5; source.h5 or source.json)")
    ap.add_argument("--tag", default="", help="a label for the log line")
    ap.add_argument("--log", default="benchmarks/tune_log.jsonl")
    ap.add_argument("--adabn", action="store_true",
                    help="also score the student with BN statistics re-estimated on target train images "
                         "(a diagnostic of the source/target statistics confound, not a method)")
    args = ap.parse_args()

    import torch

    from corda.data.manifest import class_set_name, load_manifest, load_splits, training_part, tuning_split
    from corda.labels import CLASS_SETS
    from corda.log import setup_logging
    from corda.methods import get_method
    from corda.device import resolve_device
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import make_source_sampler, run_training, seg_datasets, set_seeds
    from corda.params import load_params, section

    setup_logging("WARNING")
    p = apply_sets(load_params("params.yaml"), args.sets)
    mcfg, tcfg0 = section(p, "model", ModelConfig), section(p, "train", TrainConfig)
    over = {"eval_every": 0, **({"seed": args.seed} if args.seed is not None else {}),
            **({"iterations": args.iterations, "oracle_iterations": None} if args.iterations else {})}
    tcfg = dataclasses.replace(tcfg0, **over)
    device = resolve_device(tcfg.device)
    splits = load_splits("data/manifest.json")
    class_set = CLASS_SETS[class_set_name(load_manifest("data/manifest.json"))]
    index = tuning_split(splits["target_train"]) if args.split == "tune" else splits["target_val"]
    score = scorer(index, mcfg.num_classes, class_set, tcfg.target_resize_hw, device)

    from benchmarks.ablation import VARIANTS

    for name in args.methods:
        method, mover, tover, exact = VARIANTS.get(name, (name, {}, {}, False))
        row = get_method(method)
        if exact:
            raise SystemExit(f"{name}: run it with benchmarks/ablation.py")
        mcfg_v = dataclasses.replace(mcfg, **mover)
        tcfg_v = dataclasses.replace(tcfg, **tover).for_method(row)
        set_seeds(tcfg.seed)
        train_splits = splits
        if args.split == "tune" and row.target_ground_truth:
            # The oracle trains on target labels: keep the scored items out of its training data.
            train_splits = {**splits, "target_train": training_part(splits["target_train"])}
        src, tgt, _ = seg_datasets(train_splits, tcfg, Path(args.depth_dir),
                                   with_target_labels=row.target_ground_truth)
        t0 = time.perf_counter()
        scratch = Path(f"checkpoints/tune/{args.tag or 'run'}-{name.replace(' ', '_')}-{tcfg.seed}.pt")
        scratch.unlink(missing_ok=True)
        sampler = make_source_sampler(tcfg_v, src) if row.source_batch else None  # rare-class
        student, teacher, _ = run_training(method=row, mcfg=mcfg_v, tcfg=tcfg_v, source_ds=src, target_ds=tgt,
                                           device=device, scratch=scratch, inputs_fp={"tune": args.tag},
                                           source_sampler=sampler)
        seconds = time.perf_counter() - t0
        miou, per_class = score(student)
        t_miou, t_per_class = score(teacher) if teacher is not None else (None, None)
        adabn = (adabn_score(student, score, p, splits["target_train"], tcfg.target_resize_hw, device)
                 if args.adabn else None)
        row = {"tag": args.tag, "method": name, "seed": tcfg.seed, "iterations": tcfg_v.iterations,
               "split": args.split, "sets": args.sets, "miou": round(miou, 1), "per_class": per_class,
               "teacher_miou": None if t_miou is None else round(t_miou, 1), "teacher_per_class": t_per_class,
               "adabn_miou": adabn, "seconds": round(seconds), "threads": torch.get_num_threads()}
        print(json.dumps(row), flush=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
