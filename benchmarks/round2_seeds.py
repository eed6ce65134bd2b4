"""Round 1 and round 2 over training seeds (issue 17: "round 2 ≥ round 1 + 1"), on the pipeline's data.

For one training seed, in a work folder whose data/ and depth/ are links to this checkout's (run `dvc repro
depth_maps` first), runs the stages the pipeline runs for round 2: ``train --method corda`` with
``train.seed`` set, ``pseudo_labels`` and ``self_train``. A stage whose output exists is skipped, so a
killed run goes on where it stopped. Then scores round 1's student and round 2 on target val with each
model's own BN statistics and with statistics from target train images (as the evaluate stage does) and
appends one JSON line per model to ``--log`` in benchmarks/tune.py's format (benchmarks/properties.py).

    OMP_NUM_THREADS=1 python benchmarks/round2_seeds.py --seed 2 --tag v5-round2 \
        --log benchmarks/v4_seeds_log.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

STAGES = (("models/corda.pt", ["train", "--method", "corda"]), ("pseudo/target.h5", ["pseudo_labels"]),
          ("models/corda_round2.pt", ["self_train"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True, help="train.seed of round 1")
    ap.add_argument("--tag", default="round2")
    ap.add_argument("--log", default="benchmarks/tune_log.jsonl")
    args = ap.parse_args()

    work = ROOT / "checkpoints" / "round2" / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("data", "depth"):
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name)
    from corda.params import load_params

    params = load_params(ROOT / "params.yaml")
    params["train"]["seed"] = args.seed
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for out, cmd in STAGES:
        if not (work / out).exists():
            stage = [sys.executable, "-m", f"stages.{cmd[0]}", *cmd[1:]]
            subprocess.run(stage, cwd=work, env=env, check=True)

    import torch

    from benchmarks.tune import adabn_score, scorer
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.device import resolve_device
    from corda.labels import CLASS_SETS
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.model_file import load_model
    from corda.params import section

    device = resolve_device("auto")
    manifest = ROOT / "data" / "manifest.json"
    splits, class_set = load_splits(manifest), CLASS_SETS[class_set_name(load_manifest(manifest))]
    resize = section(params, "train", TrainConfig).target_resize_hw
    num_classes = section(params, "model", ModelConfig).num_classes
    score = scorer(splits["target_val"], num_classes, class_set, resize, device)
    for method, path in (("corda", "models/corda.pt"), ("corda_round2", "models/corda_round2.pt")):
        model, _ = load_model(work / path, device)
        miou, per_class = score(model)
        row = {"tag": args.tag, "method": method, "seed": args.seed, "split": "val", "sets": [],
               "miou": round(miou, 1), "per_class": per_class, "teacher_miou": None,
               "teacher_per_class": None,
               "adabn_miou": adabn_score(model, score, params, splits["target_train"], resize, device),
               "threads": torch.get_num_threads()}
        print(json.dumps(row), flush=True)
        with open(ROOT / args.log, "a") as f:
            f.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    main()
