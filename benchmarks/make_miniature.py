"""Write the miniature real datasets (true size and formats, a few items): corda.data.miniature.

    PYTHONPATH=. python benchmarks/make_miniature.py OUT_DIR [--gta5 4] [--synthia 4] [--cityscapes-train 4]
        [--cityscapes-val 2] [--scale 4] [--workers 2] [--datasets gta5,synthia,cityscapes]

Prints the roots to put in params.yaml (data.source.root, data.target.root, depth.target_files_root) and the
time taken. Layouts, formats and the deliberate irregularities (a GTA5 frame without its label): see the
module docstring of corda/data/miniature.py.
"""

from __future__ import annotations

import argparse
import time

from corda.data.miniature import DATASETS, make_miniature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to write gta5/, synthia/ and cityscapes/ into")
    ap.add_argument("--gta5", type=int, default=4, help="labelled GTA5 frames (default 4)")
    ap.add_argument("--gta5-unlabelled", type=int, default=1, help="GTA5 frames without a label file (default 1)")
    ap.add_argument("--synthia", type=int, default=4, help="SYNTHIA frames (default 4)")
    ap.add_argument("--cityscapes-train", type=int, default=4, help="Cityscapes train items (default 4)")
    ap.add_argument("--cityscapes-val", type=int, default=2, help="Cityscapes val items (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=4,
                    help="render at 1/scale of the true size, then enlarge (1 = ray-cast at true size; slow)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ",".join(DATASETS))
    ap.add_argument("--workers", type=int, default=1, help="processes (the bytes do not depend on it)")
    a = ap.parse_args()
    start = time.perf_counter()
    roots = make_miniature(a.out, gta5=a.gta5, gta5_unlabelled=a.gta5_unlabelled, synthia=a.synthia,
                           cityscapes_train=a.cityscapes_train, cityscapes_val=a.cityscapes_val, seed=a.seed,
                           scale=a.scale, datasets=[d for d in a.datasets.split(",") if d], workers=a.workers)
    print(f"wrote {roots.counts} in {time.perf_counter() - start:.1f} s")
    print(f"data.source.root: {roots.gta5}  (gta5)  or  {roots.synthia}  (synthia)")
    print(f"data.target.root: {roots.cityscapes}")
    print(f"depth.target_files_root: {roots.cityscapes_depth}")


if __name__ == "__main__":
    main()
