"""Pseudo-label diagnostics: exact and streaming AUROC, confusion/mIoU, accuracy curves on planted data."""

import math

import numpy as np
import pytest

from corda.pseudo import AurocAccumulator, PseudoLabelDiagnostics, auroc


def brute_auroc(s, p):
    pos, neg = s[p], s[~p]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


# ---------------------------------------------------------------------------------------------------------
# AUROC
# ---------------------------------------------------------------------------------------------------------

def test_auroc_hand_computed():
    p = np.array([False, False, True, True])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), p) == 1.0  # perfect
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), p) == 0.0  # reversed
    assert auroc(np.full(4, 0.5), p) == 0.5  # all tied
    # pos {0.4, 0.8} vs neg {0.1, 0.4}: 1 + ½ + 1 + 1 over 4 pairs.
    assert auroc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([False, True, False, True])) == 0.875
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))
    assert math.isnan(auroc(np.array([]), np.array([], dtype=bool)))


def test_auroc_random_and_against_brute_force():
    rng = np.random.default_rng(0)
    s = rng.random(20000)
    assert abs(auroc(s, rng.random(20000) < 0.3) - 0.5) < 0.02
    for _ in range(5):  # heavy ties: scores from 7 levels
        s = rng.integers(0, 7, 300) / 6.0
        p = rng.random(300) < (0.2 + 0.6 * s)
        assert auroc(s, p) == pytest.approx(brute_auroc(s, p), abs=1e-12)


def test_histogram_auroc_matches_exact():
    rng = np.random.default_rng(1)
    n = 200_000
    p = rng.random(n) < 0.25
    s = np.where(p, rng.beta(5, 2, n), rng.beta(2, 5, n))  # informative, continuous scores
    acc = AurocAccumulator(4096)
    for chunk in np.array_split(np.arange(n), 7):  # streaming in pieces == one shot
        acc.update(s[chunk], p[chunk])
    exact = auroc(s, p)
    assert 0.8 < exact < 0.99
    assert abs(acc.compute() - exact) < 1e-3
    assert abs(acc.compute() - exact) <= acc.error_bound() + 1e-12
    assert acc.pos.sum() + acc.neg.sum() == n  # memory: counts only, no stored scores
    coarse = AurocAccumulator(2)  # very coarse bins: large but bounded error
    coarse.update(s, p)
    assert abs(coarse.compute() - exact) <= coarse.error_bound() + 1e-12
    assert coarse.error_bound() > 0.05


def test_histogram_auroc_extremes():
    acc = AurocAccumulator(16)
    acc.update(np.array([0.0, 0.01, 0.99, 1.0]), np.array([False, False, True, True]))
    assert acc.compute() == 1.0
    acc = AurocAccumulator(16)
    acc.update(np.array([1.5, -0.5]), np.array([False, True]))  # clipped into [0, 1]
    assert acc.compute() == 0.0
    assert math.isnan(AurocAccumulator().compute())
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([np.nan]), np.array([True]))


# ---------------------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------------------

def test_miou_hand_computed():
    d = PseudoLabelDiagnostics(19, "cityscapes19")
    gt = np.array([[0, 0, 1, 1, 255]])
    pl = np.array([[0, 1, 1, 1, 0]])  # the last pixel is ignored (gt 255)
    one = np.ones_like(gt, dtype=np.float32)
    d.update(pl, gt, one, one, one)
    r = d.result()
    # class 0: TP 1, FN 1 → ½; class 1: TP 2, FP 1 → ⅔; the 17 absent classes are skipped.
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["per_class"]["road"] == pytest.approx(0.5) and r["per_class"]["sidewalk"] == pytest.approx(2 / 3)
    assert r["per_class"]["sky"] is None
    assert r["pixel_accuracy"] == pytest.approx(0.75) and r["pixels"] == 4
    assert PseudoLabelDiagnostics(19, "synthia16").class_set == tuple(
        i for i in range(19) if i not in (9, 14, 16))


