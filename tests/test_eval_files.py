"""The evaluate stage's files (corda.eval_files): the headline rows `dvc metrics show` prints, and the details."""

from __future__ import annotations

from pathlib import Path

import pytest

HEADLINE_ROWS = ["source_only", "dacs", "corda", "corda_round2", "oracle", "source_only_adabn",
                 "dacs_adabn", "corda_adabn", "corda_round2_adabn", "oracle_adabn", "depth", "pl_labels", "pl_confidence",
                 "pl_omega", "pl_combined"]


def _full_headline(miou13: bool):
    """headline_metrics of a full run (every model, depth and pseudo-labels) with 17-digit values."""
    from corda.eval_files import headline_metrics

    results = {m: {"miou": 0.123456789012 + i / 10, "pixel_acc": 0.9, "per_class": {"road": 0.5}}
               for i, m in enumerate(HEADLINE_ROWS[:5])}
    if miou13:
        for r in results.values():
            r["miou13"] = r["miou"] + 0.01
    depth = {"mode": "stereo", "target": {"abs_rel": 0.126245493036, "delta1": 0.812565261468, "rmse": 6.4}}
    pseudo = {"miou": 0.415677201275, "auroc": {"confidence": 0.841752930326, "depth_weight": 0.461681926668,
                                                 "combined": 0.769467977231}}
    # The SYNTHIA presets score no model with target BN statistics (evaluate.adabn_items 0): empty rows.
    adabn = None if miou13 else {m: {"miou": r["miou"] + 0.05} for m, r in results.items()}
    return headline_metrics(results, depth, pseudo, adabn)


def test_headline_metrics_are_rows_of_a_few_shared_measures():
    """metrics/top/<row>.json: each model's mIoU, the depth numbers and the pseudo-label numbers, as rows sharing
    four measures (miou, abs_rel, delta1, auroc; + miou13 for SYNTHIA), and nothing else (no strings, no
    per-class details, no undefined values); every row exists, so the files dvc.yaml declares always exist."""
    from corda.eval_files import headline_metrics

    results = {"dacs": {"miou": 0.3, "pixel_acc": 0.7, "per_class": {"road": 0.9}},
               "corda": {"miou": 0.35, "miou13": 0.4, "pixel_acc": 0.8, "per_class": {"road": 0.9}},
               "oracle": {"miou": None, "per_class": {}}}
    depth = {"mode": "stereo", "source": "ground_truth", "target": {"abs_rel": 0.12, "delta1": 0.81, "rmse": 6.4}}
    pseudo = {"miou": 0.36, "per_class": {"road": 0.9}, "pixels": 100,
              "auroc": {"confidence": 0.84, "depth_weight": 0.46, "combined": None}}
    got = headline_metrics(results, depth, pseudo, {"dacs": {"miou": 0.33, "per_class": {"road": 0.9}}})
    assert got == {"dacs": {"miou": 0.3}, "corda": {"miou": 0.35, "miou13": 0.4}, "oracle": {},
                   "dacs_adabn": {"miou": 0.33}, "corda_adabn": {}, "oracle_adabn": {},
                   "depth": {"abs_rel": 0.12, "delta1": 0.81}, "pl_labels": {"miou": 0.36},
                   "pl_confidence": {"auroc": 0.84}, "pl_omega": {"auroc": 0.46}, "pl_combined": {}}
    assert list(got) == ["dacs", "corda", "oracle", "dacs_adabn", "corda_adabn", "oracle_adabn", "depth",
                         "pl_labels", "pl_confidence", "pl_omega", "pl_combined"]
    assert headline_metrics({"dacs": {"miou": 0.3}}) == {
        "dacs": {"miou": 0.3}, "dacs_adabn": {}, "depth": {}, "pl_labels": {}, "pl_confidence": {}, "pl_omega": {},
        "pl_combined": {}}
    keys = set().union(*_full_headline(miou13=True).values())
    assert keys == {"miou", "miou13", "abs_rel", "delta1", "auroc"}


def test_dvc_yaml_declares_only_the_headline_rows_as_metrics():
    """`dvc metrics show` / `dvc exp show` read the declared metrics: exactly the evaluate stage's headline rows,
    in the order headline_metrics makes them; the per-stage detail files stay git-tracked outs (cache: false)
    so `dvc metrics diff --targets` can still read them."""
    import yaml

    from corda.eval_files import headline_path

    root = Path(__file__).resolve().parents[1]
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    declared = [next(iter(m)) if isinstance(m, dict) else m
                for st in dvc["stages"].values() for m in st.get("metrics", [])] + list(dvc.get("metrics", []))
    assert declared == [headline_path(r) for r in _full_headline(miou13=False)]
    assert all(m == {p: {"cache": False}} for m, p in zip(dvc["stages"]["evaluate"]["metrics"], declared))
    outs = {next(iter(o)): o[next(iter(o))] for st in dvc["stages"].values() for o in st.get("outs", [])
            if isinstance(o, dict)}
    for detail in ("metrics/eval.json", "metrics/depth.json", "metrics/pseudo_labels.json"):
        assert outs[detail] == {"cache": False}, detail
    assert {"metrics/depth.json", "metrics/pseudo_labels.json"} <= set(dvc["stages"]["evaluate"]["deps"])


