"""Per-item render time of the data stage's renderer (no PNG writing).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/render_speed.py [--n 20] [--repeats 3]

Prints the minimum over repeats of the mean CPU seconds (process time: the machine is shared) per source item, target-train item (4 views) and
target-val item (2 views), at params.yaml's default resolution (BenchmarkConfig defaults).
"""

from __future__ import annotations

import argparse
import time

from corda.data.procedural import benchmark as B


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = B.BenchmarkConfig()
    kinds = {
        "source": lambda i: B.render_source_item(cfg, 0, i),
        "target_train": lambda i: B.render_target_item(cfg, 0, "train", i),
        "target_val": lambda i: B.render_target_item(cfg, 0, "val", i),
    }
    for name, fn in kinds.items():
        fn(0)  # warm-up (imports, caches)
        runs = []
        for _ in range(a.repeats):
            t0 = time.process_time()
            for i in range(a.n):
                fn(i)
            runs.append((time.process_time() - t0) / a.n)
        print(f"{name:13s} {1e3 * min(runs):7.1f} ms/item  (runs: "
              + ", ".join(f"{1e3 * r:.1f}" for r in runs) + ")")


if __name__ == "__main__":
    main()
