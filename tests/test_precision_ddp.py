"""train.precision / train.channels_last / train.devices (issue #7): bf16 autocast and channels_last steps
agree with the fp32 contiguous step, a 2-process gloo run reproduces the 1-process trajectory, and
nan_policy skip keeps the ranks in step when only one of them sees a non-finite loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from corda.config import from_mapping
from corda.distributed import DistInfo, shard, torchrun_argv
from corda.engine import batch_keys, step_generator
from corda.errors import ConfigError
from corda.seg.config import ModelConfig, TrainConfig
from corda.methods import CORDA, SOURCE_ONLY, get_method
from corda.seg.run import make_student_teacher, run_training, set_seeds
from corda.seg.step import train_step
from corda.testing import free_port, gloo_process_group

MCFG = ModelConfig(backbone="resnet18", output_stride=16, task_channels=16, bottleneck=8, aspp_branches=4,
                   initial_seg_head="conv1x1", input_norm="imagenet", freeze_bn_affine=False)
H, W = 32, 32

# Tiny convolutions on a shared 2-core machine: one OpenMP thread is much faster than two.
pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDS(torch.utils.data.Dataset):
    """Random images, labels without ignore pixels (so every rank has as many labelled pixels), depth."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.img = torch.rand(n, 3, H, W, generator=g)
        self.lab = torch.randint(0, 19, (n, H, W), generator=g)
        self.dep = torch.rand(n, 1, H, W, generator=g) * 100 + 2

    def __len__(self) -> int:
        return len(self.img)

    loads = 0  # items loaded in this process (tells a resumed run from a fresh one)

    def __getitem__(self, key):
        TinyDS.loads += 1
        i, _draw = key
        return {"image": self.img[i], "label": self.lab[i], "depth": self.dep[i]}


def _batches(seed: int = 0):
    src, tgt = TinyDS(4, seed), TinyDS(4, seed + 1)
    s = {k: torch.stack([src[(i, i)][k] for i in range(2)]) for k in ("image", "label", "depth")}
    t = {k: torch.stack([tgt[(i, i)][k] for i in range(2)]) for k in ("image", "depth")}
    return s, t


def _step(precision: str, channels_last: bool) -> dict[str, torch.Tensor]:
    from corda.precision import autocast, to_layout

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    student, teacher = make_student_teacher(MCFG, CORDA, cpu, channels_last=channels_last)
    src, tgt = (to_layout(b, channels_last) for b in _batches())
    with autocast(precision, cpu):
        terms = train_step(student, teacher, src, tgt, TrainConfig(method="corda"), 0, step_generator(1, 0))
    terms["loss"].backward()
    grads = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    return {**{k: v.detach().float() for k, v in terms.items()}, "grad": grads}


def test_new_keys_validate_and_global_batch_must_divide():
    cfg = from_mapping(TrainConfig, {"precision": "bf16", "channels_last": True, "devices": 2}, "train")
    assert (cfg.precision, cfg.channels_last, cfg.devices) == ("bf16", True, 2)
    assert (TrainConfig().precision, TrainConfig().channels_last, TrainConfig().devices) == ("fp32", False, 1)
    with pytest.raises(ConfigError, match="train.precision"):
        from_mapping(TrainConfig, {"precision": "fp16"}, "train")
    assert TrainConfig().compile == "eager"
    assert from_mapping(TrainConfig, {"compile": "reduce-overhead"}, "train").compile == "reduce-overhead"
    with pytest.raises(ConfigError, match="train.compile"):
        from_mapping(TrainConfig, {"compile": True}, "train")
    with pytest.raises(ConfigError, match=r"train\.batch_source.*divisible.*devices=2"):
        from_mapping(TrainConfig, {"batch_source": 3, "devices": 2}, "train")
    # Shards of one step's global keys are disjoint and together the one-process batch.
    keys = batch_keys(10, 4, seed=1, step=3)
    parts = [shard(keys, DistInfo(r, 2)) for r in range(2)]
    assert parts[0] + parts[1] == keys and len(parts[0]) == 2
    cmd = torchrun_argv("py", "stages.train", 2, ["--method", "dacs"])
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"] and cmd[-3:] == ["stages.train", "--method", "dacs"]


