"""DAFormer's recipe in the training path: rare-class sampling (the rcs stage's file, the sampler, the re-crop
rule), the ImageNet feature distance as a loss term, and the pseudo-label row crop; each off by default with the
draws and the logged terms of a run without it."""

import numpy as np
import pytest
import torch

from corda.data.datasets import SegDepthDataset
from corda.data.index import scan_dataset
from corda.engine import batch_keys, step_generator
from corda.errors import ConfigError, DataError
from corda.rcs import compute_class_stats, load_sampler, rcs_batch_keys, read_class_stats, write_class_stats
from corda.testing import write_gta5_fixture


@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    root = tmp_path_factory.mktemp("gta")
    write_gta5_fixture(root, n=4, h=48, w=64, seed=5, disparity=False)
    return scan_dataset("gta5", root, "train")


def _stats(index, tmp_path, min_pixels=10):
    ds = SegDepthDataset(index, ("label",), None, None)
    stats = compute_class_stats(((n, ds.load_raw(i)["label"]) for i, n in enumerate(ds.names)), 19)
    path = tmp_path / "rcs_class_stats.json"
    write_class_stats(path, stats, min_pixels=min_pixels)
    return ds, stats, path


def test_stats_file_summary_and_stale_names(gta, tmp_path):
    ds, stats, path = _stats(gta, tmp_path)
    import json

    obj = json.loads(path.read_text())
    assert obj["class_pixels"] == stats.counts.sum(0).tolist() and obj["min_pixels"] == 10
    assert abs(sum(obj["class_frequency"]) - 1) < 1e-6
    for c, names in obj["images_with_class"].items():
        assert all(stats.counts[ds.names.index(n), int(c)] > 10 for n in names)
    assert read_class_stats(path).names == tuple(ds.names)
    with pytest.raises(DataError, match="dvc repro rcs") as err:
        load_sampler(path, ds.names[:3], 0.01, 10, 0)
    assert "\n" not in str(err.value)


def test_missing_stats_file_when_rcs_is_on(gta, tmp_path):
    from corda.seg.config import TrainConfig
    from corda.seg.run import make_source_sampler

    ds = SegDepthDataset(gta, ("label",), None, None)
    assert make_source_sampler(TrainConfig(), ds, tmp_path / "absent.json") is None  # off: never read
    with pytest.raises(DataError, match=r"absent\.json.*not found.*dvc repro rcs") as err:
        make_source_sampler(TrainConfig(rcs_temperature=0.01), ds, tmp_path / "absent.json")
    assert "\n" not in str(err.value)


def test_rare_class_keys_recrop_until_the_class_is_kept(gta, tmp_path):
    ds, stats, path = _stats(gta, tmp_path)
    sampler = load_sampler(path, ds.names, 0.01, 10, seed=3)
    keys = rcs_batch_keys(sampler, 2, step=7)
    assert keys == rcs_batch_keys(load_sampler(path, ds.names, 0.01, 10, seed=3), 2, step=7)  # resumable
    assert [k[1] for k in keys] == [14, 15]  # draw = global position, as the uniform keys
    plain = SegDepthDataset(gta, ("image", "label"), None, (16, 16), seed=1)
    rcs = SegDepthDataset(gta, ("image", "label"), None, (16, 16), seed=1, class_crop_min_pixels=20)
    recropped = 0
    for i in range(len(ds)):
        full = ds.load_raw(i)["label"]
        for c in np.flatnonzero(stats.counts[i] > 10):
            for draw in range(3):
                # DAFormer's rule: the windows come from the item's generator in turn; the first that keeps
                # more than 20 pixels of c is used, else the 11th (the first crop + 10 re-crops).
                rng = np.random.default_rng([1, draw, i])
                wins = [(int(rng.integers(0, 48 - 16 + 1)), int(rng.integers(0, 64 - 16 + 1))) for _ in range(11)]
                ok = [(full[y:y + 16, x:x + 16] == c).sum() > 20 for y, x in wins]
                y, x = wins[ok.index(True)] if any(ok) else wins[-1]
                b = rcs[(i, draw, int(c))]
                assert np.array_equal(b["label"].numpy(), full[y:y + 16, x:x + 16])
                recropped += int(not ok[0])
                if ok[0]:  # the first window keeps the class: exactly the uniform sample
                    a = plain[(i, draw)]
                    assert torch.equal(a["label"], b["label"]) and torch.equal(a["image"], b["image"])
    assert recropped
    # Without a threshold the class key changes nothing.
    assert torch.equal(SegDepthDataset(gta, ("label",), None, (16, 16), seed=1)[(0, 2, 5)]["label"],
                       plain[(0, 2)]["label"])


