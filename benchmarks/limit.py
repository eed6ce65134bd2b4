"""How far the embedded default's training step is from this CPU's limit (issue 30, item 1: "Know the limit").

One run, one table of ratios, three parts:

1. **Practical peak** of the step's arithmetic on ``--threads`` threads (and on one, for the thread scaling):
   a 2048×2048 matmul and the 3×3 convolutions at the default network's own layer shapes (found by hooking the
   student's Conv2d modules on a forward of one source batch at ``train.crop_hw``), fp32 and bf16 tensors,
   GFLOP/s as the best of ``--repeats``. The convolutions run in ``train.channels_last``'s layout.
2. **Each method's training step** (source_only, dacs, corda, oracle: rows of :mod:`corda.methods`) in achieved
   GFLOP/s against that peak. The FLOPs of one full step are counted with ``torch.utils.flop_counter``'s
   FlopCounterMode (forward under ``train.precision``'s autocast, backward, optimizer, EMA: the training loop's
   step on synthetic batches at the default shapes, as benchmarks/default_step.py builds them); the time is the
   median over ``--steps`` steps after ``--warmup``. The corda step is also timed on one thread.
3. **Where the rest goes**: torch.profiler over ``--profile-steps`` corda steps, each op's self CPU time grouped
   into compute-bound (convolution, matmul) and memory-bound work (BatchNorm, upsampling, ClassMix mixing, the
   colour jitter and blur, the losses, optimizer and EMA foreach kernels, copies, other elementwise ops) and the
   rest (allocation, views, autograd engine, Python), as % of the step's self CPU time, plus the number of aten ops
   dispatched per step and the step's wall time per op (framework overhead per op).

FLOP convention: torch's counter (2 FLOPs per multiply-add; convolutions and matmuls only, so the achieved rate
is the useful compute rate of the whole step, its memory-bound ops included in the time).

    python benchmarks/limit.py --out limit.json            # the full measurement (about 2 min on an idle 2-core VM)
    python benchmarks/limit.py --quick                     # smoke check: small matmul, 1 repeat, 1 step
    python benchmarks/limit.py --quick --set train.crop_hw=[32,32] train.batch_source=1 train.batch_target=1

Inputs are random tensors of the real shapes and value ranges (a step's cost does not depend on their content
beyond ClassMix's class draw).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.default_step import batches  # noqa: E402  (one place for the synthetic step batches)

METHODS = ("source_only", "dacs", "corda", "oracle")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Groups of part 3, in the table's order. Compute-bound first; "rest" is whatever no rule claims.
COMPUTE = "matmul/conv"
MEMORY = ("batch_norm", "upsample", "mixing", "colour jitter/blur", "losses", "optimizer+EMA", "copies",
          "other elementwise")
REST = "rest (allocation, views, autograd engine, Python)"
_OP_RULES = (  # (group, regex on the aten op's name), first match wins
    (COMPUTE, r"conv|(^|_)mm$|addmm|bmm$|matmul|^linear$|^_?mkldnn_linear"),
    ("batch_norm", r"batch_norm|_native_batch_norm"),
    ("upsample", r"upsample|interpolate|grid_sampler"),
    ("losses", r"nll_loss|log_softmax|_softmax|cross_entropy|smooth_l1"),
    ("optimizer+EMA", r"_foreach_|adam|_fused_"),
    ("copies", r"copy_|_to_copy|clone|contiguous|^aten::cat$|^aten::to$|as_strided_scatter|index_put|gather|scatter"),
    ("other elementwise", r"add|mul|sub|div|relu|threshold|where|clamp|sqrt|exp|log|abs|pow|neg|max|min|sum|mean"
                          r"|eq|ne|gt|lt|ge|le|fill_|zero_|ones|rand|bernoulli|sigmoid|tanh|lerp|masked|argmax"),
)
# Library functions the step calls, labelled with record_function so their ops land in their own group
# (elementwise ops are otherwise indistinguishable by name). Compute ops inside them stay compute.
_LABELS = {"classmix_masks": "mixing", "mix": "mixing", "strong_augment": "colour jitter/blur",
           "weighted_ce": "losses", "ce_mean_valid": "losses", "berhu": "losses",
           "depth_discrepancy_weight": "losses", "confidence_weight": "losses", "_upsampled": "upsample"}
_LABEL_PREFIX = "limit::"


# ------------------------------------------------------------------------------------------------
# Part 1: the practical peak


def best_seconds(fn, repeats: int) -> float:
    """The best wall time of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of an n×n @ n×n matmul (2n³ FLOPs), best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def conv_shapes(student: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """The distinct 3×3 Conv2d calls of one forward of ``student`` on ``x``: input shape, weight shape, stride,
    padding, dilation, groups and how many times each occurs."""
    seen: dict[tuple, dict] = {}

    def hook(mod, inputs, _out):
        if tuple(mod.kernel_size) != (3, 3):
            return
        key = (tuple(inputs[0].shape), tuple(mod.weight.shape), tuple(mod.stride), tuple(mod.padding),
               tuple(mod.dilation), mod.groups)
        seen.setdefault(key, {"input": list(key[0]), "weight": list(key[1]), "stride": list(key[2]),
                              "padding": list(key[3]), "dilation": list(key[4]), "groups": key[5], "count": 0})
        seen[key]["count"] += 1

    handles = [m.register_forward_hook(hook) for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            student(x)
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


def conv_flops(s: dict) -> float:
    """Forward FLOPs of one call of conv shape ``s`` (2 per multiply-add, as torch's counter)."""
    n, _, h, w = s["input"]
    cout, cin_g, kh, kw = s["weight"]
    ho = (h + 2 * s["padding"][0] - s["dilation"][0] * (kh - 1) - 1) // s["stride"][0] + 1
    wo = (w + 2 * s["padding"][1] - s["dilation"][1] * (kw - 1) - 1) // s["stride"][1] + 1
    return 2.0 * n * cout * ho * wo * cin_g * kh * kw


def conv_seconds(s: dict, dtype: torch.dtype, channels_last: bool, repeats: int) -> float:
    """Best wall time of one forward of conv shape ``s`` in ``dtype`` tensors."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(*s["input"], generator=g).to(dtype).contiguous(memory_format=fmt)
    wt = torch.randn(*s["weight"], generator=g).to(dtype).contiguous(memory_format=fmt)
    kw = dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"], groups=s["groups"])
    with torch.no_grad():
        return best_seconds(lambda: F.conv2d(x, wt, **kw), repeats)


def peaks(shapes: list[dict], n: int, threads: int, channels_last: bool, repeats: int) -> dict:
    """Part 1: matmul and 3×3-conv GFLOP/s per precision on ``threads`` threads, the matmul also on one thread.
    ``conv_mix`` is the FLOP-weighted rate of the network's own conv shapes (total FLOPs / total best time)."""
    out: dict = {"threads": threads, "matmul_n": n, "channels_last": channels_last, "per_shape": shapes}
    for name, dtype in DTYPES.items():
        torch.set_num_threads(threads)
        mm = matmul_gflops(n, dtype, repeats)
        rates, flops, secs = [], 0.0, 0.0
        for s in shapes:
            f, t = conv_flops(s) * s["count"], conv_seconds(s, dtype, channels_last, repeats) * s["count"]
            s[f"{name}_gflops"] = f / t / 1e9
            rates.append(s[f"{name}_gflops"])
            flops, secs = flops + f, secs + t
        torch.set_num_threads(1)
        mm1 = matmul_gflops(n, dtype, repeats)
        torch.set_num_threads(threads)
        out[name] = {"matmul": mm, "matmul_1thread": mm1, "conv_best": max(rates, default=float("nan")),
                     "conv_worst": min(rates, default=float("nan")),
                     "conv_mix": flops / secs / 1e9 if secs else float("nan")}
        out[name]["peak"] = max(mm, out[name]["conv_best"])
    return out


# ------------------------------------------------------------------------------------------------
# Part 2: each method's step


class Step:
    """One method's training step as the training loop runs it (corda.engine.Trainer + corda.seg.run): zero the
    gradients, :func:`corda.seg.step.train_step` under ``train.precision``'s autocast, backward, the optimizer
    step, the EMA update; synthetic batches at ``train``'s shapes in ``train.channels_last``'s layout."""

    def __init__(self, method: str, mcfg, tcfg):
        from corda.methods import get_method
        from corda.precision import to_layout
        from corda.seg.run import build_optimizer, make_student_teacher, seg_config

        torch.manual_seed(0)
        self.row = get_method(method)
        self.tcfg = tcfg.for_method(self.row)
        self.student, self.teacher = make_student_teacher(mcfg, self.row, torch.device("cpu"),
                                                          self.tcfg.channels_last)
        self.opt = build_optimizer(self.student, self.tcfg)
        self.cfg = seg_config(self.tcfg, self.row)
        src, tgt = batches(self.tcfg, torch.Generator().manual_seed(0), self.row.target_ground_truth)
        self.src, self.tgt = to_layout(src, self.tcfg.channels_last), to_layout(tgt, self.tcfg.channels_last)
        self.i = 0

    def __call__(self) -> None:
        from torch.profiler import record_function

        from corda.engine import step_generator
        from corda.precision import autocast
        from corda.seg.step import train_step
        from corda.uda import ema_update

        i, self.i = self.i, self.i + 1
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.tcfg.precision, torch.device("cpu")):
            out = train_step(self.student, self.teacher, self.src, self.tgt, self.cfg, i,
                             step_generator(self.tcfg.seed, i))
        out["loss"].backward()
        with record_function(_LABEL_PREFIX + "optimizer+EMA"):
            self.opt.step()
            if self.teacher is not None:
                ema_update(self.teacher, self.student, i, self.tcfg.ema_alpha)


def step_flops(step: Step) -> float:
    """FLOPs of one full step (forward, backward, optimizer, EMA), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def step_ms(step: Step, steps: int, warmup: int) -> float:
    """Median wall milliseconds of one step over ``steps`` after ``warmup``."""
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if k >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------
# Part 3: where the rest goes


@contextlib.contextmanager
def labelled_step_functions():
    """Wrap the library functions of :data:`_LABELS` in record_function ranges inside corda.seg.step only (the
    module's own references; restored on exit)."""
    import corda.seg.step as mod
    from torch.profiler import record_function

    saved = {}
    for name, group in _LABELS.items():
        fn = getattr(mod, name, None)
        if fn is None:
            continue
        saved[name] = fn

        def wrapped(*a, _fn=fn, _label=_LABEL_PREFIX + group, **kw):
            with record_function(_label):
                return _fn(*a, **kw)

        setattr(mod, name, wrapped)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(mod, name, fn)


def op_group(name: str) -> str | None:
    """The group of an aten op by its name (None: no rule)."""
    for group, pattern in _OP_RULES:
        if re.search(pattern, name.removeprefix("aten::")):
            return group
    return None


def group_of(event) -> str:
    """An event's group: compute ops by name; then the innermost labelled range around it (the optimizer's
    Python-level events included); then aten ops by name; else the rest."""
    name = event.name
    if name.startswith(_LABEL_PREFIX):
        return name.removeprefix(_LABEL_PREFIX)
    by_name = op_group(name) if name.startswith("aten::") else None
    if by_name == COMPUTE:
        return COMPUTE
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(_LABEL_PREFIX):
            return parent.name.removeprefix(_LABEL_PREFIX)
        parent = parent.cpu_parent
    return by_name or REST


def profile_step(step: Step, steps: int) -> dict:
    """Part 3: % of the self CPU time of ``steps`` profiled steps per group, aten ops dispatched per step (ops
    called from outside another aten op) and the step's wall milliseconds per such op."""
    from torch.profiler import ProfilerActivity, profile

    with labelled_step_functions():
        step()  # warm-up under the labels
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        wall_ms = 1000 * (time.perf_counter() - t0) / steps
    totals: dict[str, float] = {}
    ops = 0
    for e in prof.events():
        g = group_of(e)
        totals[g] = totals.get(g, 0.0) + e.self_cpu_time_total
        if e.name.startswith("aten::") and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")):
            ops += 1
    total = sum(totals.values()) or 1.0
    share = {g: 100 * totals.get(g, 0.0) / total for g in (COMPUTE, *MEMORY, REST)}
    return {"percent_self_cpu": share, "memory_bound_percent": sum(share[g] for g in MEMORY),
            "ops_per_step": ops / steps, "profiled_ms_per_step": wall_ms,
            "us_per_op": 1000 * wall_ms / max(ops / steps, 1)}


# ------------------------------------------------------------------------------------------------


def load_configs(params: str, sets: list[str]):
    """(ModelConfig, TrainConfig) of ``params`` with ``section.key=value`` overrides (YAML values)."""
    import yaml

    from corda.params import load_params, section
    from corda.seg.config import ModelConfig, TrainConfig

    p = load_params(params)
    for item in sets:
        key, sep, value = item.partition("=")
        sec, dot, field = key.partition(".")
        if not (sep and dot):
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.crop_hw=[32,32]")
        p.setdefault(sec, {})[field] = yaml.safe_load(value)
    return section(p, "model", ModelConfig), section(p, "train", TrainConfig)


def measure(args) -> dict:
    from corda.precision import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    mcfg, tcfg = load_configs(args.params, args.set)
    h, w = tcfg.crop_hw
    corda_step = Step("corda", mcfg, tcfg)
    x = torch.rand(tcfg.batch_source, 3, h, w)
    if tcfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    shapes = conv_shapes(corda_step.student, x)
    res = {"torch": torch.__version__, "threads": args.threads, "cpu_native_bf16": cpu_has_native_bf16(),
           "config": {"backbone": mcfg.backbone, "head": mcfg.head, "crop_hw": [h, w],
                      "batch": [tcfg.batch_source, tcfg.batch_target], "precision": tcfg.precision,
                      "channels_last": tcfg.channels_last, "optimizer": tcfg.optimizer},
           "peak": peaks(shapes, args.matmul, args.threads, tcfg.channels_last, args.repeats), "methods": {}}
    print("peaks: " + ", ".join(f"{k} {res['peak'][k]['peak']:.0f} GFLOP/s" for k in DTYPES), file=sys.stderr,
          flush=True)
    for method in args.methods:
        step = corda_step if method == "corda" else Step(method, mcfg, tcfg)
        flops = step_flops(step)
        ms = step_ms(step, args.steps, args.warmup)
        res["methods"][method] = {"gflop": flops / 1e9, "ms": ms, "gflops": flops / 1e6 / ms}
        print(f"{method}: {flops / 1e9:.1f} GFLOP, {ms:.0f} ms per step", file=sys.stderr, flush=True)
    if "corda" in res["methods"]:
        torch.set_num_threads(1)
        ms1 = step_ms(corda_step, args.steps, args.warmup)
        torch.set_num_threads(args.threads)
        res["methods"]["corda"]["ms_1thread"] = ms1
        res["profile"] = profile_step(corda_step, args.profile_steps)
    return res


def table(res: dict) -> str:
    """The one table of ratios (markdown)."""
    pk, prec = res["peak"], res["config"]["precision"]
    ref = "bf16" if prec == "bf16" else "fp32"
    c = res["config"]
    lines = [f"torch {res['torch']}, {res['threads']} threads, native bf16: {res['cpu_native_bf16']}; "
             f"{c['backbone']} {c['head']}, batch {c['batch'][0]}+{c['batch'][1]} at {c['crop_hw'][0]}x"
             f"{c['crop_hw'][1]}, {c['precision']}, channels_last {c['channels_last']}, {c['optimizer']}",
             "", "| part | item | value | unit | ratio | ratio of |", "|---|---|---:|---|---:|---|"]
    n = pk["matmul_n"]
    for name in DTYPES:
        q = pk[name]
        lines += [f"| peak | matmul {n}x{n} {name} | {q['matmul']:.0f} | GFLOP/s | {q['matmul'] / pk['fp32']['matmul']:.2f} | fp32 matmul |",
                  f"| peak | matmul {n}x{n} {name}, 1 thread | {q['matmul_1thread']:.0f} | GFLOP/s | "
                  f"{q['matmul'] / q['matmul_1thread']:.2f} | {res['threads']} threads / 1 |",
                  f"| peak | 3x3 conv {name}, network's shapes FLOP-weighted ({len(pk['per_shape'])} shapes) | "
                  f"{q['conv_mix']:.0f} | GFLOP/s | {q['conv_mix'] / q['peak']:.2f} | {name} peak |",
                  f"| peak | 3x3 conv {name}, best / worst shape | {q['conv_best']:.0f} / {q['conv_worst']:.0f} | GFLOP/s "
                  f"| {q['conv_worst'] / q['conv_best']:.2f} | worst / best |",
                  f"| peak | **practical peak {name}** (max of the above) | {q['peak']:.0f} | GFLOP/s | "
                  f"{q['peak'] / pk['fp32']['peak']:.2f} | fp32 peak |"]
    peak = pk[ref]["peak"]
    for method, m in res["methods"].items():
        lines += [f"| step | {method}: {m['gflop']:.1f} GFLOP in {m['ms']:.0f} ms | {m['gflops']:.0f} | GFLOP/s | "
                  f"{m['gflops'] / peak:.2f} | {ref} peak ({m['gflops'] / pk[ref]['conv_mix']:.2f} of conv mix) |"]
    if "ms_1thread" in res["methods"].get("corda", {}):
        m = res["methods"]["corda"]
        lines.append(f"| step | corda on 1 thread | {m['ms_1thread']:.0f} | ms | {m['ms_1thread'] / m['ms']:.2f} "
                     f"| 1 thread / {res['threads']} |")
    if "profile" in res:
        pr = res["profile"]
        for g, v in pr["percent_self_cpu"].items():
            kind = "compute-bound" if g == COMPUTE else "memory-bound" if g in MEMORY else "overhead"
            lines.append(f"| corda profile | {g} ({kind}) | {v:.1f} | % self CPU | {v / 100:.3f} | step |")
        lines += [f"| corda profile | memory-bound, all | {pr['memory_bound_percent']:.1f} | % self CPU | "
                  f"{pr['memory_bound_percent'] / 100:.3f} | step |",
                  f"| corda profile | aten ops per step | {pr['ops_per_step']:.0f} | ops | "
                  f"{pr['us_per_op']:.0f} | µs of step per op |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every row but the 1-thread ones")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--matmul", type=int, default=2048, help="matmul size n (n×n @ n×n)")
    ap.add_argument("--repeats", type=int, default=5, help="best of k for the peak microbenchmarks")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=3, help="corda steps under torch.profiler")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="override params, e.g. train.crop_hw=[32,32] model.decoder_channels=16")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: matmul 256, best of 1, 1 step after 1 warm-up, 1 profiled step")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.matmul, args.repeats, args.steps, args.warmup, args.profile_steps = 256, 1, 1, 1, 1
    res = measure(args)
    res["table"] = table(res)
    print(res["table"], flush=True)
    if args.out is not None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        os.replace(tmp, args.out)  # atomic: a killed run leaves no half-written JSON
    return res


if __name__ == "__main__":
    main()
