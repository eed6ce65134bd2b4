"""Rare-class sampling (corda.rcs): the statistics file, the class probabilities and the draws."""

import numpy as np
import pytest

from corda.errors import DataError
from corda.rcs import (
    ClassStats,
    RareClassSampler,
    class_probabilities,
    compute_class_stats,
    crop_keeps_class,
    images_with_class,
    label_class_counts,
    read_class_stats,
    write_class_stats,
)


def _labels():
    """Four 100×100 labels: class 0 everywhere common, class 1 medium, class 2 rare, class 3 absent."""
    out = []
    for i in range(4):
        lab = np.zeros((100, 100), np.uint8)
        lab[:, :10] = 1 if i < 3 else 0
        if i == 1:
            lab[:5, 50:60] = 2  # 50 pixels of class 2 in one image only
        lab[-1, :] = 255  # ignore row
        out.append((f"img{i}", lab))
    return out


def test_counts_and_stats_file_roundtrip(tmp_path):
    assert label_class_counts(np.array([[0, 1, 255], [1, 30, 2]]), 4).tolist() == [1, 2, 1, 0]
    stats = compute_class_stats(_labels(), num_classes=4)
    assert stats.counts.shape == (4, 4) and stats.counts[:, 3].sum() == 0
    assert stats.counts[1].tolist() == [9900 - 990 - 50, 990, 50, 0]  # 100 ignore pixels not counted
    path = tmp_path / "rcs_stats.json"
    write_class_stats(path, stats)
    back = read_class_stats(path)
    assert back.names == stats.names and np.array_equal(back.counts, stats.counts)


@pytest.mark.parametrize("content,match", [(None, "not found"), ("", "empty"), ("{}", "not a format-1"),
                                           ('{"format": 1, "num_classes": 2, "names": [], "counts": []}',
                                            "no labelled pixels")])
def test_missing_or_empty_stats_file_one_line(tmp_path, content, match):
    path = tmp_path / "rcs_stats.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        read_class_stats(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "rebuild" in str(err.value)


def test_probabilities_follow_the_formula():
    counts = np.array([[7000, 2000, 900, 100, 0]])
    classes, p = class_probabilities(counts, temperature=0.01)
    assert classes.tolist() == [0, 1, 2, 3]  # absent class 4 gets no probability
    f = np.array([0.7, 0.2, 0.09, 0.01])
    expected = np.exp((1 - f) / 0.01) / np.exp((1 - f) / 0.01).sum()
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p[3] > p[2] > p[1] > p[0]  # rarer → more often
    _, p_hot = class_probabilities(counts, temperature=10.0)
    assert p_hot.max() - p_hot.min() < 0.05  # high temperature → nearly uniform


def test_draws_match_the_formula_frequencies():
    # 3 classes in 30 images; every image holds enough pixels of each class so that every class is drawable.
    counts = np.zeros((30, 3), np.int64)
    counts[:, 0], counts[:, 1], counts[:, 2] = 9000, 5000, 4000
    stats = ClassStats(tuple(f"i{k}" for k in range(30)), counts)
    sampler = RareClassSampler(stats, temperature=0.1, min_pixels=3000, seed=3)
    _, p = class_probabilities(counts, 0.1)
    n = 20000
    draws = sampler.draw(step=0, n=n)
    observed = np.bincount([c for c, _ in draws], minlength=3)
    chi2 = (((observed - n * p) ** 2) / (n * p)).sum()
    assert chi2 < 13.8  # χ² with 2 degrees of freedom, p = 0.001
    # Each draw's image holds the drawn class, and draws are a pure function of (seed, step).
    assert all(counts[i, c] > 3000 for c, i in draws)
    assert sampler.draw(5, 4) == RareClassSampler(stats, 0.1, 3000, seed=3).draw(5, 4)
    assert sampler.draw(5, 4) != sampler.draw(6, 4)


def test_min_pixels_filters_images_and_drops_undrawable_classes():
    stats = compute_class_stats(_labels(), num_classes=4)
    pools = images_with_class(stats, [0, 1, 2], min_pixels=100)
    assert pools[1].tolist() == [0, 1, 2] and pools[2].tolist() == []  # 50 px of class 2 is too few
    sampler = RareClassSampler(stats, temperature=0.01, min_pixels=100, seed=0)
    assert sampler.classes.tolist() == [0, 1] and np.isclose(sampler.probs.sum(), 1.0)
    with pytest.raises(DataError, match="rcs_min_pixels"):
        RareClassSampler(stats, 0.01, min_pixels=10**6)


def test_crop_keeps_class():
    crop = np.zeros((10, 10), np.uint8)
    crop[:2] = 5  # 20 pixels
    assert crop_keeps_class(crop, 5, min_pixels=30, min_crop_ratio=0.5)
    assert not crop_keeps_class(crop, 5, min_pixels=40, min_crop_ratio=0.5)
