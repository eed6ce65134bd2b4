"""DAFormer's thing-class ImageNet feature distance (corda.losses.feature_distance)."""

import copy

import pytest
import torch

from corda.errors import CordaError
from corda.losses.feature_distance import (
    downscale_label_ratio,
    feature_distance_loss,
    masked_feature_distance,
    thing_mask,
)
from corda.models.mit import MixTransformer
from corda.seg.config import THING_CLASSES


def test_zero_for_identical_encoders(one_thread):
    torch.manual_seed(0)
    student = MixTransformer("b0").eval()
    frozen = copy.deepcopy(student)
    x = torch.rand(2, 3, 64, 64)
    labels = torch.full((2, 64, 64), 13)  # car everywhere
    f_s, f_i = student(x)[-1], frozen(x)[-1]
    loss = feature_distance_loss(f_s, f_i, labels, 19, THING_CLASSES)
    assert loss.item() == 0.0
    with torch.no_grad():
        student.norm4.bias.add_(0.1)  # a changed student is pulled back
    assert feature_distance_loss(student(x)[-1], f_i, labels, 19, THING_CLASSES).item() > 0


def test_downscale_label_ratio_majority_and_min_ratio():
    lab = torch.zeros(1, 4, 8, dtype=torch.long)
    lab[0, :, 4:] = 13
    lab[0, 0, 4] = 0  # left cell: all 0; right cell: 15/16 car
    lab[0, :, 0] = 255
    lab[0, :, 1] = 5  # left cell: 8/16 class 0 (< 0.75) → ignore
    out = downscale_label_ratio(lab, 4, 0.75, 19)
    assert out.tolist() == [[[255, 13]]]
    assert downscale_label_ratio(lab, 4, 0.5, 19).tolist() == [[[0, 13]]]


def test_masks_to_thing_classes():
    f_i = torch.zeros(1, 3, 1, 2)
    f_s = torch.zeros(1, 3, 1, 2)
    f_s[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # distance 5 on the road cell
    f_s[0, :, 0, 1] = torch.tensor([0.0, 0.0, 2.0])  # distance 2 on the car cell
    labels = torch.zeros(1, 32, 64, dtype=torch.long)
    labels[..., 32:] = 13  # left cell road (0, a stuff class), right cell car (13, a thing class)
    mask = thing_mask(labels, (1, 2), THING_CLASSES, 19)
    assert mask.tolist() == [[[False, True]]]
    assert feature_distance_loss(f_s, f_i, labels, 19, THING_CLASSES).item() == pytest.approx(2.0)
    assert feature_distance_loss(f_s, f_i, labels, 19, None).item() == pytest.approx(3.5)  # unmasked mean
    # No thing pixel: zero loss, and backward still works.
    f = f_s.clone().requires_grad_(True)
    loss = feature_distance_loss(f, f_i, torch.zeros_like(labels), 19, THING_CLASSES)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(f.grad == 0)


def test_gradient_reaches_only_the_student():
    f_s = torch.randn(1, 4, 2, 2, requires_grad=True)
    f_i = torch.randn(1, 4, 2, 2, requires_grad=True)
    masked_feature_distance(f_s, f_i).backward()
    assert f_s.grad is not None and f_i.grad is None


def test_labels_must_tile_the_feature_grid():
    with pytest.raises(CordaError, match="divisible by 32"):
        thing_mask(torch.zeros(1, 40, 64, dtype=torch.long), (2, 2), THING_CLASSES, 19)
