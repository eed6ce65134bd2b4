"""The embedded benchmark's properties and the paper's claims, judged over seeds from benchmarks/tune.py logs.

    python benchmarks/tune.py --split val --seed 1 --tag v2 ...   # one line per run in benchmarks/tune_log.jsonl
    python benchmarks/properties.py --tag v2 --split val          # mean ± std per method, then the checks
    # several tags: a later tag's run of a (method, seed) replaces an earlier's (session 11 re-ran the oracle)
    python benchmarks/properties.py --tag v4-seeds v5-seeds --log benchmarks/v4_seeds_log.jsonl

Properties of a useful benchmark (issue 17), checked on the student's target mIoU:
    the oracle reaches ≥ 75 mIoU with every class ≥ 30 IoU;
    source_only keeps 30–60 % of the oracle's mIoU;
    dacs ≥ source_only + 5.
The paper's claims (measured after the benchmark is fixed, never used to fix it):
    corda ≥ dacs + 3; the feature exchange and ω each add ≥ 0.5 over their ablation.
A method with no run is reported as missing, never as passing.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

CLASSES = ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "terrain", "sky", "person", "car")


def load(path: Path, tags: list[str], split: str) -> dict[str, list[dict]]:
    """{method: [run rows]} for the tags and one split. A run of the same (method, seed) under a later tag of
    ``tags`` replaces an earlier tag's (a study that re-ran one method), and a later line an earlier one."""
    runs: dict[tuple[str, int], tuple[int, dict]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["tag"] in tags and row["split"] == split:
            rank = tags.index(row["tag"])
            key = (row["method"], row["seed"])
            if key not in runs or runs[key][0] <= rank:
                runs[key] = (rank, row)
    runs = {k: row for k, (_, row) in runs.items()}
    out: dict[str, list[dict]] = defaultdict(list)
    for (method, _), row in sorted(runs.items(), key=lambda kv: kv[0][1]):
        out[method].append(row)
    return out


SCORE = "miou"  # the run-row key the checks read (--score)


def mean(rows: list[dict], key: str | None = None) -> float:
    key = key or SCORE
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def checks(by: dict[str, list[dict]]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows; met is None when a method it needs has no run."""
    m = {k: mean(v) for k, v in by.items()}

    def have(*names: str) -> bool:
        return all(n in m for n in names)

    rows: list[tuple[str, str, bool | None]] = []
    if have("oracle"):
        per_class = np.mean([r["per_class"] for r in by["oracle"]], axis=0)
        worst = int(np.argmin(per_class))
        rows.append(("oracle ≥ 75 mIoU", f"{m['oracle']:.1f}", m["oracle"] >= 75))
        rows.append(("every oracle class ≥ 30 IoU", f"lowest: {CLASSES[worst]} {per_class[worst]:.1f}",
                     bool(per_class.min() >= 30)))
    else:
        rows += [("oracle ≥ 75 mIoU", "no run", None), ("every oracle class ≥ 30 IoU", "no run", None)]
    pairs = [
        ("source_only keeps 30–60 % of the oracle", "source_only", "oracle", None),
        ("dacs ≥ source_only + 5", "dacs", "source_only", 5.0),
        ("corda ≥ dacs + 3", "corda", "dacs", 3.0),
        ("feature exchange adds ≥ 0.5", "corda", "corda w/o feature exchange", 0.5),
        ("ω adds ≥ 0.5", "corda", "corda w/o ω", 0.5),
    ]
    for goal, a, b, margin in pairs:
        if not have(a, b):
            rows.append((goal, "no run", None))
        elif margin is None:
            ratio = m[a] / m[b]
            rows.append((goal, f"{m[a]:.1f} / {m[b]:.1f} = {100 * ratio:.0f} %", 0.3 <= ratio <= 0.6))
        else:
            rows.append((goal, f"{m[a]:.1f} − {m[b]:.1f} = {m[a] - m[b]:+.1f}", m[a] - m[b] >= margin))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", default="benchmarks/tune_log.jsonl")
    ap.add_argument("--tag", nargs="+", required=True,
                    help="one or more tags; a later tag's run of a (method, seed) replaces an earlier tag's")
    ap.add_argument("--split", choices=["tune", "val"], default="val")
    ap.add_argument("--score", choices=["miou", "adabn_miou"], default="miou",
                    help="the student's mIoU with its own BN statistics, or with statistics re-estimated on target "
                         "train images (tune.py --adabn; corda/adabn.py); per-class IoU stays the former's")
    args = ap.parse_args()
    global SCORE
    SCORE = args.score
    by = load(Path(args.log), args.tag, args.split)
    if not by:
        raise SystemExit(f"{args.log}: no runs with tag {' '.join(args.tag)!r} on split {args.split!r}")
    print(f"| method | seeds | student {SCORE} | EMA teacher | {' | '.join(CLASSES)} |")
    print("|---|---:|---:|---:|" + "---:|" * len(CLASSES))
    for method, rows in by.items():
        vals = [r[SCORE] for r in rows if r.get(SCORE) is not None]
        teacher = [r["teacher_miou"] for r in rows if r.get("teacher_miou") is not None]
        per_class = np.mean([r["per_class"] for r in rows], axis=0)
        t = f"{np.mean(teacher):.1f} ± {np.std(teacher):.1f}" if teacher else "—"
        print(f"| {method} | {len(rows)} | {np.mean(vals):.1f} ± {np.std(vals):.1f} | {t} | "
              + " | ".join(f"{x:.0f}" for x in per_class) + " |")
    print("\n| goal | measured (student means) | met? |\n|---|---|---|")
    for goal, measured, met in checks(by):
        print(f"| {goal} | {measured} | {'—' if met is None else ('yes' if met else 'no')} |")


if __name__ == "__main__":
    main()
