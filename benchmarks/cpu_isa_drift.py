"""How far CPU training drifts between instruction-set levels (issue 18 §1.3), measured on one machine.

PyTorch picks CPU kernels by ISA: ATen's vectorised ops (``ATEN_CPU_CAPABILITY``: default | avx2 | avx512),
oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and MKL's BLAS (``MKL_CBWR``, conditional numerical
reproducibility). This script trains the default segmentation model (params.yaml ``model``, the ``train``
stage's CorDA step and SGD settings) from one seed on fixed random tensors, in fresh interpreters whose
environment holds these libraries to a lower level, and compares each run with the unpinned one:

* whether the first forward (logits of a fixed batch before any update) and the step-1 loss are bit-identical;
* max |Δw| over all weights after 1, 10 and 50 steps (and the largest weight, for scale);
* the share of pixels whose argmax class agrees on a fixed batch after the last step;
* CPU seconds per step (one thread, median; the runs go in parallel), i.e. what pinning costs.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/cpu_isa_drift.py [--steps 1 10 50] [--crop 48] [--batch 2]

The data are random tensors, not the benchmark: only the kernels' arithmetic is under test.
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

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "default": {},
    "default (again)": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "pinned: both + MKL_CBWR=AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
}
ISA_KEYS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def child(out: Path, steps: list[int], crop: int, batch: int) -> None:
    """Train in this process and write snapshots of the flattened weights to ``out``."""
    import numpy as np
    import torch
    import yaml

    from corda.config import from_mapping
    from corda.models.corda_net import param_groups
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.methods import CORDA
    from corda.seg.run import make_student_teacher, seg_config, set_seeds
    from corda.seg.step import train_step
    from corda.uda import ema_update

    torch.set_num_threads(1)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mcfg = from_mapping(ModelConfig, params["model"], "model")
    tcfg = from_mapping(TrainConfig, params["train"], "train")
    set_seeds(tcfg.seed)
    student, teacher = make_student_teacher(mcfg, CORDA, torch.device("cpu"))
    opt = torch.optim.SGD(param_groups(student, tcfg.lr, tcfg.head_lr_mult), lr=tcfg.lr,
                          momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    src = {"image": torch.rand(batch, 3, crop, crop, generator=g),
           "label": torch.randint(0, 19, (batch, crop, crop), generator=g),
           "depth": 1 + 40 * torch.rand(batch, 1, crop, crop, generator=g)}
    tgt = {"image": torch.rand(batch, 3, crop, crop, generator=g),
           "depth": 1 + 40 * torch.rand(batch, 1, crop, crop, generator=g)}
    probe = torch.rand(2, 3, crop, crop, generator=g)

    def logits() -> torch.Tensor:
        student.eval()
        with torch.no_grad():
            y = student(probe)["S"]
        student.train()
        return y

    cfg = seg_config(tcfg, CORDA)
    first = logits()
    losses, times = [], []
    params_ = [p for p in student.parameters()]
    for s in range(max(steps)):
        t0 = time.process_time()
        terms = train_step(student, teacher, src, tgt, cfg, s, torch.Generator().manual_seed(1000 + s))
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if tcfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params_, tcfg.grad_clip)
        opt.step()
        ema_update(teacher, student, s, tcfg.ema_alpha)
        times.append(time.process_time() - t0)
        losses.append(float(terms["loss"].detach()))
        if s + 1 in steps:
            w = torch.cat([p.detach().reshape(-1) for p in student.state_dict().values() if p.is_floating_point()])
            np.save(out / f"w{s + 1}.npy", w.numpy())
    np.save(out / "first.npy", first.numpy())
    np.save(out / "last.npy", logits().argmax(1).numpy())
    (out / "meta.json").write_text(json.dumps({
        "capability": torch.backends.cpu.get_cpu_capability(), "losses": losses,
        "s_per_step": sorted(times[1:] or times)[len(times[1:] or times) // 2],
        "env": {k: os.environ.get(k) for k in ISA_KEYS}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.steps, a.crop, a.batch)
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        runs, procs = {}, []
        base = {k: v for k, v in os.environ.items() if k not in ISA_KEYS}
        for i, (name, env) in enumerate(VARIANTS.items()):  # in parallel: one thread each
            d = Path(tmp) / str(i)
            d.mkdir()
            procs.append(subprocess.Popen([sys.executable, __file__, "--child", str(d), "--crop", str(a.crop),
                                           "--batch", str(a.batch), "--steps", *map(str, a.steps)],
                                          env=dict(base, **env, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))))
            runs[name] = d
        if any(p.wait() for p in procs):
            raise SystemExit("a training run failed")
        ref = runs["default"]
        meta0 = json.loads((ref / "meta.json").read_text())
        wmax = float(np.abs(np.load(ref / f"w{max(a.steps)}.npy")).max())
        cols = " | ".join(f"max abs dw @{s}" for s in a.steps)
        print(f"crop {a.crop}, batch {a.batch}+{a.batch}, 1 thread; largest |w| after {max(a.steps)} steps: {wmax:.3g}")
        print(f"| run | ATen | step-1 forward identical | step-1 loss identical | {cols} | argmax agree @{max(a.steps)} "
              f"| loss @{max(a.steps)} | CPU s/step |")
        print("|" + "---|" * (7 + len(a.steps)))
        for name, d in runs.items():
            meta = json.loads((d / "meta.json").read_text())
            same_fwd = np.array_equal(np.load(d / "first.npy"), np.load(ref / "first.npy"))
            same_loss = meta["losses"][0] == meta0["losses"][0]
            dws = [float(np.abs(np.load(d / f"w{s}.npy") - np.load(ref / f"w{s}.npy")).max()) for s in a.steps]
            agree = float((np.load(d / "last.npy") == np.load(ref / "last.npy")).mean())
            print(f"| {name} | {meta['capability']} | {'yes' if same_fwd else 'no'} | {'yes' if same_loss else 'no'} | "
                  + " | ".join(f"{x:.2e}" for x in dws)
                  + f" | {100 * agree:.2f}% | {meta['losses'][-1]:.6f} | {meta['s_per_step']:.3f} |")


if __name__ == "__main__":
    main()
