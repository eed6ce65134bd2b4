"""Device check (issue 28, item 5): each preset's training step at true size on a CUDA machine, in one command.

For every preset in ``params/`` (GTA5 / SYNTHIA → Cityscapes with ResNet-101 DeepLab-v2 and with MiT-B5 DAFormer)
it builds the preset's own ``model`` and ``train`` sections as the ``train`` stage does (typed configs,
:func:`corda.seg.run.make_student_teacher`, :func:`corda.seg.run.build_optimizer`, the DAFormer feature distance),
with **random weights** (``model.pretrained`` set to null: no weights file is needed) and runs the library's
real iteration on synthetic tensors of the preset's true shapes (``train.batch_source`` + ``train.batch_target``
crops of ``train.crop_hw``): :func:`corda.seg.step.train_step` under :func:`corda.precision.autocast`, backward,
the optimizer step and :func:`corda.uda.ema_update`, exactly the order of :func:`corda.seg.run.run_training`. The
data pipeline is not part of it (``benchmarks/cost.py`` measures the CPU side).

Rows: fp32 (the published recipe), TF32 and bf16 autocast, each with and without ``channels_last``, and
``torch.compile`` (``default``), ordered by priority under a global time budget (``--budget-s``, default 510 s so
that the whole command, imports and CUDA start included, ends within 10 minutes). Each row measures up to
``--steps`` iterations after ``--warmup`` and at most ``--row-seconds`` of measuring; a row that would not fit
the remaining budget is listed as skipped. Compiled rows run in a child process with a timeout (a compile that
hangs cannot take the budget with it). With two or more GPUs (or ``--ddp``) a 2-process DistributedDataParallel
step of the first preset runs at the end (:func:`corda.distributed.wrap`, the global batch split over the ranks
as ``train.devices: 2`` does).

Prints a table with images/s (source + target images per second), ms/step, peak GPU memory (allocated and
reserved by PyTorch's caching allocator, GiB), the hours one preset run of ``train.iterations`` would take at
that rate, beside the published anchors: DAFormer trains 40k iterations in 16 h on one RTX 2080 Ti with 9.7 GB
(batch 2+2, 512×512; DAFormer README, lhoyer/DAFormer#42); mmsegmentation's SegFormer MiT-B5 needs 7.2 GB at
512×512 (batch 2 per GPU, supervised). Writes everything to ``--out`` (JSON).

    python benchmarks/device_check.py --out device_check.json     # CUDA machine: the real check (< 10 min)
    python benchmarks/device_check.py --dry-run                    # the plan: presets, shapes, rows
    python benchmarks/device_check.py --cpu-smoke --out /tmp/dc.json   # CPU path (tests/test_device_check.py)
    python benchmarks/device_check.py --cpu-smoke --ddp            # + the 2-process DDP path on gloo

``--cpu-smoke`` keeps every preset's recipe, batch and code path but shrinks the crop to 64×64 and the
networks to ResNet-18 / MiT-B0 (the true networks are too slow for a test on 2 CPU cores); its numbers are
not a measurement of anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("gta2cityscapes", "gta2cityscapes_daformer", "synthia2cityscapes", "synthia2cityscapes_daformer")
from corda.methods import CORDA as METHOD  # noqa: E402  the presets' headline method (stage train_corda)

# Published anchors (per iteration: batch 2 source + 2 target at 512×512).
ANCHORS = (
    {"what": "DAFormer MiT-B5, 1x RTX 2080 Ti (published: 40k it in 16 h, 9.7 GB)",
     "sec_per_step": 16 * 3600 / 40000, "images_per_step": 4, "gb": 9.7},
    {"what": "mmsegmentation SegFormer MiT-B5 512x512 (published memory, supervised, 2 img/GPU)",
     "sec_per_step": None, "images_per_step": 2, "gb": 7.2},
)


@dataclasses.dataclass(frozen=True)
class Variant:
    precision: str = "fp32"  # fp32 | tf32 | bf16 (corda.precision)
    channels_last: bool = False
    compile: str = "eager"  # eager | a torch.compile mode

    @property
    def name(self) -> str:
        parts = [self.precision] + (["channels_last"] if self.channels_last else [])
        if self.compile != "eager":
            parts.append(f"compile {self.compile}")
        return " + ".join(parts)


def variants(cuda: bool) -> list[tuple[int, Variant]]:
    """(priority, variant) of each row; lower priority runs first. On the CPU only fp32 and bf16 + channels_last
    (TF32 and cuDNN switches do nothing there, compiling takes minutes)."""
    if not cuda:
        return [(0, Variant()), (1, Variant("bf16", True))]  # plan() keeps the second for the first preset only
    rows = [(0, Variant())]  # the published fp32 recipe first: the baseline of every ratio
    rows += [(1, Variant("bf16", True)), (1, Variant("tf32", True))]
    rows += [(2, Variant("tf32")), (2, Variant("bf16")), (2, Variant("fp32", True))]
    rows += [(3, Variant("bf16", True, "default"))]
    rows += [(4, Variant("fp32", False, "default")), (4, Variant("tf32", True, "default"))]
    return rows


def plan(presets: tuple[str, ...], cuda: bool) -> list[tuple[str, Variant]]:
    """Every (preset, variant) row in run order: by priority, then preset. The SYNTHIA presets train the same
    networks as the GTA5 ones (a different initial head and class weights at most), so their compiled rows come
    last."""
    rows = []
    for prio, v in variants(cuda):
        for i, p in enumerate(presets):
            if not cuda and prio > 0 and i > 0:
                continue
            synthia_compile = v.compile != "eager" and p.startswith("synthia")
            rows.append((prio + (10 if synthia_compile else 0), i, p, v))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(p, v) for _, _, p, v in rows]


# ------------------------------------------------------------------------------------------------------------
# One preset's step


def preset_configs(preset: str, small: bool, crop: int | None, batch: int | None = None):
    """(ModelConfig, TrainConfig) of ``params/<preset>.yaml`` as the train stage reads them, with random weights
    (``model.pretrained: null``); ``small``: ResNet-18 / MiT-B0 with 16-channel heads instead of the preset's
    network; ``crop``: a square crop instead of ``train.crop_hw``; ``batch``: source = target images per step."""
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.params import load_params, section

    params = load_params(ROOT / "params" / f"{preset}.yaml")
    mcfg = dataclasses.replace(section(params, "model", ModelConfig), pretrained=None)
    tcfg = section(params, "train", TrainConfig).for_method(METHOD)
    if small:
        mcfg = dataclasses.replace(mcfg, backbone="resnet18", mit="b0", task_channels=16, bottleneck=8,
                                   decoder_channels=16)
    if crop is not None:
        tcfg = dataclasses.replace(tcfg, crop_hw=(crop, crop))
    if batch is not None:
        tcfg = dataclasses.replace(tcfg, batch_source=batch, batch_target=batch)
    return mcfg, tcfg


def network_name(mcfg) -> str:
    if mcfg.architecture == "daformer":
        return f"MiT-{mcfg.mit.upper()} DAFormer"
    return f"{mcfg.backbone} DeepLab-v2 OS{mcfg.output_stride}"


def synthetic_batches(tcfg, device, num_classes: int, gen):
    """Source and target batches of the step's true shapes (corda.seg.step): RGB in [0, 1]; labels as 32×32-pixel
    blocks of classes with some ignore (so ClassMix and the feature distance see regions, not noise); CorDA
    inverse depth in (0, 1) with 5 % invalid (1.0)."""
    import torch
    import torch.nn.functional as F

    h, w = tcfg.crop_hw

    def labels(b):
        small = torch.randint(0, num_classes, (b, 1, max(1, h // 32), max(1, w // 32)), generator=gen).float()
        lab = F.interpolate(small, size=(h, w), mode="nearest")[:, 0].long()
        lab[torch.rand(b, h, w, generator=gen) < 0.05] = 255
        return lab

    def depth(b):
        d = torch.rand(b, 1, h, w, generator=gen) * 0.95 + 0.02
        d[torch.rand(b, 1, h, w, generator=gen) < 0.05] = 1.0
        return d

    bs, bt = tcfg.batch_source, tcfg.batch_target
    src = {"image": torch.rand(bs, 3, h, w, generator=gen), "label": labels(bs), "depth": depth(bs)}
    tgt = {"image": torch.rand(bt, 3, h, w, generator=gen), "depth": depth(bt)}
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return move(src), move(tgt)


def build_step(mcfg, tcfg, device, dist=None, return_student: bool = False):
    """The preset's training iteration as :func:`corda.seg.run.run_training` builds it: returns ``step(i)`` (and
    the student with ``return_student``)."""
    import torch

    from corda import uda
    from corda.distributed import SINGLE, shard, unwrap, wrap
    from corda.engine import step_generator
    from corda.precision import autocast, compile_networks, configure_backends, to_layout
    from corda.seg.run import build_optimizer, make_student_teacher, seg_config
    from corda.seg.step import train_step

    dist = dist or SINGLE
    configure_backends(tcfg.precision, device)
    torch.manual_seed(0)
    student, teacher = make_student_teacher(mcfg, METHOD, device, channels_last=tcfg.channels_last)
    fd = None
    if tcfg.fd_weight > 0 and mcfg.architecture == "daformer":
        # make_feature_distance refuses random weights (there is no ImageNet knowledge to keep); the cost is the
        # same with a frozen copy of the random encoder.
        from corda.losses.feature_distance import ImageNetFeatureDistance

        fd = ImageNetFeatureDistance(student.backbone, tcfg.fd_weight, tcfg.fd_classes, tcfg.fd_min_ratio,
                                     mcfg.num_classes)
    compile_networks(tcfg.compile, student, teacher)
    optimizer = build_optimizer(student, tcfg)
    net = wrap(student, dist, device, find_unused=METHOD.unused_parameters)
    scfg = seg_config(tcfg, METHOD)
    gen = torch.Generator().manual_seed(dist.rank)
    src, tgt = synthetic_batches(tcfg, torch.device("cpu"), mcfg.num_classes, gen)
    if dist.enabled:  # this rank's slice of the global batch (corda.distributed.shard)
        src = {k: v[shard(range(len(v)), dist)] for k, v in src.items()}
        tgt = {k: v[shard(range(len(v)), dist)] for k, v in tgt.items()}
    src = to_layout({k: v.to(device) for k, v in src.items()}, tcfg.channels_last)
    tgt = to_layout({k: v.to(device) for k, v in tgt.items()}, tcfg.channels_last)

    def step(i: int) -> float:
        with autocast(tcfg.precision, device):
            out = train_step(net, teacher, src, tgt, scfg, i, step_generator(tcfg.seed, i, stream=dist.rank), fd=fd)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        uda.ema_update(teacher, unwrap(net), i, tcfg.ema_alpha)
        return out["loss"].detach()

    return (step, student) if return_student else step


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, v: Variant, args, device, dist=None) -> dict:
    """One row: build the preset's step with ``v``, run ``warmup`` + up to ``steps`` iterations (measuring at most
    ``row_seconds``), return its timings and peak memory."""
    import torch

    mcfg, tcfg = preset_configs(preset, args.small, args.crop, args.batch)
    tcfg = dataclasses.replace(tcfg, precision=v.precision, channels_last=v.channels_last, compile=v.compile)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    step = build_step(mcfg, tcfg, device, dist)
    _sync(device)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.warmup):
        loss = step(i)
    _sync(device)
    t_warm = time.perf_counter() - t0
    times, t_start = [], time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > args.row_seconds:
            break
    if not math.isfinite(float(loss)):
        raise FloatingPointError(f"loss {float(loss)} after {args.warmup + len(times)} steps")
    times.sort()
    sec = times[len(times) // 2]
    images = tcfg.batch_source + tcfg.batch_target
    row = {"preset": preset, "variant": v.name, **dataclasses.asdict(v), "network": network_name(mcfg),
           "crop_hw": list(tcfg.crop_hw), "batch": [tcfg.batch_source, tcfg.batch_target],
           "steps_measured": len(times), "warmup": args.warmup, "build_s": t_build, "warmup_s": t_warm,
           "sec_per_step": sec, "images_per_s": images / sec,
           "hours_per_run": tcfg.iterations * sec / 3600, "iterations": tcfg.iterations}
    if device.type == "cuda":
        row["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    del step
    gc.collect()
    return row


# ------------------------------------------------------------------------------------------------------------
# Child processes: compiled rows (with a timeout) and the 2-process DDP step


def _run_child(preset: str, v: Variant, args, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_row", preset, v.precision,
               str(int(v.channels_last)), v.compile, "--_row-out", str(out), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--row-seconds", str(args.row_seconds)]
        cmd += (["--cpu-smoke"] if args.cpu_smoke else []) + (["--crop", str(args.crop)] if args.crop else [])
        cmd += (["--batch", str(args.batch)] if args.batch else []) + (["--small"] if args.small else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s (compiling included)"}
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:300]}
        return json.loads(out.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, preset: str, v: Variant, args, result_path: str) -> None:
    import torch

    from corda.distributed import DistInfo, destroy_process_group, init_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(1)
    info = DistInfo(rank, world)
    init_process_group(info, device)
    try:
        row = measure(preset, v, args, device, dist=info)
    finally:
        destroy_process_group()
    if rank == 0:
        Path(result_path).write_text(json.dumps(row))


def run_ddp(preset: str, v: Variant, args) -> dict:
    """2-process DDP of ``preset`` (global batch split over the ranks, as ``train.devices: 2``); rank 0's row."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ddp.json")
        mp.spawn(_ddp_worker, args=(2, _free_port(), preset, v, args, path), nprocs=2, join=True)
        row = json.loads(Path(path).read_text())
    row["processes"] = 2
    row["note"] = "global batch split over 2 ranks; images/s counts the global batch"
    return row


