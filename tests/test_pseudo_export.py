"""Pseudo-label export uses the training step's computations, and self-training reads what was exported."""

import numpy as np
import pytest
import torch

from corda.h5io import write_pseudo_h5
from corda.labels import CLASS_NAMES
from corda.models.corda_net import CorDANet, upsample_outputs
from corda.pseudo import final_weight, pseudo_label_batch
from corda.seg.step import teacher_pseudo_labels
from corda.uda import depth_discrepancy_weight


def _net():
    torch.manual_seed(0)
    net = CorDANet(num_classes=19, backbone="resnet18", output_stride=16, input_norm="imagenet",
                   freeze_bn_affine=False, initial_seg_head="conv1x1")
    return net.eval()


def test_exported_labels_and_weights_equal_the_training_computations():
    net = _net()
    x = torch.rand(2, 3, 64, 64)
    d = torch.rand(2, 1, 64, 64) * 50 + 2
    d[0, 0, :8] = 1.0  # invalid depth
    with torch.no_grad():  # make the two depth decoders disagree somewhere
        net.head_d_src.convs[0].bias.fill_(30.0)
    r = pseudo_label_batch(net, x, d, "confidence_x_omega", 0.968)
    labels, conf = teacher_pseudo_labels(net, x, use_initial=False)
    assert torch.equal(r["label"], labels) and torch.allclose(r["confidence"], conf)
    out = upsample_outputs(net(x), (64, 64), keys=("D", "D_src"))
    omega, _ = depth_discrepancy_weight(out["D_src"], out["D"], d, per_image=True)
    assert torch.allclose(r["omega"], omega[:, 0])
    assert (r["omega"][0, :8] == 1).all()  # invalid depth keeps weight 1
    assert r["omega"].min() < 1  # the decoders disagree elsewhere
    assert torch.allclose(r["weight"], r["confidence"] * r["omega"])


@pytest.mark.parametrize("rule", ["omega", "confidence", "threshold", "uniform"])
def test_weight_rules(rule):
    c = torch.tensor([0.5, 0.99])
    o = torch.tensor([0.2, 0.8])
    w = final_weight(rule, c, o, 0.968)
    expected = {"omega": o, "confidence": c, "threshold": torch.tensor([0.0, 0.8]), "uniform": torch.ones(2)}[rule]
    assert torch.allclose(w, expected)


def test_self_train_dataset_reads_planted_pseudo_labels(tmp_path):
    from corda.data.datasets import SegDepthDataset
    from corda.data.index import scan_dataset
    from corda.testing import write_cityscapes_fixture

    root = tmp_path / "cs"
    write_cityscapes_fixture(root, n_train=3, n_val=1, h=32, w=64, seed=0)
    index = scan_dataset("cityscapes", root, "train")
    rng = np.random.default_rng(0)
    planted = {n: (rng.integers(0, 19, (32, 64)).astype(np.uint8), rng.random((32, 64)).astype(np.float32))
               for n in index.names}
    items = [(n, lab, np.full((32, 64), 0.9, np.float32), np.ones((32, 64), np.float32), w)
             for n, (lab, w) in planted.items()]
    h5 = tmp_path / "pl.h5"
    write_pseudo_h5(h5, items[::-1], len(items), {"class_names": list(CLASS_NAMES), "threshold": 0.968,
                                                 "checkpoint_hash": "x", "params": {}, "weight_rule": "omega"})
    ds = SegDepthDataset(index, ("image", "pseudo_label", "pseudo_weight"), None, (16, 32), pseudo_h5=h5, seed=3)
    for i, name in enumerate(index.names):
        s = ds[(i, 5)]
        lab, w = planted[name]
        # Locate the crop: the label must be a window of the planted map at the same place as the weight.
        found = False
        for y in range(32 - 16 + 1):
            for x in range(64 - 32 + 1):
                if np.array_equal(lab[y:y + 16, x:x + 32], s["pseudo_label"].numpy()):
                    found = True
                    np.testing.assert_allclose(w[y:y + 16, x:x + 32], s["pseudo_weight"].numpy(), rtol=1e-3)
        assert found, name