def _dvc(args, cwd, columns=80):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": str(columns)}
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, f"dvc {args}: {res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.mark.parametrize("miou13", [False, True], ids=["cityscapes-classes", "synthia-miou13"])
def test_dvc_metrics_show_fits_80_columns(tmp_path, miou13):
    """The real dvc.yaml and the files the evaluate stage's code writes: `dvc metrics show` prints a row per
    headline file and the shared measures as columns, within 80 columns even with SYNTHIA's miou13; `dvc metrics
    diff` names the changed row and measure."""
    import shutil
    import subprocess

    from corda.eval_files import headline_path, write_headline_metrics

    root = Path(__file__).resolve().parents[1]
    shutil.copy2(root / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy2(root / "params.yaml", tmp_path / "params.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    _dvc(["init", "-q"], tmp_path)
    rows = _full_headline(miou13)
    write_headline_metrics(tmp_path, rows)
    out = _dvc(["metrics", "show"], tmp_path)
    lines = out.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert lines[0].split() == ["Path", "abs_rel", "auroc", "delta1", "miou"] + (["miou13"] if miou13 else [])
    assert [line.split()[0] for line in lines[1:]] == [headline_path(r) for r in rows]
    subprocess.run(git + ["add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=tmp_path, check=True)
    rows["corda"]["miou"] += 0.01
    write_headline_metrics(tmp_path, rows)
    diff = _dvc(["metrics", "diff"], tmp_path).splitlines()
    assert diff[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"]
    assert [d.split()[:2] for d in diff[1:]] == [["metrics/top/corda.json", "miou"]]
    assert max(len(d) for d in diff) <= 80


def test_write_metrics_then_read_back(tmp_path):
    """What the evaluate stage writes is what the readers return: eval.json's models then their _adabn rows,
    the headline rows (with the depth and pseudo-label details) and the results table."""
    from corda import paths
    from corda.eval_files import read_detail, read_eval_metrics, read_headline, write_metrics

    results = {"dacs": {"miou": 0.3, "pixel_acc": 0.7, "per_class": {"road": 0.9}},
               "corda": {"miou": 0.35, "pixel_acc": 0.8, "per_class": {"road": 0.95}}}
    adabn = {"corda": {"miou": 0.4, "pixel_acc": 0.8, "per_class": {"road": 0.9}}}
    depth = {"mode": "stereo", "target": {"abs_rel": 0.12, "delta1": 0.81}}
    out = {p: tmp_path / p for p in (paths.EVAL_METRICS, paths.HEADLINE_DIR, paths.ADABN_DIR, paths.RESULTS_TABLE)}
    text = write_metrics(out, results, adabn, "procedural10", ["road"], 8, depth, None)
    assert read_eval_metrics(tmp_path) == {**results, "corda_adabn": adabn["corda"]}
    head = read_headline(tmp_path)
    assert list(head) == ["dacs", "corda", "dacs_adabn", "corda_adabn", "depth", "pl_labels", "pl_confidence",
                          "pl_omega", "pl_combined"]
    assert head["corda"] == {"miou": 0.35} and head["corda_adabn"] == {"miou": 0.4} and head["dacs_adabn"] == {}
    assert head["depth"] == {"abs_rel": 0.12, "delta1": 0.81}
    assert (tmp_path / paths.RESULTS_TABLE).read_text() == text and "8 unlabelled target train images" in text
    assert text.startswith("Target-val IoU (%) over the `procedural10` class set.")
    assert read_detail(tmp_path / "absent.json") is None


def test_model_scores_add_miou13_for_synthia():
    import numpy as np

    from corda.eval_files import model_scores
    from corda.labels import CLASS_NAMES, CLASS_SETS
    from corda.metrics import ConfusionMatrix

    cm = ConfusionMatrix(19)
    rng = np.random.default_rng(0)
    cm.update(rng.integers(0, 19, (64, 64)), rng.integers(0, 19, (64, 64)))
    assert "miou13" not in model_scores(cm, CLASS_NAMES, CLASS_SETS["cityscapes19"], "cityscapes19")
    s = model_scores(cm, CLASS_NAMES, CLASS_SETS["synthia16"], "synthia16")
    assert s["miou13"] == float(cm.miou(CLASS_SETS["synthia13"])) and len(s["per_class"]) == 16
