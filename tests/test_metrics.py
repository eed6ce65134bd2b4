"""Confusion matrix, IoU/mIoU over class sets, label-id export, official-evaluator cross-check (§6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from corda.errors import CordaError
from corda.io import read_image, write_png
from corda.labels import CITYSCAPES_ID_TO_TRAIN, CLASS_NAMES, CLASS_SETS, TRAIN_TO_CITYSCAPES_ID
from corda.metrics import (
    ConfusionMatrix,
    export_label_ids,
    official_cityscapes_miou,
    official_cityscapes_results,
)

# 3 classes, hand-checkable: rows = ground truth, columns = prediction.
GT = np.array([0, 0, 1, 1, 2, 255])
PRED = np.array([0, 1, 1, 1, 0, 2])  # the last pixel is ignored (gt 255)
MATRIX = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_confusion_matrix_hand_example():
    cm = ConfusionMatrix(3)
    cm.update(PRED, GT)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_array_equal(cm.matrix, MATRIX)
    # IoU = TP / (TP + FP + FN): class 0 1/(1+1+1), class 1 2/(2+1+0), class 2 0/(0+0+1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)


def test_accumulates_and_ignores_out_of_range_gt():
    cm = ConfusionMatrix(3)
    cm.update(PRED.reshape(2, 3), GT.reshape(2, 3))
    cm.update(np.array([2, 0]), np.array([7, 3]))  # gt ≥ num_classes: ignored like 255
    cm.update(PRED, GT)
    np.testing.assert_array_equal(cm.matrix, 2 * MATRIX)
    cm.reset()
    assert cm.matrix.sum() == 0


def test_invalid_prediction_on_valid_gt_is_a_false_negative():
    # As in the official evaluator: a non-evaluated prediction on a class-1 pixel lowers IoU_1
    # (FN) and pixel accuracy, and is nobody's false positive.
    cm = ConfusionMatrix(3)
    cm.update(np.append(PRED, 255), np.append(GT, 1))
    np.testing.assert_array_equal(cm.matrix, MATRIX)
    assert cm.iou()[1] == pytest.approx(2 / 4)
    assert cm.iou()[0] == pytest.approx(1 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 6)


def test_torch_and_numpy_inputs_agree():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 19, (2, 32, 64), generator=g)
    gt[:, :4] = 255
    pred = torch.randint(0, 19, (2, 32, 64), generator=g)
    a, b = ConfusionMatrix(), ConfusionMatrix()
    a.update(pred, gt.to(torch.uint8))
    b.update(pred.numpy(), gt.numpy())
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.matrix.sum() == 2 * 28 * 64


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_miou_class_subsets_and_absent_classes():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)  # class 3 never occurs: IoU NaN
    iou = cm.iou()
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(1 / 3)  # absent class skipped, not counted as 0
    assert cm.miou([0, 3]) == pytest.approx(1 / 3)
    assert cm.miou([1, 2]) == pytest.approx(1 / 3)
    assert math.isnan(cm.miou([3]))
    # Present in the prediction only (a false positive) → IoU 0, which does count.
    cm.update(np.array([3]), np.array([0]))
    assert cm.iou()[3] == 0.0
    assert cm.miou([0, 3]) == pytest.approx((1 / 4) / 2)
    with pytest.raises(ValueError, match="outside"):
        cm.miou([4])


def test_synthia_class_sets_and_to_dict():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 19, (4, 16, 16))
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 19, gt.shape))
    cm = ConfusionMatrix()
    cm.update(pred, gt)
    iou = cm.iou()
    assert cm.miou16() == pytest.approx(iou[list(CLASS_SETS["synthia16"])].mean())
    assert cm.miou13() == pytest.approx(iou[list(CLASS_SETS["synthia13"])].mean())
    assert cm.miou_named("cityscapes19") == pytest.approx(iou.mean())
    assert len(CLASS_SETS["synthia16"]) == 16 and len(CLASS_SETS["synthia13"]) == 13

    d = cm.to_dict(CLASS_NAMES, CLASS_SETS["synthia16"])
    assert set(d) == {"miou", "pixel_acc", "per_class"}
    assert list(d["per_class"]) == [CLASS_NAMES[i] for i in CLASS_SETS["synthia16"]]
    assert "terrain" not in d["per_class"]
    assert d["miou"] == pytest.approx(cm.miou16())
    assert d["pixel_acc"] == pytest.approx(np.trace(cm.matrix) / cm.matrix.sum())

    empty = ConfusionMatrix(3).to_dict(["a", "b", "c"])
    assert empty == {"miou": None, "pixel_acc": None, "per_class": {"a": None, "b": None, "c": None}}


def test_export_label_ids_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    train = rng.integers(0, 19, (24, 40)).astype(np.uint8)
    train[:3] = 255
    export_label_ids(train, tmp_path / "x_pred.png")
    ids = read_image(tmp_path / "x_pred.png", mode=None)
    assert ids.dtype == np.uint8 and ids.shape == (24, 40)
    assert ids[train == 0].tolist() == [7] * int((train == 0).sum())  # road
    assert set(ids[train == 18].tolist()) == {33}  # bicycle
    assert set(ids[:3].ravel().tolist()) == {0}  # ignore → unlabeled
    np.testing.assert_array_equal(CITYSCAPES_ID_TO_TRAIN[ids], train)
    with pytest.raises(ValueError, match="outside"):
        export_label_ids(np.full((2, 2), 19, np.uint8), tmp_path / "bad.png")


# -- official evaluator cross-check -------------------------------------------------------------


def _write_fixture(root: Path) -> tuple[Path, Path, ConfusionMatrix]:
    """A tiny gtFine/val with 4 images in 2 cities, predictions as label-id PNGs, and our matrix."""
    rng = np.random.default_rng(3)
    gt_dir, pred_dir = root / "gtFine" / "val", root / "results"
    eval_ids = TRAIN_TO_CITYSCAPES_ID[:19]
    ignored_ids = np.array([0, 1, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30])
    cm = ConfusionMatrix()
    names = [("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 19), ("bochum", 2, 5)]
    for city, seq, frame in names:
        h, w = 48, 96
        gt = rng.choice(eval_ids[:17], size=(h, w))  # motorcycle and bicycle never in the ground truth
        void = rng.random((h, w)) < 0.15
        gt[void] = rng.choice(ignored_ids, size=int(void.sum()))
        gt[:5] = rng.choice(ignored_ids, size=(5, w))
        gt_train = CITYSCAPES_ID_TO_TRAIN[gt]
        # 60 % correct; elsewhere (and on ignored pixels, which carry 255 here) a random class.
        pred_train = np.where(rng.random((h, w)) < 0.6, gt_train, 255).astype(np.uint8)
        wrong = pred_train == 255
        pred_train[wrong] = rng.integers(0, 19, int(wrong.sum()))
        pred_train[10:12, : w // 2] = 255  # exported as id 0: a miss on evaluated pixels
        pred_train[pred_train == 18] = 17  # bicycle absent from both → NaN, skipped by both
        stem = f"{city}_{seq:06d}_{frame:06d}"
        write_png(gt_dir / city / f"{stem}_gtFine_labelIds.png", gt.astype(np.uint8))
        export_label_ids(pred_train, pred_dir / city / f"{stem}_leftImg8bit.png")
        pred_ids = read_image(pred_dir / city / f"{stem}_leftImg8bit.png", mode=None)
        cm.update(CITYSCAPES_ID_TO_TRAIN[pred_ids], gt_train)
    assert cm.missed.sum() > 0  # the fixture exercises predictions the evaluator does not score
    return gt_dir, pred_dir, cm


def test_miou_equals_official_cityscapes_evaluator(tmp_path):
    gt_dir, pred_dir, cm = _write_fixture(tmp_path)
    had_in1d = hasattr(np, "in1d")
    res = official_cityscapes_results(gt_dir, pred_dir)
    assert hasattr(np, "in1d") == had_in1d  # the numpy patch does not leak

    ours = cm.iou()
    assert math.isnan(ours[CLASS_NAMES.index("bicycle")])
    assert ours[CLASS_NAMES.index("motorcycle")] == 0.0  # predicted, never in the ground truth
    for t, name in enumerate(CLASS_NAMES):
        theirs = res["classScores"][name]
        if math.isnan(ours[t]):
            assert math.isnan(theirs), name
        else:
            assert theirs == pytest.approx(ours[t], abs=1e-9), name
    # The matrices agree cell by cell on the evaluated ids.
    conf = np.array(res["confMatrix"], dtype=np.int64)
    ids = TRAIN_TO_CITYSCAPES_ID[:19].astype(np.int64)
    np.testing.assert_array_equal(conf[np.ix_(ids, ids)], cm.matrix)

    official = official_cityscapes_miou(gt_dir, pred_dir)
    assert 0.0 < official < 1.0
    assert abs(official - cm.miou()) < 1e-6


def test_official_evaluator_errors_become_corda_errors(tmp_path):
    gt_dir, pred_dir, _ = _write_fixture(tmp_path)
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    before = (ev.args.predictionPath, ev.args.evalInstLevelScore, ev.args.quiet)
    (pred_dir / "bochum" / "bochum_000002_000005_leftImg8bit.png").unlink()
    with pytest.raises(CordaError, match="no prediction"):
        official_cityscapes_miou(gt_dir, pred_dir)
    assert (ev.args.predictionPath, ev.args.evalInstLevelScore, ev.args.quiet) == before
    with pytest.raises(CordaError, match="gtFine_labelIds"):
        official_cityscapes_miou(tmp_path / "nowhere", pred_dir)


class _Logits(torch.nn.Module):
    """A random 19-class head at 1/4 of the input size (bilinear upsampling to the labels is the scored path)."""

    num_classes = 19

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 19, 3, stride=4, padding=1)

    def forward(self, x):
        return {"S": self.conv(x) * 4.0, "D": self.conv(x)[:, :1]}


@pytest.mark.parametrize("threads", [1, 2])
def test_confusion_over_equals_the_batch_argmax_one_plane_at_a_time(spy_interpolate, threads):
    """Scoring at label size counts what ``segment(...)["S"].argmax(1)`` of the whole batch counts, while no
    tensor larger than one (H, W) plane is upsampled (evaluate's memory bound, corda.inference)."""
    from corda.inference import confusion_over, segment

    model = _Logits().eval()
    g = torch.Generator().manual_seed(1)
    h, w = 61, 83  # labels at an odd size, 4x the network input's
    batches = []
    for b in (3, 2):
        labels = torch.randint(0, 19, (b, h, w), generator=g)
        labels[:, :5] = 255
        batches.append({"image": torch.rand(b, 3, 16, 21, generator=g), "label": labels})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ref = ConfusionMatrix(19)
        for batch in batches:
            ref.update(segment(model, batch["image"], (h, w))["S"].argmax(1), batch["label"])
        shapes = spy_interpolate()
        cm = confusion_over(model, batches, 19, torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(cm.matrix, ref.matrix) and np.array_equal(cm.missed, ref.missed)
    assert cm.matrix.sum() == 5 * (h - 5) * w
    assert shapes and max(math.prod(s) for s in shapes) == h * w, set(shapes)
