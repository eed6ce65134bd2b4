"""Charts a researcher can read (issue 31): one colour per model everywhere, separate loss panels, round 2 drawn
after round 1, legends off the bars, labelled training charts, the pseudo-label chart coloured by signal."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
import yaml
from PIL import Image

from corda import report
from corda.report import MODEL_COLOURS, SIGNAL_COLOURS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / ".dvc" / "plots"
MODELS = ("source_only", "dacs", "corda", "corda_round2", "oracle")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in matplotlib.colors.to_rgb(hex_colour))


def _colours_in(path: Path) -> set[tuple[int, int, int]]:
    with Image.open(path) as im:
        return {tuple(int(v) for v in c) for c in np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)}


def _results(scores: dict[str, float], classes=("road", "car")) -> dict:
    return {m: {"miou": v, "per_class": {c: v for c in classes}} for m, v in scores.items()}


def test_every_model_and_signal_has_a_distinct_colour():
    assert set(MODEL_COLOURS) == set(MODELS)
    assert len(set(MODEL_COLOURS.values())) == len(MODEL_COLOURS)
    assert len(set(SIGNAL_COLOURS.values())) == len(SIGNAL_COLOURS) == 3


@pytest.mark.parametrize("name", ["grouped_bar_horizontal", "curves_by_model"])
def test_dvc_templates_colour_models_as_the_library(name):
    """The `dvc plots` charts use the table the PNGs use: the templates' colour scale maps each model to
    MODEL_COLOURS[model] (vega would otherwise assign its own colours by order of appearance)."""
    spec = json.loads((TEMPLATES / f"{name}.json").read_text())
    colour = spec["encoding"]["color"]
    assert colour["field"] == "model"
    assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"])) == MODEL_COLOURS


def test_pseudo_label_template_colours_by_signal():
    spec = json.loads((TEMPLATES / "accuracy_by_signal.json").read_text())
    colour = spec["encoding"]["color"]
    assert colour["field"] == "signal"
    assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"])) == SIGNAL_COLOURS
    stage_plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["pseudo_labels"]["plots"]
    props = next(p["plots/pseudo_label_accuracy.json"] for p in stage_plots if "plots/pseudo_label_accuracy.json" in p)
    assert props["template"] == "accuracy_by_signal"


def test_per_class_png_uses_the_model_colours_and_the_legend_covers_no_bar(tmp_path):
    results = _results({"source_only": 0.1, "dacs": 0.5, "corda": 0.9, "corda_round2": 0.95, "oracle": 1.0})
    fig = report.plot_per_class_iou(results, ["road", "car"], tmp_path / "bars.png")
    seen = _colours_in(tmp_path / "bars.png")
    for model, colour in MODEL_COLOURS.items():
        assert _rgb(colour) in seen, model
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [b.get_window_extent(renderer) for b in ax.patches if b.get_height() > 0]
    assert bars and not any(legend.overlaps(b) for b in bars)


def test_curves_png_colours_models_and_signals(tmp_path):
    report.plot_curves({"dacs": ([1, 2], [0.1, 0.2]), "corda": ([1, 2], [0.2, 0.3])}, tmp_path / "m.png", "mIoU")
    report.plot_curves({s: ([0.1, 0.9], [0.3, 0.8]) for s in SIGNAL_COLOURS}, tmp_path / "s.png", "pl")
    assert {_rgb(MODEL_COLOURS["dacs"]), _rgb(MODEL_COLOURS["corda"])} <= _colours_in(tmp_path / "m.png")
    assert {_rgb(c) for c in SIGNAL_COLOURS.values()} <= _colours_in(tmp_path / "s.png")


def _history(steps, **terms):
    return [{"step": s, **{k: v[i] for k, v in terms.items()}} for i, s in enumerate(steps)]


def test_loss_panels_keep_segmentation_losses_off_the_depth_scale(tmp_path):
    """Depth losses of 50-500 flattened the cross-entropies (~1) into a line at 0 on a shared axis."""
    steps = [25, 50, 75, 100]
    hist = _history(steps, seg_src=[1.2, 0.9, 0.7, 0.6], seg_mix=[0.8, 0.7, 0.6, 0.5], depth_src=[190, 210, 120, 520],
                    depth_mix=[175, 190, 110, 480], seg_tgt=[0, 0, 0, 0])
    fig = report.plot_loss_terms(hist, tmp_path / "losses.png", "corda")
    panels = {tuple(line.get_label() for line in ax.get_lines()): ax for ax in fig.axes if ax.get_lines()}
    assert set(panels) == {("seg_src", "seg_mix"), ("depth_src", "depth_mix")}  # no panel for an all-0 term
    seg_top = panels[("seg_src", "seg_mix")].get_ylim()[1]
    assert seg_top < 2.0  # the cross-entropies fill their own axis
    assert panels[("depth_src", "depth_mix")].get_ylim()[1] > 500
    assert (tmp_path / "losses.png").is_file()


def test_round_two_is_drawn_after_round_one(tmp_path):
    """Round 2 starts from round 1's model: its curve continues round 1's, it is not drawn over it."""
    hist = {"dacs": _history([100, 200], **{"val/miou": [0.2, 0.3]}),
            "corda": _history([100, 200, 300], **{"val/miou": [0.2, 0.3, 0.35]}),
            "corda_round2": _history([100, 200], **{"val/miou": [0.38, 0.4]})}
    recs = report.val_miou_records(hist)
    by = {}
    for r in recs:
        by.setdefault(r["model"], []).append(r["step"])
    assert by == {"dacs": [100, 200], "corda": [100, 200, 300], "corda_round2": [400, 500]}
    assert report.continuation_starts(hist) == {"corda_round2 starts": 300}
    fig = report.plot_val_miou(hist, tmp_path / "val.png")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert list(lines["corda_round2"].get_xdata()) == [400, 500]
    assert lines["corda_round2"].get_color() == MODEL_COLOURS["corda_round2"]
    # Without round 1 in the report, round 2 keeps its own steps.
    assert [r["step"] for r in report.val_miou_records({"corda_round2": hist["corda_round2"]})] == [100, 200]


def test_confusion_png_and_records_show_dacs_beside_corda(tmp_path):
    rng = np.random.default_rng(0)
    names = ["road", "car", "sky"]
    mats = {"dacs": rng.integers(0, 50, (3, 3)), "corda": rng.integers(0, 50, (3, 3))}
    fig = report.plot_confusion(mats, names, tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_images()] == ["dacs", "corda"]
    recs = report.confusion_rates_by_model(mats, names)
    assert [r["model"] for r in recs[::9]] == ["dacs", "corda"] and len(recs) == 18
    assert report.CONFUSION_MODELS == ("dacs", "corda")


def test_every_training_chart_has_a_title_and_axis_labels():
    """`dvc plots show` titled the training charts with their file paths and had no units: every top-level
    plot of data series declares a title and both axis labels, and none is a bare folder of dvclive files."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    series = 0
    for entry in plots:
        if isinstance(entry, str):
            assert entry.endswith(".png"), f"{entry}: a data plot without title or labels"
            continue
        (plot_id, props), = entry.items()
        series += 1
        assert {"title", "x_label", "y_label"} <= set(props), plot_id
        assert "/" not in props["title"].split(":")[0] and not (ROOT / plot_id).is_dir(), plot_id
        ys = props["y"] if isinstance(props.get("y"), dict) else {}
        for path in ys:
            assert Path(path).suffix == ".tsv", path
        if len(ys) > 1:  # several terms in one chart: a colour per term (DVC's default varies only the dash)
            assert props.get("template") == "lines_by_term", plot_id
    assert series >= 8


def test_offline_page_reports_each_charts_colours():
    """docs/plots_offline.html carries make_plots_template.py's check script, which writes each chart's colours
    into the page for the browser test (tests/test_pipeline.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_plots_template", ROOT / "docs" / "make_plots_template.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    page = (ROOT / "docs" / "plots_offline.html").read_text()
    assert "dataset.colours" in mod.CHECK and mod.CHECK in page and mod.HOOK in page