def test_bf16_autocast_step_is_finite_and_close_to_fp32():
    ref = _step("fp32", False)
    bf = _step("bf16", False)
    for k in ("loss", "seg_src", "seg_src_init", "depth_src", "seg_mix", "depth_mix"):
        assert torch.isfinite(bf[k]).all(), k
        # bf16 keeps 8 mantissa bits (2^-8 ≈ 0.4% per rounding); the losses average thousands of pixels, so
        # their rounding errors mostly cancel (observed ~1e-4 relative). 1% still fails a loss evaluated
        # in bf16 (a bf16 scalar near 195 is quantised in steps of 1) or a run that silently stays fp32.
        assert bf[k].item() == pytest.approx(ref[k].item(), rel=1e-2), k
        assert bf[k].item() != ref[k].item() or k == "seg_src", k  # autocast did change the arithmetic
    # The loss terms come out in fp32 (cast before CE/BerHu), not bf16.
    raw = _raw_dtype()
    assert raw == torch.float32
    # Gradients (fp32 weights, backward outside autocast) are finite and not all zero. Their direction is not
    # compared: at random initialisation the pseudo-label argmax has near-ties that bf16 flips.
    assert torch.isfinite(bf["grad"]).all() and bf["grad"].abs().sum() > 0


def test_non_main_rank_writes_no_checkpoint(tmp_path):
    from corda.engine import Trainer

    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.1)
    for main in (False, True):
        scratch = tmp_path / str(main) / "last.pt"
        tr = Trainer(modules={"m": nn.Linear(1, 1)}, optimizer=opt, iterations=4, lr_at=lambda s: 0.1, scratch=scratch, fingerprint="x", checkpoint_every=2,
                     write_checkpoints=main)
        tr.run(lambda s: {"loss": (p ** 2).sum()})
        assert scratch.is_file() == main


def _raw_dtype() -> torch.dtype:
    from corda.precision import autocast

    cpu = torch.device("cpu")
    student, teacher = make_student_teacher(MCFG, CORDA, cpu)
    src, tgt = _batches()
    with autocast("bf16", cpu):
        terms = train_step(student, teacher, src, tgt, TrainConfig(method="corda"), 0, step_generator(1, 0))
    return terms["loss"].dtype