@pytest.mark.parametrize("threads", [1, 2])
def test_label_items_one_image_at_a_time_equal_the_batch_maps(spy_interpolate, threads):
    """The export's maps, made image by image after the batch's forward pass, are the batch computation's rows
    bit for bit (labels, float32 confidence, ω, weight, and so the diagnostics); no upsampled tensor holds more
    than one image (the pseudo_labels memory bound, corda.pseudo.label_items)."""
    from corda.pseudo import PseudoLabelDiagnostics, label_items

    net = _net()
    with torch.no_grad():
        net.head_d_src.convs[0].bias.fill_(30.0)
    g = torch.Generator().manual_seed(3)
    h, w = 45, 77  # odd sizes: the vectorised kernels' tails are exercised
    items = []
    for i in range(5):
        d = torch.rand(1, h, w, generator=g) * 50 + 2
        d[0, :6] = 1.0
        lab = torch.randint(0, 19, (h, w), generator=g)
        lab[-4:] = 255
        items.append({"image": torch.rand(3, h, w, generator=g), "depth": d, "label": lab, "name": f"im{i}"})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref, ref_diag = [], PseudoLabelDiagnostics(19, "cityscapes19")
        for b0 in range(0, 5, 2):  # batches of 2, the last one short
            batch = items[b0:b0 + 2]
            # the whole batch's maps at once, as the export computed them before it went image by image
            d = torch.stack([it["depth"] for it in batch])
            with torch.no_grad():
                out = upsample_outputs(net(torch.stack([it["image"] for it in batch])), (h, w),
                                       keys=("S", "D", "D_src"))
                conf, label = torch.softmax(out["S"].float(), 1).max(1)
                omega = depth_discrepancy_weight(out["D_src"], out["D"], d, per_image=True)[0][:, 0]
            r = {"label": label, "confidence": conf, "omega": omega, "weight": conf * omega}
            for j, it in enumerate(batch):
                row = [r[k][j].numpy() for k in ("label", "confidence", "omega", "weight")]
                ref_diag.update(row[0], it["label"].numpy(), *row[1:])
                ref.append((it["name"], row[0].astype(np.uint8), *row[1:]))
        shapes = spy_interpolate()
        diag = PseudoLabelDiagnostics(19, "cityscapes19")
        got = list(label_items(net, items, 2, torch.device("cpu"), "confidence_x_omega", 0.968, diag))
    finally:
        torch.set_num_threads(before)
    assert [g_[0] for g_ in got] == [r_[0] for r_ in ref]
    for a, b in zip(got, ref):
        for x, y in zip(a[1:], b[1:]):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    for k, v in ref_diag.state_arrays().items():
        assert np.array_equal(diag.state_arrays()[k], v), k
    full = [s for s in shapes if s[-2:] == (h, w)]
    assert full and max(s[0] for s in full) == 1, set(full)


@pytest.mark.parametrize("resize_hw", [(21, 38), (32, 64), None])
def test_file_at_the_training_size_reads_back_what_the_full_size_file_gives(tmp_path, resize_hw):
    """pseudo_labels stores its maps at train.target_resize_hw (corda.pseudo.at_training_size): the self-training
    dataset draws bit-identical pseudo-labels and weights (every crop) from it as from the full-size file, and
    the file holds only the pixels it reads."""
    import h5py

    from corda.data.datasets import SegDepthDataset
    from corda.data.index import scan_dataset
    from corda.pseudo import at_training_size
    from corda.testing import write_cityscapes_fixture

    root = tmp_path / "cs"
    write_cityscapes_fixture(root, n_train=3, n_val=1, h=32, w=64, seed=0)
    index = scan_dataset("cityscapes", root, "train")
    rng = np.random.default_rng(1)
    items = [(n, rng.integers(0, 19, (32, 64)).astype(np.uint8), rng.random((32, 64)).astype(np.float32),
              rng.random((32, 64)).astype(np.float32), (rng.random((32, 64)) * 2).astype(np.float32))
             for n in index.names]
    attrs = {"class_names": list(CLASS_NAMES), "threshold": 0.968, "checkpoint_hash": "x", "params": {},
             "weight_rule": "omega"}
    full, small = tmp_path / "full.h5", tmp_path / "small.h5"
    write_pseudo_h5(full, items, len(items), attrs)
    write_pseudo_h5(small, at_training_size(iter(items), resize_hw), len(items), attrs)
    with h5py.File(small, "r") as f:
        assert f["label"].shape == (3, *(resize_hw or (32, 64)))
    if resize_hw is None:  # the embedded default (no target resize): the same file, byte for byte
        assert full.read_bytes() == small.read_bytes()
    fields = ("image", "pseudo_label", "pseudo_weight")
    crop = (16, 32) if resize_hw != (21, 38) else (13, 29)
    a = SegDepthDataset(index, fields, resize_hw, crop, pseudo_h5=full, seed=3)
    b = SegDepthDataset(index, fields, resize_hw, crop, pseudo_h5=small, seed=3)
    for i in range(len(index.names)):
        for draw in range(3):
            sa, sb = a[(i, draw)], b[(i, draw)]
            for k in ("pseudo_label", "pseudo_weight"):
                assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), (i, draw, k)
