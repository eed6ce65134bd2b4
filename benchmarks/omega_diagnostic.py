"""Why does ω not find the wrong pseudo-labels? A diagnostic over a finished pipeline run (issue 17, claim 6).

ω (method.md §4) is the agreement of the source- and target-trained depth decoders on a target pixel; the
paper reads a disagreement as "hard to adapt" and down-weights that pixel's pseudo-label. The pipeline's
`pseudo_labels` stage measures ω's AUROC as a detector of wrong pseudo-labels on target train
(`metrics/pseudo_labels.json`). This script asks what ω tracks instead, from the run's artefacts only (no
model is run): `pseudo/target.h5` (pseudo-label, confidence, ω per pixel), `depth/target.h5` (the target
depth network's metric depth) and the target train labels.

Tables (every `--stride`-th target train image):

* rows of the image in bands: the pseudo-label error rate, mean ω, ω's AUROC within the band and the
  confidence's; a camera difference between the domains (height, pitch) shows as ω varying with the row,
  because the ground plane's depth at a given row depends on the camera;
* ω with its per-row mean removed, against ω itself (does the row explain ω's ranking?);
* by ground-truth class and by depth band: error rate, mean ω, ω's AUROC within the group.

    python benchmarks/omega_diagnostic.py --run .                # in a repository after `dvc repro`
    python benchmarks/omega_diagnostic.py --run /path/to/clone --stride 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _auroc(score_wrong: np.ndarray, wrong: np.ndarray) -> float:
    from corda.pseudo import auroc

    if wrong.all() or not wrong.any():
        return float("nan")
    return auroc(score_wrong, wrong)


def load(run: Path, stride: int):
    """(pseudo-label, gt, ω, confidence, depth_m) arrays, (N, H, W), over every ``stride``-th target image."""
    import h5py

    from corda.data.datasets import SegDepthDataset
    from corda.data.manifest import load_splits

    split = load_splits(run / "data/manifest.json")["target_train"]
    with h5py.File(run / "pseudo/target.h5", "r") as pl, h5py.File(run / "depth/target.h5", "r") as dep:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in pl["names"][:]]
        dnames = [n.decode() if isinstance(n, bytes) else str(n) for n in dep["names"][:]]
        rows = list(range(0, len(names), stride))
        drow = {n: i for i, n in enumerate(dnames)}
        lab = pl["label"][rows]
        omega = pl["depth_weight"][rows].astype(np.float32)
        conf = pl["confidence"][rows].astype(np.float32)
        depth = np.stack([dep["depth_m"][drow[names[r]]] for r in rows]).astype(np.float32)
    ds = SegDepthDataset(split, ("label",), None, None, seed=0)
    by_name = {n: i for i, n in enumerate(split.names)}
    gt = np.stack([ds[by_name[names[r]]]["label"].numpy() for r in rows]).astype(np.int64)
    return lab, gt, omega, conf, depth


def table(title: str, header: list[str], rows: list[list]) -> str:
    out = [f"\n{title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("."), help="a repository after `dvc repro`")
    ap.add_argument("--stride", type=int, default=4, help="use every STRIDE-th target train image")
    ap.add_argument("--bands", type=int, default=8, help="horizontal bands of image rows")
    args = ap.parse_args()

    import os

    from corda.labels import CLASS_NAMES

    os.chdir(args.run)  # the manifest's paths are relative to the repository root
    lab, gt, omega, conf, depth = load(Path("."), args.stride)
    n, h, w = lab.shape
    valid = gt != 255
    wrong = (lab != gt) & valid
    print(f"{n} target train images of {h}×{w}; {valid.mean():.3f} of pixels labelled; "
          f"pseudo-label error rate {wrong[valid].mean():.3f}")
    v = valid
    print(f"AUROC for a wrong pseudo-label: 1-ω {_auroc(1 - omega[v], wrong[v]):.3f}, "
          f"1-confidence {_auroc(1 - conf[v], wrong[v]):.3f}")

    # ω against the image row: a camera difference between the domains would make it row-structured.
    row_mean = np.array([omega[:, r][valid[:, r]].mean() if valid[:, r].any() else np.nan for r in range(h)])
    detrended = omega - row_mean[None, :, None]
    print(f"ω with its per-row mean removed: AUROC {_auroc(-detrended[v], wrong[v]):.3f}; the row mean alone: "
          f"{_auroc(-np.broadcast_to(row_mean[None, :, None], omega.shape)[v], wrong[v]):.3f}")
    rows = []
    for b in range(args.bands):
        sl = slice(b * h // args.bands, (b + 1) * h // args.bands)
        m = valid[:, sl]
        wr, om, cf = wrong[:, sl][m], omega[:, sl][m], conf[:, sl][m]
        rows.append([f"{sl.start}-{sl.stop - 1}", round(float(m.mean()), 3), float(wr.mean()), float(om.mean()),
                     _auroc(1 - om, wr), _auroc(1 - cf, wr)])
    print(table("By image row band (0 = top):", ["rows", "labelled", "error rate", "mean ω", "AUROC ω",
                                                  "AUROC conf"], rows))

    rows = []
    for c in np.unique(gt[valid]):
        m = gt == c
        wr, om = wrong[m], omega[m]
        rows.append([CLASS_NAMES[c], float(m.mean()), float(wr.mean()), float(om.mean()), _auroc(1 - om, wr),
                     _auroc(1 - conf[m], wr)])
    print(table("By ground-truth class:", ["class", "share", "error rate", "mean ω", "AUROC ω", "AUROC conf"],
                rows))

    rows = []
    edges = [0, 5, 10, 20, 40, 80, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = valid & (depth >= lo) & (depth < hi)
        if m.sum() < 100:
            continue
        wr, om = wrong[m], omega[m]
        rows.append([f"{lo}-{hi} m", float(m.sum() / valid.sum()), float(wr.mean()), float(om.mean()),
                     _auroc(1 - om, wr)])
    print(table("By target-network depth:", ["depth", "share", "error rate", "mean ω", "AUROC ω"], rows))


if __name__ == "__main__":
    main()
