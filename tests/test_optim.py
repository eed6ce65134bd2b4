"""The original's repeated backbone updates (train.duplicate_backbone_updates, corda.optim)."""

import copy

import pytest
import torch
from torch import nn

from corda.engine import Trainer, fingerprint, poly_lr, step_generator
from corda.optim import authors_repeat_counts, RepeatedSGD

LR, MOM, WD = 0.05, 0.9, 0.01


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False))


class _Backbone(nn.Module):
    """conv1 (listed once), bn1 frozen (never), layer1: a block conv (3×) and a downsample conv (4×)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2)
        self.bn1.weight.requires_grad_(False)
        self.bn1.bias.requires_grad_(False)
        self.layer1 = nn.Sequential(_Block())
        self.layer2 = self.layer3 = self.layer4 = nn.Sequential()

    def params(self):
        return [self.conv1.weight, self.layer1[0].conv.weight, self.layer1[0].downsample[0].weight]


def _grads(step):
    g = step_generator(7, step)
    return [torch.randn(2, 2, 1, 1, generator=g) for _ in range(3)]


def test_repeat_counts_follow_module_nesting():
    net = _Backbone()
    counts = authors_repeat_counts(net)
    assert [counts[id(p)] for p in net.params()] == [1, 3, 4]
    assert id(net.bn1.weight) not in counts  # frozen affines are filtered out, as in the original


def test_resnet101_has_314_entries_for_104_tensors():
    from corda.models.backbone import DilatedResNet

    counts = authors_repeat_counts(DilatedResNet("resnet101", freeze_bn_affine=True))
    assert len(counts) == 104 and sum(counts.values()) == 314
    assert sorted(set(counts.values())) == [1, 3, 4]
    assert sum(1 for k in counts.values() if k == 4) == 4 and sum(1 for k in counts.values() if k == 3) == 99


def test_k_sequential_updates_match_a_plain_loop():
    """5 steps with fresh gradients and a poly lr against torch 1.7.1's per-entry update written out."""
    net = _Backbone()
    ref = [p.detach().clone() for p in net.params()]
    ks = [1, 3, 4]
    opt = RepeatedSGD([{"params": net.params(), "repeats": ks}], lr=LR, momentum=MOM, weight_decay=WD)
    bufs = [None, None, None]
    for step in range(5):
        lr = poly_lr(LR, step, 5)
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(net.params(), _grads(step)):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(_grads(step)):
            for _ in range(ks[i]):  # the entry listed k times: k updates, one shared momentum buffer
                d = g + WD * ref[i]
                bufs[i] = d.clone() if bufs[i] is None else MOM * bufs[i] + d
                ref[i] = ref[i] - lr * bufs[i]
        for i, p in enumerate(net.params()):
            torch.testing.assert_close(p.detach(), ref[i], rtol=1e-6, atol=1e-7)


def test_all_counts_one_is_torch_sgd():
    a, b = _Backbone(), _Backbone()
    b.load_state_dict(a.state_dict())
    oa = RepeatedSGD(a.params(), lr=LR, momentum=MOM, weight_decay=WD)
    ob = torch.optim.SGD(b.params(), lr=LR, momentum=MOM, weight_decay=WD)
    for step in range(4):
        for net in (a, b):
            for p, g in zip(net.params(), _grads(step)):
                p.grad = g.clone()
        oa.step()
        ob.step()
    for pa, pb in zip(a.params(), b.params()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7)


def test_repeated_step_moves_a_3x_tensor_5_61x_as_far_on_step_1():
    """The issue's measured step-1 ratio for lr 2.5e-4, momentum 0.9, weight decay 5e-4 and no weight."""
    w = nn.Parameter(torch.zeros(1))
    opt = RepeatedSGD([{"params": [w], "repeats": [3]}], lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    w.grad = torch.ones(1)
    opt.step()
    assert float(-w.detach() / 2.5e-4) == pytest.approx(1 + 1.9 + 2.71, rel=1e-3)  # 5.61


def _trainer(tmp_path, fail_at=None, iterations=8):
    torch.manual_seed(0)
    net = _Backbone()
    opt = RepeatedSGD([{"params": net.params(), "repeats": [1, 3, 4], "lr_mult": 1.0}], lr=LR, momentum=MOM,
                      weight_decay=WD)
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))

    def step_fn(step):
        if step == fail_at:
            raise KeyboardInterrupt("killed")
        b = net.layer1[0]
        y = b.downsample(b.conv(net.conv1(x)))
        return {"loss": (y - 1).pow(2).mean()}

    tr = Trainer(modules={"net": net}, optimizer=opt, iterations=iterations,
                 lr_at=lambda s: poly_lr(LR, s, iterations), scratch=tmp_path / "last.pt",
                 fingerprint=fingerprint({"c": 1}), checkpoint_every=3, log_every=2)
    tr.step = step_fn  # what run() runs
    return tr, net


def test_poly_schedule_and_resume_with_repeats(tmp_path):
    ref_tr, ref = _trainer(tmp_path / "a")
    ref_tr.run(ref_tr.step)
    assert ref_tr.optimizer.param_groups[0]["lr"] == pytest.approx(poly_lr(LR, 7, 8))
    tr, _ = _trainer(tmp_path / "b", fail_at=5)
    with pytest.raises(KeyboardInterrupt):
        tr.run(tr.step)
    tr2, net2 = _trainer(tmp_path / "b")
    tr2.run(tr2.step)
    assert tr2.optimizer.param_groups[0]["repeats"] == [1, 3, 4]
    for p, q in zip(ref.params(), net2.params()):
        assert torch.equal(p, q)


def test_build_optimizer_switch():
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import build_optimizer
    from corda.seg.model_file import build_model

    mcfg = ModelConfig(backbone="resnet18", output_stride=16, freeze_bn_affine=True)
    model = build_model(mcfg, "dacs")
    on = build_optimizer(model, TrainConfig(duplicate_backbone_updates=True))
    off = build_optimizer(model, TrainConfig())
    assert isinstance(on, RepeatedSGD) and type(off) is torch.optim.SGD
    reps = on.param_groups[0]["repeats"]
    # resnet18: stem conv 1×, 16 block convs 3×, 3 downsample convs 4×; heads never repeated.
    assert sorted(reps) == [1] + [3] * 16 + [4] * 3
    assert set(on.param_groups[1]["repeats"]) == {1}
    assert [g["lr_mult"] for g in on.param_groups] == [1.0, 10.0]
    assert copy.deepcopy(on.state_dict())["param_groups"][0]["repeats"] == reps
