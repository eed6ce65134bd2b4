"""Where a training step of the embedded default spends its time, per method, on this CPU (issue 17, item 7).

The embedded default's `make repro` is dominated by its five segmentation trainings (600 steps each). This
script builds the default's network and recipe from `params.yaml` (sections `model` and `train`), runs the real
`corda.seg.step.train_step` on batches of the default's shape (batch_source + batch_target crops of crop_hw) and
times each phase of a step:

* forward: `train_step` (student forward passes, the teacher's pseudo-labels, mixing, the losses),
* backward, the optimizer step (AdamW/SGD as `train.optimizer`) and the EMA teacher update,

for source_only, oracle, dacs and corda, with the median over `--steps` steps after `--warmup`. The first row of
each method is the params' network in NCHW and fp32 at the thread count torch picks (whatever
`train.channels_last` and `train.precision` say); the others vary one or two things: channels_last, one thread,
bf16 autocast (the CPU's AVX512-BF16 path, where it has one), and with `--model KEY=VALUE` another network
(e.g. `head=decoder2`, `output_stride=16`; with and without channels_last). With
`--data` (a repository after `dvc repro data depth_maps`) it also times loading one step's batches from disk.
Ratios are against the first (NCHW) row of the same method measured in the same run.

    python benchmarks/default_step.py                       # synthetic batches
    python benchmarks/default_step.py --data . --steps 10   # + data loading from the rendered benchmark

Inputs are random tensors of the real shapes and value ranges; a step's cost does not depend on their
content (no data-dependent control flow beyond ClassMix's class draw).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("source_only", "oracle", "dacs", "corda")


def batches(tcfg, gen: torch.Generator, labels_on_target: bool):
    h, w = tcfg.crop_hw
    bs, bt = tcfg.batch_source, tcfg.batch_target
    src = {"image": torch.rand(bs, 3, h, w, generator=gen),
           "label": torch.randint(0, 19, (bs, h, w), generator=gen),
           "depth": 1.0 + 100.0 * torch.rand(bs, 1, h, w, generator=gen)}
    tgt = {"image": torch.rand(bt, 3, h, w, generator=gen),
           "depth": 1.0 + 100.0 * torch.rand(bt, 1, h, w, generator=gen)}
    if labels_on_target:
        tgt["label"] = torch.randint(0, 19, (bt, h, w), generator=gen)
    return src, tgt


def time_method(method: str, mcfg, tcfg, steps: int, warmup: int, channels_last: bool,
                precision: str = "fp32") -> dict[str, float]:
    """Median milliseconds per phase of one step of ``method`` (forward and losses under ``precision``'s autocast,
    as :func:`corda.seg.run.train_segmentation` runs them)."""
    from corda.methods import get_method
    from corda.precision import autocast, to_layout
    from corda.seg.run import build_optimizer, make_student_teacher, seg_config
    from corda.seg.step import train_step
    from corda.uda import ema_update

    torch.manual_seed(0)
    device = torch.device("cpu")
    row = get_method(method)
    student, teacher = make_student_teacher(mcfg, row, device, channels_last)
    opt = build_optimizer(student, tcfg)
    cfg = seg_config(tcfg, row)
    gen = torch.Generator().manual_seed(0)
    src, tgt = batches(tcfg, gen, row.target_ground_truth)
    src, tgt = to_layout(src, channels_last), to_layout(tgt, channels_last)
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "ema": []}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with autocast(precision, device):
            out = train_step(student, teacher, src, tgt, cfg, i, gen)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if teacher is not None:
            ema_update(teacher, student, i, tcfg.ema_alpha)
        t4 = time.perf_counter()
        if i >= warmup:
            for k, a, b in (("forward", t0, t1), ("backward", t1, t2), ("optimizer", t2, t3), ("ema", t3, t4)):
                phases[k].append(1000 * (b - a))
    res = {k: statistics.median(v) for k, v in phases.items()}
    res["step"] = sum(res.values())
    return res


def time_data(root: Path, tcfg, steps: int) -> dict[str, float]:
    """Median milliseconds to load one step's source and target batches (no workers) from ``root``."""
    import os

    from corda.data.manifest import load_splits
    from corda.seg.run import StepBatches, seg_datasets

    cwd = os.getcwd()
    os.chdir(root)  # the manifest's paths are relative to the repository root
    try:
        src, tgt, _ = seg_datasets(load_splits("data/manifest.json"), tcfg, Path("depth"))
        out = {}
        for name, ds, b in (("source batch", src, tcfg.batch_source), ("target batch", tgt, tcfg.batch_target)):
            it = StepBatches(ds, b, tcfg.seed, 0, steps, workers=0)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                it.next()
                times.append(1000 * (time.perf_counter() - t0))
            out[name] = statistics.median(times)
        return out
    finally:
        os.chdir(cwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="a repository after `dvc repro` (times data loading)")
    ap.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE",
                    help="also time the network with one `model` key changed, e.g. head=decoder2 output_stride=16 "
                         "(each with and without channels_last, against the params' network in the same run)")
    args = ap.parse_args()
    import dataclasses

    import yaml

    from corda.seg.config import ModelConfig, TrainConfig
    from corda.params import load_params, section

    p = load_params(args.params)
    mcfg, tcfg = section(p, "model", ModelConfig), section(p, "train", TrainConfig)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; model {mcfg.backbone} head {mcfg.head}, "
          f"batch {tcfg.batch_source}+{tcfg.batch_target} crops {tcfg.crop_hw[0]}x{tcfg.crop_hw[1]}, "
          f"{tcfg.optimizer}; {args.steps} timed steps after {args.warmup}")
    print("| method | variant | forward | backward | optimizer | EMA | step ms | × NCHW | 600 steps (min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in args.methods:
        base = None
        variants = [("NCHW", mcfg, False, threads, "fp32"), ("channels_last", mcfg, True, threads, "fp32"),
                    ("1 thread", mcfg, False, 1, "fp32"), ("bf16 autocast", mcfg, False, threads, "bf16"),
                    ("bf16 autocast, channels_last", mcfg, True, threads, "bf16"),
                    ("bf16 autocast, channels_last, 1 thread", mcfg, True, 1, "bf16")]
        for item in args.model:
            key, _, value = item.partition("=")
            other = dataclasses.replace(mcfg, **{key: yaml.safe_load(value)})
            variants += [(item, other, False, threads, "fp32"),
                         (f"{item}, channels_last", other, True, threads, "fp32")]
        for variant, mcfg_v, cl, nthreads, precision in variants:
            torch.set_num_threads(nthreads)
            r = time_method(method, mcfg_v, tcfg, args.steps, args.warmup, cl, precision)
            torch.set_num_threads(threads)
            base = base or r["step"]
            print(f"| {method} | {variant} | {r['forward']:.0f} | {r['backward']:.0f} | {r['optimizer']:.0f} | "
                  f"{r['ema']:.0f} | {r['step']:.0f} | {base / r['step']:.2f} | {600 * r['step'] / 60000:.1f} |",
                  flush=True)
    if args.data is not None:
        for name, ms in time_data(args.data, tcfg, args.steps).items():
            print(f"data: {name} {ms:.0f} ms (one process, no workers)")


if __name__ == "__main__":
    main()
