"""The paper's comparison and ablations over several seeds, on the current pipeline's data and depth.

Runs source_only, dacs, corda, oracle, corda without the feature exchange (model.distillation=false)
and corda without ω (train.depth_weight=false) for each seed, with params.yaml's settings (after
`dvc repro depth_maps`), and writes mean ± std target-val mIoU to benchmarks/RESULTS.md.

    python benchmarks/ablation.py --seeds 1 2 3             # the full study (hours on 2 CPU cores)
    python benchmarks/ablation.py --seeds 1 --iterations 200  # a quick look
    OMP_NUM_THREADS=1 python benchmarks/ablation.py --seeds 2 --variants dacs --out /tmp/s2.md   # one cell

On a 2-core VM one process per seed with OMP_NUM_THREADS=1 uses the cores best; a 600-iteration corda run
then takes roughly 15-25 min, source_only and oracle about a third of that. Results depend on the thread
count (float summation order), so compare runs made the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

VARIANTS = {  # name: (corda.methods row, model overrides, train overrides, exact target depth)
    "source_only": ("source_only", {}, {}, False),
    "dacs": ("dacs", {}, {}, False),
    "corda": ("corda", {}, {}, False),
    "corda w/o feature exchange": ("corda_no_exchange", {}, {}, False),  # = model.distillation: false
    "corda w/o ω": ("corda_no_omega", {}, {}, False),  # = train.depth_weight: false
    "oracle": ("oracle", {}, {}, False),
    # Diagnostic, not in the paper: the target depth from the renderer instead of the self-supervised network
    # (embedded benchmark only). What corda gains here over "corda" bounds what better depth could add.
    "corda, exact target depth": ("corda", {}, {}, True),
}
DEFAULT_VARIANTS = [name for name, v in VARIANTS.items() if not v[3]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--iterations", type=int, default=None, help="override train.iterations")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default=None,
                    help="override train.precision (the bf16-vs-fp32 accuracy check of issue #7)")
    ap.add_argument("--grad-clip", type=float, default=None,
                    help="override train.grad_clip (0 = no clipping, the paper's recipe)")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()

    from corda.data.manifest import class_set_name, load_manifest, load_splits
    from corda.device import resolve_device
    from corda.engine import NonFiniteLoss
    from corda.labels import CLASS_SETS
    from corda.log import setup_logging
    from corda.methods import get_method
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import make_eval_fn, run_training, seg_datasets, set_seeds
    from corda.params import load_params, section

    setup_logging("WARNING")
    p = load_params("params.yaml")
    mcfg0, tcfg0 = section(p, "model", ModelConfig), section(p, "train", TrainConfig)
    if args.grad_clip is not None:
        tcfg0 = dataclasses.replace(tcfg0, grad_clip=args.grad_clip or None)
    tag = f"-clip{tcfg0.grad_clip:g}" if tcfg0.grad_clip else ""
    device = resolve_device(tcfg0.device)
    splits = load_splits("data/manifest.json")
    class_set = CLASS_SETS[class_set_name(load_manifest("data/manifest.json"))]
    # The paper validates the student (method.md §5); the EMA teacher is scored too, as it makes the pseudo-labels.
    scores: dict[str, list[float]] = {v: [] for v in args.variants}
    teacher_scores: dict[str, list[float]] = {v: [] for v in args.variants}
    teacherless: set[str] = set()  # methods that train no EMA teacher: "—" in its column
    # Built (and checked against the renderer) once, before any run that needs it.
    exact_dir = exact_depth_dir(p, splits) if any(VARIANTS[n][3] for n in args.variants) else None
    for seed in args.seeds:
        for name in args.variants:
            method, mover, tover, exact = VARIANTS[name]
            row = get_method(method)
            mcfg = dataclasses.replace(mcfg0, **mover)
            tcfg = dataclasses.replace(tcfg0, seed=seed, eval_every=0, **tover,
                                       **({"precision": args.precision} if args.precision else {}),
                                       **({"iterations": args.iterations, "oracle_iterations": None}
                                          if args.iterations else {})).for_method(row)
            set_seeds(seed)
            src, tgt, val = seg_datasets(splits, tcfg, exact_dir if exact else Path("depth"),
                                         with_target_labels=row.target_ground_truth)
            ev = make_eval_fn(val, mcfg.num_classes, class_set, 32, 0, device)
            t0 = time.perf_counter()
            try:
                student, teacher, _ = run_training(method=row, mcfg=mcfg, tcfg=tcfg, source_ds=src,
                                                   target_ds=tgt, device=device,
                                                   scratch=Path(f"checkpoints/ablation/{name}-{seed}{tag}.pt"),
                                                   inputs_fp={"ablation": name, "seed": seed})
            except NonFiniteLoss as exc:  # a diverged run is a result too: record it and go on
                print(f"seed {seed}  {name:28s} diverged: {exc}", flush=True)
                scores[name].append(float("nan"))
                teacher_scores[name].append(float("nan"))
                continue
            miou = 100 * ev(student, tcfg.iterations)["val/miou"]
            t_miou = 100 * ev(teacher, tcfg.iterations)["val/miou"] if teacher is not None else float("nan")
            if teacher is None:
                teacherless.add(name)
            scores[name].append(miou)
            teacher_scores[name].append(t_miou)
            print(f"seed {seed}  {name:28s} mIoU {miou:5.1f}  teacher {t_miou:5.1f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    def stats(v: list[float], exists: bool = True) -> tuple[str, str]:
        if not exists:  # the teacher column of a method without one
            return "—", ""
        ok = [x for x in v if x == x]  # NaN = diverged, reported but left out of the mean
        return (f"{np.mean(ok):.1f} ± {np.std(ok):.1f}" if ok else "—",
                ", ".join(f"{x:.1f}" if x == x else "diverged" for x in v))

    lines = ["| method | student mIoU (mean ± std) | per seed | EMA teacher mIoU (mean ± std) | per seed |",
             "|---|---:|---|---:|---|"]
    for name in scores:
        teacher = stats(teacher_scores[name], name not in teacherless)
        lines.append(f"| {name} | {' | '.join(stats(scores[name]))} | {' | '.join(teacher)} |")
    table = "\n".join(lines)
    print(table)
    flags = (f"--seeds {' '.join(map(str, args.seeds))}"
             + (f" --iterations {args.iterations}" if args.iterations else "")
             + (f" --precision {args.precision}" if args.precision else "")
             + (f" --grad-clip {args.grad_clip:g}" if args.grad_clip is not None else ""))
    heading = ("## Ablation" + (f", {args.precision}" if args.precision else "")
               + (f", grad clip {tcfg0.grad_clip:g}" if tcfg0.grad_clip else ", no grad clip"))
    section = (f"{heading} (`python benchmarks/ablation.py {flags}`)\n\n"
               f"Target-val mIoU (%) on the embedded benchmark, params.yaml at the time of the run, "
               f"{tcfg0.iterations if not args.iterations else args.iterations} iterations"
               + (f" (the oracle {tcfg0.oracle_iterations})"
                  if tcfg0.oracle_iterations and not args.iterations and "oracle" in args.variants else "")
               + f".\n\n{table}\n")
    write_section(Path(args.out), heading + " (", section)


def exact_depth_dir(p: dict, splits: dict, out: Path = Path("checkpoints/ablation/exact_depth")) -> Path:
    """A depth folder with the pipeline's source depth (source.h5 or source.json) and a target.h5 of the
    renderer's exact camera-z depth.

    The embedded benchmark writes no disparity for target train (Cityscapes has it; the pipeline does not
    read it), so the depth comes from ``corda.data.procedural.benchmark.target_depth`` with the data stage's seed; the
    first val image is checked against its disparity PNG before anything is used (a wrong seed or config).
    """
    import shutil

    from corda.data.procedural import benchmark as B
    from corda.data import codecs
    from corda.data.datasets import SegDepthDataset
    from corda import paths
    from corda.h5io import write_depth_h5
    from corda.params import section
    from corda.data.config import DataConfig

    dcfg = section(p, "data", DataConfig)
    if dcfg.target.kind != "procedural":
        raise SystemExit("'corda, exact target depth' needs the embedded benchmark (data.target.kind: procedural)")

    def exact(split: str, name: str) -> np.ndarray:
        return B.target_depth(dcfg.procedural, dcfg.seed, split, int(name.split("_")[1]))

    val = SegDepthDataset(splits["target_val"], ("disparity", "K", "baseline"), None, None)[0]
    ref = codecs.disparity_to_depth(val["disparity"][0].numpy(), float(val["baseline"]), float(val["K"][0, 0]))
    mine = exact("val", val["name"])
    ok = np.isfinite(ref) & np.isfinite(mine)
    if ok.mean() < 0.5 or np.nanmax(np.abs(mine[ok] / ref[ok] - 1)) > 0.02:  # the PNG keeps 1/256 px
        raise SystemExit("exact target depth does not match the rendered disparity: was data/ rendered with "
                         "the data section of this params.yaml?")
    if not (out / "target.h5").is_file():
        out.mkdir(parents=True, exist_ok=True)
        # depth_maps writes one: network depth, or the in-place record
        for f in (paths.depth_h5("source"), paths.source_depth_record()):
            if f.is_file():
                shutil.copy2(f, out / f.name)
        names = splits["target_train"].names
        rows = ((n, codecs.depth_to_inv(z), np.minimum(z, 6e4).astype(np.float16))  # float16 tops out at 65504
                for n in names for z in [exact("train", n)])
        write_depth_h5(out / "target.h5", rows, len(names),
                       {"mode": "ground_truth", "model_hash": "", "domain": "target",
                        "min_depth_m": p["depth"]["min_depth_m"], "max_depth_m": p["depth"]["max_depth_m"]})
    return out


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the Markdown section starting with ``heading`` (up to the next ``## ``) in ``path``, or append it."""
    doc = path.read_text() if path.exists() else "# Benchmark results\n"
    start = doc.find(heading)
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(heading))
        doc = doc[:start] + text + (doc[end:] if end >= 0 else "")
    path.write_text(doc)

if __name__ == "__main__":
    main()