def test_channels_last_step_equals_contiguous_step():
    ref = _step("fp32", False)
    cl = _step("fp32", True)
    for k in ("loss", "seg_src", "depth_src", "seg_mix", "depth_mix"):
        # Only the convolution kernels' summation order differs between NCHW and NHWC.
        assert cl[k].item() == pytest.approx(ref[k].item(), rel=1e-5, abs=1e-5), k
    assert torch.allclose(cl["grad"], ref["grad"], rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Two gloo processes vs one process


class _EvalBN(nn.BatchNorm2d):
    """BatchNorm that stays in eval mode: per-rank batch statistics are the one thing DDP changes on purpose
    (corda.distributed), so the exact comparison takes them out."""

    def train(self, mode: bool = True):
        return super().train(False)


def _freeze_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = _EvalBN
    return model.train()


def _tcfg(**kw) -> TrainConfig:
    base = dict(iterations=3, batch_source=4, batch_target=4, crop_hw=(H, W), lr=0.01, workers=0, eval_every=0,
                checkpoint_every=100, log_every=1, device="cpu", ema_alpha=0.9)
    return TrainConfig(**{**base, **kw})


def _train(method: str, tcfg: TrainConfig, scratch: Path, dist: DistInfo, eval_bn: bool):
    import corda.seg.run as seg

    build = seg.build_model
    if eval_bn:
        seg.build_model = lambda mcfg, m: _freeze_bn(build(mcfg, m))
    try:
        set_seeds(tcfg.seed)
        return run_training(method=get_method(method), mcfg=MCFG, tcfg=tcfg, source_ds=TinyDS(8, 0), target_ds=TinyDS(8, 1),
                            device=torch.device("cpu"), scratch=scratch, inputs_fp={}, dist=dist)
    finally:
        seg.build_model = build


def _train_planted_nan(method: str, tcfg: TrainConfig, scratch: Path, dist: DistInfo, nan_rank: int, nan_step: int):
    """``_train`` (eval-mode BN) whose loss is NaN on rank ``nan_rank`` at step ``nan_step`` (as test_engine plants
    one); the other ranks' losses stay finite."""
    import corda.seg.run as seg

    step = seg.train_step

    def planted(net, teacher, src, tgt, scfg, i, gen, **kw):
        terms = step(net, teacher, src, tgt, scfg, i, gen, **kw)
        if dist.rank == nan_rank and i == nan_step:
            terms = {**terms, "loss": terms["loss"] * float("nan")}
        return terms

    seg.train_step = planted
    try:
        return _train(method, tcfg, scratch, dist, eval_bn=True)
    finally:
        seg.train_step = step


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    with gloo_process_group(rank, world, port) as info:
        tmp = Path(tmp)
        # (a) source_only with eval-mode BN: must match one process.
        s, _, tr = _train("source_only", _tcfg(devices=2), tmp / "so" / "last.pt", info, eval_bn=True)
        out = {"history": tr.history, "so_student": s.state_dict()}
        # (b) corda (train-mode BN, teacher, ClassMix): the teacher is identical on both ranks; rank 0 alone
        # writes the checkpoint, and a resumed run ends where an uninterrupted one does.
        cfg = _tcfg(devices=2, iterations=4, checkpoint_every=2)
        s, t, tr = _train("corda", cfg, tmp / "corda" / "last.pt", info, eval_bn=False)
        out["corda_student"] = {k: v.clone() for k, v in s.state_dict().items()}
        out["corda_teacher"] = {k: v.clone() for k, v in t.state_dict().items()}
        out["corda_history"] = tr.history
        torch.distributed.barrier()
        out["scratch_exists"] = (tmp / "corda" / "last.pt").is_file()
        TinyDS.loads = 0
        s2, _, _ = _train("corda", cfg, tmp / "corda" / "last.pt", info, eval_bn=False)  # resumes at step 2
        out["resumed_student"] = s2.state_dict()
        out["resumed_loads"] = TinyDS.loads
        # (c) train.nan_policy: skip under DDP: a non-finite loss on rank 1 alone, at step 1.
        s, _, tr = _train_planted_nan("source_only", _tcfg(devices=2, nan_policy="skip"), tmp / "nan" / "last.pt",
                                      info, nan_rank=1, nan_step=1)
        out["nan_student"], out["nan_skipped"], out["nan_history"] = s.state_dict(), tr.state.skipped, tr.history
        torch.save(out, tmp / f"rank{rank}.pt")


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten().double() for k, v in sorted(state.items()) if v.is_floating_point()])


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)

    # (a) Same global batch, eval-mode BN, equal labelled-pixel counts per rank: DDP's averaged gradient is the
    # one-process gradient up to float summation order (~1e-7 relative), so after 3 SGD steps the weight
    # updates agree to 1e-3 of their size. The control, one process on rank 0's half of the batch only (what a
    # missing all-reduce would train on), is off by far more (observed ~0.5 of the update).
    one_s, _, one = _train("source_only", _tcfg(), tmp_path / "one" / "last.pt", DistInfo(), eval_bn=True)
    half_s, _, _ = _train("source_only", _tcfg(batch_source=2, batch_target=2), tmp_path / "half" / "last.pt",
                          DistInfo(), eval_bn=True)
    set_seeds(1)
    w0 = _flat(_freeze_bn(make_student_teacher(MCFG, SOURCE_ONLY, torch.device("cpu"))[0]).state_dict())
    d_one = _flat(one_s.state_dict()) - w0
    err = (_flat(r0["so_student"]) - w0 - d_one).norm() / d_one.norm()
    err_half = (_flat(half_s.state_dict()) - w0 - d_one).norm() / d_one.norm()
    assert d_one.norm() > 0 and err < 1e-3 and err_half > 100 * err, (float(err), float(err_half))
    for a, b in zip(r0["history"], one.history, strict=True):
        for k in ("loss", "seg_src", "seg_src_init"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), (a["step"], k)
    assert r0["history"] == r1["history"]  # logged terms are averaged over the ranks

    # (b) corda under DDP: finite, the EMA teacher and the student identical on both ranks, only rank 0
    # checkpoints, and resuming from that checkpoint gives exactly the uninterrupted result.
    assert all(torch.isfinite(torch.tensor(v)) for row in r0["corda_history"] for v in row.values())
    for k, v in r0["corda_teacher"].items():
        if "running" not in k and "num_batches" not in k:  # BN statistics are per rank by design
            assert torch.equal(v, r1["corda_teacher"][k]), k
    for k, v in r0["corda_student"].items():
        if "running" not in k and "num_batches" not in k:  # the last forward's BN updates are local
            assert torch.equal(v, r1["corda_student"][k]), k
    assert r0["scratch_exists"] and r1["scratch_exists"]  # the same (shared) file, written by rank 0
    # Steps 2 and 3 only: 2 steps × 2 images per rank × (source + target).
    assert r0["resumed_loads"] == r1["resumed_loads"] == 8
    for k, v in r0["corda_student"].items():
        assert torch.equal(v, r0["resumed_student"][k]), k

    # (c) nan_policy skip: the logged loss is the mean over the ranks, so rank 1's NaN at step 1 makes both
    # ranks skip that step (no backward: DDP's all-reduce is never half-joined) and count it; both end with
    # identical weights, which differ from the run without the skip (rank 0's finite step 1 was dropped too).
    import math

    assert r0["nan_skipped"] == r1["nan_skipped"] == 1
    for h in (r0["nan_history"], r1["nan_history"]):
        assert [math.isnan(row["loss"]) for row in h] == [False, True, False]  # log_every 1: step 1 is row 2
    for k, v in r0["nan_student"].items():
        assert torch.equal(v, r1["nan_student"][k]), k
    assert (_flat(r0["nan_student"]) - _flat(r0["so_student"])).norm() > 0


