"""Throughput and peak memory of the self-supervised depth training step (issue: depth benchmark).

Times `corda.depth.step.depth_train_step` + backward + Adam on random stereo batches, for each
configuration, and prints a table with the ratio against the first row (the baseline measured in
the same run). On a GPU it compares fp32 with bf16 autocast.

    python benchmarks/depth_step.py                      # CPU: the embedded default (64x128, batch 8)
    python benchmarks/depth_step.py --hw 192 640 --batch 12   # Monodepth2's KITTI size
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench(cfg, batch: int, hw: tuple[int, int], device: torch.device, amp: bool, steps: int, warmup: int):
    from corda.depth.step import build_depth_models, depth_train_step

    torch.manual_seed(0)
    models = {k: m.to(device) for k, m in build_depth_models(cfg).items()}
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=1e-4)
    h, w = hw
    K = torch.tensor([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1]]).expand(batch, 3, 3).contiguous()
    b = {"image": torch.rand(batch, 3, h, w), "right": torch.rand(batch, 3, h, w), "prev": torch.rand(batch, 3, h, w),
         "next": torch.rand(batch, 3, h, w), "K": K, "baseline": torch.full((batch,), 0.5)}
    b = {k: v.to(device) for k, v in b.items()}
    g = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = depth_train_step(models, b, cfg, g)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, MiB
    return med, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hw", type=int, nargs=2, default=[64, 128])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    from corda.depth.config import DepthConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    modes = ["stereo", "mono", "mono+stereo"]
    for mode in modes:
        cfg = DepthConfig(mode=mode, min_depth_m=1.0)
        for amp in ([False, True] if device.type == "cuda" else [False]):
            med, peak = bench(cfg, args.batch, tuple(args.hw), device, amp, args.steps, args.warmup)
            rows.append((mode, "bf16" if amp else "fp32", med, args.batch / med, peak))
    base = rows[0][2]
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, {args.hw[0]}x{args.hw[1]}")
    print(f"| mode | precision | s/step | images/s | peak MiB | speed vs {rows[0][0]} {rows[0][1]} |")
    print("|---|---|---:|---:|---:|---:|")
    for mode, prec, med, ips, peak in rows:
        print(f"| {mode} | {prec} | {med:.3f} | {ips:.1f} | {peak:.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
