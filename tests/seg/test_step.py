"""The segmentation step, corda.seg.step (method.md §3, §4): every method of corda.methods."""

import copy

import pytest
import torch
import torch.nn.functional as F

from corda.errors import DataError
from corda.losses.segmentation import weighted_ce
from corda.models.corda_net import CorDANet, param_groups, upsample_outputs
from corda.seg.config import TrainConfig
from corda.seg.step import teacher_pseudo_labels, train_step
from corda.seg.model_file import build_seg_model
from corda.uda import ema_update

DEPTH_KEYS = {"S", "initial_S", "D", "D_src", "initial_D", "initial_D_src"}

# ------------------------------------------------------------------------------------------ training


def _toy_batches(b: int = 2, h: int = 32, w: int = 64):
    """Learnable toy data: three vertical stripes whose colour and depth are functions of the class."""
    cols = torch.arange(w) * 3 // w
    label = cols.view(1, 1, w).expand(b, h, w).clone()
    palette = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]])
    image = palette[label].permute(0, 3, 1, 2).contiguous()
    depth = (label.float() * 20 + 5).unsqueeze(1)
    label[:, :2] = 255  # a few ignored rows
    depth[:, :, -2:] = 1.0  # a few invalid depth rows
    src = {"image": image, "label": label, "depth": depth}
    tgt = {"image": (image * 0.8 + 0.1), "depth": depth.clone(), "label": label.clone()}
    return src, tgt


def _train(steps: int, seed: int, method: str = "corda", **cfg_kw):
    torch.manual_seed(seed)
    student = build_seg_model(method, backbone="resnet18", num_classes=3, initial_seg_head="conv1x1")
    teacher = copy.deepcopy(student)
    opt = torch.optim.SGD(param_groups(student, 1e-3), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    cfg = TrainConfig(method=method, **cfg_kw)
    src, tgt = _toy_batches()
    losses = []
    for step in range(steps):
        out = train_step(student, teacher, src, tgt, cfg, step, gen)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        ema_update(teacher, student, step, cfg.ema_alpha)
        losses.append(float(out["loss"].detach()))
    return student, losses, out


def test_corda_training_lowers_loss():
    _, losses, out = _train(20, seed=0)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert float(out["depth_src"]) > 0 and float(out["depth_mix"]) > 0
    assert 0.0 < float(out["omega_mean"]) <= 1.0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")


def test_training_is_deterministic():
    a, la, _ = _train(3, seed=3)
    b, lb, _ = _train(3, seed=3)
    assert la == lb
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    c, lc, _ = _train(3, seed=4)  # another seed: other draws, other weights
    assert lc != la
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_other_methods():
    torch.manual_seed(0)
    src, tgt = _toy_batches()
    gen = torch.Generator().manual_seed(0)

    dacs = build_seg_model("dacs", backbone="resnet18", num_classes=3)
    out = train_step(dacs, copy.deepcopy(dacs), src, tgt, TrainConfig(method="dacs"), 0, gen)
    assert float(out["depth_src"]) == 0 and float(out["depth_mix"]) == 0 and float(out["omega_mean"]) == 0
    assert float(out["seg_src_init"]) == 0 and float(out["seg_mix"]) > 0

    model = build_seg_model("corda", backbone="resnet18", num_classes=3)
    out = train_step(model, None, src, {}, TrainConfig(method="source_only"), 0, gen)  # no target needed
    assert float(out["seg_mix"]) == 0 and float(out["loss"].detach()) == pytest.approx(
        float(out["seg_src"] + out["seg_src_init"]), rel=1e-5)

    out = train_step(model, None, {}, tgt, TrainConfig(method="oracle"), 0, gen)
    assert float(out["seg_tgt"]) > 0 and float(out["seg_src"]) == 0
    with pytest.raises(DataError):
        train_step(model, None, {}, {"image": tgt["image"]}, TrainConfig(method="oracle"), 0, gen)

    # self_train: labels/weights from the exported pseudo-labels; zero weight kills the target pixels' CE.
    st = dict(tgt, pseudo_label=src["label"].clamp(max=2), pseudo_weight=torch.zeros(2, 32, 64))
    cfg = TrainConfig(method="self_train")
    lo = train_step(model, None, src, st, cfg, 0, torch.Generator().manual_seed(5))
    st["pseudo_weight"] = torch.ones(2, 32, 64)
    hi = train_step(model, None, src, st, cfg, 0, torch.Generator().manual_seed(5))
    assert float(hi["seg_mix"]) > float(lo["seg_mix"])
    assert float(hi["pl_weight"]) == 1.0 and float(hi["depth_mix"]) > 0


def test_self_train_target_term_adds_the_unmixed_target_ce_and_feeds_bn():
    """self_train.target_weight: a weighted pseudo-label CE on the un-mixed target images is added to the
    loss, and the target batch passes through the student's BatchNorm (its running statistics move)."""
    torch.manual_seed(0)
    src, tgt = _toy_batches()
    st = dict(tgt, pseudo_label=src["label"].clamp(max=2), pseudo_weight=torch.rand(2, 32, 64) + 0.5)
    model = build_seg_model("corda", backbone="resnet18", num_classes=3)

    def run(weight):
        m = copy.deepcopy(model)
        cfg = TrainConfig(method="self_train", target_ce_weight=weight)
        return m, train_step(m, None, src, st, cfg, 0, torch.Generator().manual_seed(5))

    m0, off = run(0.0)
    m2, on = run(2.0)
    assert float(off["seg_tgt"]) == 0 and float(on["seg_tgt"]) > 0 and float(on["seg_tgt_init"]) > 0
    for k in ("seg_src", "seg_mix", "depth_mix"):  # the other terms do not depend on the extra forward
        assert float(on[k]) == pytest.approx(float(off[k]), rel=1e-5), k
    extra = 2.0 * (float(on["seg_tgt"]) + float(on["seg_tgt_init"]))
    assert float(on["loss"].detach()) == pytest.approx(float(off["loss"].detach()) + extra, rel=1e-5)
    # The term is the weighted CE of the student's un-mixed target prediction (method.md §3.3 form).
    m = copy.deepcopy(model).train()
    logits = upsample_outputs(m(st["image"]), (32, 64))["S"]
    ref = weighted_ce(logits, st["pseudo_label"], st["pseudo_weight"]).detach()
    assert float(on["seg_tgt"]) == pytest.approx(float(ref), rel=1e-4)
    bn0 = next(b for b in m0.modules() if isinstance(b, torch.nn.BatchNorm2d))
    bn2 = next(b for b in m2.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert not torch.equal(bn0.running_mean, bn2.running_mean)


def test_teacher_pseudo_labels_head_choice():
    torch.manual_seed(0)
    model = CorDANet(backbone="resnet18", num_classes=3).eval()
    x = torch.rand(2, 3, 32, 64)
    for use_initial, key in ((False, "S"), (True, "initial_S")):
        labels, conf = teacher_pseudo_labels(model, x, use_initial)
        with torch.no_grad():
            logits = F.interpolate(model(x)[key], size=(32, 64), mode="bilinear", align_corners=True)
        probs = logits.softmax(1)
        assert labels.shape == (2, 32, 64) and torch.equal(labels, probs.argmax(1))
        assert torch.allclose(conf, probs.max(1).values)
