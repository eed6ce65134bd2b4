"""benchmarks/device_check.py (issue 28, item 5): its plan on a CUDA machine, its budget, and its CPU path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def dc():
    from benchmarks import device_check

    return device_check


def test_cuda_plan_covers_every_preset_in_every_precision_layout_and_compile(dc):
    rows = dc.plan(dc.PRESETS, cuda=True)
    assert rows[: len(dc.PRESETS)] == [(p, dc.Variant()) for p in dc.PRESETS]  # the fp32 baselines first
    for p in dc.PRESETS:
        mine = {v for q, v in rows if q == p}
        for prec in ("fp32", "tf32", "bf16"):
            assert dc.Variant(prec) in mine or dc.Variant(prec, True) in mine, (p, prec)
        assert {v.channels_last for v in mine} == {False, True}
        assert any(v.compile != "eager" for v in mine), p
    assert len(rows) == len(set(rows))


def test_dry_run_builds_each_presets_true_configuration(dc, capsys):
    assert dc.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for p in ("gta2cityscapes", "synthia2cityscapes"):
        assert f"{p}: resnet101 DeepLab-v2 OS8, batch 2+2, crop 512x512, 250000 iterations, optimizer sgd" in out
        assert f"{p}_daformer: MiT-B5 DAFormer, batch 2+2, crop 512x512, 40000 iterations, optimizer adamw" in out
    assert "compile default" in out and "tf32" in out


def test_rows_that_do_not_fit_the_budget_are_skipped_and_reported(dc, tmp_path, capsys):
    out = tmp_path / "dc.json"
    assert dc.main(["--cpu-smoke", "--budget-s", "0", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["rows"] == []
    assert {(s["preset"], s["variant"]) for s in res["skipped"]} >= {(p, "fp32") for p in dc.PRESETS}
    assert "skipped: budget" in capsys.readouterr().out


def test_cpu_path_runs_the_real_step_of_both_networks_and_ddp(tmp_path):
    out = tmp_path / "dc.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--ddp", "--presets", "gta2cityscapes",
                           "gta2cityscapes_daformer", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = {(r["preset"], r["variant"], r.get("processes", 1)): r for r in res["rows"]}
    assert set(rows) == {("gta2cityscapes", "fp32", 1), ("gta2cityscapes_daformer", "fp32", 1),
                         ("gta2cityscapes", "bf16 + channels_last", 1), ("gta2cityscapes", "fp32", 2)}
    for r in rows.values():
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["steps_measured"] == 1
        assert r["batch"] == [2, 2] and r["crop_hw"] == [64, 64]
    assert rows[("gta2cityscapes", "fp32", 1)]["network"] == "resnet18 DeepLab-v2 OS8"
    assert rows[("gta2cityscapes_daformer", "fp32", 1)]["network"] == "MiT-B0 DAFormer"
    assert "DAFormer MiT-B5, 1x RTX 2080 Ti" in proc.stdout and "(DDP x2)" in proc.stdout
