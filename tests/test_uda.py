"""ClassMix, mixing, EMA, confidence weight, strong augmentation and the depth-discrepancy weight (§3, §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corda.colour import hsv_to_rgb, rgb_to_hsv
from corda.losses.segmentation import weighted_ce
from corda.uda import (
    _adjust,
    blur_kernel_size,
    classmix_masks,
    confidence_weight,
    depth_discrepancy_weight,
    ema_update,
    gaussian_blur,
    mix,
    strong_augment,
)


def _labels(b: int = 3, h: int = 8, w: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, 6, (b, h, w), generator=g)
    lab[:, 0, :3] = 255
    return lab


@pytest.mark.parametrize("rng_kind", ["torch", "numpy"])
def test_classmix_selects_half_of_the_classes_any_batch(rng_kind):
    labels = _labels(b=3)
    rng = torch.Generator().manual_seed(1) if rng_kind == "torch" else np.random.default_rng(1)
    masks = classmix_masks(labels, rng)
    assert masks.shape == (3, 1, 8, 12) and masks.dtype == torch.float32
    for lab, m in zip(labels, masks[:, 0]):
        classes = torch.unique(lab)
        chosen = [c for c in classes if bool(m[lab == c].all())]
        # Every class is either pasted entirely or not at all, and ⌈n/2⌉ classes are pasted.
        assert all(bool((m[lab == c] == 0).all()) for c in classes if c not in chosen)
        assert len(chosen) == math.ceil(len(classes) / 2)


def test_classmix_ignore_class_option_and_determinism():
    labels = _labels(b=2)
    hits_255 = 0
    for seed in range(20):
        strict = classmix_masks(labels, torch.Generator().manual_seed(seed), include_ignore=False)
        assert not strict[:, 0][labels == 255].any()
        faithful = classmix_masks(labels, torch.Generator().manual_seed(seed))
        hits_255 += int(faithful[:, 0][labels == 255].any())
    assert 0 < hits_255 < 20  # faithful: 255 is a drawable class (§9.4)
    a = classmix_masks(labels, torch.Generator().manual_seed(7))
    b = classmix_masks(labels, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_mix_keeps_image_label_depth_and_weight_aligned():
    # Encode each pixel's label into the image and the depth so the alignment after mixing can be checked.
    y_s = _labels(b=2)
    y_t = torch.randint(0, 6, (2, 8, 12))
    def enc(y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y.float() / 255.0, y.float() / 510.0, torch.zeros_like(y, dtype=torch.float)], 1)

    x_s, x_t = enc(y_s), enc(y_t)
    d_s, d_t = (y_s.float() + 10).unsqueeze(1), (y_t.float() + 100).unsqueeze(1)
    q = torch.tensor(0.3)
    m = classmix_masks(y_s, torch.Generator().manual_seed(0))
    x_m, y_m, d_m = mix(m, x_s, x_t), mix(m, y_s, y_t), mix(m, d_s, d_t)
    w0 = mix(m, torch.ones(2, 8, 12), q.expand(2, 8, 12))
    assert y_m.dtype == torch.int64
    assert torch.allclose(x_m, enc(y_m))
    src = m[:, 0].bool()
    assert torch.equal(d_m[:, 0][src], y_m[src].float() + 10)
    assert torch.equal(d_m[:, 0][~src], y_m[~src].float() + 100)
    assert torch.all(w0[src] == 1) and torch.allclose(w0[~src], q)
    assert src.any() and (~src).any()


def test_ema_update_by_hand():
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        teacher.weight.copy_(torch.tensor([0.0, 0.0, 0.0]))
        student.running_mean.fill_(5.0)
    assert ema_update(teacher, student, step=0) == 0.0  # α = 0: copy
    assert torch.equal(teacher.weight, student.weight)
    assert torch.all(teacher.running_mean == 0)  # buffers are not averaged (§3.9)

    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([0.0, 0.0, 0.0]))
    a = ema_update(teacher, student, step=5, alpha=0.999)
    assert a == pytest.approx(1 - 1 / 6)
    assert torch.allclose(teacher.weight, torch.tensor([1.0, 2.0, 3.0]) / 6)
    before = teacher.weight.clone()
    a = ema_update(teacher, student, step=100000, alpha=0.999)
    assert a == 0.999
    assert torch.allclose(teacher.weight, 0.999 * before + 0.001 * student.weight)


def test_confidence_weight():
    probs = torch.tensor([[[0.5, 0.968], [0.99, 0.2]], [[0.97, 0.1], [0.0, 1.0]]])
    assert float(confidence_weight(probs, 0.968)) == pytest.approx(4 / 8)


# --------------------------------------------------------------------------------------- strong augment


def test_blur_kernel_size():
    assert blur_kernel_size(512) == 51  # §3.6
    assert blur_kernel_size(1024) == 103
    assert blur_kernel_size(64) == 7
    assert blur_kernel_size(32) == 3
    assert blur_kernel_size(8) == 3  # minimum


def test_gaussian_blur_matches_2d_reference_and_is_per_image():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 20, 30)
    sigma = torch.tensor([0.3, 1.1])
    out = gaussian_blur(img, sigma)
    for i in range(2):
        k = 3
        x = torch.arange(k, dtype=torch.float32) - 1
        g = torch.exp(-x ** 2 / (2 * float(sigma[i]) ** 2))
        g = g / g.sum()
        k2 = (g[:, None] * g[None, :]).expand(3, 1, k, k)
        ref = F.conv2d(F.pad(img[i:i + 1], (1, 1, 1, 1), mode="reflect"), k2, groups=3)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-6)
    const = torch.full((1, 3, 20, 30), 0.4)
    assert torch.allclose(gaussian_blur(const, torch.tensor([1.0])), const)


def test_hsv_round_trip_and_jitter_ops():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 5, 7)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(img)), img, atol=1e-5)
    assert torch.allclose(_adjust(img, 0, 1.2), (img + 0.2).clamp(0, 1))  # additive brightness (kornia 0.4.1)
    assert torch.allclose(_adjust(img, 1, 0.8), img * 0.8)  # multiplicative contrast
    grey = _adjust(img, 2, 0.0)  # zero saturation: every channel equals the max
    assert torch.allclose(grey, img.max(1, keepdim=True).values.expand_as(img), atol=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(_adjust(red, 3, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1), atol=1e-5)


def test_strong_augment_properties():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 64)
    assert torch.equal(strong_augment(img, torch.Generator().manual_seed(0), jitter_p=0.0, blur_p=0.0), img)
    outs = [strong_augment(img, torch.Generator().manual_seed(s), jitter_p=1.0, blur_p=1.0)
            for s in (1, 1, 2)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert outs[0].shape == img.shape and outs[0].min() >= 0 and outs[0].max() <= 1
    # Per-image factors: two identical images come out different.
    twin = img[:1].expand(2, -1, -1, -1).contiguous()
    out = strong_augment(twin, torch.Generator().manual_seed(3), jitter_p=1.0, blur_p=1.0)
    assert not torch.allclose(out[0], out[1])
    # Whether jitter/blur applies is one draw per batch: with p = 0.5 the batch is all-or-nothing.
    for s in range(10):
        out = strong_augment(twin, torch.Generator().manual_seed(s), jitter_p=0.0, blur_p=0.5)
        changed = [not torch.equal(out[i], twin[i]) for i in range(2)]
        assert changed[0] == changed[1]


# ---------------------------------------------------------------------------------- depth discrepancy


def test_depth_weight_values():
    d_m = torch.tensor([10.0, 10.0, 10.0, 1.0]).view(1, 1, 1, 4)
    d_src = torch.tensor([10.0, 25.0, 15.0, 50.0]).view(1, 1, 1, 4)
    d_tgt = torch.tensor([10.0, 5.0, 10.0, 2.0]).view(1, 1, 1, 4)
    omega, mult = depth_discrepancy_weight(d_src, d_tgt, d_m, per_image=True)
    # agree → 1; |ΔD| = 20 ≥ d_m → 1e-3; |ΔD| = 5 = d_m/2 → 0.5 + 1e-3; invalid depth → 1.
    assert torch.allclose(omega.flatten(), torch.tensor([1.0, 1e-3, 0.501, 1.0]))
    assert torch.allclose(mult.flatten(), omega.flatten() / omega.mean())
    assert not omega.requires_grad


def test_depth_weight_per_image_vs_faithful_broadcast():
    torch.manual_seed(0)
    b, h, w = 2, 4, 6
    d_m = torch.rand(b, 1, h, w) * 20 + 2
    d_tgt = torch.rand(b, 1, h, w) * 20 + 2
    d_src = d_tgt + torch.randn(b, 1, h, w) * 10
    omega, own = depth_discrepancy_weight(d_src, d_tgt, d_m, per_image=True)
    _, mixed = depth_discrepancy_weight(d_src, d_tgt, d_m, per_image=False)
    assert torch.allclose(own, omega[:, 0] / omega.mean())
    assert torch.allclose(mixed[0], mixed[1]) and torch.allclose(mixed[0], omega[:, 0].mean(0) / omega.mean())
    assert not torch.allclose(own, mixed)

    # The faithful multiplier reproduces the original's (B,H,W)×(B,1,H,W) broadcasting in the mixed CE.
    logits, labels = torch.randn(b, 5, h, w), torch.randint(0, 5, (b, h, w))
    w0 = torch.rand(b, h, w)
    ce = F.cross_entropy(logits, labels, reduction="none")
    original = torch.mean(ce * (w0 * omega / omega.mean()))  # broadcasts to (B, B, H, W)
    assert torch.allclose(weighted_ce(logits, labels, w0 * mixed), original, atol=1e-6)


def test_ema_update_matches_the_per_tensor_update_bit_for_bit():
    """The multi-tensor kernels compute exactly θ_t·α + θ_s·(1−α) per tensor (runs stay reproducible)."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    teacher = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    want = [p_t.detach().clone() for p_t in teacher.parameters()]
    for step in (3, 50, 4000):
        a = min(1.0 - 1.0 / (step + 1), 0.99)
        want = [w.mul(a).add(p_s.detach(), alpha=1.0 - a) for w, p_s in zip(want, student.parameters())]
        ema_update(teacher, student, step, 0.99)
        for w, p_t in zip(want, teacher.parameters()):
            assert torch.equal(w, p_t)
    with pytest.raises(ValueError, match="parameter tensors"):
        ema_update(teacher, nn.Conv2d(3, 8, 3), 1)
