"""What a real run costs (issue 28, item 3): per training iteration and per pipeline stage, measured on the CPU.

``step``: for each preset (params/*.yaml) one real training iteration, built as the train stage builds it
(benchmarks/device_check.py's :func:`build_step`: the preset's network with random weights, its optimizer, the
DAFormer feature distance, :func:`corda.seg.step.train_step` + backward + optimizer step + EMA), on synthetic
tensors at the preset's true crop, in a fresh child process per preset. Measured:

* FLOPs of the iteration (``torch.utils.flop_counter.FlopCounterMode``: convolutions, matmuls, attention; the
  element-wise work is not counted), forward (student, EMA teacher, frozen ImageNet encoder) and backward;
* activation memory: bytes of the tensors autograd saves for backward during the iteration
  (``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters excluded);
* the process's peak RSS rise over the iteration (``getrusage``), which also holds gradients and the
  optimizer state allocated at the first step; and the parameter bytes of the student.

On 2 shared cores a ResNet-101 iteration at 512×512 takes minutes, so ``--batch`` (default 1 + 1) may be
smaller than the preset's; FLOPs and activation bytes are linear in the batch and are scaled to it (the
``scaled_*`` keys), which is exact for everything but the batch-level statistics (a few scalars).

``stages``: runs pipeline stages (``python -m stages.<name>``) in a prepared DVC workspace under
``/usr/bin/time -v`` and records wall and CPU seconds, peak RSS and the bytes of each declared output.

    python benchmarks/cost.py step --presets gta2cityscapes gta2cityscapes_daformer --out cost_step.json
    python benchmarks/cost.py stages --workspace /tmp/ws --stages data rcs depth_maps --out cost_stages.json
    python benchmarks/cost.py items --workspace /tmp/ws --out cost_items.json   # loader seconds per item

``items``: seconds per item of the training loaders (decode, resize to ``train.*_resize_hw``, crop, depth from
the depth_maps HDF5, or the source dataset's own depth files read in place), one thread as in a DataLoader worker, over every item of the workspace's manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure_step(preset: str, batch: int, crop: int | None) -> dict:
    """One iteration of ``preset`` (this process): FLOPs, saved-activation bytes, peak RSS rise."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.device_check import build_step, network_name, preset_configs

    mcfg, tcfg = preset_configs(preset, small=False, crop=crop, batch=batch)
    true_mcfg, true_tcfg = preset_configs(preset, small=False, crop=None)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    step, student = build_step(mcfg, tcfg, device, return_student=True)
    build_s = time.perf_counter() - t0
    param_ids = {p.untyped_storage().data_ptr() for p in student.parameters()}
    param_bytes = sum(p.numel() * p.element_size() for p in student.parameters())
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ids and ptr not in saved:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    flops = FlopCounterMode(display=False)
    t0 = time.perf_counter()
    with flops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(0)
    step_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    total = flops.get_total_flops()
    images = tcfg.batch_source + tcfg.batch_target
    scale = (true_tcfg.batch_source + true_tcfg.batch_target) / images
    return {"preset": preset, "network": network_name(mcfg), "crop_hw": list(tcfg.crop_hw),
            "batch": [tcfg.batch_source, tcfg.batch_target],
            "preset_batch": [true_tcfg.batch_source, true_tcfg.batch_target],
            "flops": total, "activation_bytes": sum(saved.values()), "peak_rss_rise_bytes": rss1 - rss0,
            "param_bytes": param_bytes, "optimizer": tcfg.optimizer, "cpu_seconds_per_step": step_s,
            "build_seconds": build_s, "scaled_flops": total * scale,
            "scaled_activation_bytes": sum(saved.values()) * scale, "threads": torch.get_num_threads()}


