"""Host-side work of one CorDA training step: operators dispatched and host-device syncs, by phase.

At the paper's batch (2 + 2 images of 512×512) an H100 finishes the step's arithmetic in under 10 ms, so the
eager step is bound by the host: every operator the Python side dispatches is (at least) one CUDA kernel
launch, and every sync (``.item()``, ``float(t)``, ``bool(t)``, data-dependent shapes) drains the launch
queue. This script counts both on any device, with a tiny crop so the arithmetic is negligible, for the
phases of `corda.engine.Trainer`'s step with `corda.seg.step.train_step` (CorDA, teacher forward included):

* forward: operators called from Python (each one a launch on a GPU),
* backward: autograd nodes evaluated,
* optimizer (SGD, momentum; on CUDA torch takes its multi-tensor path by itself, on a CPU a per-tensor loop),
  EMA teacher update, and the loop's NaN check + term logging;
* on a GPU also the syncs per phase (``torch.cuda.set_sync_debug_mode``); a CPU has no such thing to count,

comparing, in the same run, the per-tensor EMA loop the project used before (the baseline) with
`corda.uda.ema_update`, and the loop's former per-term ``float()`` logging with one stacked check.

    python benchmarks/host_overhead.py                     # ResNet-101, the paper's network
    python benchmarks/host_overhead.py --backbone resnet18 # quicker

Counts, not times, are the result on a CPU: CPU time at any crop is dominated by arithmetic and memory
traffic, while the counts are what a GPU pays launch overhead for. Needs only torch.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("forward", "backward", "optimizer", "ema", "nan check + logging")


@torch.no_grad()
def ema_loop(teacher, student, step, alpha=0.999):
    """The former `ema_update`: one mul_ and one add_ per parameter tensor (the baseline row)."""
    a = min(1.0 - 1.0 / (step + 1), alpha)
    for p_t, p_s in zip(teacher.parameters(), student.parameters(), strict=True):
        p_t.mul_(a).add_(p_s.detach(), alpha=1.0 - a)


def log_per_term(terms):
    """The loop's former bookkeeping: a finite check and a ``float()`` per term, every step."""
    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
    return bad, {k: float(v.detach()) for k, v in terms.items() if v.numel() == 1}


def count_ops(events) -> Counter:
    """Operators dispatched from Python (not inside another operator) and autograd nodes, by phase."""
    ops = Counter()
    for e in events:
        phase, nested = e.cpu_parent, False
        while phase is not None and phase.name not in PHASES:
            nested |= phase.name.startswith(("aten::", "autograd::"))
            phase = phase.cpu_parent
        if e.name.startswith("autograd::engine::evaluate_function"):
            ops["backward"] += 1
        elif phase is not None and e.name.startswith("aten::") and not nested:
            ops[phase.name] += 1
    return ops


@contextlib.contextmanager
def phase(name: str, syncs: Counter, device: torch.device):
    """A profiler range; on a GPU also counts the host-device syncs inside (``set_sync_debug_mode``)."""
    with record_function(name), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    syncs[name] += sum("synchroniz" in str(w.message) for w in caught)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--crop", type=int, default=64, help="tiny on purpose: the counts do not depend on it")
    ap.add_argument("--batch", type=int, default=2, help="source images = target images per step")
    args = ap.parse_args()

    from train_step import paper_step  # this folder is on sys.path when a script in it runs

    from corda.engine import check_terms
    from corda.seg.step import train_step
    from corda.uda import ema_update

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    b, c = args.batch, args.crop
    student, teacher, opt, src, tgt, cfg = paper_step(args.backbone, b, c, device)

    def step(i, gen, ema, bookkeeping, syncs):
        with phase("forward", syncs, device):
            terms = train_step(student, teacher, src, tgt, cfg, i, gen)
        with phase("nan check + logging", syncs, device):
            bookkeeping({k: v for k, v in terms.items() if torch.is_tensor(v)})
        opt.zero_grad(set_to_none=True)
        with phase("backward", syncs, device):
            terms["loss"].backward()
        with phase("optimizer", syncs, device):
            opt.step()
        with phase("ema", syncs, device):
            ema(teacher, student, i, 0.999)

    rows = []
    for name, ema, bookkeeping in (("before: per-tensor EMA, per-term float()", ema_loop, log_per_term),
                                   ("now: multi-tensor EMA, one stacked check", ema_update, check_terms)):
        gen = torch.Generator().manual_seed(0)  # the same augmentation and ClassMix draws in both rows
        step(0, gen, ema, bookkeeping, Counter())  # warm-up: lazy state (momentum buffers, cudnn plans)
        syncs = Counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(1, gen, ema, bookkeeping, syncs)
        rows.append((name, count_ops(prof.events()), syncs))

    n_params = len(list(student.parameters()))
    print(f"device: {device.type}, torch {torch.__version__}, {args.backbone} OS8 ({n_params} parameter tensors), "
          f"batch {b}+{b}, crop {c}")
    gpu = device.type == "cuda"
    print("| step | " + " | ".join(f"{p} ops" for p in PHASES) + " | total ops | syncs |")
    print("|---|" + "---:|" * (len(PHASES) + 2))
    for name, ops, syncs in rows:
        print(f"| {name} | " + " | ".join(str(ops[p]) for p in PHASES) + f" | {sum(ops.values())} | "
              + (f"{sum(syncs.values())} ({', '.join(f'{k} {v}' for k, v in syncs.items() if v)})" if gpu else "n/a")
              + " |")
    base, now = sum(rows[0][1].values()), sum(rows[1][1].values())
    print(f"operators dispatched per step: {base} -> {now} ({base / now:.2f}x fewer)"
          + ("" if gpu else "; syncs are counted on a GPU only (torch.cuda.set_sync_debug_mode)"))


if __name__ == "__main__":
    main()