def planted(rng, shape=(2, 32, 64)):
    """Ground truth with ignore pixels; 25 % wrong pseudo-labels that all have low confidence."""
    gt = rng.integers(0, 3, shape)
    ignore = rng.random(shape) < 0.1
    wrong = rng.random(shape) < 0.25
    pl = np.where(wrong, (gt + 1) % 3, gt)
    gt = np.where(ignore, 255, gt)
    conf = np.where(wrong, 0.32, 0.92)
    conf = np.where(ignore, 0.99, conf)  # confident wrong-looking pixels that must be ignored
    omega = rng.uniform(1e-3, 1.0, shape)  # uninformative ω
    return pl, gt, conf, omega, wrong & ~ignore, ignore


def test_diagnostics_on_planted_data():
    rng = np.random.default_rng(0)
    d = PseudoLabelDiagnostics(19, "cityscapes19")
    pl, gt, conf, omega, wrong, ignore = planted(rng)
    weight = conf * omega
    for b in range(pl.shape[0]):  # image by image (H, W) ...
        d.update(pl[b], gt[b], conf[b].astype(np.float16), omega[b], weight[b])
    r = d.result()
    valid = ~ignore
    assert r["pixels"] == valid.sum()
    assert r["pixel_accuracy"] == pytest.approx(1 - wrong.sum() / valid.sum())
    assert r["auroc"]["confidence"] == pytest.approx(1.0)  # ignored confident pixels did not count
    assert abs(r["auroc"]["depth_weight"] - 0.5) < 0.05
    exact_comb = auroc(1 - (conf * omega)[valid], wrong[valid])
    assert 0.6 < exact_comb < 0.99
    assert r["auroc"]["combined"] == pytest.approx(exact_comb, abs=1e-3)
    assert r["weighted_accuracy"] == pytest.approx(weight[valid & ~wrong].sum() / weight[valid].sum())
    assert r["weighted_accuracy"] > r["pixel_accuracy"]

    # ... equals one batched (B, H, W) update.
    d2 = PseudoLabelDiagnostics(19, "cityscapes19")
    d2.update(pl, gt, conf.astype(np.float16), omega, weight)
    assert d2.result() == r
    assert d2.curve_records() == d.curve_records()

    recs = d.curve_records()
    conf_recs = {rec["weight"]: rec for rec in recs if rec["signal"] == "confidence"}
    assert set(conf_recs) == {0.325, 0.925}
    assert conf_recs[0.325]["accuracy"] == 0.0 and conf_recs[0.325]["pixels"] == wrong.sum()
    assert conf_recs[0.925]["accuracy"] == 1.0 and conf_recs[0.925]["pixels"] == (valid & ~wrong).sum()
    assert {rec["signal"] for rec in recs} == {"confidence", "depth_weight", "combined"}
    for sig in ("depth_weight", "combined"):
        assert sum(rec["pixels"] for rec in recs if rec["signal"] == sig) == valid.sum()
    assert all(set(rec) == {"weight", "accuracy", "signal", "pixels"} for rec in recs)


def test_depth_weight_that_flags_wrong_pixels_scores_high():
    rng = np.random.default_rng(3)
    pl, gt, _, _, wrong, ignore = planted(rng)
    conf = rng.uniform(0.5, 1.0, pl.shape)  # uninformative confidence
    omega = np.where(wrong, rng.uniform(0.001, 0.6, pl.shape), rng.uniform(0.4, 1.0, pl.shape))
    d = PseudoLabelDiagnostics(19, range(19))
    d.update(pl, gt, conf, omega, conf * omega)
    r = d.result()
    assert r["auroc"]["depth_weight"] > 0.9
    assert abs(r["auroc"]["confidence"] - 0.5) < 0.05
    assert r["auroc"]["depth_weight"] == pytest.approx(auroc(1 - omega[~ignore], wrong[~ignore]), abs=1e-3)


def test_empty_and_bad_input():
    d = PseudoLabelDiagnostics(19, "cityscapes19")
    r = d.result()
    assert r["miou"] is None and r["auroc"]["confidence"] is None and d.curve_records() == []
    with pytest.raises(ValueError, match="shapes"):
        d.update(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="class set"):
        PseudoLabelDiagnostics(19, "nope")
