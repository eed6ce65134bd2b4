"""Write docs/benchmark_strip.png from the rendered benchmark (run after `dvc repro data`).

Columns: source image (SYNTHIA layout) | its labels | target image (Cityscapes layout) | its labels |
target depth (from the disparity ground truth of the val split).
"""

from pathlib import Path

import numpy as np

from corda.data import codecs
from corda.data.datasets import SegDepthDataset
from corda.data.manifest import load_splits
from corda.io import write_png
from corda.labels import colorize


def main(rows: int = 3, out: str = "docs/benchmark_strip.png") -> None:
    splits = load_splits("data/manifest.json")
    src = SegDepthDataset(splits["source"], ("image", "label"), None, None)
    tgt = SegDepthDataset(splits["target_val"], ("image", "label", "disparity", "K", "baseline"), None, None)
    lines = []
    for i in range(rows):
        s, t = src[i * 7], tgt[i * 5]
        disp = t["disparity"][0].numpy()
        z = codecs.disparity_to_depth(disp, float(t["baseline"]), float(t["K"][0, 0]))
        inv = np.where(np.isfinite(z), 1.0 / np.clip(z, 1.0, 80.0), 0.0)
        grey = (255 * inv / inv.max()).astype(np.uint8)
        panels = [(s["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8), colorize(s["label"].numpy().astype(np.uint8)),
                  (t["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8), colorize(t["label"].numpy().astype(np.uint8)),
                  np.stack([grey] * 3, -1)]
        gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
        lines.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], 1))
    hgap = np.full((4, lines[0].shape[1], 3), 255, np.uint8)
    write_png(Path(out), np.concatenate([x for l in lines for x in (l, hgap)][:-1], 0))


if __name__ == "__main__":
    main()
