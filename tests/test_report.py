"""Results table, DVC plot records and deterministic PNG figures (corda.report)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corda.labels import CLASS_NAMES, CLASS_SETS, PALETTE
from corda.metrics import ConfusionMatrix
from corda.report import (
    STRIP_GAP_PX,
    STRIP_HEADER_PX,
    confusion_records,
    per_class_records,
    plot_confusion,
    plot_curves,
    plot_per_class_iou,
    prediction_strip,
    results_table_markdown,
)


def _results() -> dict:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 19, (2, 16, 32))
    out = {}
    for name, p_ok in (("Source only", 0.3), ("DACS", 0.5), ("CorDA", 0.7)):
        pred = np.where(rng.random(gt.shape) < p_ok, gt, rng.integers(0, 19, gt.shape))
        cm = ConfusionMatrix()
        cm.update(pred, gt)
        out[name] = cm.to_dict(CLASS_NAMES, CLASS_SETS["synthia16"])
    return out


def test_markdown_table_rows_columns_and_numbers():
    results = _results()
    results["CorDA"]["per_class"]["road"] = 0.94712
    results["CorDA"]["miou"] = 0.55
    table = results_table_markdown(results, CLASS_NAMES)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(results)  # header, separator, one row per model
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "Method" and header[-1] == "mIoU" and header[1:-1] == list(CLASS_NAMES)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip().strip("|").split("|")] for r in lines[2:]}
    assert list(rows) == list(results)
    corda = rows["CorDA"]
    assert len(corda) == len(header)
    assert corda[1] == "94.7"  # ×100, one decimal
    assert corda[-1] == "55.0"  # mIoU last
    assert corda[1 + CLASS_NAMES.index("terrain")] == "-"  # not in the 16-class SYNTHIA set


def test_per_class_records_for_dvc_bar_plot():
    results = _results()
    recs = per_class_records(results, CLASS_NAMES)
    assert len(recs) == 3 * 16  # terrain/truck/train absent from the 16-class results
    road = results["Source only"]["per_class"]["road"]
    assert recs[0] == {"class": "road", "model": "Source only", "iou": road}
    assert {r["model"] for r in recs} == set(results)


def test_confusion_records_proportional_exact_total_deterministic():
    names = ["a", "b", "c"]
    m = np.array([[600, 300, 0], [0, 97, 3], [1, 0, 0]])
    recs = confusion_records(m, names, max_records=100)
    assert len(recs) == 100
    counts = Counter((r["actual"], r["predicted"]) for r in recs)
    # 1001 px → 100 records: 59.94, 29.97, 9.69, 0.30, 0.10 → largest remainders round up.
    assert counts == {("a", "a"): 60, ("a", "b"): 30, ("b", "b"): 10}
    assert recs == confusion_records(m, names, max_records=100)
    # Fewer pixels than max_records: one record per pixel.
    small = confusion_records(np.array([[2, 1], [0, 1]]), ["x", "y"], max_records=100)
    expected = {("x", "x"): 2, ("x", "y"): 1, ("y", "y"): 1}
    assert Counter((r["actual"], r["predicted"]) for r in small) == expected
    with pytest.raises(ValueError):
        confusion_records(m, ["a", "b"])


def _png(path) -> tuple[bytes, tuple[int, int]]:
    data = path.read_bytes()
    with Image.open(path) as im:
        return data, im.size


def test_matplotlib_plots_sized_nonempty_and_byte_stable(tmp_path):
    results = _results()
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 1000, (19, 19))
    matrix[5] = 0  # a class absent from the ground truth: an all-NaN row must not break the plot
    series = {"loss/seg": ([0, 10, 20, 30], [2.0, 1.2, 0.9, 0.8]), "mIoU": ([0, 30], [0.1, 0.4])}
    renders = {
        "bars": (lambda p: plot_per_class_iou(results, CLASS_NAMES, p, size_px=(1000, 400)), (1000, 400)),
        "conf": (lambda p: plot_confusion(matrix, CLASS_NAMES, p), (900, 800)),
        "curves": (lambda p: plot_curves(series, p, "training", size_px=(640, 360)), (640, 360)),
    }
    for name, (render, size) in renders.items():
        render(tmp_path / f"{name}1.png")
        render(tmp_path / f"{name}2.png")
        data1, size1 = _png(tmp_path / f"{name}1.png")
        data2, _ = _png(tmp_path / f"{name}2.png")
        assert size1 == size, name
        assert len(data1) > 5000, name
        assert data1 == data2, f"{name}: rendering is not deterministic"
        assert b"matplotlib" not in data1.lower(), f"{name}: software version leaked into metadata"
        with Image.open(tmp_path / f"{name}1.png") as im:
            assert len(np.unique(np.asarray(im.convert("L")))) > 10, f"{name}: blank figure"
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


def test_prediction_strip_layout_and_colours(tmp_path):
    rng = np.random.default_rng(2)
    h, w = 24, 40
    gt = rng.integers(0, 19, (h, w)).astype(np.uint8)
    pred = gt.copy()
    pred[:, :10] = 255
    rows = [
        dict(image=rng.random((h, w, 3)), gt=gt, pred=pred, depth=rng.random((h, w)) * 80.0,
             omega=np.clip(rng.random((h, w)), 0.001, 1.0)),
        dict(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), gt=gt, pred=gt, depth=None, omega=None),
        dict(image=rng.random((h, w, 3)), gt=gt, pred=gt, depth=np.full((h, w), np.nan),
             omega=np.ones((h, w))),
    ]
    prediction_strip(rows, tmp_path / "s1.png")
    prediction_strip(rows, tmp_path / "s2.png")
    data1, size = _png(tmp_path / "s1.png")
    assert data1 == (tmp_path / "s2.png").read_bytes()
    assert size == (5 * w + 4 * STRIP_GAP_PX, STRIP_HEADER_PX + 3 * h + 2 * STRIP_GAP_PX)
    with Image.open(tmp_path / "s1.png") as im:
        arr = np.asarray(im.convert("RGB"))
    y0 = STRIP_HEADER_PX
    x_gt, x_pred = w + STRIP_GAP_PX, 2 * (w + STRIP_GAP_PX)
    np.testing.assert_array_equal(arr[y0: y0 + h, x_gt: x_gt + w], PALETTE[gt])  # ground truth colourised
    assert (arr[y0: y0 + h, x_pred: x_pred + 10] == 0).all()  # ignore drawn black
    second = y0 + h + STRIP_GAP_PX
    np.testing.assert_array_equal(arr[second: second + h, :w], rows[1]["image"])  # uint8 image pasted as is
    for j in (3, 4):  # missing depth and ω: grey panels
        assert (arr[second: second + h, j * (w + STRIP_GAP_PX): j * (w + STRIP_GAP_PX) + w] == 128).all()
    third = second + h + STRIP_GAP_PX
    x_depth = 3 * (w + STRIP_GAP_PX)
    assert (arr[third: third + h, x_depth: x_depth + w] == 0).all()  # NaN depth drawn black
    with pytest.raises(ValueError, match="share one"):
        prediction_strip([dict(image=np.zeros((4, 4, 3)), gt=np.zeros((5, 4)))], tmp_path / "bad.png")


def test_confusion_rate_records_every_cell_in_class_order_rows_normalised():
    from corda.report import confusion_rate_records

    names = ["road", "car", "sky"]  # not alphabetical
    recs = confusion_rate_records(np.array([[6, 2, 0], [0, 0, 0], [1, 1, 8]]), names)
    assert [(r["actual"], r["predicted"]) for r in recs] == [(a, p) for a in names for p in names]
    rate = {(r["actual"], r["predicted"]): r["rate"] for r in recs}
    assert rate["road", "road"] == 0.75 and rate["road", "car"] == 0.25 and rate["sky", "sky"] == 0.8
    assert all(rate["car", p] == 0.0 for p in names)  # a class absent from the ground truth keeps its row
    for a in ("road", "sky"):
        assert abs(sum(rate[a, p] for p in names) - 1.0) < 1e-12


def test_depth_views_are_bright_near():
    from corda.predict import colour_depth
    from corda.report import depth_panel

    depth = np.tile(np.linspace(2.0, 60.0, 32, dtype=np.float32), (8, 1))  # near on the left
    for view in (depth_panel(depth), colour_depth(depth)):
        assert view[:, 0].astype(int).sum() > view[:, -1].astype(int).sum()


def test_dvc_plots_use_existing_templates():
    import yaml

    root = Path(__file__).resolve().parents[1]
    plots = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    builtin = {"simple", "linear", "confusion", "confusion_normalized", "scatter", "scatter_jitter", "smooth",
               "bar_horizontal_sorted", "bar_horizontal"}
    used = {props["template"] for p in plots if isinstance(p, dict) for props in p.values() if "template" in props}
    assert {"confusion_rate", "curves_by_model"} <= used
    for t in used - builtin:
        assert (root / ".dvc" / "plots" / f"{t}.json").is_file(), t
    conf = next(p["eval/confusion.json"] for p in plots if isinstance(p, dict) and "eval/confusion.json" in p)
    assert conf["y"] == "actual" and conf["x"] == "predicted"  # rows = ground truth, as eval/confusion.png