def test_uniform_step_batches_unchanged(gta):
    from corda.seg.run import StepBatches

    ds = SegDepthDataset(gta, ("label",), None, (16, 16))
    sb = StepBatches(ds, 2, seed=4, start=3, stop=6, workers=0)
    assert sb.keys == [batch_keys(len(ds), 2, 4, s) for s in range(3, 6)]


def _tiny_daformer(depth):
    from corda.models.daformer_head import DAFormerCorDANet

    torch.manual_seed(0)
    return DAFormerCorDANet(mit="b0", depth=depth, embed_dims=32, task_channels=32, bottleneck=8,
                            drop_path_rate=0.0).train()


def _batches(b=2, h=64, w=64):
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 19, (b, h, w), generator=g)
    lab[:, :32, :32] = 13  # a car block: one thing cell of the stride-32 grid per image
    src = {"image": torch.rand(b, 3, h, w, generator=g), "label": lab,
           "depth": 2 + torch.rand(b, 1, h, w, generator=g)}
    tgt = {"image": torch.rand(b, 3, h, w, generator=g), "depth": 2 + torch.rand(b, 1, h, w, generator=g)}
    return src, tgt


@pytest.mark.parametrize("method", ["dacs", "corda"])
def test_feature_distance_term(method):
    import copy

    from corda.losses.feature_distance import ImageNetFeatureDistance
    from corda.seg.config import TrainConfig
    from corda.seg.step import train_step

    student = _tiny_daformer(depth=method == "corda")
    teacher = copy.deepcopy(student)
    fd = ImageNetFeatureDistance(student.backbone, 0.005, (13,), 0.75, 19)
    src, tgt = _batches()
    cfg = TrainConfig(method=method)
    out = train_step(student, teacher, src, tgt, cfg, 0, step_generator(0, 0), fd=fd)
    assert out["feat_dist"].item() == pytest.approx(0.0, abs=1e-6)  # identical encoders
    with torch.no_grad():
        for p in student.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = train_step(student, teacher, src, tgt, cfg, 0, step_generator(0, 0), fd=fd)
    assert out["feat_dist"].item() > 0
    out["loss"].backward()
    assert all(p.grad is None for p in fd.encoder.parameters())
    off = train_step(student, teacher, src, tgt, cfg, 0, step_generator(0, 0))
    assert "feat_dist" not in off  # off: the logged terms of a run without it


def test_feature_distance_needs_daformer_and_weights():
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.methods import CORDA
    from corda.seg.run import make_feature_distance

    tcfg = TrainConfig(fd_weight=0.005)
    assert make_feature_distance(ModelConfig(), TrainConfig(), None, CORDA) is None
    with pytest.raises(ConfigError, match="architecture: daformer"):
        make_feature_distance(ModelConfig(), tcfg, None, CORDA)
    with pytest.raises(ConfigError, match="model.pretrained"):
        make_feature_distance(ModelConfig(architecture="daformer", mit="b0"), tcfg, None, CORDA)


def test_pl_ignore_rows_zero_the_pseudo_weight_only_there():
    from corda.seg.step import ignore_rows

    w = torch.full((2, 10, 4), 0.7)
    out = ignore_rows(w, 2, 3)
    assert out[:, :2].eq(0).all() and out[:, -3:].eq(0).all() and out[:, 2:7].eq(0.7).all()
    assert w.eq(0.7).all()  # a copy
    assert torch.equal(ignore_rows(w, 0, 0), w)


def test_pl_ignore_reaches_the_mixed_weight(monkeypatch):
    """With (top, bottom) set, the target pixels of those rows carry weight 0 in the mixed CE."""
    import copy

    import corda.seg.step as st
    from corda.seg.config import TrainConfig

    student = _tiny_daformer(depth=False)
    teacher = copy.deepcopy(student)
    src, tgt = _batches()
    seen = {}

    def spy(logits, labels, weight):
        seen["w"] = weight
        return logits.sum() * 0

    monkeypatch.setattr(st, "weighted_ce", spy)
    cfg = TrainConfig(method="dacs", pl_threshold=0.0, pl_ignore_top=5, pl_ignore_bottom=7)  # q = 1
    st.train_step(student, teacher, src, tgt, cfg, 0, step_generator(0, 0))
    w = seen["w"]
    m = st.classmix_masks(src["label"], step_generator(0, 0), include_ignore=True)
    target_px = m[:, 0] == 0 if m.dim() == 4 else m == 0
    assert w[:, :5][target_px[:, :5]].eq(0).all() and w[:, -7:][target_px[:, -7:]].eq(0).all()
    assert w[:, 5:-7][target_px[:, 5:-7]].eq(1).all()
