"""Compose docs/predict_example.png from a `python -m stages.predict` output folder (README figure).

    python -m stages.predict data/benchmark/target/leftImg8bit/val/elmsford --out /tmp/pred --overwrite
    python docs/make_predict_figure.py data/benchmark/target/leftImg8bit/val/elmsford /tmp/pred --rows 3

Columns: input | overlay | depth (colour) | difficulty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path)
    ap.add_argument("predictions", type=Path)
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("predict_example.png"))
    args = ap.parse_args()
    stems = sorted(p.relative_to(args.predictions / "overlay").with_suffix("")
                   for p in (args.predictions / "overlay").rglob("*.png"))[: args.rows]
    rows = []
    for stem in stems:
        src = next(args.images.glob(f"{stem}.*"))
        cells = [np.asarray(Image.open(src).convert("RGB"))]
        cells += [np.asarray(Image.open(args.predictions / kind / f"{stem}.png").convert("RGB"))
                  for kind in ("overlay", "depth_color", "difficulty")]
        gap = np.full((cells[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([c for cell in cells for c in (cell, gap)][:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    Image.fromarray(np.concatenate([r for row in rows for r in (row, hgap)][:-1], axis=0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
