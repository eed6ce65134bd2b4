"""depth.devices / pseudo_labels.devices (issue #7): depth pretraining and the pseudo-label export sharded over
processes agree with one process; a global batch that does not split raises an error naming its key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from corda.config import from_mapping
from corda.distributed import DistInfo, local_batch, shard_range
from corda.errors import ConfigError
from corda.testing import free_port, gloo_process_group

ROOT = Path(__file__).resolve().parents[1]
H, W = 32, 32

# Tiny convolutions on a shared 2-core machine: one OpenMP thread is much faster than two.
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# (c) configuration errors and the shard arithmetic


def test_non_divisible_batch_names_its_key():
    from corda.depth.config import DepthConfig
    from corda.depth.run import train_depth

    with pytest.raises(ConfigError, match=r"depth\.batch_size: 3 .*divisible by depth\.devices=2"):
        from_mapping(DepthConfig, {"batch_size": 3, "devices": 2}, "depth")
    assert DepthConfig().devices == 1 and from_mapping(DepthConfig, {"devices": 2}, "depth").devices == 2
    with pytest.raises(ConfigError, match="depth.devices"):
        from_mapping(DepthConfig, {"devices": 0}, "depth")
    # The library checks too (a config built in code, run under 2 processes): before any collective.
    cfg = DepthConfig(batch_size=3, iterations=1, device="cpu")
    with pytest.raises(ConfigError, match=r"depth\.batch_size.*multiple of depth\.devices"):
        train_depth(cfg, [], torch.device("cpu"), Path("unused.pt"), {}, dist=DistInfo(0, 2))
    # The training stages keep their message.
    with pytest.raises(ConfigError, match=r"train\.batch_target.*multiple of train\.devices"):
        local_batch(3, DistInfo(1, 2), "train.batch_target")
    from corda.seg.config import PseudoConfig

    assert PseudoConfig().devices == 1
    with pytest.raises(ConfigError, match="pseudo_labels.devices"):
        from_mapping(PseudoConfig, {"devices": 0}, "pseudo_labels")


@pytest.mark.parametrize("n, world, align", [(7, 2, 2), (10, 3, 4), (3, 4, 1), (1, 2, 16), (0, 2, 3)])
def test_shard_range_covers_every_item_once_in_whole_batches(n, world, align):
    shares = [shard_range(n, DistInfo(r, world), align) for r in range(world)]
    assert [i for s in shares for i in s] == list(range(n))  # contiguous, in order, each item once
    for s in shares:
        assert len(s) == 0 or s.start % align == 0  # starts on a batch boundary of the one-process pass
    sizes = [-(-len(s) // align) for s in shares]  # batches per rank differ by at most one
    assert max(sizes) - min(sizes) <= 1


def test_diagnostics_of_shards_sum_to_the_whole():
    from corda.pseudo import PseudoLabelDiagnostics

    rng = np.random.default_rng(0)
    imgs = [(rng.integers(0, 4, (8, 8)), rng.integers(0, 4, (8, 8)), rng.random((8, 8)), rng.random((8, 8)),
             rng.random((8, 8))) for _ in range(5)]
    whole, a, b = (PseudoLabelDiagnostics(4, (0, 1, 2, 3), auroc_bins=64, curve_bins=5) for _ in range(3))
    for i, im in enumerate(imgs):
        whole.update(*im)
        (a if i < 2 else b).update(*im)
    sa, sb = a.state_arrays(), b.state_arrays()
    a.load_state_arrays({k: sa[k] + sb[k] for k in sa})
    ra, rw = a.result(), whole.result()
    assert ra.pop("weighted_accuracy") == pytest.approx(rw.pop("weighted_accuracy"), rel=1e-12)
    assert ra == rw and a.curve_records() == whole.curve_records()
    assert sb["matrix"].sum() < sa["matrix"].sum() + sb["matrix"].sum()  # the shards really differed


# ------------------------------------------------------------------------------------------------
# (a) depth pretraining: 2 gloo processes vs 1 process with the same global batch


class StereoDS(torch.utils.data.Dataset):
    """Random stereo pairs: image, right view (the image shifted by 2 px), intrinsics, baseline."""

    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(3)
        self.img = torch.rand(n, 3, H, W + 2, generator=g)
        self.K = torch.tensor([[W * 1.1, 0.0, W / 2], [0.0, W * 1.1, H / 2], [0.0, 0.0, 1.0]])

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, key):
        i, _draw = key
        return {"image": self.img[i, :, :, 2:], "right": self.img[i, :, :, :W], "K": self.K,
                "baseline": torch.tensor(0.5)}


class _EvalBN(nn.BatchNorm2d):
    """BatchNorm kept in eval mode: per-rank batch statistics are the one thing sharding changes on purpose
    (corda.depth.step), so the exact comparison takes them out."""

    def train(self, mode: bool = True):
        return super().train(False)


def _depth_cfg(**kw):
    from corda.depth.config import DepthConfig

    # num_scales 3 < the network's 4 outputs: also exercises DDP with a disparity head outside the loss.
    base = dict(mode="stereo", iterations=4, batch_size=4, checkpoint_every=2, log_every=1, workers=0,
                num_scales=3, lr=1e-3, device="cpu")
    return DepthConfig(**{**base, **kw})


def _train_depth(cfg, scratch: Path, dist: DistInfo):
    import corda.depth.run as pre

    build = pre.build_depth_models

    def frozen_bn(c):
        models = build(c)
        for m in models.values():
            for mod in m.modules():
                if type(mod) is nn.BatchNorm2d:
                    mod.__class__ = _EvalBN
        return models

    pre.build_depth_models = frozen_bn
    try:
        return pre.train_depth(cfg, StereoDS(), torch.device("cpu"), scratch, {}, dist=dist)
    finally:
        pre.build_depth_models = build


def _depth_worker(rank: int, world: int, port: int, tmp: str) -> None:
    with gloo_process_group(rank, world, port) as info:
        tmp = Path(tmp)
        cfg = _depth_cfg(devices=2)
        models, tr = _train_depth(cfg, tmp / "last.pt", info)
        out = {"history": tr.history, "depth": {k: v.clone() for k, v in models["depth"].state_dict().items()}}
        torch.distributed.barrier()
        out["scratch"] = (tmp / "last.pt").is_file()
        models2, tr2 = _train_depth(cfg, tmp / "last.pt", info)  # resumes at step 2 (rank 0's checkpoint)
        out["resumed"] = models2["depth"].state_dict()
        out["resumed_history"] = tr2.history
        torch.save(out, tmp / f"rank{rank}.pt")


def test_depth_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_depth_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    torch.manual_seed(123)  # train_depth seeds itself: the global RNG state must not matter
    _, one = _train_depth(_depth_cfg(), tmp_path / "one.pt", DistInfo())
    _, half = _train_depth(_depth_cfg(batch_size=2), tmp_path / "half.pt", DistInfo())

    # Same global batch, same per-image random draws (flips, jitter, auto-mask noise are drawn for the
    # global batch on every rank), BN in eval mode, equal pixel counts per rank: the mean of the ranks'
    # losses is the one-process loss and DDP's averaged gradient its gradient, up to float32 summation
    # order (~1e-7 relative per step). Over 4 Adam steps the terms were observed to agree to ≤ 5e-7 relative
    # (the small smoothness term) and ≤ 1e-7 for the loss; 1e-5 leaves margin. The control, rank 0's half of
    # the batch alone (what a missing all-reduce, or a rank-0-only loss, would train and log), is off by
    # 2e-3…8e-3 at every step, so it fails the tolerance by far.
    assert len(r0["history"]) == len(one.history) == 4
    for a, b, c in zip(r0["history"], one.history, half.history, strict=True):
        for k in ("loss", "photometric", "smoothness", "automask"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), (a["step"], k, a[k], b[k])
        assert abs(c["loss"] - b["loss"]) > 1e-3 * b["loss"], (c["loss"], b["loss"])
    assert r0["history"] == r1["history"]  # logged terms are averaged over the ranks
    for k, v in r0["depth"].items():
        assert torch.equal(v, r1["depth"][k]), k  # DDP keeps the ranks' networks identical
    # Rank 0 alone writes the scratch checkpoint (the same file both see); both resume from it at step 2 and
    # end exactly where the uninterrupted run ended.
    assert r0["scratch"] and r1["scratch"]
    assert r0["resumed_history"] == r0["history"]
    for k, v in r0["depth"].items():
        assert torch.equal(v, r0["resumed"][k]), k


# ------------------------------------------------------------------------------------------------
# (b) pseudo_labels: the stage run as 2 processes (torchrun) writes the one-process files


def _pseudo_workdir(d: Path, n_train: int = 7) -> None:
    from corda.h5io import write_depth_h5
    from corda.io import write_json
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.model_file import build_model, save_model
    from corda.testing import write_cityscapes_fixture, write_synthia_fixture
    from corda.data.build import build_manifest
    from corda.data.config import DataConfig, SourceSpec, TargetSpec

    write_cityscapes_fixture(d / "cs", n_train=n_train, n_val=1, h=32, w=64, seed=0)
    write_synthia_fixture(d / "syn", n=1, h=32, w=64, seed=1)
    cfg = DataConfig(source=SourceSpec("synthia", str(d / "syn")), target=TargetSpec("cityscapes", str(d / "cs")),
                     validate_items=0)
    manifest = build_manifest(cfg)
    write_json(d / "data" / "manifest.json", manifest)
    names = manifest["splits"]["target_train"]["names"]
    rng = np.random.default_rng(0)
    depth = [(n, (rng.random((32, 64)) * 50 + 1).astype(np.float32), np.ones((32, 64), np.float16)) for n in names]
    depth[0][1][:4] = 1.0  # some invalid depth (ω = 1 there)
    write_depth_h5(d / "depth" / "target.h5", depth, len(depth),
                   {"min_depth_m": 0.1, "max_depth_m": 100.0, "mode": "stereo", "model_hash": "x", "domain": "t"})
    mcfg = ModelConfig(backbone="resnet18", output_stride=16, task_channels=16, bottleneck=8, aspp_branches=4,
                       initial_seg_head="conv1x1", input_norm="imagenet", freeze_bn_affine=False)
    torch.manual_seed(0)
    net = build_model(mcfg, "corda")
    with torch.no_grad():  # make the two depth decoders disagree, so ω is not all 1
        net.head_d_src.convs[0].bias.fill_(3.0)
    save_model(d / "models" / "corda.pt", method="corda", student=net, teacher=net, mcfg=mcfg, tcfg=TrainConfig(),
               history=[])


def _run_pseudo(d: Path, devices: int) -> subprocess.CompletedProcess:
    import yaml

    (d / "params.yaml").write_text(yaml.safe_dump(
        {"pseudo_labels": {"batch_size": 2, "threshold": 0.968, "weight_rule": "confidence_x_omega",
                           "devices": devices}, "train": {"target_resize_hw": None},
         "run": {"pseudo_labels": {"device": "cpu"}}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CORDA_LOG_LEVEL": "INFO",
           "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([sys.executable, "-m", "stages.pseudo_labels"], cwd=d, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _h5_content(path: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        for k, ds in f.items():
            out[k] = (ds.dtype, ds.shape, ds.chunks, ds.compression, ds[()])
    return out


def test_pseudo_labels_two_processes_write_the_one_process_files(tmp_path):
    _pseudo_workdir(tmp_path)
    _run_pseudo(tmp_path, 1)
    one = {p: (tmp_path / p).read_bytes() for p in ("pseudo/target.h5", "metrics/pseudo_labels.json",
                                                     "plots/pseudo_label_accuracy.json")}
    one_h5 = _h5_content(tmp_path / "pseudo" / "target.h5")
    (tmp_path / "pseudo" / "target.h5").unlink()
    (tmp_path / "pseudo" / "target.h5.part5").write_text("stale part of an earlier run")
    res = _run_pseudo(tmp_path, 2)
    assert "pseudo_labels.devices=2: re-running as" in res.stderr  # it did run under torchrun

    # 7 images in batches of 2 → rank 0 labels images 0–3, rank 1 images 4–6 (whole batches each). The
    # merged file has every dataset (values, dtype, chunks, filters), name and attribute of the one-process
    # file; h5py writes identical content as identical bytes, so the files are byte-identical too.
    two_h5 = _h5_content(tmp_path / "pseudo" / "target.h5")
    assert set(two_h5) == set(one_h5) == {"attrs", "label", "confidence", "depth_weight", "weight", "names"}
    assert two_h5["attrs"] == one_h5["attrs"]
    for k in ("label", "confidence", "depth_weight", "weight", "names"):
        assert two_h5[k][:4] == one_h5[k][:4], k
        assert np.array_equal(two_h5[k][4], one_h5[k][4]), k
    assert len(one_h5["names"][4]) == 7 and 0 < one_h5["depth_weight"][4].min() < 1
    assert (tmp_path / "pseudo" / "target.h5").read_bytes() == one["pseudo/target.h5"]
    assert sorted(p.name for p in (tmp_path / "pseudo").iterdir()) == ["target.h5"]  # parts (and stale) removed

    # Metrics: the confusion matrix and every histogram (AUROC, curves) are integer counts summed over the
    # ranks, so they are exact; only weighted_accuracy's two float64 sums are added in another order
    # (per rank, then across ranks): equal to ~1e-16 relative.
    m1 = json.loads(one["metrics/pseudo_labels.json"])
    m2 = json.loads((tmp_path / "metrics" / "pseudo_labels.json").read_text())
    assert m2.pop("weighted_accuracy") == pytest.approx(m1.pop("weighted_accuracy"), rel=1e-12)
    assert m2 == m1 and m1["pixels"] > 0 and m1["auroc"]["combined"] is not None
    assert (tmp_path / "plots" / "pseudo_label_accuracy.json").read_bytes() == one["plots/pseudo_label_accuracy.json"]