@pytest.mark.extended  # about 90 s of inductor compilation: `make test-extended`
def test_compiled_training_follows_the_eager_run(tmp_path):
    """train.compile: default runs the student and teacher through torch.compile (inductor on the CPU) and
    trains as eager does; only the fused kernels' float order differs. Checkpoint keys stay the plain module's."""
    import torch._dynamo

    torch._dynamo.reset()
    ref_s, ref_t, ref = _train("corda", _tcfg(), tmp_path / "eager" / "last.pt", DistInfo(), eval_bn=False)
    s, t, tr = _train("corda", _tcfg(compile="default"), tmp_path / "compiled" / "last.pt", DistInfo(),
                      eval_bn=False)
    assert s._compiled_call_impl is not None and t._compiled_call_impl is not None  # the key reached the nets
    assert list(s.state_dict()) == list(ref_s.state_dict())  # no "_orig_mod." prefix in checkpoints
    for a, b in zip(tr.history, ref.history, strict=True):
        for k in ("loss", "seg_src", "depth_src", "seg_mix"):
            assert a[k] == pytest.approx(b[k], rel=1e-3), (a["step"], k)
    d = _flat(ref_s.state_dict()) - _flat(s.state_dict())
    assert d.norm() <= 1e-3 * _flat(ref_s.state_dict()).norm()
    torch._dynamo.reset()


class _ScaledByBuffer(nn.Module):
    """y = W x · s with a buffer s that autograd saves for the backward (as BatchNorm's backward saves tensors)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("s", torch.full((3,), 2.0))

    def forward(self, x):
        return self.lin(x) * self.s


def _two_forwards_worker(rank: int, world: int, port: int, tmp: str) -> None:
    from corda.distributed import wrap

    with gloo_process_group(rank, world, port) as info:
        torch.manual_seed(0)
        net = wrap(_ScaledByBuffer(), info, torch.device("cpu"))
        net.module.s.fill_(rank + 1.0)  # per-rank buffers, as BatchNorm statistics of per-rank batches
        x = torch.randn(4, 3)
        loss = net(x).sum() + net(x + 1).sum()  # the student's two forwards (source, mixed) before one backward
        loss.backward()
        torch.save({"grad": net.module.lin.weight.grad, "s": net.module.s}, Path(tmp) / f"rank{rank}.pt")


def test_ddp_student_survives_two_forwards_before_one_backward(tmp_path):
    """DDP's buffer broadcast before the second forward rewrote saved buffers in place, and the backward failed
    with 'modified by an inplace operation': on torch 2.11 (the GPU machines' version) this test and the corda
    run of test_two_gloo_processes_match_one_process fail that way with broadcast_buffers=True; torch 2.14's
    DDP no longer bumps the saved version, and there the buffer assertion catches a broadcast."""
    mp.spawn(_two_forwards_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.isfinite(r0["grad"]).all() and torch.equal(r0["grad"], r1["grad"])
    # Each rank keeps its own buffers (corda.distributed's documented BatchNorm semantics): a broadcast of
    # rank 0's would have overwritten rank 1's, on any torch version.
    assert torch.all(r0["s"] == 1.0) and torch.all(r1["s"] == 2.0)


def test_bf16_on_a_cpu_without_native_bf16_warns_and_keeps_the_precision(monkeypatch, caplog):
    # The embedded default trains in bf16 (fast on AVX512-BF16); elsewhere the user must learn why it is slow.
    import logging

    from corda import precision as P

    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="corda.precision"):
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
        P.configure_backends("bf16", cpu)
        assert not caplog.records
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
        P.configure_backends("fp32", cpu)
        assert not caplog.records
        P.configure_backends("bf16", cpu)
    assert len(caplog.records) == 1 and "train.precision: fp32" in caplog.records[0].getMessage()
