"""Throughput and peak memory of the CorDA training step at the paper's configuration.

ResNet-101 DeepLab-v2 (output stride 8), 512×512 crops, 2 source + 2 target images, the EMA teacher's
forward included: one `corda.seg.step.train_step` + backward + SGD step + EMA update per iteration.
Rows: the fp32 eager path (the published recipe's precision, `train.precision: fp32`) first, as the
baseline, then the faster paths of `train.precision` / `train.channels_last` measured in the same run
(through the same `corda.precision` helpers the training loop uses, `train.compile` modes included),
printed with their ratio; then
inference images/s at 512×1024.

``--architecture daformer`` measures the MiT rows (issue 21; ``--mit b5`` as DAFormer) with DAFormer's AdamW groups
(corda.recipe.adamw_param_groups) instead of SGD and its ImageNet feature distance (the frozen encoder's forward
on the source batch, corda.losses.feature_distance), for two methods of the table: ``dacs`` on MiT = DAFormer
itself (no depth branch) and ``corda`` = DAFormer + CorDA's depth decoders, feature exchange and ω. Each row also
gives the hours its step time projects for DAFormer's 40k iterations, next to the reference line: DAFormer reports
about 16 h for 40k iterations on one RTX 2080 Ti (≈1.44 s/step, batch 2+2, 512×512) with 9.7 GB (DAFormer
README and issues lhoyer/DAFormer#42, lhoyer/HRDA#14).

    python benchmarks/train_step.py                 # GPU: the paper's configuration
    python benchmarks/train_step.py --architecture daformer          # GPU: MiT-B5 DAFormer and DAFormer + CorDA
    python benchmarks/train_step.py --architecture daformer --mit b0 --crop 64 --batch 1 --steps 2   # CPU smoke
    python benchmarks/train_step.py --backbone resnet18 --crop 128 --batch 2 --steps 3   # CPU smoke check

Needs only torch (plus this repository's `corda` package).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# The MiT rows: DAFormer alone is the dacs row of corda.methods on the MiT network; + CorDA is the corda row.
DAFORMER_METHODS = (("dacs", "DAFormer"), ("corda", "DAFormer + CorDA"))
# DAFormer's published cost: 40k iterations in about 16 h on one RTX 2080 Ti, 9.7 GB (batch 2+2, 512×512, MiT-B5,
# with RCS and the feature distance): lhoyer/DAFormer#42 and lhoyer/HRDA#14.
DAFORMER_REFERENCE = {"what": "DAFormer MiT-B5, RTX 2080 Ti, published", "sec": 16 * 3600 / 40000, "gb": 9.7,
                      "hours": 16.0}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_kwargs(backbone: str, architecture: str = "deeplabv2", mit: str = "b5") -> dict:
    """``build_seg_model`` keywords: DeepLab-v2 at output stride 8, or MiT-``mit`` + DAFormer decoder."""
    if architecture == "daformer":
        return dict(architecture="daformer", mit=mit, input_norm="imagenet")
    return dict(backbone=backbone, output_stride=8)


def paper_step(backbone: str, batch: int, crop: int, device, channels_last: bool = False, compile: str = "eager",
               architecture: str = "deeplabv2", mit: str = "b5", method: str = "corda"):
    """The CorDA step's parts at the paper's setting: (student, EMA teacher, optimizer, source batch, target batch,
    step config), random inputs of ``batch`` + ``batch`` images of ``crop``² (also used by host_overhead.py).
    The optimizer is the paper's SGD, or DAFormer's AdamW groups for ``architecture="daformer"``; ``method`` is a
    row of corda.methods (``dacs``: no depth branch)."""
    from corda.precision import compile_networks, memory_format, to_layout
    from corda.seg.config import TrainConfig
    from corda.seg.model_file import build_seg_model

    torch.manual_seed(0)
    student = build_seg_model(method, **model_kwargs(backbone, architecture, mit)).to(
        device, memory_format=memory_format(channels_last))
    teacher = copy.deepcopy(student).requires_grad_(False)
    torch._dynamo.reset()
    compile_networks(compile, student, teacher)  # as run_training does
    if architecture == "daformer":
        from corda.recipe import adamw_param_groups

        opt = torch.optim.AdamW(adamw_param_groups(student, 6e-5, 0.01), lr=6e-5, betas=(0.9, 0.999))
    else:
        opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=2.5e-4, momentum=0.9)
    b, c = batch, crop
    src = to_layout({"image": torch.rand(b, 3, c, c, device=device),
                     "label": torch.randint(0, 19, (b, c, c), device=device),
                     "depth": torch.rand(b, 1, c, c, device=device) * 100 + 2}, channels_last)
    tgt = to_layout({"image": torch.rand(b, 3, c, c, device=device),
                     "depth": torch.rand(b, 1, c, c, device=device) * 100 + 2}, channels_last)
    return student, teacher, opt, src, tgt, TrainConfig(method=method)


def imagenet_feature_distance(student, architecture: str):
    """DAFormer's feature distance (weight 0.005, thing classes) for the MiT rows; None for DeepLab-v2. The frozen
    encoder is a copy of the student's (random weights time the same as the ImageNet ones)."""
    if architecture != "daformer":
        return None
    from corda.losses.feature_distance import ImageNetFeatureDistance
    from corda.seg.config import THING_CLASSES

    return ImageNetFeatureDistance(student.backbone, 0.005, THING_CLASSES, 0.75, 19)