def run_stage(workspace: Path, name: str, cmd: list[str], outs: list[str]) -> dict:
    """``cmd`` in ``workspace`` under /usr/bin/time -v: wall, user+sys seconds, peak RSS; bytes of ``outs``."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=workspace, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(workspace)})
    wall = time.perf_counter() - t0
    err = proc.stderr
    get = lambda key: float(re.search(rf"{re.escape(key)}: ([0-9.]+)", err).group(1))  # noqa: E731
    sizes = {}
    for o in outs:
        p = workspace / o
        if p.is_file():
            sizes[o] = p.stat().st_size
        elif p.is_dir():
            sizes[o] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    row = {"stage": name, "cmd": " ".join(cmd), "returncode": proc.returncode, "wall_s": wall,
           "cpu_s": get("User time (seconds)") + get("System time (seconds)"),
           "peak_rss_bytes": int(get("Maximum resident set size (kbytes)") * 1024), "out_bytes": sizes}
    if proc.returncode:
        row["error"] = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\t")][-1:]
    return row


def measure_items(workspace: Path, repeats: int) -> dict:
    """Seconds per item of the training loaders (source and target, one worker), the way ``train`` reads them:
    :func:`corda.seg.run.seg_datasets` over the workspace's manifest and depth files, ``ds[i]`` for every item."""
    import torch

    from corda.data.manifest import load_splits
    from corda.seg.config import TrainConfig
    from corda.seg.run import seg_datasets
    from corda.params import load_params, section

    torch.set_num_threads(1)  # as a DataLoader worker
    os.chdir(workspace)
    tcfg = section(load_params("params.yaml"), "train", TrainConfig)
    src, tgt, val = seg_datasets(load_splits("data/manifest.json"), tcfg, Path("depth"))
    out = {}
    for name, ds in (("source", src), ("target", tgt), ("target_val", val)):
        times, cpu = [], []
        for r in range(repeats):
            for i in range(len(ds)):
                t0, c0 = time.perf_counter(), time.process_time()
                ds[(i, r)] if name != "target_val" else ds[i]
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        times.sort()
        cpu.sort()
        # CPU seconds are what a worker on an idle core would take; wall seconds include the machine's contention
        out[name] = {"items": len(ds), "median_wall_s": times[len(times) // 2], "median_cpu_s": cpu[len(cpu) // 2]}
    out["resize_hw"] = {"source": tcfg.source_resize_hw, "target": tcfg.target_resize_hw}
    out["crop_hw"] = list(tcfg.crop_hw)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step", help="FLOPs and activation memory of one iteration per preset")
    s.add_argument("--presets", nargs="+", default=["gta2cityscapes", "gta2cityscapes_daformer",
                                                     "synthia2cityscapes", "synthia2cityscapes_daformer"])
    s.add_argument("--batch", type=int, default=1, help="source = target images (scaled to the preset's batch)")
    s.add_argument("--crop", type=int, default=None, help="square crop instead of the preset's (default: its own)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--_one", help=argparse.SUPPRESS)
    g = sub.add_parser("stages", help="wall/CPU time, peak RSS and output bytes of pipeline stages")
    g.add_argument("--workspace", type=Path, required=True, help="a DVC workspace with params.yaml and its data")
    g.add_argument("--stages", nargs="+", required=True,
                   help="dvc.yaml stage names, run in this order (python -m stages.<...> as dvc.yaml says)")
    g.add_argument("--out", type=Path, required=True)
    it = sub.add_parser("items", help="seconds per item of the training loaders (one worker)")
    it.add_argument("--workspace", type=Path, required=True, help="a workspace after the data and depth_maps stages")
    it.add_argument("--repeats", type=int, default=2)
    it.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.what == "items":
        a.out = a.out.resolve()
        res = measure_items(a.workspace, a.repeats)
        a.out.write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
        return 0
    if a.what == "step":
        if a._one:
            a.out.write_text(json.dumps(measure_step(a._one, a.batch, a.crop)))
            return 0
        rows = []
        for p in a.presets:  # one child process each: a clean RSS baseline
            tmp = a.out.with_name(f"{a.out.name}.{p}.tmp")
            cmd = [sys.executable, __file__, "step", "--_one", p, "--batch", str(a.batch), "--out", str(tmp)]
            cmd += ["--crop", str(a.crop)] if a.crop else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                rows.append({"preset": p, "error": proc.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(tmp.read_text()))
                tmp.unlink()
            print(json.dumps(rows[-1]), flush=True)
        a.out.write_text(json.dumps(rows, indent=1))
        return 0
    import shlex

    from pipeline_stages import stage_commands  # this folder is on sys.path when a script in it runs

    spec = {name: (cmd, outs) for name, cmd, outs in stage_commands(a.workspace)}
    rows = []
    for name in a.stages:
        cmd, outs = spec[name]
        rows.append(run_stage(a.workspace, name, shlex.split(cmd), outs))
        print(json.dumps(rows[-1]), flush=True)
        if rows[-1]["returncode"]:
            break
    a.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