# ------------------------------------------------------------------------------------------------------------
# Output


def table(rows: list[dict], skipped: list[dict], cuda: bool) -> str:
    lines = ["| preset | network | path | images/s | ms/step | peak alloc GiB | peak reserved GiB | speed-up | "
             "h per preset run |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for a in ANCHORS:
        ips = f"{a['images_per_step'] / a['sec_per_step']:.2f}" if a["sec_per_step"] else ""
        ms = f"{1000 * a['sec_per_step']:.0f}" if a["sec_per_step"] else ""
        hours = f"{40000 * a['sec_per_step'] / 3600:.0f} (40k it)" if a["sec_per_step"] else ""
        lines.append(f"| anchor | {a['what']} | published | {ips} | {ms} | {a['gb']} GB | | | {hours} |")
    single = {(r["preset"], r["variant"]): r["sec_per_step"] for r in rows if "error" not in r and "processes" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | {r['variant']} | failed: {r['error'][:120]} | | | | | |")
            continue
        mem = (f"{r['peak_alloc_gib']:.2f} | {r['peak_reserved_gib']:.2f}" if "peak_alloc_gib" in r else "- | -")
        # vs the preset's fp32 row; a DDP row vs one process on the same path
        ref = single.get((r["preset"], r["variant"] if "processes" in r else "fp32"))
        ratio = f"{ref / r['sec_per_step']:.2f}x" if ref else ""
        path = r["variant"] + (f" (DDP x{r['processes']})" if "processes" in r else "")
        lines.append(f"| {r['preset']} | {r['network']} | {path} | {r['images_per_s']:.2f} | "
                     f"{1000 * r['sec_per_step']:.0f} | {mem} | {ratio} | "
                     f"{r['hours_per_run']:.1f} ({r['iterations'] // 1000}k it) |")
    for s in skipped:
        lines.append(f"| {s['preset']} | | {s['variant']} | skipped: {s['reason']} | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--steps", type=int, default=30, help="measured iterations per row (at most)")
    ap.add_argument("--warmup", type=int, default=3, help="iterations before measuring (cuDNN autotune, compile)")
    ap.add_argument("--row-seconds", type=float, default=12.0, help="stop measuring a row after this long")
    ap.add_argument("--budget-s", type=float, default=510.0,
                    help="time for all rows; a row that would not fit is skipped (the command ends within 10 min)")
    ap.add_argument("--compile-timeout", type=float, default=170.0, help="seconds for one compiled row, compile included")
    ap.add_argument("--crop", type=int, default=None, help="square crop instead of the presets' train.crop_hw")
    ap.add_argument("--batch", type=int, default=None, help="source = target images per step instead of the presets'")
    ap.add_argument("--small", action="store_true", help="ResNet-18 / MiT-B0 instead of the presets' networks")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="the CPU path: --small, crop 64, batch 1+1 (2+2 with --ddp), 1 step, no warm-up; fp32 for "
                         "every preset, bf16 + channels_last for the first")
    ap.add_argument("--ddp", action="store_true", help="also run the 2-process DDP row without 2 GPUs (gloo on the CPU)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (presets, networks, shapes, rows) and exit")
    ap.add_argument("--out", type=Path, default=Path("device_check.json"), help="JSON file of all rows")
    ap.add_argument("--_row", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_row-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.small, args.crop = True, args.crop or 64
        args.batch = args.batch or (2 if args.ddp else 1)  # DDP splits the global batch over 2 ranks
        args.steps, args.warmup = 1, 0

    import torch

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda" if cuda else "cpu")
    if args._row:  # a child process: one (compiled) row
        preset, prec, cl, comp = args._row
        args._row_out.write_text(json.dumps(measure(preset, Variant(prec, bool(int(cl)), comp), args, device)))
        return 0
    presets = tuple(args.presets)
    rows_plan = plan(presets, cuda)
    if args.dry_run:  # the plan of a CUDA machine (of the CPU path with --cpu-smoke)
        rows_plan = plan(presets, not args.cpu_smoke)
        for p in presets:
            mcfg, tcfg = preset_configs(p, args.small, args.crop, args.batch)
            print(f"{p}: {network_name(mcfg)}, batch {tcfg.batch_source}+{tcfg.batch_target}, crop "
                  f"{tcfg.crop_hw[0]}x{tcfg.crop_hw[1]}, {tcfg.iterations} iterations, optimizer {tcfg.optimizer}, "
                  f"feature distance {tcfg.fd_weight}")
        for p, v in rows_plan:
            print(f"  {p}: {v.name}")
        return 0

    started = time.perf_counter()
    rows, skipped = [], []
    cost: dict[str, float] = {}  # seconds the preset's first row took: the estimate for its next eager rows
    ddp = cuda and torch.cuda.device_count() >= 2 or args.ddp
    reserve = 90.0 if ddp else 0.0
    for preset, v in rows_plan:
        left = args.budget_s - reserve - (time.perf_counter() - started)
        need = args.compile_timeout if v.compile != "eager" else cost.get(preset, 30.0)
        if need > left:
            skipped.append({"preset": preset, "variant": v.name, "reason": f"budget ({left:.0f} s left)"})
            continue
        t0 = time.perf_counter()
        try:
            if v.compile != "eager":
                row = _run_child(preset, v, args, timeout=min(args.compile_timeout, left))
                row.setdefault("preset", preset)
                row.setdefault("variant", v.name)
            else:
                row = measure(preset, v, args, device)
        except Exception as exc:  # an OOM or a failing path is a result too; the other rows still run
            row = {"preset": preset, "variant": v.name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            if cuda:
                gc.collect()
                torch.cuda.empty_cache()
        cost.setdefault(preset, 1.2 * (time.perf_counter() - t0))
        rows.append(row)
        print(f"[{time.perf_counter() - started:5.0f} s] {preset} {v.name}: "
              + (row["error"] if "error" in row else f"{row['images_per_s']:.2f} images/s"), flush=True)
    if ddp:
        v = Variant("bf16", True) if cuda else Variant()
        try:
            rows.append(run_ddp(presets[0], v, args))
        except Exception as exc:
            rows.append({"preset": presets[0], "variant": v.name, "processes": 2,
                         "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    env = {"device": torch.cuda.get_device_name() if cuda else "CPU (smoke path, not a measurement)",
           "gpus": torch.cuda.device_count() if cuda else 0, "torch": torch.__version__,
           "cuda": torch.version.cuda, "seconds": time.perf_counter() - started, "anchors": ANCHORS,
           "weights": "random (model.pretrained: null)", "data": "synthetic tensors of the presets' true shapes"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"environment": env, "rows": rows, "skipped": skipped}, indent=1))
    os.replace(tmp, args.out)
    print(f"device: {env['device']}, torch {env['torch']}, {env['seconds']:.0f} s; weights random; data synthetic")
    print(table(rows, skipped, cuda))
    print(f"wrote {args.out}")
    return 1 if rows and all("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