def run(variant: dict, args, device) -> tuple[float, float]:
    from corda.precision import autocast, configure_backends
    from corda.seg.step import train_step
    from corda.uda import ema_update

    precision = variant["precision"]
    configure_backends(precision, device)  # TF32 and cudnn.benchmark as in training
    student, teacher, opt, src, tgt, cfg = paper_step(args.backbone, args.batch, args.crop, device,
                                                      variant["channels_last"], variant.get("compile", "eager"),
                                                      args.architecture, args.mit, variant.get("method", "corda"))
    fd = imagenet_feature_distance(student, args.architecture)
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(precision, device):
            out = train_step(student, teacher, src, tgt, cfg, i, gen, fd=fd)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        ema_update(teacher, student, i, 0.999)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return times[len(times) // 2], peak


@torch.no_grad()
def inference(args, device, bf16: bool) -> float:
    from corda.seg.model_file import build_seg_model

    model = build_seg_model("corda", **model_kwargs(args.backbone, args.architecture, args.mit)).to(device).eval()
    x = torch.rand(1, 3, args.crop, 2 * args.crop, device=device)
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)["S"].argmax(1)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return 1.0 / times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--architecture", default="deeplabv2", choices=["deeplabv2", "daformer"])
    ap.add_argument("--mit", default="b5", choices=["b0", "b1", "b2", "b3", "b4", "b5"],
                    help="MiT variant with --architecture daformer")
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2, help="source images = target images per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", nargs="*", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                    help="train.compile modes to add on top of bf16 + channels_last (default on a GPU: default "
                         "and reduce-overhead; none on the CPU, where compiling takes minutes); the warm-up "
                         "steps absorb the compilation")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = [("fp32 eager", dict(precision="fp32", channels_last=False))]
    if device.type == "cuda":
        variants += [("tf32 + channels_last", dict(precision="tf32", channels_last=True)),
                     ("bf16 autocast", dict(precision="bf16", channels_last=False)),
                     ("bf16 + channels_last", dict(precision="bf16", channels_last=True))]
    else:  # the CPU smoke check still exercises the fast path's code (bf16 autocast, NHWC)
        variants += [("bf16 + channels_last", dict(precision="bf16", channels_last=True))]
    modes = args.compile if args.compile is not None else (["default", "reduce-overhead"] if device.type == "cuda" else [])
    variants += [(f"bf16 + channels_last + compile {m}", dict(precision="bf16", channels_last=True, compile=m))
                 for m in modes]
    if args.architecture == "daformer":  # DAFormer alone (dacs on MiT), then DAFormer + CorDA, each path
        variants = [(f"{label}, {name}", {**v, "method": m}) for m, label in DAFORMER_METHODS for name, v in variants]
    rows = []
    for name, v in variants:
        try:
            sec, peak = run(v, args, device)
        except Exception as exc:  # a compile mode that fails here is a result too; the other rows still run
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True)
            continue
        rows.append((name, sec, 2 * args.batch / sec, peak))
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    net = f"MiT-{args.mit.upper()} DAFormer" if args.architecture == "daformer" else f"{args.backbone} OS8"
    print(f"device: {dev}, torch {torch.__version__}, {net}, crop {args.crop}, batch {args.batch}+{args.batch}")
    print("| path | ms/step | images/s | peak GiB | speed-up | h per 40k it |")
    print("|---|---:|---:|---:|---:|---:|")
    if args.architecture == "daformer":
        ref = DAFORMER_REFERENCE
        print(f"| {ref['what']} (reference) | {1000 * ref['sec']:.0f} | {4 / ref['sec']:.1f} | {ref['gb']:.1f} GB | "
              f"| {ref['hours']:.0f} |")
    for name, sec, ips, peak in rows:
        print(f"| {name} | {1000 * sec:.1f} | {ips:.1f} | {peak:.2f} | {rows[0][1] / sec:.2f}x | "
              f"{40000 * sec / 3600:.1f} |")
    print(f"inference {args.crop}x{2 * args.crop}: {inference(args, device, False):.1f} images/s fp32"
          + (f", {inference(args, device, True):.1f} bf16" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
