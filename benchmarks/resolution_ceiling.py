"""How much IoU a logit grid of a given resolution can reach at all, per class (issue 17, item 1).

Takes the target val labels of a rendered benchmark, averages their one-hot maps over f×f cells (the best a
network predicting at 1/f could output: the exact class fractions of each cell), upsamples those back
bilinearly, and scores the argmax against the labels. No network is involved:
the numbers are ceilings of the output grid, not of a model. A class whose trained IoU sits far below its
ceiling is limited by learning (steps, data), not by the grid.

    python benchmarks/resolution_ceiling.py --data .            # after `dvc repro data`
    python benchmarks/resolution_ceiling.py --data . --split train --factors 2 4 8

Prints one markdown row per factor: mIoU and IoU per class over the benchmark's class set.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("."), help="a repository after `dvc repro data`")
    ap.add_argument("--split", choices=["val", "train"], default="val", help="target split whose labels to use")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.labels import CLASS_NAMES, CLASS_SETS, IGNORE, NUM_CLASSES
    from corda.metrics import ConfusionMatrix

    os.chdir(args.data)  # the manifest's paths are relative to the repository root
    splits = load_splits("data/manifest.json")
    class_set = CLASS_SETS[class_set_name(load_manifest("data/manifest.json"))]
    ds = SegDepthDataset(splits[f"target_{args.split}"], ("label",), None, None, seed=0)
    labels = torch.stack([torch.as_tensor(np.asarray(ds[i]["label"])) for i in range(len(ds))]).long()
    valid = labels != IGNORE
    onehot = F.one_hot(torch.where(valid, labels, 0), NUM_CLASSES).permute(0, 3, 1, 2).float()
    onehot *= valid.unsqueeze(1)

    print(f"{len(ds)} target {args.split} labels, {labels.shape[-2]}×{labels.shape[-1]}")
    print("| grid | mIoU | " + " | ".join(CLASS_NAMES[c] for c in class_set) + " |")
    print("|---|---:|" + "---:|" * len(class_set))
    for f in args.factors:
        if f == 1:
            pred = labels
        else:
            cells = F.avg_pool2d(onehot, f, ceil_mode=True)  # each cell's exact class fractions
            # Cell centres where the cells lie (align_corners=False). The network's own grid has one more row and
            # column (ceil-mode pooling: 33×65 at 1/4 of 128×256) and is upsampled with align_corners=True, which
            # puts its points about f pixels apart from the first pixel: the same placement, to within a pixel.
            pred = F.interpolate(cells, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
        cm = ConfusionMatrix(NUM_CLASSES)
        cm.update(pred, labels)
        iou = cm.iou()
        print(f"| 1/{f} | {100 * float(cm.miou(class_set)):.1f} | "
              + " | ".join(f"{100 * float(iou[c]):.0f}" for c in class_set) + " |", flush=True)


if __name__ == "__main__":
    main()
