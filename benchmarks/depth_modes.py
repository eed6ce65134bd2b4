"""Which `depth.mode` to use: stereo vs mono vs mono+stereo on the full benchmark (issue: depth).

For each mode, runs the real `depth_pretrain` and `depth_maps` stages with params.yaml's depth
section (only `mode` changed) in a scratch folder that links the workspace's `data/`, and prints
the target-val depth metrics of each (standard protocol: median scaling for mono, none for the
metric stereo modes) with the wall time, as a Markdown table. Needs `dvc repro data` first.

    python benchmarks/depth_modes.py                       # all three modes (~15 min on 2 CPU cores)
    python benchmarks/depth_modes.py --modes stereo mono --iterations 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corda.eval_files import read_detail  # noqa: E402  (the repository's, not an installed copy)
from corda.paths import DEPTH_METRICS  # noqa: E402


def run_mode(mode: str, iterations: int | None, work: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["depth"]["mode"] = mode
    if iterations:
        params["depth"]["iterations"] = iterations
    work.mkdir(parents=True)
    (work / "data").symlink_to(ROOT / "data")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", "CORDA_LOG_LEVEL": "WARNING"}
    t0 = time.perf_counter()
    for stage in ("depth_pretrain", "depth_maps"):
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, env=env, check=True)
    metrics = read_detail(work / DEPTH_METRICS)
    return {"mode": mode, "minutes": (time.perf_counter() - t0) / 60, **metrics["target"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["stereo", "mono", "mono+stereo"],
                    choices=["stereo", "mono", "mono+stereo"])
    ap.add_argument("--iterations", type=int, default=None, help="override depth.iterations")
    args = ap.parse_args()
    if not (ROOT / "data/manifest.json").is_file():
        sys.exit("data/manifest.json not found: run `dvc repro data` first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="depth_modes_") as tmp:
        for mode in args.modes:
            rows.append(run_mode(mode, args.iterations, Path(tmp) / mode.replace("+", "_")))
            print(json.dumps(rows[-1]), flush=True)
    keys = ["abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"]
    print("\n| depth.mode | " + " | ".join(keys) + " | stage minutes |")
    print("|---|" + "---:|" * (len(keys) + 1))
    for r in rows:
        print(f"| {r['mode']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + f" | {r['minutes']:.1f} |")


if __name__ == "__main__":
    main()
