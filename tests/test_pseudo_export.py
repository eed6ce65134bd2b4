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
