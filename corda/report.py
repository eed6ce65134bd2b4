"""Evaluation report: the paper-style results table, PNG figures and DVC plot records (method.md §6).

Every renderer is deterministic, so a re-run of the evaluate stage produces byte-identical files
and DVC sees no spurious change: matplotlib draws on an explicit Agg canvas (no pyplot global
state, no backend switch) under its built-in default style (a user ``matplotlibrc`` cannot change
the output), and the PNG metadata carries no software version (matplotlib PNGs hold no timestamp).
All files are written atomically through :func:`corda.io.atomic_path`.

``results`` arguments are ``{model name: ConfusionMatrix.to_dict(...)}`` mappings, i.e. each value
has ``"miou"``, ``"pixel_acc"`` and ``"per_class": {class name: IoU fraction or None}``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from corda.io import atomic_path, write_png
from corda.labels import colorize

Results = Mapping[str, Mapping[str, Any]]

#: Default number of records for :func:`confusion_records` (a DVC/vega plot stays responsive).
DEFAULT_CONFUSION_RECORDS = 10_000
#: Layout of :func:`prediction_strip`: gap between panels and height of the column-title band, in px.
STRIP_GAP_PX = 4
STRIP_HEADER_PX = 14
STRIP_COLUMNS = ("image", "ground truth", "prediction", "depth (bright = near)", "omega")

_DPI = 100
_PNG_METADATA = {"Software": None}  # drop the matplotlib version so bytes do not depend on it

# -- colours ------------------------------------------------------------------------------------

#: One colour per model in every chart: the PNGs drawn here and the ``dvc plots`` templates in .dvc/plots
#: (their colour scales copy this table; tests/test_charts.py checks that they agree). CorDA's two rounds are
#: two shades of red, the baselines blue and grey, the oracle (a ceiling, not a compared method) green.
MODEL_COLOURS: dict[str, str] = {
    "source_only": "#7f7f7f",
    "dacs": "#1f77b4",
    "corda": "#d62728",
    "corda_round2": "#8c1515",
    "oracle": "#2ca02c",
}
#: One colour per pseudo-label signal (plots/pseudo_label_accuracy.*, the ``accuracy_by_signal`` template).
SIGNAL_COLOURS: dict[str, str] = {
    "confidence": "#1f77b4",
    "depth_weight": "#9467bd",
    "combined": "#ff7f0e",
}
#: Runs that continue another run: their steps are drawn after that run's last step (round 2 starts from
#: round 1's model, so its step 1 is round 1's step ``iterations + 1``).
CONTINUES: dict[str, str] = {"corda_round2": "corda"}
#: The models whose confusion matrices the report draws side by side: CorDA and DACS, its recipe without depth.
CONFUSION_MODELS = ("dacs", "corda")
_OTHER_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#9467bd", "#ff7f0e")


def series_colour(name: str, index: int = 0) -> str:
    """The colour of a model (:data:`MODEL_COLOURS`) or pseudo-label signal (:data:`SIGNAL_COLOURS`); any other
    series gets the ``index``-th of a few colours that no model uses."""
    return MODEL_COLOURS.get(name) or SIGNAL_COLOURS.get(name) or _OTHER_COLOURS[index % len(_OTHER_COLOURS)]


def _score(value: Any) -> float:
    """A metrics value as float, with None/missing → NaN."""
    return float("nan") if value is None else float(value)


# -- tables -------------------------------------------------------------------------------------


def results_table_markdown(results: Results, class_names: Sequence[str]) -> str:
    """A Markdown table shaped like the paper's tables: a row per method, a column per class, mIoU last.

    Numbers are IoU × 100 with one decimal. A class missing from a model's ``per_class`` (e.g.
    terrain in a 16-class SYNTHIA result) or undefined (None) shows as ``-``. The mIoU column is
    each model's stored ``miou`` (averaged over the class set it was computed with).
    """

    def fmt(v: Any) -> str:
        x = _score(v)
        return "-" if math.isnan(x) else f"{100.0 * x:.1f}"

    header = ["Method", *class_names, "mIoU"]
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
        "|" + "---|" + "---:|" * (len(class_names) + 1),
    ]
    for model, metrics in results.items():
        per_class = metrics.get("per_class", {})
        cells = [model.replace("|", "\\|"), *(fmt(per_class.get(c)) for c in class_names)]
        cells.append(fmt(metrics.get("miou")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- DVC plot records ---------------------------------------------------------------------------


def confusion_records(
    matrix: np.ndarray, class_names: Sequence[str], max_records: int | None = None
) -> list[dict[str, str]]:
    """Records ``{"actual": name, "predicted": name}`` for DVC's ``confusion`` template.

    DVC counts records, so one record per pixel would be exact but is millions of rows. Instead
    each cell gets a share of ``max_records`` (default :data:`DEFAULT_CONFUSION_RECORDS`)
    proportional to its count, rounded by the largest-remainder method so the total is exactly
    ``max_records`` (or one record per pixel when there are fewer pixels). Integer arithmetic and
    index-order tie breaking make the output deterministic. Cells too small for one record vanish.
    Records are in row-major (actual, predicted) order.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"matrix of shape {counts.shape} does not match {len(class_names)} class names")
    if (counts < 0).any():
        raise ValueError("confusion matrix has negative counts")
    n = DEFAULT_CONFUSION_RECORDS if max_records is None else int(max_records)
    if n < 1:
        raise ValueError(f"max_records must be >= 1, got {max_records}")
    total = int(counts.sum())
    flat = counts.reshape(-1)
    if total <= n:
        quota = flat.copy()
    else:
        scaled = flat * n  # < 2**63 for any realistic pixel count (1e9 px × 1e4 records)
        quota = scaled // total
        remainder = scaled % total
        leftover = n - int(quota.sum())
        order = np.lexsort((np.arange(flat.size), -remainder))  # largest remainder first, then index
        quota[order[:leftover]] += 1
    k = len(class_names)
    records: list[dict[str, str]] = []
    for cell in np.flatnonzero(quota):
        rec = {"actual": class_names[cell // k], "predicted": class_names[cell % k]}
        records.extend(dict(rec) for _ in range(int(quota[cell])))
    return records


def confusion_rate_records(matrix: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Every cell of a row-normalised confusion matrix, for the ``confusion_rate`` template (.dvc/plots).

    ``[{"actual": gt class, "predicted": class, "rate": share of the ground-truth row, "pixels": count}]``
    in row-major class order (the template keeps the data order on both axes, so classes appear in
    ``class_names`` order, rows = ground truth, as eval/confusion.png). A class absent from the ground
    truth keeps its row, at rate 0.
    """
    m = np.asarray(matrix, dtype=np.int64)
    if m.shape != (len(class_names), len(class_names)):
        raise ValueError(f"matrix of shape {m.shape} does not match {len(class_names)} class names")
    rows = m.sum(axis=1)
    return [{"actual": a, "predicted": p, "rate": float(m[i, j] / rows[i]) if rows[i] else 0.0,
             "pixels": int(m[i, j])}
            for i, a in enumerate(class_names) for j, p in enumerate(class_names)]


def confusion_rates_by_model(matrices: Mapping[str, np.ndarray],
                             class_names: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`confusion_rate_records` of several models, each record with its ``"model"`` (models in the
    mapping's order): the ``confusion_rate`` template draws a panel per model."""
    return [{"model": name, **r} for name, m in matrices.items() for r in confusion_rate_records(m, class_names)]


def val_miou_records(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> list[dict[str, Any]]:
    """``[{"model", "step", "miou"}]``: target-val mIoU during training, from each model's checkpoint history.

    A run that continues another (:data:`CONTINUES`: round 2 starts from round 1's model) is drawn after it:
    its steps are offset by the last step of the run it continues, when that run is in ``histories``.
    Models in ``histories`` order, rows in step order.
    """
    out = []
    for name, history in histories.items():
        parent = histories.get(CONTINUES.get(name, ""), [])
        offset = int(parent[-1]["step"]) if parent else 0
        out += [{"model": name, "step": int(r["step"]) + offset, "miou": float(r["val/miou"])}
                for r in history if "val/miou" in r]
    return out


def continuation_starts(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, int]:
    """``{"<run> starts": step}``: where each continuing run of :func:`val_miou_records` begins."""
    return {f"{name} starts": int(histories[CONTINUES[name]][-1]["step"]) for name in histories
            if CONTINUES.get(name) in histories and histories[CONTINUES[name]]}


def per_class_records(results: Results, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"class": c, "model": m, "iou": v}]`` for a DVC bar plot (IoU as a fraction, as in the metrics).

    Models in ``results`` order, classes in ``class_names`` order; undefined or missing scores
    are left out (vega cannot draw a null bar).
    """
    out: list[dict[str, Any]] = []
    for model, metrics in results.items():
        per_class = metrics.get("per_class", {})
        for c in class_names:
            v = _score(per_class.get(c))
            if not math.isnan(v):
                out.append({"class": c, "model": model, "iou": v})
    return out


# -- matplotlib figures -------------------------------------------------------------------------


def _new_figure(size_px: tuple[int, int]) -> Figure:
    w, h = size_px
    if w < 50 or h < 50:
        raise ValueError(f"figure size {size_px} px is too small")
    fig = Figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
    # No bbox_inches="tight": the PNG is exactly size_px, which callers and tests rely on.
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata=_PNG_METADATA)


def plot_per_class_iou(
    results: Results,
    class_names: Sequence[str],
    path: str | os.PathLike,
    size_px: tuple[int, int] = (1400, 500),
    title: str = "Per-class IoU on target val",
) -> Figure:
    """Grouped bars: one group per class (plus a final mIoU group), one bar per model (:data:`MODEL_COLOURS`);
    IoU × 100. The legend sits right of the axes, where it covers no bar. Returns the drawn figure."""
    groups = [*class_names, "mIoU"]
    models = list(results)
    with matplotlib.style.context("default"):
        fig = _new_figure(size_px)
        ax = fig.add_subplot()
        x = np.arange(len(groups))
        width = 0.8 / max(len(models), 1)
        for k, model in enumerate(models):
            per_class = results[model].get("per_class", {})
            vals = [_score(per_class.get(c)) for c in class_names] + [_score(results[model].get("miou"))]
            heights = np.nan_to_num(100.0 * np.array(vals), nan=0.0)  # an undefined score draws no bar
            ax.bar(x - 0.4 + width * (k + 0.5), heights, width, label=model, color=series_colour(model, k))
        ax.set_xticks(x, groups, rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_ylim(0, 100)
        ax.set_ylabel("IoU (%)")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if models:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, title="model",
                      title_fontsize=8)
        fig.subplots_adjust(left=0.05, right=0.89, top=0.92, bottom=0.25)
        _save(fig, path)
    return fig


def plot_confusion(
    matrices: np.ndarray | Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str | os.PathLike,
    size_px: tuple[int, int] | None = None,
    title: str = "Confusion matrix (rows normalised)",
) -> Figure:
    """Row-normalised confusion matrices (row = ground truth) side by side, one panel per model of a
    ``{model: (C, C) counts}`` mapping (one bare matrix: one panel); classes absent from the ground truth are
    blank. ``size_px`` defaults to 900×800 for one panel and 700 px wider per further panel."""
    panels = dict(matrices) if isinstance(matrices, Mapping) else {"": matrices}
    if not panels:
        raise ValueError("plot_confusion needs at least one matrix")
    norms = {}
    for name, matrix in panels.items():
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (len(class_names), len(class_names)):
            raise ValueError(f"matrix of shape {m.shape} does not match {len(class_names)} class names")
        rows = m.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            norms[name] = np.where(rows > 0, m / np.where(rows > 0, rows, 1.0), np.nan)
    n = len(norms)
    size_px = size_px or (900 + 700 * (n - 1), 800)
    with matplotlib.style.context("default"):
        fig = _new_figure(size_px)
        axes = fig.subplots(1, n, squeeze=False)[0]
        cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#dddddd")
        ticks = np.arange(len(class_names))
        for k, (ax, (name, norm)) in enumerate(zip(axes, norms.items())):
            im = ax.imshow(norm, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
            ax.set_yticks(ticks, class_names if k == 0 else [], fontsize=7)
            ax.set_xlabel("predicted")
            if k == 0:
                ax.set_ylabel("ground truth")
            if name:
                ax.set_title(name, color=series_colour(name, k))
        fig.suptitle(title)
        fig.subplots_adjust(left=0.17 / n, right=0.9, top=0.9, bottom=0.15, wspace=0.08)
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.15, 0.015, 0.75)), label="share of the ground-truth row")
        _save(fig, path)
    return fig


def _draw_lines(ax, series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
    for k, (name, (steps, values)) in enumerate(series.items()):
        if len(steps) != len(values):
            raise ValueError(f"series {name!r}: {len(steps)} steps but {len(values)} values")
        ax.plot(np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64), label=name,
                color=series_colour(name, k), marker="." if len(steps) <= 30 else None)


def plot_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str,
    size_px: tuple[int, int] = (800, 450),
    xlabel: str = "step",
    ylabel: str = "",
    starts: Mapping[str, float] | None = None,
) -> Figure:
    """Line plot of named ``(steps, values)`` series (validation mIoU, pseudo-label accuracy, ...); a model or
    signal name gets its colour (:func:`series_colour`). ``starts`` marks where a continuing run begins
    (``{label: step}``, a dotted vertical line each). Returns the drawn figure."""
    with matplotlib.style.context("default"):
        fig = _new_figure(size_px)
        ax = fig.add_subplot()
        _draw_lines(ax, series)
        for label, step in (starts or {}).items():
            ax.axvline(step, color="#555555", linestyle=":", linewidth=1.0)
            ax.annotate(label, (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="#555555")
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.12)
        _save(fig, path)
    return fig


def plot_val_miou(histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | os.PathLike,
                  size_px: tuple[int, int] = (800, 450)) -> Figure:
    """Target-val mIoU during training of each model (checkpoint ``history`` rows with ``val/miou``): the
    curves of :func:`val_miou_records`, a continuing run after the run it continues, its start marked."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in val_miou_records(histories):
        steps, values = series.setdefault(r["model"], ([], []))
        steps.append(r["step"])
        values.append(r["miou"])
    return plot_curves(series, path, "Target-val mIoU during training", size_px,
                       xlabel="training step (round 2 continues after round 1)", ylabel="mIoU (fraction)",
                       starts=continuation_starts(histories))


#: Panels of :func:`plot_loss_terms`: (panel title, y label, history keys). The depth terms are BerHu losses on
#: CorDA's inverse-depth encoding (method.md §2.2-2.3, 50-500 on the benchmark), the segmentation terms
#: cross-entropies (about 0.2-2 nats): on one axis the second would be a line at 0.
LOSS_PANELS = (
    ("segmentation", "cross-entropy (nats / pixel)", ("seg_src", "seg_src_init", "seg_mix", "seg_mix_init")),
    ("depth", "BerHu (inverse-depth units)", ("depth_src", "depth_mix")),
)


def plot_loss_terms(history: Sequence[Mapping[str, float]], path: str | os.PathLike, title: str,
                    size_px: tuple[int, int] = (800, 600)) -> Figure:
    """A training run's loss terms (its checkpoint ``history``, one row per logged step with ``step`` and the
    terms' means over the steps since the last row), one panel per :data:`LOSS_PANELS` entry on a shared step
    axis; a term that is 0 at every row (one the method does not have) and a panel with no term are left out."""
    steps = [r["step"] for r in history]
    panels = []
    for name, ylabel, keys in LOSS_PANELS:
        present = {k: (steps, [r.get(k, 0.0) for r in history]) for k in keys
                   if any(r.get(k, 0) != 0 for r in history)}
        if present:
            panels.append((name, ylabel, present))
    with matplotlib.style.context("default"):
        fig = _new_figure(size_px)
        axes = fig.subplots(max(len(panels), 1), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (name, ylabel, series) in zip(axes, panels):
            _draw_lines(ax, series)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.set_title(f"{name} losses", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper right")
        axes[-1].set_xlabel("step (each point: mean over the steps since the previous point)")
        fig.suptitle(title)
        fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.09, hspace=0.3)
        _save(fig, path)
    return fig


# -- qualitative strip --------------------------------------------------------------------------


def _image_panel(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) or (H, W), got {a.shape}")
    if a.dtype != np.uint8:  # float RGB in [0, 1]
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return a


def depth_panel(depth_m: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a metric depth map, bright = near (magma on inverse depth, as disparity maps
    are usually shown); the range comes from the image's own percentiles. Every depth figure uses it
    (eval/predictions.png, predict's ``depth_color/``, docs/predict_example.png)."""
    return scalar_panel(1.0 / np.maximum(np.asarray(depth_m, dtype=np.float64), 1e-3), "magma", None, None)


def scalar_panel(x: np.ndarray, cmap: str, vmin: float | None, vmax: float | None) -> np.ndarray:
    """Colour-map a scalar map for a figure panel.

    Args:
        x: (H, W) float map in any unit (depth in metres, inverse depth, the weight ω in [0, 1] …);
            non-finite pixels are drawn black.
        cmap: name of a matplotlib colormap (``"magma"``, ``"viridis"`` …).
        vmin, vmax: colour range in the unit of ``x``; either one None takes the 2nd / 98th percentile
            of the finite pixels (0 and 1 when none is finite). An empty range (vmax ≤ vmin) uses a
            scale of 1.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: ``x`` is not 2-D.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"depth/omega must be (H, W), got {a.shape}")
    finite = np.isfinite(a)
    if vmin is None or vmax is None:
        # Robust per-panel range: a few far/near outliers should not wash out the map.
        lo, hi = (np.percentile(a[finite], [2.0, 98.0]) if finite.any() else (0.0, 1.0))
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    scale = (vmax - vmin) if vmax > vmin else 1.0
    rgb = np.empty((*a.shape, 3), np.uint8)
    step = max(1, (1 << 20) // max(1, a.shape[1]))  # rows per block: float64 temporaries of a 4000x3000 photo
    for r in range(0, a.shape[0], step):            # (its RGBA colours: 370 MB) stay block-sized
        t = np.clip((np.where(finite[r:r + step], a[r:r + step], vmin) - vmin) / scale, 0.0, 1.0)
        rgb[r:r + step] = (matplotlib.colormaps[cmap](t)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~finite] = 0
    return rgb


def _title_cell(text: str, width: int) -> np.ndarray:
    cell = Image.new("RGB", (width, STRIP_HEADER_PX), (255, 255, 255))
    ImageDraw.Draw(cell).text((2, 1), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(cell)  # drawing in its own cell clips a long title to its column


def prediction_strip(rows: Sequence[Mapping[str, np.ndarray | None]], path: str | os.PathLike) -> None:
    """Qualitative figure: one row per example, columns image | ground truth | prediction | depth | ω.

    Each row is a dict with ``image`` (H, W, 3) uint8 or float RGB in [0, 1], ``gt`` and ``pred``
    (H, W) trainIds (255 = ignore, drawn black), ``depth`` (H, W) float in any unit (colour range:
    2nd–98th percentile of the panel; mark invalid pixels NaN) and ``omega`` (H, W) depth-discrepancy
    weight ω in [0, 1] (method.md §4, fixed colour range). A missing or None entry leaves a grey
    panel. All panels share one (H, W). Panels are pasted at native resolution (no resampling),
    so the PNG is exactly ``(STRIP_HEADER_PX + n·H + (n−1)·STRIP_GAP_PX) × (5·W + 4·STRIP_GAP_PX)``.
    """
    if not rows:
        raise ValueError("prediction_strip needs at least one row")
    shapes = {np.asarray(v).shape[:2] for r in rows for v in r.values() if v is not None}
    if len(shapes) != 1:
        raise ValueError(f"all panels must share one (H, W); got {sorted(shapes)}")
    h, w = shapes.pop()
    gap = STRIP_GAP_PX
    width = 5 * w + 4 * gap
    canvas = np.full((STRIP_HEADER_PX + len(rows) * h + (len(rows) - 1) * gap, width, 3), 255, np.uint8)
    for j, name in enumerate(STRIP_COLUMNS):
        canvas[:STRIP_HEADER_PX, j * (w + gap): j * (w + gap) + w] = _title_cell(name, w)
    for i, row in enumerate(rows):
        panels: list[np.ndarray | None] = [
            None if row.get("image") is None else _image_panel(row["image"]),
            None if row.get("gt") is None else colorize(np.asarray(row["gt"]).astype(np.uint8)),
            None if row.get("pred") is None else colorize(np.asarray(row["pred"]).astype(np.uint8)),
            None if row.get("depth") is None else depth_panel(row["depth"]),
            None if row.get("omega") is None else scalar_panel(row["omega"], "viridis", 0.0, 1.0),
        ]
        y = STRIP_HEADER_PX + i * (h + gap)
        for j, panel in enumerate(panels):
            x = j * (w + gap)
            canvas[y: y + h, x: x + w] = 128 if panel is None else panel
    write_png(path, canvas)
